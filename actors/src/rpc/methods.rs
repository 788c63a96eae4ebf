//! The `node_*` methods.

use std::sync::Arc;

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde_json::json;

use super::{NodeContext, ShutdownReason};

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
    super::key_methods::register(&mut module);
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
        .register_method("rpc.discover", |_, ctx, _| {
            super::discover::document(&ctx.info.version)
        })
        .expect("method names are unique");
    module
        .register_method("node_health", |_, ctx, _| {
            json!({
                "status": "ok",
                "ready": ctx.is_ready(),
                "uptime_secs": ctx.started.elapsed().as_secs(),
                "clock_offset_ms": crate::clock::offset_ms(),
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
        let keys = super::super::ApiKeys::open(audit.store().clone()).unwrap();
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
            keys,
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

    #[tokio::test]
    async fn every_served_method_has_a_role_and_every_role_row_a_method() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(SledStore::open(dir.path(), 1 << 20, None).unwrap()).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let m = module(context(audit, tx));
        let served: std::collections::BTreeSet<&str> = m.method_names().collect();
        let table: std::collections::BTreeSet<&str> = super::super::roles::methods().collect();
        let unlisted: Vec<_> = served.difference(&table).collect();
        assert!(
            unlisted.is_empty(),
            "served without a row in METHOD_ROLES (they would need admin): {unlisted:?}"
        );
        // The rest are served by the node above this crate (Layer2).
        let elsewhere: Vec<_> = table
            .difference(&served)
            .filter(|n| !n.starts_with("layer2_"))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "rows for methods nobody serves: {elsewhere:?}"
        );
    }

    #[test]
    fn the_docs_give_each_method_the_role_the_code_enforces() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rpc.md")).unwrap();
        let mut documented = std::collections::BTreeMap::new();
        for line in docs.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let [_, name, role, ..] = cells[..] {
                if let (Some(name), Ok(role)) = (
                    name.strip_prefix('`').and_then(|n| n.strip_suffix('`')),
                    role.parse::<super::super::Role>(),
                ) {
                    assert!(
                        documented.insert(name, role).is_none(),
                        "{name} twice in docs/rpc.md"
                    );
                }
            }
        }
        for (name, role) in super::super::METHOD_ROLES {
            assert_eq!(
                documented.remove(name),
                Some(role),
                "docs/rpc.md's role of `{name}`"
            );
        }
        assert!(
            documented.is_empty(),
            "docs/rpc.md lists methods the node does not serve: {documented:?}"
        );
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
