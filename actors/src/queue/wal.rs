//! The queue's write-ahead log: a confirm costs one `write` and one
//! `fdatasync` of this file, not a sled flush.
//!
//! A publish appends its message to its topic's open chunk in memory (see
//! `messages.rs`) and queues the message's encoded envelope for this log; the
//! flusher writes every record queued since its last pass and `fdatasync`s
//! once for all of them (group commit), then confirms. About once a second,
//! when the file is full, on a full flush and at shutdown, it writes the open
//! chunks to sled, flushes sled (with an `fdatasync` of sled's log) and starts
//! the log over: every record in it was in sled before that flush began.
//!
//! The file is preallocated (zeros written once) and overwritten from the
//! start after each checkpoint: an `fdatasync` of blocks already allocated
//! and written needs no journal commit, which halves its latency on ext4
//! (docs/benchmarks.md). Each record carries the log's generation, bumped at
//! every restart of the log, inside its check, so the reader stops at the
//! first zero, torn, corrupt or older-generation record.
//!
//! On open, records past what sled holds durably are put back: for each
//! topic, those at or after where its chunks in sled end (or its stored
//! floor, if higher). Sled recovers a prefix of its log and a topic's chunks
//! are written in order, so what it lacks is a suffix of each topic; a
//! group's cursor may be ahead of it (cursors are written when a message is
//! delivered, its chunk later), so cursors do not bound the replay. A torn
//! record belongs to a write whose `fdatasync` never returned, so no confirm
//! was sent for it.
//!
//! Writes bypass the page cache (`O_DIRECT`) where the filesystem allows it:
//! whole 4 KiB blocks from an aligned buffer, the last partial block kept in
//! memory and written again, with the same leading bytes, by the next pass
//! (as PostgreSQL rewrites a WAL page). The `fdatasync` after each write still
//! flushes the device's cache. On this machine a 4 KiB write + sync takes
//! 122–124 µs and 50–52 µs of CPU this way against 131–138 µs and 57 µs
//! through the page cache (`vigil-bench log-sync`, docs/benchmarks.md).
//! Where `O_DIRECT` is refused (tmpfs, some FUSE filesystems) the log writes
//! through the page cache instead.
//!
//! Record: `len: u32 BE ‖ generation: u32 BE ‖ check: CRC-32 (IEEE, BE) of
//! generation ‖ body ‖ body` (earlier builds wrote the first 4 bytes of
//! BLAKE3 there, still accepted when reading); the body is
//! [`Envelope::encode`](super::Envelope::encode) (topic and sequence inside).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name inside the sled folder.
pub(crate) const FILE: &str = "vigil-queue.wal";
/// Preallocated size; a pass that does not fit becomes a checkpoint.
pub(crate) const SIZE: u64 = 8 << 20;
const HEAD: usize = 12;
/// Direct I/O block: offsets, lengths and buffer addresses are multiples of it.
const BLOCK: usize = 4096;

/// A byte buffer whose data starts on a [`BLOCK`] boundary (for `O_DIRECT`).
#[derive(Debug, Default)]
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    /// Empties the buffer, with room for `cap` bytes.
    fn reset(&mut self, cap: usize) {
        // Room for `cap` rounded up to whole blocks (see `pad`).
        if self.raw.len() < self.start + cap.next_multiple_of(BLOCK) || self.raw.is_empty() {
            self.raw = vec![0; cap.next_multiple_of(BLOCK) + BLOCK];
            self.start = self.raw.as_ptr().align_offset(BLOCK);
        }
        self.len = 0;
    }
    fn push(&mut self, bytes: &[u8]) {
        let at = self.start + self.len;
        self.raw[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
    /// Zero-fills to the next block boundary.
    fn pad(&mut self) {
        let to = self.len.next_multiple_of(BLOCK);
        self.raw[self.start + self.len..self.start + to].fill(0);
        self.len = to;
    }
    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// CRC-32 of generation and body: cheap (carry-less multiply instructions)
/// and what a torn-write check needs; BLAKE3 here was 4% of the node's CPU
/// at 16 pipelining publishers.
fn check(gen: u32, body: &[u8]) -> [u8; 4] {
    let mut h = crc32fast::Hasher::new();
    h.update(&gen.to_be_bytes());
    h.update(body);
    h.finalize().to_be_bytes()
}

/// The check earlier builds wrote (the first 4 bytes of BLAKE3): still
/// accepted when reading, so a log left by a crash of one replays in this one.
fn check_before_crc(gen: u32, body: &[u8]) -> [u8; 4] {
    let mut h = blake3::Hasher::new();
    h.update(&gen.to_be_bytes());
    h.update(body);
    let mut out = [0; 4];
    out.copy_from_slice(&h.finalize().as_bytes()[..4]);
    out
}

/// The open log.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    gen: u32,
    /// Bytes written in this generation.
    len: u64,
    /// `file` was opened with `O_DIRECT`.
    direct: bool,
    /// The written bytes of the block that holds the end of the log.
    tail: Vec<u8>,
    buf: Aligned,
}

impl Wal {
    /// Opens the log in the sled folder `dir`, creating and preallocating it
    /// (zeros written and synced) when it is missing or short.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        let have = file.metadata()?.len();
        if have < SIZE {
            let zeros = vec![0u8; 1 << 20];
            let mut at = have;
            while at < SIZE {
                let n = (SIZE - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
        }
        let (file, direct) = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(f) => (f, true),
            Err(_) => (file, false),
        };
        let mut w = Self {
            file,
            path,
            gen: 0,
            len: 0,
            direct,
            tail: Vec::with_capacity(BLOCK),
            buf: Aligned::default(),
        };
        // The next generation differs from the one on disk, whatever follows it.
        w.gen = w.read()?.2.wrapping_add(1);
        Ok(w)
    }

    /// Writes `records` (already framed by [`Wal::frame`]); false when they
    /// do not fit (then checkpoint instead).
    pub(crate) fn append(&mut self, records: &[u8]) -> std::io::Result<bool> {
        if self.len + records.len() as u64 > SIZE {
            return Ok(false);
        }
        // From the start of the block holding the end of the log: its written
        // bytes again, the new records, zeros to the block's end.
        let from = self.len - self.tail.len() as u64;
        self.buf.reset(self.tail.len() + records.len());
        self.buf.push(&self.tail);
        self.buf.push(records);
        let end = self.buf.len;
        self.buf.pad();
        self.write_buf(from)?;
        self.len += records.len() as u64;
        let keep = end % BLOCK;
        self.tail.clear();
        self.tail.extend_from_slice(&self.buf.bytes()[end - keep..end]);
        Ok(true)
    }

    /// Writes the aligned buffer at `at`; if the filesystem refuses direct
    /// I/O at the first write, reopens through the page cache and writes again.
    fn write_buf(&mut self, at: u64) -> std::io::Result<()> {
        match self.file.write_all_at(self.buf.bytes(), at) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(error = %e, "queue log: direct I/O refused, writing through the page cache");
                self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
                self.direct = false;
                self.file.write_all_at(self.buf.bytes(), at)
            }
            r => r,
        }
    }

    /// Frames an encoded envelope as one record of this log.
    pub(crate) fn frame(&self, body: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.gen.to_be_bytes());
        out.extend_from_slice(&check(self.gen, body));
        out.extend_from_slice(body);
    }

    /// Makes every written record durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes written in this generation.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Starts the log over: call only once sled holds every record in it
    /// durably. The next generation's records overwrite the old ones (a
    /// reader stops at the first old one); until one is written, an empty
    /// record of the new generation at the start tells a reader (the next
    /// start after a clean stop) that there is nothing to put back. It is not
    /// synced: if it is lost, replaying records sled holds changes nothing.
    pub(crate) fn restart(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.gen = self.gen.wrapping_add(1);
            self.len = 0;
            self.tail.clear();
            let mut empty = [0u8; HEAD];
            empty[4..8].copy_from_slice(&self.gen.to_be_bytes());
            self.buf.reset(BLOCK);
            self.buf.push(&empty);
            self.buf.pad();
            self.write_buf(0)?;
        }
        Ok(())
    }

    /// The records of the generation at the start of the file, why reading
    /// stopped before the end (if it did), and that generation.
    pub(crate) fn read(&self) -> std::io::Result<(Vec<Vec<u8>>, Option<String>, u32)> {
        let mut bytes = Vec::new();
        File::open(&self.path)?.read_to_end(&mut bytes)?;
        Ok(parse(&bytes))
    }
}

fn parse(bytes: &[u8]) -> (Vec<Vec<u8>>, Option<String>, u32) {
    let mut out = Vec::new();
    let mut gen = None;
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + HEAD) else {
            return (
                out,
                Some(format!("torn record header at byte {at}")),
                gen.unwrap_or(0),
            );
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let g = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 {
            // Preallocated zeros: the end of what was written.
            return (out, None, gen.unwrap_or(g));
        }
        if gen.is_some_and(|cur| cur != g) {
            // An older generation's record: the end of this one.
            return (out, None, gen.unwrap_or(g));
        }
        let Some(body) = bytes.get(at + HEAD..at + HEAD + len) else {
            return (out, Some(format!("torn record at byte {at}")), gen.unwrap_or(g));
        };
        if check(g, body) != head[8..12] && check_before_crc(g, body) != head[8..12] {
            return (
                out,
                Some(format!("record at byte {at} fails its check")),
                gen.unwrap_or(g),
            );
        }
        gen = Some(g);
        out.push(body.to_vec());
        at += HEAD + len;
    }
    (out, None, gen.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(w: &Wal, bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            w.frame(b, &mut out);
        }
        out
    }

    #[test]
    fn records_checked_the_earlier_way_still_read_back() {
        let body = b"written by an earlier build".to_vec();
        let mut old = Vec::new();
        old.extend_from_slice(&(body.len() as u32).to_be_bytes());
        old.extend_from_slice(&7u32.to_be_bytes());
        old.extend_from_slice(&check_before_crc(7, &body));
        old.extend_from_slice(&body);
        assert_eq!(parse(&old), (vec![body.clone()], None, 7));
        old[12] ^= 1;
        assert!(parse(&old).1.unwrap().contains("fails its check"));
    }

    #[test]
    fn whole_records_come_back_and_a_torn_corrupt_or_older_record_ends_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), SIZE);
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i + 1; 10 + i as usize]).collect();
        assert!(w.append(&frames(&w, &bodies)).unwrap());
        w.sync().unwrap();
        let (got, why, gen) = w.read().unwrap();
        assert_eq!((got, why), (bodies.clone(), None));
        assert_eq!(gen, w.gen);

        // Every cut of the last record, and a flipped byte in it, lose only that record.
        let all = frames(&w, &bodies);
        let last = all.len() - frames(&w, &bodies[4..]).len();
        for cut in last + 1..all.len() {
            let (got, why, _) = parse(&all[..cut]);
            assert_eq!(got, bodies[..4], "cut at {cut}");
            assert!(why.unwrap().contains("torn"), "cut at {cut}");
        }
        let mut flipped = all.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let (got, why, _) = parse(&flipped);
        assert_eq!(got, bodies[..4]);
        assert!(why.unwrap().contains("fails its check"));

        // A restarted log overwrites from the start; the older records behind
        // the new ones are not read.
        w.restart().unwrap();
        // Nothing to put back until the new generation writes.
        let (got, why, gen) = w.read().unwrap();
        assert_eq!((got.len(), why, gen), (0, None, w.gen));
        assert!(w.append(&frames(&w, &[b"new".to_vec()])).unwrap());
        assert_eq!(w.read().unwrap().0, vec![b"new".to_vec()]);
        // Reopened (a restart of the node): a new generation again.
        let old_gen = w.gen;
        let w2 = Wal::open(dir.path()).unwrap();
        assert_ne!(w2.gen, old_gen);
        assert_eq!(w2.len(), 0);
        // A pass too large for the file is refused (the flusher checkpoints instead).
        let mut w2 = w2;
        assert!(!w2.append(&vec![0; SIZE as usize + 1]).unwrap());
    }

    #[test]
    fn passes_that_end_mid_block_keep_every_earlier_record() {
        // Direct I/O writes whole blocks: each pass rewrites the block that
        // holds the end of the log. Odd sizes put ends everywhere in a block.
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        let mut all = Vec::new();
        let mut size = 1usize;
        for pass in 0..60 {
            let bodies: Vec<Vec<u8>> = (0..pass % 5 + 1)
                .map(|i| {
                    size = (size * 7 + 13) % 5_000 + 1;
                    vec![(pass + i) as u8 | 1; size]
                })
                .collect();
            assert!(w.append(&frames(&w, &bodies)).unwrap());
            all.extend(bodies);
            let (got, why, _) = w.read().unwrap();
            assert_eq!(why, None, "pass {pass}");
            assert_eq!(got, all, "pass {pass}");
        }
        w.sync().unwrap();
        // The next generation starts at byte 0 and hides the old records.
        w.restart().unwrap();
        assert!(w.read().unwrap().0.is_empty());
        assert!(w.append(&frames(&w, &[vec![9; 5_000]])).unwrap());
        assert_eq!(w.read().unwrap().0, vec![vec![9; 5_000]]);
    }
}
