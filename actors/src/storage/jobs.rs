//! Ingest jobs: what `storage_jobs` and `storage_job` show of uploads and
//! their encoding. A job is the upload's id; it goes `uploading` (the client
//! sends chunks) -> `encoding` (the node alone: the client may go away) ->
//! `done` or `failed`, or `aborted` (by the client, or idle too long).
//! Finished jobs are kept for `vigilctl storage jobs` (the newest 32).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::DatasetInfo;

/// Finished jobs kept.
const KEEP_FINISHED: usize = 32;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The client is sending chunks.
    Uploading,
    /// The node is encoding the replica.
    Encoding,
    /// Stored.
    Done,
    /// Encoding failed; nothing stored.
    Failed,
    /// Aborted by the client, or idle past the limit; nothing stored.
    Aborted,
}

/// A job as listed.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// The job (= upload) id.
    pub job: u64,
    /// Dataset name.
    pub name: String,
    /// Bytes in all.
    pub size: u64,
    /// Where it is.
    pub phase: Phase,
    /// Bytes received.
    pub uploaded: u64,
    /// Bytes encoded.
    pub encoded: u64,
    /// Upload time, ms (once the last chunk arrived).
    pub upload_ms: Option<u64>,
    /// Encoding time so far or in all, ms.
    pub encode_ms: Option<u64>,
    /// The stored dataset, once done.
    pub dataset: Option<DatasetInfo>,
    /// Why it failed or was aborted.
    pub error: Option<String>,
}

#[derive(Debug)]
struct Job {
    info: JobInfo,
    started: Instant,
    last_chunk: Instant,
    encode_started: Option<Instant>,
    encoded: Arc<AtomicU64>,
}

/// The jobs of one storage.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    map: BTreeMap<u64, Job>,
}

impl Jobs {
    pub(super) fn begin(&mut self, job: u64, name: &str, size: u64) {
        let now = Instant::now();
        self.map.insert(
            job,
            Job {
                info: JobInfo {
                    job,
                    name: name.to_owned(),
                    size,
                    phase: Phase::Uploading,
                    uploaded: 0,
                    encoded: 0,
                    upload_ms: None,
                    encode_ms: None,
                    dataset: None,
                    error: None,
                },
                started: now,
                last_chunk: now,
                encode_started: None,
                encoded: Arc::default(),
            },
        );
    }

    pub(super) fn uploaded(&mut self, job: u64, bytes: u64) {
        if let Some(j) = self.map.get_mut(&job) {
            j.info.uploaded = bytes;
            j.last_chunk = Instant::now();
        }
    }

    /// Marks encoding; the counter the encoder advances.
    pub(super) fn encoding(&mut self, job: u64) -> Arc<AtomicU64> {
        match self.map.get_mut(&job) {
            Some(j) => {
                j.info.phase = Phase::Encoding;
                j.info.upload_ms = Some(j.started.elapsed().as_millis() as u64);
                j.encode_started = Some(Instant::now());
                j.encoded.clone()
            }
            None => Arc::default(),
        }
    }

    pub(super) fn end(
        &mut self,
        job: u64,
        phase: Phase,
        dataset: Option<DatasetInfo>,
        error: Option<String>,
    ) {
        if let Some(j) = self.map.get_mut(&job) {
            j.info.phase = phase;
            j.info.dataset = dataset;
            j.info.error = error;
            j.info.encoded = j.encoded.load(Ordering::Relaxed);
            j.info.encode_ms = j.encode_started.map(|t| t.elapsed().as_millis() as u64);
            j.encode_started = None;
        }
        let finished: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, j)| !matches!(j.info.phase, Phase::Uploading | Phase::Encoding))
            .map(|(id, _)| *id)
            .collect();
        if finished.len() > KEEP_FINISHED {
            // Oldest first by start time.
            let mut by_age: Vec<(Instant, u64)> =
                finished.iter().map(|id| (self.map[id].started, *id)).collect();
            by_age.sort();
            for (_, id) in by_age.iter().take(finished.len() - KEEP_FINISHED) {
                self.map.remove(id);
            }
        }
    }

    /// Uploads with no chunk for `idle`, oldest first.
    pub(super) fn idle_uploads(&self, idle: std::time::Duration) -> Vec<u64> {
        self.map
            .iter()
            .filter(|(_, j)| j.info.phase == Phase::Uploading && j.last_chunk.elapsed() >= idle)
            .map(|(id, _)| *id)
            .collect()
    }

    fn snapshot(j: &Job) -> JobInfo {
        let mut info = j.info.clone();
        if info.phase == Phase::Encoding {
            info.encoded = j.encoded.load(Ordering::Relaxed);
            info.encode_ms = j.encode_started.map(|t| t.elapsed().as_millis() as u64);
        }
        info
    }

    pub(super) fn get(&self, job: u64) -> Option<JobInfo> {
        self.map.get(&job).map(Self::snapshot)
    }

    pub(super) fn list(&self) -> Vec<JobInfo> {
        let mut v: Vec<(Instant, JobInfo)> = self
            .map
            .values()
            .map(|j| (j.started, Self::snapshot(j)))
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v.into_iter().map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_moves_through_its_phases_and_old_finished_ones_go() {
        let mut j = Jobs::default();
        j.begin(1, "a", 100);
        j.uploaded(1, 60);
        assert_eq!(j.get(1).unwrap().uploaded, 60);
        let counter = j.encoding(1);
        counter.store(40, Ordering::Relaxed);
        let now = j.get(1).unwrap();
        assert_eq!((now.phase, now.encoded), (Phase::Encoding, 40));
        assert!(now.upload_ms.is_some());
        counter.store(100, Ordering::Relaxed);
        j.end(1, Phase::Done, None, None);
        assert_eq!(j.get(1).unwrap().encoded, 100);
        for id in 2..50 {
            j.begin(id, "x", 1);
            j.end(id, Phase::Aborted, None, Some("client went away".into()));
        }
        assert_eq!(j.list().len(), KEEP_FINISHED);
        assert!(j.get(1).is_none(), "the oldest finished job went first");
        j.begin(99, "idle", 1);
        assert_eq!(j.idle_uploads(std::time::Duration::ZERO), vec![99]);
    }
}
