//! The node's runtime: storage, the admin RPC, and the actors that own them.
//!
//! Bird's-eye view:
//! - [`store`]: sled behind the small [`store::Store`] trait, versioned values,
//!   and the `meta` checks (schema version, genesis hash) done at open.
//! - [`rpc`]: the admin JSON-RPC server (HTTP + WebSocket on one address) with
//!   cookie auth, `/health`, `/ready` and `/metrics`.
//! - [`net`]: the libp2p network; [`epoch`]: the VDF worker and the epoch chain.
//! - [`supervision`]: restart-on-crash supervision with OTP semantics: the
//!   actor tree, its registry, poison-message handling and workers.
//!
//! ```no_run
//! # use vigil_actors::store::{open_node_db, OpenMode, StoreOptions};
//! # let genesis = vigil_genesis::Genesis::load("dev").unwrap();
//! let db = open_node_db("/tmp/vigil/db".as_ref(), genesis.hash(), OpenMode::Create, &StoreOptions::default()).unwrap();
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audit;
pub mod bus;
pub mod chain;
pub mod challenge;
pub mod clock;
pub mod continuity;
pub mod epoch;
mod error;
pub mod metrics;
pub mod net;
pub mod queue;
pub mod rpc;
pub mod storage;
pub mod store;
pub mod supervision;

pub use error::{Error, Result};
