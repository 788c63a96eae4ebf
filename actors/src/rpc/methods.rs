//! The `node_*` methods.

use std::sync::Arc;

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde_json::json;

use super::{NodeContext, ShutdownReason};

/// Every method the admin RPC serves.
pub const METHODS: [&str; 57] = [
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
    "layer2_status",
    "layer2_open",
    "layer2_pay",
    "layer2_close",
    "layer2_dispute",
    "layer2_channels",
    "layer2_channel",
];
/// Methods that change state: they need the `operator` or `admin` role once
/// API keys exist; with the cookie (full access) they are allowed.
pub const UNSAFE_METHODS: [&str; 24] = [
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
    "layer2_open",
    "layer2_pay",
    "layer2_close",
    "layer2_dispute",
];

// jsonrpsee itself answers with -32000 to -32011 (busy, oversized,
// batches): the node's own codes start at -32012.

/// Error code: the node is shutting down already.
const SHUTTING_DOWN: i32 = -32012;

/// Error code: the audit log could not record an operator action.
pub const AUDIT_FAILED: i32 = -32013;

/// When an operator action's audit entry is written: before the action
/// (which is then refused if the entry cannot be written) or after it,
/// when the entry records its outcome: then the call fails with the
/// outcome it would have returned in the error's `data`, so the caller
/// learns both what happened and that it is not in the log.
#[derive(Debug, Clone)]
pub(super) enum Audited {
    Before,
    After(serde_json::Value),
}

/// Maps an audit append to the RPC's answer: an action is never done,
/// or reported done, without its entry silently missing.
pub(super) fn audited(when: Audited, action: &str, r: crate::Result<u64>) -> Result<(), ErrorObjectOwned> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(audit_error(when, action, &e)),
    }
}

/// The RPC error for `action` whose audit entry could not be written.
pub(super) fn audit_error(when: Audited, action: &str, e: &crate::Error) -> ErrorObjectOwned {
    tracing::error!(action, error = %e, "an operator action could not be audited");
    match when {
        Audited::Before => ErrorObjectOwned::owned(
            AUDIT_FAILED,
            format!("`{action}` refused, nothing was done: {e}; the node does not act on what it cannot audit (check the disk and the node's log)"),
            None::<()>,
        ),
        Audited::After(outcome) => ErrorObjectOwned::owned(
            AUDIT_FAILED,
            format!("`{action}` ran (its outcome is in this error's data), but {e}; check the disk and the node's log"),
            Some(outcome),
        ),
    }
}

pub(super) fn module(ctx: Arc<NodeContext>) -> RpcModule<NodeContext> {
    let extra = ctx.extra.clone();
    let mut module = RpcModule::from_arc(ctx);
    register(&mut module);
    super::actors_methods::register(&mut module);
    super::bus_methods::register(&mut module);
    super::net_methods::register(&mut module);
    super::epoch_methods::register(&mut module);
    super::storage_methods::register(&mut module);
    super::continuity_methods::register(&mut module);
    super::chain_methods::register(&mut module);
    if let Some(extra) = extra {
        module
            .merge(extra)
            .expect("extra methods do not reuse a name of the node's");
    }
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
            audited(
                Audited::Before,
                "node.shutdown",
                ctx.audit.append("rpc", "node.shutdown", json!({})),
            )?;
            ctx.shutdown.try_send(ShutdownReason::Rpc).map_err(|_| {
                ErrorObjectOwned::owned(SHUTTING_DOWN, "the node is already shutting down", None::<()>)
            })?;
            Ok("shutting down")
        })
        .expect("method names are unique");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Audit;
    use crate::store::SledStore;
    use jsonrpsee::core::EmptyServerParams;

    fn context(audit: Audit, shutdown: tokio::sync::mpsc::Sender<ShutdownReason>) -> Arc<NodeContext> {
        Arc::new(NodeContext {
            info: super::super::NodeInfo {
                version: "test".into(),
                peer_id: String::new(),
                genesis_name: "test".into(),
                genesis_hash: String::new(),
                data_dir: std::path::PathBuf::new(),
                listen_addrs: vec![],
                insecure_key: true,
                evm_address: String::new(),
            },
            started: std::time::Instant::now(),
            ready: Default::default(),
            shutdown,
            metrics: None,
            registry: Default::default(),
            fault_injection: false,
            bus: None,
            audit,
            net: None,
            ready_alone: true,
            epochs: None,
            storage: None,
            challenger: None,
            continuity: None,
            monitor: None,
            extra: None,
        })
    }

    #[tokio::test]
    async fn a_shutdown_the_audit_log_cannot_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let audit = Audit::open(store.clone()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let m = module(context(audit.clone(), tx));

        store.fail_writes_after(0);
        let e = m
            .call::<_, String>("node_shutdown", EmptyServerParams::new())
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`node.shutdown` refused, nothing was done") && msg.contains("injected"),
            "{msg}"
        );
        assert!(rx.try_recv().is_err(), "the shutdown was not started");
        assert!(audit.list(0, 10).unwrap().is_empty());
    }

    #[test]
    fn an_action_done_but_not_audited_fails_with_its_outcome() {
        let e = crate::Error::AuditWrite("disk full".into());
        let r = audit_error(Audited::After(json!({ "removed": true })), "storage.remove", &e);
        assert_eq!(r.code(), AUDIT_FAILED);
        assert!(
            r.message().contains("`storage.remove` ran") && r.message().contains("disk full"),
            "{}",
            r.message()
        );
        assert_eq!(r.data().map(|d| d.get()), Some(r#"{"removed":true}"#));
        let r = audit_error(Audited::Before, "net.dial", &e);
        assert!(
            r.message().starts_with("`net.dial` refused, nothing was done"),
            "{}",
            r.message()
        );
        assert!(r.data().is_none());
    }

    #[tokio::test]
    async fn a_shutdown_is_audited_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(SledStore::open(dir.path(), 1 << 20, None).unwrap()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let m = module(context(audit.clone(), tx));
        let ok: String = m.call("node_shutdown", EmptyServerParams::new()).await.unwrap();
        assert_eq!(ok, "shutting down");
        assert_eq!(rx.try_recv().unwrap(), ShutdownReason::Rpc);
        assert_eq!(audit.list(0, 10).unwrap()[0].action, "node.shutdown");
    }
}
