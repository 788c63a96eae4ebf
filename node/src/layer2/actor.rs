//! `layer2`: the supervised actor that owns the watcher task. A crash (or
//! a restart by the operator) starts a new watcher, which reads every
//! channel afresh from the contract; payments and the channel protocol do
//! not depend on it.

use actix::prelude::*;

use super::Layer2;

/// The actor.
#[derive(Debug)]
pub struct Layer2Actor {
    l2: Layer2,
    task: Option<tokio::task::AbortHandle>,
}

impl Layer2Actor {
    /// An actor for `l2`.
    pub fn new(l2: Layer2) -> Self {
        Self { l2, task: None }
    }

    fn stop_task(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Actor for Layer2Actor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let t = tokio::spawn(self.l2.adapter.clone().watch(self.l2.heads.clone()));
        self.task = Some(t.abort_handle());
        vigil_actors::supervision::watch_task(ctx, t, "the layer2 watcher");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.stop_task();
    }
}

impl Supervised for Layer2Actor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.stop_task();
    }
}
