//! The vigil node: configuration, keys, the data dir, and the assembly of the
//! actor tree. The `vigil` binary (`src/main.rs`) only parses the command line
//! and calls [`commands::dispatch`].
//!
//! Bird's-eye view: [`config`] loads the layered [`config::Config`];
//! [`datadir`] creates and reads a data dir; [`keys`] keeps the node identity
//! encrypted at rest; [`node`] checks the data dir against its genesis and runs
//! the actors of `vigil-actors` until a signal or `node_shutdown`.
//!
//! ```
//! let cfg = vigil_node::config::Config::default();
//! assert!(cfg.problems().is_empty());
//! assert!(cfg.rpc.addr.ip().is_loopback());
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod calibrate;
pub mod cli;
pub mod cli_assets;
pub mod client;
pub mod commands;
pub mod config;
pub mod datadir;
pub mod exit;
pub mod keys;
pub mod layer2;
pub mod logging;
pub mod node;
mod systemd;
