//! The role check in front of every method: the caller (from the HTTP
//! layer's credential check) must hold at least the role the method needs
//! ([`super::roles::METHOD_ROLES`]), and its key must still exist: a key
//! revoked while a WebSocket connection is open stops working on the next
//! call. A denial is a JSON-RPC error that names the role needed, and an
//! audit entry (`rpc.denied`).

use std::future::Future;
use std::sync::Arc;

use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, BatchEntryErr, Notification, Request, RpcServiceT,
};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{Extensions, MethodResponse};
use serde_json::json;

use super::http::OverWebSocket;
use super::keys::Caller;
use super::listen::ClientAddr;
use super::rate::{RateLimits, RATE_LIMITED};
use super::roles::role_of;
use super::NodeContext;
use crate::metrics as m;

/// Error code: the caller's role is below the method's (`data`: `{needed, role}`).
pub const ROLE_REQUIRED: i32 = -32014;
/// Error code: the caller's API key was revoked (or never authenticated).
pub const KEY_REVOKED: i32 = -32015;

/// The caller's name for the audit log: `cookie`, `key:NAME`, or `rpc`
/// when the call did not come through the HTTP layer (in-process tests).
pub fn who(ext: &Extensions) -> String {
    ext.get::<Caller>()
        .map(|c| c.who.to_string())
        .unwrap_or_else(|| "rpc".into())
}

/// Checks roles, then calls the wrapped service.
#[derive(Debug, Clone)]
pub(super) struct Guard<S> {
    inner: S,
    ctx: Arc<NodeContext>,
    rate: Arc<RateLimits>,
}

impl<S> Guard<S> {
    pub(super) fn new(inner: S, ctx: Arc<NodeContext>, rate: Arc<RateLimits>) -> Self {
        Self { inner, ctx, rate }
    }

    /// A call on a WebSocket takes a token of its own (an HTTP request was
    /// limited as a whole by the HTTP layer).
    fn rate_limited(&self, ext: &Extensions) -> Option<ErrorObjectOwned> {
        ext.get::<OverWebSocket>()?;
        let who = ext
            .get::<Caller>()
            .map_or_else(|| Arc::from("rpc"), |c| c.who.clone());
        let client = ext.get::<ClientAddr>().map(|a| a.0.ip());
        let limited = self.rate.check(&who, client).err()?;
        let ms = limited.retry_after.as_millis() as u64;
        Some(ErrorObjectOwned::owned(
            RATE_LIMITED,
            limited.counted(),
            Some(json!({ "retry_after_ms": ms.max(1) })),
        ))
    }

    /// Why `method` is refused to the caller in `ext`, if it is.
    fn verdict(&self, method: &str, ext: &Extensions) -> Option<ErrorObjectOwned> {
        if let Some(e) = self.rate_limited(ext) {
            return Some(e);
        }
        let needed = role_of(method);
        let Some(caller) = ext.get::<Caller>() else {
            return Some(self.deny(
                method,
                "rpc",
                json!({ "method": method, "reason": "no credential" }),
                ErrorObjectOwned::owned(KEY_REVOKED, "no credential came with this call", None::<()>),
            ));
        };
        let role = match &caller.key {
            None => caller.role,
            Some(hash) => match self.ctx.keys.role(hash) {
                Some(r) => r,
                None => {
                    let msg = format!(
                        "the API key of this connection ({}) was revoked: ask an admin for a new one (vigilctl keys add)",
                        caller.who
                    );
                    return Some(self.deny(
                        method,
                        &caller.who,
                        json!({ "method": method, "reason": "revoked key" }),
                        ErrorObjectOwned::owned(KEY_REVOKED, msg, None::<()>),
                    ));
                }
            },
        };
        if role >= needed {
            return None;
        }
        let msg = format!(
            "`{method}` needs the {needed} role; {} has {role} (an admin can add a key with `vigilctl keys add NAME --role {needed}`)",
            caller.who
        );
        Some(self.deny(
            method,
            &caller.who,
            json!({ "method": method, "needed": needed, "role": role }),
            ErrorObjectOwned::owned(
                ROLE_REQUIRED,
                msg,
                Some(json!({ "needed": needed, "role": role })),
            ),
        ))
    }

    fn deny(
        &self,
        method: &str,
        who: &str,
        detail: serde_json::Value,
        e: ErrorObjectOwned,
    ) -> ErrorObjectOwned {
        metrics::counter!(m::RPC_DENIED, "method" => super::roles::known(method)).increment(1);
        tracing::info!(who, method, code = e.code(), "admin RPC call denied");
        // The denial stands whether or not it is recorded.
        self.ctx.audit.append_or_log(who, "rpc.denied", detail);
        e
    }
}

impl<S> RpcServiceT for Guard<S>
where
    S: RpcServiceT<MethodResponse = MethodResponse, BatchResponse = MethodResponse>
        + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = S::MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let denied = self.verdict(req.method_name(), req.extensions());
        let inner = self.inner.clone();
        async move {
            match denied {
                Some(e) => MethodResponse::error(req.id().into_owned(), e),
                None => inner.call(req).await,
            }
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        // Each call of a batch is checked on its own; a denied one is
        // answered with its error and the others run.
        for entry in batch.iter_mut() {
            if let Ok(BatchEntry::Call(req)) = entry {
                if let Some(e) = self.verdict(req.method_name(), req.extensions()) {
                    *entry = Err(BatchEntryErr::new(req.id().into_owned(), e));
                }
            }
        }
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        // Notifications run no method (the server answers nothing to them).
        self.inner.notification(n)
    }
}
