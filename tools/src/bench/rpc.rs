//! What the admin RPC's checks cost a call: the node's server (Host and
//! Origin, the credential, the role, both rate limits, metering) against the
//! same methods served bare by jsonrpsee, side by side in one process, one
//! keep-alive HTTP connection each, rounds alternating which goes first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::rpc_params;
use serde::Serialize;
use vigil_actors::rpc::{self, NodeContext, RateSettings, Role, RpcSettings};
use vigil_actors::store::SledStore;

/// Options of the run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds (each: `calls` on each server).
    pub rounds: usize,
    /// Calls per server per round.
    pub calls: usize,
}

/// Latency of one server.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Calls timed.
    pub calls: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The node's server, called with an API key of role `read`.
    pub checked: Latency,
    /// The same methods with nothing in front.
    pub bare: Latency,
    /// `checked.p50 / bare.p50`.
    pub ratio_p50: f64,
    /// `checked.p99 / bare.p99`.
    pub ratio_p99: f64,
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn latency(mut v: Vec<f64>) -> Latency {
    v.sort_by(|a, b| a.total_cmp(b));
    Latency {
        calls: v.len(),
        p50_us: pct(&v, 0.5),
        p99_us: pct(&v, 0.99),
    }
}

async fn time_calls(client: &HttpClient, n: usize, out: &mut Vec<f64>) -> Result<(), String> {
    for _ in 0..n {
        let t = Instant::now();
        let _: serde_json::Value = client
            .request("node_health", rpc_params![])
            .await
            .map_err(|e| format!("node_health failed: {e}"))?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(())
}

fn client(url: &str, bearer: Option<&str>) -> Result<HttpClient, String> {
    let mut headers = HeaderMap::new();
    if let Some(b) = bearer {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {b}")).map_err(|e| e.to_string())?,
        );
    }
    HttpClientBuilder::default()
        .set_headers(headers)
        .request_timeout(Duration::from_secs(10))
        .build(url)
        .map_err(|e| e.to_string())
}

/// Runs the comparison.
pub fn run(o: &Options) -> Result<Report, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store = SledStore::open(&dir.path().join("db"), 8 << 20, None).map_err(|e| e.to_string())?;
        let ctx = Arc::new(NodeContext::standalone(store, dir.path().to_owned()).map_err(|e| e.to_string())?);
        let (_, secret) = ctx
            .keys
            .add("bench", Role::Read, "bench", &ctx.audit)
            .map_err(|e| e.to_string())?;

        let mut settings = RpcSettings::new("127.0.0.1:0".parse().expect("address"), dir.path().to_owned());
        // The limits are checked on every call but never reached here.
        settings.rate = RateSettings {
            per_caller: 1_000_000,
            per_address: 1_000_000,
            burst: 1_000_000,
        };
        let checked = rpc::start(&settings, ctx.clone())
            .await
            .map_err(|e| e.to_string())?;
        let bare_server = jsonrpsee::server::Server::builder()
            .build("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let bare_url = format!("http://{}", bare_server.local_addr().map_err(|e| e.to_string())?);
        let bare_handle = bare_server.start(rpc::unguarded_methods(ctx.clone()));

        let a = client(&checked.url, Some(&secret))?;
        let b = client(&bare_url, None)?;
        // Warm both connections up.
        let (mut wa, mut wb) = (Vec::new(), Vec::new());
        time_calls(&a, 200, &mut wa).await?;
        time_calls(&b, 200, &mut wb).await?;
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for round in 0..o.rounds {
            if round % 2 == 0 {
                time_calls(&a, o.calls, &mut ta).await?;
                time_calls(&b, o.calls, &mut tb).await?;
            } else {
                time_calls(&b, o.calls, &mut tb).await?;
                time_calls(&a, o.calls, &mut ta).await?;
            }
        }
        let _ = checked.handle.stop();
        let _ = bare_handle.stop();
        let (checked, bare) = (latency(ta), latency(tb));
        Ok(Report {
            ratio_p50: checked.p50_us / bare.p50_us,
            ratio_p99: checked.p99_us / bare.p99_us,
            checked,
            bare,
        })
    })
}
