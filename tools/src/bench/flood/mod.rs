//! The flood: an honest 3-node testnet of real `vigil run` processes, and
//! hostile clients that at once open hundreds of TCP connections to node-0,
//! send garbage and oversized frames on every vigil protocol, ask for
//! audits and range syncs as fast as they can, gossip attestations with
//! every field at its limit, announce datasets in bulk and hammer the bus
//! with bad hellos. Before and during it: node-1 challenges node-0 and an
//! app publishes durable messages to node-0's bus, and the RPC, `/ready`,
//! the epoch heads, RSS and open descriptors of node-0 are sampled.
//!
//! The test (`tools/tests/it`) runs a short pass and checks what must hold;
//! `vigil-bench flood` runs it longer and prints the figures.

mod hostile;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use vigil_testnet::{call, down, up, Manifest, NodeSpec, Options as TnOptions};

use hostile::{Counts, Target};

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// The quiet phase before the flood (the idle figures).
    pub idle: Duration,
    /// The flood.
    pub flood: Duration,
    /// TCP connections opened to node-0 and held.
    pub connections: usize,
    /// Attestations gossiped in all.
    pub attestations: u64,
    /// Run the attackers at nice 19 (they stand for other machines; for
    /// the timing figures). Off, they take the CPU of the two cores like
    /// any process, and reach every limit sooner (for the checks).
    pub nice_attackers: bool,
}

impl Options {
    /// The pass `scripts/test` runs.
    pub fn short() -> Self {
        Self {
            idle: Duration::from_secs(8),
            flood: Duration::from_secs(20),
            connections: 500,
            attestations: 3_000,
            nice_attackers: false,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(20),
            flood: Duration::from_secs(60),
            connections: 500,
            attestations: 100_000,
            nice_attackers: true,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds of flood.
    pub flood_secs: f64,
    /// Requests node-0 answered "busy", per second, by kind.
    pub refused_per_sec: BTreeMap<String, f64>,
    /// Offences node-0 scored, by kind.
    pub offences: BTreeMap<String, f64>,
    /// node-1's challenges of node-0: p99 round trip, ms, idle and flooded.
    pub challenge_p99_idle_ms: f64,
    /// The same, during the flood.
    pub challenge_p99_flood_ms: f64,
    /// Flood over idle.
    pub challenge_ratio: f64,
    /// node-1's challenges of node-0 during the flood, and how many were not `ok`.
    pub challenges: u64,
    /// Not `ok` (nor busy).
    pub challenges_failed: u64,
    /// Answered busy.
    pub challenges_busy: u64,
    /// Answered right but after the deadline.
    pub challenges_late: u64,
    /// Requests node-0 refused as past a peer's share (`quota`) or with
    /// every slot taken (`busy`), in all, by kind and reason.
    pub refused: BTreeMap<String, f64>,
    /// node-0's admin RPC (`node_health`): p99, ms, idle and flooded.
    pub rpc_p99_idle_ms: f64,
    /// The same, during the flood.
    pub rpc_p99_flood_ms: f64,
    /// `/ready` answers other than 200 during the flood.
    pub not_ready: u64,
    /// Epoch heads of the three nodes when the flood began and ended.
    pub heads_before: Vec<u64>,
    /// The same, at the end.
    pub heads_after: Vec<u64>,
    /// node-0's resident memory before and at most during the flood, MiB.
    pub rss_before_mib: f64,
    /// The most during the flood.
    pub rss_max_mib: f64,
    /// node-0's open descriptors before and at most during the flood.
    pub fds_before: u64,
    /// The most during the flood.
    pub fds_max: u64,
    /// Hostile identities made, and how many node-0 banned.
    pub hostile_identities: u64,
    /// Banned by node-0.
    pub banned: u64,
    /// TCP connections the flood held open.
    pub tcp_connections: usize,
    /// What the hostile clients sent.
    pub sent: BTreeMap<String, u64>,
    /// Durable publishes to node-0's bus confirmed during the flood, and
    /// how many the queue holds after it.
    pub queue_confirmed: u64,
    /// Held after it.
    pub queue_held: u64,
    /// The lowest score node-0 gives node-1 or node-2 after the flood.
    pub honest_min_score: f64,
    /// Offences node-0 scored against node-1 or node-2 (its log).
    pub honest_offences: u64,
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

/// `vigil_net_requests_refused_total` by `kind/reason`.
fn by_kind_reason(text: &str) -> BTreeMap<String, f64> {
    let name = "vigil_net_requests_refused_total{";
    let mut out = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with(name)) {
        let label = |k: &str| {
            l.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_owned()
        };
        if let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *out.entry(format!("{}/{}", label("kind"), label("reason")))
                .or_default() += v;
        }
    }
    out
}

/// The sum of `name` samples whose labels contain `label`, by the value of `key` in them.
fn by_label(text: &str, name: &str, key: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
    {
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let pat = format!("{key}=\"");
        if let Some(k) = l.split(&pat).nth(1).and_then(|r| r.split('"').next()) {
            *out.entry(k.to_owned()).or_default() += v;
        }
    }
    out
}

/// The whole HTTP/1.0 answer to `GET path` on `node`'s RPC address.
async fn get(node: &NodeSpec, path: &str) -> Result<String> {
    let url = std::fs::read_to_string(node.dir.join("rpc.url"))?;
    let addr = url.trim().trim_start_matches("http://").to_owned();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    tokio::task::spawn_blocking(move || -> Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .await?
}

async fn metrics(node: &NodeSpec) -> Result<String> {
    get(node, "/metrics").await
}

async fn ready(node: &NodeSpec) -> bool {
    get(node, "/ready").await.is_ok_and(|out| {
        out.lines()
            .next()
            .is_some_and(|l| l.split(' ').nth(1) == Some("200"))
    })
}

fn fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

async fn head(node: &NodeSpec) -> u64 {
    call(node, "epoch_head", json!([]))
        .await
        .ok()
        .and_then(|r| r["head"].as_u64())
        .unwrap_or(0)
}

/// Stores `bytes` on `node` through the RPC, as `vigilctl storage put` does; its `R_p`.
async fn store(node: &NodeSpec, bytes: &[u8]) -> Result<[u8; 32]> {
    use base64::Engine;
    let r = call(node, "storage_put_begin", json!(["flood.bin", bytes.len()])).await?;
    let id = r["upload"].as_u64().context("no upload id")?;
    let chunk = r["chunk_bytes"].as_u64().unwrap_or(512 * 1024) as usize;
    for (i, c) in bytes.chunks(chunk).enumerate() {
        let data = base64::engine::general_purpose::STANDARD.encode(c);
        call(node, "storage_put_chunk", json!([id, i * chunk, data])).await?;
    }
    call(node, "storage_put_finish", json!([id])).await?;
    // Encoding is a job: follow it.
    let info = loop {
        let j = call(node, "storage_job", json!([id])).await?;
        match j["phase"].as_str() {
            Some("done") => break j["dataset"].clone(),
            Some("failed") | Some("aborted") => anyhow::bail!("storing the dataset failed: {}", j["error"]),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    let hex = info["replica_root"].as_str().context("no replica root")?;
    let mut rp = [0u8; 32];
    for (i, b) in rp.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(rp)
}

/// Samples taken while a phase runs.
#[derive(Debug, Default)]
struct Samples {
    challenge_ms: Vec<f64>,
    challenges_failed: u64,
    challenges_busy: u64,
    challenges_late: u64,
    rpc_ms: Vec<f64>,
    not_ready: u64,
    rss_max_mib: f64,
    fds_max: u64,
}

/// Samples node-0 (from node-1's side for challenges) until `stop`.
async fn sample(m: &Manifest, pid: i32, stop: Arc<AtomicBool>) -> Samples {
    let (n0, n1) = (&m.nodes[0], &m.nodes[1]);
    let mut s = Samples::default();
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        if call(n0, "node_health", json!([])).await.is_ok() {
            s.rpc_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if tick % 10 == 0 {
            match call(n1, "challenge_run", json!([n0.peer_id])).await {
                Ok(r) if r["outcome"] == "ok" => s.challenge_ms.push(r["latency_ms"].as_f64().unwrap_or(0.0)),
                Ok(r) if r["outcome"] == "busy" => s.challenges_busy += 1,
                Ok(r) if r["outcome"] == "late" => {
                    s.challenges_late += 1;
                    s.challenge_ms.push(r["latency_ms"].as_f64().unwrap_or(0.0));
                }
                Ok(r) => {
                    s.challenges_failed += 1;
                    eprintln!("honest challenge not ok: {r}");
                }
                Err(e) => {
                    s.challenges_failed += 1;
                    eprintln!("honest challenge not run: {e}");
                }
            }
            if !ready(n0).await {
                s.not_ready += 1;
            }
            if let Some(mib) = super::rss_mib(pid as u32) {
                s.rss_max_mib = s.rss_max_mib.max(mib);
            }
            s.fds_max = s.fds_max.max(fds(pid));
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s
}

/// Runs `fut` on a thread of its own (its own runtime, normal priority:
/// [`renice_all_but`] leaves it alone); the thread and its kernel id.
fn on_own_thread<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> (std::thread::JoinHandle<T>, i32) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let _ = tx.send(unsafe { libc::gettid() });
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(fut)
    });
    (h, rx.recv().unwrap_or(0))
}

/// Runs [`sample`] on a thread of its own until `stop`.
fn spawn_sampler(m: &Manifest, pid: i32, stop: Arc<AtomicBool>) -> (std::thread::JoinHandle<Samples>, i32) {
    let m = m.clone();
    on_own_thread(async move { sample(&m, pid, stop).await })
}

/// Sets the nice value of every thread of this process but those in `keep` (and of
/// threads they start from now on) to `nice`: the attackers stand for
/// other machines, so they get the CPU only when the honest nodes and the
/// samplers leave it (two cores are shared by everything here).
fn renice_all_but(keep: &[i32], nice: i32) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if !keep.contains(&tid) {
            // SAFETY: setpriority on a thread id of this process.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
            }
        }
    }
}

/// An honest app publishing durable messages to `bus_url` every 20 ms on
/// a thread of its own until `stop`; the thread (its confirmed publishes)
/// and its kernel id.
fn spawn_publisher(
    bus_url: String,
    token: String,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<u64>, i32) {
    on_own_thread(async move {
        let Ok(app) = crate::bus::BusClient::connect(&bus_url, "steady", &token).await else {
            return 0u64;
        };
        let mut confirmed = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if app.publish("steady.orders", b"order").await.is_ok() {
                confirmed += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        confirmed
    })
}

/// Runs the flood.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        progress("starting 3 honest nodes");
        let tn = TnOptions {
            n: 3,
            preset: "dev".into(),
            vdf_iterations: Some(10_000_000),
            ..TnOptions::default()
        };
        let (m, _) = up(&dir.path().join("tn"), &tn, Duration::from_secs(90)).await?;
        let r = flood(&m, o, progress).await;
        let _ = down(&m, Duration::from_secs(5)).await;
        r
    })
}

async fn flood(m: &Manifest, o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    let n0 = &m.nodes[0];
    let pid = vigil_testnet::running_pid(n0).context("node-0 is not running")?;
    let data: Vec<u8> = (0..300_000u32)
        .map(|x| (x.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let replica_root = store(n0, &data).await?;
    // node-1 must have heard node-0's announcement to challenge it.
    let t0 = Instant::now();
    while call(&m.nodes[1], "challenge_run", json!([n0.peer_id]))
        .await
        .is_err()
    {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "node-1 never saw node-0's dataset"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // An app that publishes durable messages to node-0's bus throughout.
    let token = call(n0, "bus_app_add", json!(["steady"])).await?["token"]
        .as_str()
        .context("no token")?
        .to_owned();
    call(n0, "bus_grant", json!(["steady", "publish", "steady.*"])).await?;
    let bus_url = std::fs::read_to_string(n0.dir.join("bus.url"))?.trim().to_owned();

    progress("idle phase");
    let stop = Arc::new(AtomicBool::new(false));
    let (idle, _) = spawn_sampler(m, pid, stop.clone());
    tokio::time::sleep(o.idle).await;
    stop.store(true, Ordering::Relaxed);
    let idle = idle
        .join()
        .map_err(|_| anyhow::anyhow!("the idle sampler panicked"))?;

    let mut heads_before = Vec::new();
    for n in &m.nodes {
        heads_before.push(head(n).await);
    }
    let rss_before_mib = super::rss_mib(pid as u32).unwrap_or(0.0);
    let fds_before = fds(pid);
    let before = metrics(n0).await?;
    progress("flood");
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let head_now = Arc::new(AtomicU64::new(heads_before[0]));
    let target = Target {
        genesis: m.genesis()?,
        addr: n0.p2p_addr.parse()?,
        peer: n0.peer_id.parse()?,
        replica_root,
        bus_url: bus_url.clone(),
        head: head_now.clone(),
    };
    let port: u16 = n0
        .p2p_addr
        .split('/')
        .nth(4)
        .and_then(|p| p.parse().ok())
        .context("node-0's p2p port")?;
    let (sampler, sampler_tid) = spawn_sampler(m, pid, stop.clone());
    let (publisher, publisher_tid) = spawn_publisher(bus_url.clone(), token, stop.clone());
    if o.nice_attackers {
        renice_all_but(&[sampler_tid, publisher_tid], 19);
    }
    let tcp = hostile::hold_connections(port, o.connections, stop.clone());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(tokio::spawn(hostile::garbage(
            target.clone(),
            stop.clone(),
            counts.clone(),
        )));
        tasks.push(tokio::spawn(hostile::work(
            target.clone(),
            stop.clone(),
            counts.clone(),
        )));
    }
    tasks.push(tokio::spawn(hostile::attestations(
        target.clone(),
        o.attestations,
        stop.clone(),
        counts.clone(),
    )));
    tasks.push(tokio::spawn(hostile::announcements(
        target.clone(),
        stop.clone(),
        counts.clone(),
    )));
    tasks.push(tokio::spawn(hostile::bad_hellos(
        target.clone(),
        stop.clone(),
        counts.clone(),
    )));
    let t0 = Instant::now();
    while t0.elapsed() < o.flood {
        head_now.store(head(n0).await, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let flooded = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    if o.nice_attackers {
        renice_all_but(&[], 0);
    }
    let queue_confirmed = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))?;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let tcp_connections = tcp.join().unwrap_or(0);
    let mut heads_after = Vec::new();
    for n in &m.nodes {
        heads_after.push(head(n).await);
    }
    let after = metrics(n0).await?;
    let refused = by_label(&after, "vigil_net_requests_refused_total", "kind");
    let refused_before = by_label(&before, "vigil_net_requests_refused_total", "kind");
    let offences = by_label(&after, "vigil_net_offences_total", "offence");
    let q = call(n0, "queue_stats", json!(["steady.orders"])).await?;
    let queue_held = q[0]["depth"].as_u64().unwrap_or(0);
    let bans = call(n0, "net_bans", json!([])).await?;
    // node-0's view of the honest peers: never scored down for the flood.
    let peers = call(n0, "net_peers", json!([])).await?;
    let honest: Vec<&str> = m.nodes[1..].iter().map(|n| n.peer_id.as_str()).collect();
    let honest_min_score = peers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| honest.contains(&p["peer_id"].as_str().unwrap_or("")))
        .filter_map(|p| p["score"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let log = std::fs::read_to_string(n0.dir.join("node.log")).unwrap_or_default();
    let honest_offences = log
        .lines()
        .filter(|l| l.contains("peer scored down") && honest.iter().any(|h| l.contains(h)))
        .inspect(|l| eprintln!("node-0 scored an honest peer down: {l}"))
        .count() as u64;
    let (mut idle, mut flooded) = (idle, flooded);
    let (ci, cf) = (p99(&mut idle.challenge_ms), p99(&mut flooded.challenge_ms));
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(Report {
        flood_secs,
        refused_per_sec: refused
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - refused_before.get(k).copied().unwrap_or(0.0)) / flood_secs,
                )
            })
            .collect(),
        offences,
        challenge_p99_idle_ms: ci,
        challenge_p99_flood_ms: cf,
        challenge_ratio: if ci > 0.0 { cf / ci } else { 0.0 },
        challenges: flooded.challenge_ms.len() as u64 + flooded.challenges_failed + flooded.challenges_busy,
        challenges_failed: flooded.challenges_failed,
        challenges_busy: flooded.challenges_busy,
        challenges_late: flooded.challenges_late,
        refused: by_kind_reason(&after),
        rpc_p99_idle_ms: p99(&mut idle.rpc_ms),
        rpc_p99_flood_ms: p99(&mut flooded.rpc_ms),
        not_ready: flooded.not_ready,
        heads_before,
        heads_after,
        rss_before_mib,
        rss_max_mib: flooded.rss_max_mib,
        fds_before,
        fds_max: flooded.fds_max,
        hostile_identities: c(&counts.identities),
        banned: bans.as_array().map_or(0, |b| b.len() as u64),
        tcp_connections,
        sent: [
            ("raw_frames", c(&counts.raw_frames)),
            ("audits", c(&counts.audits)),
            ("syncs", c(&counts.syncs)),
            ("attestations", c(&counts.attestations)),
            ("announcements", c(&counts.announcements)),
            ("bad_hellos", c(&counts.bad_hellos)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        queue_confirmed,
        queue_held,
        honest_min_score,
        honest_offences,
    })
}

/// The report as lines for a terminal.
pub fn lines(r: &Report) -> Vec<String> {
    let kinds: Vec<String> = r
        .refused_per_sec
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}/s"))
        .collect();
    vec![
        format!("flood: {:.0} s against node-0; sent {:?}; {} TCP connections held", r.flood_secs, r.sent, r.tcp_connections),
        format!("refused (busy) per second: {}; in all by kind/reason: {:?}", kinds.join(", "), r.refused),
        format!("offences scored: {:?}; hostile identities {}, banned {}", r.offences, r.hostile_identities, r.banned),
        format!(
            "honest challenge p99: idle {:.1} ms, flood {:.1} ms (x{:.2}); of {}: {} failed, {} late, {} busy",
            r.challenge_p99_idle_ms,
            r.challenge_p99_flood_ms,
            r.challenge_ratio,
            r.challenges,
            r.challenges_failed,
            r.challenges_late,
            r.challenges_busy
        ),
        format!("admin RPC p99: idle {:.1} ms, flood {:.1} ms; /ready not 200: {}", r.rpc_p99_idle_ms, r.rpc_p99_flood_ms, r.not_ready),
        format!("epoch heads: {:?} -> {:?}", r.heads_before, r.heads_after),
        format!(
            "node-0 RSS {:.0} -> max {:.0} MiB; fds {} -> max {}",
            r.rss_before_mib, r.rss_max_mib, r.fds_before, r.fds_max
        ),
        format!("bus: {} durable publishes confirmed, {} held", r.queue_confirmed, r.queue_held),
        format!(
            "honest peers on node-0: lowest score {:.1}, offences {}",
            r.honest_min_score, r.honest_offences
        ),
    ]
}

/// A `Value` of the report (for `--json`).
pub fn json(r: &Report) -> Value {
    serde_json::to_value(r).unwrap_or_default()
}
