//! One durable topic: its messages, consumer groups, leases and retention.
//! Every method runs under the topic's lock (held by the caller).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::chunk::corrupt;
use super::envelope::Envelope;
pub(crate) use super::messages::msg_tree;
use super::messages::{Messages, MAX_SEQ};
use super::{TopicConfig, TopicKind};
use crate::store::{Batch, SledStore, Store};
use crate::{Error, Result};
pub(crate) fn pending_key_of(seq: u64) -> Vec<u8> {
    pending_key(seq)
}
pub(crate) fn group_tree(topic: &str, group: &str) -> String {
    format!("q/{topic}/cursor/{group}")
}
pub(crate) fn dedupe_tree(topic: &str) -> String {
    format!("q/{topic}/dedupe")
}
const KEY_NEXT: &[u8] = b"next";
/// How far past the stored messages a group's cursor may be after a crash
/// (confirm mode `none` loses what sled had not flushed); further is corruption.
const MAX_LOST: u64 = 1 << 24;
const PENDING: u8 = b'p';

fn pending_key(seq: u64) -> Vec<u8> {
    let mut k = vec![PENDING];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Microseconds since the Unix epoch (the queue's clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) count: u32,
    pub(crate) lease_until: Option<Instant>,
    pub(crate) not_before: Option<Instant>,
    /// Its entry is in sled (written for a redelivery, at a checkpoint, or
    /// loaded): an ack must remove it.
    pub(crate) on_disk: bool,
}

impl Pending {
    fn in_flight(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|t| t > now)
    }
    fn ready(&self, now: Instant) -> bool {
        !self.in_flight(now) && self.not_before.is_none_or(|t| t <= now)
    }
    fn wake_at(&self) -> Option<Instant> {
        self.lease_until.or(self.not_before)
    }
}

/// Counters of one consumer group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStats {
    /// Group name.
    pub group: String,
    /// Next never-delivered sequence number.
    pub next_seq: u64,
    /// Delivered, not acked (in flight or waiting for redelivery).
    pub pending: u64,
    /// Delivered with a live lease.
    pub in_flight: u64,
    /// Deliveries since start.
    pub delivered: u64,
    /// Acks since start.
    pub acked: u64,
    /// Redeliveries since start.
    pub redelivered: u64,
    /// Naks since start.
    pub nakd: u64,
    /// Moved to the dead-letter topic since start.
    pub dead_lettered: u64,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) next: u64,
    /// `next` as sled has it. Every sequence below it is settled or has its
    /// pending entry in sled; first deliveries since then are only in
    /// memory until the next checkpoint ([`TopicState::persist_groups`]).
    pub(crate) next_on_disk: u64,
    /// Pending entries loaded past `next`: delivered before a crash, so the
    /// cursor never hands them out as new, even once they are settled.
    pub(crate) ahead: std::collections::BTreeSet<u64>,
    pub(crate) pending: BTreeMap<u64, Pending>,
    pub(crate) stats: GroupStats,
}

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// 1 on first delivery.
    pub delivery_count: u32,
    /// When this delivery's lease ends (`ack_wait` after the fetch): then it
    /// is ready to be delivered again unless settled or extended.
    pub lease_until: Instant,
}

#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) cfg: TopicConfig,
    pub(crate) msgs: Messages,
    pub(crate) published: u64,
    pub(crate) groups: HashMap<String, Group>,
    dedupe: VecDeque<(u64, String)>,
}

/// A message to move to the dead-letter topic.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub(crate) envelope: Envelope,
    pub(crate) group: String,
    pub(crate) reason: String,
    pub(crate) deliveries: u32,
    /// Its pending entry is in sled (see [`Pending::on_disk`]): kept for
    /// when the move fails and it is pending again.
    pub(crate) on_disk: bool,
}

impl TopicState {
    /// Loads a topic's state from sled; unacked leases come back ready.
    pub(crate) fn load(store: &SledStore, cfg: TopicConfig) -> Result<Self> {
        let name = cfg.name.clone();
        let mut msgs = Messages::load(store, &name)?;
        let mut groups = HashMap::new();
        let prefix = format!("q/{name}/cursor/");
        for t in store.tree_names() {
            let Some(group) = t.strip_prefix(&prefix) else {
                continue;
            };
            let mut g = Group {
                next: 0,
                next_on_disk: 0,
                ahead: Default::default(),
                pending: BTreeMap::new(),
                stats: GroupStats {
                    group: group.to_owned(),
                    ..Default::default()
                },
            };
            let seq_of = |b: &[u8], what: &str| {
                be_u64(b)
                    .filter(|s| b.len() == 8 && *s <= MAX_SEQ)
                    .ok_or_else(|| {
                        corrupt(
                            &t,
                            format!("{what} is {b:02x?}; a u64 sequence number up to 2^62 is expected"),
                        )
                    })
            };
            for (k, v) in store.scan_prefix(&t, b"")? {
                if k == KEY_NEXT {
                    g.next = seq_of(&v, "the group's next")?;
                } else if k.first() == Some(&PENDING) {
                    let seq = seq_of(&k[1..], "a pending key")?;
                    let count = v
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(1);
                    g.pending.insert(
                        seq,
                        Pending {
                            count,
                            lease_until: None,
                            not_before: None,
                            on_disk: true,
                        },
                    );
                }
            }
            // Pending entries past `next` (redeliveries since the last
            // checkpoint) were delivered already: the cursor passes over
            // them, settled since or not (`ahead`).
            g.next_on_disk = g.next;
            g.ahead = g.pending.range(g.next..).map(|(s, _)| *s).collect();
            // What the group has seen, `next` or a pending entry past it:
            // sled may have lost those messages (a crash before the log or a
            // checkpoint covered them), and their sequence numbers must not
            // be given to new messages this group would take for them.
            let seen = g.ahead.last().map_or(g.next, |s| (s + 1).max(g.next));
            // A group reads past what sled kept only by what a crash lost.
            if seen > msgs.next_seq + MAX_LOST {
                return Err(corrupt(
                    &t,
                    format!(
                        "the group's next is {}, {} past the topic's last stored message; a crash loses at most {MAX_LOST}",
                        seen,
                        seen - msgs.next_seq
                    ),
                ));
            }
            msgs.extend_to(seen);
            groups.insert(group.to_owned(), g);
        }
        // An id whose message sled did not keep (a crash before the log or a
        // checkpoint covered it; the dedupe entry is written first) is
        // forgotten: its sequence number will be given to another message,
        // and a retry of the id must be stored, not answered as a duplicate.
        let stored_end = msgs.stored_end();
        let dtree = dedupe_tree(&name);
        let mut dedupe = Vec::new();
        for (k, v) in store.scan_prefix(&dtree, b"")? {
            let entry = be_u64(&v).zip(v.get(8..).and_then(be_u64));
            match (entry, String::from_utf8(k.clone())) {
                (Some((seq, ts)), Ok(id)) if seq < stored_end => dedupe.push((ts, id)),
                _ => {
                    store.remove(&dtree, &k)?;
                }
            }
        }
        dedupe.sort();
        Ok(Self {
            msgs,
            published: 0,
            groups,
            dedupe: dedupe.into(),
            cfg,
        })
    }

    /// Returns the seq of a live duplicate of `msg_id`, expiring old ids.
    pub(crate) fn dedupe(&mut self, store: &SledStore, msg_id: &str, now_us: u64) -> Result<Option<u64>> {
        let window = self.cfg.dedupe_window_secs * 1_000_000;
        let tree = dedupe_tree(&self.cfg.name);
        while let Some((ts, id)) = self.dedupe.front() {
            if now_us.saturating_sub(*ts) <= window {
                break;
            }
            store.remove(&tree, id.as_bytes())?;
            self.dedupe.pop_front();
        }
        Ok(store.get(&tree, msg_id.as_bytes())?.and_then(|v| {
            let ts = be_u64(v.get(8..)?)?;
            (now_us.saturating_sub(ts) <= window)
                .then(|| be_u64(&v))
                .flatten()
        }))
    }

    /// Stores a message (caller holds the topic lock, so seqs are written in order).
    pub(crate) fn append(
        &mut self,
        store: &SledStore,
        mut env: Envelope,
        msg_id: Option<&str>,
    ) -> Result<(u64, Vec<u8>)> {
        env.seq = self.msgs.next_seq;
        env.topic = self.cfg.name.clone();
        let bytes = env.encode()?;
        if let (Some(id), true) = (msg_id, self.cfg.dedupe_window_secs > 0) {
            let mut v = env.seq.to_be_bytes().to_vec();
            v.extend_from_slice(&env.timestamp_us.to_be_bytes());
            store.insert(&dedupe_tree(&self.cfg.name), id.as_bytes(), &v)?;
            self.dedupe.push_back((env.timestamp_us, id.to_owned()));
        }
        self.msgs.append(store, bytes.clone());
        self.published += 1;
        Ok((env.seq, bytes))
    }

    /// Retention after a publish: streams drop what their limits no longer
    /// keep. A failure is logged, not returned: the message is stored and
    /// will be confirmed, and the next publish tries again.
    pub(crate) fn after_append(&mut self, store: &SledStore) {
        if self.cfg.kind == TopicKind::Stream {
            if let Err(e) = self.enforce_stream_limits(store) {
                tracing::error!(topic = %self.cfg.name, error = %e, "stream retention failed; retried after the next publish");
            }
        }
    }

    /// Accounts for a message the caller wrote at `msgs.next_seq` in a
    /// transaction of its own (call [`Messages::seal`] before the write).
    pub(crate) fn adopt_written(&mut self, env_len: usize) {
        self.msgs.adopt_written(self.msgs.next_seq, env_len);
        self.published += 1;
    }

    /// Stream retention by count, bytes and age.
    pub(crate) fn enforce_stream_limits(&mut self, store: &SledStore) -> Result<()> {
        let c = &self.cfg;
        let mut to = self.msgs.floor_for_limits(c.max_msgs, c.max_bytes);
        if c.max_age_secs > 0 {
            let cutoff = now_us().saturating_sub(c.max_age_secs * 1_000_000);
            while to < self.msgs.next_seq {
                match self.msgs.get(store, to)? {
                    Some(env) if env.timestamp_us >= cutoff => break,
                    _ => to += 1,
                }
            }
        }
        self.msgs.drop_front(store, to, true)
    }

    /// Queue retention: deletes what every group has acked.
    fn sweep_acked(&mut self, store: &SledStore) -> Result<()> {
        if self.cfg.kind != TopicKind::Queue || self.groups.is_empty() {
            return Ok(());
        }
        let floor = self
            .groups
            .values()
            .map(|g| g.pending.keys().next().copied().unwrap_or(g.next).min(g.next))
            .min()
            .unwrap_or(self.msgs.first_seq);
        self.msgs.drop_front(store, floor, true)
    }

    /// Moves each group's `next` in sled up to its first unsettled message
    /// (never down): what is below is settled, so a crash does not deliver
    /// it again.
    fn persist_floors(&mut self, store: &SledStore) -> Result<()> {
        for (name, g) in &mut self.groups {
            let floor = g.pending.keys().next().copied().unwrap_or(g.next).min(g.next);
            if floor > g.next_on_disk {
                store.insert(&group_tree(&self.cfg.name, name), KEY_NEXT, &floor.to_be_bytes())?;
                g.next_on_disk = floor;
            }
        }
        Ok(())
    }

    /// Writes every group's state exactly: the pending entries of first
    /// deliveries not written yet, then `next`. Runs before every sled
    /// flush (a checkpoint, and the last one at shutdown), so a crash
    /// delivers again as new only what was delivered since.
    pub(crate) fn persist_groups(&mut self, store: &SledStore) -> Result<()> {
        for (name, g) in &mut self.groups {
            let gtree = group_tree(&self.cfg.name, name);
            for (seq, p) in g.pending.iter_mut().filter(|(_, p)| !p.on_disk) {
                store.insert(&gtree, &pending_key(*seq), &p.count.to_be_bytes())?;
                p.on_disk = true;
            }
            if g.next > g.next_on_disk {
                store.insert(&gtree, KEY_NEXT, &g.next.to_be_bytes())?;
                g.next_on_disk = g.next;
            }
        }
        Ok(())
    }

    fn new_group(name: &str, start: u64) -> Group {
        Group {
            next: start,
            next_on_disk: 0,
            ahead: Default::default(),
            pending: BTreeMap::new(),
            stats: GroupStats {
                group: name.to_owned(),
                ..Default::default()
            },
        }
    }

    /// Hands out up to `max` messages to `group`: ready redeliveries first, then
    /// new ones in order. Returns them, the dead letters to move, and when to look again.
    pub(crate) fn fetch(
        &mut self,
        store: &SledStore,
        group_name: &str,
        max: usize,
    ) -> Result<(Vec<Delivery>, Vec<DeadLetter>, Option<Instant>)> {
        let (mut out, mut dead) = (Vec::new(), Vec::new());
        match self.fetch_into(store, group_name, max, &mut out, &mut dead) {
            Ok(wake) => Ok((out, dead, wake)),
            Err(e) => {
                // Nothing of this fetch reaches a consumer: its leases go back
                // at once, and its dead letters (their pending keys still in
                // sled) are pending again, so no later sweep deletes them.
                for d in &out {
                    self.release(group_name, d.envelope.seq, d.delivery_count);
                }
                self.restore_dead(dead.into_iter());
                Err(e)
            }
        }
    }

    fn fetch_into(
        &mut self,
        store: &SledStore,
        group_name: &str,
        max: usize,
        out: &mut Vec<Delivery>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Option<Instant>> {
        if self.cfg.kind == TopicKind::Stream && self.cfg.max_age_secs > 0 {
            self.enforce_stream_limits(store)?;
        }
        let now = Instant::now();
        let cfg = self.cfg.clone();
        let gtree = group_tree(&cfg.name, group_name);
        let (first_seq, next_seq) = (self.msgs.first_seq, self.msgs.next_seq);
        if !self.groups.contains_key(group_name) {
            // A new group is in sled at once, so a crash cannot forget it
            // while other groups' acks delete what it has not read.
            store.insert(&gtree, KEY_NEXT, &first_seq.to_be_bytes())?;
            let mut g = Self::new_group(group_name, first_seq);
            g.next_on_disk = first_seq;
            self.groups.insert(group_name.to_owned(), g);
        }
        let msgs = &mut self.msgs;
        let g = self.groups.get_mut(group_name).expect("inserted above");
        let in_flight = g.pending.values().filter(|p| p.in_flight(now)).count();
        let want = max.min((cfg.max_in_flight as usize).saturating_sub(in_flight));
        let lease_until = now + cfg.ack_wait();
        // A first delivery writes nothing: its state reaches sled at the next
        // checkpoint ([`Self::persist_groups`], about once a second), and a
        // crash before that delivers it again as a first delivery. That
        // lease entry per delivery (and its removal per ack) was ~23% of the
        // node's CPU end to end. A redelivery's count is written at once,
        // so `max_deliver` holds across crashes for messages that keep
        // failing. Ordered single writes, not a batch: a sled batch waits
        // for a running flush.
        let mut writes: Vec<(u64, u32)> = Vec::new();
        let ready: Vec<u64> = g
            .pending
            .iter()
            .filter(|(_, p)| p.ready(now))
            .map(|(s, _)| *s)
            .collect();
        for seq in ready {
            if out.len() >= want {
                break;
            }
            let Some(envelope) = msgs.get(store, seq)? else {
                g.pending.remove(&seq); // removed by retention
                store.remove(&gtree, &pending_key(seq))?;
                continue;
            };
            let p = g.pending.get_mut(&seq).expect("listed above");
            if cfg.max_deliver > 0 && p.count >= cfg.max_deliver {
                let (deliveries, on_disk) = (p.count, p.on_disk);
                g.pending.remove(&seq);
                g.stats.dead_lettered += 1;
                dead.push(DeadLetter {
                    envelope,
                    group: group_name.to_owned(),
                    reason: format!("max_deliver ({}) reached", cfg.max_deliver),
                    deliveries,
                    on_disk,
                });
                continue;
            }
            p.count += 1;
            p.lease_until = Some(lease_until);
            p.not_before = None;
            writes.push((seq, p.count));
            g.stats.redelivered += 1;
            g.stats.delivered += 1;
            out.push(Delivery {
                envelope,
                delivery_count: p.count,
                lease_until,
            });
        }
        if g.next < first_seq {
            g.next = first_seq;
            g.ahead = g.ahead.split_off(&first_seq);
        }
        while out.len() < want && g.next < next_seq {
            let seq = g.next;
            g.next += 1;
            if g.ahead.remove(&seq) || g.pending.contains_key(&seq) {
                continue; // delivered before a crash (loaded past the cursor sled had)
            }
            let Some(envelope) = msgs.get(store, seq)? else {
                continue;
            };
            g.pending.insert(
                seq,
                Pending {
                    count: 1,
                    lease_until: Some(lease_until),
                    not_before: None,
                    on_disk: false,
                },
            );
            g.stats.delivered += 1;
            out.push(Delivery {
                envelope,
                delivery_count: 1,
                lease_until,
            });
        }
        let wake = g.pending.values().filter_map(Pending::wake_at).min();
        // Dead letters keep their pending key here: the caller removes it in the
        // same transaction that writes them to the dead-letter topic.
        for (seq, count) in writes {
            store.insert(&gtree, &pending_key(seq), &count.to_be_bytes())?;
            if let Some(p) = g.pending.get_mut(&seq) {
                p.on_disk = true;
            }
        }
        Ok(wake)
    }

    /// Delivery `count` of `seq` is still the group's current delivery of it
    /// (pending, and not delivered again since).
    pub(crate) fn check_lease(&self, group: &str, seq: u64, count: u32) -> Result<()> {
        let p = self
            .groups
            .get(group)
            .and_then(|g| g.pending.get(&seq))
            .ok_or_else(|| self.not_pending(group, seq))?;
        if p.count != count {
            return Err(Error::LeaseLost {
                topic: self.cfg.name.clone(),
                group: group.to_owned(),
                seq,
                count,
                now: p.count,
            });
        }
        Ok(())
    }

    fn pending_mut(&mut self, group: &str, seq: u64) -> Result<&mut Pending> {
        let missing = self.not_pending(group, seq);
        self.groups
            .get_mut(group)
            .and_then(|g| g.pending.get_mut(&seq))
            .ok_or(missing)
    }

    fn not_pending(&self, group: &str, seq: u64) -> Error {
        Error::NotPending {
            topic: self.cfg.name.clone(),
            group: group.to_owned(),
            seq,
        }
    }

    /// Acks every seq of `seqs` (all must be pending) in one batch.
    pub(crate) fn ack(&mut self, store: &SledStore, group: &str, seqs: &[u64]) -> Result<()> {
        for &seq in seqs {
            self.pending_mut(group, seq)?;
        }
        let gtree = group_tree(&self.cfg.name, group);
        let g = self.groups.get_mut(group).expect("checked by pending_mut");
        let on_disk: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| g.pending.get(s).is_some_and(|p| p.on_disk))
            .collect();
        // On disk first, all or none: one ack stays a single removal (a
        // sled batch waits for a running flush), several are one batch. A
        // delivery only in memory needs none: the group's `next` in sled
        // moves past it once everything before it is settled.
        match on_disk.as_slice() {
            [] => {}
            [seq] => {
                store.remove(&gtree, &pending_key(*seq))?;
            }
            _ => {
                let mut b = Batch::default();
                for &seq in &on_disk {
                    b.remove(&gtree, &pending_key(seq));
                }
                store.apply(&b)?;
            }
        }
        for &seq in seqs {
            g.pending.remove(&seq);
        }
        g.stats.acked += seqs.len() as u64;
        self.sweep_after_settle(store);
        Ok(())
    }

    pub(crate) fn nak(&mut self, group: &str, seq: u64, delay: Duration) -> Result<()> {
        let p = self.pending_mut(group, seq)?;
        p.lease_until = None;
        p.not_before = Some(Instant::now() + delay);
        if let Some(g) = self.groups.get_mut(group) {
            g.stats.nakd += 1;
        }
        Ok(())
    }

    /// Returns a delivery to the group at once, if it is still the delivery
    /// `count` (a lease that expired and went to another consumer is left alone).
    pub(crate) fn release(&mut self, group: &str, seq: u64, count: u32) -> bool {
        match self.groups.get_mut(group).and_then(|g| g.pending.get_mut(&seq)) {
            Some(p) if p.count == count => {
                p.lease_until = None;
                p.not_before = None;
                true
            }
            _ => false,
        }
    }

    /// Extends the lease by `ack_wait` from now; returns its new end.
    pub(crate) fn in_progress(&mut self, group: &str, seq: u64) -> Result<Instant> {
        let until = Instant::now() + self.cfg.ack_wait();
        self.pending_mut(group, seq)?.lease_until = Some(until);
        Ok(until)
    }

    /// Takes a pending message out for `term`: the caller moves it to the DLQ.
    pub(crate) fn take_for_term(
        &mut self,
        store: &SledStore,
        group: &str,
        seq: u64,
        reason: &str,
    ) -> Result<DeadLetter> {
        let (deliveries, on_disk) = {
            let p = self.pending_mut(group, seq)?;
            (p.count, p.on_disk)
        };
        let envelope = self
            .msgs
            .get(store, seq)?
            .ok_or_else(|| self.not_pending(group, seq))?;
        let g = self.groups.get_mut(group).expect("checked by pending_mut");
        g.pending.remove(&seq);
        g.stats.dead_lettered += 1;
        Ok(DeadLetter {
            envelope,
            group: group.to_owned(),
            reason: reason.to_owned(),
            deliveries,
            on_disk,
        })
    }

    /// After dead letters left the pending set: delete what every group is done with.
    pub(crate) fn after_dead_letters(&mut self, store: &SledStore) {
        self.sweep_after_settle(store)
    }

    /// Deletes what every group has acked, after an ack or a dead-letter
    /// move that is already written: a failure here does not undo or fail
    /// that (the next ack sweeps again), so it is logged, not returned.
    pub(crate) fn sweep_after_settle(&mut self, store: &SledStore) {
        if let Err(e) = self.persist_floors(store).and_then(|()| self.sweep_acked(store)) {
            tracing::warn!(topic = %self.cfg.name, error = %e, "cannot delete acked messages yet; the next ack tries again");
        }
    }

    /// Dead letters that could not be moved (their pending keys are still in
    /// sled) are pending again, ready for the next fetch.
    pub(crate) fn restore_dead(&mut self, dead: impl Iterator<Item = DeadLetter>) {
        for d in dead {
            let Some(g) = self.groups.get_mut(&d.group) else {
                continue;
            };
            g.stats.dead_lettered = g.stats.dead_lettered.saturating_sub(1);
            g.pending.insert(
                d.envelope.seq,
                Pending {
                    count: d.deliveries,
                    lease_until: None,
                    not_before: None,
                    on_disk: d.on_disk,
                },
            );
        }
    }

    pub(crate) fn group_stats(&self) -> Vec<GroupStats> {
        let now = Instant::now();
        let mut v: Vec<GroupStats> = self
            .groups
            .values()
            .map(|g| GroupStats {
                next_seq: g.next,
                pending: g.pending.len() as u64,
                in_flight: g.pending.values().filter(|p| p.in_flight(now)).count() as u64,
                ..g.stats.clone()
            })
            .collect();
        v.sort_by(|a, b| a.group.cmp(&b.group));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dedupe_entry_whose_message_sled_lost_is_forgotten_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let cfg = TopicConfig {
            name: "t".into(),
            ..TopicConfig::default()
        };
        let mut st = TopicState::load(&store, cfg.clone()).unwrap();
        let env = Envelope {
            timestamp_us: now_us(),
            payload: b"kept".to_vec(),
            ..Envelope::default()
        };
        let (seq, _) = st.append(&store, env, Some("a")).unwrap();
        assert_eq!(seq, 0);
        st.msgs.seal(&store).unwrap();
        // Sled kept the dedupe entry of the next publish but not its message
        // (a crash between the two writes).
        let mut v = 1u64.to_be_bytes().to_vec();
        v.extend_from_slice(&now_us().to_be_bytes());
        store.insert(&dedupe_tree("t"), b"b", &v).unwrap();
        drop(st);

        let mut st = TopicState::load(&store, cfg).unwrap();
        assert_eq!(st.msgs.next_seq, 1);
        let now = now_us();
        assert_eq!(
            st.dedupe(&store, "a", now).unwrap(),
            Some(0),
            "a stored id stays a duplicate"
        );
        assert_eq!(
            st.dedupe(&store, "b", now).unwrap(),
            None,
            "seq 1 was never stored"
        );
        assert!(store.get(&dedupe_tree("t"), b"b").unwrap().is_none());
    }

    fn cfg() -> TopicConfig {
        TopicConfig {
            name: "t".into(),
            ..TopicConfig::default()
        }
    }

    #[test]
    fn corrupt_cursors_and_floors_are_refused_with_the_tree_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let gtree = group_tree("t", "g");
        let expect_corrupt = |what: &str| {
            let e = TopicState::load(&store, cfg()).unwrap_err().to_string();
            assert!(e.contains("corrupt") && e.contains(what), "{e}");
        };
        store.insert(&gtree, KEY_NEXT, &u64::MAX.to_be_bytes()).unwrap();
        expect_corrupt("q/t/cursor/g");
        store.insert(&gtree, KEY_NEXT, &[1, 2, 3]).unwrap();
        expect_corrupt("next");
        // A cursor far past anything a crash could have lost.
        store
            .insert(&gtree, KEY_NEXT, &(MAX_LOST + 5).to_be_bytes())
            .unwrap();
        expect_corrupt("past the topic's last stored message");
        store.insert(&gtree, KEY_NEXT, &1u64.to_be_bytes()).unwrap();
        store
            .insert(&gtree, &pending_key(u64::MAX), &1u32.to_be_bytes())
            .unwrap();
        expect_corrupt("pending key");
        store.remove(&gtree, &pending_key(u64::MAX)).unwrap();
        store
            .insert("q/t/meta", b"floor", &u64::MAX.to_be_bytes())
            .unwrap();
        expect_corrupt("q/t/meta");
        store.remove("q/t/meta", b"floor").unwrap();
        assert!(TopicState::load(&store, cfg()).is_ok());
    }

    #[test]
    fn a_delivery_written_past_the_cursor_is_not_handed_out_again_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let mut st = TopicState::load(&store, cfg()).unwrap();
        for p in [b"a", b"b"] {
            let env = Envelope {
                timestamp_us: now_us(),
                payload: p.to_vec(),
                ..Envelope::default()
            };
            st.append(&store, env, None).unwrap();
        }
        st.msgs.seal(&store).unwrap();
        drop(st);
        // Pending entries past `next` (an older version wrote them before
        // `next`; now redeliveries since the last checkpoint).
        let gtree = group_tree("t", "g");
        store
            .insert(&gtree, &pending_key(0), &1u32.to_be_bytes())
            .unwrap();
        store
            .insert(&gtree, &pending_key(1), &1u32.to_be_bytes())
            .unwrap();
        let mut st = TopicState::load(&store, cfg()).unwrap();
        let (out, _, _) = st.fetch(&store, "g", 10).unwrap();
        let got: Vec<(u64, u32)> = out.iter().map(|d| (d.envelope.seq, d.delivery_count)).collect();
        assert_eq!(got, [(0, 2), (1, 2)], "each delivered once, as a redelivery");
    }

    /// A topic `t` with `n` messages in sled.
    fn with_messages(store: &SledStore, n: u8) -> TopicState {
        let mut st = TopicState::load(store, cfg()).unwrap();
        for p in 0..n {
            let env = Envelope {
                timestamp_us: now_us(),
                payload: vec![p],
                ..Envelope::default()
            };
            st.append(store, env, None).unwrap();
        }
        st.msgs.seal(store).unwrap();
        st
    }

    fn seqs_counts(out: &[Delivery]) -> Vec<(u64, u32)> {
        out.iter().map(|d| (d.envelope.seq, d.delivery_count)).collect()
    }

    /// A crash is a reload from what sled has, without the checkpoint's
    /// [`TopicState::persist_groups`].
    #[test]
    fn after_a_crash_before_a_checkpoint_a_group_skips_nothing_unsettled() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let mut st = with_messages(&store, 10);
        let (out, _, _) = st.fetch(&store, "g", 6).unwrap();
        assert_eq!(out.len(), 6);
        // 0 and 1 acked (the floor moves to 2), 4 acked past the floor;
        // 2, 3, 5 in flight; 6..9 never delivered.
        st.ack(&store, "g", &[0, 1, 4]).unwrap();
        st.sweep_after_settle(&store);
        drop(st);
        let mut st = TopicState::load(&store, cfg()).unwrap();
        let (out, _, _) = st.fetch(&store, "g", 100).unwrap();
        assert_eq!(
            seqs_counts(&out),
            [(2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1), (9, 1)],
            "everything past the settled floor again (4, acked past it, too): none skipped"
        );
    }

    #[test]
    fn a_checkpoint_makes_a_crash_exact_and_redelivery_counts_survive_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let mut st = with_messages(&store, 6);
        st.fetch(&store, "g", 4).unwrap();
        st.ack(&store, "g", &[1]).unwrap();
        st.sweep_after_settle(&store);
        st.persist_groups(&store).unwrap();
        // After the checkpoint: 2 redelivered (its count written at once).
        st.release("g", 2, 1);
        let (out, _, _) = st.fetch(&store, "g", 1).unwrap();
        assert_eq!(seqs_counts(&out), [(2, 2)]);
        drop(st);
        let mut st = TopicState::load(&store, cfg()).unwrap();
        let (out, _, _) = st.fetch(&store, "g", 100).unwrap();
        assert_eq!(
            seqs_counts(&out),
            [(0, 2), (2, 3), (3, 2), (4, 1), (5, 1)],
            "1 stays acked, in-flight ones come back counted, the rest as new"
        );
    }

    #[test]
    fn a_redelivered_message_settled_after_a_crash_is_not_delivered_again_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let mut st = with_messages(&store, 6);
        // `next` in sled stays 0: 0..5 delivered, 3 redelivered (written).
        st.fetch(&store, "g", 6).unwrap();
        st.release("g", 3, 1);
        let (out, _, _) = st.fetch(&store, "g", 1).unwrap();
        assert_eq!(seqs_counts(&out), [(3, 2)]);
        drop(st);
        let mut st = TopicState::load(&store, cfg()).unwrap();
        // The loaded redelivery goes first and is acked...
        let (out, _, _) = st.fetch(&store, "g", 1).unwrap();
        assert_eq!(seqs_counts(&out), [(3, 3)]);
        st.ack(&store, "g", &[3]).unwrap();
        // ... and the cursor, reaching it, passes over it.
        let (out, _, _) = st.fetch(&store, "g", 100).unwrap();
        assert_eq!(seqs_counts(&out), [(0, 1), (1, 1), (2, 1), (4, 1), (5, 1)]);
    }

    #[test]
    fn a_redelivery_past_what_sled_kept_does_not_take_a_new_message_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let mut st = with_messages(&store, 2);
        // A redelivery's entry for seq 2, whose message sled did not keep
        // (a crash before its chunk or the log covered it).
        store
            .insert(&group_tree("t", "g"), &pending_key(2), &5u32.to_be_bytes())
            .unwrap();
        drop(st);
        st = TopicState::load(&store, cfg()).unwrap();
        let env = Envelope {
            timestamp_us: now_us(),
            payload: b"new".to_vec(),
            ..Envelope::default()
        };
        let (seq, _) = st.append(&store, env, None).unwrap();
        assert_eq!(seq, 3, "seq 2 is not given to a new message");
        let (out, _, _) = st.fetch(&store, "g", 100).unwrap();
        assert_eq!(seqs_counts(&out), [(0, 1), (1, 1), (3, 1)]);
    }
}
