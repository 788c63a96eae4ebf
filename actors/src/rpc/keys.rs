//! API keys of the admin RPC: named credentials with a role, for operators
//! and tools that are not the local `vigilctl` (which uses the cookie).
//!
//! A key's secret (`vigil_` + 64 hex characters, 256 random bits) is shown
//! once, when it is made; the node keeps only its BLAKE3 hash, with the
//! name, the role, when it was made and when it was last used, in the sled
//! tree `rpc/keys`. A revoked key stops working at once, also on open
//! WebSocket connections: every call checks that its key still exists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::roles::Role;
use crate::audit::Audit;
use crate::store::{decode_value, encode_value, Batch, SledStore, Store};
use crate::{Error, Result};

const TREE: &str = "rpc/keys";
const FORMAT: u8 = 1;
/// What every key's secret starts with (so a leaked one is recognisable).
pub const PREFIX: &str = "vigil_";
/// How often `last_used` is written back per key, seconds.
const LAST_USED_EVERY: u64 = 60;

/// A key as stored and listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Unique name, e.g. `grafana` or `alice-laptop`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made, Unix seconds.
    pub created_unix: u64,
    /// When it was last used, Unix seconds (within a minute); 0 = never.
    pub last_used_unix: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: String,
    role: Role,
    created_unix: u64,
    last_used_unix: u64,
    blake3: String,
}

#[derive(Debug)]
struct Live {
    name: Arc<str>,
    /// `key:NAME`, made once (every call of the key carries it).
    who: Arc<str>,
    role: Role,
    created_unix: u64,
    last_used: AtomicU64,
    written: AtomicU64,
}

/// Who is calling: what the HTTP layer learned from the credential, carried
/// with every call of the request or WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `cookie`, or `key:NAME`: how the audit log names the caller.
    pub who: Arc<str>,
    /// Its role when it connected.
    pub role: Role,
    /// The key's hash (to check on each call that it was not revoked);
    /// `None` for the cookie.
    pub key: Option<[u8; 32]>,
}

impl Caller {
    /// The local cookie: admin.
    pub fn cookie() -> Self {
        Self {
            who: "cookie".into(),
            role: Role::Admin,
            key: None,
        }
    }
}

/// The API keys of a node.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    store: SledStore,
    keys: Arc<RwLock<HashMap<[u8; 32], Live>>>,
}

fn unix_now() -> u64 {
    crate::clock::unix_secs()
}

/// Checks a key name: 1–64 characters of `a-z0-9._-`, starting with a
/// letter or digit.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "bad key name `{name}`: use 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        )))
    }
}

impl ApiKeys {
    /// Loads the keys stored in `store`.
    pub fn open(store: SledStore) -> Result<Self> {
        let mut keys = HashMap::new();
        for (_, v) in store.scan_prefix(TREE, b"")? {
            let s: Stored =
                serde_json::from_slice(decode_value(TREE, FORMAT, &v)?).map_err(|e| Error::Corrupt {
                    tree: TREE.into(),
                    why: format!("a key record is not valid: {e}"),
                })?;
            let hash = hex::decode(&s.blake3)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| Error::Corrupt {
                    tree: TREE.into(),
                    why: format!("key `{}` has no valid hash", s.name),
                })?;
            keys.insert(
                hash,
                Live {
                    who: format!("key:{}", s.name).into(),
                    name: s.name.into(),
                    role: s.role,
                    created_unix: s.created_unix,
                    last_used: AtomicU64::new(s.last_used_unix),
                    written: AtomicU64::new(s.last_used_unix),
                },
            );
        }
        Ok(Self {
            store,
            keys: Arc::new(RwLock::new(keys)),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Live>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a key and returns its secret (shown once: only its hash is
    /// kept). The key and its audit entry are one atomic write.
    pub fn add(&self, name: &str, role: Role, who: &str, audit: &Audit) -> Result<(KeyInfo, String)> {
        check_name(name)?;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.values().any(|k| &*k.name == name) {
            return Err(Error::Invalid(format!(
                "a key named `{name}` exists already: revoke it first, or pick another name"
            )));
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let secret = format!("{PREFIX}{}", hex::encode(raw));
        let hash = *blake3::hash(secret.as_bytes()).as_bytes();
        let created_unix = unix_now();
        let stored = Stored {
            name: name.to_owned(),
            role,
            created_unix,
            last_used_unix: 0,
            blake3: hex::encode(hash),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut b = Batch::default();
        b.insert(TREE, name.as_bytes(), encode_value(FORMAT, &bytes));
        audit.commit(b, who, "keys.add", json!({ "name": name, "role": role }))?;
        self.durable(&format!("key `{name}` was made, but"))?;
        keys.insert(
            hash,
            Live {
                who: format!("key:{name}").into(),
                name: name.into(),
                role,
                created_unix,
                last_used: AtomicU64::new(0),
                written: AtomicU64::new(0),
            },
        );
        let info = KeyInfo {
            name: name.to_owned(),
            role,
            created_unix,
            last_used_unix: 0,
        };
        Ok((info, secret))
    }

    /// Revokes the key `name`: it stops working at once, on every
    /// connection. The removal and its audit entry are one atomic write.
    pub fn revoke(&self, name: &str, who: &str, audit: &Audit) -> Result<KeyInfo> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let hash = keys
            .iter()
            .find(|(_, k)| &*k.name == name)
            .map(|(h, _)| *h)
            .ok_or_else(|| Error::Invalid(format!("no key named `{name}` (see keys_list)")))?;
        let mut b = Batch::default();
        b.remove(TREE, name.as_bytes());
        audit.commit(b, who, "keys.revoke", json!({ "name": name }))?;
        let gone = keys.remove(&hash).map(|k| info(&k));
        drop(keys);
        self.durable(&format!("key `{name}` no longer works, but"))?;
        gone.ok_or_else(|| Error::Invalid(format!("no key named `{name}`")))
    }

    fn durable(&self, done: &str) -> Result<()> {
        self.store.flush().map(drop).map_err(|e| {
            Error::ChangeNotDurable(format!(
                "{done} the store could not make it durable ({e}), so a restart may undo it: check the disk, then `vigilctl keys list`"
            ))
        })
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut v: Vec<KeyInfo> = self.read().values().map(info).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The caller a bearer secret stands for, if it is a live key; notes
    /// the use.
    pub fn authenticate(&self, secret: &str) -> Option<Caller> {
        if !secret.starts_with(PREFIX) {
            return None;
        }
        let hash = *blake3::hash(secret.as_bytes()).as_bytes();
        let keys = self.read();
        let k = keys.get(&hash)?;
        self.touch(&hash, k);
        Some(Caller {
            who: k.who.clone(),
            role: k.role,
            key: Some(hash),
        })
    }

    /// The role of the key with this hash, if it still exists; notes the use.
    pub fn role(&self, hash: &[u8; 32]) -> Option<Role> {
        let keys = self.read();
        let k = keys.get(hash)?;
        self.touch(hash, k);
        Some(k.role)
    }

    /// Records a use; written back at most once a minute per key.
    fn touch(&self, hash: &[u8; 32], k: &Live) {
        let now = unix_now();
        k.last_used.store(now, Ordering::Relaxed);
        let written = k.written.load(Ordering::Relaxed);
        if now >= written + LAST_USED_EVERY
            && k.written
                .compare_exchange(written, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let stored = Stored {
                name: k.name.to_string(),
                role: k.role,
                created_unix: k.created_unix,
                last_used_unix: now,
                blake3: hex::encode(hash),
            };
            if let Ok(bytes) = serde_json::to_vec(&stored) {
                // Not flushed: a lost `last_used` costs a minute of accuracy.
                if let Err(e) = self
                    .store
                    .insert(TREE, k.name.as_bytes(), &encode_value(FORMAT, &bytes))
                {
                    tracing::warn!(key = %k.name, error = %e, "cannot record the key's last use");
                }
            }
        }
    }
}

fn info(k: &Live) -> KeyInfo {
    KeyInfo {
        name: k.name.to_string(),
        role: k.role,
        created_unix: k.created_unix,
        last_used_unix: k.last_used.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SledStore, ApiKeys, Audit) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let keys = ApiKeys::open(store.clone()).unwrap();
        let audit = Audit::open(store.clone()).unwrap();
        (dir, store, keys, audit)
    }

    #[test]
    fn a_key_works_until_revoked_and_only_its_hash_is_stored() {
        let (_d, store, keys, audit) = open();
        let (info, secret) = keys.add("grafana", Role::Read, "cookie", &audit).unwrap();
        assert_eq!(info.role, Role::Read);
        assert!(secret.starts_with(PREFIX) && secret.len() == PREFIX.len() + 64);
        let caller = keys.authenticate(&secret).expect("the new key works");
        assert_eq!((&*caller.who, caller.role), ("key:grafana", Role::Read));
        assert!(keys.authenticate(&format!("{secret}0")).is_none());
        assert!(keys.authenticate("grafana").is_none());

        let raw: Vec<u8> = store
            .scan_prefix(TREE, b"")
            .unwrap()
            .into_iter()
            .flat_map(|(_, v)| v)
            .collect();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            !text.contains(&secret[PREFIX.len()..]),
            "the secret is never stored"
        );

        // Survives a restart, with its last use.
        let again = ApiKeys::open(store.clone()).unwrap();
        assert_eq!(again.list()[0].name, "grafana");
        assert!(again.list()[0].last_used_unix > 0);
        assert!(again.authenticate(&secret).is_some());

        keys.revoke("grafana", "cookie", &audit).unwrap();
        assert!(keys.authenticate(&secret).is_none());
        assert_eq!(
            keys.role(&caller.key.unwrap()),
            None,
            "open connections lose it too"
        );
        assert!(ApiKeys::open(store).unwrap().list().is_empty());
        let log: Vec<_> = audit.list(0, 10).unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(log, ["keys.add", "keys.revoke"]);
    }

    #[test]
    fn names_are_checked_and_unique() {
        let (_d, _s, keys, audit) = open();
        keys.add("ops-1", Role::Operator, "cookie", &audit).unwrap();
        let e = keys
            .add("ops-1", Role::Admin, "cookie", &audit)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exists already"), "{e}");
        for bad in ["", "Ops", "-x", "a b", &"x".repeat(65)] {
            let e = keys
                .add(bad, Role::Read, "cookie", &audit)
                .unwrap_err()
                .to_string();
            assert!(e.contains("bad key name"), "{bad}: {e}");
        }
        let e = keys.revoke("nobody", "cookie", &audit).unwrap_err().to_string();
        assert!(e.contains("no key named `nobody`"), "{e}");
    }

    #[test]
    fn a_key_the_audit_log_cannot_record_is_not_made() {
        let (_d, store, keys, audit) = open();
        store.fail_writes_after(0);
        assert!(keys.add("x", Role::Admin, "cookie", &audit).is_err());
        assert!(keys.list().is_empty());
    }
}
