//! Signed attestations of challenge and audit outcomes, gossiped on
//! `/vigil/<g8>/attestations/2`; other nodes check the signature against the
//! gossip author and record them (sled `challenge/attestations`), and the
//! challenger records its own. Version 2 signs the outcome's reason too
//! (`detail`): an audit failed by a timeout says so.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::ChallengeResult;
use crate::metrics as m;
use crate::net::{GossipHandler, GossipVerdict};
use crate::store::{SledStore, Store};
use crate::Result;

/// Gossip topic suffix.
pub const TOPIC: &str = "attestations/2";
const TREE: &str = "challenge/attestations";
const DOMAIN: &[u8] = b"vigil/attestation/v2";
/// Attestations kept (oldest dropped first).
const KEPT: usize = 10_000;

/// A challenger's signed statement of one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The challenger.
    pub challenger: String,
    /// The prover.
    pub prover: String,
    /// Replica root (hex).
    pub dataset: String,
    /// Epoch of the challenge.
    pub epoch: u64,
    /// Outcome.
    pub outcome: String,
    /// What was wrong, if anything (empty when nothing).
    #[serde(default)]
    pub detail: String,
    /// Round trip, µs.
    pub latency_us: u64,
    /// Challenger's public key (protobuf, hex).
    pub public_key: String,
    /// Signature (hex) over the fields above.
    pub signature: String,
}

impl Attestation {
    fn signed_bytes(&self) -> Vec<u8> {
        let fields = [
            self.challenger.as_str(),
            &self.prover,
            &self.dataset,
            &self.epoch.to_string(),
            &self.outcome,
            &self.detail,
            &self.latency_us.to_string(),
        ];
        let mut out = DOMAIN.to_vec();
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    /// Signs a result with the node key.
    pub fn sign(key: &Keypair, prover: PeerId, r: &ChallengeResult) -> Result<Self> {
        let mut a = Self {
            challenger: key.public().to_peer_id().to_string(),
            prover: prover.to_string(),
            dataset: r.dataset.clone(),
            epoch: r.epoch,
            outcome: r.outcome.to_owned(),
            detail: r.detail.clone().unwrap_or_default(),
            latency_us: (r.latency_ms * 1000.0) as u64,
            public_key: hex::encode(key.public().encode_protobuf()),
            signature: String::new(),
        };
        let sig = key
            .sign(&a.signed_bytes())
            .map_err(|e| crate::Error::Invalid(format!("cannot sign: {e}")))?;
        a.signature = hex::encode(sig);
        Ok(a)
    }

    /// Compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and checks the signature; returns the signer.
    pub fn decode_verified(b: &[u8]) -> std::result::Result<(Self, PeerId), String> {
        let a: Self = serde_json::from_slice(b).map_err(|e| format!("not an attestation: {e}"))?;
        let pk = hex::decode(&a.public_key).map_err(|_| "public key is not hex")?;
        let pk = PublicKey::try_decode_protobuf(&pk).map_err(|e| format!("public key: {e}"))?;
        let signer = pk.to_peer_id();
        if signer.to_string() != a.challenger {
            return Err("the key is not the challenger's".into());
        }
        let sig = hex::decode(&a.signature).map_err(|_| "signature is not hex")?;
        if !pk.verify(&a.signed_bytes(), &sig) {
            return Err("bad signature".into());
        }
        Ok((a, signer))
    }
}

/// Records verified attestations.
#[derive(Debug)]
pub struct Recorder {
    store: SledStore,
    count: std::sync::Mutex<Option<usize>>,
}

impl Recorder {
    /// A recorder over the node database.
    pub fn new(store: SledStore) -> Self {
        Self {
            store,
            count: std::sync::Mutex::new(None),
        }
    }

    /// The newest `limit` attestations, newest last.
    pub fn list(&self, limit: usize) -> Result<Vec<Attestation>> {
        let rows = self.store.scan_prefix(TREE, b"")?;
        let skip = rows.len().saturating_sub(limit);
        Ok(rows
            .into_iter()
            .skip(skip)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Records `a` (keyed by epoch, challenger, prover and dataset).
    pub fn record(&self, a: &Attestation) -> Result<()> {
        let key = [
            a.epoch.to_be_bytes().as_slice(),
            a.challenger.as_bytes(),
            a.prover.as_bytes(),
            a.dataset.as_bytes(),
            // An audit and a challenge of one dataset in one epoch are two entries.
            if a.outcome.starts_with("audit") {
                b"/audit"
            } else {
                b""
            },
        ]
        .concat();
        self.store.insert(TREE, &key, &a.encode())?;
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let n = match *count {
            Some(n) => n + 1,
            None => self.store.scan_prefix(TREE, b"")?.len(),
        };
        // Prune in steps of 100 so most inserts touch one key.
        let n = if n > KEPT + 100 {
            for (k, _) in self.store.range_from(TREE, b"", n - KEPT)? {
                self.store.remove(TREE, &k)?;
            }
            KEPT
        } else {
            n
        };
        *count = Some(n);
        Ok(())
    }
}

impl GossipHandler for Recorder {
    fn on_gossip(&self, from: PeerId, source: Option<PeerId>, data: &[u8]) -> GossipVerdict {
        match Attestation::decode_verified(data) {
            Ok((a, signer)) if source == Some(signer) => {
                metrics::counter!(m::ATTESTATIONS).increment(1);
                if let Err(e) = self.record(&a) {
                    tracing::error!(error = %e, "cannot record an attestation");
                }
                GossipVerdict::Accept
            }
            Ok(_) => GossipVerdict::Reject,
            Err(e) => {
                tracing::info!(peer = %from, error = %e, "invalid attestation: rejected");
                GossipVerdict::Reject
            }
        }
    }
}
