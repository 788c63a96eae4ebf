//! `rpc.discover`: an OpenRPC 1.2.6 document of every method, its params,
//! result and role, built from [`SIGNATURES`] and the role table. Tests check
//! that every served method has a signature and a role and that nothing
//! describes a method that is not served, so the document cannot drift.

use serde_json::{json, Value};

use super::roles::role_of;

/// `(method, params, result type, summary)`. Params are `name:type`,
/// comma-separated, `?` after the name when optional; types are `string`,
/// `integer`, `boolean` or `amount` (wei: an integer or a string such as
/// `"2.5gwei"`).
pub(super) const SIGNATURES: [(&str, &str, &str, &str); 64] = [
    ("rpc.discover", "", "object", "This OpenRPC document"),
    (
        "node_info",
        "",
        "object",
        "Identity, genesis, data dir, listen addresses, uptime",
    ),
    ("node_health", "", "object", "Status, readiness, uptime"),
    ("node_shutdown", "", "string", "Stop the node cleanly"),
    ("actors_tree", "", "array", "The supervision tree"),
    (
        "actors_restart",
        "name:string",
        "object",
        "Stop and restart an actor",
    ),
    (
        "actors_inject_panic",
        "name:string",
        "object",
        "Make an actor panic (debug.fault_injection)",
    ),
    (
        "actors_dead_letters",
        "",
        "array",
        "Messages that crashed their handler too often",
    ),
    ("bus_topics", "", "object", "Live and durable topics"),
    ("bus_apps", "", "array", "Apps on the bus and their grants"),
    (
        "bus_app_add",
        "name:string",
        "object",
        "Add an app; its token is shown once",
    ),
    (
        "bus_app_remove",
        "name:string",
        "object",
        "Remove an app and close its sessions",
    ),
    (
        "bus_grant",
        "app:string, verb:string, pattern:string",
        "object",
        "Grant a verb on a pattern",
    ),
    (
        "bus_revoke",
        "app:string, verb:string, pattern:string",
        "object",
        "Revoke a grant",
    ),
    (
        "queue_stats",
        "topic?:string",
        "array",
        "Durable queues and their consumer groups",
    ),
    (
        "queue_dlq",
        "topic:string, from_seq?:integer, limit?:integer",
        "object",
        "A page of a topic's dead letters",
    ),
    (
        "queue_dlq_replay",
        "topic:string",
        "object",
        "Move a topic's dead letters back",
    ),
    (
        "audit_list",
        "from?:integer, limit?:integer",
        "array",
        "Audit log entries",
    ),
    (
        "audit_verify",
        "",
        "object",
        "Check the audit chain and its signed checkpoints",
    ),
    (
        "keys_add",
        "name:string, role:string",
        "object",
        "Make an API key; its secret is shown once",
    ),
    ("keys_list", "", "array", "API keys, without secrets"),
    (
        "keys_revoke",
        "name:string",
        "object",
        "Revoke an API key at once",
    ),
    (
        "net_info",
        "",
        "object",
        "Peer id, addresses, protocols, peer counts",
    ),
    ("net_peers", "", "array", "Connected peers"),
    ("net_bans", "", "array", "Banned peers and addresses"),
    (
        "net_ban",
        "peer_id:string, secs?:integer, reason?:string",
        "object",
        "Ban a peer",
    ),
    (
        "net_unban",
        "peer:string",
        "object",
        "Lift a peer's or an address's ban",
    ),
    ("net_dial", "multiaddr:string", "object", "Dial an address"),
    ("net_probe", "", "object", "Publish a gossip probe"),
    ("net_probes", "", "array", "Gossip probes seen"),
    (
        "net_gossip_seen",
        "since_us?:integer",
        "array",
        "Gossip published or received first-hand, for propagation figures",
    ),
    ("epoch_head", "", "object", "The epoch head and sync state"),
    ("epoch_get", "number:integer", "object", "One epoch"),
    ("vdf_status", "", "object", "The VDF worker"),
    (
        "storage_put_begin",
        "name:string, size:integer",
        "object",
        "Start an upload",
    ),
    (
        "storage_put_chunk",
        "upload:integer, offset:integer, data_base64:string",
        "object",
        "Send a chunk of an upload",
    ),
    (
        "storage_put_finish",
        "upload:integer",
        "object",
        "Start encoding a complete upload as a job (returns at once)",
    ),
    ("storage_put_abort", "upload:integer", "object", "Drop an upload"),
    (
        "storage_job",
        "job:integer",
        "object",
        "An ingest job: phase, progress, times, dataset or error",
    ),
    (
        "storage_jobs",
        "",
        "array",
        "Ingest jobs, running and the newest finished",
    ),
    ("storage_list", "", "array", "Datasets stored here"),
    ("storage_announced", "", "array", "Datasets peers announced"),
    (
        "storage_get",
        "dataset:string, offset:integer, length:integer",
        "object",
        "Read plaintext back",
    ),
    (
        "storage_remove",
        "dataset:string",
        "object",
        "Withdraw and delete a dataset",
    ),
    (
        "challenge_run",
        "peer_id:string, dataset?:string",
        "object",
        "Challenge a peer now",
    ),
    (
        "challenge_audit",
        "peer_id:string, dataset?:string",
        "object",
        "Audit a peer now",
    ),
    ("challenge_stats", "", "object", "Challenge outcomes per peer"),
    (
        "challenge_attestations",
        "limit?:integer",
        "array",
        "Signed challenge attestations",
    ),
    ("continuity_status", "", "object", "Continuity chains"),
    (
        "continuity_proof",
        "dataset:string, epoch:integer",
        "object",
        "This node's continuity proof",
    ),
    (
        "continuity_check",
        "peer_id:string, replica_root:string, from:integer, to?:integer",
        "object",
        "Check a peer's continuity chain",
    ),
    ("continuity_roots", "", "array", "Roots peers committed"),
    ("chain_status", "", "array", "External chains followed"),
    (
        "chain_alerts",
        "limit?:integer",
        "array",
        "Detections on external chains",
    ),
    ("security_rules", "", "object", "Security rules and paused actors"),
    ("security_pause", "actor:string", "object", "Pause an actor"),
    ("security_resume", "actor:string", "object", "Resume an actor"),
    ("layer2_status", "", "object", "The Layer2 adapter"),
    (
        "layer2_open",
        "peer_id:string, deposit:amount, ask?:amount",
        "object",
        "Open a payment channel",
    ),
    (
        "layer2_pay",
        "channel:string, amount:amount, count?:integer",
        "object",
        "Pay over a channel",
    ),
    (
        "layer2_close",
        "channel:string, mode?:string",
        "object",
        "Close a channel",
    ),
    (
        "layer2_dispute",
        "channel:string",
        "object",
        "Answer an old posted state",
    ),
    ("layer2_channels", "", "array", "Payment channels"),
    (
        "layer2_channel",
        "channel:string",
        "object",
        "One payment channel",
    ),
];

fn schema(ty: &str) -> Value {
    match ty {
        "amount" => json!({ "oneOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }] }),
        "integer" => json!({ "type": "integer", "minimum": 0 }),
        other => json!({ "type": other }),
    }
}

/// The params of a signature as OpenRPC content descriptors.
fn params(sig: &str) -> Vec<Value> {
    sig.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, ty) = p.split_once(':').unwrap_or((p, "string"));
            let (name, required) = match name.strip_suffix('?') {
                Some(n) => (n, false),
                None => (name, true),
            };
            json!({ "name": name, "required": required, "schema": schema(ty) })
        })
        .collect()
}

/// The OpenRPC document.
pub(super) fn document(version: &str) -> Value {
    let methods: Vec<Value> = SIGNATURES
        .iter()
        .map(|(name, sig, result, summary)| {
            let role = role_of(name);
            json!({
                "name": name,
                "summary": summary,
                "paramStructure": "by-position",
                "params": params(sig),
                "result": { "name": "result", "schema": schema(result) },
                "x-role": role,
                "tags": [{ "name": format!("role:{role}") }],
            })
        })
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "vigil admin RPC",
            "version": version,
            "description": "Send `Authorization: Bearer TOKEN` (the node's cookie, or an API key). `x-role` is the least role a call needs: read < operator < admin.",
        },
        "methods": methods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_with_a_role_has_a_signature_and_no_other() {
        let described: std::collections::BTreeSet<&str> = SIGNATURES.iter().map(|s| s.0).collect();
        let with_roles: std::collections::BTreeSet<&str> = super::super::roles::methods().collect();
        assert_eq!(described.len(), SIGNATURES.len(), "a method is described twice");
        assert_eq!(described, with_roles);
    }

    #[test]
    fn params_become_content_descriptors() {
        let p = params("peer_id:string, secs?:integer, deposit:amount");
        assert_eq!(
            p[0],
            json!({ "name": "peer_id", "required": true, "schema": { "type": "string" } })
        );
        assert_eq!(p[1]["required"], false);
        assert_eq!(p[1]["schema"]["type"], "integer");
        assert!(p[2]["schema"]["oneOf"].is_array());
        assert!(params("").is_empty());
        let doc = document("1.2.3");
        assert_eq!(doc["openrpc"], "1.2.6");
        let ban = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "net_ban")
            .unwrap();
        assert_eq!(ban["x-role"], "admin");
    }
}
