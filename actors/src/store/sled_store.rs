use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{Batch, Store};
use crate::{Error, Result};

/// [`Store`] on a sled database.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    /// sled's log file, for the `fdatasync` sled itself does not do (below).
    log: std::sync::Arc<std::fs::File>,
    path: std::path::PathBuf,
    /// Tests: writes that still succeed before every write fails (negative: never fail).
    #[cfg(test)]
    writes_left: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl SledStore {
    /// Opens (or creates) the database in `path`.
    pub fn open(path: &Path, cache_capacity_bytes: u64, flush_every_ms: Option<u64>) -> Result<Self> {
        // sled's background flusher of a handle dropped a moment ago may still
        // hold the lock: retry briefly before calling it another process.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match Self::open_once(path, cache_capacity_bytes, flush_every_ms) {
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path, cache_capacity_bytes: u64, flush_every_ms: Option<u64>) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(flush_every_ms)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
                {
                    Error::Locked {
                        path: path.to_owned(),
                    }
                }
                other => Error::Sled(other),
            })?;
        let log = std::fs::File::open(path.join("db")).map_err(|e| Error::Sled(e.into()))?;
        Ok(Self {
            db,
            log: std::sync::Arc::new(log),
            path: path.to_owned(),
            #[cfg(test)]
            writes_left: std::sync::Arc::new((-1).into()),
        })
    }

    /// Tests: after `n` more writes (insert, remove, batch, flush) every write of
    /// this store and its clones fails, as on a disk that stopped taking
    /// them; `-1` heals it.
    #[cfg(test)]
    pub(crate) fn fail_writes_after(&self, n: i64) {
        self.writes_left.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Tests: whether this write is one that fails.
    fn injected_failure(&self) -> Result<()> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            // One write takes one of those left; at 0 every write fails.
            let took = self
                .writes_left
                .fetch_update(SeqCst, SeqCst, |n| (n > 0).then(|| n - 1));
            if took == Err(0) {
                return Err(Error::Sled(sled::Error::Io(std::io::Error::other(
                    "write failed (injected by a test)",
                ))));
            }
        }
        Ok(())
    }

    /// The database folder (other logs of the node's store live in it too).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database folder takes on disk: sled's files and the
    /// store's own logs beside them. Files that vanish during the walk (a
    /// segment sled just removed) count as 0.
    pub fn size_on_disk(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.path)
    }

    fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }
}

impl Store for SledStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.injected_failure()?;
        self.tree(tree)?.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<bool> {
        self.injected_failure()?;
        Ok(self.tree(tree)?.remove(key)?.is_some())
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn range_from(&self, tree: &str, start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(tree)?
            .range(start..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn range_back(&self, tree: &str, before: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.tree(tree)?;
        let iter = match before {
            Some(end) => t.range(..end),
            None => t.iter(),
        };
        iter.rev()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn size(&self, tree: &str) -> Result<(usize, u64)> {
        let mut out = (0usize, 0u64);
        for kv in self.tree(tree)?.iter() {
            let (k, v) = kv?;
            out.0 += 1;
            out.1 += (k.len() + v.len()) as u64;
        }
        Ok(out)
    }

    fn last(&self, tree: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.tree(tree)?.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .collect()
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        let Some(first) = batch.0.first() else {
            return Ok(());
        };
        self.injected_failure()?;
        if batch.0.iter().all(|w| w.tree == first.tree) {
            // One tree: sled's batch is atomic and much cheaper than a transaction.
            let mut b = sled::Batch::default();
            for w in &batch.0 {
                match &w.value {
                    Some(v) => b.insert(w.key.as_slice(), v.as_slice()),
                    None => b.remove(w.key.as_slice()),
                }
            }
            return Ok(self.tree(&first.tree)?.apply_batch(b)?);
        }
        let mut names: Vec<&str> = batch.0.iter().map(|w| w.tree.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let trees = names.iter().map(|n| self.tree(n)).collect::<Result<Vec<_>>>()?;
        trees
            .as_slice()
            .transaction(|txs| {
                for w in &batch.0 {
                    let i = names
                        .binary_search(&w.tree.as_str())
                        .map_err(|_| ConflictableTransactionError::Abort(()))?;
                    match &w.value {
                        Some(v) => txs[i].insert(w.key.as_slice(), v.as_slice())?,
                        None => txs[i].remove(w.key.as_slice())?,
                    };
                }
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(s) => Error::Sled(s),
                TransactionError::Abort(()) => Error::Corrupt {
                    tree: "(batch)".into(),
                    why: "write to a tree missing from the batch".into(),
                },
            })
    }

    /// Durable against power loss, not only against a crash: sled's `flush`
    /// ends its log writes with `sync_file_range`, which waits for the pages
    /// to reach the device but neither flushes the device's write cache nor
    /// the file's metadata. The `fdatasync` after it does both (what Redis's
    /// `appendfsync always` does), so a confirmed message survives a power cut.
    fn flush(&self) -> Result<usize> {
        self.injected_failure()?;
        let n = self.db.flush()?;
        self.log.sync_data().map_err(|e| Error::Sled(e.into()))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_atomic_and_durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20, None).unwrap();
            s.insert("a", b"k0", b"old").unwrap();
            let mut b = Batch::default();
            b.insert("a", b"k1", b"v1".to_vec())
                .insert("b", b"k2", b"v2".to_vec())
                .remove("a", b"k0");
            s.apply(&b).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        assert_eq!(s.get("a", b"k0").unwrap(), None);
        assert_eq!(s.get("a", b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
        assert_eq!(s.scan_prefix("b", b"k").unwrap().len(), 1);
        assert!(s.remove("b", b"k2").unwrap());
        assert!(!s.remove("b", b"k2").unwrap());
    }

    #[test]
    fn empty_and_single_tree_batches_apply() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        s.apply(&Batch::default()).unwrap();
        let mut b = Batch::default();
        b.insert("a", b"k", b"v".to_vec()).remove("a", b"gone");
        s.apply(&b).unwrap();
        assert_eq!(s.get("a", b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let err = SledStore::open(dir.path(), 1 << 20, None).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
    }
}
