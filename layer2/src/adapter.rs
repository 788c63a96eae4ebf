//! The contract between the node and a Layer2 adapter. The node runs each
//! adapter as a supervised actor and reaches it only through this trait:
//! the admin RPC (`layer2_*`), `vigilctl layer2`, the audit log and the bus
//! topic `layer2.events` are the same for every adapter.

use serde::{Deserialize, Serialize};

/// Why a Layer2 call failed; each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Layer2Error {
    /// No channel with this id here.
    #[error("no channel {0} here: see layer2_channels")]
    UnknownChannel(String),
    /// A payment larger than what the payer holds in the channel.
    #[error("cannot pay {amount}: this side holds {available} in channel {channel}")]
    InsufficientBalance {
        /// The channel.
        channel: String,
        /// Asked.
        amount: u128,
        /// This side's balance.
        available: u128,
    },
    /// The channel is not in a state that allows the call.
    #[error("channel {channel} is {state}: {what} needs it {needs}")]
    WrongState {
        /// The channel.
        channel: String,
        /// Its state now.
        state: ChannelState,
        /// The call.
        what: &'static str,
        /// The state the call needs.
        needs: &'static str,
    },
    /// A signature that is not the expected party's, or not a signature.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// New payments are paused (`pause:layer2`); the watcher still runs.
    #[error("payments are paused (pause:layer2); resume with security_resume")]
    Paused,
    /// The counterparty did not answer in time; nothing changed.
    #[error("the counterparty did not answer: {0}")]
    Unreachable(String),
    /// The settlement chain refused or failed a call.
    #[error("settlement chain: {0}")]
    Chain(String),
    /// This node's own storage failed.
    #[error("storage: {0}")]
    Store(String),
    /// Anything else the request got wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Amounts go to JSON as decimal strings of wei: a JSON number cannot
/// carry every u128 (nor can many clients' doubles).
mod wei {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    /// Opened on chain, waiting for the counterparty's deposit.
    Opening,
    /// Both deposits in: payments flow.
    Open,
    /// A state was posted on chain; its challenge window runs.
    Closing,
    /// Paid out.
    Closed,
}

impl std::fmt::Display for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Opening => "opening",
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Closed => "closed",
        })
    }
}

/// What `layer2_open` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRequest {
    /// The counterparty: its vigil peer id.
    pub peer: String,
    /// This side's deposit, in the chain's smallest unit.
    pub deposit: u128,
    /// What the counterparty is asked to deposit (it puts in at most its
    /// own limit, `layer2.max_join_deposit`).
    #[serde(default)]
    pub ask: u128,
}

/// How to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseMode {
    /// Both sign a final state: paid at once.
    Cooperative,
    /// Post our latest co-signed state; paid after the challenge window.
    Unilateral,
}

/// One channel as the RPC shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Adapter kind (`evm-channel`, ...).
    pub adapter: String,
    /// Channel id (hex).
    pub id: String,
    /// The counterparty's peer id.
    pub peer: String,
    /// Where it is.
    pub state: ChannelState,
    /// Latest co-signed nonce.
    pub nonce: u64,
    /// This side's balance.
    #[serde(with = "wei")]
    pub ours: u128,
    /// The counterparty's balance.
    #[serde(with = "wei")]
    pub theirs: u128,
    /// Both deposits: `ours + theirs` always equals it.
    #[serde(with = "wei")]
    pub capacity: u128,
}

/// A payment made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payment {
    /// The channel.
    pub channel: String,
    /// Amount paid.
    #[serde(with = "wei")]
    pub amount: u128,
    /// The co-signed nonce that carries it.
    pub nonce: u64,
    /// Our balance after it.
    #[serde(with = "wei")]
    pub ours: u128,
    /// Round trip of propose, co-sign, acknowledge, microseconds.
    pub latency_us: u64,
}

/// An adapter's health, for `layer2_status` and `/ready`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdapterStatus {
    /// Adapter kind.
    pub adapter: String,
    /// New payments paused (`pause:layer2`).
    pub paused: bool,
    /// Channels by state.
    pub channels: Vec<(ChannelState, usize)>,
    /// The watcher follows the settlement chain.
    pub watching: bool,
}

/// A Layer2 adapter: one kind of off-chain channel the node runs. Calls
/// change state only when they succeed; a failed call leaves the channel as
/// it was.
#[async_trait::async_trait]
pub trait Layer2Adapter: Send + Sync + std::fmt::Debug {
    /// The adapter's kind, as channels show it.
    fn kind(&self) -> &'static str;
    /// Opens a channel with a peer, depositing `deposit`.
    async fn open(&self, req: OpenRequest) -> Result<ChannelInfo, Layer2Error>;
    /// Pays `amount` to the counterparty: a new co-signed state.
    async fn pay(&self, channel: &str, amount: u128) -> Result<Payment, Layer2Error>;
    /// Closes a channel.
    async fn close(&self, channel: &str, mode: CloseMode) -> Result<ChannelInfo, Layer2Error>;
    /// Answers a stale close with our latest state (the watcher calls this
    /// by itself; operators may too).
    async fn dispute(&self, channel: &str) -> Result<ChannelInfo, Layer2Error>;
    /// One channel.
    async fn channel(&self, channel: &str) -> Result<ChannelInfo, Layer2Error>;
    /// Every channel.
    async fn list(&self) -> Result<Vec<ChannelInfo>, Layer2Error>;
    /// Health and counts.
    async fn status(&self) -> AdapterStatus;
    /// Stops (or resumes) new payments; never the watcher.
    fn pause(&self, paused: bool);
}
