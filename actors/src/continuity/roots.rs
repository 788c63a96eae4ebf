//! The signed roots peers gossip, kept per (peer, epoch) for the history
//! window: they are the peers' commitments. A continuity proof counts only
//! if its root is the one its prover gossiped at that epoch, received in
//! time; a link computed after the fact cannot be under a root committed
//! before the prover had the data.
//!
//! Tree `continuity/commits`: key `peer ‖ epoch (be)`, value a JSON
//! [`PeerRoot`]. Per peer at most the epochs within `window` of this node's
//! head are kept (older ones pruned on each insert; ones too far ahead are
//! not taken), and the first root a peer signed for an epoch is kept: a
//! second, different one is an equivocation, logged and ignored.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::epoch::Chain;
use crate::net::{GossipHandler, GossipVerdict};
use crate::store::{Batch, SledStore, Store};
use crate::Result;

/// Gossip topic suffix of signed roots: `/vigil/<g8>/continuity`.
pub const ROOT_TOPIC: &str = "continuity";

/// Epochs a root may arrive after its epoch (by this node's head at receipt)
/// and still count as committed in time. A prover's root for epoch `n` is
/// gossiped as soon as it processed `n`; one that arrives once this node is
/// past `n + 2` was made later than an honest node makes it.
pub const COMMITMENT_GRACE_EPOCHS: u64 = 2;

const COMMITS: &str = "continuity/commits";
/// Where an earlier version kept the newest root per peer; dropped on open.
const OLD_ROOTS: &str = "continuity/roots";

/// A peer's signed root for one epoch, as received.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRoot {
    /// The signing peer.
    pub peer: String,
    /// Epoch.
    pub epoch: u64,
    /// Chains aggregated.
    pub chains: u64,
    /// Root (hex).
    pub root: String,
    /// This node's epoch head when the root arrived (0: unknown).
    #[serde(default)]
    pub received_at_head: u64,
}

impl PeerRoot {
    /// Whether it arrived later than [`COMMITMENT_GRACE_EPOCHS`] after its epoch.
    pub fn late(&self) -> bool {
        self.received_at_head > self.epoch.saturating_add(COMMITMENT_GRACE_EPOCHS)
    }
}

/// Records and serves the roots peers gossip.
#[derive(Debug)]
pub struct RootRecorder {
    store: SledStore,
    clock: Option<Chain>,
    window: u64,
}

fn key(peer: &PeerId, epoch: u64) -> Vec<u8> {
    [peer.to_bytes().as_slice(), &epoch.to_be_bytes()].concat()
}

impl RootRecorder {
    /// A recorder over the node database (for reads; [`Self::clock`] for gossip).
    pub fn new(store: SledStore) -> Self {
        Self {
            store,
            clock: None,
            window: 64,
        }
    }

    /// Stamps each root with `chain`'s head at receipt and keeps `window`
    /// epochs either side of it (the node's `continuity.keep_epochs`).
    pub fn clock(mut self, chain: Chain, window: u64) -> Self {
        self.clock = Some(chain);
        self.window = window.max(COMMITMENT_GRACE_EPOCHS + 1);
        if let Err(e) = self.store.scan_prefix(OLD_ROOTS, b"").and_then(|rows| {
            let mut b = Batch::default();
            for (k, _) in rows {
                b.remove(OLD_ROOTS, &k);
            }
            self.store.apply(&b)
        }) {
            tracing::debug!(error = %e, "cannot drop the old continuity roots");
        }
        self
    }

    /// The newest root of every peer.
    pub fn list(&self) -> Result<Vec<PeerRoot>> {
        let mut newest = std::collections::BTreeMap::<String, PeerRoot>::new();
        for (_, v) in self.store.scan_prefix(COMMITS, b"")? {
            let Ok(r) = serde_json::from_slice::<PeerRoot>(&v) else {
                continue;
            };
            match newest.get(&r.peer) {
                Some(o) if o.epoch >= r.epoch => {}
                _ => {
                    newest.insert(r.peer.clone(), r);
                }
            }
        }
        Ok(newest.into_values().collect())
    }

    /// The root `peer` committed to for `epoch`, if this node received one.
    pub fn commitment(&self, peer: &PeerId, epoch: u64) -> Result<Option<PeerRoot>> {
        Ok(self
            .store
            .get(COMMITS, &key(peer, epoch))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Checks a gossiped `root_message ‖ signature` against the author's key.
    pub fn check(author: &PeerId, data: &[u8]) -> std::result::Result<PeerRoot, String> {
        const PREFIX: &[u8] = b"vigil/continuity-root/v1";
        let head = PREFIX.len() + 48;
        if data.len() <= head || &data[..PREFIX.len()] != PREFIX {
            return Err("not a continuity root".into());
        }
        let mh = author.as_ref();
        if mh.code() != 0 {
            return Err("the author's peer id does not embed its key".into());
        }
        let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).map_err(|e| e.to_string())?;
        if !pk.verify(&data[..head], &data[head..]) {
            return Err("bad signature".into());
        }
        let at = PREFIX.len();
        Ok(PeerRoot {
            peer: author.to_string(),
            epoch: u64::from_be_bytes(data[at..at + 8].try_into().map_err(|_| "epoch")?),
            chains: u64::from_be_bytes(data[at + 8..at + 16].try_into().map_err(|_| "chains")?),
            root: hex::encode(&data[at + 16..at + 48]),
            received_at_head: 0,
        })
    }

    /// Records `r` from `author` unless it is a repeat, an equivocation, or
    /// outside the window around `head`.
    fn record(&self, author: &PeerId, mut r: PeerRoot, head: u64) -> Result<GossipVerdict> {
        if r.epoch > head.saturating_add(self.window) || r.epoch.saturating_add(self.window) < head {
            return Ok(GossipVerdict::Ignore);
        }
        let k = key(author, r.epoch);
        if let Some(old) = self.commitment(author, r.epoch)? {
            if old.root != r.root || old.chains != r.chains {
                tracing::warn!(
                    peer = %author, epoch = r.epoch, kept = %old.root, other = %r.root,
                    "a peer signed two continuity roots for one epoch: the first is kept"
                );
            }
            return Ok(GossipVerdict::Ignore);
        }
        r.received_at_head = head;
        let mut b = Batch::default();
        b.insert(COMMITS, &k, serde_json::to_vec(&r).unwrap_or_default());
        let floor = head.saturating_sub(self.window);
        for (k, _) in self.store.scan_prefix(COMMITS, &author.to_bytes())? {
            let e = k
                .get(k.len().saturating_sub(8)..)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes);
            if e.is_some_and(|e| e < floor) {
                b.remove(COMMITS, &k);
            }
        }
        self.store.apply(&b)?;
        if r.late() {
            tracing::warn!(peer = %author, epoch = r.epoch, head, "a continuity root arrived late: its epoch counts as a break");
        }
        Ok(GossipVerdict::Accept)
    }
}

impl GossipHandler for RootRecorder {
    fn on_gossip(&self, from: PeerId, source: Option<PeerId>, data: &[u8]) -> GossipVerdict {
        let Some(author) = source else {
            return GossipVerdict::Reject;
        };
        match Self::check(&author, data) {
            Ok(r) => {
                let head = self.clock.as_ref().map_or(0, |c| c.head());
                self.record(&author, r, head).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot record a continuity root");
                    GossipVerdict::Ignore
                })
            }
            Err(e) => {
                tracing::info!(peer = %from, error = %e, "invalid continuity root: rejected");
                GossipVerdict::Reject
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use vigil_protocols::continuity::root_message;

    use super::*;

    fn signed(key: &Keypair, epoch: u64, root: u8) -> Vec<u8> {
        let msg = root_message(epoch, 1, &[root; 32]);
        let sig = key.sign(&msg).unwrap();
        [msg, sig].concat()
    }

    #[test]
    fn the_first_root_of_an_epoch_is_kept_with_its_arrival_and_the_window_bounds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let rec = RootRecorder::new(SledStore::open(dir.path(), 1 << 20, None).unwrap());
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let take = |epoch, root, head| {
            let r = RootRecorder::check(&peer, &signed(&key, epoch, root)).unwrap();
            rec.record(&peer, r, head).unwrap()
        };
        assert_eq!(take(10, 1, 10), GossipVerdict::Accept);
        // A second root for epoch 10 (an equivocation) and a repeat change nothing.
        assert_eq!(take(10, 2, 11), GossipVerdict::Ignore);
        assert_eq!(take(10, 1, 30), GossipVerdict::Ignore);
        let c = rec.commitment(&peer, 10).unwrap().unwrap();
        assert_eq!(
            (c.late(), c.root, c.received_at_head),
            (false, hex::encode([1u8; 32]), 10)
        );
        // Three epochs after its epoch is late.
        assert_eq!(take(11, 3, 14), GossipVerdict::Accept);
        assert!(rec.commitment(&peer, 11).unwrap().unwrap().late());
        // Too far ahead of our head, or older than the window: not taken.
        assert_eq!(take(200, 4, 14), GossipVerdict::Ignore);
        assert_eq!(take(1_000, 4, 2_000), GossipVerdict::Ignore);
        // Moving on past the window prunes what fell out of it.
        assert_eq!(take(100, 5, 100), GossipVerdict::Accept);
        assert!(rec.commitment(&peer, 10).unwrap().is_none());
        assert_eq!(rec.list().unwrap()[0].epoch, 100);
        // A forged signature is refused.
        let mut bad = signed(&key, 12, 6);
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(RootRecorder::check(&peer, &bad).is_err());
    }
}
