//! The `storage_*` and `challenge_*` methods.

use base64::Engine as _;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use libp2p::PeerId;
use serde_json::{json, Value};

use super::guard::who;
use super::methods::{audited, Audited};
use super::NodeContext;
use crate::challenge::Challenger;
use crate::storage::{parse_root, Storage};

/// Error code: storage is not running.
const STORAGE_OFF: i32 = -32060;
/// Error code: a storage request was refused (the message says why).
const STORAGE_REFUSED: i32 = -32061;
/// Error code: a challenge could not be run.
const CHALLENGE_REFUSED: i32 = -32062;
/// Largest chunk per `storage_put_chunk` / `storage_get`, bytes.
const CHUNK_MAX: u64 = 512 * 1024;

fn storage(ctx: &NodeContext) -> Result<&Storage, ErrorObjectOwned> {
    ctx.storage.as_ref().ok_or_else(|| {
        ErrorObjectOwned::owned(STORAGE_OFF, "storage is not running on this node", None::<()>)
    })
}

fn challenger(ctx: &NodeContext) -> Result<&Challenger, ErrorObjectOwned> {
    ctx.challenger.as_ref().ok_or_else(|| {
        ErrorObjectOwned::owned(
            STORAGE_OFF,
            "challenges are not running on this node (network disabled?)",
            None::<()>,
        )
    })
}

fn refused(e: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(STORAGE_REFUSED, e.to_string(), None::<()>)
}

fn usage(u: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INVALID_PARAMS_CODE,
        format!("expected params {u}"),
        None::<()>,
    )
}

fn args(p: &Params<'_>, u: &str, min: usize, max: usize) -> Result<Vec<Value>, ErrorObjectOwned> {
    let v: Vec<Value> = p.parse().map_err(|_| usage(u))?;
    if v.len() < min || v.len() > max {
        return Err(usage(u));
    }
    Ok(v)
}

fn u64_at(v: &[Value], i: usize, u: &str) -> Result<u64, ErrorObjectOwned> {
    v.get(i).and_then(Value::as_u64).ok_or_else(|| usage(u))
}

fn str_at<'a>(v: &'a [Value], i: usize, u: &str) -> Result<&'a str, ErrorObjectOwned> {
    v.get(i).and_then(Value::as_str).ok_or_else(|| usage(u))
}

fn dataset_root(s: &Storage, key: &str) -> Result<[u8; 32], ErrorObjectOwned> {
    let d = s.find(key).map_err(refused)?;
    parse_root(&d.replica_root).map_err(refused)
}

/// `[peer_id]` or `[peer_id, dataset]`: the challenger, the peer and its announced dataset.
fn challenge_target<'a>(
    p: &Params<'_>,
    ctx: &'a NodeContext,
) -> Result<(&'a Challenger, PeerId, crate::storage::Announced), ErrorObjectOwned> {
    let u = "[peer_id] or [peer_id, dataset] (dataset: its R or R_p)";
    let v = args(p, u, 1, 2)?;
    let peer: PeerId = str_at(&v, 0, u)?.parse().map_err(|_| usage(u))?;
    let c = challenger(ctx)?;
    let target = c
        .target(&peer, v.get(1).and_then(Value::as_str))
        .map_err(refused)?;
    Ok((c, peer, target))
}

pub(super) fn register(m: &mut RpcModule<NodeContext>) {
    m.register_method(
        "storage_put_begin",
        |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let u = "[name, size_bytes]";
            let v = args(&p, u, 2, 2)?;
            let id = storage(ctx)?
                .put_begin(str_at(&v, 0, u)?, u64_at(&v, 1, u)?)
                .map_err(refused)?;
            Ok(json!({ "upload": id, "chunk_bytes": CHUNK_MAX }))
        },
    )
    .expect("unique");
    m.register_method(
        "storage_put_chunk",
        |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let u = "[upload, offset, data_base64] with at most 524288 bytes of data";
            let v = args(&p, u, 3, 3)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(str_at(&v, 2, u)?)
                .map_err(|e| usage(&format!("{u} (data: {e})")))?;
            if bytes.len() as u64 > CHUNK_MAX {
                return Err(usage(u));
            }
            let written = storage(ctx)?
                .put_chunk(u64_at(&v, 0, u)?, u64_at(&v, 1, u)?, &bytes)
                .map_err(refused)?;
            Ok(json!({ "written": written }))
        },
    )
    .expect("unique");
    m.register_method(
        "storage_put_finish",
        |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
            let u = "[upload]";
            let v = args(&p, u, 1, 1)?;
            let id = u64_at(&v, 0, u)?;
            let s = storage(ctx)?.clone();
            // Checked now (a missing chunk is the caller's error), encoded as a
            // job: the call returns at once and the encoding goes on without
            // the client; `storage_job` follows it.
            let job = s.put_ready(id).map_err(refused)?;
            let (audit, who) = (ctx.audit.clone(), who(ext));
            let (s2, job2) = (s.clone(), job.clone());
            tokio::spawn(async move {
                let (s, job) = (s2, job2);
                let done = {
                    let s = s.clone();
                    tokio::task::spawn_blocking(move || s.put_finish(id)).await
                };
                match done {
                    Ok(Ok(info)) => {
                        // Announced whatever the audit log does: the dataset is stored.
                        s.announce_all().await;
                        audit.append_or_log(&who, "storage.put", json!(info));
                    }
                    Ok(Err(e)) => {
                        let d = json!({ "job": id, "name": job.name, "size": job.size, "error": e.to_string() });
                        audit.append_or_log(&who, "storage.put_failed", d);
                    }
                    Err(e) => {
                        let d = json!({ "job": id, "name": job.name, "error": format!("the encoder panicked: {e}") });
                        audit.append_or_log(&who, "storage.put_failed", d);
                    }
                }
            });
            Ok(json!(s.job(id).unwrap_or(job)))
        },
    )
    .expect("unique");
    m.register_method(
        "storage_put_abort",
        |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
            let v = args(&p, "[upload]", 1, 1)?;
            let id = u64_at(&v, 0, "[upload]")?;
            let s = storage(ctx)?;
            let aborted = s.put_abort(id, "aborted by the client");
            if aborted {
                let name = s.job(id).map(|j| j.name).unwrap_or_default();
                ctx.audit.append_or_log(
                    &who(ext),
                    "storage.put_aborted",
                    json!({ "job": id, "name": name }),
                );
            }
            Ok(json!({ "aborted": aborted }))
        },
    )
    .expect("unique");
    m.register_method("storage_job", |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let v = args(&p, "[job]", 1, 1)?;
        let id = u64_at(&v, 0, "[job]")?;
        let job = storage(ctx)?.job(id).ok_or_else(|| {
            refused(format!(
                "no job {id} (finished jobs are kept until 32 newer ones end; see storage_jobs)"
            ))
        })?;
        Ok(json!(job))
    })
    .expect("unique");
    m.register_method("storage_jobs", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        Ok(json!(storage(ctx)?.jobs()))
    })
    .expect("unique");
    m.register_method("storage_list", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        Ok(json!(storage(ctx)?.list().map_err(refused)?))
    })
    .expect("unique");
    m.register_method(
        "storage_announced",
        |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
            Ok(json!(storage(ctx)?.announced().map_err(refused)?))
        },
    )
    .expect("unique");
    m.register_async_method("storage_get", |p, ctx, _| async move {
        let u = "[dataset, offset, length] (dataset: name, R or R_p; length <= 524288)";
        let v = args(&p, u, 3, 3)?;
        let s = storage(&ctx)?.clone();
        let key = str_at(&v, 0, u)?.to_owned();
        let (offset, len) = (u64_at(&v, 1, u)?, u64_at(&v, 2, u)?);
        if len > CHUNK_MAX {
            return Err(usage(u));
        }
        let d = s.find(&key).map_err(refused)?;
        let root = parse_root(&d.replica_root).map_err(refused)?;
        let bytes = tokio::task::spawn_blocking(move || s.get(&root, offset, len))
            .await
            .map_err(refused)?
            .map_err(refused)?;
        let end = offset + bytes.len() as u64;
        Ok::<_, ErrorObjectOwned>(json!({
            "offset": offset,
            "size": d.size,
            "root": d.root,
            "eof": end >= d.size,
            "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }))
    })
    .expect("unique");
    m.register_async_method("storage_remove", |p, ctx, ext| async move {
        let u = "[dataset] (name, R or R_p)";
        let v = args(&p, u, 1, 1)?;
        let s = storage(&ctx)?.clone();
        let root = dataset_root(&s, str_at(&v, 0, u)?)?;
        // A withdrawal first: the data goes once the grace is over.
        let w = s.withdraw(&root).await.map_err(refused)?;
        let out = match &w {
            Some(w) => json!({
                "removed": true,
                "replica_root": w.replica_root,
                "withdrawn_at_ms": w.withdrawn_at_ms,
                "delete_at_ms": w.delete_at_ms,
            }),
            None => json!({ "removed": false }),
        };
        let entry = ctx.audit.append(
            &who(&ext),
            "storage.remove",
            json!({ "replica_root": hex::encode(root) }),
        );
        audited(Audited::After(out.clone()), "storage.remove", entry)?;
        Ok::<_, ErrorObjectOwned>(out)
    })
    .expect("unique");
    m.register_async_method("challenge_run", |p, ctx, ext| async move {
        let (c, peer, target) = challenge_target(&p, &ctx)?;
        let r = c
            .run(peer, &target)
            .await
            .map_err(|e| ErrorObjectOwned::owned(CHALLENGE_REFUSED, e.to_string(), None::<()>))?;
        let entry = ctx.audit.append(&who(&ext), "challenge.run", json!(r));
        audited(Audited::After(json!(r)), "challenge.run", entry)?;
        Ok::<_, ErrorObjectOwned>(json!(r))
    })
    .expect("unique");
    m.register_async_method("challenge_audit", |p, ctx, ext| async move {
        let (c, peer, target) = challenge_target(&p, &ctx)?;
        let epoch = ctx.epochs.as_ref().map_or(0, |ch| ch.head());
        let r = c
            .audit(peer, &target, epoch)
            .await
            .map_err(|e| ErrorObjectOwned::owned(CHALLENGE_REFUSED, e.to_string(), None::<()>))?;
        let passed = r.outcome == crate::challenge::audit::AUDIT_OK;
        let out = json!({
            "peer": peer.to_string(),
            "dataset": target.replica_root,
            "passed": passed,
            "detail": r.detail,
            "latency_ms": r.latency_ms,
        });
        let entry = ctx.audit.append(&who(&ext), "challenge.audit", out.clone());
        audited(Audited::After(out.clone()), "challenge.audit", entry)?;
        Ok::<_, ErrorObjectOwned>(out)
    })
    .expect("unique");
    m.register_method(
        "challenge_stats",
        |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let c = challenger(ctx)?;
            Ok(json!({
                "peers": c.stats(),
                "per_epoch": c.settings().per_epoch,
                "deadline_ms": c.settings().deadline.as_millis() as u64,
                "chunks": c.settings().chunks,
            }))
        },
    )
    .expect("unique");
    m.register_method(
        "challenge_attestations",
        |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let v: Vec<Value> = p.parse().unwrap_or_default();
            let limit = v.first().and_then(Value::as_u64).unwrap_or(100).min(10_000) as usize;
            Ok(json!(challenger(ctx)?.attestations(limit).map_err(refused)?))
        },
    )
    .expect("unique");
}
