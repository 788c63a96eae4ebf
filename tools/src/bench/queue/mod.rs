//! `vigil-bench queue`: durable publish -> confirm with an fsync per confirm.
//!
//! Measured side by side in one run, same payload size and concurrency:
//! - vigil over its bus: each publisher is a WebSocket client on 127.0.0.1 of a
//!   real `vigil dev` node process started by the benchmark (`vigil-node` rows),
//!   as Redis's clients talk to a `redis-server` process over TCP; the same
//!   over the node's Unix socket (`vigil-node-unix`, against `redis-unix`:
//!   Redis on a Unix socket too); the same against a
//!   node with `bus.confirm = none` (`node-no-fsync`: the durable path
//!   without the disk) and to an ephemeral topic (`bus-no-disk`: the bus alone);
//! - vigil's queue engine in-process (`Queues::publish`, confirm mode `always`);
//! - Redis Streams (`XADD`, `appendfsync always`) on a `redis-server` this
//!   benchmark starts on 127.0.0.1 and stops, when one is installed;
//! - end to end publish -> deliver -> ack through vigil with one consumer group.

mod e2e;
mod redis_rows;
pub mod summary;
pub mod table;
mod vigil;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{cpu_secs, rss_mib, Percentiles};
use e2e::{end_to_end, end_to_end_bus, end_to_end_redis};
use redis_rows::{redis_row, start_redis};
use vigil::{bus_row, vigil_row, Target};

/// Runtime threads: the node's own runtime uses the same on a 2-core machine.
const WORKERS: usize = 2;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages per publisher.
    pub per_publisher: usize,
    /// Publisher counts to measure.
    pub publishers: Vec<usize>,
    /// Payload bytes.
    pub payload: usize,
    /// Compare with Redis (needs `redis-server` on PATH).
    pub redis: bool,
    /// Publishes each publisher keeps in flight over the wire (1 = wait for each confirm).
    pub window: usize,
    /// How clients reach the servers: each is measured for vigil and Redis alike.
    pub transports: Vec<Transport>,
}

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// 127.0.0.1: WebSocket for vigil, RESP over TCP for Redis.
    Tcp,
    /// A Unix socket: one JSON frame per line for vigil, RESP for Redis.
    Unix,
}

impl Transport {
    /// `tcp` or `unix`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }

    /// The suffix of this transport's row names.
    fn suffix(self) -> &'static str {
        match self {
            Transport::Tcp => "",
            Transport::Unix => "-unix",
        }
    }
}

/// Publish -> deliver -> ack through a server process over one transport.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    /// `vigil-node` or `redis`.
    pub system: String,
    /// How the publishers and the consumer connected.
    pub transport: Transport,
    /// Publishers (each waits for its confirm).
    pub publishers: usize,
    /// Messages published, delivered and acked per second.
    pub msgs_per_sec: f64,
    /// Publish sent -> delivery received by the consumer.
    pub deliver: Percentiles,
}

/// A window-1 row against the disk's limit.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// How the clients connected.
    pub transport: Transport,
    /// Concurrent publishers.
    pub publishers: usize,
    /// publishers / one durable write's latency.
    pub ceiling_msgs_per_sec: f64,
    /// The node's durable msg/s over the ceiling.
    pub ratio: f64,
}

/// vigil node / Redis throughput for one transport and publisher count.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// How the clients connected.
    pub transport: Transport,
    /// Concurrent publishers.
    pub publishers: usize,
    /// vigil node msg/s over Redis msg/s.
    pub ratio: f64,
}

/// One (system, publishers) measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `vigil` or `redis`.
    pub system: String,
    /// When the system confirmed a publish: `fsync` (after the data is on
    /// disk: vigil `bus.confirm = always`, Redis `appendfsync always`),
    /// `no-fsync` (`bus.confirm = none`), `no-disk` (an ephemeral topic).
    pub confirm_mode: &'static str,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Confirmed messages per second.
    pub msgs_per_sec: f64,
    /// Publish -> confirm latency.
    pub confirm: Percentiles,
    /// CPU time of the server process (vigil node, redis-server) per message, µs.
    pub server_cpu_us: Option<f64>,
    /// CPU time of this process (the clients; the whole engine when in-process) per message, µs.
    pub client_cpu_us: Option<f64>,
    /// Resident memory of the server process when half the messages were confirmed, MiB.
    pub server_rss_half_mib: Option<f64>,
    /// ... and at the end: a server that keeps something per message grows between the two.
    pub server_rss_end_mib: Option<f64>,
}

impl Row {
    /// The row of `publishers` x `per` confirmed publishes that took `secs`,
    /// with their latencies and the server's CPU and memory.
    async fn measured(
        (system, confirm_mode): (String, &'static str),
        publishers: usize,
        per: usize,
        secs: f64,
        latencies: Vec<u64>,
        cpu: &CpuMark,
        rss: RssWatch,
    ) -> Row {
        let (server_cpu_us, client_cpu_us) = cpu.per_msg(publishers * per);
        let (server_rss_half_mib, server_rss_end_mib) = rss.finish().await;
        Row {
            system,
            confirm_mode,
            publishers,
            msgs_per_sec: (publishers * per) as f64 / secs,
            confirm: Percentiles::from_nanos(latencies),
            server_cpu_us,
            client_cpu_us,
            server_rss_half_mib,
            server_rss_end_mib,
        }
    }
}

/// Samples a server's resident memory when half of a row's messages are
/// confirmed (publishers count them in [`RssWatch::confirmed`]) and at the end.
struct RssWatch {
    pid: Option<u32>,
    confirmed: Arc<AtomicUsize>,
    half: tokio::task::JoinHandle<Option<f64>>,
}

impl RssWatch {
    fn start(pid: Option<u32>, total: usize) -> Self {
        let confirmed = Arc::new(AtomicUsize::new(0));
        let c = confirmed.clone();
        let half = tokio::spawn(async move {
            let pid = pid?;
            while c.load(Ordering::Relaxed) < total / 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            rss_mib(pid)
        });
        Self { pid, confirmed, half }
    }

    /// (halfway, end) MiB.
    async fn finish(self) -> (Option<f64>, Option<f64>) {
        let end = self.pid.and_then(rss_mib);
        self.half.abort_handle().abort();
        (self.half.await.ok().flatten(), end)
    }
}

/// CPU seconds of `server` and of this process, for a before/after difference.
struct CpuMark {
    server: Option<u32>,
    at: (Option<f64>, Option<f64>),
}

impl CpuMark {
    fn now(server: Option<u32>) -> Self {
        Self {
            server,
            at: (server.and_then(|p| cpu_secs(Some(p))), cpu_secs(None)),
        }
    }

    /// (server, client) µs per message since the mark.
    fn per_msg(&self, msgs: usize) -> (Option<f64>, Option<f64>) {
        let d = |before: Option<f64>, after: Option<f64>| Some((after? - before?) * 1e6 / msgs.max(1) as f64);
        (
            d(self.at.0, self.server.and_then(|p| cpu_secs(Some(p)))),
            d(self.at.1, cpu_secs(None)),
        )
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Publish -> confirm rows.
    pub rows: Vec<Row>,
    /// Publish -> deliver -> ack, messages per second (16 publishers, one
    /// consumer), the queue engine in-process.
    pub end_to_end_msgs_per_sec: f64,
    /// The same through a node process (publishers and one consumer app
    /// over the bus) and through Redis, per transport.
    pub end_to_end_bus: Vec<EndToEnd>,
    /// vigil over the bus / Redis throughput per transport and publisher count, when Redis ran.
    pub ratio_vs_redis: Vec<Ratio>,
    /// Why Redis did not run, if it did not.
    pub redis_note: Option<String>,
    /// One durable write's latency on the temp dir's disk (a 4 KiB
    /// `O_DIRECT` write + `fdatasync`, mean of 1,000, measured before the
    /// rows), µs.
    pub durable_write_us: Option<f64>,
    /// At one publish in flight per publisher, the most any design can
    /// confirm: publishers / one durable write, and the node's rate as a
    /// share of it.
    pub ceilings: Vec<Ceiling>,
    /// Payload bytes.
    pub payload: usize,
    /// Publishes in flight per publisher over the wire (vigil node and Redis alike).
    pub window: usize,
}

/// Every publisher's latency samples, in nanoseconds.
async fn join_latencies(tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>) -> Vec<u64> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("publisher task"));
    }
    all
}

/// Runs the benchmark on a 2-worker tokio runtime.
pub fn run(opts: &Options, progress: &dyn Fn(&str)) -> Report {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    progress("one durable write (log-sync, 1,000 writes)");
    let durable_write_us = super::logsync::run(&std::env::temp_dir(), 1, 1_000, &|_| {})
        .ok()
        .and_then(|r| r.rows.iter().find(|r| r.method == "direct").map(|r| r.mean_us));
    rt.block_on(async {
        let mut rows = Vec::new();
        let redis = if opts.redis { Some(start_redis()) } else { None };
        let mut redis_note = match &redis {
            None => Some("skipped (--no-redis)".to_owned()),
            Some(Err(e)) => Some(e.clone()),
            Some(Ok(_)) => None,
        };
        for &n in &opts.publishers {
            for &transport in &opts.transports {
                let over = match transport {
                    Transport::Tcp => "",
                    Transport::Unix => " over Unix sockets",
                };
                let mut targets = vec![("vigil over the bus", Target::Durable)];
                // The rows that isolate one cost are measured on one transport.
                if transport == Transport::Tcp {
                    targets.push(("the node with bus.confirm = none (no fsync)", Target::NoFsync));
                    targets.push(("the bus without disk (ephemeral topic)", Target::Ephemeral));
                }
                for (what, target) in targets {
                    progress(&format!("{what}{over}, {n} publishers"));
                    let row = bus_row(
                        n,
                        opts.per_publisher,
                        opts.payload,
                        opts.window,
                        target,
                        transport,
                    );
                    rows.push(row.await);
                }
                if let Some(Ok(server)) = &redis {
                    progress(&format!("redis{over}, {n} publishers"));
                    match redis_row(
                        server,
                        transport,
                        n,
                        opts.per_publisher,
                        opts.payload,
                        opts.window,
                    )
                    .await
                    {
                        Ok(r) => rows.push(r),
                        Err(e) => redis_note = Some(e),
                    }
                }
            }
            progress(&format!("vigil engine in-process, {n} publishers"));
            rows.push(vigil_row(n, opts.per_publisher, opts.payload).await);
        }
        progress("end to end");
        let max_pubs = opts.publishers.iter().copied().max().unwrap_or(1);
        let end_to_end_msgs_per_sec = end_to_end(max_pubs, opts.per_publisher, opts.payload).await;
        let mut through_node = Vec::new();
        for &transport in &opts.transports {
            let over = transport.name();
            progress(&format!("end to end through the node ({over})"));
            match end_to_end_bus(max_pubs, opts.per_publisher, opts.payload, transport).await {
                Ok(e) => through_node.push(e),
                Err(e) => eprintln!("note: end to end through the node ({over}) not measured: {e}"),
            }
            if let Some(Ok(server)) = &redis {
                progress(&format!("end to end through redis ({over})"));
                match end_to_end_redis(server, max_pubs, opts.per_publisher, opts.payload, transport).await {
                    Ok(e) => through_node.push(e),
                    Err(e) => redis_note = Some(format!("end to end: {e}")),
                }
            }
        }
        let rate = |system: String, n: usize| {
            rows.iter()
                .find(|r| r.system == system && r.publishers == n)
                .map(|r| r.msgs_per_sec)
        };
        let mut ratio_vs_redis = Vec::new();
        for &transport in &opts.transports {
            for &n in &opts.publishers {
                let sfx = transport.suffix();
                // An in-process bus stands in for the node when its binary is missing.
                let vigil =
                    rate(format!("vigil-node{sfx}"), n).or_else(|| rate(format!("vigil-bus{sfx}"), n));
                if let (Some(v), Some(r)) = (vigil, rate(format!("redis{sfx}"), n)) {
                    ratio_vs_redis.push(Ratio {
                        transport,
                        publishers: n,
                        ratio: v / r,
                    });
                }
            }
        }
        let mut ceilings = Vec::new();
        for &transport in opts.transports.iter().filter(|_| opts.window == 1) {
            for &n in &opts.publishers {
                let node = rate(format!("vigil-node{}", transport.suffix()), n);
                if let (Some(v), Some(us)) = (node, durable_write_us) {
                    let ceiling = n as f64 * 1e6 / us;
                    ceilings.push(Ceiling {
                        transport,
                        publishers: n,
                        ceiling_msgs_per_sec: ceiling,
                        ratio: v / ceiling,
                    });
                }
            }
        }
        Report {
            rows,
            durable_write_us,
            ceilings,
            end_to_end_msgs_per_sec,
            end_to_end_bus: through_node,
            ratio_vs_redis,
            redis_note,
            payload: opts.payload,
            window: opts.window,
        }
    })
}
