//! What peers announced (sled tree `storage/announced`, key `peer ‖ R_p`,
//! and `storage/announced_roots`, `R_p -> peer`): what challengers pick
//! from; and what they withdrew (`storage/peer_withdrawals`, key
//! `peer ‖ R_p`, the withdrawal's time), so that an older announcement
//! replayed later cannot bring a dropped dataset back.
//!
//! One replica never serves two identities. The encoding's keystream is
//! keyed by the announcer's peer id, so honest replicas of the same data
//! differ per identity, and an audit checks the encoding under the
//! announcer's id. Announcements that would let one copy pass for several
//! identities are refused: `R_p == R` (the "replica" is the plaintext,
//! which anyone can serve; every node sees this, so the message is rejected
//! and its relay scored down), and an `R_p` another peer announced first, or
//! that is one of this node's own replicas (this depends on what the node
//! has seen, so the message is only not forwarded and its signer scored
//! down). A first claimant that is banned since no longer holds its roots.
//!
//! A peer's messages about one dataset are ordered by their signed time:
//! a withdrawal removes the announcement (the dataset is challenged and
//! audited no more; a challenge already sent still counts), an announcement
//! older than the withdrawal is a replay and is ignored, a newer one brings
//! the dataset back. A dataset is a candidate only while its announcement
//! was heard within [`ANNOUNCE_TTL`] by this node's own clock (owners
//! refresh every 15 s; the time of the last one heard is kept in memory,
//! sled is written only when a dataset becomes current), so a dataset whose
//! withdrawal this node missed drops out that soon anyway.
//!
//! A peer holds at most [`MAX_PER_PEER`] announced datasets and as many
//! withdrawals here: a new one past that evicts its oldest (by signed
//! time), so announcing in bulk fills no disk and, as challengers pick a
//! peer before a dataset, dilutes no one's challenges.

use std::time::Instant;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::announce::{now_ms, Announcement, Kind, ANNOUNCE_TTL, REPLAY_WINDOW};
use super::Storage;
use crate::net::{GossipHandler, GossipVerdict, Offence};
use crate::store::{Batch, Store};
use crate::Result;

const ANNOUNCED: &str = "storage/announced";
const ROOTS: &str = "storage/announced_roots";
const WITHDRAWN: &str = "storage/peer_withdrawals";

/// Datasets (and withdrawals) kept per peer; past that its oldest go.
pub(super) const MAX_PER_PEER: usize = 256;

/// A dataset a peer announced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Announced {
    /// The peer storing it.
    pub peer: String,
    /// Plaintext root (hex).
    pub root: String,
    /// The peer's replica root (hex).
    pub replica_root: String,
    /// Plaintext bytes.
    pub size: u64,
    /// When the peer signed the announcement this node took first, Unix ms
    /// of its clock.
    #[serde(default)]
    pub at: u64,
}

fn key(peer: &PeerId, replica_root: &[u8; 32]) -> Vec<u8> {
    [peer.to_bytes().as_slice(), replica_root].concat()
}

fn within(at: u64, window: std::time::Duration, now: u64) -> bool {
    at.saturating_add(window.as_millis() as u64) >= now
}

/// The last announcement heard per `peer ‖ R_p`: its signed time and when
/// this node heard it.
pub(super) type Heard = std::collections::HashMap<Vec<u8>, (u64, Instant)>;

impl Storage {
    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        super::lock(&self.inner.heard)
    }

    /// Whether the announcement under `k` was heard within [`ANNOUNCE_TTL`].
    fn current(&self, k: &[u8]) -> bool {
        self.heard()
            .get(k)
            .is_some_and(|(_, t)| t.elapsed() <= ANNOUNCE_TTL)
    }

    /// Datasets peers announced, did not withdraw, and refreshed within
    /// [`ANNOUNCE_TTL`].
    pub fn announced(&self) -> Result<Vec<Announced>> {
        Ok(self
            .announced_rows()?
            .into_iter()
            .filter(|(k, _)| self.current(k))
            .map(|(_, a)| a)
            .collect())
    }

    fn announced_rows(&self) -> Result<Vec<(Vec<u8>, Announced)>> {
        self.inner
            .store
            .scan_prefix(ANNOUNCED, b"")?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v)
                    .map(|a| (k, a))
                    .map_err(|e| super::corrupt(ANNOUNCED, e))
            })
            .collect()
    }

    /// The dataset `peer` announced with replica root `replica_root`, if it
    /// is current.
    pub fn announced_by(&self, peer: &PeerId, replica_root: &[u8; 32]) -> Result<Option<Announced>> {
        let k = key(peer, replica_root);
        Ok(self.row(&k)?.filter(|_| self.current(&k)))
    }

    fn row(&self, k: &[u8]) -> Result<Option<Announced>> {
        self.inner
            .store
            .get(ANNOUNCED, k)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| super::corrupt(ANNOUNCED, e)))
            .transpose()
    }

    /// The signed time of the newest announcement heard under `k`.
    fn latest(&self, k: &[u8]) -> Result<Option<u64>> {
        if let Some((at, _)) = self.heard().get(k) {
            return Ok(Some(*at));
        }
        Ok(self.row(k)?.map(|r| r.at))
    }

    /// When `peer` withdrew `replica_root` (Unix ms of its clock), as this
    /// node heard it (kept for [`REPLAY_WINDOW`]).
    pub fn withdrawn_by(&self, peer: &PeerId, replica_root: &[u8; 32]) -> Result<Option<u64>> {
        Ok(self
            .inner
            .store
            .get(WITHDRAWN, &key(peer, replica_root))?
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes)))
    }

    /// Forgets what `peer` announced (a banned peer).
    pub fn forget_peer(&self, peer: &PeerId) -> Result<usize> {
        let rows = self.inner.store.scan_prefix(ANNOUNCED, &peer.to_bytes())?;
        let mut b = Batch::default();
        let mut heard = self.heard();
        for (k, _) in &rows {
            b.remove(ANNOUNCED, k);
            heard.remove(k);
            if let Some(root) = k.get(k.len().saturating_sub(32)..) {
                b.remove(ROOTS, root);
            }
        }
        drop(heard);
        self.inner.store.apply(&b)?;
        Ok(rows.len())
    }

    /// Drops announcements neither heard within [`ANNOUNCE_TTL`] nor signed
    /// within [`REPLAY_WINDOW`], and withdrawals older than that window;
    /// how many.
    pub(crate) fn prune_announced(&self) -> Result<usize> {
        let now = now_ms();
        self.heard().retain(|_, (_, t)| t.elapsed() <= ANNOUNCE_TTL);
        let mut b = Batch::default();
        let mut n = 0;
        for (k, a) in self.announced_rows()? {
            if !self.current(&k) && !within(a.at, REPLAY_WINDOW, now) {
                b.remove(ANNOUNCED, &k);
                if let Some(root) = k.get(k.len().saturating_sub(32)..) {
                    b.remove(ROOTS, root);
                }
                n += 1;
            }
        }
        for (k, v) in self.inner.store.scan_prefix(WITHDRAWN, b"")? {
            let at = v.try_into().map(u64::from_be_bytes).unwrap_or(0);
            if !within(at, REPLAY_WINDOW, now) {
                b.remove(WITHDRAWN, &k);
                n += 1;
            }
        }
        self.inner.store.apply(&b)?;
        Ok(n)
    }

    /// Evicts `peer`'s oldest rows of `tree` (announcements or
    /// withdrawals, by signed time) while it holds [`MAX_PER_PEER`] or more.
    fn make_room(&self, peer: &PeerId, tree: &str) -> Result<()> {
        let rows = self.inner.store.scan_prefix(tree, &peer.to_bytes())?;
        if rows.len() < MAX_PER_PEER {
            return Ok(());
        }
        let at = |v: &[u8]| match tree {
            ANNOUNCED => serde_json::from_slice::<Announced>(v).map(|a| a.at).unwrap_or(0),
            _ => v.try_into().map(u64::from_be_bytes).unwrap_or(0),
        };
        let mut by_age: Vec<(u64, Vec<u8>)> = rows.into_iter().map(|(k, v)| (at(&v), k)).collect();
        by_age.sort_unstable();
        let mut b = Batch::default();
        let mut heard = self.heard();
        for (_, k) in by_age.iter().take(by_age.len() + 1 - MAX_PER_PEER) {
            b.remove(tree, k);
            if tree == ANNOUNCED {
                heard.remove(k);
                if let Some(root) = k.get(k.len().saturating_sub(32)..) {
                    b.remove(ROOTS, root);
                }
            }
        }
        drop(heard);
        tracing::info!(%peer, tree, kept = MAX_PER_PEER, "a peer's oldest dataset message evicted: it holds as many as allowed");
        self.inner.store.apply(&b)
    }

    fn banned(&self, peer: &PeerId) -> bool {
        let id = peer.to_string();
        self.inner
            .net
            .as_ref()
            .and_then(|n| n.bans().ok())
            .is_some_and(|bans| bans.iter().any(|b| b.peer == id))
    }

    /// Why this node refuses `a` from `signer` when only its own view says
    /// so (an `R_p` it knows from elsewhere); `None` to take it.
    fn claimed_elsewhere(&self, signer: &PeerId, a: &Announcement) -> Result<Option<String>> {
        if self.info(&a.replica_root)?.is_some() {
            return Ok(Some("its replica root is one of this node's own replicas".into()));
        }
        let Some(owner) = self.inner.store.get(ROOTS, &a.replica_root)? else {
            return Ok(None);
        };
        let Ok(owner) = PeerId::from_bytes(&owner) else {
            return Ok(None);
        };
        if owner == *signer {
            return Ok(None);
        }
        if self.banned(&owner) {
            let n = self.forget_peer(&owner)?;
            tracing::info!(peer = %owner, datasets = n, "forgot the announcements of a banned peer");
            return Ok(None);
        }
        Ok(Some(format!(
            "its replica root was announced first by {owner}: one replica cannot serve two identities"
        )))
    }

    /// Takes an announcement newer than anything `peer` said of that
    /// dataset; `None` when it is not newer (a relay or a replay), else
    /// whether the dataset became current here.
    fn record(&self, peer: PeerId, a: &Announcement) -> Result<Option<bool>> {
        let k = key(&peer, &a.replica_root);
        let withdrawn = self.withdrawn_by(&peer, &a.replica_root)?;
        if self.latest(&k)?.is_some_and(|l| l >= a.at) || withdrawn.is_some_and(|w| w >= a.at) {
            return Ok(None);
        }
        let became = !self.current(&k);
        if became && self.row(&k)?.is_none() {
            self.make_room(&peer, ANNOUNCED)?;
        }
        if became {
            let v = serde_json::to_vec(&Announced {
                peer: peer.to_string(),
                root: hex::encode(a.root),
                replica_root: hex::encode(a.replica_root),
                size: a.size,
                at: a.at,
            })
            .map_err(|e| crate::Error::Invalid(e.to_string()))?;
            let mut b = Batch::default();
            b.insert(ANNOUNCED, &k, v);
            b.insert(ROOTS, &a.replica_root, peer.to_bytes());
            b.remove(WITHDRAWN, &k);
            self.inner.store.apply(&b)?;
        }
        self.heard().insert(k, (a.at, Instant::now()));
        Ok(Some(became))
    }

    /// Takes a withdrawal newer than anything `peer` said of that dataset;
    /// `None` when it is not newer, else whether a current dataset went.
    fn record_withdrawal(&self, peer: PeerId, a: &Announcement) -> Result<Option<bool>> {
        let k = key(&peer, &a.replica_root);
        let withdrawn = self.withdrawn_by(&peer, &a.replica_root)?;
        if self.latest(&k)?.is_some_and(|l| l > a.at) || withdrawn.is_some_and(|w| w >= a.at) {
            return Ok(None);
        }
        let was = self.current(&k);
        if withdrawn.is_none() {
            self.make_room(&peer, WITHDRAWN)?;
        }
        let mut b = Batch::default();
        b.remove(ANNOUNCED, &k);
        if self.inner.store.get(ROOTS, &a.replica_root)? == Some(peer.to_bytes()) {
            b.remove(ROOTS, &a.replica_root);
        }
        b.insert(WITHDRAWN, &k, a.at.to_be_bytes().to_vec());
        self.inner.store.apply(&b)?;
        self.heard().remove(&k);
        Ok(Some(was))
    }

    fn on_announcement(&self, signer: PeerId, a: &Announcement) -> GossipVerdict {
        if a.replica_root == a.root {
            tracing::warn!(peer = %signer, root = %hex::encode(a.root), "announcement refused: its replica root equals its plaintext root (the replica must be encoded for the announcer's identity); peer scored down");
            return GossipVerdict::Reject;
        }
        match self.claimed_elsewhere(&signer, a) {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::warn!(peer = %signer, replica_root = %hex::encode(a.replica_root), why, "announcement refused; its signer scored down");
                if let Some(net) = self.inner.net.clone() {
                    tokio::spawn(async move { net.penalize(signer, Offence::InvalidGossip).await });
                }
                return GossipVerdict::Ignore;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check an announcement");
                return GossipVerdict::Ignore;
            }
        }
        match self.record(signer, a) {
            Ok(Some(true)) => {
                tracing::info!(peer = %signer, replica_root = %hex::encode(a.replica_root), size = a.size, "dataset announced");
                GossipVerdict::Accept
            }
            Ok(Some(false)) => GossipVerdict::Accept,
            Ok(None) => {
                tracing::debug!(peer = %signer, replica_root = %hex::encode(a.replica_root), "announcement not newer than what its signer said since: ignored");
                GossipVerdict::Ignore
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record an announcement");
                GossipVerdict::Ignore
            }
        }
    }

    fn on_withdrawal(&self, signer: PeerId, a: &Announcement) -> GossipVerdict {
        match self.record_withdrawal(signer, a) {
            Ok(Some(was_announced)) => {
                if was_announced {
                    tracing::info!(peer = %signer, replica_root = %hex::encode(a.replica_root), "dataset withdrawn: no more challenges or audits on it");
                }
                GossipVerdict::Accept
            }
            Ok(None) => GossipVerdict::Ignore,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a withdrawal");
                GossipVerdict::Ignore
            }
        }
    }
}

impl GossipHandler for Storage {
    fn on_gossip(&self, from: PeerId, source: Option<PeerId>, data: &[u8]) -> GossipVerdict {
        match Announcement::decode_verified(data) {
            Ok((a, signer)) if source == Some(signer) => {
                if signer == self.inner.key.public().to_peer_id() {
                    return GossipVerdict::Ignore;
                }
                if let Some(why) = a.untimely(now_ms()) {
                    tracing::info!(peer = %signer, replica_root = %hex::encode(a.replica_root), why, "dataset message ignored");
                    return GossipVerdict::Ignore;
                }
                match a.kind {
                    Kind::Announce => self.on_announcement(signer, &a),
                    Kind::Withdraw => self.on_withdrawal(signer, &a),
                }
            }
            Ok(_) => {
                tracing::info!(peer = %from, "dataset message signed by another peer than its author: rejected");
                GossipVerdict::Reject
            }
            Err(e) => {
                tracing::info!(peer = %from, error = %e, "invalid dataset message: rejected");
                GossipVerdict::Reject
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::store::SledStore;

    /// A storage without network in `dir`, and a peer's key and id.
    fn storage_and_peer(dir: &std::path::Path) -> (Storage, Keypair, PeerId) {
        let db = SledStore::open(&dir.join("db"), 1 << 20, None).unwrap();
        let s = Storage::open(
            &dir.join("storage"),
            Keypair::generate_ed25519(),
            1,
            1 << 30,
            db,
            None,
        )
        .unwrap();
        let peer = Keypair::generate_ed25519();
        let id = peer.public().to_peer_id();
        (s, peer, id)
    }

    fn msg(key: &Keypair, kind: Kind, rp: u8, at: u64) -> Vec<u8> {
        Announcement::signed(key, kind, [9; 32], [rp; 32], 300_000, at)
            .unwrap()
            .encode()
    }

    #[test]
    fn a_peers_messages_on_a_dataset_are_ordered_by_their_signed_time() {
        let dir = tempfile::tempdir().unwrap();
        let (s, peer, id) = storage_and_peer(dir.path());
        let now = now_ms();
        let gossip = |m: Vec<u8>| s.on_gossip(id, Some(id), &m);
        let listed = || {
            s.announced()
                .unwrap()
                .iter()
                .any(|a| a.replica_root == hex::encode([1u8; 32]))
        };

        let first = msg(&peer, Kind::Announce, 1, now - 10_000);
        assert_eq!(gossip(first.clone()), GossipVerdict::Accept);
        assert!(listed());
        // A refresh is taken; the same or an older one is not passed on.
        assert_eq!(
            gossip(msg(&peer, Kind::Announce, 1, now - 5_000)),
            GossipVerdict::Accept
        );
        assert_eq!(gossip(first.clone()), GossipVerdict::Ignore);
        // A withdrawal older than the last announcement is stale.
        assert_eq!(
            gossip(msg(&peer, Kind::Withdraw, 1, now - 7_000)),
            GossipVerdict::Ignore
        );
        assert!(listed());
        // A newer one removes the dataset; the first announcement replayed
        // after it does not bring it back.
        assert_eq!(
            gossip(msg(&peer, Kind::Withdraw, 1, now - 1_000)),
            GossipVerdict::Accept
        );
        assert!(!listed());
        assert_eq!(s.withdrawn_by(&id, &[1; 32]).unwrap(), Some(now - 1_000));
        assert_eq!(gossip(first), GossipVerdict::Ignore);
        assert!(!listed());
        // Announced again later: back.
        assert_eq!(gossip(msg(&peer, Kind::Announce, 1, now)), GossipVerdict::Accept);
        assert!(listed());
        assert_eq!(s.withdrawn_by(&id, &[1; 32]).unwrap(), None);

        // Stale and future messages are not taken at all.
        let window = REPLAY_WINDOW.as_millis() as u64;
        assert_eq!(
            gossip(msg(&peer, Kind::Announce, 2, now - window - 1_000)),
            GossipVerdict::Ignore
        );
        assert_eq!(
            gossip(msg(
                &peer,
                Kind::Announce,
                2,
                now + super::super::MAX_AHEAD.as_millis() as u64 + 60_000
            )),
            GossipVerdict::Ignore
        );
        assert_eq!(s.announced().unwrap().len(), 1);
        // Someone else's signature over a message from `id` is refused.
        let other = Keypair::generate_ed25519();
        assert_eq!(
            s.on_gossip(id, Some(id), &msg(&other, Kind::Withdraw, 1, now + 1)),
            GossipVerdict::Reject
        );
        assert!(listed());
    }

    #[test]
    fn a_dataset_not_heard_of_within_the_ttl_is_no_candidate_and_old_rows_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (s, peer, id) = storage_and_peer(dir.path());
        let age = |by: std::time::Duration| {
            for (_, t) in s.heard().values_mut() {
                *t = t.checked_sub(by).expect("the machine has been up a minute");
            }
        };
        let take = |kind, rp, at| {
            let (a, _) = Announcement::decode_verified(&msg(&peer, kind, rp, at)).unwrap();
            match kind {
                Kind::Announce => s.record(id, &a).unwrap(),
                Kind::Withdraw => s.record_withdrawal(id, &a).unwrap(),
            }
        };
        let now = now_ms();
        assert_eq!(take(Kind::Announce, 3, now - 20_000), Some(true));
        assert_eq!(take(Kind::Announce, 3, now - 5_000), Some(false), "a refresh");
        assert_eq!(s.announced().unwrap().len(), 1);
        // Not refreshed for longer than the TTL (by this node's clock): no
        // longer a candidate, though its signed time is recent.
        age(ANNOUNCE_TTL + std::time::Duration::from_secs(1));
        assert!(s.announced().unwrap().is_empty());
        assert!(s.announced_by(&id, &[3; 32]).unwrap().is_none());
        assert_eq!(
            s.prune_announced().unwrap(),
            0,
            "signed within the replay window: kept"
        );
        // The next refresh makes it current again.
        assert_eq!(take(Kind::Announce, 3, now), Some(true));
        assert!(s.announced_by(&id, &[3; 32]).unwrap().is_some());

        // Rows and withdrawals signed before the replay window go when pruned.
        let old = now - REPLAY_WINDOW.as_millis() as u64 - 1_000;
        assert_eq!(take(Kind::Announce, 4, old), Some(true));
        assert_eq!(take(Kind::Withdraw, 5, old), Some(false));
        age(ANNOUNCE_TTL + std::time::Duration::from_secs(1));
        assert_eq!(s.prune_announced().unwrap(), 2);
        assert!(s.withdrawn_by(&id, &[5; 32]).unwrap().is_none());
        assert!(s.row(&key(&id, &[4; 32])).unwrap().is_none());
        assert!(
            s.row(&key(&id, &[3; 32])).unwrap().is_some(),
            "signed recently: kept"
        );
    }

    #[test]
    fn a_peer_holds_at_most_its_share_of_announcements_and_withdrawals_and_its_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        let (s, peer, id) = storage_and_peer(dir.path());
        let (other, other_id) = {
            let k = Keypair::generate_ed25519();
            let id = k.public().to_peer_id();
            (k, id)
        };
        let now = now_ms();
        let signed = |key: &Keypair, kind, i: u32, at| {
            let mut rp = [0u8; 32];
            rp[..4].copy_from_slice(&i.to_be_bytes());
            rp[31] = 7;
            Announcement::signed(key, kind, [9; 32], rp, 300_000, at)
                .unwrap()
                .encode()
        };
        assert_eq!(
            s.on_gossip(
                other_id,
                Some(other_id),
                &signed(&other, Kind::Announce, 99_999, now)
            ),
            GossipVerdict::Accept
        );
        let n = MAX_PER_PEER as u32 + 40;
        for i in 0..n {
            let v = s.on_gossip(
                id,
                Some(id),
                &signed(&peer, Kind::Announce, i, now - 60_000 + u64::from(i)),
            );
            assert_eq!(v, GossipVerdict::Accept, "announcement {i}");
        }
        let mine: Vec<Announced> = s
            .announced()
            .unwrap()
            .into_iter()
            .filter(|a| a.peer == id.to_string())
            .collect();
        assert_eq!(mine.len(), MAX_PER_PEER);
        assert!(
            mine.iter().all(|a| a.at >= now - 60_000 + 40),
            "the oldest 40 went"
        );
        assert!(
            s.announced()
                .unwrap()
                .iter()
                .any(|a| a.peer == other_id.to_string()),
            "another peer's dataset is untouched"
        );
        // Withdrawals of datasets it never announced: bounded the same way.
        for i in 0..n {
            s.on_gossip(
                id,
                Some(id),
                &signed(&peer, Kind::Withdraw, 1_000_000 + i, now - 1_000 + u64::from(i)),
            );
        }
        let withdrawals = s.inner.store.scan_prefix(WITHDRAWN, &id.to_bytes()).unwrap();
        assert_eq!(withdrawals.len(), MAX_PER_PEER);
    }
}
