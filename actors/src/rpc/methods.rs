//! The `node_*` methods.

use std::sync::Arc;

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde_json::json;

use super::{NodeContext, ShutdownReason};

/// Every method the admin RPC serves.
pub const METHODS: [&str; 50] = [
    "node_info",
    "node_health",
    "node_shutdown",
    "actors_tree",
    "actors_restart",
    "actors_inject_panic",
    "actors_dead_letters",
    "bus_topics",
    "bus_apps",
    "bus_app_add",
    "bus_app_remove",
    "bus_grant",
    "bus_revoke",
    "queue_stats",
    "queue_dlq",
    "queue_dlq_replay",
    "audit_list",
    "audit_verify",
    "net_info",
    "net_peers",
    "net_bans",
    "net_ban",
    "net_unban",
    "net_dial",
    "net_probe",
    "net_probes",
    "epoch_head",
    "epoch_get",
    "vdf_status",
    "storage_put_begin",
    "storage_put_chunk",
    "storage_put_finish",
    "storage_put_abort",
    "storage_list",
    "storage_announced",
    "storage_get",
    "storage_remove",
    "challenge_run",
    "challenge_audit",
    "challenge_stats",
    "challenge_attestations",
    "continuity_status",
    "continuity_proof",
    "continuity_roots",
    "continuity_check",
    "chain_status",
    "chain_alerts",
    "security_rules",
    "security_pause",
    "security_resume",
];
/// Methods that change state: they need the `operator` or `admin` role once
/// API keys exist; with the cookie (full access) they are allowed.
pub const UNSAFE_METHODS: [&str; 20] = [
    "node_shutdown",
    "actors_restart",
    "actors_inject_panic",
    "bus_app_add",
    "bus_app_remove",
    "bus_grant",
    "bus_revoke",
    "queue_dlq_replay",
    "net_ban",
    "net_unban",
    "net_dial",
    "net_probe",
    "storage_put_begin",
    "storage_put_chunk",
    "storage_put_finish",
    "storage_remove",
    "challenge_run",
    "challenge_audit",
    "security_pause",
    "security_resume",
];

/// Error code: the node is shutting down already.
const SHUTTING_DOWN: i32 = -32010;

pub(super) fn module(ctx: Arc<NodeContext>) -> RpcModule<NodeContext> {
    let mut module = RpcModule::from_arc(ctx);
    register(&mut module);
    super::actors_methods::register(&mut module);
    super::bus_methods::register(&mut module);
    super::net_methods::register(&mut module);
    super::epoch_methods::register(&mut module);
    super::storage_methods::register(&mut module);
    super::continuity_methods::register(&mut module);
    super::chain_methods::register(&mut module);
    module
}

fn register(module: &mut RpcModule<NodeContext>) {
    module
        .register_method("node_info", |_, ctx, _| {
            let mut v = serde_json::to_value(&ctx.info).unwrap_or_default();
            v["uptime_secs"] = json!(ctx.started.elapsed().as_secs());
            v
        })
        .expect("method names are unique");
    module
        .register_method("node_health", |_, ctx, _| {
            json!({
                "status": "ok",
                "ready": ctx.is_ready(),
                "uptime_secs": ctx.started.elapsed().as_secs(),
            })
        })
        .expect("method names are unique");
    module
        .register_method("node_shutdown", |_, ctx, _| -> Result<&str, ErrorObjectOwned> {
            tracing::warn!("shutdown requested over RPC");
            let _ = ctx.audit.append("rpc", "node.shutdown", json!({}));
            ctx.shutdown.try_send(ShutdownReason::Rpc).map_err(|_| {
                ErrorObjectOwned::owned(SHUTTING_DOWN, "the node is already shutting down", None::<()>)
            })?;
            Ok("shutting down")
        })
        .expect("method names are unique");
}
