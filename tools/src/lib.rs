//! vigil operator tools. [`client`] finds a node's admin RPC (from its data
//! dir's `rpc.url` and `.cookie`, or explicit flags) and calls it; the
//! `vigilctl` binary turns the answers into tables or `--json`.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let ep = vigil_tools::client::Endpoint::resolve(Some(".vigil-dev".as_ref()), None, None)?;
//! let info = ep.call("node_info", serde_json::json!([])).await?;
//! println!("{}", info["peer_id"]);
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod bus;
pub use vigil_node::client;
