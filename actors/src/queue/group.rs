//! A topic's consumer groups: cursors, pending deliveries with their leases
//! and counts, settles, and what of them reaches sled when (architecture.md,
//! "Consumer group state"). Every method runs under the topic's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::chunk::corrupt;
use super::envelope::Envelope;
use super::messages::{Messages, MAX_SEQ};
use super::topic::{be_u64, TopicState};
use super::TopicKind;
use crate::store::{Batch, SledStore, Store};
use crate::{Error, Result};

pub(crate) fn group_tree(topic: &str, group: &str) -> String {
    format!("q/{topic}/cursor/{group}")
}
pub(super) const KEY_NEXT: &[u8] = b"next";
/// How far past the stored messages a group's cursor may be after a crash
/// (confirm mode `none` loses what sled had not flushed); further is corruption.
pub(super) const MAX_LOST: u64 = 1 << 24;
const PENDING: u8 = b'p';

pub(crate) fn pending_key(seq: u64) -> Vec<u8> {
    let mut k = vec![PENDING];
    k.extend_from_slice(&seq.to_be_bytes());
    k
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
pub(crate) struct DeadLetter {
    pub(crate) envelope: Envelope,
    pub(crate) group: String,
    pub(crate) reason: String,
    pub(crate) deliveries: u32,
    /// Its pending entry is in sled (see [`Pending::on_disk`]): kept for
    /// when the move fails and it is pending again.
    pub(crate) on_disk: bool,
}

impl Group {
    fn new(name: &str, start: u64) -> Group {
        Group {
            next: start,
            next_on_disk: 0,
            ahead: BTreeSet::new(),
            pending: BTreeMap::new(),
            stats: GroupStats {
                group: name.to_owned(),
                ..Default::default()
            },
        }
    }

    /// Loads the group `name` from its tree; its unacked leases come back
    /// ready. Moves `msgs` past what the group has seen.
    pub(super) fn load(store: &SledStore, tree: &str, name: &str, msgs: &mut Messages) -> Result<Group> {
        let mut g = Group::new(name, 0);
        let seq_of = |b: &[u8], what: &str| {
            be_u64(b)
                .filter(|s| b.len() == 8 && *s <= MAX_SEQ)
                .ok_or_else(|| {
                    corrupt(
                        tree,
                        format!("{what} is {b:02x?}; a u64 sequence number up to 2^62 is expected"),
                    )
                })
        };
        for (k, v) in store.scan_prefix(tree, b"")? {
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
                tree,
                format!(
                    "the group's next is {}, {} past the topic's last stored message; a crash loses at most {MAX_LOST}",
                    seen,
                    seen - msgs.next_seq
                ),
            ));
        }
        msgs.extend_to(seen);
        Ok(g)
    }
}

impl TopicState {
    /// Moves each group's `next` in sled up to its first unsettled message
    /// (never down): what is below is settled, so a crash does not deliver
    /// it again.
    pub(super) fn persist_floors(&mut self, store: &SledStore) -> Result<()> {
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
            let mut g = Group::new(group_name, first_seq);
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
    use crate::queue::topic::now_us;
    use crate::queue::TopicConfig;

    fn cfg() -> TopicConfig {
        TopicConfig {
            name: "t".into(),
            ..TopicConfig::default()
        }
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
}
