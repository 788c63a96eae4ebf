//! What a stranger at the bus can cost: failed hellos reach the audit log
//! aggregated per source, connections are capped, and browsers are kept out
//! unless their origin is configured (anchors: NATS' connection limits and
//! auth-failure logging, geth's `--ws.origins`).
//!
//! Failed hellos: the first from a source (an IP address, or `unix`) in a
//! window of `bus.auth_failure_window_secs` is audited at once; the rest of
//! that window are counted and written as one entry with their count when
//! it ends. A script that hammers the bus with bad tokens costs the audit
//! log one entry per window instead of one per attempt, and nothing is lost
//! from the count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Sources tracked at most; the rest share one tally.
const SOURCES: usize = 1024;

#[derive(Debug)]
struct Tally {
    since: Instant,
    /// Failures since the last entry written.
    unwritten: u64,
    /// The last one's detail.
    last: Value,
}

/// Failed hellos per source.
#[derive(Debug)]
pub(crate) struct AuthFailures {
    window: Duration,
    by_source: Mutex<HashMap<String, Tally>>,
}

/// The source of a connection for aggregation: its IP (not its port).
pub(crate) fn source_of(peer: &str) -> String {
    match peer.parse::<SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => peer.to_owned(),
    }
}

impl AuthFailures {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            by_source: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tally>> {
        self.by_source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A failed hello from `peer`; the audit entry to write now, if any
    /// (the first of a window).
    pub(crate) fn record(&self, peer: &str, detail: Value, now: Instant) -> Option<Value> {
        let mut map = self.lock();
        let mut source = source_of(peer);
        if !map.contains_key(&source) && map.len() >= SOURCES {
            source = "other".into();
        }
        match map.get_mut(&source) {
            Some(t) if now.saturating_duration_since(t.since) < self.window => {
                t.unwritten += 1;
                t.last = detail;
                None
            }
            Some(t) => {
                let count = t.unwritten + 1;
                *t = Tally {
                    since: now,
                    unwritten: 0,
                    last: Value::Null,
                };
                Some(entry(&source, count, self.window, detail))
            }
            None => {
                map.insert(
                    source.clone(),
                    Tally {
                        since: now,
                        unwritten: 0,
                        last: Value::Null,
                    },
                );
                Some(entry(&source, 1, self.window, detail))
            }
        }
    }

    /// Entries for the windows that ended with failures not yet written;
    /// sources quiet for a whole window are forgotten.
    pub(crate) fn flush(&self, now: Instant) -> Vec<Value> {
        let mut out = Vec::new();
        self.lock().retain(|source, t| {
            if now.saturating_duration_since(t.since) < self.window {
                return true;
            }
            if t.unwritten == 0 {
                return false;
            }
            out.push(entry(source, t.unwritten, self.window, t.last.take()));
            t.unwritten = 0;
            t.since = now;
            true
        });
        out
    }
}

fn entry(source: &str, count: u64, window: Duration, last: Value) -> Value {
    json!({
        "source": source,
        "count": count,
        "window_secs": window.as_secs(),
        "last": last,
    })
}

/// Connections open now, against `bus.max_connections`.
#[derive(Debug, Default)]
pub(crate) struct Connections(Arc<AtomicUsize>);

/// One open connection's place; freed when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    /// A place for one more connection, or `None` at `max`.
    pub(crate) fn take(&self, max: usize) -> Option<Slot> {
        let mut n = self.0.load(Ordering::Acquire);
        loop {
            if n >= max {
                return None;
            }
            match self
                .0
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Slot(self.0.clone())),
                Err(now) => n = now,
            }
        }
    }

    /// Open now.
    pub(crate) fn open(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Whether a WebSocket upgrade with `origin` may proceed: no Origin header
/// (a program, not a browser), or one listed in `allowed` (`*` allows all).
pub(crate) fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin {
        None => true,
        Some(o) => allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_hellos_are_one_entry_per_source_and_window_and_none_is_lost() {
        let f = AuthFailures::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = f.record("127.0.0.1:5000", json!({"n": 0}), t0).unwrap();
        assert_eq!(
            (first["source"].as_str(), first["count"].as_u64()),
            (Some("127.0.0.1"), Some(1))
        );
        for i in 1..50 {
            assert!(f
                .record(&format!("127.0.0.1:{}", 5000 + i), json!({"n": i}), t0)
                .is_none());
        }
        let other = f.record("unix", json!({}), t0).unwrap();
        assert_eq!(other["source"], "unix");
        assert!(
            f.flush(t0 + Duration::from_secs(30)).is_empty(),
            "the window is still open"
        );
        let later = t0 + Duration::from_secs(61);
        let flushed = f.flush(later);
        assert_eq!(flushed.len(), 1, "{flushed:?}");
        assert_eq!(flushed[0]["count"], 49);
        assert_eq!(flushed[0]["last"]["n"], 49);
        // Quiet for a window: forgotten; the next failure is written at once.
        assert!(f.flush(later + Duration::from_secs(61)).is_empty());
        assert!(f
            .record("127.0.0.1:1", json!({}), later + Duration::from_secs(62))
            .is_some());
    }

    #[test]
    fn connections_are_capped_and_a_closed_one_frees_its_place() {
        let c = Connections::default();
        let a = c.take(2).unwrap();
        let _b = c.take(2).unwrap();
        assert!(c.take(2).is_none());
        drop(a);
        assert_eq!(c.open(), 1);
        assert!(c.take(2).is_some());
    }

    #[test]
    fn browsers_need_a_listed_origin() {
        assert!(origin_allowed(None, &[]));
        assert!(!origin_allowed(Some("https://evil.example"), &[]));
        let allowed = vec!["http://localhost:3000".to_owned()];
        assert!(origin_allowed(Some("http://localhost:3000"), &allowed));
        assert!(!origin_allowed(Some("http://localhost:3001"), &allowed));
        assert!(origin_allowed(Some("x"), &["*".to_owned()]));
    }
}
