//! This node's side of announcements: it re-signs and gossips an
//! announcement of every dataset it stores every [`REFRESH`](super::REFRESH) (so verifiers
//! that joined since learn them, and none goes stale), and a dataset it
//! drops is withdrawn before it is deleted.
//!
//! Removing a dataset is a withdrawal first: it is marked withdrawn (no
//! longer announced), a signed withdrawal is gossiped (and re-gossiped with
//! the announcements for [`REPLAY_WINDOW`], kept in `storage/withdrawals`),
//! and the data stays for the withdrawal grace: [`ANNOUNCE_TTL`] (after
//! which no verifier holds the dataset current, even one that heard no
//! withdrawal) plus the longest answer deadline plus
//! [`WITHDRAW_PROPAGATION`]. A challenge or audit sent before a verifier
//! dropped the dataset still counts, so until then it is answered. Then the
//! data is deleted, also after a restart. An honest node that removes a
//! dataset therefore never fails a challenge on it, whatever gossip loses.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::announce::{now_ms, Announcement, Kind, ANNOUNCE_TOPIC, ANNOUNCE_TTL, REPLAY_WINDOW};
use super::{DatasetInfo, Storage, DATASETS};
use crate::store::Store;
use crate::{Error, Result};

const OWN_WITHDRAWALS: &str = "storage/withdrawals";

/// Extra time in the withdrawal grace, past [`ANNOUNCE_TTL`] and the
/// longest answer deadline: for gossip delays and timer slack.
pub const WITHDRAW_PROPAGATION: Duration = Duration::from_secs(5);

/// A dataset this node withdrew, as `storage_remove` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Withdrawal {
    /// Replica root (hex).
    pub replica_root: String,
    /// When the withdrawal was signed, Unix ms.
    pub withdrawn_at_ms: u64,
    /// When the data is deleted, Unix ms (challenges sent before the
    /// withdrawal arrived are answered until then).
    pub delete_at_ms: u64,
}

impl Storage {
    /// How long a withdrawn dataset is kept (and proven) before it is
    /// deleted; the node sets [`Storage::withdraw_grace`] of its genesis
    /// (the default genesis' until then).
    pub fn set_withdraw_grace(&self, grace: Duration) {
        self.inner
            .withdraw_grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    /// The withdrawal grace under genesis bounds `sec`: [`ANNOUNCE_TTL`],
    /// the longest answer deadline (the audit deadline plus the
    /// network-distance allowance) and [`WITHDRAW_PROPAGATION`].
    pub fn withdraw_grace(sec: &vigil_genesis::SecurityParams) -> Duration {
        let deadline = u64::from(sec.audit_deadline_ms) + u64::from(sec.rtt_allowance_max_ms);
        ANNOUNCE_TTL + Duration::from_millis(deadline) + WITHDRAW_PROPAGATION
    }

    fn grace_ms(&self) -> u64 {
        self.inner.withdraw_grace_ms.load(Ordering::Relaxed)
    }

    /// A signing time later than every one this node used before (so its
    /// own messages about a dataset are ordered even within a millisecond).
    fn next_at(&self) -> u64 {
        let now = now_ms();
        let prev = self
            .inner
            .last_at
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(0);
        now.max(prev + 1)
    }

    fn sign(&self, kind: Kind, d: &DatasetInfo) -> Result<Announcement> {
        let (root, replica_root) = d.roots()?;
        Announcement::signed(&self.inner.key, kind, root, replica_root, d.size, self.next_at())
    }

    /// Signed announcements of every dataset stored here and not withdrawn.
    pub fn announcements(&self) -> Result<Vec<Announcement>> {
        self.list()?
            .iter()
            .filter(|d| d.withdrawn_at_ms.is_none())
            .map(|d| self.sign(Kind::Announce, d))
            .collect()
    }

    /// This node's withdrawals of the last [`REPLAY_WINDOW`] (older ones are
    /// dropped: an announcement they answer is refused for its age by now).
    pub fn withdrawals(&self) -> Result<Vec<Announcement>> {
        let now = now_ms();
        let mut out = Vec::new();
        for (k, v) in self.inner.store.scan_prefix(OWN_WITHDRAWALS, b"")? {
            match Announcement::decode_verified(&v) {
                Ok((a, _)) if a.at + REPLAY_WINDOW.as_millis() as u64 >= now => out.push(a),
                _ => {
                    self.inner.store.remove(OWN_WITHDRAWALS, &k)?;
                }
            }
        }
        Ok(out)
    }

    /// Gossips every dataset's announcement and every recent withdrawal,
    /// deletes withdrawn datasets whose grace is over, and forgets stale
    /// announcements of peers. Called every [`REFRESH`](super::REFRESH).
    pub async fn announce_all(&self) {
        if let Err(e) = self.delete_withdrawn() {
            tracing::error!(error = %e, "cannot delete withdrawn datasets");
        }
        if let Err(e) = self.prune_announced() {
            tracing::error!(error = %e, "cannot prune stale announcements");
        }
        let Some(net) = &self.inner.net else { return };
        let all = self.announcements().and_then(|mut a| {
            a.extend(self.withdrawals()?);
            Ok(a)
        });
        match all {
            Ok(list) => {
                for a in list {
                    if let Err(e) = net.publish(ANNOUNCE_TOPIC, a.encode()).await {
                        tracing::debug!(error = %e, "cannot gossip a dataset message");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list datasets to announce"),
        }
    }

    /// Withdraws a stored dataset: no longer announced, a signed withdrawal
    /// gossiped, the data deleted after the grace (at once when there is no
    /// network). `None` if no such dataset; a dataset withdrawn already
    /// keeps its first withdrawal.
    pub async fn withdraw(&self, replica_root: &[u8; 32]) -> Result<Option<Withdrawal>> {
        let Some((w, msg)) = self.mark_withdrawn(replica_root)? else {
            return Ok(None);
        };
        let Some(msg) = msg else {
            return Ok(Some(w)); // withdrawn already
        };
        let Some(net) = self.inner.net.clone() else {
            // Nobody to tell and nobody challenging: delete now.
            self.remove(replica_root)?;
            return Ok(Some(Withdrawal {
                delete_at_ms: w.withdrawn_at_ms,
                ..w
            }));
        };
        if let Err(e) = net.publish(ANNOUNCE_TOPIC, msg).await {
            tracing::warn!(error = %e, "cannot gossip a withdrawal now; it is gossiped again every 15 s");
        }
        let (s, wait) = (self.clone(), self.grace_ms());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if let Err(e) = s.delete_withdrawn() {
                tracing::error!(error = %e, "cannot delete withdrawn datasets");
            }
        });
        Ok(Some(w))
    }

    /// Marks a dataset withdrawn and keeps its signed withdrawal (durably);
    /// `None` if no such dataset, else the withdrawal and, when it is new,
    /// its signed message to gossip.
    fn mark_withdrawn(&self, replica_root: &[u8; 32]) -> Result<Option<(Withdrawal, Option<Vec<u8>>)>> {
        let Some(mut d) = self.info(replica_root)? else {
            return Ok(None);
        };
        let grace = self.grace_ms();
        let report = |at: u64, d: &DatasetInfo| Withdrawal {
            replica_root: d.replica_root.clone(),
            withdrawn_at_ms: at,
            delete_at_ms: at + grace,
        };
        if let Some(at) = d.withdrawn_at_ms {
            return Ok(Some((report(at, &d), None)));
        }
        let w = self.sign(Kind::Withdraw, &d)?;
        d.withdrawn_at_ms = Some(w.at);
        let v = serde_json::to_vec(&d).map_err(|e| Error::Invalid(e.to_string()))?;
        let msg = w.encode();
        let mut b = crate::store::Batch::default();
        b.insert(DATASETS, replica_root, v);
        b.insert(OWN_WITHDRAWALS, replica_root, msg.clone());
        self.inner.store.apply(&b)?;
        self.inner.store.flush()?;
        tracing::info!(replica_root = %d.replica_root, grace_ms = grace, "dataset withdrawn; deleted after the grace");
        Ok(Some((report(w.at, &d), Some(msg))))
    }

    /// Keeps a dataset that is being withdrawn after all (it is stored
    /// again): announced again with a time after its withdrawal.
    pub(crate) fn cancel_withdrawal(&self, mut d: DatasetInfo) -> Result<DatasetInfo> {
        let replica_root = super::parse_root(&d.replica_root)?;
        d.withdrawn_at_ms = None;
        let v = serde_json::to_vec(&d).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut b = crate::store::Batch::default();
        b.insert(DATASETS, &replica_root, v);
        b.remove(OWN_WITHDRAWALS, &replica_root);
        self.inner.store.apply(&b)?;
        self.inner.store.flush()?;
        Ok(d)
    }

    /// Deletes the withdrawn datasets whose grace is over; how many.
    pub fn delete_withdrawn(&self) -> Result<usize> {
        let now = now_ms();
        let grace = self.grace_ms();
        let mut n = 0;
        for d in self.list()? {
            let rp = d.roots()?.1;
            let due = |d: &DatasetInfo| d.withdrawn_at_ms.is_some_and(|at| at + grace <= now);
            // Read again right before: it may have been stored again since.
            if due(&d) && self.info(&rp)?.is_some_and(|d| due(&d)) {
                self.remove(&rp)?;
                tracing::info!(replica_root = %d.replica_root, "withdrawn dataset deleted");
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::store::SledStore;

    #[test]
    fn a_withdrawn_dataset_is_kept_for_the_grace_then_deleted_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = SledStore::open(&dir.path().join("db"), 1 << 20, None).unwrap();
        let key = Keypair::generate_ed25519();
        let open = || {
            Storage::open(
                &dir.path().join("storage"),
                key.clone(),
                1,
                1 << 30,
                db.clone(),
                None,
            )
            .unwrap()
        };
        let s = open();
        // 60 s TTL + 30 s audit deadline + 100 ms allowance + 5 s, the default genesis'.
        assert_eq!(s.grace_ms(), 95_100);
        let d = s.import_unencoded("a", &[7u8; 5000]).unwrap();
        let rp = super::super::parse_root(&d.replica_root).unwrap();
        let folder = dir.path().join("storage").join(&d.replica_root);
        assert_eq!(s.announcements().unwrap().len(), 1);
        s.set_withdraw_grace(Duration::from_secs(3600));
        let (w, msg) = s.mark_withdrawn(&rp).unwrap().unwrap();
        assert!(msg.is_some(), "a new withdrawal to gossip");
        assert_eq!(w.delete_at_ms - w.withdrawn_at_ms, 3_600_000);
        // Withdrawn: no longer announced, its withdrawal kept to re-gossip,
        // the data still there (and listed, with the time) for the grace.
        assert!(s.announcements().unwrap().is_empty());
        let ws = s.withdrawals().unwrap();
        assert_eq!(
            (ws.len(), ws[0].kind, ws[0].at),
            (1, Kind::Withdraw, w.withdrawn_at_ms)
        );
        assert_eq!(s.delete_withdrawn().unwrap(), 0);
        assert!(folder.exists());
        assert_eq!(
            s.info(&rp).unwrap().unwrap().withdrawn_at_ms,
            Some(w.withdrawn_at_ms)
        );
        // A second removal keeps the first withdrawal.
        let (again, msg) = s.mark_withdrawn(&rp).unwrap().unwrap();
        assert!(msg.is_none());
        assert_eq!(again, w);
        // "Restarted" once the grace is over: deleted.
        drop(s);
        let s = open();
        s.set_withdraw_grace(Duration::ZERO);
        assert_eq!(s.delete_withdrawn().unwrap(), 1);
        assert!(!folder.exists());
        assert!(s.info(&rp).unwrap().is_none());
        // Its withdrawal is still gossiped for the replay window.
        assert_eq!(s.withdrawals().unwrap().len(), 1);
    }
}
