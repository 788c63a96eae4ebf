//! Payments and closes: propose a state, get it co-signed, acknowledge.
//!
//! The payer builds the next state on the newest state both signed, with a
//! nonce above every nonce it ever signed, signs it (ledger first), and asks
//! the counterparty to co-sign. The counterparty co-signs only a state that
//! is a payment *to* it on top of what it holds (its own balance never goes
//! down), with a nonce above everything it signed, balances that sum to the
//! deposits, and the payer's valid signature; it records both signatures
//! (fsync) before its own leaves. A refusal carries the counterparty's newest
//! co-signed state when the payer is behind it (it crashed before recording
//! a co-signature, or a reply was lost): the payer checks both signatures,
//! records it, and builds on it. A counterparty that does not answer fails
//! the payment; the balances stay the newest co-signed ones.

use std::sync::atomic::Ordering;
use std::time::Instant;

use alloy::primitives::B256;
use serde_json::json;

use tokio::sync::MutexGuard;

use super::{hex_id, meta, status, Cell, Chan, EvmChannels, Shared};
use crate::adapter::{ChannelInfo, ChannelState, CloseMode, Payment};
use crate::metrics as m;
use crate::state::{SignedState, State};
use crate::wire::{Reply, Request};
use crate::Layer2Error;

/// What a proposal came to.
enum Proposed {
    /// Both signed it.
    CoSigned(Box<SignedState>),
    /// The counterparty holds a newer co-signed state, now recorded here: build on it.
    Behind,
    /// The counterparty signed a state of the same nonce meanwhile (both
    /// sides paid at once): try again with a higher nonce after a pause.
    Conflict(String),
}

/// How often a payer acknowledges at most, per channel.
const ACK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How a refusal names a nonce already taken (the sides raced).
const CONFLICT: &str = "nonce taken";

/// Attempts of one payment at most: a newer co-signed state learnt, or
/// both sides paying at the same moment, each cost one; and all of them
/// within `layer2.request_timeout_ms`.
const ATTEMPTS: u32 = 64;

/// Ledger writes (an fsync each) under way in this process.
static LEDGER_BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs ledger work (an fsync). Alone, it runs in place: handing it to a
/// blocking thread and back costs two thread wake-ups, as much as the fsync
/// (one channel: 1,050 instead of 930 payments/s). While another is under
/// way it goes to a blocking thread, so fsyncs of many channels overlap
/// instead of stalling the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Layer2Error> + Send + 'static,
) -> Result<T, Layer2Error> {
    struct Busy;
    impl Drop for Busy {
        fn drop(&mut self) {
            LEDGER_BUSY.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let alone = LEDGER_BUSY.fetch_add(1, Ordering::AcqRel) == 0;
    let _busy = Busy;
    if alone {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Layer2Error::Store(format!("ledger task: {e}")))?
}

impl EvmChannels {
    pub(super) async fn pay_id(&self, id: B256, amount: u128) -> Result<Payment, Layer2Error> {
        let t0 = Instant::now();
        let r = self.pay_inner(id, amount, t0).await;
        let result = match &r {
            Ok(_) => "ok",
            Err(Layer2Error::InsufficientBalance { .. }) => "insufficient",
            Err(Layer2Error::Unreachable(_)) => "unreachable",
            Err(_) => "refused",
        };
        metrics::counter!(m::PAYMENTS, "direction" => "sent", "result" => result).increment(1);
        if r.is_ok() {
            metrics::histogram!(m::PAYMENT_SECONDS).record(t0.elapsed().as_secs_f64());
        }
        r
    }

    async fn pay_inner(&self, id: B256, amount: u128, t0: Instant) -> Result<Payment, Layer2Error> {
        if self.paused.load(Ordering::Relaxed) {
            return Err(Layer2Error::Paused);
        }
        if amount == 0 {
            return Err(Layer2Error::Invalid(
                "amount 0: a payment moves at least 1 unit".into(),
            ));
        }
        let shared = self.get(id)?;
        let _out = shared.out.lock().await;
        let deadline = t0 + self.cfg.request_timeout;
        for _ in 0..ATTEMPTS {
            if Instant::now() > deadline {
                break;
            }
            let mut c = shared.lock().await;
            // The counterparty lost a race against our last proposal: let its retry in first.
            if let Some(t) = c.yield_until.take().filter(|t| *t > Instant::now()) {
                drop(c);
                tokio::time::sleep_until(t.into()).await;
                c = shared.lock().await;
            }
            if c.meta.state != ChannelState::Open || c.meta.final_nonce.is_some() {
                return Err(c.wrong_state("pay", "open"));
            }
            let base = c.base();
            let ours = c.ours(&base);
            if amount > ours {
                return Err(Layer2Error::InsufficientBalance {
                    channel: hex_id(id),
                    amount,
                    available: ours,
                });
            }
            let mut next = base.clone();
            next.nonce = c.newest_signed.max(base.nonce) + 1;
            if c.meta.ours_is_a {
                next.balanceA -= amount;
                next.balanceB += amount;
            } else {
                next.balanceB -= amount;
                next.balanceA += amount;
            }
            let (proposed, c) = self.propose(&shared, c, next).await?;
            match proposed {
                Proposed::CoSigned(s) => {
                    return Ok(Payment {
                        channel: hex_id(id),
                        amount,
                        nonce: s.state.nonce,
                        ours: c.ours(&c.base()),
                        latency_us: t0.elapsed().as_micros() as u64,
                    })
                }
                Proposed::Behind => continue,
                Proposed::Conflict(why) => {
                    // The counterparty holds back its next proposal for ~3
                    // round trips (it yields); retry within one.
                    let wait = c.rtt.mul_f64(rand::random::<f64>());
                    drop(c);
                    tracing::debug!(channel = %hex_id(id), %why, wait_ms = wait.as_secs_f64() * 1000.0, "both sides proposed at once; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(Layer2Error::Invalid(format!(
            "channel {}: no state agreed within {:?}: the counterparty kept paying at the same moment, or kept refusing; try again, or see both nodes' logs",
            hex_id(id),
            self.cfg.request_timeout
        )))
    }

    /// Signs `next` (holding `c`), lets go of the channel while the
    /// counterparty co-signs, and records both signatures (holding it
    /// again, which it returns). The caller holds `cell.out`.
    async fn propose<'a>(
        &self,
        cell: &'a Cell,
        mut c: MutexGuard<'a, Chan>,
        next: State,
    ) -> Result<(Proposed, MutexGuard<'a, Chan>), Layer2Error> {
        let (ledger, key, domain, a) = (
            c.ledger.clone(),
            self.account.signer().clone(),
            self.domain.clone(),
            c.meta.ours_is_a,
        );
        let peer = c.meta.peer.clone();
        let s = next.clone();
        let sig = blocking(move || {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.sign(&s, &key, &domain, a)
        })
        .await?;
        c.newest_signed = c.newest_signed.max(next.nonce);
        c.pending = Some(next.clone());
        drop(c);
        let req = Request::Propose {
            state: next.clone(),
            sig,
        };
        let t0 = Instant::now();
        let reply = self.ask(&peer, req, self.cfg.request_timeout).await?;
        let mut c = cell.lock().await;
        c.rtt = (c.rtt * 3 + t0.elapsed()) / 4;
        let proposed = self.on_reply(&mut c, next, sig, reply)?;
        Ok((proposed, c))
    }

    fn on_reply(
        &self,
        c: &mut Chan,
        next: State,
        sig: [u8; 65],
        reply: Reply,
    ) -> Result<Proposed, Layer2Error> {
        let a = c.meta.ours_is_a;
        match reply {
            Reply::CoSigned { sig: theirs } => {
                next.verify(&theirs, c.their_address(), &self.domain)?;
                let signed = SignedState::from_sides(next, sig, theirs, a);
                self.record(c, signed.clone())?;
                c.last_by_us = true;
                self.acknowledge(c, signed.state.nonce);
                Ok(Proposed::CoSigned(Box::new(signed)))
            }
            Reply::Refused {
                reason,
                latest: Some(latest),
            } if latest.state.channelId == c.meta.id && latest.state.nonce > c.base().nonce => {
                latest.verify(c.meta.a, c.meta.b, &self.domain)?;
                if latest.state.balanceA.checked_add(latest.state.balanceB) != Some(c.meta.capacity()) {
                    return Err(Layer2Error::Invalid(format!(
                        "the counterparty's newest state does not sum to the deposits: {reason}"
                    )));
                }
                tracing::info!(channel = %hex_id(c.meta.id), nonce = latest.state.nonce, %reason, "the counterparty holds a newer co-signed state: recorded it");
                self.record(c, latest)?;
                Ok(Proposed::Behind)
            }
            Reply::Refused { reason, .. } if reason.contains(CONFLICT) => Ok(Proposed::Conflict(reason)),
            Reply::Refused { reason, .. } => Err(Layer2Error::Invalid(format!(
                "{} refused the state: {reason}",
                c.meta.peer
            ))),
            other => Err(Layer2Error::Invalid(format!(
                "{} answered a proposal with {other:?}",
                c.meta.peer
            ))),
        }
    }

    /// Acknowledges co-signed `nonce`: at most one acknowledgement per
    /// [`ACK_EVERY`] per channel, sent once the ledger is fsynced, for the
    /// newest nonce by then (a burst of payments costs one).
    fn acknowledge(&self, c: &mut Chan, nonce: u64) {
        c.ack.nonce.fetch_max(nonce, Ordering::Relaxed);
        if c.ack.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let (net, peer, id, ack, ledger) = (
            self.net.clone(),
            c.meta.peer.clone(),
            c.meta.id,
            c.ack.clone(),
            c.ledger.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(ACK_EVERY).await;
            ack.pending.store(false, Ordering::Release);
            let nonce = ack.nonce.load(Ordering::Relaxed);
            let synced = blocking(move || ledger.lock().unwrap_or_else(|p| p.into_inner()).sync()).await;
            match synced {
                Ok(()) => {
                    let frame = Request::Ack { channel: id, nonce }.encode();
                    let _ = net.request(&peer, frame).await;
                }
                Err(e) => {
                    tracing::error!(channel = %hex_id(id), error = %e, "cannot sync the channel ledger")
                }
            }
        });
    }

    /// Records a co-signed state this node signed (written, fsynced by the
    /// next signature or acknowledgement: see
    /// [`crate::Ledger::countersigned_unsynced`]).
    fn record(&self, c: &mut Chan, signed: SignedState) -> Result<(), Layer2Error> {
        c.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .countersigned_unsynced(&signed, c.meta.ours_is_a)?;
        c.newest_signed = c.newest_signed.max(signed.state.nonce);
        if c.latest
            .as_ref()
            .is_none_or(|l| l.state.nonce < signed.state.nonce)
        {
            c.latest = Some(signed);
        }
        Ok(())
    }

    /// A proposal from `peer`: co-sign it if it only pays us.
    pub(super) async fn on_propose(&self, peer: &str, state: State, theirs: [u8; 65]) -> Reply {
        let r = self.co_sign(peer, state, theirs).await;
        let result = match &r {
            Reply::CoSigned { .. } => "ok",
            _ => "refused",
        };
        metrics::counter!(m::PAYMENTS, "direction" => "received", "result" => result).increment(1);
        r
    }

    async fn co_sign(&self, peer: &str, state: State, theirs: [u8; 65]) -> Reply {
        let id = state.channelId;
        let Ok(c) = self.get(id) else {
            return Reply::refused(format!("no channel {} here", hex_id(id)));
        };
        let mut c = c.lock().await;
        if c.meta.peer != peer {
            return Reply::refused(format!("channel {} is not with {peer}", hex_id(id)));
        }
        if self.paused.load(Ordering::Relaxed) {
            return Reply::refused("layer2 is paused on this node (pause:layer2)");
        }
        if c.meta.state != ChannelState::Open || c.meta.final_nonce.is_some() {
            return Reply::refused(format!("channel {} is {} here", hex_id(id), c.meta.state));
        }
        let base = c.base();
        let behind = |why: String| Reply::Refused {
            reason: why,
            latest: c.latest.clone(),
        };
        if state.balanceA.checked_add(state.balanceB) != Some(c.meta.capacity()) {
            return Reply::refused(format!(
                "balances sum to {}; the channel holds {}",
                state.balanceA.saturating_add(state.balanceB),
                c.meta.capacity()
            ));
        }
        let newest = c.newest_signed.max(base.nonce);
        if state.nonce <= newest {
            if c.newest_signed > base.nonce && c.last_by_us {
                // Both proposed at once and we paid last: the counterparty
                // retries within a round trip; hold our next one back for three.
                let until = Instant::now() + c.rtt * 3 + std::time::Duration::from_millis(1);
                c.yield_until = Some(until);
                return Reply::Refused {
                    reason: format!("{CONFLICT}: nonce {} is not above {newest}", state.nonce),
                    latest: c.latest.clone(),
                };
            }
            return behind(format!("{CONFLICT}: nonce {} is not above {newest}", state.nonce));
        }
        // Our own newer proposal, if one is out: the counterparty may have
        // co-signed it and built on it before its answer reached us. What we
        // signed there is what we agreed to; never less than that.
        let (floor, floor_nonce) = match c.pending.as_ref().filter(|p| p.nonce > base.nonce) {
            Some(p) => (c.ours(p).min(c.ours(&base)), p.nonce),
            None => (c.ours(&base), base.nonce),
        };
        if c.ours(&state) < floor {
            return behind(format!(
                "it lowers this side's balance from {floor} (nonce {floor_nonce}) to {}",
                c.ours(&state)
            ));
        }
        if state.isFinal && c.ours(&state) != c.ours(&base) {
            return behind("a final state keeps the newest co-signed balances".into());
        }
        if let Err(e) = state.verify(&theirs, c.their_address(), &self.domain) {
            return Reply::refused(format!("{e}"));
        }
        let (ledger, key, domain, a, s) = (
            c.ledger.clone(),
            self.account.signer().clone(),
            self.domain.clone(),
            c.meta.ours_is_a,
            state.clone(),
        );
        let sig = match blocking(move || {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.cosign(&s, theirs, &key, &domain, a)
        })
        .await
        {
            Ok(sig) => sig,
            Err(e) => return Reply::refused(format!("cannot record the state: {e}")),
        };
        c.newest_signed = state.nonce;
        c.last_by_us = false;
        let is_final = state.isFinal;
        c.latest = Some(SignedState::from_sides(state, sig, theirs, a));
        if is_final {
            c.meta.final_nonce = Some(c.newest_signed);
            if let Err(e) = self.save(&c.meta) {
                tracing::error!(error = %e, "cannot record a final state's nonce");
            }
        }
        Reply::CoSigned { sig }
    }

    pub(super) async fn close_id(&self, id: B256, mode: CloseMode) -> Result<ChannelInfo, Layer2Error> {
        let shared: Shared = self.get(id)?;
        let _out = shared.out.lock().await;
        let mut c = shared.lock().await;
        let info = match (c.meta.state, mode) {
            (ChannelState::Opening, _) if c.meta.ours_is_a => {
                let gas = self.chain.cancel(id).await?;
                let deposit = c.meta.deposit_a;
                self.closed(&mut c, (deposit, 0), json!({"how": "cancelled", "gas": gas}))?;
                c.info()
            }
            (ChannelState::Open, CloseMode::Cooperative) => {
                drop(c);
                self.close_cooperatively(&shared).await?
            }
            (ChannelState::Open, CloseMode::Unilateral) => {
                let gas = match c.latest.clone() {
                    Some(s) => self.chain.close(&s).await?,
                    None => self.chain.close_with_deposits(id).await?,
                };
                let on = self.chain.read(id).await?;
                c.meta.state = ChannelState::Closing;
                self.save(&c.meta)?;
                c.watch.closing_seen = Some(on.nonce);
                self.emit(
                    "closing",
                    &c.meta,
                    json!({"by": "us", "nonce": on.nonce, "deadline": on.deadline, "gas": gas}),
                );
                c.info()
            }
            _ => return Err(c.wrong_state("close", "opening (the opener cancels) or open")),
        };
        self.publish_gauges().await;
        Ok(info)
    }

    /// Both sign a final state; it is posted at once. The caller holds `cell.out`.
    async fn close_cooperatively(&self, cell: &Cell) -> Result<ChannelInfo, Layer2Error> {
        let c = cell.lock().await;
        let (signed, mut c) = match c.latest.clone().filter(|s| s.state.isFinal) {
            Some(s) => (s, c),
            None => {
                let mut fin = c.base();
                fin.nonce = c.newest_signed.max(fin.nonce) + 1;
                fin.isFinal = true;
                match self.propose(cell, c, fin).await? {
                    (Proposed::CoSigned(s), c) => (*s, c),
                    (Proposed::Behind | Proposed::Conflict(_), _) => {
                        return Err(Layer2Error::Invalid(
                            "the counterparty was making a payment or held a newer state: close again".into(),
                        ))
                    }
                }
            }
        };
        c.meta.final_nonce = Some(signed.state.nonce);
        self.save(&c.meta)?;
        let gas = self.chain.cooperative_close(&signed).await?;
        let paid = (signed.state.balanceA, signed.state.balanceB);
        self.closed(
            &mut c,
            paid,
            json!({"how": "cooperative", "nonce": signed.state.nonce, "gas": gas}),
        )?;
        Ok(c.info())
    }

    /// Marks `c` closed with `paid` (A, B) and tells the node.
    pub(super) fn closed(
        &self,
        c: &mut Chan,
        paid: (u128, u128),
        mut detail: serde_json::Value,
    ) -> Result<(), Layer2Error> {
        if c.meta.state == ChannelState::Closed {
            return Ok(());
        }
        c.meta.state = ChannelState::Closed;
        c.meta.paid = Some(paid);
        meta::save(&self.cfg.dir, &c.meta)?;
        detail["balance_a"] = json!(paid.0);
        detail["balance_b"] = json!(paid.1);
        self.emit("closed", &c.meta, detail);
        Ok(())
    }

    /// Whether the contract's posted state is older than ours, inside its window.
    pub(super) fn stale(&self, c: &Chan, on: &super::OnChain, height: u64) -> bool {
        on.status == status::CLOSING
            && height <= on.deadline
            && c.latest.as_ref().is_some_and(|l| l.state.nonce > on.nonce)
    }

    /// Replaces the posted state with our newest.
    pub(super) async fn challenge(
        &self,
        c: &mut Chan,
        on: &super::OnChain,
        height: u64,
    ) -> Result<(), Layer2Error> {
        let latest = c
            .latest
            .clone()
            .ok_or_else(|| Layer2Error::Invalid("no co-signed state to dispute with".into()))?;
        let tx = self.chain.challenge(&latest).await?;
        metrics::counter!(m::DISPUTES).increment(1);
        c.watch.challenged(height);
        self.emit(
            "disputed",
            &c.meta,
            json!({"posted_nonce": on.nonce, "our_nonce": latest.state.nonce, "deadline": on.deadline, "height": height, "tx": format!("{tx:#x}")}),
        );
        Ok(())
    }
}
