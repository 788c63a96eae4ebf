//! The queue's write-ahead log: a confirm costs one `write` and one
//! `fdatasync` of this file, not a sled flush.
//!
//! A publish inserts its message into sled (memory) first and then appends
//! the message's encoded envelope here; the flusher writes every record queued
//! since its last pass and `fdatasync`s once for all of them (group commit),
//! then confirms. About once a second (and on a full flush or at shutdown) it
//! flushes sled itself, with an `fdatasync` of sled's log, and empties this
//! file: every record in it had reached sled's memory before that flush began.
//!
//! On open, records past what sled holds durably are put back: for each
//! topic, those at or after the next sequence number sled's own state implies
//! (sled recovers a prefix of its log, so a message below it is stored or was
//! removed after being stored). Reading stops at the first torn or corrupt
//! record: it belongs to a write whose `fdatasync` never returned, so no
//! confirm was sent for it.
//!
//! Record: `len: u32 BE ‖ check: 4 bytes (BLAKE3 of the body) ‖ body` where the
//! body is [`Envelope::encode`](super::Envelope::encode) (topic and sequence inside).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// File name inside the sled folder.
pub(crate) const FILE: &str = "vigil-queue.wal";
/// A body larger than this is corrupt (payloads are limited far below it).
const MAX_BODY: usize = 256 << 20;

/// Frames an encoded envelope as one record.
pub(crate) fn record(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&blake3::hash(body).as_bytes()[..4]);
    out.extend_from_slice(body);
    out
}

/// The open log.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Wal {
    /// Opens (creating) the log in the sled folder `dir`, for appending.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, path, len })
    }

    /// Writes queued records (not yet durable).
    pub(crate) fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes every appended record durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Empties the log: call only once sled holds every record in it durably.
    /// Not synced: if the truncation is lost in a crash, replaying records
    /// sled already holds changes nothing.
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }

    /// Every whole record in the log, and why reading stopped early (a torn
    /// or corrupt tail), if it did.
    pub(crate) fn read(&self) -> std::io::Result<(Vec<Vec<u8>>, Option<String>)> {
        let mut bytes = Vec::new();
        File::open(&self.path)?.read_to_end(&mut bytes)?;
        Ok(parse(&bytes))
    }
}

fn parse(bytes: &[u8]) -> (Vec<Vec<u8>>, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return (out, Some(format!("torn record header at byte {at}")));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_BODY {
            return (out, Some(format!("record length {len} at byte {at} is corrupt")));
        }
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            return (out, Some(format!("torn record at byte {at}")));
        };
        if blake3::hash(body).as_bytes()[..4] != head[4..8] {
            return (out, Some(format!("record at byte {at} fails its check")));
        }
        out.push(body.to_vec());
        at += 8 + len;
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_records_come_back_and_a_torn_or_corrupt_tail_stops_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + i as usize]).collect();
        for b in &bodies {
            w.append(&record(b)).unwrap();
        }
        w.sync().unwrap();
        assert_eq!(w.read().unwrap(), (bodies.clone(), None));
        // Reopened: appends go after what is there.
        let mut w = Wal::open(dir.path()).unwrap();
        assert_eq!(w.len(), bodies.iter().map(|b| 8 + b.len() as u64).sum::<u64>());
        let all: Vec<u8> = bodies.iter().flat_map(|b| record(b)).collect();
        // Every cut of the last record, and a flipped byte in it, lose only that record.
        let last = all.len() - record(&bodies[4]).len();
        for cut in last + 1..all.len() {
            let (got, why) = parse(&all[..cut]);
            assert_eq!(got, bodies[..4], "cut at {cut}");
            assert!(why.unwrap().contains("torn"), "cut at {cut}");
        }
        let mut flipped = all.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let (got, why) = parse(&flipped);
        assert_eq!(got, bodies[..4]);
        assert!(why.unwrap().contains("fails its check"));
        w.clear().unwrap();
        assert_eq!(w.read().unwrap(), (vec![], None));
        w.append(&record(b"again")).unwrap();
        assert_eq!(w.read().unwrap().0, vec![b"again".to_vec()]);
    }
}
