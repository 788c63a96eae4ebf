//! The node's wall clock: the host's, shifted by a configured offset
//! (`debug.clock_offset_ms`), so a test can skew one node of a testnet
//! without touching the host clock the others share.
//!
//! Epochs are VDF time, and challenge deadlines and leases use the
//! monotonic clock. The wall clock stamps what this node records for itself
//! (bus messages' `ts_us` and so `max_age_secs` retention, the audit log and
//! its checkpoints, ban and API key expiry, dead letters, gossip probe and
//! receipt times) and one thing peers check: dataset announcements are
//! signed with it, and a receiver refuses one signed more than 5 min ahead
//! of its own clock or more than 30 min before it. A node whose clock is off
//! by more stops hearing (and so challenging) its peers' datasets, and its
//! own are refused: the chaos schedules found this with a 52 min skew.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Shifts this process's clock by `ms` (negative: behind the host).
pub fn set_offset_ms(ms: i64) {
    OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// The offset in force, ms.
pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::Relaxed)
}

/// Now, by this node's clock.
pub fn now() -> SystemTime {
    shifted(SystemTime::now(), offset_ms())
}

/// `host` moved by `off` ms (never before the Unix epoch).
fn shifted(host: SystemTime, off: i64) -> SystemTime {
    let shift = Duration::from_millis(off.unsigned_abs());
    if off >= 0 {
        host + shift
    } else {
        host.checked_sub(shift)
            .filter(|t| *t >= UNIX_EPOCH)
            .unwrap_or(UNIX_EPOCH)
    }
}

/// Microseconds since the Unix epoch, by this node's clock.
pub fn unix_us() -> u64 {
    now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Seconds since the Unix epoch, by this node's clock.
pub fn unix_secs() -> u64 {
    now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The offset itself is process-wide: these tests leave it alone, other
    // tests of this crate read the clock.
    #[test]
    fn an_offset_shifts_the_host_clock_both_ways_and_never_before_1970() {
        let host = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(shifted(host, 3_600_000)), 1_800_003_600);
        assert_eq!(secs(shifted(host, -3_600_000)), 1_799_996_400);
        assert_eq!(shifted(host, 0), host);
        assert_eq!(shifted(UNIX_EPOCH + Duration::from_secs(5), -10_000), UNIX_EPOCH);
        assert_eq!(offset_ms(), 0, "no test sets it");
        assert!(unix_secs().abs_diff(secs(SystemTime::now())) <= 1);
    }
}
