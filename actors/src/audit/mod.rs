//! The audit log: an append-only hash chain in the sled tree `audit`.
//!
//! Entry `n` stores `prev` = hash of entry `n-1` (32 zero bytes for the first)
//! and its own `hash` = BLAKE3(prev ‖ seq ‖ ts ‖ who ‖ action ‖ detail JSON).
//! Changing, removing or reordering any entry breaks [`Audit::verify`];
//! cutting off the tail is caught by the signed [`checkpoint`]s.

pub mod checkpoint;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{decode_value, encode_value, Batch, SledStore, Store};
use crate::{Error, Result};

const TREE: &str = "audit";
const FORMAT: u8 = 1;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub ts_us: u64,
    /// Who acted: an app name, `rpc`, or `node`.
    pub who: String,
    /// What happened, e.g. `bus.grant`, `bus.denied`.
    pub action: String,
    /// Details.
    pub detail: Value,
    /// Hash of the previous entry, hex.
    pub prev: String,
    /// Hash of this entry, hex.
    pub hash: String,
}

fn digest(prev: &[u8; 32], seq: u64, ts_us: u64, who: &str, action: &str, detail: &Value) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"vigil/audit/v1");
    h.update(prev);
    h.update(&seq.to_be_bytes());
    h.update(&ts_us.to_be_bytes());
    for part in [who.as_bytes(), action.as_bytes(), detail.to_string().as_bytes()] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    *h.finalize().as_bytes()
}

/// The node's audit log.
#[derive(Debug, Clone)]
pub struct Audit {
    store: SledStore,
    head: Arc<Mutex<(u64, [u8; 32])>>,
}

impl Audit {
    /// The store the log lives in.
    #[cfg(test)]
    pub(crate) fn store(&self) -> &SledStore {
        &self.store
    }

    /// Opens the chain, finding its head.
    pub fn open(store: SledStore) -> Result<Self> {
        let head = match store.last(TREE)? {
            Some((_, v)) => {
                let e: AuditEntry =
                    serde_json::from_slice(decode_value(TREE, FORMAT, &v)?).map_err(|e| Error::Corrupt {
                        tree: TREE.into(),
                        why: e.to_string(),
                    })?;
                let hash = hex::decode(&e.hash)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 32]);
                (e.seq + 1, hash)
            }
            None => (0, [0; 32]),
        };
        Ok(Self {
            store,
            head: Arc::new(Mutex::new(head)),
        })
    }

    /// Appends an entry; returns its sequence number. For what happened
    /// (a denial, a failed hello); an operator's change goes through
    /// [`Audit::commit`], so it is never made without its entry.
    pub fn append(&self, who: &str, action: &str, detail: Value) -> Result<u64> {
        self.write(Batch::default(), who, action, detail)
    }

    /// Appends an entry for something that happens whether or not it can be
    /// recorded (a denial, a ban, a safety pause): a failure is logged at
    /// error, never hidden.
    pub fn append_or_log(&self, who: &str, action: &str, detail: Value) {
        if let Err(e) = self.append(who, action, detail) {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }

    /// Applies `changes` and appends their entry in one atomic write:
    /// either both happened or neither did (durable at the store's next
    /// flush). An operator action the node cannot audit is refused, not
    /// done unrecorded.
    pub fn commit(&self, changes: Batch, who: &str, action: &str, detail: Value) -> Result<u64> {
        self.write(changes, who, action, detail)
    }

    fn write(&self, mut batch: Batch, who: &str, action: &str, detail: Value) -> Result<u64> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, prev) = *head;
        let ts_us = crate::queue::now_us();
        let hash = digest(&prev, seq, ts_us, who, action, &detail);
        let e = AuditEntry {
            seq,
            ts_us,
            who: who.to_owned(),
            action: action.to_owned(),
            detail,
            prev: hex::encode(prev),
            hash: hex::encode(hash),
        };
        let json = serde_json::to_vec(&e).map_err(|e| Error::Invalid(e.to_string()))?;
        batch.insert(TREE, &seq.to_be_bytes(), encode_value(FORMAT, &json));
        self.store
            .apply(&batch)
            .map_err(|e| Error::AuditWrite(e.to_string()))?;
        *head = (seq + 1, hash);
        tracing::info!(target: "vigil::audit", seq, who, action, "audit");
        Ok(seq)
    }

    /// Up to `limit` entries from `from`.
    pub fn list(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.store
            .range_from(TREE, &from.to_be_bytes(), limit)?
            .iter()
            .map(|(_, v)| {
                serde_json::from_slice(decode_value(TREE, FORMAT, v)?).map_err(|e| Error::Corrupt {
                    tree: TREE.into(),
                    why: e.to_string(),
                })
            })
            .collect()
    }

    /// Entries in the chain and the hash of the last one.
    pub fn head(&self) -> (u64, [u8; 32]) {
        *self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the whole chain; returns the number of entries or the first bad one.
    pub fn verify(&self) -> Result<std::result::Result<u64, String>> {
        Ok(self.verify_at()?.map_err(|(_, why)| why))
    }

    /// Checks the whole chain; the number of entries, or the position of
    /// the first bad one and what is wrong with it.
    pub fn verify_at(&self) -> Result<std::result::Result<u64, (u64, String)>> {
        let mut prev = [0u8; 32];
        let mut n = 0u64;
        let mut from = 0u64;
        loop {
            let chunk = self.list(from, 1024)?;
            if chunk.is_empty() {
                return Ok(Ok(n));
            }
            for e in chunk {
                if e.seq != n {
                    return Ok(Err((
                        n,
                        format!("entry {n} is missing (found {} in its place)", e.seq),
                    )));
                }
                if e.prev != hex::encode(prev) {
                    return Ok(Err((
                        e.seq,
                        format!("entry {} does not link to entry {}", e.seq, n.wrapping_sub(1)),
                    )));
                }
                let h = digest(&prev, e.seq, e.ts_us, &e.who, &e.action, &e.detail);
                if e.hash != hex::encode(h) {
                    return Ok(Err((
                        e.seq,
                        format!("entry {} was modified (hash mismatch)", e.seq),
                    )));
                }
                prev = h;
                n += 1;
                from = e.seq + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_verifies_and_tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let a = Audit::open(store.clone()).unwrap();
        for i in 0..5 {
            a.append("rpc", "bus.grant", serde_json::json!({ "i": i }))
                .unwrap();
        }
        assert_eq!(a.verify().unwrap(), Ok(5));
        // Reopen continues the chain.
        let a = Audit::open(store.clone()).unwrap();
        a.append("app", "bus.denied", serde_json::json!({})).unwrap();
        assert_eq!(a.verify().unwrap(), Ok(6));
        // Edit entry 2's detail in place.
        let raw = store.get(TREE, &2u64.to_be_bytes()).unwrap().unwrap();
        let mut e: AuditEntry = serde_json::from_slice(&raw[1..]).unwrap();
        e.detail = serde_json::json!({ "i": 99 });
        store
            .insert(
                TREE,
                &2u64.to_be_bytes(),
                &encode_value(FORMAT, &serde_json::to_vec(&e).unwrap()),
            )
            .unwrap();
        assert_eq!(
            a.verify().unwrap(),
            Err("entry 2 was modified (hash mismatch)".into())
        );
        store.remove(TREE, &2u64.to_be_bytes()).unwrap();
        assert!(a.verify().unwrap().unwrap_err().contains("missing"));
    }
}
