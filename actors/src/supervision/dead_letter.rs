//! Dead letters: messages that crashed their handler too often. Kept in
//! memory for the RPC and, when the registry has a store, persisted in the sled
//! tree `dlq/actors` (key: big-endian microseconds since the Unix epoch and a
//! sequence number; value: format byte 1 + JSON). The durable bus moves them
//! to a bus topic once it exists.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

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
        let at_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
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

#[derive(Debug, Default)]
pub(crate) struct DeadLetters {
    store: Option<SledStore>,
    recent: Mutex<Vec<DeadLetter>>,
    seq: AtomicU64,
}

impl DeadLetters {
    pub(crate) fn new(store: Option<SledStore>) -> Self {
        Self {
            store,
            ..Self::default()
        }
    }

    pub(crate) fn record(&self, d: DeadLetter) {
        tracing::error!(actor = %d.actor, message_type = %d.message_type, panic = %d.panic, "message dead-lettered");
        if let Some(store) = &self.store {
            let mut key = d.at_unix_us.to_be_bytes().to_vec();
            key.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            let value = encode_value(FORMAT, &serde_json::to_vec(&d).unwrap_or_default());
            if let Err(e) = store.insert(DLQ_TREE, &key, &value).and_then(|_| store.flush()) {
                tracing::error!(error = %e, "cannot persist a dead letter");
            }
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
