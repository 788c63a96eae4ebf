//! Continuity chains of every stored dataset, one link per epoch,
//! aggregated into a signed root (see `vigil_protocols::continuity`).
//!
//! Each processed epoch is one file `DATA_DIR/continuity/<epoch>.links`:
//! header (epoch, chains, root, signature) then one record per dataset,
//! sorted by replica root: `R_p ‖ link ‖ previous link's epoch`. It is
//! written to a temporary name, fsynced and renamed, so a crash mid-epoch
//! leaves the previous epoch intact and the worker redoes that epoch on
//! restart. The newest `keep_epochs` files are kept.

mod file;
pub mod remote;
mod roots;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libp2p::identity::Keypair;
use rayon::prelude::*;
use serde::Serialize;
use vigil_protocols::availability::challenge::{prove_leaf, ChunkProof};
use vigil_protocols::availability::tree::Tree;
use vigil_protocols::continuity::{
    aggregate, link, proof_digest, root_message, select, start_link, Evidence, H,
};

pub use file::{LinksFile, Record};
pub use roots::{PeerRoot, RootRecorder, COMMITMENT_GRACE_EPOCHS, ROOT_TOPIC};

use crate::metrics as m;
use crate::storage::{parse_root, Storage};
use crate::{Error, Result};

/// Settings from genesis and `[continuity]`.
#[derive(Debug, Clone)]
pub struct ContinuitySettings {
    /// Chunks selected per dataset per epoch.
    pub chunks: usize,
    /// Chains per group (genesis `group_size`).
    pub group_size: usize,
    /// Groups per region (genesis `region_size`).
    pub region_size: usize,
    /// Epoch files kept.
    pub keep_epochs: u64,
}

/// What `continuity_status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContinuityStatus {
    /// Chains in the last processed epoch.
    pub chains: u64,
    /// Last processed epoch (0: none).
    pub last_epoch: u64,
    /// Its wall time, seconds.
    pub last_secs: f64,
    /// Its global root (hex).
    pub last_root: String,
    /// Epochs whose links are kept.
    pub epochs_kept: Vec<u64>,
    /// Epochs processed since start.
    pub processed: u64,
}

#[derive(Debug)]
struct Entry {
    replica_root: H,
    size: u64,
    tree: Tree,
}

#[derive(Debug, Default)]
struct Cache {
    generation: u64,
    entries: Arc<Vec<Entry>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    storage: Storage,
    key: Keypair,
    settings: ContinuitySettings,
    status: Mutex<ContinuityStatus>,
    cache: Mutex<Cache>,
}

/// Handle to the continuity chains; cheap to clone.
#[derive(Debug, Clone)]
pub struct Continuity {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A continuity proof: the evidence and the prover's signature on its root.
#[derive(Debug, Clone)]
pub struct SignedEvidence {
    /// Link, chunks, path, root.
    pub evidence: Evidence,
    /// Signature over `root_message(epoch, chains, root)`.
    pub signature: Vec<u8>,
    /// The prover's public key (protobuf).
    pub public_key: Vec<u8>,
}

impl Continuity {
    /// Chains over `storage`'s datasets, files in `dir`.
    pub fn open(dir: &Path, storage: Storage, key: Keypair, settings: ContinuitySettings) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
        let c = Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                storage,
                key,
                settings,
                status: Mutex::new(ContinuityStatus::default()),
                cache: Mutex::new(Cache::default()),
            }),
        };
        let kept = c.epochs()?;
        let mut st = lock(&c.inner.status);
        st.last_epoch = kept.last().copied().unwrap_or(0);
        st.epochs_kept = kept;
        drop(st);
        Ok(c)
    }

    /// The settings.
    pub fn settings(&self) -> &ContinuitySettings {
        &self.inner.settings
    }

    /// What `continuity_status` shows.
    pub fn status(&self) -> ContinuityStatus {
        lock(&self.inner.status).clone()
    }

    /// Epochs with a links file, ascending.
    pub fn epochs(&self) -> Result<Vec<u64>> {
        file::epochs(&self.inner.dir)
    }

    /// The datasets, sorted by replica root, with their trees (cached until storage changes).
    fn entries(&self) -> Result<Arc<Vec<Entry>>> {
        let generation = self.inner.storage.generation();
        {
            let c = lock(&self.inner.cache);
            if c.generation == generation {
                return Ok(c.entries.clone());
            }
        }
        let list = self.inner.storage.list()?;
        let storage = &self.inner.storage;
        let mut entries: Vec<Entry> = list
            .par_iter()
            .map(|d| {
                let replica_root = parse_root(&d.replica_root)?;
                Ok(Entry {
                    replica_root,
                    size: d.size,
                    tree: storage.tree(&replica_root, "replica.tree")?,
                })
            })
            .collect::<Result<_>>()?;
        entries.sort_by_key(|e| e.replica_root);
        let entries = Arc::new(entries);
        *lock(&self.inner.cache) = Cache {
            generation,
            entries: entries.clone(),
        };
        Ok(entries)
    }

    fn chunk_proofs(&self, e: &Entry, output: &H) -> Result<Vec<ChunkProof>> {
        let idx = select(output, &e.replica_root, e.size, self.inner.settings.chunks);
        let mut out = Vec::with_capacity(idx.len());
        let mut last: Option<(u64, Vec<u8>)> = None;
        for i in idx {
            let (start, len) = Storage::group_range(e.size, i);
            let group = match &last {
                Some((s, g)) if *s == start => g.clone(),
                _ => self.inner.storage.read_replica(&e.replica_root, start, len)?,
            };
            out.push(prove_leaf(&e.tree, i, &group, None));
            last = Some((start, group));
        }
        Ok(out)
    }

    /// Extends every chain with `epoch`, aggregates, signs and writes the
    /// epoch's file. Returns the signed root message (for gossip).
    pub fn process(&self, epoch: u64, output: &H) -> Result<Vec<u8>> {
        let t0 = Instant::now();
        let entries = self.entries()?;
        let prev = file::latest_before(&self.inner.dir, epoch)?;
        let records: Vec<Record> = entries
            .par_iter()
            .map(|e| {
                let (prev_epoch, prev_link) = prev
                    .as_ref()
                    .and_then(|p| p.find(&e.replica_root).map(|r| (p.epoch, r.link)))
                    .unwrap_or((0, start_link(&e.replica_root)));
                let digests: Vec<H> = self.chunk_proofs(e, output)?.iter().map(proof_digest).collect();
                Ok(Record {
                    replica_root: e.replica_root,
                    link: link(&prev_link, output, &digests),
                    prev_epoch,
                })
            })
            .collect::<Result<_>>()?;
        let links: Vec<H> = records.iter().map(|r| r.link).collect();
        let s = &self.inner.settings;
        let h = aggregate(&links, s.group_size, s.region_size);
        let msg = root_message(epoch, links.len() as u64, &h.root);
        let signature = self
            .inner
            .key
            .sign(&msg)
            .map_err(|e| Error::Invalid(format!("cannot sign the root: {e}")))?;
        let f = LinksFile {
            epoch,
            root: h.root,
            signature: signature.clone(),
            records,
        };
        f.write(&self.inner.dir)?;
        let kept = file::prune(&self.inner.dir, s.keep_epochs)?;
        let secs = t0.elapsed().as_secs_f64();
        metrics::histogram!(m::CONTINUITY_EPOCH_DURATION).record(secs);
        metrics::gauge!(m::CONTINUITY_CHAINS).set(links.len() as f64);
        let mut st = lock(&self.inner.status);
        st.chains = links.len() as u64;
        st.last_epoch = epoch;
        st.last_secs = secs;
        st.last_root = hex::encode(h.root);
        st.epochs_kept = kept;
        st.processed += 1;
        drop(st);
        tracing::info!(epoch, chains = links.len(), secs, root = %hex::encode(&h.root[..8]), "continuity epoch processed");
        Ok([msg, signature].concat())
    }

    /// The continuity proof for a dataset at an epoch: its link from the
    /// epoch's file, the chunk proofs behind it (regenerated from the
    /// replica), and the path to the signed root.
    pub fn proof(&self, replica_root: &H, epoch: u64, output: &H) -> Result<SignedEvidence> {
        let f = LinksFile::read(&self.inner.dir, epoch)?.ok_or_else(|| {
            Error::Invalid(format!(
                "no links for epoch {epoch} on this node (skipped, or older than the kept history)"
            ))
        })?;
        let i = f.index_of(replica_root).ok_or_else(|| {
            Error::Invalid(format!(
                "dataset {} has no link in epoch {epoch}",
                hex::encode(replica_root)
            ))
        })?;
        let r = &f.records[i];
        let info = self.inner.storage.info(replica_root)?.ok_or_else(|| {
            Error::Invalid(format!(
                "dataset {} is not stored here",
                hex::encode(replica_root)
            ))
        })?;
        let e = Entry {
            replica_root: *replica_root,
            size: info.size,
            tree: self.inner.storage.tree(replica_root, "replica.tree")?,
        };
        let chunks = self.chunk_proofs(&e, output)?;
        let prev_link = if r.prev_epoch == 0 {
            start_link(replica_root)
        } else {
            LinksFile::read(&self.inner.dir, r.prev_epoch)?
                .and_then(|p| p.find(replica_root).map(|x| x.link))
                .ok_or_else(|| {
                    Error::Invalid(format!("the link of epoch {} is no longer kept", r.prev_epoch))
                })?
        };
        let links: Vec<H> = f.records.iter().map(|r| r.link).collect();
        let s = &self.inner.settings;
        let h = aggregate(&links, s.group_size, s.region_size);
        if h.root != f.root {
            return Err(Error::Corrupt {
                tree: format!("continuity/{epoch}.links"),
                why: "its links do not aggregate to its root".into(),
            });
        }
        Ok(SignedEvidence {
            evidence: Evidence {
                epoch,
                replica_root: *replica_root,
                size: info.size,
                prev_epoch: r.prev_epoch,
                prev_link,
                link: r.link,
                chunks,
                path: h.path(&links, i, s.group_size, s.region_size),
                root: f.root,
            },
            signature: f.signature.clone(),
            public_key: self.inner.key.public().encode_protobuf(),
        })
    }

    /// Verifies signed evidence: the chain of evidence, then the signature.
    pub fn verify(&self, se: &SignedEvidence, output: &H) -> std::result::Result<(), String> {
        let s = &self.inner.settings;
        let size = self
            .inner
            .storage
            .info(&se.evidence.replica_root)
            .map_err(|e| e.to_string())?
            .ok_or("the dataset is not stored here")?
            .size;
        se.evidence
            .verify(output, size, s.chunks, s.group_size, s.region_size)?;
        let pk =
            libp2p::identity::PublicKey::try_decode_protobuf(&se.public_key).map_err(|e| e.to_string())?;
        let msg = root_message(se.evidence.epoch, se.evidence.path.chains, &se.evidence.root);
        if pk.verify(&msg, &se.signature) {
            Ok(())
        } else {
            Err("the root's signature does not verify".into())
        }
    }
}
