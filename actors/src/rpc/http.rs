//! HTTP layer in front of the JSON-RPC service: `Host` and `Origin` checks
//! on every endpoint, the plain endpoints `/health`, `/ready` and
//! `/metrics`, the credential (cookie or API key), and the rate limits.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Method, StatusCode};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use tower::{Layer, Service};

use super::browser::{self, BrowserPolicy};
use super::keys::Caller;
use super::listen::ClientAddr;
use super::rate::{Limited, RateLimits};
use super::NodeContext;
use crate::bus::guard::AuthFailures;
use crate::metrics as m;

/// What the HTTP layer checks against, shared by every connection.
#[derive(Debug)]
pub(super) struct Checks {
    pub(super) token: String,
    pub(super) ctx: Arc<NodeContext>,
    pub(super) browser: BrowserPolicy,
    pub(super) bound: SocketAddr,
    pub(super) rate: Arc<RateLimits>,
    /// Failed credentials per client address, for the audit log.
    pub(super) failures: AuthFailures,
}

impl Checks {
    /// Writes the aggregated entries of windows that ended.
    pub(super) fn flush_failures(&self) {
        for entry in self.failures.flush(std::time::Instant::now()) {
            self.ctx.audit.append_or_log("stranger", "rpc.auth_failed", entry);
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct AdminHttpLayer(Arc<Checks>);

impl AdminHttpLayer {
    pub(super) fn new(checks: Arc<Checks>) -> Self {
        Self(checks)
    }
}

impl<S> Layer<S> for AdminHttpLayer {
    type Service = AdminHttp<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdminHttp {
            inner,
            checks: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct AdminHttp<S> {
    inner: S,
    checks: Arc<Checks>,
}

/// Marks the calls of a WebSocket connection (rate-limited per call by the
/// guard; an HTTP request is limited here, as a whole).
#[derive(Debug, Clone, Copy)]
pub(super) struct OverWebSocket;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

fn ready(resp: HttpResponse) -> BoxFuture<Result<HttpResponse, BoxError>> {
    Box::pin(async move { Ok(resp) })
}

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

    fn call(&mut self, mut req: HttpRequest<B>) -> Self::Future {
        let c = &self.checks;
        // Browsers first, on every endpoint: a page must not even learn
        // whether the node is up.
        let cors = match c.browser.check(req.headers(), c.bound) {
            Ok(cors) => cors,
            Err(why) => {
                metrics::counter!(m::RPC_REFUSED_CONNECTIONS, "reason" => "host_origin").increment(1);
                tracing::debug!(path = %req.uri().path(), why, "admin RPC: refused for its Host or Origin");
                return ready(text(StatusCode::FORBIDDEN, format!("{why}\n")));
            }
        };
        let with_cors = move |mut resp: HttpResponse| {
            if let Some(origin) = cors.clone() {
                browser::add_cors(resp.headers_mut(), origin);
            }
            resp
        };
        if req.method() == Method::OPTIONS {
            // A CORS preflight of an allowed origin (the others got 403).
            return ready(with_cors(text(StatusCode::NO_CONTENT, String::new())));
        }
        if req.method() == Method::GET {
            if let Some(resp) = self.plain_endpoint(req.uri().path()) {
                return ready(with_cors(resp));
            }
        }
        let client = req.extensions().get::<ClientAddr>().map(|a| a.0);
        let caller = match self.caller(req.headers().get(header::AUTHORIZATION), client) {
            Ok(caller) => caller,
            Err(why) => {
                metrics::counter!(m::RPC_UNAUTHORIZED).increment(1);
                tracing::debug!(path = %req.uri().path(), why, "refused: no valid credential");
                // The first failure of an address in a window is audited at
                // once, the rest as one entry with their count.
                let source = client.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
                let detail = serde_json::json!({ "why": why, "path": req.uri().path() });
                if let Some(entry) = c.failures.record(&source, detail, std::time::Instant::now()) {
                    c.ctx.audit.append_or_log("stranger", "rpc.auth_failed", entry);
                }
                return ready(with_cors(unauthorized(&why)));
            }
        };
        if let Err(limited) = c.rate.check(&caller.who, client.map(|a| a.ip())) {
            return ready(with_cors(too_many(&limited)));
        }
        if jsonrpsee::server::ws::is_upgrade_request(&req) {
            req.extensions_mut().insert(OverWebSocket);
        }
        req.extensions_mut().insert(caller);
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map(with_cors).map_err(Into::into) })
    }
}

impl<S> AdminHttp<S> {
    fn plain_endpoint(&self, path: &str) -> Option<HttpResponse> {
        let ctx = &self.checks.ctx;
        match path {
            "/health" => Some(text(StatusCode::OK, "ok\n".into())),
            "/ready" if ctx.is_ready() => Some(text(StatusCode::OK, "ready\n".into())),
            "/ready" => Some(text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())),
            "/metrics" => Some(match &ctx.metrics {
                Some(handle) => scrape(handle, ctx),
                None => text(StatusCode::NOT_FOUND, "metrics are disabled\n".into()),
            }),
            _ => None,
        }
    }
}

impl<S> AdminHttp<S> {
    /// Who the `Authorization` header stands for: the cookie (admin; only
    /// from a loopback client) or a live API key; otherwise what is wrong
    /// with it, for the 401's body.
    fn caller(
        &self,
        value: Option<&header::HeaderValue>,
        client: Option<SocketAddr>,
    ) -> Result<Caller, String> {
        let given = bearer(value)?;
        if same(given, &self.checks.token) {
            if client.is_some_and(|a| !a.ip().to_canonical().is_loopback()) {
                return Err("the cookie is for local tools: a remote client must use an API key (vigilctl keys add NAME --role ROLE)".into());
            }
            return Ok(Caller::cookie());
        }
        self.checks.ctx.keys.authenticate(given).ok_or_else(|| {
            "wrong credential: not the node's current cookie, nor a live API key (revoked keys stop working at once)".into()
        })
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(value: Option<&header::HeaderValue>) -> Result<&str, String> {
    let value = value.ok_or("no credential: send `Authorization: Bearer TOKEN`")?;
    let text = value
        .to_str()
        .map_err(|_| "malformed Authorization header: it is not ASCII; expected `Bearer TOKEN`")?;
    let token = text
        .strip_prefix("Bearer ")
        .ok_or("malformed Authorization header: expected `Bearer TOKEN` (other schemes are not supported)")?
        .trim();
    if token.is_empty() {
        return Err("malformed Authorization header: the token after `Bearer ` is empty".into());
    }
    Ok(token)
}

/// Constant-time comparison.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A scrape of `handle` in the Prometheus text format (the admin RPC's
/// `/metrics` and the metrics listener's).
pub(super) fn scrape(
    handle: &metrics_exporter_prometheus::PrometheusHandle,
    ctx: &NodeContext,
) -> HttpResponse {
    m::on_scrape(ctx.started, ctx.is_ready());
    let mut resp = text(StatusCode::OK, handle.render());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

pub(super) fn text(status: StatusCode, body: String) -> HttpResponse {
    let mut resp = HttpResponse::new(HttpBody::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn too_many(limited: &Limited) -> HttpResponse {
    let mut resp = text(StatusCode::TOO_MANY_REQUESTS, format!("{}\n", limited.counted()));
    let secs = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
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
