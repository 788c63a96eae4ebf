//! One durable topic: its messages, dedupe window and retention; its
//! consumer groups are in `group.rs`.
//! Every method runs under the topic's lock (held by the caller).

use std::collections::{HashMap, VecDeque};

use super::envelope::Envelope;
use super::group::Group;
pub(crate) use super::messages::msg_tree;
use super::messages::Messages;
use super::{TopicConfig, TopicKind};
use crate::store::{SledStore, Store};
use crate::Result;
pub(crate) fn dedupe_tree(topic: &str) -> String {
    format!("q/{topic}/dedupe")
}

/// Microseconds since the Unix epoch (the queue's clock: the node's, see [`crate::clock`]).
pub fn now_us() -> u64 {
    crate::clock::unix_us()
}

pub(super) fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
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
            let g = Group::load(store, &t, group, &mut msgs)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::group::{group_tree, pending_key, KEY_NEXT, MAX_LOST};

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
}
