//! The `net_*` methods.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use libp2p::{Multiaddr, PeerId};
use serde_json::{json, Value};

use super::guard::who;
use super::methods::{audited, Audited};
use super::NodeContext;
use crate::net::Network;

/// Error code: the network is disabled.
const NET_OFF: i32 = -32040;
/// Error code: the network refused or failed the request.
const NET_REFUSED: i32 = -32041;

fn refused(e: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(NET_REFUSED, e.to_string(), None::<()>)
}

fn net(ctx: &NodeContext) -> Result<&Network, ErrorObjectOwned> {
    ctx.net.as_ref().ok_or_else(|| {
        ErrorObjectOwned::owned(
            NET_OFF,
            "the network is disabled (network.enabled = false)",
            None::<()>,
        )
    })
}

fn params_error(usage: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INVALID_PARAMS_CODE,
        format!("expected params {usage}"),
        None::<()>,
    )
}

fn peer_arg(s: &str) -> Result<PeerId, ErrorObjectOwned> {
    s.parse()
        .map_err(|e| params_error(&format!("a peer id like 12D3KooW... (`{s}`: {e})")))
}

const BAN_USAGE: &str = "[peer_id] or [peer_id, seconds] or [peer_id, seconds, reason]";

fn ban_args(p: &Params<'_>) -> Result<(PeerId, u64, String), ErrorObjectOwned> {
    let v: Vec<Value> = p.parse().map_err(|_| params_error(BAN_USAGE))?;
    let peer = v
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| params_error(BAN_USAGE))?;
    let secs = match v.get(1) {
        None => 0,
        Some(x) => x.as_u64().ok_or_else(|| params_error(BAN_USAGE))?,
    };
    let reason = match v.get(2) {
        None => "banned by the operator".to_owned(),
        Some(x) => x.as_str().ok_or_else(|| params_error(BAN_USAGE))?.to_owned(),
    };
    if v.len() > 3 {
        return Err(params_error(BAN_USAGE));
    }
    Ok((peer_arg(peer)?, secs, reason))
}

fn one_string(p: &Params<'_>, usage: &str) -> Result<String, ErrorObjectOwned> {
    let v: Vec<String> = p.parse().map_err(|_| params_error(usage))?;
    match <[String; 1]>::try_from(v) {
        Ok([s]) => Ok(s),
        Err(_) => Err(params_error(usage)),
    }
}

pub(super) fn register(m: &mut RpcModule<NodeContext>) {
    m.register_method("net_info", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        Ok(json!(net(ctx)?.info()))
    })
    .expect("unique");
    m.register_method("net_peers", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        Ok(json!(net(ctx)?.peers()))
    })
    .expect("unique");
    m.register_method("net_bans", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        Ok(json!(net(ctx)?.bans().map_err(refused)?))
    })
    .expect("unique");
    m.register_async_method("net_ban", |p, ctx, ext| async move {
        let (peer, secs, reason) = ban_args(&p)?;
        net(&ctx)?
            .ban(peer, secs, reason.clone(), who(&ext))
            .await
            .map_err(refused)?;
        Ok::<_, ErrorObjectOwned>(json!({ "banned": peer.to_string(), "reason": reason }))
    })
    .expect("unique");
    m.register_async_method("net_unban", |p, ctx, ext| async move {
        let arg = one_string(&p, "[peer_id] or [\"ip:ADDRESS\"]")?;
        let out = match arg.strip_prefix("ip:") {
            Some(a) => {
                let ip: std::net::IpAddr = a.parse().map_err(|_| {
                    params_error(&format!(
                        "`{arg}`: ip:ADDRESS with an IPv4 or IPv6 address expected"
                    ))
                })?;
                let was = net(&ctx)?.unban_ip(ip).await.map_err(refused)?;
                json!({ "peer": arg, "was_banned": was })
            }
            None => {
                let peer = peer_arg(&arg)?;
                let was = net(&ctx)?.unban(peer).await.map_err(refused)?;
                json!({ "peer": peer.to_string(), "was_banned": was })
            }
        };
        let entry = ctx.audit.append(&who(&ext), "net.unban", out.clone());
        audited(Audited::After(out.clone()), "net.unban", entry)?;
        Ok::<_, ErrorObjectOwned>(out)
    })
    .expect("unique");
    m.register_async_method("net_dial", |p, ctx, ext| async move {
        let usage = "[multiaddr], e.g. [\"/ip4/127.0.0.1/tcp/30345/p2p/12D3KooW...\"]";
        let s = one_string(&p, usage)?;
        let addr: Multiaddr = s
            .parse()
            .map_err(|e| params_error(&format!("{usage} (`{s}`: {e})")))?;
        let net = net(&ctx)?;
        audited(
            Audited::Before,
            "net.dial",
            ctx.audit.append(&who(&ext), "net.dial", json!({ "addr": s })),
        )?;
        net.dial(addr.clone()).await.map_err(refused)?;
        Ok::<_, ErrorObjectOwned>(json!({ "dialing": addr.to_string() }))
    })
    .expect("unique");
    m.register_async_method("net_probe", |_, ctx, _| async move {
        let id = net(&ctx)?.probe().await.map_err(refused)?;
        Ok::<_, ErrorObjectOwned>(json!({ "probe": id }))
    })
    .expect("unique");
    m.register_method("net_probes", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        Ok(json!(net(ctx)?.probes()))
    })
    .expect("unique");
    m.register_method(
        "net_gossip_seen",
        |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            const USAGE: &str = "none or [since_us] (Unix microseconds, an integer)";
            let since = match p.as_str() {
                None => 0,
                Some(_) => {
                    let v: Vec<u64> = p.parse().map_err(|_| params_error(USAGE))?;
                    match v[..] {
                        [] => 0,
                        [s] => s,
                        _ => return Err(params_error(USAGE)),
                    }
                }
            };
            Ok(json!(net(ctx)?.gossip_seen(since)))
        },
    )
    .expect("unique");
}
