//! `bus`: child of the root between `store` and `rpc`; owns the bus listeners.
//!
//! `stopped()` stops accepting and removes the Unix socket; `started()` after a
//! stop binds again on the address first bound (so `bus.url` stays valid).
//! Sessions and the queue engine live outside the actor, so a crash restart
//! rebuilds nothing: queue state is in sled and in the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{start, Bus, RunningBus};

/// The actor owning the bus listeners.
#[derive(Debug)]
pub struct BusActor {
    bus: Arc<Bus>,
    addr: SocketAddr,
    running: Option<RunningBus>,
}

impl BusActor {
    /// Wraps listeners already started (so bind errors surface at node start).
    pub fn new(bus: Arc<Bus>, running: RunningBus) -> Self {
        Self {
            bus,
            addr: running.ws_addr,
            running: Some(running),
        }
    }
}

impl Actor for BusActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() {
            return;
        }
        let (bus, addr) = (self.bus.clone(), self.addr);
        ctx.wait(
            async move {
                let mut last = None;
                for _ in 0..40 {
                    match start(bus.clone(), addr).await {
                        Ok(r) => return Ok(r),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(last)
            }
            .into_actor(self)
            .map(|r, act, _| match r {
                Ok(r) => act.running = Some(r),
                Err(e) => tracing::error!(
                    error = e.map(|e| e.to_string()).as_deref(),
                    "cannot restart the bus listeners"
                ),
            }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

impl Supervised for BusActor {}
