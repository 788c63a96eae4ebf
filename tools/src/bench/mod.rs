//! Benchmark drivers behind `vigil-bench`: each area measures its figures side
//! by side in one run and returns a report that prints as a table or JSON.

pub mod chain;
pub mod continuity;
pub mod flood;
pub mod forgery;
pub mod layer2;
pub mod logsync;
pub mod metrics;
pub mod network;
pub mod proofs;
pub mod queue;
pub mod rpc;
pub mod supervision;
pub mod vdf;

use serde::Serialize;

/// User + system CPU seconds a process has used (`/proc/<pid>/stat`, this
/// process for `None`; Linux, 10 ms ticks).
pub(crate) fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident memory of a process, MiB (`VmRSS` of `/proc/<pid>/status`; Linux).
pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A fresh node database of the dev genesis at `path`, as a benchmark's node would open it.
pub(crate) fn dev_db(path: &std::path::Path) -> anyhow::Result<vigil_actors::store::SledStore> {
    use vigil_actors::store::{open_node_db, OpenMode, StoreOptions};
    let g = vigil_genesis::Preset::Dev.genesis()?;
    Ok(open_node_db(
        path,
        g.hash(),
        OpenMode::Create,
        &StoreOptions::default(),
    )?)
}

/// Percentiles of a sample of durations, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Sample size.
    pub n: usize,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Percentiles {
    /// From samples in nanoseconds (sorted here).
    pub fn from_nanos(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        let at = |q: f64| {
            let i = ((ns.len() as f64 - 1.0) * q).round() as usize;
            ns.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        Self {
            n: ns.len(),
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

/// Median of a small sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
