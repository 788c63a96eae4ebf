//! `<epoch>.links`: `VCL1` ‖ epoch (u64) ‖ chains (u64) ‖ root (32) ‖
//! signature length (u16) ‖ signature ‖ records (`R_p` 32 ‖ link 32 ‖
//! previous epoch u64), sorted by `R_p`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use vigil_protocols::continuity::H;

use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"VCL1";
const RECORD: usize = 72;

/// One chain's link in an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Replica root.
    pub replica_root: H,
    /// The link.
    pub link: H,
    /// Epoch of the link it extends (0: the chain's start).
    pub prev_epoch: u64,
}

/// One epoch's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinksFile {
    /// Epoch.
    pub epoch: u64,
    /// Global root.
    pub root: H,
    /// The node's signature over the root message.
    pub signature: Vec<u8>,
    /// Records sorted by replica root.
    pub records: Vec<Record>,
}

fn path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("{epoch:020}.links"))
}

fn corrupt(p: &Path, why: impl ToString) -> Error {
    Error::Corrupt {
        tree: p.display().to_string(),
        why: why.to_string(),
    }
}

impl LinksFile {
    /// Writes atomically (temporary file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut b = Vec::with_capacity(56 + self.signature.len() + RECORD * self.records.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.extend_from_slice(&(self.records.len() as u64).to_be_bytes());
        b.extend_from_slice(&self.root);
        b.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.signature);
        for r in &self.records {
            b.extend_from_slice(&r.replica_root);
            b.extend_from_slice(&r.link);
            b.extend_from_slice(&r.prev_epoch.to_be_bytes());
        }
        let dest = path(dir, self.epoch);
        let tmp = dest.with_extension("tmp");
        let io =
            |e: std::io::Error| Error::Invalid(format!("cannot write {} (disk full?): {e}", tmp.display()));
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&b).and_then(|_| f.sync_all()).map_err(io)?;
        fs::rename(&tmp, &dest).map_err(io)?;
        Ok(())
    }

    /// Reads epoch `epoch`'s file, if kept.
    pub fn read(dir: &Path, epoch: u64) -> Result<Option<Self>> {
        let p = path(dir, epoch);
        let b = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Invalid(format!("{}: {e}", p.display()))),
        };
        if b.len() < 54 || &b[..4] != MAGIC {
            return Err(corrupt(&p, "not a links file"));
        }
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let (e, n) = (u64_at(4), u64_at(12) as usize);
        let root: H = b[20..52].try_into().expect("32 bytes");
        let sl = u16::from_be_bytes([b[52], b[53]]) as usize;
        let body = 54 + sl;
        if e != epoch || b.len() != body + n * RECORD {
            return Err(corrupt(
                &p,
                format!("{} bytes for {n} records of epoch {e}", b.len()),
            ));
        }
        let records = b[body..]
            .chunks_exact(RECORD)
            .map(|c| Record {
                replica_root: c[..32].try_into().expect("32 bytes"),
                link: c[32..64].try_into().expect("32 bytes"),
                prev_epoch: u64::from_be_bytes(c[64..72].try_into().expect("8 bytes")),
            })
            .collect();
        Ok(Some(Self {
            epoch,
            root,
            signature: b[54..body].to_vec(),
            records,
        }))
    }

    /// Position of a dataset's record.
    pub fn index_of(&self, replica_root: &H) -> Option<usize> {
        self.records
            .binary_search_by(|r| r.replica_root.cmp(replica_root))
            .ok()
    }

    /// A dataset's record.
    pub fn find(&self, replica_root: &H) -> Option<&Record> {
        self.index_of(replica_root).map(|i| &self.records[i])
    }
}

/// Epochs with a file, ascending.
pub(super) fn epochs(dir: &Path) -> Result<Vec<u64>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
    let mut v: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".links")?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// The newest file before `epoch`.
pub(super) fn latest_before(dir: &Path, epoch: u64) -> Result<Option<LinksFile>> {
    match epochs(dir)?.into_iter().rev().find(|e| *e < epoch) {
        Some(e) => LinksFile::read(dir, e),
        None => Ok(None),
    }
}

/// Keeps the newest `keep` files; returns the epochs kept.
pub(super) fn prune(dir: &Path, keep: u64) -> Result<Vec<u64>> {
    let all = epochs(dir)?;
    let cut = all.len().saturating_sub(keep.max(1) as usize);
    for e in &all[..cut] {
        let _ = fs::remove_file(path(dir, *e));
    }
    Ok(all[cut..].to_vec())
}
