//! The metrics listener (`metrics.addr`, `--metrics-addr`): `GET /metrics`
//! in the Prometheus text format and nothing else, on an address of its
//! own that may be non-loopback, so a Prometheus server on another machine
//! can scrape the node without reaching the admin RPC (Lighthouse's
//! `--metrics-address`, geth's `--metrics.addr`). No credential: metrics
//! are read-only and name no secret. The `Host` check of the admin RPC
//! applies (a DNS-rebinding page is refused), and any other path or method
//! gets 404 or 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use jsonrpsee::server::HttpResponse;
use metrics_exporter_prometheus::PrometheusHandle;

use super::browser::BrowserPolicy;
use super::http::{scrape, text};
use super::NodeContext;
use crate::error::{Error, Result};
use crate::metrics as m;

/// A running metrics listener; stops when dropped.
#[derive(Debug)]
pub struct MetricsListener {
    /// The bound address (the port, when 0 was asked).
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `/metrics` from `handle` until dropped (`ctx`
/// gives the gauges computed on scrape: uptime, readiness).
pub async fn serve_metrics(
    addr: SocketAddr,
    handle: PrometheusHandle,
    ctx: Arc<NodeContext>,
    allowed_hosts: Vec<String>,
) -> Result<MetricsListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            what: "metrics listener",
            addr,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Bind {
        what: "metrics listener",
        addr,
        source,
    })?;
    let policy = BrowserPolicy {
        allowed_hosts,
        cors_origins: Vec::new(),
    };
    let task = tokio::spawn(async move {
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (handle, policy, ctx) = (handle.clone(), policy.clone(), ctx.clone());
            let svc = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let resp = answer(&req, &handle, &ctx, &policy, local_addr);
                std::future::ready(Ok::<_, Infallible>(resp))
            });
            tokio::spawn(jsonrpsee::server::serve(conn, svc));
        }
    });
    tracing::info!(url = %format!("http://{local_addr}/metrics"), "metrics listening");
    Ok(MetricsListener { local_addr, task })
}

fn answer<B>(
    req: &http::Request<B>,
    handle: &PrometheusHandle,
    ctx: &NodeContext,
    policy: &BrowserPolicy,
    bound: SocketAddr,
) -> HttpResponse {
    if let Err(why) = policy.check(req.headers(), bound) {
        metrics::counter!(m::RPC_REFUSED_CONNECTIONS, "reason" => "host_origin").increment(1);
        return text(StatusCode::FORBIDDEN, format!("{why}\n"));
    }
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "only /metrics is served here (the admin RPC has its own address)\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into());
    }
    scrape(handle, ctx)
}
