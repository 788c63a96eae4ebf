//! Integration tests: the real `vigil` and `vigilctl` binaries on temp dirs and
//! 127.0.0.1 with OS-assigned ports. Every process is killed on drop.
#![allow(unreachable_pub)]

mod actors;
mod audit_log;
mod bad_input;
mod bus;
mod bus_cli;
mod bus_settle;
mod chain;
mod config_cli;
mod crash;
mod epochs;
mod genesis_cli;
mod lifecycle;
mod metrics;
mod rpc;
mod rpc_remote;
mod rpc_roles;
mod storage;
mod util;
