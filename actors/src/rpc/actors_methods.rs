//! The `actors_*` methods: the supervision tree, operator restarts, fault injection.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::guard::who;
use super::methods::{audited, Audited};
use super::NodeContext;

/// Error code: no such actor, or the operation does not apply to it.
const ACTOR_ERROR: i32 = -32020;
/// Error code: fault injection is disabled.
const FAULT_INJECTION_OFF: i32 = -32021;

fn err(code: i32, msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg.into(), None::<()>)
}

fn name_param(p: &Params<'_>) -> Result<String, ErrorObjectOwned> {
    p.one::<String>().map_err(|_| {
        ErrorObjectOwned::owned(
            jsonrpsee::types::error::INVALID_PARAMS_CODE,
            "expected one param: the actor name, e.g. [\"store\"] (see actors_tree)",
            None::<()>,
        )
    })
}

pub(super) fn register(module: &mut RpcModule<NodeContext>) {
    module
        .register_method("actors_tree", |_, ctx, _| {
            let nodes: Vec<Value> = ctx
                .registry
                .entries()
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "parent": e.parent,
                        "kind": e.kind,
                        "strategy": e.strategy,
                        "restart": e.restart,
                        "status": e.status(),
                        "restarts": e.restarts(),
                        "last_panic": e.last_panic(),
                        "uptime_secs": e.uptime().map(|d| d.as_secs_f64()),
                        "mailbox_depth": e.mailbox_depth(),
                        "paused": ctx.monitor.as_ref().is_some_and(|m| m.hub.pauses().is_paused(e.name)),
                    })
                })
                .collect();
            Value::Array(nodes)
        })
        .expect("method names are unique");
    module
        .register_async_method("actors_restart", |params, ctx, ext| async move {
            let name = name_param(&params)?;
            tracing::warn!(actor = %name, "restart requested over RPC");
            let entry = ctx
                .audit
                .append(&who(&ext), "actors.restart", json!({ "actor": name }));
            audited(Audited::Before, "actors.restart", entry)?;
            ctx.registry
                .restart(&name)
                .await
                .map_err(|e| err(ACTOR_ERROR, e))?;
            Ok::<_, ErrorObjectOwned>(json!({ "restarted": name }))
        })
        .expect("method names are unique");
    module
        .register_async_method("actors_inject_panic", |params, ctx, ext| async move {
            let name = name_param(&params)?;
            if !ctx.fault_injection {
                return Err(err(
                    FAULT_INJECTION_OFF,
                    "fault injection is disabled: set debug.fault_injection = true in the config (never on a production node)",
                ));
            }
            tracing::warn!(actor = %name, "panic injected over RPC");
            let entry = ctx.audit.append(&who(&ext), "actors.inject_panic", json!({ "actor": name }));
            audited(Audited::Before, "actors.inject_panic", entry)?;
            ctx.registry.inject_panic(&name).await.map_err(|e| err(ACTOR_ERROR, e))?;
            Ok(json!({ "injected": name }))
        })
        .expect("method names are unique");
    module
        .register_method("actors_dead_letters", |_, ctx, _| {
            serde_json::to_value(ctx.registry.dead_letters()).unwrap_or_default()
        })
        .expect("method names are unique");
}
