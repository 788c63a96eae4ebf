//! Announcements `(R, R_p, size, peer, signature)` on the gossip topic
//! `/vigil/<g8>/datasets`, and the datasets peers announced (sled tree
//! `storage/announced`, key `peer ‖ R_p`, and `storage/announced_roots`,
//! `R_p -> peer`): what challengers pick from.
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

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::Storage;
use crate::net::{GossipHandler, GossipVerdict, Offence};
use crate::store::Store;
use crate::Result;

/// Gossip topic suffix: `/vigil/<g8>/datasets`.
pub const ANNOUNCE_TOPIC: &str = "datasets";
const ANNOUNCED: &str = "storage/announced";
const ROOTS: &str = "storage/announced_roots";
const DOMAIN: &[u8] = b"vigil/announce/v1";

/// A signed announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Plaintext root.
    pub root: [u8; 32],
    /// Replica root.
    pub replica_root: [u8; 32],
    /// Plaintext bytes.
    pub size: u64,
    /// The announcing node's public key (protobuf).
    pub public_key: Vec<u8>,
    /// Its signature over `DOMAIN ‖ R ‖ R_p ‖ size`.
    pub signature: Vec<u8>,
}

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
}

fn signed_bytes(root: &[u8; 32], replica_root: &[u8; 32], size: u64) -> Vec<u8> {
    [DOMAIN, root, replica_root, &size.to_be_bytes()].concat()
}

impl Announcement {
    /// `(R, R_p, size)` signed with `key`.
    pub fn sign(key: &Keypair, root: [u8; 32], replica_root: [u8; 32], size: u64) -> Result<Self> {
        let signature = key
            .sign(&signed_bytes(&root, &replica_root, size))
            .map_err(|e| crate::Error::Invalid(format!("cannot sign: {e}")))?;
        Ok(Self {
            root,
            replica_root,
            size,
            public_key: key.public().encode_protobuf(),
            signature,
        })
    }

    /// Encoding: R ‖ R_p ‖ size ‖ key length (u16) ‖ key ‖ signature length (u16) ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80 + self.public_key.len() + self.signature.len());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.replica_root);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&(self.public_key.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes and checks the signature; returns the signer.
    pub fn decode_verified(b: &[u8]) -> std::result::Result<(Self, PeerId), String> {
        let take = |at: usize, n: usize| {
            b.get(at..at + n)
                .ok_or_else(|| format!("announcement truncated at byte {at}"))
        };
        let root: [u8; 32] = take(0, 32)?.try_into().map_err(|_| "root")?;
        let replica_root: [u8; 32] = take(32, 32)?.try_into().map_err(|_| "replica root")?;
        let size = u64::from_be_bytes(take(64, 8)?.try_into().map_err(|_| "size")?);
        let kl = u16::from_be_bytes(take(72, 2)?.try_into().map_err(|_| "key length")?) as usize;
        let public_key = take(74, kl)?.to_vec();
        let sl = u16::from_be_bytes(take(74 + kl, 2)?.try_into().map_err(|_| "signature length")?) as usize;
        let signature = take(76 + kl, sl)?.to_vec();
        if b.len() != 76 + kl + sl {
            return Err(format!("{} trailing bytes", b.len() - 76 - kl - sl));
        }
        if size == 0 {
            return Err("an empty dataset".into());
        }
        let pk = PublicKey::try_decode_protobuf(&public_key).map_err(|e| format!("public key: {e}"))?;
        if !pk.verify(&signed_bytes(&root, &replica_root, size), &signature) {
            return Err("bad signature".into());
        }
        let a = Self {
            root,
            replica_root,
            size,
            public_key,
            signature,
        };
        Ok((a, pk.to_peer_id()))
    }
}

impl Storage {
    /// Signed announcements of every dataset stored here.
    pub fn announcements(&self) -> Result<Vec<Announcement>> {
        self.list()?
            .into_iter()
            .map(|d| {
                let (root, replica_root) = d.roots()?;
                Announcement::sign(&self.inner.key, root, replica_root, d.size)
            })
            .collect()
    }

    /// Gossips every dataset's announcement (peers that joined since learn them).
    pub async fn announce_all(&self) {
        let Some(net) = &self.inner.net else { return };
        match self.announcements() {
            Ok(list) => {
                for a in list {
                    if let Err(e) = net.publish(ANNOUNCE_TOPIC, a.encode()).await {
                        tracing::debug!(error = %e, "cannot announce a dataset");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list datasets to announce"),
        }
    }

    /// Datasets peers announced.
    pub fn announced(&self) -> Result<Vec<Announced>> {
        self.inner
            .store
            .scan_prefix(ANNOUNCED, b"")?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| super::corrupt(ANNOUNCED, e)))
            .collect()
    }

    /// The dataset `peer` announced with replica root `replica_root`.
    pub fn announced_by(&self, peer: &PeerId, replica_root: &[u8; 32]) -> Result<Option<Announced>> {
        let key = [peer.to_bytes().as_slice(), replica_root].concat();
        self.inner
            .store
            .get(ANNOUNCED, &key)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| super::corrupt(ANNOUNCED, e)))
            .transpose()
    }

    /// Forgets what `peer` announced (a banned peer).
    pub fn forget_peer(&self, peer: &PeerId) -> Result<usize> {
        let rows = self.inner.store.scan_prefix(ANNOUNCED, &peer.to_bytes())?;
        let mut b = crate::store::Batch::default();
        for (k, _) in &rows {
            b.remove(ANNOUNCED, k);
            if let Some(root) = k.get(k.len().saturating_sub(32)..) {
                b.remove(ROOTS, root);
            }
        }
        self.inner.store.apply(&b)?;
        Ok(rows.len())
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

    fn record(&self, peer: PeerId, a: &Announcement) -> Result<bool> {
        let key = [peer.to_bytes().as_slice(), &a.replica_root].concat();
        let row = Announced {
            peer: peer.to_string(),
            root: hex::encode(a.root),
            replica_root: hex::encode(a.replica_root),
            size: a.size,
        };
        let v = serde_json::to_vec(&row).map_err(|e| crate::Error::Invalid(e.to_string()))?;
        let fresh = self.inner.store.get(ANNOUNCED, &key)?.is_none();
        let mut b = crate::store::Batch::default();
        b.insert(ANNOUNCED, &key, v);
        b.insert(ROOTS, &a.replica_root, peer.to_bytes());
        self.inner.store.apply(&b)?;
        Ok(fresh)
    }
}

impl GossipHandler for Storage {
    fn on_gossip(&self, from: PeerId, source: Option<PeerId>, data: &[u8]) -> GossipVerdict {
        match Announcement::decode_verified(data) {
            Ok((a, signer)) if source == Some(signer) => {
                if signer == self.inner.key.public().to_peer_id() {
                    return GossipVerdict::Ignore;
                }
                if a.replica_root == a.root {
                    tracing::warn!(peer = %signer, root = %hex::encode(a.root), "announcement refused: its replica root equals its plaintext root (the replica must be encoded for the announcer's identity); peer scored down");
                    return GossipVerdict::Reject;
                }
                match self.claimed_elsewhere(&signer, &a) {
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
                match self.record(signer, &a) {
                    Ok(true) => {
                        tracing::info!(peer = %signer, replica_root = %hex::encode(a.replica_root), size = a.size, "dataset announced");
                        GossipVerdict::Accept
                    }
                    Ok(false) => GossipVerdict::Accept,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record an announcement");
                        GossipVerdict::Ignore
                    }
                }
            }
            Ok(_) => {
                tracing::info!(peer = %from, "announcement signed by another peer than its author: rejected");
                GossipVerdict::Reject
            }
            Err(e) => {
                tracing::info!(peer = %from, error = %e, "invalid announcement: rejected");
                GossipVerdict::Reject
            }
        }
    }
}
