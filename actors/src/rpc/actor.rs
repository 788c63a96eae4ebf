//! `rpc`: the last child of the root; owns the admin RPC server.
//!
//! Messages: [`Shutdown`] stops accepting connections, waits for the server to
//! finish, removes `.cookie` and `rpc.url`, then stops the actor. The server
//! runs on the tokio runtime; the actor owns its handle so that stopping the
//! tree stops the server first. State is only the handle: a restart starts a
//! fresh server with a fresh cookie.

use actix::prelude::*;
use jsonrpsee::server::ServerHandle;
use std::path::PathBuf;

use super::cookie;
use crate::root::Shutdown;

/// The actor owning the RPC server handle.
#[derive(Debug)]
pub struct RpcActor {
    handle: ServerHandle,
    data_dir: PathBuf,
}

impl RpcActor {
    /// Wraps a started server.
    pub fn new(handle: ServerHandle, data_dir: PathBuf) -> Self {
        Self { handle, data_dir }
    }
}

impl Actor for RpcActor {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for RpcActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let handle = self.handle.clone();
        // Already stopped is fine: stop is idempotent for us.
        let _ = handle.stop();
        Box::pin(
            async move { handle.stopped().await }
                .into_actor(self)
                .map(|_, act, ctx| {
                    cookie::remove_files(&act.data_dir);
                    ctx.stop();
                }),
        )
    }
}
