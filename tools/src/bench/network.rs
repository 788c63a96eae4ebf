//! `vigil-bench network`: local testnets of real `vigil run` processes
//! (release build): mesh formation time, gossip propagation, idle RSS.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use vigil_testnet::{call, down, running_pid, up};

use super::Percentiles;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Testnet sizes whose mesh formation is timed.
    pub sizes: Vec<usize>,
    /// Probes published for the propagation figures (on the largest testnet).
    pub probes: usize,
}

/// One testnet size.
#[derive(Debug, Clone, Serialize)]
pub struct Mesh {
    /// Nodes.
    pub nodes: usize,
    /// Process start until every node has min(n-1, 3) peers, ms.
    pub formed_ms: u64,
    /// Median resident memory per node after 5 s idle, MiB.
    pub idle_rss_mib: f64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Per size.
    pub meshes: Vec<Mesh>,
    /// Publish -> receipt on every other node, largest testnet.
    pub propagation: Percentiles,
    /// Nodes in the propagation run.
    pub propagation_nodes: usize,
}

fn rss_mib(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark.
pub fn run(opts: &Options, progress: &dyn Fn(&str)) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let mut meshes = Vec::new();
        let mut propagation = None;
        let largest = *opts.sizes.iter().max().unwrap_or(&5);
        for &n in &opts.sizes {
            progress(&format!("a testnet of {n} nodes"));
            let dir = tempfile::tempdir()?;
            let (m, formed) = up(
                &dir.path().join("tn"),
                &vigil_testnet::Options {
                    n,
                    // No VDF worker: the figures are the network's alone, comparable across runs.
                    timelords: 0,
                    ..Default::default()
                },
                Duration::from_secs(120),
            )
            .await?;
            let result = async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let mut rss: Vec<f64> = m.nodes.iter().filter_map(|n| rss_mib(running_pid(n)?)).collect();
                rss.sort_by(f64::total_cmp);
                meshes.push(Mesh {
                    nodes: n,
                    formed_ms: formed.as_millis() as u64,
                    idle_rss_mib: rss.get(rss.len() / 2).copied().unwrap_or(0.0),
                });
                if n == largest {
                    progress(&format!("gossip propagation across {n} nodes"));
                    let mut ids = Vec::new();
                    for i in 0..opts.probes {
                        let from = &m.nodes[i % n];
                        let id = call(from, "net_probe", json!([])).await?["probe"]
                            .as_u64()
                            .unwrap_or(0);
                        ids.push(id);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let mut lat = Vec::new();
                    let mut missing = 0;
                    for node in &m.nodes {
                        let seen = call(node, "net_probes", json!([])).await?;
                        let seen = seen.as_array().cloned().unwrap_or_default();
                        for id in &ids {
                            match seen.iter().find(|p| p["id"].as_u64() == Some(*id)) {
                                Some(p) if p["origin"] != json!(node.peer_id) => {
                                    let d = p["received_at_us"]
                                        .as_u64()
                                        .unwrap_or(0)
                                        .saturating_sub(p["sent_at_us"].as_u64().unwrap_or(0));
                                    lat.push(d * 1000);
                                }
                                Some(_) => {}
                                None => missing += 1,
                            }
                        }
                    }
                    if missing > 0 {
                        anyhow::bail!("{missing} probe receipts missing across {n} nodes");
                    }
                    propagation = Some(Percentiles::from_nanos(lat));
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            let _ = down(&m, Duration::from_secs(10)).await;
            result?;
        }
        Ok(Report {
            meshes,
            propagation: propagation.ok_or_else(|| anyhow::anyhow!("no propagation run"))?,
            propagation_nodes: largest,
        })
    })
}
