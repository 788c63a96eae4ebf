//! Restart-on-crash supervision with OTP semantics, on actix.
//!
//! A panic inside an actix handler normally closes the actor's mailbox and
//! loses every queued message. Here each actor's `ContextFut` is polled by a
//! *runner* inside `catch_unwind`; after a panic the supervisor decides, and a
//! restart calls the public `ContextFut::restart()`: the same [`actix::Addr`] keeps
//! working, queued messages are delivered, `Supervised::restarting()` rebuilds
//! state (from sled, never from the half-updated value) and `started()` runs
//! again. CPU-bound workers run on their own threads with their own
//! `catch_unwind` and are supervised the same way.
//!
//! Semantics (OTP's, plus what OTP lacks):
//! - child specs: id, [`Restart`] type, shutdown timeout; actors, workers and
//!   nested supervisors;
//! - [`Strategy`] `one_for_one`, `one_for_all`, `rest_for_one`;
//! - restart [`Intensity`] (default 3 in 5 s): exceeded, the supervisor stops its
//!   children in reverse order and escalates to its parent; the root giving up
//!   is reported by [`TreeHandle::gave_up`];
//! - [`Backoff`]: the first restart after a stable period is immediate, then
//!   100 ms doubling to 30 s, with ±20% jitter;
//! - poison messages: [`SupervisedAddr::call`] resends a message whose handler
//!   crashed, and after `K` crashes (default 3) writes it to the dead-letter
//!   store (the bus topic `actors.dead-letters` in the node) with the panic
//!   message instead of retrying forever;
//! - a [`Registry`] of named actors that always returns the live address;
//! - stop in reverse start order with per-child timeouts;
//! - metrics `vigil_actor_restarts_total`, `vigil_actor_up`,
//!   `vigil_actor_mailbox_depth`, `vigil_actor_last_restart_timestamp_seconds`.
//!
//! Restarting a child that did not crash (group restarts, `actors_restart`)
//! stops it (`stopping()`/`stopped()` run), then restarts it in place.
//!
//! ```no_run
//! use actix::prelude::*;
//! use vigil_actors::supervision::*;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//! impl Actor for Counter { type Context = Context<Self>; }
//! impl Supervised for Counter {
//!     fn restarting(&mut self, _: &mut Context<Self>) { self.0 = 0; /* reload from sled */ }
//! }
//!
//! # async fn f() {
//! let registry = Registry::default();
//! let spec = SupervisorSpec::new("root", Strategy::OneForOne)
//!     .child(ChildSpec::actor("counter", Counter::default));
//! let tree = start_tree(spec, registry.clone());
//! let counter = registry.get::<Counter>("counter").expect("registered");
//! # }
//! ```

mod catch;
mod core;
mod dead_letter;
mod registry;
mod runner;
mod spec;
mod supervisor;
mod task;
mod worker;

pub use self::core::{Core, Decision, Intensity, Restart, Strategy};
pub use catch::{catch, install_panic_hook};
pub use dead_letter::{DeadLetter, DLQ_TOPIC, DLQ_TREE};
pub use registry::{ActorEntry, CallError, ChildKind, Registry, Status, SupervisedAddr};
pub use spec::{Backoff, ChildSpec, SupervisorSpec};
pub use supervisor::{start_tree, TreeHandle};
pub use task::watch_task;
pub use worker::WorkerCtx;

/// Crashes of the same message before it is dead-lettered.
pub const POISON_AFTER: u32 = 3;
