//! Storage: sled behind a small trait, with versioned values.
//!
//! Every tree the node uses is named here or by the module that owns it
//! (`meta`, `q/<topic>/msg`, `epochs`, ...). Every value starts with a format
//! byte ([`encode_value`] / [`decode_value`]) so a later format can be read
//! side by side with an older one. Moving off sled touches `sled_store.rs` only.

mod actor;
mod meta;
mod sled_store;

use std::fmt;

pub use actor::{Flush, StoreActor};
pub use meta::{open_node_db, OpenMode, StoreOptions, SCHEMA_VERSION};
pub use sled_store::SledStore;

use crate::{Error, Result};

/// One write of a [`Batch`]: insert a value, or remove the key when `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Tree name.
    pub tree: String,
    /// Key.
    pub key: Vec<u8>,
    /// New value, or `None` to remove.
    pub value: Option<Vec<u8>>,
}

/// Writes applied atomically, across trees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch(pub Vec<Write>);

impl Batch {
    /// Adds an insert.
    pub fn insert(&mut self, tree: &str, key: &[u8], value: Vec<u8>) -> &mut Self {
        self.0.push(Write {
            tree: tree.to_owned(),
            key: key.to_vec(),
            value: Some(value),
        });
        self
    }

    /// Adds a removal.
    pub fn remove(&mut self, tree: &str, key: &[u8]) -> &mut Self {
        self.0.push(Write {
            tree: tree.to_owned(),
            key: key.to_vec(),
            value: None,
        });
        self
    }
}

/// The node's key-value store. Implementations are cheap to clone and shared.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Reads a value.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Writes a value (durable after the next [`Store::flush`]).
    fn insert(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes a key; returns whether it existed.
    fn remove(&self, tree: &str, key: &[u8]) -> Result<bool>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Up to `limit` entries with keys `>= start`, in key order.
    fn range_from(&self, tree: &str, start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The entry with the largest key.
    fn last(&self, tree: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Up to `limit` entries with keys below `before` (all keys when
    /// `None`), largest key first: one page of a read from the end.
    fn range_back(&self, tree: &str, before: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Entries in `tree` and the bytes of their keys and values (one pass,
    /// nothing kept in memory).
    fn size(&self, tree: &str) -> Result<(usize, u64)>;
    /// Names of every tree that exists.
    fn tree_names(&self) -> Vec<String>;
    /// Applies every write of `batch` atomically, or none.
    fn apply(&self, batch: &Batch) -> Result<()>;
    /// Makes every earlier write durable (fsync); returns bytes flushed.
    fn flush(&self) -> Result<usize>;
}

/// Prefixes `payload` with its format byte.
pub fn encode_value(format: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(format);
    out.extend_from_slice(payload);
    out
}

/// Splits a stored value into format byte and payload, checking the format.
pub fn decode_value<'a>(tree: &str, expected: u8, bytes: &'a [u8]) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&f, rest)) if f == expected => Ok(rest),
        Some((&f, _)) => Err(Error::Corrupt {
            tree: tree.to_owned(),
            why: format!("format byte {f}, this build reads {expected}"),
        }),
        None => Err(Error::Corrupt {
            tree: tree.to_owned(),
            why: "empty value".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_values_check_their_format() {
        let v = encode_value(1, b"abc");
        assert_eq!(decode_value("t", 1, &v).unwrap(), b"abc");
        let err = decode_value("t", 2, &v).unwrap_err().to_string();
        assert!(err.contains("tree `t`") && err.contains("format byte 1"), "{err}");
        assert!(decode_value("t", 1, &[]).is_err());
    }
}
