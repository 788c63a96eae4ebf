//! The `layer2_*` admin methods. Amounts are wei as a JSON number or a
//! string (`"1500"`, `"2.5gwei"`, `"0.1eth"`); channel ids are `0x` + 64 hex.
//! Opens, closes and disputes asked over RPC are audited before they run;
//! what they lead to (opened, closing, disputed, closed) is audited by the
//! adapter's events.

use std::sync::Arc;
use std::time::Instant;

use jsonrpsee::types::error::INVALID_PARAMS_CODE;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{Methods, RpcModule};
use serde_json::{json, Value};
use vigil_actors::audit::Audit;
use vigil_actors::rpc::{who, AUDIT_FAILED};
use vigil_layer2::evm::EvmChannels;
use vigil_layer2::{CloseMode, Layer2Adapter, Layer2Error, OpenRequest};

/// Error code: layer2 is off on this node.
pub const OFF: i32 = -32090;
/// Error code: no such channel.
pub const UNKNOWN_CHANNEL: i32 = -32091;
/// Error code: more than this side's balance.
pub const INSUFFICIENT: i32 = -32092;
/// Error code: the channel's state does not allow the call.
pub const WRONG_STATE: i32 = -32093;
/// Error code: payments are paused (`pause:layer2`).
pub const PAUSED: i32 = -32094;
/// Error code: the counterparty did not answer.
pub const UNREACHABLE: i32 = -32095;
/// Error code: the settlement chain refused or failed.
pub const CHAIN: i32 = -32096;
/// Error code: refused (a bad signature, the counterparty said no, bad input).
pub const REFUSED: i32 = -32097;

/// Largest `count` of one `layer2_pay`.
pub const MAX_COUNT: u64 = 100_000;

#[derive(Debug)]
struct Ctx {
    adapter: Option<Arc<EvmChannels>>,
    audit: Audit,
}

fn err(e: Layer2Error) -> ErrorObjectOwned {
    let code = match &e {
        Layer2Error::UnknownChannel(_) => UNKNOWN_CHANNEL,
        Layer2Error::InsufficientBalance { .. } => INSUFFICIENT,
        Layer2Error::WrongState { .. } => WRONG_STATE,
        Layer2Error::Paused => PAUSED,
        Layer2Error::Unreachable(_) => UNREACHABLE,
        Layer2Error::Chain(_) => CHAIN,
        Layer2Error::Store(_) | Layer2Error::BadSignature(_) | Layer2Error::Invalid(_) => REFUSED,
    };
    ErrorObjectOwned::owned(code, e.to_string(), None::<()>)
}

fn bad(usage: &str, why: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        INVALID_PARAMS_CODE,
        format!("{why}; expected params {usage}"),
        None::<()>,
    )
}

fn args(p: &Params<'_>, min: usize, max: usize, usage: &str) -> Result<Vec<Value>, ErrorObjectOwned> {
    let v: Vec<Value> = match p.as_str() {
        None => Vec::new(),
        Some(_) => p.parse().map_err(|_| bad(usage, "params must be a JSON array"))?,
    };
    if v.len() < min || v.len() > max {
        return Err(bad(usage, format!("{} params given", v.len())));
    }
    Ok(v)
}

fn amount(v: &Value, what: &str, usage: &str) -> Result<u128, ErrorObjectOwned> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(u128::from)
            .ok_or_else(|| bad(usage, format!("{what} {n} is not a whole number of wei ≥ 0"))),
        Value::String(s) => vigil_layer2::amount::parse(s).map_err(|e| bad(usage, format!("{what}: {e}"))),
        other => Err(bad(
            usage,
            format!("{what} {other} is neither a number nor a string"),
        )),
    }
}

fn text<'a>(v: &'a Value, what: &str, usage: &str) -> Result<&'a str, ErrorObjectOwned> {
    v.as_str()
        .ok_or_else(|| bad(usage, format!("{what} {v} is not a string")))
}

impl Ctx {
    fn on(&self) -> Result<&Arc<EvmChannels>, ErrorObjectOwned> {
        self.adapter.as_ref().ok_or_else(|| {
            ErrorObjectOwned::owned(
                OFF,
                "layer2 is off on this node: set layer2.enabled, layer2.source and layer2.contract",
                None::<()>,
            )
        })
    }

    fn audit(&self, who: &str, action: &str, detail: Value) -> Result<(), ErrorObjectOwned> {
        self.audit.append(who, action, detail).map(|_| ()).map_err(|e| {
            ErrorObjectOwned::owned(
                AUDIT_FAILED,
                format!("not done: the audit log cannot record {action}: {e}"),
                None::<()>,
            )
        })
    }
}

const OPEN: &str = "[peer, deposit, ask?]";
const PAY: &str = "[channel, amount, count?]";
const CLOSE: &str = "[channel, \"cooperative\"|\"unilateral\"?]";
const ONE: &str = "[channel]";

/// The methods; with `adapter` `None` each answers that layer2 is off.
pub fn methods(adapter: Option<Arc<EvmChannels>>, audit: Audit) -> Methods {
    let mut m = RpcModule::new(Ctx { adapter, audit });
    m.register_async_method("layer2_status", |_, ctx, _| async move {
        let a = ctx.on()?;
        let mut v = serde_json::to_value(a.status().await).unwrap_or_default();
        v["address"] = json!(a.address().to_string());
        Ok::<_, ErrorObjectOwned>(v)
    })
    .expect("unique");
    m.register_async_method("layer2_channels", |_, ctx, _| async move {
        let list = ctx.on()?.list().await.map_err(err)?;
        Ok::<_, ErrorObjectOwned>(json!(list))
    })
    .expect("unique");
    m.register_async_method("layer2_channel", |p, ctx, _| async move {
        let v = args(&p, 1, 1, ONE)?;
        let info = ctx
            .on()?
            .channel(text(&v[0], "channel", ONE)?)
            .await
            .map_err(err)?;
        Ok::<_, ErrorObjectOwned>(json!(info))
    })
    .expect("unique");
    m.register_async_method("layer2_open", |p, ctx, ext| async move {
        let v = args(&p, 2, 3, OPEN)?;
        let req = OpenRequest {
            peer: text(&v[0], "peer", OPEN)?.to_owned(),
            deposit: amount(&v[1], "deposit", OPEN)?,
            ask: match v.get(2) {
                Some(a) => amount(a, "ask", OPEN)?,
                None => 0,
            },
        };
        let a = ctx.on()?;
        ctx.audit(
            &who(&ext),
            "layer2.open",
            json!({"peer": req.peer, "deposit": req.deposit.to_string(), "ask": req.ask.to_string()}),
        )?;
        let info = a.open(req).await.map_err(err)?;
        Ok::<_, ErrorObjectOwned>(json!(info))
    })
    .expect("unique");
    m.register_async_method("layer2_pay", |p, ctx, _| async move {
        let v = args(&p, 2, 3, PAY)?;
        let channel = text(&v[0], "channel", PAY)?.to_owned();
        let amt = amount(&v[1], "amount", PAY)?;
        let count = match v.get(2) {
            None => 1,
            Some(c) => c
                .as_u64()
                .filter(|c| (1..=MAX_COUNT).contains(c))
                .ok_or_else(|| bad(PAY, format!("count {c}: 1..={MAX_COUNT}")))?,
        };
        let a = ctx.on()?;
        let t0 = Instant::now();
        let mut lat = Vec::with_capacity(count as usize);
        let mut last = None;
        for done in 0..count {
            match a.pay(&channel, amt).await {
                Ok(pm) => {
                    lat.push(pm.latency_us);
                    last = Some(pm);
                }
                Err(e) if done == 0 => return Err(err(e)),
                Err(e) => {
                    let mut o = err(e);
                    o = ErrorObjectOwned::owned(
                        o.code(),
                        format!("{} (after {done} of {count} payments went through)", o.message()),
                        Some(json!({"done": done})),
                    );
                    return Err(o);
                }
            }
        }
        lat.sort_unstable();
        let pct = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
        let mut out = json!(last);
        out["count"] = json!(count);
        out["elapsed_ms"] = json!(t0.elapsed().as_millis() as u64);
        out["p50_us"] = json!(pct(0.5));
        out["p99_us"] = json!(pct(0.99));
        Ok::<_, ErrorObjectOwned>(out)
    })
    .expect("unique");
    m.register_async_method("layer2_close", |p, ctx, ext| async move {
        let v = args(&p, 1, 2, CLOSE)?;
        let channel = text(&v[0], "channel", CLOSE)?.to_owned();
        let mode = match v.get(1).map(|m| m.as_str()) {
            None | Some(Some("cooperative")) => CloseMode::Cooperative,
            Some(Some("unilateral")) => CloseMode::Unilateral,
            Some(_) => return Err(bad(CLOSE, format!("mode {}", v[1]))),
        };
        let a = ctx.on()?;
        ctx.audit(
            &who(&ext),
            "layer2.close",
            json!({"channel": channel, "mode": mode}),
        )?;
        let info = a.close(&channel, mode).await.map_err(err)?;
        Ok::<_, ErrorObjectOwned>(json!(info))
    })
    .expect("unique");
    m.register_async_method("layer2_dispute", |p, ctx, ext| async move {
        let v = args(&p, 1, 1, ONE)?;
        let channel = text(&v[0], "channel", ONE)?.to_owned();
        let a = ctx.on()?;
        ctx.audit(&who(&ext), "layer2.dispute", json!({"channel": channel}))?;
        let info = a.dispute(&channel).await.map_err(err)?;
        Ok::<_, ErrorObjectOwned>(json!(info))
    })
    .expect("unique");
    m.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_layer2_method_has_a_role_and_every_layer2_role_a_method() {
        let dir = tempfile::tempdir().unwrap();
        let store = vigil_actors::store::SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let m = super::methods(None, super::Audit::open(store).unwrap());
        let served: std::collections::BTreeSet<&str> = m.method_names().collect();
        let table: std::collections::BTreeSet<&str> = vigil_actors::rpc::METHOD_ROLES
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n.starts_with("layer2_"))
            .collect();
        assert_eq!(served, table);
    }
}
