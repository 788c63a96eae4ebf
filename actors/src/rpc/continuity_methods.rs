//! The `continuity_*` methods.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::NodeContext;
use crate::continuity::remote::MAX_CHECK_EPOCHS;
use crate::continuity::{Continuity, RootRecorder};
use crate::storage::parse_root;

/// Error code: continuity is not running.
const OFF: i32 = -32070;
/// Error code: no proof (no link for that epoch, unknown dataset...).
const NO_PROOF: i32 = -32071;

fn cont(ctx: &NodeContext) -> Result<&Continuity, ErrorObjectOwned> {
    ctx.continuity.as_ref().ok_or_else(|| {
        ErrorObjectOwned::owned(
            OFF,
            "continuity chains are not running (continuity.enabled = false)",
            None::<()>,
        )
    })
}

fn no_proof(e: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(NO_PROOF, e.to_string(), None::<()>)
}

const USAGE: &str = "expected params [dataset, epoch] (dataset: name, R or R_p; epoch >= 1)";

fn args(p: &Params<'_>) -> Result<(String, u64), ErrorObjectOwned> {
    let bad = || ErrorObjectOwned::owned(jsonrpsee::types::error::INVALID_PARAMS_CODE, USAGE, None::<()>);
    let v: Vec<Value> = p.parse().map_err(|_| bad())?;
    match v.as_slice() {
        [d, e] => Ok((
            d.as_str().ok_or_else(bad)?.to_owned(),
            e.as_u64().filter(|e| *e >= 1).ok_or_else(bad)?,
        )),
        _ => Err(bad()),
    }
}

pub(super) fn register(m: &mut RpcModule<NodeContext>) {
    m.register_async_method("continuity_check", |p, ctx, _| async move {
        let u = "expected params [peer_id, replica_root_hex, epoch] or [peer_id, replica_root_hex, from, to] (epochs >= 1, from <= to, at most 64 epochs)";
        let bad = || ErrorObjectOwned::owned(jsonrpsee::types::error::INVALID_PARAMS_CODE, u, None::<()>);
        let v: Vec<Value> = p.parse().map_err(|_| bad())?;
        let (peer, rp, from, to) = match v.as_slice() {
            [peer, rp, e] => (peer, rp, e, e),
            [peer, rp, from, to] => (peer, rp, from, to),
            _ => return Err(bad()),
        };
        let peer: libp2p::PeerId = peer.as_str().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let rp = parse_root(rp.as_str().ok_or_else(bad)?).map_err(|_| bad())?;
        let from = from.as_u64().filter(|e| *e >= 1).ok_or_else(bad)?;
        let to = to
            .as_u64()
            .filter(|t| *t >= from && *t - from < MAX_CHECK_EPOCHS)
            .ok_or_else(bad)?;
        let c = cont(&ctx)?.clone();
        let net = ctx
            .net
            .clone()
            .ok_or_else(|| no_proof("the network is disabled"))?;
        let chain = ctx.epochs.clone().ok_or_else(|| no_proof("no epoch chain"))?;
        let storage = ctx.storage.as_ref().ok_or_else(|| no_proof("no storage"))?;
        let roots = RootRecorder::new(storage.store());
        // Checked against the size the peer announced, never the one its proof carries.
        let Some(announced) = storage.announced_by(&peer, &rp).map_err(no_proof)? else {
            return Ok(json!({
                "verified": false, "peer": peer.to_string(), "epoch": to, "from": from, "to": to,
                "epochs_verified": 0, "break_epoch": from,
                "error": format!(
                    "peer {peer} announced no dataset {}: there is no size to check its proof against (see storage_announced)",
                    hex::encode(rp)
                ),
            }));
        };
        let r = c
            .check_chain(&net, &roots, &chain, peer, rp, announced.size, from, to)
            .await;
        let mut out = json!({
            "verified": r.broken.is_none(),
            "peer": peer.to_string(),
            "epoch": to,
            "from": from,
            "to": to,
            "epochs_verified": r.verified.len(),
        });
        if let Some(p) = r.verified.iter().rev().find(|p| p.evidence.epoch == to) {
            out["link"] = json!(hex::encode(p.evidence.link));
            out["prev_epoch"] = json!(p.evidence.prev_epoch);
            out["root"] = json!(hex::encode(p.evidence.root));
            out["chains"] = json!(p.evidence.path.chains);
        }
        if let Some((e, why)) = r.broken {
            out["break_epoch"] = json!(e);
            out["error"] = json!(format!("epoch {e}: {why}"));
        }
        Ok::<_, ErrorObjectOwned>(out)
    })
    .expect("unique");
    m.register_method(
        "continuity_status",
        |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let c = cont(ctx)?;
            let mut v = json!(c.status());
            v["chunks"] = json!(c.settings().chunks);
            v["group_size"] = json!(c.settings().group_size);
            v["region_size"] = json!(c.settings().region_size);
            Ok(v)
        },
    )
    .expect("unique");
    m.register_method(
        "continuity_roots",
        |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
            cont(ctx)?;
            let roots = RootRecorder::new(
                ctx.storage
                    .as_ref()
                    .map(|s| s.store())
                    .ok_or_else(|| no_proof("no storage"))?,
            )
            .list()
            .map_err(no_proof)?;
            Ok(json!(roots))
        },
    )
    .expect("unique");
    m.register_async_method("continuity_proof", |p, ctx, _| async move {
        let (dataset, epoch) = args(&p)?;
        let c = cont(&ctx)?.clone();
        let storage = ctx.storage.clone().ok_or_else(|| no_proof("no storage"))?;
        let chain = ctx.epochs.clone().ok_or_else(|| no_proof("no epoch chain"))?;
        let out = tokio::task::spawn_blocking(move || -> Result<Value, ErrorObjectOwned> {
            let d = storage.find(&dataset).map_err(no_proof)?;
            let rp = parse_root(&d.replica_root).map_err(no_proof)?;
            let e = chain
                .store()
                .get(epoch)
                .map_err(no_proof)?
                .ok_or_else(|| no_proof(format!("no epoch {epoch}: the head is {}", chain.head())))?;
            let se = c.proof(&rp, epoch, &e.output).map_err(no_proof)?;
            let verdict = c.verify(&se, &e.output);
            let ev = &se.evidence;
            let bytes = ev
                .chunks
                .iter()
                .map(|k| k.leaf.len() + 8 + 32 * k.siblings.len())
                .sum::<usize>()
                + 32 * (ev.path.in_group.len() + ev.path.in_region.len() + ev.path.in_global.len() + 3)
                + se.signature.len();
            Ok(json!({
                "dataset": d.replica_root,
                "epoch": epoch,
                "link": hex::encode(ev.link),
                "prev_epoch": ev.prev_epoch,
                "prev_link": hex::encode(ev.prev_link),
                "chunks": ev.chunks.iter().map(|k| k.index).collect::<Vec<_>>(),
                "index": ev.path.index,
                "chains": ev.path.chains,
                "path_len": ev.path.in_group.len() + ev.path.in_region.len() + ev.path.in_global.len(),
                "root": hex::encode(ev.root),
                "signature": hex::encode(&se.signature),
                "proof_bytes": bytes,
                "verified": verdict.is_ok(),
                "error": verdict.err(),
            }))
        })
        .await
        .map_err(no_proof)??;
        Ok::<_, ErrorObjectOwned>(out)
    })
    .expect("unique");
}
