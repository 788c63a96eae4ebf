//! The `chain_*` and `security_*` methods.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::guard::who;
use super::NodeContext;
use crate::chain::Monitor;

/// Error code: monitoring is not running.
const OFF: i32 = -32080;
/// Error code: a security request was refused.
const REFUSED: i32 = -32081;

fn monitor(ctx: &NodeContext) -> Result<&Monitor, ErrorObjectOwned> {
    ctx.monitor
        .as_ref()
        .ok_or_else(|| ErrorObjectOwned::owned(OFF, "chain monitoring is not running", None::<()>))
}

fn actor_arg(p: &Params<'_>) -> Result<String, ErrorObjectOwned> {
    let bad = || {
        ErrorObjectOwned::owned(
            jsonrpsee::types::error::INVALID_PARAMS_CODE,
            format!(
                "expected params [actor] with actor one of {:?}",
                crate::chain::security::PAUSABLE
            ),
            None::<()>,
        )
    };
    let v: Vec<String> = p.parse().map_err(|_| bad())?;
    match <[String; 1]>::try_from(v) {
        Ok([a]) => Ok(a),
        Err(_) => Err(bad()),
    }
}

pub(super) fn register(m: &mut RpcModule<NodeContext>) {
    m.register_method("chain_status", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let mo = monitor(ctx)?;
        Ok(json!(mo.sources.iter().map(|f| f.status()).collect::<Vec<_>>()))
    })
    .expect("unique");
    m.register_method("chain_alerts", |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let v: Vec<Value> = p.parse().unwrap_or_default();
        let limit = v.first().and_then(Value::as_u64).unwrap_or(100).min(1000) as usize;
        Ok(json!(monitor(ctx)?.hub.alerts(limit)))
    })
    .expect("unique");
    m.register_method("security_rules", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let mo = monitor(ctx)?;
        Ok(json!({ "rules": mo.hub.rules(), "paused": mo.hub.pauses().list() }))
    })
    .expect("unique");
    for (name, paused) in [("security_pause", true), ("security_resume", false)] {
        m.register_method(name, move |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
            let actor = actor_arg(&p)?;
            let was = monitor(ctx)?
                .hub
                .set_paused(&actor, paused, &who(ext))
                .map_err(|e| ErrorObjectOwned::owned(REFUSED, e, None::<()>))?;
            Ok(json!({ "actor": actor, "paused": paused, "was_paused": was }))
        })
        .expect("unique");
    }
}
