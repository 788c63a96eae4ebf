//! Durable queues on sled: at-least-once delivery that survives crashes.
//!
//! Semantics (DESIGN.md, anchored on NATS JetStream, Redis Streams and
//! RabbitMQ quorum queues):
//! - a publish is **confirmed only after `flush()`**; concurrent publishes share
//!   one fsync (group commit); modes `always` (default), `interval(ms)`, `none`;
//! - consumer groups; each delivery takes a lease (`ack_wait`) and bumps the
//!   message's `delivery_count`; settle with `ack`, `nak(delay)`, `term` (to the
//!   dead-letter topic) or `in_progress` (extend the lease);
//! - on restart every unacked lease returns to ready: nothing confirmed is lost;
//! - after `max_deliver` deliveries the message moves to `<topic>.dlq` in one
//!   transaction, with its reason and delivery count in headers; never dropped;
//!   `dlq_replay` moves it back;
//! - FIFO per topic on first delivery; `max_in_flight = 1` gives strict order;
//! - retention: `queue` topics delete a message once every group acked it,
//!   `stream` topics keep by count, bytes and age;
//! - `msg-id` header: a duplicate within the dedupe window is not stored again.
//!
//! Trees per topic: `q/<topic>/msg` (first seq -> a chunk of [`Envelope`]s,
//! see `chunk.rs`), `q/<topic>/meta` (the floor: the first seq still stored),
//! `q/<topic>/cursor/<group>` (the group's `next`, below which everything
//! is settled or pending, and its pending deliveries written so far: see
//! architecture.md, "Consumer group state"), `q/<topic>/dedupe`
//! (msg-id -> seq, time).

mod chunk;
mod config;
mod dlq;
mod done;
mod envelope;
mod flusher;
mod group;
mod messages;
mod topic;
mod wal;

#[cfg(test)]
mod store_faults;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use config::{check_name, check_topic, QueueConfig, TopicConfig, TopicKind, MAX_TOPIC_LEN};
pub use done::{after_pass, in_pass, OnDurable};
pub use envelope::Envelope;
pub use flusher::ConfirmMode;
pub use group::{Delivery, GroupStats};

use crate::metrics as m;
use crate::store::{SledStore, Store};
use crate::{Error, Result};
use flusher::Flusher;
pub use topic::now_us;
use topic::{msg_tree, TopicState};

/// Payload bytes one `dlq_list` page holds at most (besides its count limit).
pub const DLQ_PAGE_BYTES: usize = 8 << 20;

/// One page of a dead-letter topic.
#[derive(Debug, Default)]
pub struct DlqPage {
    /// Dead letters in order, with their `dlq-*` headers.
    pub items: Vec<Envelope>,
    /// Where the next page starts; `None` when this one reaches the end.
    pub next: Option<u64>,
}

/// What a consumer does with a delivery it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Done with it.
    Ack,
    /// Deliver it again after this delay.
    Nak(Duration),
    /// Still working on it: extend the lease by `ack_wait`.
    InProgress,
    /// Give up: move it to `<topic>.dlq` now, with this reason.
    Term(String),
}

/// Header: publisher-chosen id for deduplication.
pub const HDR_MSG_ID: &str = "msg-id";
/// Header on dead letters: why.
pub const HDR_DLQ_REASON: &str = "dlq-reason";
/// Header on dead letters: the consumer group.
pub const HDR_DLQ_GROUP: &str = "dlq-group";
/// Header on dead letters: deliveries before it was parked.
pub const HDR_DLQ_DELIVERIES: &str = "dlq-deliveries";
/// Header on dead letters: its sequence number in the original topic.
pub const HDR_DLQ_SEQ: &str = "dlq-seq";

/// What to publish; the node fills in sequence, topic and time.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// Publisher identity (stamped by the node, never taken from the app).
    pub sender: String,
    /// Correlation id.
    pub correlation: String,
    /// Headers; `msg-id` enables deduplication.
    pub headers: std::collections::BTreeMap<String, Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A stored (or deduplicated) publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// Sequence number in the topic.
    pub seq: u64,
    /// True when a message with the same `msg-id` was already stored.
    pub duplicate: bool,
}

/// A topic's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicStats {
    /// Name.
    pub topic: String,
    /// Retention kind.
    pub kind: TopicKind,
    /// Messages stored.
    pub depth: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Published since start.
    pub published: u64,
    /// Next sequence number.
    pub next_seq: u64,
    /// Consumer groups.
    pub groups: Vec<GroupStats>,
}

struct Topic {
    state: Mutex<TopicState>,
    notify: Notify,
    /// Metric handles of the topic, looked up once (a lookup per publish
    /// hashes the name and its labels).
    published: metrics::Counter,
    published_bytes: metrics::Counter,
    depth: metrics::Gauge,
}

type TopicMap = Arc<RwLock<HashMap<String, Arc<Topic>>>>;

/// The queue engine: every durable topic of the node.
pub struct Queues {
    store: SledStore,
    flusher: Flusher,
    cfg: QueueConfig,
    topics: TopicMap,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("confirm", &self.flusher.mode())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queues {
    /// Opens every topic found in the store; confirmed messages still only in
    /// the write-ahead log are put back; unacked leases return to ready.
    pub fn open(store: SledStore, cfg: QueueConfig) -> Result<Arc<Self>> {
        let wal = match cfg.confirm {
            ConfirmMode::Always => {
                let w = wal::Wal::open(store.path()).map_err(|e| Error::Write {
                    path: store.path().join(wal::FILE),
                    source: e,
                })?;
                replay(&store, &cfg, &w)?;
                Some(w)
            }
            _ => None,
        };
        let topics = TopicMap::default();
        let q = Self {
            flusher: Flusher::start(
                store.clone(),
                cfg.confirm,
                wal,
                seal_all(store.clone(), topics.clone()),
            ),
            store,
            cfg,
            topics,
        };
        // Topics already stored load under the rules they were created
        // with (names of up to 200 bytes); configured ones are checked as new.
        for n in q.store.tree_names() {
            if let Some(name) = n.strip_prefix("q/").and_then(|t| t.strip_suffix("/msg")) {
                q.topic_checked(name, |n| check_name("topic", n))?;
            }
        }
        for t in &q.cfg.topics {
            q.topic(&t.name)?;
        }
        Ok(Arc::new(q))
    }

    fn config_for(&self, name: &str) -> TopicConfig {
        config_for(&self.cfg, name)
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topic_checked(name, check_topic)
    }

    /// The topic `name`, created (or loaded) on first use if `check` accepts the name.
    fn topic_checked(
        &self,
        name: &str,
        check: impl Fn(&str) -> std::result::Result<(), String>,
    ) -> Result<Arc<Topic>> {
        if let Some(t) = self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(t.clone());
        }
        check(name).map_err(Error::Invalid)?;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let state = TopicState::load(&self.store, self.config_for(name))?;
        // Every counter of the topic from its first scrape, so rate() works
        // before the first ack, nak or dead letter.
        for c in [
            m::QUEUE_DELIVERED,
            m::QUEUE_ACKED,
            m::QUEUE_NAKD,
            m::QUEUE_REDELIVERED,
            m::QUEUE_DEAD_LETTERED,
        ] {
            metrics::counter!(c, "topic" => name.to_owned()).increment(0);
        }
        let t = Arc::new(Topic {
            state: Mutex::new(state),
            notify: Notify::new(),
            published: metrics::counter!(m::QUEUE_PUBLISHED, "topic" => name.to_owned()),
            published_bytes: metrics::counter!(m::QUEUE_PUBLISHED_BYTES, "topic" => name.to_owned()),
            depth: metrics::gauge!(m::QUEUE_DEPTH, "topic" => name.to_owned()),
        });
        topics.insert(name.to_owned(), t.clone());
        Ok(t)
    }

    fn existing(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    /// Stores a message and returns its flush ticket; await [`Queues::confirmed`]
    /// before telling anyone it is safe. Use [`Queues::publish`] for both.
    pub fn publish_nowait(&self, topic: &str, p: Publish) -> Result<(Published, u64)> {
        if p.payload.len() > self.cfg.max_payload_bytes {
            return Err(Error::Invalid(format!(
                "payload is {} bytes; the limit (bus.max_payload_bytes) is {}",
                p.payload.len(),
                self.cfg.max_payload_bytes
            )));
        }
        let t = self.topic(topic)?;
        let published = {
            let mut st = lock(&t.state);
            let now = now_us();
            let msg_id = p
                .headers
                .get(HDR_MSG_ID)
                .and_then(|v| String::from_utf8(v.clone()).ok());
            let dup = match (&msg_id, st.cfg.dedupe_window_secs > 0) {
                (Some(id), true) => st.dedupe(&self.store, id, now)?,
                _ => None,
            };
            match dup {
                Some(seq) => (Published { seq, duplicate: true }, 0),
                None => {
                    let env = Envelope {
                        timestamp_us: now,
                        sender: p.sender,
                        correlation: p.correlation,
                        headers: p.headers,
                        payload: p.payload,
                        ..Envelope::default()
                    };
                    let (seq, bytes) = st.append(&self.store, env, msg_id.as_deref())?;
                    t.published.increment(1);
                    t.published_bytes.increment(bytes.len() as u64);
                    // Logged under the topic's lock: the log holds a topic's
                    // messages in sequence order, so a confirmed one never
                    // follows a lost one.
                    let ticket = self.flusher.request_logged(bytes);
                    st.after_append(&self.store);
                    t.depth.set(st.msgs.count as f64);
                    (
                        Published {
                            seq,
                            duplicate: false,
                        },
                        ticket,
                    )
                }
            }
        };
        let (published, ticket) = match published {
            (p, t) if t > 0 => (p, t),
            // A duplicate: confirmed once the original is.
            (p, _) => (p, self.flusher.request_pass()),
        };
        t.notify.notify_waiters();
        Ok((published, ticket))
    }

    /// Waits until the writes before `ticket` are durable (per the confirm
    /// mode); [`Error::NotDurable`] if they never will be.
    pub async fn confirmed(&self, ticket: u64) -> Result<()> {
        self.flusher.wait(ticket).await
    }

    /// Runs `f` once `ticket` (from [`Queues::publish_nowait`]) is durable,
    /// on the flusher thread, so a confirm can be written without waking a
    /// runtime thread; `f` must not block. Callbacks run in ticket order.
    pub fn on_confirmed(&self, ticket: u64, f: OnDurable) {
        self.flusher.on_durable(ticket, f)
    }

    /// Stores a message and waits for its confirm.
    pub async fn publish(&self, topic: &str, p: Publish) -> Result<Published> {
        let t0 = Instant::now();
        let (published, ticket) = self.publish_nowait(topic, p)?;
        self.confirmed(ticket).await?;
        metrics::histogram!(m::QUEUE_CONFIRM_DURATION).record(t0.elapsed().as_secs_f64());
        Ok(published)
    }

    /// Up to `max` deliveries for `group`, and when to look again if there is
    /// nothing now (a lease or nak delay ends then). Creates the group on first use.
    pub fn fetch(&self, topic: &str, group: &str, max: usize) -> Result<(Vec<Delivery>, Option<Instant>)> {
        check_name("group", group).map_err(Error::Invalid)?;
        let t = self.topic(topic)?;
        let (out, wake) = {
            let mut st = lock(&t.state);
            let (out, dead, wake) = st.fetch(&self.store, group, max)?;
            if !out.is_empty() || !dead.is_empty() {
                self.flusher.groups_changed();
            }
            if let Some(g) = st.groups.get(group) {
                let inflight = g.pending.len() as f64;
                metrics::gauge!(m::QUEUE_IN_FLIGHT, "topic" => topic.to_owned(), "group" => group.to_owned())
                    .set(inflight);
            }
            let redelivered = out.iter().filter(|d| d.delivery_count > 1).count() as u64;
            metrics::counter!(m::QUEUE_DELIVERED, "topic" => topic.to_owned()).increment(out.len() as u64);
            metrics::counter!(m::QUEUE_REDELIVERED, "topic" => topic.to_owned()).increment(redelivered);
            if !dead.is_empty() {
                // Dead letters that cannot move stay pending (and are tried
                // again on the next fetch); the deliveries leased here still
                // go out, or they would wait out `ack_wait` undelivered.
                if let Err(e) = self.move_to_dlq(&mut st, dead) {
                    tracing::error!(topic, group, error = %e, "cannot move dead letters to the dead-letter topic; they stay pending");
                }
            }
            (out, wake)
        };
        Ok((out, wake))
    }

    /// Acknowledges a delivery.
    pub fn ack(&self, topic: &str, group: &str, seq: u64) -> Result<()> {
        self.settle_lease(topic, group, seq, None, Settle::Ack).map(drop)
    }

    /// Settles delivery `count` of `seq` (its [`Delivery::delivery_count`]):
    /// refused with [`Error::LeaseLost`] when the message was delivered again
    /// since, so a consumer whose lease expired never settles the delivery
    /// another consumer holds now. Returns the lease's new end for `InProgress`.
    pub fn settle(
        &self,
        topic: &str,
        group: &str,
        seq: u64,
        count: u32,
        how: Settle,
    ) -> Result<Option<Instant>> {
        self.settle_lease(topic, group, seq, Some(count), how)
    }

    fn settle_lease(
        &self,
        topic: &str,
        group: &str,
        seq: u64,
        count: Option<u32>,
        how: Settle,
    ) -> Result<Option<Instant>> {
        let t = self.existing(topic)?;
        let mut st = lock(&t.state);
        if let Some(count) = count {
            st.check_lease(group, seq, count)?;
        }
        match how {
            Settle::Ack => return self.ack_locked(&t, st, group, &[seq]).map(|()| None),
            Settle::Nak(delay) => {
                st.nak(group, seq, delay)?;
                metrics::counter!(m::QUEUE_NAKD, "topic" => topic.to_owned()).increment(1);
            }
            Settle::InProgress => return st.in_progress(group, seq).map(Some),
            Settle::Term(reason) => {
                let dead = st.take_for_term(&self.store, group, seq, &format!("term: {reason}"))?;
                self.flusher.groups_changed();
                self.move_to_dlq(&mut st, vec![dead])?;
            }
        }
        drop(st);
        t.notify.notify_waiters();
        Ok(None)
    }

    /// Acks each of `leases` (seq, delivery count) that is still that
    /// delivery, in one write; skips those delivered again since or settled.
    /// Returns the seqs it acked.
    pub fn ack_leases(&self, topic: &str, group: &str, leases: &[(u64, u32)]) -> Result<Vec<u64>> {
        let t = self.existing(topic)?;
        let st = lock(&t.state);
        let seqs: Vec<u64> = leases
            .iter()
            .filter(|(seq, count)| st.check_lease(group, *seq, *count).is_ok())
            .map(|(seq, _)| *seq)
            .collect();
        if !seqs.is_empty() {
            self.ack_locked(&t, st, group, &seqs)?;
        }
        Ok(seqs)
    }

    /// Acknowledges several deliveries in one write; all or none (each must be pending).
    pub fn ack_many(&self, topic: &str, group: &str, seqs: &[u64]) -> Result<()> {
        let t = self.existing(topic)?;
        let st = lock(&t.state);
        self.ack_locked(&t, st, group, seqs)
    }

    /// Acks `seqs` of a topic whose lock the caller holds, then wakes its consumers.
    fn ack_locked(
        &self,
        t: &Topic,
        mut st: std::sync::MutexGuard<'_, TopicState>,
        group: &str,
        seqs: &[u64],
    ) -> Result<()> {
        st.ack(&self.store, group, seqs)?;
        self.flusher.groups_changed();
        metrics::counter!(m::QUEUE_ACKED, "topic" => st.cfg.name.clone()).increment(seqs.len() as u64);
        t.depth.set(st.msgs.count as f64);
        drop(st);
        t.notify.notify_waiters();
        Ok(())
    }

    /// Negative ack: deliver again after `delay`.
    pub fn nak(&self, topic: &str, group: &str, seq: u64, delay: Duration) -> Result<()> {
        self.settle_lease(topic, group, seq, None, Settle::Nak(delay))
            .map(drop)
    }

    /// A consumer that is gone hands back its delivery `count` of `seq`:
    /// ready for the group's other consumers at once. Nothing happens if the
    /// message was delivered again since (its lease expired) or settled.
    pub fn release(&self, topic: &str, group: &str, seq: u64, count: u32) -> Result<()> {
        let t = self.existing(topic)?;
        if lock(&t.state).release(group, seq, count) {
            t.notify.notify_waiters();
        }
        Ok(())
    }

    /// Still working on it: extends the lease by `ack_wait`.
    pub fn in_progress(&self, topic: &str, group: &str, seq: u64) -> Result<()> {
        self.settle_lease(topic, group, seq, None, Settle::InProgress)
            .map(drop)
    }

    /// Gives up on a delivery: moves it to the dead-letter topic now.
    pub fn term(&self, topic: &str, group: &str, seq: u64, reason: &str) -> Result<()> {
        self.settle_lease(topic, group, seq, None, Settle::Term(reason.to_owned()))
            .map(drop)
    }

    /// Wakes `topic`'s consumers, e.g. after a consumer's own bookkeeping
    /// of a settle (its credit) changed after the settle itself woke them.
    pub fn wake_consumers(&self, topic: &str) {
        if let Ok(t) = self.existing(topic) {
            t.notify.notify_waiters();
        }
    }

    /// A handle to wait for the next publish, nak or ack of `topic`. Create
    /// the [`TopicWaker::notified`] future *before* fetching, then await it
    /// when the fetch returned nothing: no wakeup is missed.
    pub fn waker(&self, topic: &str) -> Result<TopicWaker> {
        Ok(TopicWaker(self.topic(topic)?))
    }

    /// Figures of every topic, by name.
    pub fn stats(&self) -> Vec<TopicStats> {
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut v: Vec<TopicStats> = topics
            .iter()
            .map(|t| {
                let st = lock(&t.state);
                TopicStats {
                    topic: st.cfg.name.clone(),
                    kind: st.cfg.kind,
                    depth: st.msgs.count,
                    bytes: st.msgs.bytes,
                    published: st.published,
                    next_seq: st.msgs.next_seq,
                    groups: st.group_stats(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.topic.cmp(&b.topic));
        v
    }
}

/// Writes every topic's open chunk to sled: the flusher calls it before each
/// sled flush, so a checkpoint covers every message the log held.
fn seal_all(store: SledStore, topics: TopicMap) -> flusher::Seal {
    Box::new(move || {
        let all: Vec<Arc<Topic>> = topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for t in all {
            let mut st = lock(&t.state);
            st.msgs
                .seal(&store)
                .map_err(|e| format!("cannot write a chunk of messages: {e}"))?;
            st.persist_groups(&store)
                .map_err(|e| format!("cannot write the consumer groups' state: {e}"))?;
        }
        Ok(())
    })
}

/// Waits for activity on one topic.
#[derive(Clone)]
pub struct TopicWaker(Arc<Topic>);

impl std::fmt::Debug for TopicWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopicWaker")
    }
}

impl TopicWaker {
    /// Resolves at the next publish, nak or ack of the topic.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.notify.notified()
    }
}

fn config_for(cfg: &QueueConfig, name: &str) -> TopicConfig {
    if let Some(t) = cfg.topics.iter().find(|t| t.name == name) {
        return t.clone();
    }
    if let Some(base) = name.strip_suffix(".dlq") {
        return TopicConfig::dlq_for(base);
    }
    TopicConfig {
        name: name.to_owned(),
        ..cfg.defaults.clone()
    }
}

/// Puts back the confirmed messages the log holds and sled does not (see
/// [`wal`]), and makes them durable in sled (the log, opened on a new generation, starts over).
fn replay(store: &SledStore, cfg: &QueueConfig, log: &wal::Wal) -> Result<()> {
    let (records, stopped, _) = log.read().map_err(|e| Error::Write {
        path: store.path().join(wal::FILE),
        source: e,
    })?;
    if let Some(why) = &stopped {
        // The tail of a write whose fdatasync never returned: never confirmed.
        tracing::warn!(why = %why, "queue log ends in a record that was never confirmed (a write cut by a crash); it is dropped");
    }
    if records.is_empty() {
        return Ok(());
    }
    let mut by_topic: std::collections::BTreeMap<String, Vec<Envelope>> = Default::default();
    for r in &records {
        let env = Envelope::decode(wal::FILE, r)?;
        by_topic.entry(env.topic.clone()).or_default().push(env);
    }
    let mut restored = 0usize;
    for (name, envs) in by_topic {
        check_name("topic", &name).map_err(Error::Invalid)?;
        let topic_cfg = config_for(cfg, &name);
        // Sled keeps a prefix of its writes: what it has not is a suffix of each topic.
        let durable_next = TopicState::load(store, topic_cfg.clone())?.msgs.stored_end();
        for env in envs {
            // A msg-id whose message sled kept may have lost its dedupe entry
            // (sled keeps a prefix of its writes): put those back too.
            if let (Some(id), true) = (env.headers.get(HDR_MSG_ID), topic_cfg.dedupe_window_secs > 0) {
                if store.get(&topic::dedupe_tree(&name), id)?.is_none() {
                    let mut v = env.seq.to_be_bytes().to_vec();
                    v.extend_from_slice(&env.timestamp_us.to_be_bytes());
                    store.insert(&topic::dedupe_tree(&name), id, &v)?;
                }
            }
            if env.seq >= durable_next {
                store.insert(&msg_tree(&name), &env.seq.to_be_bytes(), &env.encode()?)?;
                restored += 1;
            }
        }
    }
    // Durable in sled now; the log, opened on a new generation, starts over.
    store.flush()?;
    tracing::info!(
        records = records.len(),
        restored,
        "queue log replayed: confirmed messages sled had not made durable are back"
    );
    Ok(())
}
