//! `store`: the first child of the root; owns the shared sled handle.
//!
//! Messages: [`Flush`] (fsync now, reply with bytes written). Other actors read
//! and write through their own clone of the [`SledStore`]; this actor exists so
//! that the database is flushed when the tree stops, after every actor started
//! later (and so stopped earlier) is gone. `restarting()` has nothing to
//! rebuild: the only state is the sled handle, which a panic cannot corrupt
//! (sled's own writes are atomic).

use actix::prelude::*;

use super::{SledStore, Store};
use crate::Result;

/// Flushes the database now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<usize>")]
pub struct Flush;

/// The actor owning the database handle.
#[derive(Debug)]
pub struct StoreActor {
    store: SledStore,
}

impl StoreActor {
    /// Wraps an opened store.
    pub fn new(store: SledStore) -> Self {
        Self { store }
    }

    fn flush_logged(&self) -> Result<usize> {
        let t0 = std::time::Instant::now();
        let r = self.store.flush();
        match &r {
            Ok(bytes) => tracing::info!(
                bytes,
                took_ms = t0.elapsed().as_secs_f64() * 1000.0,
                "database flushed"
            ),
            Err(e) => tracing::error!(error = %e, "database flush failed"),
        }
        r
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Logged inside; stopping goes on either way so the process can exit.
        let _ = self.flush_logged();
    }
}

impl Supervised for StoreActor {}

impl Handler<Flush> for StoreActor {
    type Result = Result<usize>;
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        self.flush_logged()
    }
}
