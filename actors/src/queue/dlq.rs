//! Dead letters: moving a message that ran out of deliveries (or was
//! `term`ed) to `<topic>.dlq` in one transaction with the removal of its
//! pending delivery, listing a dead-letter topic page by page, and replaying
//! it into its topic.

use std::iter::Peekable;

use super::group::{group_tree, pending_key, DeadLetter};
use super::topic::{msg_tree, TopicState};
use super::{
    lock, m, DlqPage, Queues, Topic, DLQ_PAGE_BYTES, HDR_DLQ_DELIVERIES, HDR_DLQ_GROUP, HDR_DLQ_REASON,
    HDR_DLQ_SEQ,
};
use crate::store::{Batch, Store};
use crate::{Error, Result};

impl Queues {
    /// Moves dead letters of `src` (whose lock the caller holds, so no ack
    /// can move the floor past them meanwhile) to `<topic>.dlq`: for each, the
    /// DLQ insert and the removal of its pending delivery are one
    /// transaction. Those not moved when a write fails are pending again.
    pub(super) fn move_to_dlq(&self, src: &mut TopicState, dead: Vec<DeadLetter>) -> Result<()> {
        let mut dead = dead.into_iter().peekable();
        let topic = src.cfg.name.clone();
        let r = self.write_dead_letters(&topic, &mut dead);
        src.restore_dead(dead);
        r?;
        src.after_dead_letters(&self.store);
        Ok(())
    }

    /// Writes dead letters from `dead` until one fails; that one and the rest stay in `dead`.
    pub(super) fn write_dead_letters(
        &self,
        topic: &str,
        dead: &mut Peekable<std::vec::IntoIter<DeadLetter>>,
    ) -> Result<()> {
        let dlq_name = format!("{topic}.dlq");
        let dlq = self.topic(&dlq_name)?;
        let mut st = lock(&dlq.state);
        let mut r = Ok(());
        while let Some(d) = dead.peek() {
            let mut env = d.envelope.clone();
            let orig_seq = env.seq;
            env.headers
                .insert(HDR_DLQ_REASON.into(), d.reason.clone().into_bytes());
            env.headers
                .insert(HDR_DLQ_GROUP.into(), d.group.clone().into_bytes());
            env.headers
                .insert(HDR_DLQ_DELIVERIES.into(), d.deliveries.to_string().into_bytes());
            env.headers
                .insert(HDR_DLQ_SEQ.into(), orig_seq.to_string().into_bytes());
            env.seq = st.msgs.next_seq;
            env.topic = dlq_name.clone();
            let written = env.encode().and_then(|bytes| {
                let len = bytes.len();
                st.msgs.seal(&self.store)?;
                let mut batch = Batch::default();
                batch.insert(&msg_tree(&dlq_name), &env.seq.to_be_bytes(), bytes);
                batch.remove(&group_tree(topic, &d.group), &pending_key(orig_seq));
                self.store.apply(&batch)?;
                Ok(len)
            });
            match written {
                Ok(len) => st.adopt_written(len),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
            tracing::warn!(topic, group = %d.group, seq = orig_seq, reason = %d.reason, "message dead-lettered");
            metrics::counter!(m::QUEUE_DEAD_LETTERED, "topic" => topic.to_owned()).increment(1);
            dead.next();
        }
        drop(st);
        self.flusher.request();
        dlq.notify.notify_waiters();
        r
    }

    /// A page of `<topic>.dlq`, oldest first: up to `limit` messages (and
    /// [`DLQ_PAGE_BYTES`] of payload) from sequence `from` on.
    pub fn dlq_list(&self, topic: &str, from: u64, limit: usize) -> Result<DlqPage> {
        let dlq_name = self.dlq_of(topic)?;
        let mut page = DlqPage::default();
        // No dead letters yet: nothing to list (and nothing is created).
        let Ok(dlq) = self.existing(&dlq_name) else {
            return Ok(page);
        };
        let mut st = lock(&dlq.state);
        let mut seq = from.max(st.msgs.first_seq);
        let mut bytes = 0;
        while page.items.len() < limit && bytes < DLQ_PAGE_BYTES && seq < st.msgs.next_seq {
            if let Some(e) = st.msgs.get(&self.store, seq)? {
                bytes += e.payload.len();
                page.items.push(e);
            }
            seq += 1;
        }
        page.next = (seq < st.msgs.next_seq).then_some(seq);
        Ok(page)
    }

    /// The dead-letter topic of `topic`, which must exist and not be one itself.
    pub(super) fn dlq_of(&self, topic: &str) -> Result<String> {
        if let Some(src) = topic.strip_suffix(".dlq") {
            return Err(Error::Invalid(format!(
                "`{topic}` is a dead-letter topic: name the topic its messages came from (`{src}`)"
            )));
        }
        self.existing(topic)?;
        Ok(format!("{topic}.dlq"))
    }

    /// Moves every message of `<topic>.dlq` back to `topic`; each move (the
    /// insert and the dead-letter topic's floor) is one transaction. Returns how many.
    /// A replay that fails part way says how many it moved
    /// ([`Error::ReplayStopped`]): those are back in `topic` for good.
    pub async fn dlq_replay(&self, topic: &str) -> Result<u64> {
        let dlq_name = self.dlq_of(topic)?;
        let Ok(dlq) = self.existing(&dlq_name) else {
            return Ok(0);
        };
        let t = self.existing(topic)?;
        let mut moved = 0;
        let r = self.replay_moves(topic, &t, &dlq, &mut moved).await;
        if moved > 0 {
            t.notify.notify_waiters();
        }
        r.map(|()| moved).map_err(|e| Error::ReplayStopped {
            topic: topic.to_owned(),
            moved,
            why: e.to_string(),
        })
    }

    async fn replay_moves(&self, topic: &str, t: &Topic, dlq: &Topic, moved: &mut u64) -> Result<()> {
        // Locks are taken per 256 moves, so publishers to either topic wait at
        // most that long, and the runtime thread is handed back between batches.
        loop {
            let done = self.replay_batch(topic, t, dlq, moved)?;
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        let ticket = self.flusher.request();
        self.flusher.wait(ticket).await
    }

    /// Moves up to 256 dead letters back; true when none is left.
    pub(super) fn replay_batch(&self, topic: &str, t: &Topic, dlq: &Topic, moved: &mut u64) -> Result<bool> {
        let mut dst = lock(&t.state);
        let mut src = lock(&dlq.state);
        dst.msgs.seal(&self.store)?;
        for _ in 0..256 {
            let seq = src.msgs.first_seq;
            if seq >= src.msgs.next_seq {
                break;
            }
            if let Some(mut env) = src.msgs.get(&self.store, seq)? {
                for h in [HDR_DLQ_REASON, HDR_DLQ_GROUP, HDR_DLQ_DELIVERIES, HDR_DLQ_SEQ] {
                    env.headers.remove(h);
                }
                env.seq = dst.msgs.next_seq;
                env.topic = topic.to_owned();
                let bytes = env.encode()?;
                let len = bytes.len();
                let (floor_tree, floor_key) = src.msgs.floor_key();
                let mut batch = Batch::default();
                batch.insert(&msg_tree(topic), &env.seq.to_be_bytes(), bytes);
                batch.insert(floor_tree, floor_key, (seq + 1).to_be_bytes().to_vec());
                self.store.apply(&batch)?;
                dst.adopt_written(len);
                *moved += 1;
            }
            src.msgs.drop_front(&self.store, seq + 1, false)?;
        }
        t.depth.set(dst.msgs.count as f64);
        dlq.depth.set(src.msgs.count as f64);
        Ok(src.msgs.first_seq >= src.msgs.next_seq)
    }
}
