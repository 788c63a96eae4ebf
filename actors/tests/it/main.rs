//! Integration tests of the supervision runtime with real actix actors,
//! real panics and a real sled database.
#![allow(unreachable_pub)]

mod anchor;
mod chain;
mod continuity;
mod epochs;
mod net;
mod probe;
mod queue;
mod restart;
mod strategies;
mod util;
mod workers;
