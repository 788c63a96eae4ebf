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
        if !authorized(req.headers().get(header::AUTHORIZATION), &self.token) {
            metrics::counter!(m::RPC_UNAUTHORIZED).increment(1);
            tracing::debug!(path = %req.uri().path(), "refused: missing or wrong cookie");
            return Box::pin(async { Ok(unauthorized()) });
        }
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

/// Constant-time comparison of the `Authorization: Bearer` token.
fn authorized(value: Option<&header::HeaderValue>, token: &str) -> bool {
    let Some(given) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
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

fn unauthorized() -> HttpResponse {
    let mut resp = text(
        StatusCode::UNAUTHORIZED,
        "missing or wrong cookie: send `Authorization: Bearer <token>` with the token from DATA_DIR/.cookie\n"
            .into(),
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
    fn bearer_token_must_match_exactly() {
        let ok = header::HeaderValue::from_static("Bearer abc");
        assert!(authorized(Some(&ok), "abc"));
        for bad in ["Bearer abd", "Bearer ab", "abc", "Basic abc", "Bearer "] {
            let v = header::HeaderValue::from_static(bad);
            assert!(!authorized(Some(&v), "abc"), "{bad}");
        }
        assert!(!authorized(None, "abc"));
    }
}
