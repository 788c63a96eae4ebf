//! Topic and queue configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfirmMode;

/// How long a topic keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    /// Work queue: a message is deleted once every consumer group acked it.
    Queue,
    /// Stream: messages are kept by count, bytes and age, whatever the acks.
    Stream,
}

/// One durable topic's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name: 1..=200 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Retention kind.
    pub kind: TopicKind,
    /// Deliveries without an ack before the message moves to `<topic>.dlq` (0 = never).
    pub max_deliver: u32,
    /// Lease of one delivery, ms; unacked after it, the message is delivered again.
    pub ack_wait_ms: u64,
    /// Unacked deliveries per consumer group at once (1 = strict order).
    pub max_in_flight: u32,
    /// Stream retention: most messages kept (0 = no limit).
    pub max_msgs: u64,
    /// Stream retention: most bytes kept (0 = no limit).
    pub max_bytes: u64,
    /// Stream retention: oldest message age, seconds (0 = no limit).
    pub max_age_secs: u64,
    /// A `msg-id` header seen within this window is not stored again, seconds (0 = off).
    pub dedupe_window_secs: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: TopicKind::Queue,
            max_deliver: 20,
            ack_wait_ms: 30_000,
            max_in_flight: 1000,
            max_msgs: 0,
            max_bytes: 0,
            max_age_secs: 0,
            dedupe_window_secs: 120,
        }
    }
}

impl TopicConfig {
    /// The lease length.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }

    /// Settings of the dead-letter topic of `topic`: a stream that keeps everything.
    pub fn dlq_for(topic: &str) -> Self {
        Self {
            name: format!("{topic}.dlq"),
            kind: TopicKind::Stream,
            max_deliver: 0,
            dedupe_window_secs: 0,
            ..Self::default()
        }
    }
}

/// Settings of the queue engine.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// When publishes are confirmed.
    pub confirm: ConfirmMode,
    /// Largest payload accepted, bytes.
    pub max_payload_bytes: usize,
    /// Topics with their own settings; others get `defaults` on first use.
    pub topics: Vec<TopicConfig>,
    /// Settings of topics created on first use.
    pub defaults: TopicConfig,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            confirm: ConfirmMode::Always,
            max_payload_bytes: 1 << 20,
            topics: Vec::new(),
            defaults: TopicConfig::default(),
        }
    }
}

/// Longest topic name, so that its dead-letter topic `<topic>.dlq` is a valid name too.
pub const MAX_TOPIC_LEN: usize = 196;

/// Checks a topic name: like [`check_name`], and at most [`MAX_TOPIC_LEN`]
/// bytes unless it is a dead-letter topic (`.dlq`), whose dead letters could
/// otherwise never move.
pub fn check_topic(name: &str) -> Result<(), String> {
    check_name("topic", name)?;
    if name.len() > MAX_TOPIC_LEN && !name.ends_with(".dlq") {
        return Err(format!(
            "topic {name:?} is {} bytes: at most {MAX_TOPIC_LEN}, so that its dead-letter topic `<topic>.dlq` fits in 200",
            name.len()
        ));
    }
    Ok(())
}

/// Checks a topic or group name; the error says what is allowed.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is invalid: use 1 to 200 of A-Z a-z 0-9 . _ -"
        ))
    }
}
