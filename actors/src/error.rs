use std::net::SocketAddr;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the node runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// sled reported an error.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// Another process holds the database lock.
    #[error("database {path} is locked by another process: is another vigil running on this data dir?")]
    Locked {
        /// The database folder.
        path: PathBuf,
    },
    /// The database belongs to another genesis.
    #[error("data dir was created for genesis {stored}, but this node runs genesis {expected}: use a fresh data dir or the genesis it was created with")]
    GenesisMismatch {
        /// Hash stored in `meta`.
        stored: String,
        /// Hash of the genesis this node runs.
        expected: String,
    },
    /// The database was written by a newer vigil.
    #[error(
        "database schema version {found} is newer than this vigil supports ({supported}): upgrade vigil"
    )]
    SchemaTooNew {
        /// Version found in `meta`.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// No `meta` record: the folder was never initialized.
    #[error("database {path} is not initialized: run `vigil init --data-dir DIR` first")]
    NotInitialized {
        /// The database folder.
        path: PathBuf,
    },
    /// A stored value does not decode.
    #[error("corrupt value in tree `{tree}`: {why}")]
    Corrupt {
        /// The tree.
        tree: String,
        /// What was wrong.
        why: String,
    },
    /// A listener (admin RPC or bus) could not bind.
    #[error("cannot bind the {what} to {addr}: {source}")]
    Bind {
        /// Which listener: `admin RPC`, `bus`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A file the node writes (cookie, rpc.url) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Bad input to the queue or bus: the message says what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// A p2p listen address is taken by another process: the message says which and what to do.
    #[error("{0}")]
    AddrInUse(String),
    /// A request to a peer got no answer in time: the message names the wait.
    #[error("{0}")]
    Timeout(String),
    /// The audit log could not take an entry (the store failed).
    #[error("cannot write the audit log: {0}")]
    AuditWrite(String),
    /// An operator change was made (in effect, with its audit entry) but
    /// the store could not flush it: a restart may undo it. The message
    /// says what to check.
    #[error("{0}")]
    ChangeNotDurable(String),
    /// The queue's flusher thread stopped before a write was durable: it is
    /// not confirmed.
    #[error("the queue flusher stopped before this write was durable, so it is not confirmed: see the node log for why, and restart the node")]
    NotDurable,
    /// No such topic.
    #[error("no topic `{0}`: publish to it first, or configure it under [[bus.topics]]")]
    UnknownTopic(String),
    /// Settling a message that is not pending.
    #[error("message {seq} of topic `{topic}` is not pending for group `{group}` (already acked, or never delivered)")]
    NotPending {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// Sequence number.
        seq: u64,
    },
    /// A dead-letter replay failed part way.
    #[error("replay of `{topic}.dlq` stopped after moving {moved} messages back to `{topic}` (they stay there): {why}")]
    ReplayStopped {
        /// The source topic.
        topic: String,
        /// Messages moved back before the failure.
        moved: u64,
        /// What failed.
        why: String,
    },
    /// Settling a delivery whose lease expired and which was delivered again
    /// since: the newer delivery is not this consumer's to settle.
    #[error("delivery {count} of message {seq} of topic `{topic}` (group `{group}`) is no longer leased to this consumer: its lease expired and it was delivered again (delivery {now})")]
    LeaseLost {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// Sequence number.
        seq: u64,
        /// The delivery the consumer holds.
        count: u32,
        /// The message's delivery count now.
        now: u32,
    },
}
