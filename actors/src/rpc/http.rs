//! HTTP layer in front of the JSON-RPC service: cookie auth and the plain
//! endpoints `/health`, `/ready` and `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Method, StatusCode};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use tower::{Layer, Service};

use super::keys::Caller;
use super::NodeContext;
use crate::metrics as m;

#[derive(Debug, Clone)]
pub(super) struct AdminHttpLayer {
    token: Arc<str>,
    ctx: Arc<NodeContext>,
}

impl AdminHttpLayer {
    pub(super) fn new(token: String, ctx: Arc<NodeContext>) -> Self {
        Self {
            token: token.into(),
            ctx,
        }
    }
}

impl<S> Layer<S> for AdminHttpLayer {
    type Service = AdminHttp<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdminHttp {
            inner,
            token: self.token.clone(),
            ctx: self.ctx.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct AdminHttp<S> {
    inner: S,
    token: Arc<str>,
    ctx: Arc<NodeContext>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<HttpRequest<B>> for AdminHttp<S>
where
    S: Service<HttpRequest<B>, Response = HttpResponse>,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = BoxFuture<Result<HttpResponse, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: HttpRequest<B>) -> Self::Future {
        if req.method() == Method::GET {
            if let Some(resp) = self.plain_endpoint(req.uri().path()) {
                return Box::pin(async move { Ok(resp) });
            }
        }
        let caller = match self.caller(req.headers().get(header::AUTHORIZATION)) {
            Ok(c) => c,
            Err(why) => {
                metrics::counter!(m::RPC_UNAUTHORIZED).increment(1);
                tracing::debug!(path = %req.uri().path(), why, "refused: no valid credential");
                return Box::pin(async move { Ok(unauthorized(why)) });
            }
        };
        let mut req = req;
        req.extensions_mut().insert(caller);
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

impl<S> AdminHttp<S> {
    fn plain_endpoint(&self, path: &str) -> Option<HttpResponse> {
        match path {
            "/health" => Some(text(StatusCode::OK, "ok\n".into())),
            "/ready" if self.ctx.is_ready() => Some(text(StatusCode::OK, "ready\n".into())),
            "/ready" => Some(text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())),
            "/metrics" => Some(match &self.ctx.metrics {
                Some(handle) => {
                    m::on_scrape(self.ctx.started);
                    let mut resp = text(StatusCode::OK, handle.render());
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    resp
                }
                None => text(StatusCode::NOT_FOUND, "metrics are disabled\n".into()),
            }),
            _ => None,
        }
    }
}

impl<S> AdminHttp<S> {
    /// Who the `Authorization` header stands for: the cookie (admin) or a
    /// live API key; otherwise what is wrong with it, for the 401's body.
    fn caller(&self, value: Option<&header::HeaderValue>) -> Result<Caller, &'static str> {
        let given = bearer(value)?;
        if same(given, &self.token) {
            return Ok(Caller::cookie());
        }
        self.ctx
            .keys
            .authenticate(given)
            .ok_or("wrong credential: not the node's current cookie, nor a live API key (revoked keys stop working at once)")
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(value: Option<&header::HeaderValue>) -> Result<&str, &'static str> {
    let value = value.ok_or("no credential: send `Authorization: Bearer TOKEN`")?;
    let text = value
        .to_str()
        .map_err(|_| "malformed Authorization header: it is not ASCII; expected `Bearer TOKEN`")?;
    let token = text
        .strip_prefix("Bearer ")
        .ok_or("malformed Authorization header: expected `Bearer TOKEN` (other schemes are not supported)")?
        .trim();
    if token.is_empty() {
        return Err("malformed Authorization header: the token after `Bearer ` is empty");
    }
    Ok(token)
}

/// Constant-time comparison.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: String) -> HttpResponse {
    let mut resp = HttpResponse::new(HttpBody::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn unauthorized(why: &str) -> HttpResponse {
    let mut resp = text(
        StatusCode::UNAUTHORIZED,
        format!(
            "{why}. TOKEN is the node's cookie (DATA_DIR/.cookie, full access, for local tools) or an API key (`vigilctl keys add NAME --role read|operator|admin`)\n"
        ),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"vigil\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_header_is_read_strictly_and_says_what_is_wrong() {
        let v = |s: &'static str| header::HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&v("Bearer abc"))), Ok("abc"));
        assert!(bearer(None).unwrap_err().starts_with("no credential"));
        for (bad, why) in [
            ("Basic abc", "other schemes"),
            ("abc", "expected `Bearer TOKEN`"),
            ("Bearer  ", "is empty"),
        ] {
            let e = bearer(Some(&v(bad))).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let raw = header::HeaderValue::from_bytes(b"Bearer \xff").unwrap();
        assert!(bearer(Some(&raw)).unwrap_err().contains("not ASCII"));
        assert!(same("abc", "abc"));
        for bad in ["abd", "ab", "abcd", ""] {
            assert!(!same(bad, "abc"), "{bad}");
        }
    }
}
