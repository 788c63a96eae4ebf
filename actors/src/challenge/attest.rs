//! Signed attestations of challenge and audit outcomes, gossiped on
//! `/vigil/<g8>/attestations/2`; other nodes check the signature against the
//! gossip author and record them (sled `challenge/attestations`), and the
//! challenger records its own. Version 2 signs the outcome's reason too
//! (`detail`): an audit failed by a timeout says so.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use super::ChallengeResult;
use crate::metrics as m;
use crate::net::{GossipHandler, GossipVerdict};
use crate::store::{SledStore, Store};
use crate::Result;

/// Gossip topic suffix.
pub const TOPIC: &str = "attestations/2";
const TREE: &str = "challenge/attestations";
const DOMAIN: &[u8] = b"vigil/attestation/v2";
/// Attestations kept at most (oldest epoch dropped first)...
const KEPT: usize = 10_000;
/// ... and bytes kept at most.
const KEPT_BYTES: u64 = 16 << 20;
/// Largest encoded attestation taken from gossip.
pub const MAX_BYTES: usize = 4096;
/// Longest reason (`detail`) an attestation carries; longer ones are cut when signed.
pub const MAX_DETAIL: usize = 512;
/// Attestations one challenger may have recorded per epoch (an honest one
/// makes `challenges_per_epoch` plus its audits).
const PER_CHALLENGER_EPOCH: usize = 64;
/// Epochs behind our head an attestation may name (ahead: 2).
const EPOCH_WINDOW: u64 = 64;

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
            detail: cut(r.detail.as_deref().unwrap_or_default(), MAX_DETAIL),
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

    /// Decodes, bounds every field and checks the signature; returns the signer.
    pub fn decode_verified(b: &[u8]) -> std::result::Result<(Self, PeerId), String> {
        if b.len() > MAX_BYTES {
            return Err(format!("attestation of {} bytes; at most {MAX_BYTES}", b.len()));
        }
        let a: Self = serde_json::from_slice(b).map_err(|e| format!("not an attestation: {e}"))?;
        for (field, value, max) in [
            ("challenger", &a.challenger, 128),
            ("prover", &a.prover, 128),
            ("dataset", &a.dataset, 64),
            ("outcome", &a.outcome, 32),
            ("detail", &a.detail, MAX_DETAIL),
            ("public_key", &a.public_key, 1024),
            ("signature", &a.signature, 1024),
        ] {
            if value.len() > max {
                return Err(format!("{field} of {} bytes; at most {max}", value.len()));
            }
        }
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

/// `s` cut to at most `max` bytes (on a character boundary).
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What the store holds: entries and bytes (known after the first record).
#[derive(Debug, Default)]
struct Held {
    size: Option<(usize, u64)>,
    /// Attestations recorded per (epoch, challenger) in the window.
    per_challenger: HashMap<(u64, String), usize>,
}

/// Records verified attestations, bounded: fields at decode, entries per
/// challenger and epoch, epochs near our head, and the store in entries and
/// bytes (oldest epochs evicted first).
pub struct Recorder {
    store: SledStore,
    head: Box<dyn Fn() -> u64 + Send + Sync>,
    held: std::sync::Mutex<Held>,
    kept_bytes: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("head", &(self.head)())
            .finish_non_exhaustive()
    }
}

/// Why an attestation was not recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Its epoch is too far from ours.
    Epoch(u64),
    /// Its challenger has as many for that epoch as allowed.
    Quota,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Epoch(n) => write!(f, "epoch {n} is too far from ours"),
            Self::Quota => f.write_str("its challenger has as many for that epoch as allowed"),
        }
    }
}

impl Recorder {
    /// A recorder over the node database, judging epochs against `head` (our epoch head).
    pub fn new(store: SledStore, head: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self {
            store,
            head: Box::new(head),
            held: std::sync::Mutex::new(Held::default()),
            kept_bytes: KEPT_BYTES,
        }
    }

    /// The newest `limit` attestations (at most 10,000), newest last; reads
    /// only those.
    pub fn list(&self, limit: usize) -> Result<Vec<Attestation>> {
        let mut rows = self.store.range_back(TREE, None, limit.min(KEPT))?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Records a gossiped `a` unless it names an epoch far from ours or its
    /// challenger used up its share of that epoch.
    pub fn record_gossiped(&self, a: &Attestation) -> Result<std::result::Result<(), Skipped>> {
        let head = (self.head)();
        if a.epoch + EPOCH_WINDOW < head || a.epoch > head + 2 {
            return Ok(Err(Skipped::Epoch(head)));
        }
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.per_challenger.retain(|(e, _), _| e + EPOCH_WINDOW >= head);
            let n = held
                .per_challenger
                .entry((a.epoch, a.challenger.clone()))
                .or_default();
            if *n >= PER_CHALLENGER_EPOCH {
                return Ok(Err(Skipped::Quota));
            }
            *n += 1;
        }
        self.record(a).map(Ok)
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
        let value = a.encode();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (mut n, mut bytes) = match held.size {
            Some(s) => s,
            None => self.store.size(TREE)?,
        };
        let before = self.store.get(TREE, &key)?;
        self.store.insert(TREE, &key, &value)?;
        match before {
            Some(old) => bytes = bytes + value.len() as u64 - old.len() as u64,
            None => {
                n += 1;
                bytes += (key.len() + value.len()) as u64;
            }
        }
        // Evict the oldest in steps of 100 so most inserts touch one key.
        if n > KEPT + 100 || bytes > self.kept_bytes {
            let mut drop_n = n.saturating_sub(KEPT);
            let mut over = bytes.saturating_sub(self.kept_bytes * 9 / 10);
            for (k, v) in self.store.range_from(TREE, b"", n)? {
                if drop_n == 0 && over == 0 {
                    break;
                }
                self.store.remove(TREE, &k)?;
                let freed = (k.len() + v.len()) as u64;
                n -= 1;
                bytes -= freed;
                drop_n = drop_n.saturating_sub(1);
                over = over.saturating_sub(freed);
            }
        }
        held.size = Some((n, bytes));
        Ok(())
    }

    /// Entries and bytes held.
    pub fn size(&self) -> Result<(usize, u64)> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.size {
            Some(s) => Ok(s),
            None => self.store.size(TREE),
        }
    }
}

impl GossipHandler for Recorder {
    fn on_gossip(&self, from: PeerId, source: Option<PeerId>, data: &[u8]) -> GossipVerdict {
        match Attestation::decode_verified(data) {
            Ok((a, signer)) if source == Some(signer) => match self.record_gossiped(&a) {
                Ok(Ok(())) => {
                    metrics::counter!(m::ATTESTATIONS).increment(1);
                    GossipVerdict::Accept
                }
                // Not invalid, not forwarded: late or early, or past its signer's share.
                Ok(Err(why)) => {
                    tracing::debug!(peer = %from, why = %why, "attestation not recorded");
                    GossipVerdict::Ignore
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot record an attestation");
                    GossipVerdict::Ignore
                }
            },
            Ok(_) => GossipVerdict::Reject,
            Err(e) => {
                tracing::info!(peer = %from, error = %e, "invalid attestation: rejected");
                GossipVerdict::Reject
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn result(dataset: &str, epoch: u64, detail: Option<String>) -> ChallengeResult {
        ChallengeResult {
            peer: PeerId::random().to_string(),
            dataset: dataset.to_owned(),
            epoch,
            outcome: "ok",
            detail,
            latency_ms: 1.0,
            ping_ms: None,
            allowance_ms: 0.0,
            proof_bytes: 0,
        }
    }

    #[test]
    fn oversized_fields_are_refused_at_decode_and_a_long_reason_is_cut_when_signed() {
        let key = Keypair::generate_ed25519();
        let a = Attestation::sign(&key, PeerId::random(), &result("aa", 1, Some("x".repeat(5000)))).unwrap();
        assert_eq!(a.detail.len(), MAX_DETAIL);
        let (back, signer) = Attestation::decode_verified(&a.encode()).unwrap();
        assert_eq!((back, signer), (a.clone(), key.public().to_peer_id()));
        let mut big = a.clone();
        big.dataset = "d".repeat(200);
        let e = Attestation::decode_verified(&big.encode()).unwrap_err();
        assert!(e.contains("dataset of 200 bytes; at most 64"), "{e}");
        let mut huge = a;
        huge.detail = "y".repeat(MAX_BYTES);
        let e = Attestation::decode_verified(&huge.encode()).unwrap_err();
        assert!(e.contains("at most 4096"), "{e}");
    }

    #[test]
    fn the_store_is_bounded_by_epoch_window_per_challenger_share_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let head = Arc::new(AtomicU64::new(100));
        let h = head.clone();
        let r = Recorder::new(store, move || h.load(Ordering::Relaxed));
        let key = Keypair::generate_ed25519();
        let att = |ds: String, epoch: u64| {
            Attestation::sign(&key, PeerId::random(), &result(&ds, epoch, Some("d".repeat(400)))).unwrap()
        };
        // Far from our head: not recorded.
        assert_eq!(
            r.record_gossiped(&att("a".into(), 10)).unwrap(),
            Err(Skipped::Epoch(100))
        );
        assert_eq!(
            r.record_gossiped(&att("a".into(), 200)).unwrap(),
            Err(Skipped::Epoch(100))
        );
        // One challenger's share of an epoch.
        for i in 0..PER_CHALLENGER_EPOCH {
            r.record_gossiped(&att(format!("{i:064x}"), 100))
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            r.record_gossiped(&att("b".into(), 100)).unwrap(),
            Err(Skipped::Quota)
        );
        assert_eq!(r.size().unwrap().0, PER_CHALLENGER_EPOCH);
        // Many epochs (the node's own records skip the share): bounded in
        // entries, the oldest epochs evicted first.
        for e in 0..12_000u64 {
            r.record(&att(format!("{e:064x}"), 1_000 + e)).unwrap();
        }
        let (n, bytes) = r.size().unwrap();
        assert!(n <= KEPT + 100, "{n} entries");
        assert!(bytes <= KEPT_BYTES, "{bytes} bytes");
        assert_eq!(
            r.size().unwrap(),
            r.store.size(TREE).unwrap(),
            "the running count is exact"
        );
        let newest = r.list(5).unwrap();
        assert_eq!(newest.len(), 5);
        assert_eq!(newest.last().unwrap().epoch, 1_000 + 11_999);
        let oldest = r.store.range_from(TREE, b"", 1).unwrap();
        let first: Attestation = serde_json::from_slice(&oldest[0].1).unwrap();
        assert!(first.epoch > 1_000, "the oldest went first: {}", first.epoch);
        // Bounded in bytes too (large attestations: fewer kept).
        let mut r = r;
        r.kept_bytes = 1 << 20;
        for e in 0..2_000u64 {
            r.record(&att(format!("{e:064x}"), 20_000 + e)).unwrap();
        }
        let (n, bytes) = r.size().unwrap();
        assert!(bytes <= 1 << 20 && n < 1_100, "{n} entries, {bytes} bytes");
        assert_eq!(r.size().unwrap(), r.store.size(TREE).unwrap());
    }
}
