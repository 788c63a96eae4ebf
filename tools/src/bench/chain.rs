//! Chain monitoring figure: detection latency from `anvil_reorg` to the
//! alert stored on the durable bus topic `security.alerts`, over N reorgs
//! of a real anvil.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClientBuilder;
use jsonrpsee::rpc_params;
use serde::Serialize;
use serde_json::Value;
use vigil_actors::chain::{EvmSource, Followed, Monitor, Pauses, SecurityHub, SourceSettings};
use vigil_actors::queue::{QueueConfig, Queues};

use super::Percentiles;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reorgs timed.
    pub reorgs: usize,
    /// Reorg depth.
    pub depth: u64,
    /// The anvil binary.
    pub anvil: std::path::PathBuf,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `anvil_reorg` sent -> detection confirmed on `security.alerts`.
    pub latency: Percentiles,
    /// Reorg depth.
    pub depth: u64,
}

/// Runs the measurement.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut anvil = std::process::Command::new(&o.anvil)
            .args(["--port", &port.to_string(), "--silent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run anvil at {} (set VIGIL_ANVIL or --anvil)",
                    o.anvil.display()
                )
            })?;
        let url = format!("http://127.0.0.1:{port}");
        let rpc = HttpClientBuilder::default()
            .request_timeout(Duration::from_secs(5))
            .build(&url)?;
        let t0 = Instant::now();
        while rpc
            .request::<Value, _>("eth_chainId", rpc_params![])
            .await
            .is_err()
        {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(20), "anvil did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dir = tempfile::tempdir()?;
        let db = super::dev_db(&dir.path().join("db"))?;
        let queues = Queues::open(db, QueueConfig::default())?;
        let hub = SecurityHub::new(&[], Arc::new(Pauses::default()), Some(queues.clone()), None)
            .map_err(anyhow::Error::msg)?;
        let src = EvmSource::new("anvil", &url, Some(format!("ws://127.0.0.1:{port}")), Some(31337))
            .map_err(anyhow::Error::msg)?;
        let m = Monitor {
            sources: vec![Followed::new(
                Arc::new(src),
                SourceSettings {
                    block_time: Duration::from_secs(2),
                    stall_factor: 1e6,
                    keep_blocks: 128,
                    outage_after: 2,
                },
            )],
            hub: Arc::new(hub),
        };
        let tasks = m.spawn();
        let _: Value = rpc.request("anvil_mine", rpc_params!["0x10"]).await?;
        let t0 = Instant::now();
        while m.sources[0].status().head != Some(16) {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "the monitor did not follow anvil"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        progress(&format!("{} reorgs of depth {}", o.reorgs, o.depth));
        let mut ns = Vec::new();
        for _ in 0..o.reorgs {
            // Replacement blocks must differ from the old ones: move the clock.
            let _: Value = rpc.request("evm_increaseTime", rpc_params![1]).await?;
            let t = Instant::now();
            let _: Value = rpc
                .request("anvil_reorg", rpc_params![o.depth, Vec::<Value>::new()])
                .await?;
            loop {
                let (d, _) = queues.fetch("security.alerts", "bench", 16)?;
                if let Some(x) = d
                    .iter()
                    .find(|x| String::from_utf8_lossy(&x.envelope.payload).contains("\"kind\":\"reorg\""))
                {
                    ns.push(t.elapsed().as_nanos() as u64);
                    let seqs: Vec<u64> = d.iter().map(|x| x.envelope.seq).collect();
                    queues.ack_many("security.alerts", "bench", &seqs)?;
                    let _ = x;
                    break;
                }
                anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "a reorg was not detected");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            // Extend the chain again, and wait until the monitor has seen the
            // new head: a reorg of a block it never saw is not a reorg to it.
            let _: Value = rpc.request("anvil_mine", rpc_params!["0x1"]).await?;
            let latest: Value = rpc
                .request("eth_getBlockByNumber", rpc_params!["latest", false])
                .await?;
            let want = latest["hash"].as_str().unwrap_or_default().to_owned();
            let t = Instant::now();
            while m.sources[0].status().head_hash.as_deref() != Some(want.as_str()) {
                anyhow::ensure!(
                    t.elapsed() < Duration::from_secs(10),
                    "the monitor did not see the new head"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for t in tasks {
            t.abort();
        }
        let _ = anvil.kill();
        let _ = anvil.wait();
        Ok(Report {
            latency: Percentiles::from_nanos(ns),
            depth: o.depth,
        })
    })
}
