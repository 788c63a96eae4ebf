//! The deliveries a durable subscription holds (its leases): what counts
//! against its credit, what its settle verbs may name, and what it hands
//! back when it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::session::lock;
use super::wire::FrameError;

/// The deliveries a durable subscription holds: sequence number -> which
/// delivery of it (its count) and until when. Closed when the subscription
/// ends, so a consumer task that fetched meanwhile hands its batch back itself.
#[derive(Debug, Default)]
pub(super) struct Leases {
    pub(super) held: HashMap<u64, Held>,
    pub(super) closed: bool,
}

/// One delivery a subscription holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// Its delivery count: settles name this delivery, not a later one.
    pub(super) count: u32,
    /// Its lease's end (moved by `in_progress`).
    pub(super) until: Instant,
    /// The topic's `ack_wait`.
    pub(super) wait: Duration,
}

impl Held {
    pub(super) fn of(d: &crate::queue::Delivery, now: Instant) -> Self {
        Self {
            count: d.delivery_count,
            until: d.lease_until,
            wait: d.lease_until.saturating_duration_since(now),
        }
    }
}

impl Leases {
    /// How many held deliveries' leases still run (what counts against the
    /// credit: one that expired is the group's to deliver again), and when
    /// the first of them ends. Forgets deliveries whose lease ended a whole
    /// `ack_wait` ago: a late settle of one is `not_pending`.
    pub(super) fn in_flight(&mut self, now: Instant) -> (usize, Option<Instant>) {
        self.held.retain(|_, h| now < h.until + h.wait);
        let live = self.held.values().filter(|h| h.until > now);
        live.fold((0, None), |(n, first), h| {
            (n + 1, Some(first.map_or(h.until, |f: Instant| f.min(h.until))))
        })
    }

    /// Forgets `seq` if it is still delivery `count` here (the consumer may
    /// have been handed a later delivery of it meanwhile).
    pub(super) fn forget(&mut self, seq: u64, count: u32) {
        if self.held.get(&seq).is_some_and(|h| h.count == count) {
            self.held.remove(&seq);
        }
    }
}

pub(super) type Unacked = Arc<Mutex<Leases>>;

/// A settle verb names a delivery this subscription holds, or it is refused.
pub(super) fn held(unacked: &Unacked, sub: u64, seq: u64) -> Result<u32, FrameError> {
    if let Some(h) = lock(unacked).held.get(&seq) {
        return Ok(h.count);
    }
    Err(FrameError::new(
        "not_pending",
        format!("seq {seq} is not a delivery subscription {sub} holds: it was never delivered here, is settled already, or its lease expired and it went to another consumer"),
    ))
}
