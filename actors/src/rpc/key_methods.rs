//! The `keys_*` methods: API keys of the admin RPC (admin role).

use jsonrpsee::types::error::INVALID_PARAMS_CODE;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::guard::who;
use super::methods::{audit_error, Audited};
use super::roles::Role;
use super::NodeContext;

/// Error code: a key request was refused (bad name, unknown key, exists).
const KEY_REFUSED: i32 = -32016;

fn refused(action: &'static str) -> impl Fn(crate::Error) -> ErrorObjectOwned {
    move |e| match e {
        crate::Error::AuditWrite(_) => audit_error(Audited::Before, action, &e),
        other => ErrorObjectOwned::owned(KEY_REFUSED, other.to_string(), None::<()>),
    }
}

fn strings(p: &Params<'_>, n: usize, usage: &str) -> Result<Vec<String>, ErrorObjectOwned> {
    let bad = || {
        ErrorObjectOwned::owned(
            INVALID_PARAMS_CODE,
            format!("expected params {usage}"),
            None::<()>,
        )
    };
    let v: Vec<String> = p.parse().map_err(|_| bad())?;
    if v.len() == n {
        Ok(v)
    } else {
        Err(bad())
    }
}

pub(super) fn register(m: &mut RpcModule<NodeContext>) {
    m.register_method("keys_add", |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
        let usage = "[name, role] (role: read, operator or admin)";
        let v = strings(&p, 2, usage)?;
        let role: Role = v[1].parse().map_err(|e: String| {
            ErrorObjectOwned::owned(
                INVALID_PARAMS_CODE,
                format!("{e}; expected params {usage}"),
                None::<()>,
            )
        })?;
        let (info, secret) = ctx
            .keys
            .add(&v[0], role, &who(ext), &ctx.audit)
            .map_err(refused("keys.add"))?;
        Ok(json!({
            "name": info.name,
            "role": info.role,
            "created_unix": info.created_unix,
            "secret": secret,
            "note": "shown once: only its hash is stored; send it as `Authorization: Bearer SECRET`",
        }))
    })
    .expect("unique");
    m.register_method("keys_list", |_, ctx, _| json!(ctx.keys.list()))
        .expect("unique");
    m.register_method("keys_revoke", |p, ctx, ext| -> Result<Value, ErrorObjectOwned> {
        let v = strings(&p, 1, "[name]")?;
        let info = ctx
            .keys
            .revoke(&v[0], &who(ext), &ctx.audit)
            .map_err(refused("keys.revoke"))?;
        Ok(json!({ "revoked": info.name, "role": info.role }))
    })
    .expect("unique");
}
