//! Layer2 figures: payments per second and latency between two real `vigil`
//! processes over libp2p on loopback, ledger fsync on, settled on a real
//! anvil: one channel paying sequentially, then 16 channels paying at once;
//! and the gas of open, join and cooperative close (from the audit log).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use vigil_testnet::{call, down, start_node, wait_peers, Manifest, NodeSpec, Options as TnOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Payments on the single channel.
    pub payments: u64,
    /// Channels paying at once.
    pub channels: usize,
    /// Payments per channel in the concurrent run.
    pub per_channel: u64,
    /// The anvil binary.
    pub anvil: std::path::PathBuf,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Channels.
    pub channels: usize,
    /// Payments made.
    pub payments: u64,
    /// Payments per second (all channels).
    pub per_sec: f64,
    /// Median latency (the median of the channels' medians), µs.
    pub p50_us: u64,
    /// 99th percentile latency (the worst channel's), µs.
    pub p99_us: u64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One channel, sequential.
    pub single: Run,
    /// N channels at once.
    pub concurrent: Run,
    /// Gas of `open` (opener).
    pub gas_open: u64,
    /// Gas of `join` (counterparty).
    pub gas_join: u64,
    /// Gas of `cooperativeClose`.
    pub gas_close: u64,
}

async fn rpc(node: &NodeSpec, method: &str, params: Value) -> Result<Value> {
    call(node, method, params)
        .await
        .with_context(|| format!("{method} on {}", node.name))
}

async fn gas_of(node: &NodeSpec, action: &str) -> Result<u64> {
    let audit = rpc(node, "audit_list", json!([0, 10_000])).await?;
    audit
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == action)
        .and_then(|e| e["detail"]["detail"]["gas"].as_u64())
        .with_context(|| format!("no {action} with gas in {}'s audit log", node.name))
}

async fn pays(node: NodeSpec, id: String, n: u64) -> Result<(u64, u64, u64)> {
    let r = rpc(&node, "layer2_pay", json!([id, "1gwei", n])).await?;
    let f = |k: &str| r[k].as_u64().unwrap_or(0);
    Ok((f("elapsed_ms"), f("p50_us"), f("p99_us")))
}

async fn anvil(bin: &std::path::Path) -> Result<(std::process::Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = std::process::Command::new(bin)
        .args(["--port", &port.to_string(), "--silent"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run anvil at {} (set VIGIL_ANVIL or --anvil)",
                bin.display()
            )
        })?;
    Ok((child, port))
}

async fn eth(url: &str, method: &str, params: Value) -> Result<Value> {
    use jsonrpsee::core::client::ClientT;
    let c = jsonrpsee::http_client::HttpClientBuilder::default().build(url)?;
    let p: Vec<Value> = serde_json::from_value(params)?;
    let mut b = jsonrpsee::core::params::ArrayParams::new();
    for v in p {
        b.insert(v)?;
    }
    Ok(c.request(method, b).await?)
}

/// Runs the measurement.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let (mut child, port) = anvil(&o.anvil).await?;
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while eth(&url, "eth_chainId", json!([])).await.is_err() {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(20), "anvil did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let contract = vigil_layer2::evm::deploy(&url, &vigil_layer2::Account::anvil_dev(), 20).await?;
        let dir = tempfile::tempdir()?;
        let m = vigil_testnet::create(
            &dir.path().join("tn"),
            &TnOptions {
                n: 2,
                preset: "dev".into(),
                timelords: 0,
                ..TnOptions::default()
            },
        )?;
        let r = measure(o, &m, &url, port, contract, progress).await;
        let _ = down(&m, Duration::from_secs(5)).await;
        let _ = child.kill();
        let _ = child.wait();
        r
    })
}

async fn measure(
    o: &Options,
    m: &Manifest,
    url: &str,
    port: u16,
    contract: vigil_layer2::Address,
    progress: &dyn Fn(&str),
) -> Result<Report> {
    for n in &m.nodes {
        let cfg = n.dir.join("config.toml");
        let mut text = std::fs::read_to_string(&cfg)?;
        text.push_str(&format!(
            "\n[[chain.sources]]\nname = \"anvil\"\nkind = \"evm\"\nurl = \"{url}\"\nws_url = \"ws://127.0.0.1:{port}\"\nchain_id = 31337\nblock_time_ms = 1000\n\n[layer2]\nenabled = true\nsource = \"anvil\"\ncontract = \"{contract}\"\n"
        ));
        std::fs::write(&cfg, text)?;
        start_node(m, n)?;
    }
    wait_peers(m, 1, Duration::from_secs(60)).await?;
    let (a, b) = (&m.nodes[0], &m.nodes[1]);
    for n in [a, b] {
        let addr = rpc(n, "node_info", json!([])).await?["evm_address"].clone();
        eth(url, "anvil_setBalance", json!([addr, "0x56BC75E2D63100000"])).await?;
    }
    progress(&format!("opening {} channels", o.channels.max(1)));
    let mut ids = Vec::new();
    for _ in 0..o.channels.max(1) {
        let info = rpc(a, "layer2_open", json!([b.peer_id, "1eth"])).await?;
        ids.push(info["id"].as_str().context("channel id")?.to_owned());
    }
    let (gas_open, gas_join) = (
        gas_of(a, "layer2.opened").await?,
        gas_of(b, "layer2.joined").await?,
    );

    progress(&format!("{} payments on one channel", o.payments));
    let (ms, p50, p99) = pays(a.clone(), ids[0].clone(), o.payments).await?;
    let single = Run {
        channels: 1,
        payments: o.payments,
        per_sec: o.payments as f64 / (ms.max(1) as f64 / 1000.0),
        p50_us: p50,
        p99_us: p99,
    };

    progress(&format!(
        "{} channels x {} payments at once",
        ids.len(),
        o.per_channel
    ));
    let t0 = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(pays(a.clone(), id.clone(), o.per_channel)))
        .collect();
    let mut p50s = Vec::new();
    let mut p99 = 0;
    for t in tasks {
        let (_, p50, p) = t.await??;
        p50s.push(p50);
        p99 = p99.max(p);
    }
    let wall = t0.elapsed();
    p50s.sort_unstable();
    let total = o.per_channel * ids.len() as u64;
    let concurrent = Run {
        channels: ids.len(),
        payments: total,
        per_sec: total as f64 / wall.as_secs_f64(),
        p50_us: p50s[p50s.len() / 2],
        p99_us: p99,
    };
    rpc(a, "layer2_close", json!([ids[0]])).await?;
    let gas_close = gas_of(a, "layer2.closed").await?;
    Ok(Report {
        single,
        concurrent,
        gas_open,
        gas_join,
        gas_close,
    })
}
