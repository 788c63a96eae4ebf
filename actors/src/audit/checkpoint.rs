//! Signed checkpoints of the audit chain's head, kept apart from the entries.
//!
//! A hash chain catches an entry edited or removed in the middle, but not a
//! tail cut off: the shorter chain still links. So the node signs, with its
//! node key, how many entries the chain had and the hash of the last one,
//! at an interval (when the chain grew) and at shutdown, and appends it as
//! one JSON line to `DATA_DIR/audit.checkpoints` (fsynced; outside the
//! database, so an operator can also ship it elsewhere as it grows). A chain
//! shorter than a checkpoint, or whose entry at a checkpoint hashes to
//! something else, is reported with the position of the first problem.
//! Entries after the last checkpoint are covered by the chain alone.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::Audit;
use crate::{Error, Result};

/// File name of the checkpoints inside the data dir.
pub const FILE: &str = "audit.checkpoints";

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Entries in the chain when signed (the last one is `entries - 1`).
    pub entries: u64,
    /// Hash of entry `entries - 1`, hex (zeros for an empty chain).
    pub head: String,
    /// When it was signed, µs since the Unix epoch.
    pub ts_us: u64,
    /// The signer's public key (libp2p protobuf encoding), hex.
    pub public_key: String,
    /// Signature, hex, over the tag `vigil/audit-checkpoint/v1`, `entries`,
    /// `head` and `ts_us`.
    pub signature: String,
}

fn message(entries: u64, head: &str, ts_us: u64) -> Vec<u8> {
    let mut m = b"vigil/audit-checkpoint/v1".to_vec();
    m.extend_from_slice(&entries.to_be_bytes());
    m.extend_from_slice(head.as_bytes());
    m.extend_from_slice(&ts_us.to_be_bytes());
    m
}

impl Checkpoint {
    /// Whether it is signed by `peer`'s key.
    pub fn signed_by(&self, peer: &PeerId) -> bool {
        let Some(key) = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| PublicKey::try_decode_protobuf(&b).ok())
        else {
            return false;
        };
        let Ok(sig) = hex::decode(&self.signature) else {
            return false;
        };
        key.to_peer_id() == *peer && key.verify(&message(self.entries, &self.head, self.ts_us), &sig)
    }
}

/// Writes checkpoints of one audit log.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    key: Keypair,
    last: Mutex<Option<u64>>,
}

impl Checkpoints {
    /// Checkpoints in `data_dir`, signed with `key`.
    pub fn new(data_dir: &Path, key: Keypair) -> Self {
        Self {
            path: data_dir.join(FILE),
            key,
            last: Mutex::new(None),
        }
    }

    /// Signs and appends the chain's head if it moved since the last one;
    /// the checkpoint written, if any.
    pub fn write(&self, audit: &Audit) -> Result<Option<Checkpoint>> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (entries, head) = audit.head();
        if *last == Some(entries) {
            return Ok(None);
        }
        let head = hex::encode(head);
        let ts_us = crate::queue::now_us();
        let signature = self
            .key
            .sign(&message(entries, &head, ts_us))
            .map_err(|e| Error::Invalid(format!("cannot sign an audit checkpoint: {e}")))?;
        let cp = Checkpoint {
            entries,
            head,
            ts_us,
            public_key: hex::encode(self.key.public().encode_protobuf()),
            signature: hex::encode(signature),
        };
        let write_err = |source| Error::Write {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&cp).map_err(|e| Error::Invalid(e.to_string()))?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(write_err)?;
        f.write_all(&line).map_err(write_err)?;
        f.sync_data().map_err(write_err)?;
        *last = Some(entries);
        Ok(Some(cp))
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No problem found.
    pub ok: bool,
    /// Entries in the chain.
    pub entries: u64,
    /// Checkpoints read.
    pub checkpoints: usize,
    /// Entries covered by the newest valid checkpoint.
    pub signed_entries: u64,
    /// Position (entry number) of the first problem.
    pub first_bad: Option<u64>,
    /// The first problem, in words.
    pub error: Option<String>,
}

/// Checks `audit`'s chain and the checkpoints in `data_dir` signed by `peer`.
pub fn verify(audit: &Audit, data_dir: &Path, peer: &PeerId) -> Result<Report> {
    let chain = audit.verify_at()?;
    let entries = audit.head().0;
    let mut problems: Vec<(u64, String)> = Vec::new();
    if let Err((at, why)) = chain {
        problems.push((at, why));
    }
    let path = data_dir.join(FILE);
    let mut read = 0;
    let mut signed_entries = 0;
    match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Write { path, source: e }),
        Ok(f) => {
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?;
                if line.trim().is_empty() {
                    continue;
                }
                read += 1;
                let cp: Checkpoint = match serde_json::from_str(&line) {
                    Ok(cp) => cp,
                    Err(e) => {
                        problems.push((0, format!("{FILE} line {} is not a checkpoint ({e})", i + 1)));
                        continue;
                    }
                };
                if !cp.signed_by(peer) {
                    problems.push((
                        cp.entries.saturating_sub(1),
                        format!(
                            "{FILE} line {}: not signed by this node's key (edited or forged)",
                            i + 1
                        ),
                    ));
                    continue;
                }
                let total = audit.head().0;
                if cp.entries > total {
                    problems.push((
                        total,
                        format!(
                            "entries {total} to {} are missing: the log was cut after entry {}, but a checkpoint signed at {} covers {} entries",
                            cp.entries - 1,
                            total as i64 - 1,
                            humantime::format_rfc3339_micros(
                                std::time::UNIX_EPOCH + std::time::Duration::from_micros(cp.ts_us)
                            ),
                            cp.entries
                        ),
                    ));
                    continue;
                }
                if cp.entries > 0 {
                    let at = cp.entries - 1;
                    match audit.list(at, 1)?.first() {
                        Some(e) if e.seq == at && e.hash == cp.head => {
                            signed_entries = signed_entries.max(cp.entries);
                        }
                        _ => problems.push((
                            at,
                            format!(
                                "entry {at} is not the one checkpoint line {} signed: the log was rewritten",
                                i + 1
                            ),
                        )),
                    }
                }
            }
        }
    }
    let first = problems.into_iter().min_by_key(|(at, _)| *at);
    Ok(Report {
        ok: first.is_none(),
        entries,
        checkpoints: read,
        signed_entries,
        first_bad: first.as_ref().map(|(at, _)| *at),
        error: first.map(|(_, why)| why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{encode_value, SledStore, Store};

    fn log(dir: &Path, n: u64) -> (SledStore, Audit) {
        let store = SledStore::open(&dir.join("db"), 1 << 20, None).unwrap();
        let audit = Audit::open(store.clone()).unwrap();
        for i in 0..n {
            audit
                .append("cookie", "keys.add", serde_json::json!({ "i": i }))
                .unwrap();
        }
        (store, audit)
    }

    #[test]
    fn an_intact_log_verifies_and_entries_after_the_checkpoint_are_chain_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (_s, audit) = log(dir.path(), 5);
        let c = Checkpoints::new(dir.path(), key);
        assert_eq!(c.write(&audit).unwrap().unwrap().entries, 5);
        assert_eq!(c.write(&audit).unwrap(), None, "nothing new: nothing signed");
        audit.append("cookie", "net.ban", serde_json::json!({})).unwrap();
        let r = verify(&audit, dir.path(), &peer).unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.entries, r.checkpoints, r.signed_entries), (6, 1, 5));
    }

    #[test]
    fn a_cut_off_tail_is_reported_where_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (store, audit) = log(dir.path(), 8);
        Checkpoints::new(dir.path(), key).write(&audit).unwrap();
        // The chain alone cannot see it: the shorter chain still links.
        for seq in 5..8u64 {
            store.remove("audit", &seq.to_be_bytes()).unwrap();
        }
        let audit = Audit::open(store).unwrap();
        assert_eq!(audit.verify().unwrap(), Ok(5));
        let r = verify(&audit, dir.path(), &peer).unwrap();
        assert!(!r.ok);
        assert_eq!(r.first_bad, Some(5));
        let e = r.error.unwrap();
        assert!(
            e.contains("entries 5 to 7 are missing") && e.contains("covers 8 entries"),
            "{e}"
        );
    }

    #[test]
    fn a_rewritten_log_and_a_forged_checkpoint_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (store, audit) = log(dir.path(), 4);
        Checkpoints::new(dir.path(), key).write(&audit).unwrap();
        // Rewrite entry 1 and re-hash the chain after it, as an attacker
        // without the node key can: the chain verifies, the checkpoint not.
        let entries = audit.list(0, 10).unwrap();
        let mut prev = [0u8; 32];
        for mut e in entries {
            if e.seq == 1 {
                e.detail = serde_json::json!({ "i": "forged" });
            }
            let h = super::super::digest(&prev, e.seq, e.ts_us, &e.who, &e.action, &e.detail);
            e.prev = hex::encode(prev);
            e.hash = hex::encode(h);
            prev = h;
            let bytes = encode_value(1, &serde_json::to_vec(&e).unwrap());
            store.insert("audit", &e.seq.to_be_bytes(), &bytes).unwrap();
        }
        let audit = Audit::open(store).unwrap();
        assert_eq!(audit.verify().unwrap(), Ok(4), "the chain alone is fooled");
        let r = verify(&audit, dir.path(), &peer).unwrap();
        assert_eq!(r.first_bad, Some(3), "{r:?}");
        assert!(r.error.unwrap().contains("the log was rewritten"));

        // A checkpoint signed with another key is no checkpoint.
        let other = Checkpoints::new(dir.path(), Keypair::generate_ed25519());
        audit.append("cookie", "x", serde_json::json!({})).unwrap();
        other.write(&audit).unwrap();
        let r = verify(&audit, dir.path(), &peer).unwrap();
        assert!(r.checkpoints == 2 && !r.ok);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);
        // Garbage in the file is named by its line.
        std::fs::write(dir.path().join(FILE), format!("{text}not json\n")).unwrap();
        let r = verify(&audit, dir.path(), &peer).unwrap();
        assert_eq!(r.checkpoints, 3);
    }
}
