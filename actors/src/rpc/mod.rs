//! The admin RPC: JSON-RPC 2.0 over HTTP and WebSocket on one loopback address.
//!
//! Requests must carry `Authorization: Bearer <cookie>`, where the cookie is a
//! random token the node writes to `DATA_DIR/.cookie` (mode 0600) at every
//! start; anything else gets HTTP 401. `GET /health`, `GET /ready` and
//! `GET /metrics` need no cookie: they reveal nothing an operator would keep
//! from a local scraper, and load balancers cannot send one. The effective URL
//! (with the port the OS picked for `:0`) goes to `DATA_DIR/rpc.url`.

mod actor;
mod actors_methods;
mod browser;
mod bus_methods;
mod chain_methods;
mod continuity_methods;
mod cookie;
mod discover;
mod epoch_methods;
mod guard;
mod http;
mod key_methods;
pub mod keys;
mod listen;
mod methods;
mod metrics_listen;
mod middleware;
mod net_methods;
mod rate;
pub mod roles;
mod storage_methods;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ::http as http_types;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig, ServerHandle};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use actor::RpcActor;
pub use browser::BrowserPolicy;
pub use cookie::{read_cookie, COOKIE_FILE, URL_FILE};
pub use guard::{who, KEY_REVOKED, ROLE_REQUIRED};
pub use keys::{ApiKeys, Caller};
pub use listen::ClientAddr;
pub use methods::AUDIT_FAILED;
pub use metrics_listen::{serve_metrics, MetricsListener};
pub use rate::{RateSettings, RATE_LIMITED};
pub use roles::{role_of, Role, METHOD_ROLES};

use crate::metrics as m;
use crate::supervision::Registry;
use crate::{Error, Result};

/// Why the node is shutting down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownReason {
    /// SIGINT or SIGTERM.
    Signal(&'static str),
    /// The `node_shutdown` RPC.
    Rpc,
}

impl ShutdownReason {
    /// `SIGTERM`, `SIGINT` or `rpc`, as the log shows it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Signal(s) => s,
            Self::Rpc => "rpc",
        }
    }
}

/// What `node_info` reports; fixed at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// vigil version.
    pub version: String,
    /// libp2p peer id of the node key.
    pub peer_id: String,
    /// Genesis network name.
    pub genesis_name: String,
    /// Full genesis hash, hex.
    pub genesis_hash: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Configured p2p listen addresses.
    pub listen_addrs: Vec<String>,
    /// Whether the node key is stored unencrypted (`vigil dev`).
    pub insecure_key: bool,
    /// The node's account on the settlement chain (Layer2), `0x...`.
    pub evm_address: String,
}

/// Settings of the RPC server, from the node's `[rpc]` config.
#[derive(Debug, Clone)]
pub struct RpcSettings {
    /// Address to bind: loopback, or any with `tls` set.
    pub addr: SocketAddr,
    /// Largest request body accepted, bytes.
    pub max_request_bytes: u32,
    /// Concurrent connections accepted.
    pub max_connections: u32,
    /// Concurrent connections from one client address.
    pub max_connections_per_ip: u32,
    /// Calls in one JSON-RPC batch.
    pub max_batch: u32,
    /// Subscriptions one WebSocket connection may hold.
    pub max_subscriptions: u32,
    /// Networks clients may connect from; empty = any.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// `Host` names and browser origins.
    pub browser: BrowserPolicy,
    /// Rate limits per caller and per address.
    pub rate: RateSettings,
    /// TLS, required off loopback.
    pub tls: Option<Arc<tls::Tls>>,
    /// Where `.cookie` and `rpc.url` are written.
    pub data_dir: PathBuf,
}

impl RpcSettings {
    /// The defaults at `addr`, writing into `data_dir`.
    pub fn new(addr: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            addr,
            max_request_bytes: 1 << 20,
            max_connections: 32,
            max_connections_per_ip: 16,
            max_batch: 32,
            max_subscriptions: 16,
            allowed_networks: Vec::new(),
            browser: BrowserPolicy::default(),
            rate: RateSettings::default(),
            tls: None,
            data_dir,
        }
    }
}

/// State shared by the HTTP layer and the RPC methods.
#[derive(Debug)]
pub struct NodeContext {
    /// Static facts about the node.
    pub info: NodeInfo,
    /// When the node started.
    pub started: Instant,
    /// Whether the node can serve (`/ready`).
    pub ready: AtomicBool,
    /// Asks the node to shut down.
    pub shutdown: mpsc::Sender<ShutdownReason>,
    /// Renders `/metrics`; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// The actor tree, for the `actors_*` methods.
    pub registry: Registry,
    /// Whether `actors_inject_panic` is allowed (config `debug.fault_injection`).
    pub fault_injection: bool,
    /// The bus, when enabled.
    pub bus: Option<Arc<crate::bus::Bus>>,
    /// The audit log.
    pub audit: crate::audit::Audit,
    /// API keys of the admin RPC.
    pub keys: ApiKeys,
    /// The p2p network, when enabled.
    pub net: Option<crate::net::Network>,
    /// Whether the node is ready without peers (no bootnodes at all: the
    /// first node of a network, e.g. `vigil dev`).
    pub ready_alone: bool,
    /// The epoch chain, when it runs.
    pub epochs: Option<crate::epoch::Chain>,
    /// Stored datasets.
    pub storage: Option<crate::storage::Storage>,
    /// Challenges (needs the network).
    pub challenger: Option<crate::challenge::Challenger>,
    /// Continuity chains.
    pub continuity: Option<crate::continuity::Continuity>,
    /// Chain monitoring and the security hub.
    pub monitor: Option<crate::chain::Monitor>,
    /// Methods served by parts above the actor runtime (the node's `layer2_*`).
    pub extra: Option<jsonrpsee::Methods>,
}

impl NodeContext {
    /// A context with no actors behind it: the admin RPC alone, over the
    /// audit log and API keys in `store` (benches and tests of the server).
    pub fn standalone(store: crate::store::SledStore, data_dir: PathBuf) -> Result<Self> {
        let (shutdown, _) = mpsc::channel(1);
        Ok(Self {
            info: NodeInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                peer_id: String::new(),
                genesis_name: "standalone".into(),
                genesis_hash: String::new(),
                data_dir,
                listen_addrs: Vec::new(),
                insecure_key: true,
                evm_address: String::new(),
            },
            started: Instant::now(),
            ready: AtomicBool::new(true),
            shutdown,
            metrics: None,
            registry: Registry::default(),
            fault_injection: false,
            bus: None,
            audit: crate::audit::Audit::open(store.clone())?,
            keys: ApiKeys::open(store)?,
            net: None,
            ready_alone: true,
            epochs: None,
            storage: None,
            challenger: None,
            continuity: None,
            monitor: None,
            extra: None,
        })
    }

    /// Marks the node ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/ready` answers 200: started, and connected to at least one
    /// peer of its genesis unless it may be alone.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && (self.ready_alone || self.net.as_ref().is_none_or(|n| n.peer_count() > 0))
            && self.epochs.as_ref().is_none_or(|c| c.synced())
    }
}

/// A running RPC server.
#[derive(Debug)]
pub struct RunningRpc {
    /// Stops the server.
    pub handle: ServerHandle,
    /// Bound address.
    pub local_addr: SocketAddr,
    /// `http://<local_addr>`.
    pub url: String,
}

/// Failed credentials from one address within this window are audited as
/// one entry with their count (the first at once).
const AUTH_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

type ConnFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<jsonrpsee::server::HttpResponse, jsonrpsee::core::BoxError>,
            > + Send,
    >,
>;

/// The methods with no HTTP layer, role check or rate limit in front: what
/// `vigil-bench rpc` measures the checks against. Never served by the node.
pub fn unguarded_methods(ctx: Arc<NodeContext>) -> jsonrpsee::Methods {
    methods::module(ctx).into()
}

/// Binds the server, writes `.cookie` and `rpc.url`, and starts serving.
pub async fn start(settings: &RpcSettings, ctx: Arc<NodeContext>) -> Result<RunningRpc> {
    if !settings.addr.ip().is_loopback() && settings.tls.is_none() {
        return Err(Error::Invalid(format!(
            "the admin RPC may bind {} (not loopback) only with TLS: set rpc.tls_cert and rpc.tls_key, and call it with API keys (vigilctl keys add)",
            settings.addr
        )));
    }
    let bind_error = |source| Error::Bind {
        what: "admin RPC",
        addr: settings.addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let token = cookie::new_token();
    let rate = Arc::new(rate::RateLimits::new(settings.rate));
    let checks = Arc::new(http::Checks {
        token: token.clone(),
        ctx: ctx.clone(),
        browser: settings.browser.clone(),
        bound: local_addr,
        rate: rate.clone(),
        failures: crate::bus::guard::AuthFailures::new(AUTH_FAILURE_WINDOW),
    });
    let http = http::AdminHttpLayer::new(checks.clone());
    let config = ServerConfig::builder()
        .max_request_body_size(settings.max_request_bytes)
        .max_response_body_size(64 << 20)
        .max_connections(settings.max_connections)
        .max_subscriptions_per_connection(settings.max_subscriptions)
        .set_batch_request_config(BatchRequestConfig::Limit(settings.max_batch))
        .build();
    let builder = Server::builder()
        .set_config(config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(http))
        .set_rpc_middleware(
            RpcServiceBuilder::new()
                .layer_fn(middleware::Metered::new)
                .layer_fn({
                    let ctx = ctx.clone();
                    move |s| guard::Guard::new(s, ctx.clone(), rate.clone())
                }),
        )
        .to_service_builder();
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{local_addr}");
    cookie::write_cookie(&settings.data_dir, &token)?;
    cookie::write_url(&settings.data_dir, &url)?;
    let methods: jsonrpsee::Methods = methods::module(ctx).into();
    let (stop, handle) = jsonrpsee::server::stop_channel();
    let admission = listen::Admission::new(
        settings.allowed_networks.clone(),
        settings.max_connections_per_ip as usize,
    );
    let tls = settings.tls.clone();
    let flusher = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => checks.flush_failures(),
                _ = flusher.clone().shutdown() => return checks.flush_failures(),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, mostly: wait instead of spinning.
                        tracing::warn!(error = %e, "admin RPC: cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.clone().shutdown() => break,
            };
            let (admission, tls, stop, builder, methods) = (
                admission.clone(),
                tls.clone(),
                stop.clone(),
                builder.clone(),
                methods.clone(),
            );
            // Small request/response exchanges: no Nagle delay.
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let slot = admission.admit(peer.ip());
                let Some(conn) = listen::secure(sock, tls.as_ref(), peer).await else {
                    return;
                };
                let slot = match slot {
                    Ok(s) => Arc::new(s),
                    Err(why) => {
                        let reason = if why.contains("allowed_networks") {
                            "network"
                        } else {
                            "per_ip"
                        };
                        metrics::counter!(m::RPC_REFUSED_CONNECTIONS, "reason" => reason).increment(1);
                        tracing::debug!(%peer, why, "admin RPC: connection refused");
                        let status = if reason == "network" {
                            "403 Forbidden"
                        } else {
                            "503 Service Unavailable"
                        };
                        listen::refuse(conn, status, &why).await;
                        return;
                    }
                };
                let svc = builder.build(methods, stop.clone());
                // The service lives as long as the connection, and with it
                // the connection's place in its address's count.
                let svc = tower::service_fn(move |mut req: http_types::Request<hyper::body::Incoming>| {
                    let _counted = &slot;
                    req.extensions_mut().insert(ClientAddr(peer));
                    let mut svc = svc.clone();
                    let fut: ConnFuture = Box::pin(async move { tower::Service::call(&mut svc, req).await });
                    fut
                });
                // Spawned as it is (not awaited in this block): rustc cannot
                // prove an async block holding it Send (rust#110338).
                tokio::spawn(jsonrpsee::server::serve_with_graceful_shutdown(
                    conn,
                    svc,
                    stop.shutdown(),
                ));
            });
        }
    });
    tracing::info!(%url, tls = settings.tls.is_some(), "admin RPC listening");
    Ok(RunningRpc {
        handle,
        local_addr,
        url,
    })
}
