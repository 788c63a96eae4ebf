//! vigil's Layer2: the [`Layer2Adapter`] trait every adapter implements (a
//! payment channel today; Lightning, DLCs and RGB can follow without touching
//! the node), and the EVM payment channel's pieces: its co-signed EIP-712
//! [`state`]s and the bindings of its settlement [`contract`].
//!
//! This crate compiles apart from the actor runtime, so that the heavy chain
//! libraries it needs (alloy now, others later) do not rebuild the rest; the
//! node depends on it, never the other way.

pub mod account;
pub mod adapter;
pub mod amount;
pub mod contract;
pub mod evm;
pub mod ledger;
pub mod metrics;
pub mod state;
pub mod wire;

pub use account::Account;
pub use adapter::{
    AdapterStatus, ChannelInfo, ChannelState, CloseMode, Layer2Adapter, Layer2Error, OpenRequest, Payment,
};
pub use alloy::primitives::Address;
pub use evm::{EventSink, EvmChannels, EvmConfig, Transport};
pub use ledger::{Entry, Ledger};
pub use state::{channel_id, domain, SignedState, State};
