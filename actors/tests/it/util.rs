//! Helpers shared by the integration tests.

use std::time::{Duration, Instant};

/// Polls `ok` every 50 ms until it holds; fails the test after `secs`.
/// Returns how long it took.
pub async fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}
