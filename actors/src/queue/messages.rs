//! A topic's stored messages: sequence numbers `first_seq..next_seq`, held in
//! sled as [`chunk`]s, the newest ones in memory until their chunk is written.
//!
//! - A publish appends to the open chunk in memory; the write-ahead log makes
//!   it durable (confirm mode `always`). The open chunk goes to sled as one
//!   value when it is full, and before every sled flush (the checkpoint that
//!   lets the log start over), so a message is always in the log or in sled.
//! - Deletion moves a floor: `first_seq` is stored in `q/<topic>/meta`, and a
//!   chunk is removed once the floor passes its last message. Messages below
//!   the floor when their chunk is written are left out of it, so a consumer
//!   that keeps up means message bodies never reach sled at all.
//! - After a crash, sled holds a prefix of its writes: the log's records at or
//!   past [`Messages::stored_end`] are put back (see `super::replay`).

use std::collections::{BTreeMap, VecDeque};

use super::chunk::{self, corrupt};
use super::envelope::Envelope;
use crate::store::{SledStore, Store};
use crate::Result;

const KEY_FLOOR: &[u8] = b"floor";

/// No sequence number reaches this (2^62: a million messages a second for
/// 146,000 years); a stored one past it is corruption, refused before it
/// can overflow.
pub(crate) const MAX_SEQ: u64 = 1 << 62;

pub(crate) fn msg_tree(topic: &str) -> String {
    format!("q/{topic}/msg")
}

pub(crate) fn meta_tree(topic: &str) -> String {
    format!("q/{topic}/meta")
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

#[derive(Debug)]
pub(crate) struct Messages {
    tree: String,
    meta: String,
    /// The first sequence number still stored (the floor).
    pub(crate) first_seq: u64,
    /// The next sequence number to assign.
    pub(crate) next_seq: u64,
    /// Messages stored.
    pub(crate) count: u64,
    /// Bytes of their envelopes.
    pub(crate) bytes: u64,
    /// Envelope size per sequence number from `first_seq`; 0 where nothing is
    /// stored (a tail lost by a crash in confirm mode `none`).
    sizes: VecDeque<u32>,
    /// Chunks in sled: first sequence number -> messages.
    chunks: BTreeMap<u64, u32>,
    /// Sequence number of `open[0]`.
    open_first: u64,
    /// Encoded envelopes not yet in sled.
    open: Vec<Vec<u8>>,
    open_bytes: usize,
    /// The chunk read last (consumers read in order).
    cached: Option<(u64, Vec<u8>)>,
    /// Where the chunks written to sled end.
    stored_end: u64,
}

impl Messages {
    /// Loads the chunk index and the floor of `topic`; chunks wholly below the
    /// floor (left by a crash between the two writes) are removed.
    pub(crate) fn load(store: &SledStore, topic: &str) -> Result<Self> {
        let tree = msg_tree(topic);
        let meta = meta_tree(topic);
        let floor = match store.get(&meta, KEY_FLOOR)? {
            None => 0,
            Some(v) => be_u64(&v)
                .filter(|f| v.len() == 8 && *f <= MAX_SEQ)
                .ok_or_else(|| {
                    corrupt(
                        &meta,
                        format!("floor is {v:02x?}; a u64 sequence number up to 2^62 is expected"),
                    )
                })?,
        };
        let mut chunks = BTreeMap::new();
        let mut lens: Vec<(u64, Vec<u32>)> = Vec::new();
        let mut garbage = Vec::new();
        let mut from = Vec::new();
        loop {
            let part = store.range_from(&tree, &from, 1024)?;
            let Some(last) = part.last() else { break };
            from = last.0.clone();
            from.push(0);
            for (k, v) in &part {
                let seq = be_u64(k).filter(|_| k.len() == 8).ok_or_else(|| {
                    corrupt(
                        &tree,
                        format!("key of {} bytes; keys are u64 sequence numbers", k.len()),
                    )
                })?;
                let l = chunk::lengths(&tree, v)?;
                if seq > MAX_SEQ {
                    return Err(corrupt(
                        &tree,
                        format!("key {seq} is past the largest sequence number, 2^62"),
                    ));
                }
                if seq + l.len() as u64 <= floor {
                    garbage.push(k.clone());
                    continue;
                }
                chunks.insert(seq, l.len() as u32);
                lens.push((seq, l));
            }
        }
        for k in garbage {
            store.remove(&tree, &k)?;
        }
        let stored_end = lens.last().map(|(s, l)| s + l.len() as u64).unwrap_or(0);
        let first_seq = lens.first().map(|(s, _)| (*s).max(floor)).unwrap_or(floor);
        let mut m = Self {
            tree,
            meta,
            first_seq,
            next_seq: first_seq,
            count: 0,
            bytes: 0,
            sizes: VecDeque::new(),
            chunks,
            open_first: 0,
            open: Vec::new(),
            open_bytes: 0,
            cached: None,
            stored_end,
        };
        for (seq, l) in lens {
            for (i, len) in l.into_iter().enumerate() {
                let s = seq + i as u64;
                if s < m.first_seq {
                    continue;
                }
                m.extend_to(s);
                m.sizes.push_back(len);
                m.next_seq = s + 1;
                m.count += 1;
                m.bytes += u64::from(len);
            }
        }
        Ok(m)
    }

    /// Where the log's records must be put back from after a crash: every
    /// message at or past this is in neither a chunk in sled nor below the floor.
    pub(crate) fn stored_end(&self) -> u64 {
        self.stored_end.max(self.first_seq)
    }

    /// Moves `next_seq` up to `next` (a group read past what sled kept: those
    /// sequence numbers hold nothing). The caller bounds `next`.
    pub(crate) fn extend_to(&mut self, next: u64) {
        while self.next_seq < next {
            self.sizes.push_back(0);
            self.next_seq += 1;
        }
    }

    /// Appends the encoded envelope of sequence number `next_seq`; writes the
    /// open chunk when it is full (a failed write is retried by the next one).
    pub(crate) fn append(&mut self, store: &SledStore, bytes: Vec<u8>) {
        if self.count == 0 {
            self.sizes.clear();
            self.first_seq = self.next_seq;
        }
        if self.open.is_empty() {
            self.open_first = self.next_seq;
        }
        self.sizes.push_back(bytes.len() as u32);
        self.next_seq += 1;
        self.count += 1;
        self.bytes += bytes.len() as u64;
        self.open_bytes += bytes.len();
        self.open.push(bytes);
        if self.open.len() >= chunk::MAX_MESSAGES || self.open_bytes >= chunk::MAX_BYTES {
            if let Err(e) = self.seal(store) {
                tracing::error!(tree = %self.tree, error = %e, "cannot write a chunk of messages; they stay in the log and memory, retried with the next");
            }
        }
    }

    /// Writes the open chunk (less what is already below the floor) to sled,
    /// as values of at most [`chunk::MAX_MESSAGES`] messages: after failed
    /// writes the open chunk holds more than one value may (its count is a u16).
    pub(crate) fn seal(&mut self, store: &SledStore) -> Result<()> {
        while !self.open.is_empty() {
            let below = (self.first_seq.saturating_sub(self.open_first) as usize).min(self.open.len());
            let n = if below > 0 {
                below
            } else {
                let mut bytes = 0;
                let n = self
                    .open
                    .iter()
                    .take(chunk::MAX_MESSAGES)
                    .take_while(|r| {
                        let fits = bytes < chunk::MAX_BYTES;
                        bytes += r.len();
                        fits
                    })
                    .count();
                store.insert(
                    &self.tree,
                    &self.open_first.to_be_bytes(),
                    &chunk::encode(&self.open[..n]),
                )?;
                self.chunks.insert(self.open_first, n as u32);
                self.stored_end = self.open_first + n as u64;
                n
            };
            if n == self.open.len() {
                self.open.clear();
                self.open_bytes = 0;
            } else {
                self.open_bytes -= self.open.drain(..n).map(|r| r.len()).sum::<usize>();
                self.open_first += n as u64;
            }
        }
        Ok(())
    }

    /// Accounts for a one-message value the caller wrote at `next_seq` in a
    /// transaction of its own (dead-lettering, replay); seal first.
    pub(crate) fn adopt_written(&mut self, seq: u64, len: usize) {
        debug_assert!(self.open.is_empty() && seq == self.next_seq);
        if self.count == 0 {
            self.sizes.clear();
            self.first_seq = seq;
        }
        self.sizes.push_back(len as u32);
        self.chunks.insert(seq, 1);
        self.stored_end = seq + 1;
        self.next_seq = seq + 1;
        self.count += 1;
        self.bytes += len as u64;
    }

    /// The message `seq`, if stored.
    pub(crate) fn get(&mut self, store: &SledStore, seq: u64) -> Result<Option<Envelope>> {
        if seq < self.first_seq || seq >= self.next_seq || self.sizes[(seq - self.first_seq) as usize] == 0 {
            return Ok(None);
        }
        if !self.open.is_empty() && seq >= self.open_first {
            let r = &self.open[(seq - self.open_first) as usize];
            return Envelope::decode(&self.tree, r).map(Some);
        }
        let Some((&first, &n)) = self.chunks.range(..=seq).next_back() else {
            return Ok(None);
        };
        if seq >= first + u64::from(n) {
            return Ok(None);
        }
        if self.cached.as_ref().map(|c| c.0) != Some(first) {
            let Some(v) = store.get(&self.tree, &first.to_be_bytes())? else {
                return Ok(None);
            };
            self.cached = Some((first, v));
        }
        let v = &self.cached.as_ref().expect("just set").1;
        Envelope::decode(&self.tree, chunk::message(&self.tree, v, (seq - first) as usize)?).map(Some)
    }

    /// The floor's key, for a caller that moves it inside a transaction of its own.
    pub(crate) fn floor_key(&self) -> (&str, &'static [u8]) {
        (&self.meta, KEY_FLOOR)
    }

    /// Deletes every message below `to`: moves the floor (stored unless the
    /// caller's transaction did) and removes the chunks it passed.
    pub(crate) fn drop_front(&mut self, store: &SledStore, to: u64, store_floor: bool) -> Result<()> {
        let to = to.min(self.next_seq);
        if to <= self.first_seq {
            return Ok(());
        }
        if store_floor {
            store.insert(&self.meta, KEY_FLOOR, &to.to_be_bytes())?;
        }
        for _ in self.first_seq..to {
            let s = u64::from(self.sizes.pop_front().unwrap_or(0));
            if s > 0 {
                self.count -= 1;
                self.bytes -= s;
            }
        }
        self.first_seq = to;
        let gone: Vec<u64> = self
            .chunks
            .range(..to)
            .filter(|(k, n)| **k + u64::from(**n) <= to)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            store.remove(&self.tree, &k.to_be_bytes())?;
            self.chunks.remove(&k);
            if self.cached.as_ref().is_some_and(|c| c.0 == k) {
                self.cached = None;
            }
        }
        Ok(())
    }

    /// Where the floor must go so that at most `max_msgs` messages and
    /// `max_bytes` bytes remain (0: no limit).
    pub(crate) fn floor_for_limits(&self, max_msgs: u64, max_bytes: u64) -> u64 {
        let (mut count, mut bytes, mut to) = (self.count, self.bytes, self.first_seq);
        for &s in &self.sizes {
            let over = (max_msgs > 0 && count > max_msgs) || (max_bytes > 0 && bytes > max_bytes);
            if !over || count == 0 {
                break;
            }
            if s > 0 {
                count -= 1;
                bytes -= u64::from(s);
            }
            to += 1;
        }
        to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_chunk_grown_by_failed_writes_is_sealed_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let mut m = Messages::load(&store, "t").unwrap();
        // What the open chunk holds after its writes failed for a while:
        // more messages than one chunk's u16 count.
        let n = u64::from(u16::MAX) + 100;
        m.open_first = 0;
        for seq in 0..n {
            let r = seq.to_be_bytes().to_vec();
            m.sizes.push_back(r.len() as u32);
            m.open_bytes += r.len();
            m.open.push(r);
        }
        m.next_seq = n;
        m.count = n;
        m.bytes = 8 * n;
        m.seal(&store).unwrap();
        assert!(m.open.is_empty() && m.open_bytes == 0);
        assert_eq!(m.stored_end(), n);

        let back = Messages::load(&store, "t").unwrap();
        assert_eq!((back.first_seq, back.next_seq, back.count), (0, n, n));
        assert!(back.chunks.values().all(|&c| c as usize <= chunk::MAX_MESSAGES));
        assert_eq!(back.chunks.values().map(|&c| u64::from(c)).sum::<u64>(), n);
    }
}
