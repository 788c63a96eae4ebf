//! What the node remembers about each channel besides its states: one small
//! JSON file per channel (`<id>.json`), replaced atomically (write, fsync,
//! rename, fsync the directory) whenever its life changes (opened, joined,
//! closing, closed). The states themselves are in the channel's ledger
//! (`<id>.ledger`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};

use crate::{ChannelState, Layer2Error};

/// One channel's facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// Channel id.
    pub id: B256,
    /// The counterparty's peer id.
    pub peer: String,
    /// Party A (the opener).
    pub a: Address,
    /// Party B.
    pub b: Address,
    /// Whether this node is A.
    pub ours_is_a: bool,
    /// The opener's salt.
    pub salt: u64,
    /// A's deposit.
    pub deposit_a: u128,
    /// B's deposit.
    pub deposit_b: u128,
    /// Where it is.
    pub state: ChannelState,
    /// The nonce of a final state both signed (a cooperative close under way).
    #[serde(default)]
    pub final_nonce: Option<u64>,
    /// What the contract paid out (closed): (A, B).
    #[serde(default)]
    pub paid: Option<(u128, u128)>,
}

impl Meta {
    /// Both deposits.
    pub fn capacity(&self) -> u128 {
        self.deposit_a + self.deposit_b
    }
}

fn io(path: &Path, e: std::io::Error) -> Layer2Error {
    Layer2Error::Store(format!("{}: {e}", path.display()))
}

/// The file of channel `id` under `dir`.
pub fn path(dir: &Path, id: B256) -> PathBuf {
    dir.join(format!("{id:x}.json"))
}

/// The ledger file of channel `id` under `dir`.
pub fn ledger_path(dir: &Path, id: B256) -> PathBuf {
    dir.join(format!("{id:x}.ledger"))
}

/// Writes `m` durably.
pub fn save(dir: &Path, m: &Meta) -> Result<(), Layer2Error> {
    let path = path(dir, m.id);
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(m).map_err(|e| Layer2Error::Store(e.to_string()))?;
    let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Every channel under `dir`; a file that does not parse is an error that
/// names it (never skipped: it may hold a channel with money in it).
pub fn load_all(dir: &Path) -> Result<Vec<Meta>, Layer2Error> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let p = e.map_err(|e| io(dir, e))?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let bytes = fs::read(&p).map_err(|e| io(&p, e))?;
        let m: Meta = serde_json::from_slice(&bytes).map_err(|e| {
            Layer2Error::Store(format!(
                "{}: not a channel file ({e}): restore it from a backup or move it aside",
                p.display()
            ))
        })?;
        out.push(m);
    }
    out.sort_by_key(|m| m.id);
    Ok(out)
}
