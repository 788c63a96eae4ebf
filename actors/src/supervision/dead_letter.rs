//! Dead letters: messages that crashed their handler too often. Kept in
//! memory for the RPC and persisted: on the durable bus topic
//! `actors.dead-letters` when the node runs the bus (JSON payloads, consumable
//! like any topic), else in the sled tree `dlq/actors` (key: big-endian
//! microseconds since the Unix epoch and a sequence number; value: format
//! byte 1 + JSON).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::{encode_value, SledStore, Store};

/// Tree of persisted dead letters.
pub const DLQ_TREE: &str = "dlq/actors";
const FORMAT: u8 = 1;
const KEEP_IN_MEMORY: usize = 1000;

/// One dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The actor whose handler crashed.
    pub actor: String,
    /// Rust type of the message.
    pub message_type: String,
    /// `Debug` rendering of the message.
    pub message: String,
    /// The last panic message.
    pub panic: String,
    /// Crashes before it was parked.
    pub attempts: u32,
    /// Unix time, microseconds.
    pub at_unix_us: u64,
}

impl DeadLetter {
    pub(crate) fn new(
        actor: &str,
        message_type: &str,
        message: String,
        panic: String,
        attempts: u32,
    ) -> Self {
        let at_unix_us = crate::clock::unix_us();
        Self {
            actor: actor.to_owned(),
            message_type: message_type.to_owned(),
            message,
            panic,
            attempts,
            at_unix_us,
        }
    }
}

/// Where dead letters are persisted.
#[derive(Debug, Default)]
pub(crate) enum Sink {
    /// Memory only (tests of the runtime itself).
    #[default]
    Memory,
    /// The sled tree [`DLQ_TREE`].
    Tree(SledStore),
    /// The durable bus topic [`DLQ_TOPIC`] (a stream), like every other event.
    Topic(std::sync::Arc<crate::queue::Queues>),
}

/// Durable bus topic of actor dead letters (JSON payloads).
pub const DLQ_TOPIC: &str = "actors.dead-letters";

#[derive(Debug, Default)]
pub(crate) struct DeadLetters {
    sink: Sink,
    recent: Mutex<Vec<DeadLetter>>,
    seq: AtomicU64,
}

impl DeadLetters {
    pub(crate) fn new(sink: Sink) -> Self {
        Self {
            sink,
            ..Self::default()
        }
    }

    pub(crate) fn record(&self, d: DeadLetter) {
        tracing::error!(actor = %d.actor, message_type = %d.message_type, panic = %d.panic, "message dead-lettered");
        let json = serde_json::to_vec(&d).unwrap_or_default();
        let stored = match &self.sink {
            Sink::Memory => Ok(()),
            Sink::Tree(store) => {
                let mut key = d.at_unix_us.to_be_bytes().to_vec();
                key.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
                store
                    .insert(DLQ_TREE, &key, &encode_value(FORMAT, &json))
                    .and_then(|_| store.flush().map(|_| ()))
            }
            // Stored now; made durable by the next group-commit flush.
            Sink::Topic(q) => q
                .publish_nowait(
                    DLQ_TOPIC,
                    crate::queue::Publish {
                        sender: "node".into(),
                        payload: json,
                        ..Default::default()
                    },
                )
                .map(|_| ()),
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "cannot persist a dead letter");
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEEP_IN_MEMORY {
            recent.remove(0);
        }
        recent.push(d);
    }

    pub(crate) fn list(&self) -> Vec<DeadLetter> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
