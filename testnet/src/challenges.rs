//! Datasets for chaos runs, and the tally of the challenges they drew: a
//! few nodes store a file (through the admin RPC, as `vigilctl storage put`
//! does), every other node challenges it every epoch, and the tally says
//! how many challenges each storer got and answered, by outcome.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Serialize;
use serde_json::json;

use crate::{call, Manifest};

/// Bytes per dataset: one sector's worth of leaves, cheap to encode.
pub const DATASET_BYTES: usize = 256 * 1024;

/// Stores `DATASET_BYTES` of data derived from `i` on node `i` and waits
/// until the node has encoded and announced it; returns the replica root.
pub async fn store(m: &Manifest, i: usize) -> Result<String> {
    let node = &m.nodes[i];
    let bytes: Vec<u8> = (0..DATASET_BYTES as u32)
        .map(|x| (x.wrapping_mul(2_654_435_761) >> (i % 24 + 3)) as u8)
        .collect();
    let name = format!("chaos-{i}.bin");
    let begin = call(node, "storage_put_begin", json!([name, bytes.len()])).await?;
    let upload = begin["upload"].clone();
    let chunk = begin["chunk_bytes"].as_u64().unwrap_or(256 * 1024).max(1) as usize;
    for (k, part) in bytes.chunks(chunk).enumerate() {
        let data = base64::engine::general_purpose::STANDARD.encode(part);
        call(node, "storage_put_chunk", json!([upload, k * chunk, data])).await?;
    }
    let job = call(node, "storage_put_finish", json!([upload])).await?;
    let id = job["job"].clone();
    let t0 = Instant::now();
    loop {
        let j = call(node, "storage_job", json!([id])).await?;
        match j["phase"].as_str() {
            Some("done") => {
                return j["dataset"]["replica_root"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("node-{i}: a done job without a dataset: {j}"));
            }
            Some("failed" | "aborted") => bail!("node-{i} could not store its dataset: {j}"),
            _ if t0.elapsed() > Duration::from_secs(120) => {
                bail!("node-{i} had not stored its dataset after 120 s: {j}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Challenges the storers drew from all other nodes.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Tally {
    /// Challenges (and audits) issued to storers, by every other node.
    pub challenges: u64,
    /// Answered `ok` (or `audit_ok`).
    pub ok: u64,
    /// `ok / challenges`.
    pub success_rate: f64,
    /// Count per outcome (`ok`, `timeout`, `late`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// `node-i -> node-j` pairs where node-i never got an answer from
    /// storer node-j (a checker failure when not empty).
    pub never_answered: Vec<String>,
}

/// Sums every node's `challenge_stats` for the `storers`. A node's figures
/// start when its process does (a restarted node counts from its restart):
/// nodes in `recent` restarted too lately to have heard every announcement
/// (re-gossiped every 15 s) and are not held to having been answered.
pub async fn tally(m: &Manifest, storers: &[usize], recent: &std::collections::BTreeSet<usize>) -> Tally {
    let mut t = Tally::default();
    for (i, node) in m.nodes.iter().enumerate() {
        let asked =
            tokio::time::timeout(Duration::from_secs(5), call(node, "challenge_stats", json!([]))).await;
        let Ok(Ok(st)) = asked else {
            t.never_answered
                .push(format!("node-{i}: challenge_stats did not answer"));
            continue;
        };
        for &j in storers.iter().filter(|&&j| j != i) {
            let s = &st["peers"][&m.nodes[j].peer_id];
            let (c, ok) = (
                s["challenges"].as_u64().unwrap_or(0),
                s["ok"].as_u64().unwrap_or(0),
            );
            t.challenges += c;
            t.ok += ok;
            if ok == 0 && !recent.contains(&i) {
                t.never_answered.push(format!(
                    "node-{i} -> node-{j}: {c} challenges, none answered (outcomes {}, last failure {})",
                    s["outcomes"], s["last_failure"]
                ));
            }
            for (outcome, n) in s["outcomes"].as_object().into_iter().flatten() {
                *t.outcomes.entry(outcome.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    t.success_rate = t.ok as f64 / t.challenges.max(1) as f64;
    t
}
