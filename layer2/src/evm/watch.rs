//! The watcher: at every head of the settlement chain (from the node's chain
//! monitor) it reads each live channel from the contract and acts on what it
//! finds, so it needs no event log and no memory of past heads:
//!
//! - opening on our side and open on chain: the counterparty joined;
//! - closing with a nonce below our newest co-signed state, inside the
//!   window: send a challenge, and send it again if two heads later the
//!   contract still holds the old state (the transaction was dropped by a
//!   reorg, or is stuck);
//! - closing past its window: finalize (anyone may; we are paid by it);
//! - closed: record the payout.
//!
//! A reorg or an outage needs nothing special: the next head is read afresh.
//! `pause:layer2` stops payments, never this.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;

use super::{hex_id, status, Chan, EvmChannels, OnChain};
use crate::adapter::ChannelState;
use crate::Layer2Error;

/// Heads after which an unanswered transaction is sent again.
const RESEND_AFTER_HEADS: u64 = 2;

/// What the watcher did lately on one channel.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// Heads seen since the last challenge or finalize was sent.
    heads_since_tx: Option<u64>,
    /// The posted nonce last reported as `closing`.
    pub(super) closing_seen: Option<u64>,
}

impl Watch {
    pub(super) fn challenged(&mut self, _height: u64) {
        self.heads_since_tx = Some(0);
    }

    fn may_send(&self) -> bool {
        self.heads_since_tx.is_none_or(|n| n >= RESEND_AFTER_HEADS)
    }
}

impl EvmChannels {
    /// Looks at every live channel at head `height`; `new_head` counts
    /// towards resending unanswered transactions.
    pub async fn on_head(&self, height: u64, new_head: bool) {
        self.watching.store(true, Ordering::Relaxed);
        let mut changed = false;
        for cell in self.all() {
            let mut c = cell.lock().await;
            // An open under way (its `out` held) reports the channel open itself.
            if c.meta.state == ChannelState::Closed
                || (c.meta.state == ChannelState::Opening && cell.out.try_lock().is_err())
            {
                continue;
            }
            if new_head {
                if let Some(n) = c.watch.heads_since_tx.as_mut() {
                    *n += 1;
                }
            }
            let before = c.meta.state;
            if let Err(e) = self.look(&mut c, height).await {
                tracing::warn!(channel = %hex_id(c.meta.id), error = %e, "the watcher could not act; it tries again at the next head");
            }
            changed |= before != c.meta.state;
        }
        if changed {
            self.publish_gauges().await;
        }
    }

    async fn look(&self, c: &mut Chan, height: u64) -> Result<(), Layer2Error> {
        let on = self.chain.read(c.meta.id).await?;
        match on.status {
            status::OPEN if c.meta.state == ChannelState::Opening => {
                let detail = json!({"deposit_a": on.deposit_a, "deposit_b": on.deposit_b, "seen_at": height});
                self.opened(c, on.deposit_b, detail)?;
            }
            status::CLOSING => self.closing(c, &on, height).await?,
            status::CLOSED => {
                let (a, b) = if on.nonce == 0 && on.balance_a == 0 && on.balance_b == 0 {
                    (on.deposit_a, 0) // cancelled before a join
                } else {
                    (on.balance_a, on.balance_b)
                };
                self.closed(
                    c,
                    (a, b),
                    json!({"how": "on chain", "nonce": on.nonce, "seen_at": height}),
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn closing(&self, c: &mut Chan, on: &OnChain, height: u64) -> Result<(), Layer2Error> {
        if c.meta.state != ChannelState::Closing {
            c.meta.state = ChannelState::Closing;
            self.save(&c.meta)?;
        }
        if c.watch.closing_seen != Some(on.nonce) {
            c.watch.closing_seen = Some(on.nonce);
            self.emit(
                "closing",
                &c.meta,
                json!({"posted_nonce": on.nonce, "deadline": on.deadline, "seen_at": height,
                       "our_nonce": c.latest.as_ref().map(|l| l.state.nonce).unwrap_or(0)}),
            );
        }
        if self.stale(c, on, height) {
            if c.watch.may_send() {
                tracing::warn!(channel = %hex_id(c.meta.id), posted = on.nonce, deadline = on.deadline, height, "an old state was posted: disputing it");
                self.challenge(c, on, height).await?;
            }
        } else if height > on.deadline && c.watch.may_send() {
            let tx = self.chain.finalize(c.meta.id).await?;
            c.watch.heads_since_tx = Some(0);
            tracing::info!(channel = %hex_id(c.meta.id), tx = %tx, "window over: finalizing");
        }
        Ok(())
    }

    /// Follows `heads` (height, hash) until the sender is dropped: one look
    /// at every change, and one at the start (a restart resumes here).
    pub async fn watch(self: Arc<Self>, mut heads: tokio::sync::watch::Receiver<Option<(u64, String)>>) {
        let first = heads.borrow_and_update().clone();
        match first {
            Some((h, _)) => self.on_head(h, false).await,
            None => {
                if let Ok(h) = self.chain.height().await {
                    self.on_head(h, false).await;
                }
            }
        }
        while heads.changed().await.is_ok() {
            let head = heads.borrow_and_update().clone();
            if let Some((h, _)) = head {
                self.on_head(h, true).await;
            }
        }
        self.watching.store(false, Ordering::Relaxed);
    }
}
