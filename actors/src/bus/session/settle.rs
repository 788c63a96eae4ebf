//! Settling durable deliveries: `ack` (one or a batch), `nak`, `term`,
//! `in_progress`, each only for a delivery the subscription holds.

use std::collections::HashSet;

use serde_json::json;

use super::super::leases::{held, Unacked};
use super::super::outbound::ok;
use super::super::wire::FrameError;
use super::{lock, Session, Sub};
use crate::queue::Settle;

impl Session {
    pub(super) fn durable(&self, sub: u64) -> Result<(String, String, Unacked), FrameError> {
        match self.subs.get(&sub) {
            Some(Sub::Durable {
                topic,
                group,
                unacked,
                ..
            }) => Ok((topic.clone(), group.clone(), unacked.clone())),
            Some(Sub::Live(_)) => Err(FrameError::new(
                "bad_frame",
                format!("subscription {sub} is live: nothing to settle"),
            )),
            None => Err(FrameError::new("not_found", format!("no subscription {sub}"))),
        }
    }

    pub(super) async fn settle(&self, id: u64, sub: u64, seq: u64, how: Settle) -> Result<(), FrameError> {
        let (t, g, unacked) = self.durable(sub)?;
        let count = held(&unacked, sub, seq)?;
        let r = self.bus.queues.settle(&t, &g, seq, count, how);
        {
            let mut l = lock(&unacked);
            match &r {
                // `in_progress`: held for longer.
                Ok(Some(until)) => {
                    if let Some(h) = l.held.get_mut(&seq).filter(|h| h.count == count) {
                        h.until = *until;
                    }
                }
                // Settled, no longer pending at all (acked through another
                // consumer after this lease expired), or delivered again
                // since: either way not held here.
                Ok(None) | Err(crate::Error::NotPending { .. } | crate::Error::LeaseLost { .. }) => {
                    l.forget(seq, count)
                }
                Err(_) => {}
            }
        }
        // The settle woke the topic's consumers before the credit came back
        // here: a consumer with none left would otherwise sleep on.
        self.bus.queues.wake_consumers(&t);
        r.map_err(settle_error)?;
        self.send(ok(id, json!({}))).await;
        Ok(())
    }

    /// Acks the listed deliveries this subscription holds in one write;
    /// answers with how many, and which it did not ack (not held here, or
    /// delivered again since), like an `unsubscribe`'s `ack`.
    pub(super) async fn ack_batch(&self, id: u64, sub: u64, mut seqs: Vec<u64>) -> Result<(), FrameError> {
        seqs.sort_unstable();
        seqs.dedup();
        if seqs.len() > crate::bus::MAX_ACK_BATCH {
            return Err(FrameError::new(
                "bad_frame",
                format!(
                    "ack lists {} deliveries: at most {} per frame",
                    seqs.len(),
                    crate::bus::MAX_ACK_BATCH
                ),
            ));
        }
        let (t, g, unacked) = self.durable(sub)?;
        let leases: Vec<(u64, u32)> = {
            let l = lock(&unacked);
            seqs.iter()
                .filter_map(|seq| l.held.get(seq).map(|h| (*seq, h.count)))
                .collect()
        };
        let acked = self
            .bus
            .queues
            .ack_leases(&t, &g, &leases)
            .map_err(settle_error)?;
        // Acked, or settled or delivered again since: not held here either way.
        {
            let mut l = lock(&unacked);
            for (seq, count) in &leases {
                l.forget(*seq, *count);
            }
        }
        self.bus.queues.wake_consumers(&t);
        let acked_set: HashSet<u64> = acked.iter().copied().collect();
        let not_acked: Vec<u64> = seqs.into_iter().filter(|s| !acked_set.contains(s)).collect();
        self.send(ok(id, json!({ "acked": acked.len(), "not_acked": not_acked })))
            .await;
        Ok(())
    }
}

/// A settle the queue refused: not this subscription's delivery (any more),
/// or the store failed to write it (then nothing was settled and the
/// deliveries are still held: try again).
fn settle_error(e: crate::Error) -> FrameError {
    match e {
        crate::Error::Sled(_) => FrameError::new(
            "store_failed",
            format!("{e}: nothing was settled and the deliveries are still held; try again (the node log says why)"),
        ),
        other => FrameError::new("not_pending", other.to_string()),
    }
}
