//! The `bus_*`, `queue_*` and `audit_*` methods.

use std::sync::Arc;

use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::guard::who;
use super::methods::{audit_error, audited, Audited};
use super::NodeContext;
use crate::bus::{Bus, Verb};

/// Error code: the bus is disabled.
const BUS_OFF: i32 = -32030;
/// Error code: the request was refused (bad name, unknown app, ...).
const BUS_REFUSED: i32 = -32031;

fn refused(e: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(BUS_REFUSED, e.to_string(), None::<()>)
}

/// An operator change to the bus's apps or grants that failed: refused as
/// bad input, or because its audit entry could not be written (then, like
/// every unauditable action, with the audit code; nothing changed).
fn change_refused(action: &str) -> impl Fn(crate::Error) -> ErrorObjectOwned + '_ {
    move |e| match e {
        crate::Error::AuditWrite(_) => audit_error(Audited::Before, action, &e),
        other => refused(other),
    }
}

fn bus(ctx: &NodeContext) -> Result<&Arc<Bus>, ErrorObjectOwned> {
    ctx.bus.as_ref().ok_or_else(|| {
        ErrorObjectOwned::owned(BUS_OFF, "the bus is disabled (bus.enabled = false)", None::<()>)
    })
}

fn strings<const N: usize>(p: &Params<'_>, usage: &str) -> Result<[String; N], ErrorObjectOwned> {
    let v: Vec<String> = p.parse().map_err(|_| params_error(usage))?;
    v.try_into().map_err(|_| params_error(usage))
}

fn params_error(usage: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INVALID_PARAMS_CODE,
        format!("expected params {usage}"),
        None::<()>,
    )
}

/// Params that may be absent, else a list of at most `max` items of type `T`.
fn optional_list<T: serde::de::DeserializeOwned>(
    p: &Params<'_>,
    max: usize,
    usage: &str,
) -> Result<Vec<T>, ErrorObjectOwned> {
    if p.as_str().is_none_or(|s| s.trim().is_empty()) {
        return Ok(Vec::new());
    }
    let v: Vec<T> = p.parse().map_err(|_| params_error(usage))?;
    if v.len() > max {
        return Err(params_error(usage));
    }
    Ok(v)
}

const DLQ_USAGE: &str = "[topic, from_seq?, limit?] (limit 1 to 1000, default 100)";

/// `[topic]`, `[topic, from_seq]` or `[topic, from_seq, limit]`.
fn dlq_args(p: &Params<'_>) -> Result<(String, u64, usize), ErrorObjectOwned> {
    let v: Vec<Value> = p.parse().map_err(|_| params_error(DLQ_USAGE))?;
    let topic = v.first().and_then(Value::as_str).map(str::to_owned);
    let from = v.get(1).map_or(Some(0), Value::as_u64);
    let limit = v
        .get(2)
        .map_or(Some(100), Value::as_u64)
        .filter(|n| (1..=1000).contains(n));
    match (topic, from, limit) {
        (Some(t), Some(f), Some(l)) if v.len() <= 3 => Ok((t, f, l as usize)),
        _ => Err(params_error(DLQ_USAGE)),
    }
}

fn grant_args(p: &Params<'_>) -> Result<(String, Verb, String), ErrorObjectOwned> {
    let [app, verb, pattern] = strings::<3>(
        p,
        "[app, verb, pattern], e.g. [\"shop\", \"publish\", \"orders.*\"]",
    )?;
    Ok((app, Verb::parse(&verb).map_err(refused)?, pattern))
}

pub(super) fn register(module: &mut RpcModule<NodeContext>) {
    let m = module;
    m.register_method("bus_topics", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let b = bus(ctx)?;
        let durable: Vec<Value> = b
            .queues()
            .stats()
            .into_iter()
            .map(|s| json!({ "topic": s.topic, "kind": s.kind, "depth": s.depth, "groups": s.groups.len() }))
            .collect();
        Ok(json!({ "live": b.live_topics(), "durable": durable, "ephemeral_patterns": b.settings().ephemeral_topics }))
    })
    .expect("unique");
    m.register_method("bus_apps", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let b = bus(ctx)?;
        let connected = b.connected();
        let apps: Vec<Value> = b
            .apps()
            .list()
            .into_iter()
            .map(|a| json!({ "name": a.name, "source": a.source, "grants": a.grants, "sessions": connected.get(&a.name).copied().unwrap_or(0) }))
            .collect();
        Ok(Value::Array(apps))
    })
    .expect("unique");
    m.register_method("bus_app_add", |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
        let [name] = strings::<1>(&p, "[name]")?;
        let token = bus(ctx)?
            .add_app(&name, &who(ext))
            .map_err(change_refused("bus.app_add"))?;
        Ok(json!({ "app": name, "token": token, "note": "shown once: only its hash is stored" }))
    })
    .expect("unique");
    m.register_method(
        "bus_app_remove",
        |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
            let [name] = strings::<1>(&p, "[name]")?;
            bus(ctx)?
                .remove_app(&name, &who(ext))
                .map_err(change_refused("bus.app_remove"))?;
            Ok(json!({ "removed": name }))
        },
    )
    .expect("unique");
    m.register_method("bus_grant", |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
        let (app, verb, pattern) = grant_args(&p)?;
        let new = bus(ctx)?
            .grant(&app, verb, &pattern, &who(ext))
            .map_err(change_refused("bus.grant"))?;
        Ok(json!({ "app": app, "verb": verb, "pattern": pattern, "new": new }))
    })
    .expect("unique");
    m.register_method("bus_revoke", |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
        let (app, verb, pattern) = grant_args(&p)?;
        bus(ctx)?
            .revoke(&app, verb, &pattern, &who(ext))
            .map_err(change_refused("bus.revoke"))?;
        Ok(json!({ "app": app, "verb": verb, "pattern": pattern, "revoked": true }))
    })
    .expect("unique");
    m.register_method("queue_stats", |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let only = optional_list::<String>(&p, 1, "[] or [topic]")?
            .into_iter()
            .next();
        let stats: Vec<_> = bus(ctx)?
            .queues()
            .stats()
            .into_iter()
            .filter(|s| only.as_ref().is_none_or(|t| &s.topic == t))
            .collect();
        serde_json::to_value(stats).map_err(refused)
    })
    .expect("unique");
    m.register_method("queue_dlq", |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let (topic, from, limit) = dlq_args(&p)?;
        let page = bus(ctx)?
            .queues()
            .dlq_list(&topic, from, limit)
            .map_err(refused)?;
        let items: Vec<Value> = page
            .items
            .into_iter()
            .map(|e| {
                let headers: serde_json::Map<String, Value> = e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
                    .collect();
                let mut v =
                    json!({ "seq": e.seq, "sender": e.sender, "ts_us": e.timestamp_us, "headers": headers });
                crate::bus::wire::put_payload(&mut v, &e.payload);
                v
            })
            .collect();
        Ok(json!({ "topic": topic, "items": items, "next": page.next }))
    })
    .expect("unique");
    m.register_async_method("queue_dlq_replay", |p, ctx, ext| async move {
        let [topic] = strings::<1>(&p, "[topic]")?;
        let b = bus(&ctx)?.clone();
        let r = b.queues().dlq_replay(&topic).await;
        // Audited however it ends: a replay that stopped part way moved some.
        let detail = match &r {
            Ok(moved) => Some(json!({ "topic": topic, "moved": moved })),
            Err(e @ crate::Error::ReplayStopped { moved, .. }) => {
                Some(json!({ "topic": topic, "moved": moved, "error": e.to_string() }))
            }
            Err(_) => None,
        };
        if let Some(d) = detail {
            // The outcome as the call answers it: `replayed`, and why it stopped.
            let mut outcome = json!({ "topic": topic, "replayed": d["moved"] });
            if let Some(e) = d.get("error") {
                outcome["error"] = e.clone();
            }
            let entry = ctx.audit.append(&who(&ext), "queue.dlq_replay", d);
            audited(Audited::After(outcome), "queue.dlq_replay", entry)?;
        }
        let moved = r.map_err(refused)?;
        Ok::<_, ErrorObjectOwned>(json!({ "topic": topic, "replayed": moved }))
    })
    .expect("unique");
    m.register_method("audit_list", |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let args = optional_list::<u64>(&p, 2, "[], [from] or [from, limit] (non-negative integers)")?;
        let from = args.first().copied().unwrap_or(0);
        let limit = args.get(1).copied().unwrap_or(1000).min(10_000) as usize;
        serde_json::to_value(ctx.audit.list(from, limit).map_err(refused)?).map_err(refused)
    })
    .expect("unique");
    m.register_method("audit_verify", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let peer: libp2p::PeerId = ctx
            .info
            .peer_id
            .parse()
            .map_err(|e| refused(format!("the node's peer id does not parse: {e}")))?;
        let report =
            crate::audit::checkpoint::verify(&ctx.audit, &ctx.info.data_dir, &peer).map_err(refused)?;
        Ok(json!(report))
    })
    .expect("unique");
}
