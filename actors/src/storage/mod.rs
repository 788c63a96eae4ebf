//! Datasets this node stores, in their prover-specific encoding.
//!
//! Layout under `DATA_DIR/storage/`: `<R_p hex>/replica` (the encoded bytes),
//! `<R_p hex>/replica.tree` and `<R_p hex>/plain.tree` (8-leaf group CVs of
//! the replica and of the plaintext), and `tmp/` for uploads in progress
//! (emptied at start). A dataset appears in sled (`storage/datasets`) only
//! after its folder is complete, fsynced and renamed into place, and only
//! then is it announced: a failed ingest leaves nothing behind.

mod announce;
mod announced;
mod ingest;
mod jobs;
mod withdraw;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use vigil_protocols::availability::challenge::{prove_leaf, ChunkProof};
use vigil_protocols::availability::encode::{keystream, SECTOR};
use vigil_protocols::availability::tree::{leaves, Tree, GROUP, LEAF};

pub use announce::{Announcement, Kind, ANNOUNCE_TOPIC, ANNOUNCE_TTL, MAX_AHEAD, REFRESH, REPLAY_WINDOW};
pub use announced::Announced;
pub use jobs::{JobInfo, Phase};
pub use withdraw::{Withdrawal, WITHDRAW_PROPAGATION};

use crate::net::Network;
use crate::store::{SledStore, Store};
use crate::{Error, Result};

const DATASETS: &str = "storage/datasets";

/// A stored dataset, as `storage_list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Name given at upload.
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Plaintext root `R` (hex): `blake3` of the file.
    pub root: String,
    /// Replica root `R_p` (hex): `blake3` of this node's replica.
    pub replica_root: String,
    /// Stored at, Unix seconds.
    pub created_unix: u64,
    /// Withdrawn at, Unix ms: no longer announced, deleted after the
    /// withdrawal grace (see `storage_remove`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_at_ms: Option<u64>,
}

impl DatasetInfo {
    fn roots(&self) -> Result<([u8; 32], [u8; 32])> {
        Ok((parse_root(&self.root)?, parse_root(&self.replica_root)?))
    }
}

/// A 32-byte root from hex.
pub fn parse_root(s: &str) -> Result<[u8; 32]> {
    let v = hex::decode(s).map_err(|_| Error::Invalid(format!("`{s}` is not a hex root")))?;
    v.try_into()
        .map_err(|_| Error::Invalid(format!("`{s}`: a root is 32 bytes (64 hex digits)")))
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    key: Keypair,
    cost: u32,
    max_bytes: u64,
    store: SledStore,
    uploads: Mutex<HashMap<u64, ingest::Upload>>,
    jobs: Mutex<jobs::Jobs>,
    net: Option<Network>,
    /// Bumped when a dataset is added or removed.
    generation: std::sync::atomic::AtomicU64,
    /// The last time (Unix ms) an announcement or withdrawal was signed.
    last_at: std::sync::atomic::AtomicU64,
    /// How long a withdrawn dataset is kept before it is deleted, ms.
    withdraw_grace_ms: std::sync::atomic::AtomicU64,
    /// Announcements of peers: the last heard per dataset.
    heard: Mutex<announced::Heard>,
}

/// Handle to the node's datasets; cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Storage {
    /// Opens `dir` (created if absent; unfinished uploads are removed).
    /// `cost` is the genesis `encoding_cost`; `max_bytes` the largest dataset.
    pub fn open(
        dir: &Path,
        key: Keypair,
        cost: u32,
        max_bytes: u64,
        store: SledStore,
        net: Option<Network>,
    ) -> Result<Self> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let s = Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                key,
                cost,
                max_bytes,
                store,
                uploads: Mutex::new(HashMap::new()),
                jobs: Mutex::new(jobs::Jobs::default()),
                net,
                generation: std::sync::atomic::AtomicU64::new(1),
                last_at: std::sync::atomic::AtomicU64::new(0),
                withdraw_grace_ms: std::sync::atomic::AtomicU64::new(
                    Self::withdraw_grace(&vigil_genesis::SecurityParams::default()).as_millis() as u64,
                ),
                heard: Mutex::new(HashMap::new()),
            }),
        };
        if let Some(n) = &s.inner.net {
            n.set_gossip_handler(ANNOUNCE_TOPIC, Arc::new(s.clone()));
        }
        Ok(s)
    }

    /// The node's datasets.
    pub fn list(&self) -> Result<Vec<DatasetInfo>> {
        self.inner
            .store
            .scan_prefix(DATASETS, b"")?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| corrupt(DATASETS, e)))
            .collect()
    }

    /// One dataset by replica root.
    pub fn info(&self, replica_root: &[u8; 32]) -> Result<Option<DatasetInfo>> {
        self.inner
            .store
            .get(DATASETS, replica_root)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt(DATASETS, e)))
            .transpose()
    }

    /// Finds a dataset by replica root, plaintext root or name.
    pub fn find(&self, key: &str) -> Result<DatasetInfo> {
        self.list()?
            .into_iter()
            .find(|d| d.replica_root == key || d.root == key || d.name == key)
            .ok_or_else(|| Error::Invalid(format!("no dataset `{key}` here: see storage_list")))
    }

    fn folder(&self, replica_root: &[u8; 32]) -> PathBuf {
        self.inner.dir.join(hex::encode(replica_root))
    }

    /// Deletes a dataset (record first, then files).
    pub fn remove(&self, replica_root: &[u8; 32]) -> Result<bool> {
        let existed = self.inner.store.remove(DATASETS, replica_root)?;
        self.inner.store.flush()?;
        self.bump();
        let dir = self.folder(replica_root);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        Ok(existed)
    }

    pub(crate) fn tree(&self, replica_root: &[u8; 32], which: &str) -> Result<Tree> {
        let p = self.folder(replica_root).join(which);
        let b = std::fs::read(&p).map_err(|e| io(&p, e))?;
        Tree::decode(&b).map_err(|e| corrupt(&p.display().to_string(), e))
    }

    /// Reads `len` bytes at `offset` of the replica (the file is closed on return).
    pub(crate) fn read_replica(&self, replica_root: &[u8; 32], offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.folder(replica_root).join("replica");
        let f = File::open(&p).map_err(|e| io(&p, e))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(|e| io(&p, e))?;
        Ok(buf)
    }

    pub(crate) fn group_range(size: u64, index: u64) -> (u64, usize) {
        let start = index / GROUP as u64 * (GROUP * LEAF) as u64;
        let end = (start + (GROUP * LEAF) as u64).min(size);
        (start, (end - start) as usize)
    }

    /// Proofs of leaves `indices` of the replica (`None`: not stored here).
    pub fn prove(
        &self,
        replica_root: &[u8; 32],
        indices: &[u64],
        nonce: &[u8; 32],
    ) -> Result<Option<Vec<ChunkProof>>> {
        let Some(info) = self.info(replica_root)? else {
            return Ok(None);
        };
        let tree = match self.tree(replica_root, "replica.tree") {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(dataset = %info.name, error = %e, "replica tree unreadable: answering missing");
                return Ok(None);
            }
        };
        let mut out = Vec::with_capacity(indices.len());
        for &i in indices {
            let (start, len) = Self::group_range(info.size, i);
            let group = match self.read_replica(replica_root, start, len) {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(dataset = %info.name, error = %e, "replica unreadable: answering missing");
                    return Ok(None);
                }
            };
            out.push(prove_leaf(&tree, i, &group, Some(nonce)));
        }
        Ok(Some(out))
    }

    /// An audit answer: leaf `index` as replica (vs `R_p`) and decoded (vs `R`).
    /// Decoding regenerates the leaf's sector keystream: slow by design.
    pub fn audit(&self, replica_root: &[u8; 32], index: u64) -> Result<Option<(ChunkProof, ChunkProof)>> {
        let Some(info) = self.info(replica_root)? else {
            return Ok(None);
        };
        if index >= leaves(info.size) {
            return Err(Error::Invalid(format!(
                "leaf {index} of a {}-leaf dataset",
                leaves(info.size)
            )));
        }
        let (root, _) = info.roots()?;
        let (start, len) = Self::group_range(info.size, index);
        let group = self.read_replica(replica_root, start, len)?;
        let sector = start / SECTOR as u64;
        let ks = keystream(self.peer_bytes().as_slice(), &root, sector, self.inner.cost);
        let at = (start % SECTOR as u64) as usize;
        let plain_group: Vec<u8> = group.iter().zip(&ks[at..at + len]).map(|(r, k)| r ^ k).collect();
        let replica = prove_leaf(&self.tree(replica_root, "replica.tree")?, index, &group, None);
        let plain = prove_leaf(&self.tree(replica_root, "plain.tree")?, index, &plain_group, None);
        Ok(Some((replica, plain)))
    }

    /// Decodes `len` plaintext bytes at `offset`, verified group by group
    /// against the plaintext tree (whose root is `R`).
    pub fn get(&self, replica_root: &[u8; 32], offset: u64, len: u64) -> Result<Vec<u8>> {
        let info = self
            .info(replica_root)?
            .ok_or_else(|| Error::Invalid(format!("no dataset {} here", hex::encode(replica_root))))?;
        if offset > info.size {
            return Err(Error::Invalid(format!(
                "offset {offset} is past the end ({} bytes)",
                info.size
            )));
        }
        let (root, _) = info.roots()?;
        let end = (offset + len).min(info.size);
        let plain_tree = self.tree(replica_root, "plain.tree")?;
        let group_bytes = (GROUP * LEAF) as u64;
        // Whole sectors covering the range: the keystream comes per sector.
        let first_sector = offset / SECTOR as u64;
        let last_sector = end.saturating_sub(1) / SECTOR as u64;
        let s0 = first_sector * SECTOR as u64;
        let s1 = ((last_sector + 1) * SECTOR as u64).min(info.size);
        let mut buf = self.read_replica(replica_root, s0, (s1 - s0) as usize)?;
        vigil_protocols::availability::encode::xor_sectors(
            self.peer_bytes().as_slice(),
            &root,
            first_sector,
            &mut buf,
            self.inner.cost,
        );
        let cvs = vigil_protocols::availability::tree::group_cvs(s0, &buf);
        let g0 = (s0 / group_bytes) as usize;
        for (k, cv) in cvs.iter().enumerate() {
            if plain_tree.levels[0].get(g0 + k) != Some(cv) {
                return Err(Error::Corrupt {
                    tree: format!("dataset {}", info.name),
                    why: format!(
                        "decoded bytes at {} do not match the plaintext root",
                        s0 + k as u64 * group_bytes
                    ),
                });
            }
        }
        // A one-group dataset starts at 0, so its bytes are at hand; larger trees need none.
        if plain_tree.root(&buf[..buf.len().min(GROUP * LEAF)]) != root {
            return Err(Error::Corrupt {
                tree: format!("dataset {}", info.name),
                why: "the plaintext tree does not hash to R".into(),
            });
        }
        Ok(buf[(offset - s0) as usize..(end - s0) as usize].to_vec())
    }

    fn peer_bytes(&self) -> Vec<u8> {
        self.inner.key.public().to_peer_id().to_bytes()
    }

    /// Changes when a dataset is added or removed (lets readers cache the list).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn bump(&self) {
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Stores `replica` as if it were already encoded (its plaintext root is
    /// taken to be its own hash), without fsync: for benchmarks and tests
    /// that need many datasets fast. Never reachable from the RPC.
    #[doc(hidden)]
    pub fn import_unencoded(&self, name: &str, replica: &[u8]) -> Result<DatasetInfo> {
        let tree = Tree::build(replica);
        let root = tree.root(&replica[..replica.len().min(GROUP * LEAF)]);
        let dir = self.folder(&root);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        for (f, bytes) in [
            ("replica", replica.to_vec()),
            ("replica.tree", tree.encode()),
            ("plain.tree", tree.encode()),
        ] {
            std::fs::write(dir.join(f), bytes).map_err(|e| io(&dir, e))?;
        }
        let info = DatasetInfo {
            name: name.to_owned(),
            size: replica.len() as u64,
            root: hex::encode(root),
            replica_root: hex::encode(root),
            created_unix: 0,
            withdrawn_at_ms: None,
        };
        let v = serde_json::to_vec(&info).map_err(|e| Error::Invalid(e.to_string()))?;
        self.inner.store.insert(DATASETS, &root, &v)?;
        self.bump();
        Ok(info)
    }

    /// The node database.
    pub fn store(&self) -> SledStore {
        self.inner.store.clone()
    }

    /// The node key (signs announcements and attestations).
    pub fn key(&self) -> &Keypair {
        &self.inner.key
    }

    /// Encoding cost (Argon2d passes per 1 MiB sector).
    pub fn cost(&self) -> u32 {
        self.inner.cost
    }
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Invalid(format!("{}: {e}", p.display()))
}

fn corrupt(what: &str, e: impl ToString) -> Error {
    Error::Corrupt {
        tree: what.to_owned(),
        why: e.to_string(),
    }
}
