//! `rpc`: the last child of the root; owns the admin RPC server.
//!
//! The server's connections run as tokio tasks; the actor owns the handle.
//! `stopped()` stops the server and removes `.cookie` and `rpc.url`.
//! `started()` (after a restart) starts a new server on the same address if the
//! old one was stopped, with a fresh cookie; after a crash that did not stop
//! it (a handler panic), the running server is kept and nothing is rebuilt.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{cookie, NodeContext, RpcSettings, RunningRpc};

/// The actor owning the RPC server.
#[derive(Debug)]
pub struct RpcActor {
    server: RunningRpc,
    settings: RpcSettings,
    ctx: Arc<NodeContext>,
}

impl RpcActor {
    /// Wraps a started server. Restarts rebind `server.local_addr`.
    pub fn new(server: RunningRpc, mut settings: RpcSettings, ctx: Arc<NodeContext>) -> Self {
        settings.addr = server.local_addr;
        Self {
            server,
            settings,
            ctx,
        }
    }
}

impl Actor for RpcActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.server.handle.is_stopped() {
            return;
        }
        let (settings, node) = (self.settings.clone(), self.ctx.clone());
        // Block this actor's mailbox until the server is back (the port may take
        // a moment to be released by the old one).
        ctx.wait(
            async move {
                let mut last = None;
                for _ in 0..40 {
                    match super::start(&settings, node.clone()).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(last)
            }
            .into_actor(self)
            .map(|res, act, _| match res {
                Ok(server) => act.server = server,
                // Leaves the actor running without a server; the error says why.
                Err(e) => tracing::error!(
                    error = e.map(|e| e.to_string()).as_deref(),
                    "cannot restart the admin RPC server"
                ),
            }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.server.handle.stop();
        cookie::remove_files(&self.settings.data_dir);
    }
}

impl Supervised for RpcActor {}
