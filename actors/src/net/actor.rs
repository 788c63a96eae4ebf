//! `net`: the supervised actor that owns the swarm task.
//!
//! The swarm runs on its own tokio task (its polling never waits behind an
//! actor's mailbox). The actor watches that task: if it panics, the actor
//! panics with the same message, so the supervisor restarts it and
//! `started()` launches a fresh swarm on the same ports. `stopped()` ends the
//! task (connections close; the peer book and bans are already on disk).

use actix::prelude::*;
use tokio::task::JoinHandle;

use super::{lock, Network};

/// The actor owning the swarm task.
#[derive(Debug)]
pub struct NetActor {
    net: Network,
    task: Option<JoinHandle<()>>,
    abort: Option<tokio::task::AbortHandle>,
}

impl NetActor {
    /// Wraps a swarm already launched (so bind errors surface at node start).
    pub fn new(net: Network, task: JoinHandle<()>) -> Self {
        Self {
            net,
            task: Some(task),
            abort: None,
        }
    }

    fn watch(&mut self, ctx: &mut Context<Self>) {
        let Some(task) = self.task.take() else {
            return;
        };
        let abort = task.abort_handle();
        crate::supervision::watch_task(ctx, task, "the swarm task");
        self.abort = Some(abort);
    }
}

impl Actor for NetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.task.is_some() {
            self.watch(ctx);
            return;
        }
        let net = self.net.clone();
        ctx.wait(
            async move { net.launch().await }
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok(task) => {
                        act.task = Some(task);
                        act.watch(ctx);
                    }
                    Err(e) => panic!("cannot relaunch the swarm: {e}"),
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.stop_task();
    }
}

impl NetActor {
    fn stop_task(&mut self) {
        *lock(&self.net.inner.cmd) = None;
        lock(&self.net.inner.snapshot).peers.clear();
        if let Some(a) = self.abort.take() {
            a.abort();
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Supervised for NetActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.stop_task();
    }
}
