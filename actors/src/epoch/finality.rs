//! Finality of epochs taken by sampled verification.
//!
//! A node in `vdf.verify = "sampled"` mode takes a received epoch once its
//! output segment and `samples - 1` others check out: fast, but a proof
//! broken in one other segment passes with probability
//! `1 - (samples - 1) / (segments - 1)`. Such an epoch is *unverified* until
//! a background task verified it in full (oldest first, one at a time, its
//! segments in parallel). Until then nothing final depends on it:
//! [`Chain::final_head`], the highest epoch below the first unverified one,
//! bounds what the bus publishes (`epoch.new`), which epochs the continuity
//! worker links, which epoch challenges (and so bans) use, what sync serves
//! and the head this node tells peers; and the node does not forward it by
//! gossip: it never vouches for what it has not verified in full (once it
//! has, it gossips the epoch itself if it is still the newest). An epoch
//! that fails the full check is rolled back with every epoch after it, its
//! sender is banned, and the node syncs the chain again from its peers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use libp2p::PeerId;
use vigil_protocols::epoch::Check;

use super::{lock, AppendError, Appended, Chain, Origin, VerifyMode};
use crate::metrics as m;

/// Epochs taken by sampling and not yet verified in full, with their sender.
pub(super) type Unverified = BTreeMap<u64, Option<PeerId>>;

/// How long the sender of an epoch that fails its full check is banned.
pub const FORGER_BAN_SECS: u64 = 24 * 3600;

/// What one background check found.
enum Full {
    Valid,
    /// The epoch is wrong: roll back.
    Invalid(String),
    /// This node could not check (its store): try again later.
    Unchecked(String),
}

impl Chain {
    /// The highest epoch such that it and every epoch before it were
    /// verified in full (or computed here): what anything final may depend
    /// on. Equal to [`Chain::head`] unless the node verifies by sampling.
    pub fn final_head(&self) -> u64 {
        let u = lock(&self.inner.unverified);
        match u.keys().next() {
            Some(first) => first - 1,
            None => self.head(),
        }
    }

    /// Epochs taken by sampling and not yet verified in full.
    pub fn unverified(&self) -> usize {
        lock(&self.inner.unverified).len()
    }

    fn sampling(&self) -> bool {
        matches!(self.inner.settings.verify, VerifyMode::Sampled(_))
    }

    /// Appends an epoch `from` a peer that passed the configured check:
    /// under sampling it stays unverified until the background check.
    pub(crate) fn append_received(
        &self,
        e: super::Epoch,
        origin: Origin,
        from: Option<PeerId>,
    ) -> std::result::Result<Appended, AppendError> {
        if !self.sampling() {
            return self.append(e, origin);
        }
        let n = e.number;
        // Listed before it is stored, so the final head never covers it.
        let listed = {
            let mut u = lock(&self.inner.unverified);
            let fresh = !u.contains_key(&n);
            u.entry(n).or_insert(from);
            fresh
        };
        let r = self.append(e, origin);
        if listed {
            match r {
                Ok(Appended::New) => self.inner.final_wake.notify_one(),
                // A duplicate or a failed append: nothing of ours to check.
                _ => {
                    lock(&self.inner.unverified).remove(&n);
                }
            }
        }
        r
    }

    /// Verifies the oldest unverified epoch in full: final if it holds,
    /// rolled back (with every epoch after it) and its sender banned if not.
    /// False when there was nothing to check.
    pub(crate) async fn check_unverified(&self) -> bool {
        let Some((n, from)) = lock(&self.inner.unverified).iter().next().map(|(n, f)| (*n, *f)) else {
            return false;
        };
        let c = self.clone();
        let full = tokio::task::spawn_blocking(move || c.verify_stored(n))
            .await
            .unwrap_or_else(|e| Full::Unchecked(format!("the check panicked: {e}")));
        match full {
            Full::Valid => {
                lock(&self.inner.unverified).remove(&n);
                metrics::gauge!(m::EPOCH_FINAL_HEAD).set(self.final_head() as f64);
                // It was not forwarded when taken: gossip it now, if it is
                // still the newest (old epochs of a catch-up are not news).
                if n == self.head() && self.final_head() == n {
                    if let Ok(Some(e)) = self.inner.store.get(n) {
                        lock(&self.inner.outbox).push(e);
                    }
                }
                // The bus may publish it now; the service gossips the outbox.
                self.inner.wake.notify_one();
            }
            Full::Invalid(why) => self.rollback(n, from, &why).await,
            Full::Unchecked(why) => {
                tracing::error!(epoch = n, error = %why, "cannot verify an epoch in full; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        true
    }

    fn verify_stored(&self, n: u64) -> Full {
        let e = match self.inner.store.get(n) {
            Ok(Some(e)) => e,
            Ok(None) => return Full::Valid, // rolled back meanwhile: nothing to finalise
            Err(e) => return Full::Unchecked(e.to_string()),
        };
        let prev = match self.prev_output(n) {
            Ok(Some(p)) => p,
            Ok(None) => return Full::Unchecked(format!("epoch {} is missing", n - 1)),
            Err(e) => return Full::Unchecked(e.to_string()),
        };
        let t = std::time::Instant::now();
        // Its anchor was compared with the expected one when it was taken.
        let r = e.validate(
            &self.inner.genesis,
            &self.inner.params,
            &prev,
            Some(&e.anchor),
            Check::Full,
        );
        metrics::histogram!(m::EPOCH_VERIFY_DURATION).record(t.elapsed().as_secs_f64());
        match r {
            Ok(()) => Full::Valid,
            Err(err) => Full::Invalid(err.to_string()),
        }
    }

    /// Removes epochs `n ..`, bans `from`, and lets sync take the chain again.
    async fn rollback(&self, n: u64, from: Option<PeerId>, why: &str) {
        let gone = match self.inner.store.truncate_from(n) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(epoch = n, error = %e, "cannot roll back an epoch that failed its full check");
                return;
            }
        };
        lock(&self.inner.unverified).retain(|k, _| *k < n);
        let head = self.inner.store.head().unwrap_or(n - 1);
        self.inner.head.store(head, Ordering::Release);
        metrics::gauge!(m::EPOCH_HEAD).set(head as f64);
        metrics::counter!(m::EPOCH_ROLLED_BACK).increment(gone as u64);
        metrics::counter!(m::EPOCH_REJECTED, "reason" => "failed_full_check").increment(1);
        self.update_status(|s| s.rolled_back += gone as u64);
        let sender = from.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        tracing::warn!(
            epoch = n,
            peer = %sender,
            error = %why,
            rolled_back = gone,
            head,
            "an epoch taken by sampled verification failed its full check: rolled back with the epochs after it, its sender banned"
        );
        if let Some(peer) = from {
            self.claim_refuted(&peer);
            if let Some(net) = &self.inner.net {
                let reason = format!("epoch {n} failed its full verification: {why}");
                if let Err(e) = net.ban(peer, FORGER_BAN_SECS, reason, "epochs".into()).await {
                    tracing::error!(%peer, error = %e, "cannot ban the sender of a forged epoch");
                }
            }
        }
        self.inner.wake.notify_one();
    }
}

/// The background checker: verifies unverified epochs in full as they come.
pub(super) async fn run(chain: Chain) {
    loop {
        while chain.check_unverified().await {}
        tokio::select! {
            _ = chain.inner.final_wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use vigil_genesis::VdfMode;
    use vigil_protocols::epoch::{input, Epoch};
    use vigil_protocols::vdf::{Vdf, VdfParams};

    use super::*;
    use crate::epoch::{EpochSettings, EpochStore};
    use crate::net::EpochSource;
    use crate::store::SledStore;

    const GENESIS: [u8; 32] = [0x62; 32];

    fn params() -> VdfParams {
        VdfParams {
            iterations: 40_000,
            segments: 8,
            mode: VdfMode::Hash,
            memory_mib: 0,
        }
    }

    fn epoch(n: u64, prev: &[u8; 32]) -> Epoch {
        let inp = input(&GENESIS, n, prev, &[]);
        Epoch::from_proof(n, Vec::new(), Vdf::new(params(), &inp).unwrap().prove(&inp))
    }

    fn chain(dir: &std::path::Path) -> Chain {
        let store = EpochStore::new(SledStore::open(dir, 1 << 20, None).unwrap());
        let settings = EpochSettings {
            compute: false,
            verify: VerifyMode::Sampled(2),
            ..EpochSettings::default()
        };
        Chain::open(GENESIS, params(), settings, store, None, None).unwrap()
    }

    #[tokio::test]
    async fn a_sampled_epoch_is_final_only_once_verified_in_full_and_a_forgery_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let c = chain(dir.path());
        let peer = PeerId::random();
        let e1 = epoch(1, &GENESIS);
        c.append_received(e1.clone(), Origin::Gossip, Some(peer)).unwrap();
        assert_eq!((c.head(), c.final_head(), c.unverified()), (1, 0, 1));
        // Peers are told of and served only what is final.
        assert_eq!(EpochSource::head(&c), 0);
        assert!(c.range(1, 10, 1 << 20).is_empty());
        assert!(c.check_unverified().await);
        assert_eq!((c.head(), c.final_head(), c.unverified()), (1, 1, 0));
        assert_eq!(c.range(1, 10, 1 << 20).len(), 1);
        assert!(!c.check_unverified().await, "nothing left to check");

        // Epoch 2 broken in one middle checkpoint (two segments wrong, the
        // output segment right: what sampling misses with probability 5/7
        // here), and an honest epoch 3 on top of its output.
        let mut forged = epoch(2, &e1.output);
        forged.checkpoints[3][0] ^= 1;
        let e3 = epoch(3, &forged.output);
        c.append_received(forged.clone(), Origin::Gossip, Some(peer))
            .unwrap();
        c.append_received(e3, Origin::Sync, None).unwrap();
        assert_eq!((c.head(), c.final_head(), c.unverified()), (3, 1, 2));
        assert_eq!(c.range(1, 10, 1 << 20).len(), 1, "only epoch 1 is served");
        // The full check finds it: epochs 2 and 3 go, the head is back at 1.
        assert!(c.check_unverified().await);
        assert_eq!((c.head(), c.final_head(), c.unverified()), (1, 1, 0));
        assert_eq!(c.store().head().unwrap(), 1);
        assert!(c.store().get(2).unwrap().is_none());
        assert_eq!(c.status().rolled_back, 2);
        // The honest epoch 2 is taken after it.
        let e2 = epoch(2, &e1.output);
        c.append_received(e2.clone(), Origin::Sync, Some(PeerId::random()))
            .unwrap();
        assert!(c.check_unverified().await);
        assert_eq!((c.head(), c.final_head()), (2, 2));
        assert_eq!(c.store().get(2).unwrap(), Some(e2));
    }

    #[tokio::test]
    async fn in_full_mode_every_epoch_is_final_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EpochStore::new(SledStore::open(dir.path(), 1 << 20, None).unwrap());
        let c = Chain::open(GENESIS, params(), EpochSettings::default(), store, None, None).unwrap();
        c.append_received(epoch(1, &GENESIS), Origin::Gossip, None)
            .unwrap();
        assert_eq!((c.head(), c.final_head(), c.unverified()), (1, 1, 0));
        assert!(!c.check_unverified().await);
    }
}
