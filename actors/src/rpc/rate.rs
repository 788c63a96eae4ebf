//! Rate limits of the admin RPC: a token bucket per caller (the cookie or an
//! API key) and one per client address (GCRA, from `governor`). A request
//! past either is refused at once (HTTP 429 with `Retry-After`, or a JSON-RPC
//! error on a WebSocket) and never waits, so one busy client slows nobody
//! else down.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Error code: a call past the caller's or the address's rate (`data`:
/// `{retry_after_ms}`).
pub const RATE_LIMITED: i32 = -32017;

/// Calls per second and burst, per caller and per address; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// Sustained calls per second of one caller (a key, or the cookie).
    pub per_caller: u32,
    /// Sustained calls per second from one client address.
    pub per_address: u32,
    /// Calls either may make at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            per_caller: 100,
            per_address: 200,
            burst: 200,
        }
    }
}

/// A refusal: which limit, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Limited {
    /// `key:NAME may make ...` or `address 1.2.3.4 may make ...`.
    pub(super) what: String,
    /// Which limit: `caller` or `address` (the metric's label).
    pub(super) limit: &'static str,
    /// Wait before the next call can pass.
    pub(super) retry_after: Duration,
}

impl Limited {
    /// Counts the refusal and gives the message a client sees.
    pub(super) fn counted(&self) -> String {
        metrics::counter!(crate::metrics::RPC_RATE_LIMITED, "limit" => self.limit).increment(1);
        self.message()
    }

    /// The message a client sees.
    pub(super) fn message(&self) -> String {
        format!(
            "rate limited: {}; retry in {} ms (rpc.rate_per_caller, rpc.rate_per_address, rpc.rate_burst)",
            self.what,
            self.retry_after.as_millis().max(1)
        )
    }
}

/// The limiters.
#[derive(Debug)]
pub(super) struct RateLimits {
    settings: RateSettings,
    callers: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
    /// Made once: a new clock runs `cpuid`, which costs a VM tens of µs.
    clock: DefaultClock,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_sec: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst.max(per_sec)).unwrap_or(rate);
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

impl RateLimits {
    /// Limiters for `settings`.
    pub(super) fn new(settings: RateSettings) -> Self {
        Self {
            settings,
            callers: limiter(settings.per_caller, settings.burst),
            addresses: limiter(settings.per_address, settings.burst),
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one call from `caller`'s and `address`'s buckets, or says
    /// which is empty.
    pub(super) fn check(&self, caller: &Arc<str>, address: Option<IpAddr>) -> Result<(), Limited> {
        // Buckets of clients gone quiet are dropped now and then.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            if let Some(l) = &self.callers {
                l.retain_recent();
            }
            if let Some(l) = &self.addresses {
                l.retain_recent();
            }
        }
        let now = self.clock.now();
        if let (Some(l), Some(ip)) = (&self.addresses, address) {
            if let Err(not_until) = l.check_key(&ip) {
                return Err(Limited {
                    what: format!("address {ip} may make {} calls/s", self.settings.per_address),
                    limit: "address",
                    retry_after: not_until.wait_time_from(now),
                });
            }
        }
        if let Some(l) = &self.callers {
            if let Err(not_until) = l.check_key(caller) {
                return Err(Limited {
                    what: format!("{caller} may make {} calls/s", self.settings.per_caller),
                    limit: "caller",
                    retry_after: not_until.wait_time_from(now),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_past_its_burst_is_refused_with_a_wait_and_others_are_not() {
        let r = RateLimits::new(RateSettings {
            per_caller: 10,
            per_address: 1000,
            burst: 10,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            r.check(&Arc::from("key:a"), Some(ip)).unwrap();
        }
        let e = r.check(&Arc::from("key:a"), Some(ip)).unwrap_err();
        assert!(e.what.contains("key:a may make 10 calls/s"), "{e:?}");
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_millis(100));
        assert!(e.message().contains("retry in"), "{}", e.message());
        r.check(&Arc::from("key:b"), Some(ip))
            .expect("another caller is not slowed down");
        std::thread::sleep(e.retry_after + Duration::from_millis(5));
        r.check(&Arc::from("key:a"), Some(ip))
            .expect("recovered after the wait");
    }

    #[test]
    fn an_address_has_its_own_bucket_and_zero_turns_a_limit_off() {
        let r = RateLimits::new(RateSettings {
            per_caller: 0,
            per_address: 5,
            burst: 5,
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for i in 0..5 {
            r.check(&Arc::from(format!("key:{i}")), Some(a)).unwrap();
        }
        assert!(r
            .check(&Arc::from("key:new"), Some(a))
            .unwrap_err()
            .what
            .contains("address 10.0.0.1"));
        r.check(&Arc::from("key:new"), Some(b)).unwrap();
        for _ in 0..1000 {
            r.check(&Arc::from("key:x"), None).unwrap();
        }
    }
}
