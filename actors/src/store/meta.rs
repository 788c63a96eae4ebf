//! The `meta` tree: schema version and genesis hash, checked at every open.

use std::path::Path;

use vigil_genesis::GenesisHash;

use super::{decode_value, encode_value, SledStore, Store};
use crate::{Error, Result};

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
const META: &str = "meta";
const FORMAT: u8 = 1;
const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_GENESIS: &[u8] = b"genesis_hash";

/// Whether opening may create the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// `vigil init` / `vigil dev` on a fresh dir: write `meta`.
    Create,
    /// `vigil run`: `meta` must exist and match.
    Existing,
}

/// sled tuning, from the node's `[storage]` config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// Background flush period; `None` flushes only when asked.
    pub flush_every_ms: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 64 << 20,
            flush_every_ms: Some(500),
        }
    }
}

/// Opens the node database and checks its schema version and genesis hash.
pub fn open_node_db(
    path: &Path,
    genesis: GenesisHash,
    mode: OpenMode,
    opts: &StoreOptions,
) -> Result<SledStore> {
    if mode == OpenMode::Existing && !path.exists() {
        return Err(Error::NotInitialized {
            path: path.to_owned(),
        });
    }
    let store = SledStore::open(path, opts.cache_capacity_bytes, opts.flush_every_ms)?;
    match store.get(META, KEY_GENESIS)? {
        None if mode == OpenMode::Create => {
            store.insert(
                META,
                KEY_SCHEMA,
                &encode_value(FORMAT, &SCHEMA_VERSION.to_be_bytes()),
            )?;
            store.insert(META, KEY_GENESIS, &encode_value(FORMAT, &genesis.0))?;
            store.flush()?;
        }
        None => {
            return Err(Error::NotInitialized {
                path: path.to_owned(),
            })
        }
        Some(raw) => check_meta(&store, &raw, genesis)?,
    }
    Ok(store)
}

fn check_meta(store: &SledStore, raw_genesis: &[u8], genesis: GenesisHash) -> Result<()> {
    let schema = store.get(META, KEY_SCHEMA)?.ok_or_else(|| Error::Corrupt {
        tree: META.into(),
        why: "genesis hash present but no schema version".into(),
    })?;
    let schema = decode_value(META, FORMAT, &schema)?;
    let found = u32::from_be_bytes(schema.try_into().map_err(|_| Error::Corrupt {
        tree: META.into(),
        why: format!("schema version has {} bytes, expected 4", schema.len()),
    })?);
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let stored = decode_value(META, FORMAT, raw_genesis)?;
    let stored: [u8; 32] = stored.try_into().map_err(|_| Error::Corrupt {
        tree: META.into(),
        why: format!("genesis hash has {} bytes, expected 32", stored.len()),
    })?;
    if stored != genesis.0 {
        return Err(Error::GenesisMismatch {
            stored: GenesisHash(stored).to_hex(),
            expected: genesis.to_hex(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_reopen_checks_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let a = GenesisHash([1; 32]);
        let b = GenesisHash([2; 32]);
        let opts = StoreOptions {
            flush_every_ms: None,
            ..StoreOptions::default()
        };
        assert!(matches!(
            open_node_db(&path, a, OpenMode::Existing, &opts),
            Err(Error::NotInitialized { .. })
        ));
        drop(open_node_db(&path, a, OpenMode::Create, &opts).unwrap());
        drop(open_node_db(&path, a, OpenMode::Existing, &opts).unwrap());
        let err = open_node_db(&path, b, OpenMode::Existing, &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&a.to_hex()) && err.contains(&b.to_hex()), "{err}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = GenesisHash([1; 32]);
        let opts = StoreOptions {
            flush_every_ms: None,
            ..StoreOptions::default()
        };
        {
            let s = open_node_db(dir.path(), a, OpenMode::Create, &opts).unwrap();
            s.insert(META, KEY_SCHEMA, &encode_value(FORMAT, &9u32.to_be_bytes()))
                .unwrap();
            s.flush().unwrap();
        }
        let err = open_node_db(dir.path(), a, OpenMode::Existing, &opts).unwrap_err();
        assert!(matches!(err, Error::SchemaTooNew { found: 9, .. }), "{err}");
    }
}
