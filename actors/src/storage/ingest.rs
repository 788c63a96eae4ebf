//! Uploads: `begin` -> `chunk`* -> `finish`. The plaintext streams into
//! `tmp/<id>/plain` (hashed as it arrives); `finish` encodes it sector by
//! sector into `tmp/<id>/replica` with both trees, fsyncs, renames the
//! folder to `<R_p hex>` and only then records the dataset. Any error
//! removes the temporary folder; the upload's file is owned by its entry,
//! so it is closed whichever way the upload ends.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use rand::Rng;
use vigil_protocols::availability::encode::{xor_sectors, SECTOR};
use vigil_protocols::availability::tree::{group_cvs, Tree, GROUP, LEAF};

use super::{io, lock, DatasetInfo, JobInfo, Phase, Storage, DATASETS};
use crate::store::Store;
use crate::{Error, Result};

/// Sectors encoded per batch (memory: 16 MiB at a time).
const BATCH_SECTORS: usize = 16;

#[derive(Debug)]
pub(super) struct Upload {
    name: String,
    size: u64,
    written: u64,
    hasher: blake3::Hasher,
    file: File,
    dir: PathBuf,
    started: Instant,
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.len() <= 128 && name.chars().all(|c| !c.is_control() && c != '/');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "dataset name {name:?}: 1 to 128 printable characters without `/` allowed"
        )))
    }
}

impl Storage {
    /// Starts an upload of `size` bytes; returns its id.
    pub fn put_begin(&self, name: &str, size: u64) -> Result<u64> {
        check_name(name)?;
        if size == 0 || size > self.inner.max_bytes {
            return Err(Error::Invalid(format!(
                "dataset of {size} bytes: 1..={} allowed (storage.max_dataset_mb)",
                self.inner.max_bytes
            )));
        }
        let id: u64 = rand::thread_rng().gen::<u64>() >> 11;
        let dir = self.inner.dir.join("tmp").join(id.to_string());
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let p = dir.join("plain");
        let file = File::create(&p).map_err(|e| io(&p, e))?;
        lock(&self.inner.jobs).begin(id, name, size);
        lock(&self.inner.uploads).insert(
            id,
            Upload {
                name: name.to_owned(),
                size,
                written: 0,
                hasher: blake3::Hasher::new(),
                file,
                dir,
                started: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Appends bytes at `offset` (must be where the upload is).
    pub fn put_chunk(&self, id: u64, offset: u64, bytes: &[u8]) -> Result<u64> {
        let mut ups = lock(&self.inner.uploads);
        let u = ups
            .get_mut(&id)
            .ok_or_else(|| Error::Invalid(format!("no upload {id}: start one with storage_put_begin")))?;
        if offset != u.written {
            return Err(Error::Invalid(format!(
                "chunk at offset {offset}; the upload is at {}",
                u.written
            )));
        }
        if u.written + bytes.len() as u64 > u.size {
            return Err(Error::Invalid(format!(
                "chunk ends at {}, past the announced size {}",
                u.written + bytes.len() as u64,
                u.size
            )));
        }
        if let Err(e) = u.file.write_all(bytes) {
            let u = ups.remove(&id).expect("present");
            let _ = fs::remove_dir_all(&u.dir);
            let why = format!("cannot store the upload (disk full?): {e}; upload {id} aborted");
            lock(&self.inner.jobs).end(id, Phase::Aborted, None, Some(why.clone()));
            return Err(Error::Invalid(why));
        }
        u.hasher.update(bytes);
        u.written += bytes.len() as u64;
        lock(&self.inner.jobs).uploaded(id, u.written);
        Ok(u.written)
    }

    /// Drops an upload and its bytes; `why` goes to its job.
    pub fn put_abort(&self, id: u64, why: &str) -> bool {
        match lock(&self.inner.uploads).remove(&id) {
            Some(u) => {
                let _ = fs::remove_dir_all(&u.dir);
                lock(&self.inner.jobs).end(id, Phase::Aborted, None, Some(why.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Aborts uploads that got no chunk for `idle` (a client that went
    /// away before sending everything); their jobs.
    pub fn expire_uploads(&self, idle: std::time::Duration) -> Vec<JobInfo> {
        let ids = lock(&self.inner.jobs).idle_uploads(idle);
        let why = format!("no chunk for {} s: the client went away", idle.as_secs());
        ids.into_iter()
            .filter(|id| self.put_abort(*id, &why))
            .filter_map(|id| self.job(id))
            .collect()
    }

    /// Checks that upload `id` is complete and marks its job as encoding:
    /// what [`Storage::put_finish`] then does takes no client.
    pub fn put_ready(&self, id: u64) -> Result<JobInfo> {
        {
            let ups = lock(&self.inner.uploads);
            let u = ups
                .get(&id)
                .ok_or_else(|| Error::Invalid(format!("no upload {id}: start one with storage_put_begin")))?;
            if u.written != u.size {
                return Err(Error::Invalid(format!(
                    "upload has {} of {} bytes: send the rest before storage_put_finish",
                    u.written, u.size
                )));
            }
        }
        lock(&self.inner.jobs).encoding(id);
        self.job(id).ok_or_else(|| Error::Invalid(format!("no job {id}")))
    }

    /// Encodes and stores a complete upload (blocking: run it off the async
    /// threads); its job ends done or failed.
    pub fn put_finish(&self, id: u64) -> Result<DatasetInfo> {
        let u = lock(&self.inner.uploads)
            .remove(&id)
            .ok_or_else(|| Error::Invalid(format!("no upload {id}: start one with storage_put_begin")))?;
        let progress = lock(&self.inner.jobs).encoding(id);
        let dir = u.dir.clone();
        let r = self.finish(u, &progress);
        // Whatever happened, the temporary folder goes (renamed away on success).
        let _ = fs::remove_dir_all(&dir);
        let mut jobs = lock(&self.inner.jobs);
        match &r {
            Ok(info) => jobs.end(id, Phase::Done, Some(info.clone()), None),
            Err(e) => jobs.end(id, Phase::Failed, None, Some(e.to_string())),
        }
        r
    }

    /// Job `id`, if known.
    pub fn job(&self, id: u64) -> Option<JobInfo> {
        lock(&self.inner.jobs).get(id)
    }

    /// Every job kept, oldest first.
    pub fn jobs(&self) -> Vec<JobInfo> {
        lock(&self.inner.jobs).list()
    }

    fn finish(&self, u: Upload, progress: &std::sync::atomic::AtomicU64) -> Result<DatasetInfo> {
        if u.written != u.size {
            return Err(Error::Invalid(format!(
                "upload has {} of {} bytes: send the rest before storage_put_finish",
                u.written, u.size
            )));
        }
        u.file.sync_all().map_err(|e| io(&u.dir, e))?;
        drop(u.file);
        let root = *u.hasher.finalize().as_bytes();
        let peer = self.peer_bytes();
        let plain_path = u.dir.join("plain");
        let mut plain = File::open(&plain_path).map_err(|e| io(&plain_path, e))?;
        if plain.metadata().map_err(|e| io(&plain_path, e))?.len() != u.size {
            return Err(Error::Invalid(
                "the uploaded file changed size while being stored".into(),
            ));
        }
        let rep_path = u.dir.join("replica");
        let mut replica = File::create(&rep_path).map_err(|e| io(&rep_path, e))?;
        let (mut plain_groups, mut rep_groups) = (Vec::new(), Vec::new());
        let mut first_plain = Vec::new();
        let mut first_rep = Vec::new();
        let mut offset = 0u64;
        let mut check = blake3::Hasher::new();
        let t0 = Instant::now();
        while offset < u.size {
            let len = ((u.size - offset) as usize).min(BATCH_SECTORS * SECTOR);
            let mut buf = vec![0u8; len];
            plain.read_exact(&mut buf).map_err(|e| io(&plain_path, e))?;
            check.update(&buf);
            plain_groups.extend(group_cvs(offset, &buf));
            if offset == 0 {
                first_plain = buf[..len.min(GROUP * LEAF)].to_vec();
            }
            xor_sectors(&peer, &root, offset / SECTOR as u64, &mut buf, self.inner.cost);
            rep_groups.extend(group_cvs(offset, &buf));
            if offset == 0 {
                first_rep = buf[..len.min(GROUP * LEAF)].to_vec();
            }
            replica
                .write_all(&buf)
                .map_err(|e| Error::Invalid(format!("cannot write the replica (disk full?): {e}")))?;
            offset += len as u64;
            progress.store(offset, std::sync::atomic::Ordering::Relaxed);
        }
        drop(plain);
        if check.finalize().as_bytes() != &root {
            return Err(Error::Invalid(
                "the uploaded file changed while being stored".into(),
            ));
        }
        let plain_tree = Tree::from_groups(u.size, plain_groups);
        let rep_tree = Tree::from_groups(u.size, rep_groups);
        if plain_tree.root(&first_plain) != root {
            return Err(Error::Invalid("internal: plaintext tree does not match R".into()));
        }
        let replica_root = rep_tree.root(&first_rep);
        for (name, t) in [("replica.tree", &rep_tree), ("plain.tree", &plain_tree)] {
            let p = u.dir.join(name);
            let mut f = File::create(&p).map_err(|e| io(&p, e))?;
            f.write_all(&t.encode())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::Invalid(format!("cannot write {} (disk full?): {e}", p.display())))?;
        }
        replica.sync_all().map_err(|e| io(&rep_path, e))?;
        drop(replica);
        let _ = fs::remove_file(&plain_path);
        let dest = self.folder(&replica_root);
        if let Some(d) = self.info(&replica_root)? {
            if d.withdrawn_at_ms.is_some() {
                // Stored again while being withdrawn: keep it after all.
                let _ = fs::remove_dir_all(&u.dir);
                tracing::info!(replica_root = %d.replica_root, "dataset stored again: its withdrawal is cancelled");
                return self.cancel_withdrawal(d);
            }
            return Err(Error::Invalid(format!(
                "this dataset is stored already as {}",
                hex::encode(replica_root)
            )));
        }
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
        }
        fs::rename(&u.dir, &dest).map_err(|e| io(&dest, e))?;
        File::open(&self.inner.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.inner.dir, e))?;
        let info = DatasetInfo {
            name: u.name,
            size: u.size,
            root: hex::encode(root),
            replica_root: hex::encode(replica_root),
            created_unix: crate::clock::unix_secs(),
            withdrawn_at_ms: None,
        };
        let v = serde_json::to_vec(&info).map_err(|e| Error::Invalid(e.to_string()))?;
        self.inner.store.insert(DATASETS, &replica_root, &v)?;
        self.inner.store.flush()?;
        self.bump();
        tracing::info!(
            name = %info.name,
            size = info.size,
            replica_root = %info.replica_root,
            upload_ms = (u.started.elapsed() - t0.elapsed()).as_millis() as u64,
            encode_ms = t0.elapsed().as_millis() as u64,
            "dataset stored"
        );
        Ok(info)
    }
}
