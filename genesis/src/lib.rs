//! The vigil genesis: the parameters every node of one network agrees on.
//!
//! A genesis is a small TOML document (network name, creation time, bootnodes
//! and protocol parameters). Its identity is a BLAKE3 hash over a *canonical
//! binary encoding* of the parsed values, so reformatting, reordering or
//! re-commenting the TOML never changes it, while any parameter change does.
//! The first 8 bytes of that hash (`g8`) scope every wire protocol of the node.
//!
//! Two presets are embedded: `dev` (one node, cheap parameters) and `testnet`.
//!
//! ```
//! use vigil_genesis::Genesis;
//! let dev = Genesis::load("dev").unwrap();
//! assert_eq!(dev.network, "vigil-dev");
//! assert_eq!(dev.hash().short().len(), 16);
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod canonical;
mod error;
mod model;
mod presets;

pub use canonical::GenesisHash;
pub use error::{Error, Problem, Result};
pub use model::{AnchorParams, Genesis, Params, SecurityParams, VdfMode};
pub use presets::{Preset, PRESET_NAMES};
