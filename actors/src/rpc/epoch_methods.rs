//! The `epoch_*` and `vdf_*` methods.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::NodeContext;
use crate::epoch::Chain;

/// Error code: the epoch chain is not running (network disabled).
const EPOCHS_OFF: i32 = -32050;
/// Error code: no such epoch.
const NO_EPOCH: i32 = -32051;

fn chain(ctx: &NodeContext) -> Result<&Chain, ErrorObjectOwned> {
    ctx.epochs.as_ref().ok_or_else(|| {
        ErrorObjectOwned::owned(
            EPOCHS_OFF,
            "the epoch chain is not running on this node",
            None::<()>,
        )
    })
}

fn internal(e: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INTERNAL_ERROR_CODE,
        e.to_string(),
        None::<()>,
    )
}

const GET_USAGE: &str = "expected params [number] with number >= 1 (an epoch number; see epoch_head)";

fn number_arg(p: &Params<'_>) -> Result<u64, ErrorObjectOwned> {
    let bad = || {
        ErrorObjectOwned::owned(
            jsonrpsee::types::error::INVALID_PARAMS_CODE,
            GET_USAGE,
            None::<()>,
        )
    };
    let v: Vec<Value> = p.parse().map_err(|_| bad())?;
    match v.as_slice() {
        [n] => n.as_u64().filter(|n| *n >= 1).ok_or_else(bad),
        _ => Err(bad()),
    }
}

pub(super) fn register(module: &mut RpcModule<NodeContext>) {
    module
        .register_method("epoch_head", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let c = chain(ctx)?;
            let head = c.head();
            let epoch = match head {
                0 => Value::Null,
                n => serde_json::to_value(c.view(n).map_err(internal)?).unwrap_or_default(),
            };
            Ok(json!({
                "head": head,
                "best_peer_head": c.best_peer_head(),
                "synced": c.synced(),
                "epoch": epoch,
            }))
        })
        .expect("method names are unique");
    module
        .register_method("epoch_get", |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let n = number_arg(&p)?;
            let c = chain(ctx)?;
            match c.view(n).map_err(internal)? {
                Some(v) => Ok(serde_json::to_value(v).unwrap_or_default()),
                None => Err(ErrorObjectOwned::owned(
                    NO_EPOCH,
                    format!("no epoch {n}: the head is {}", c.head()),
                    None::<()>,
                )),
            }
        })
        .expect("method names are unique");
    module
        .register_method("vdf_status", |_, ctx, _| -> Result<Value, ErrorObjectOwned> {
            Ok(serde_json::to_value(chain(ctx)?.status()).unwrap_or_default())
        })
        .expect("method names are unique");
}
