//! What a Prometheus scrape costs the node: the node's recorder with every
//! series it registers at start, plus the traffic of a busy node (topics
//! with their counters and confirm latencies, a latency histogram per RPC
//! method, chain sources, actors), rendered as a scrape renders it
//! (the gauges computed on scrape, the process collector included).

use std::time::Instant;

use serde::Serialize;
use vigil_actors::metrics as m;

/// Options of the run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scrapes timed.
    pub scrapes: usize,
    /// Durable topics with traffic.
    pub topics: usize,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Metric families on the scrape (`# TYPE` lines).
    pub families: usize,
    /// Series (sample lines, histogram buckets included).
    pub series: usize,
    /// Bytes of one scrape.
    pub bytes: usize,
    /// One scrape (gauges on scrape, process collector, render), µs.
    pub scrape_p50_us: f64,
    /// The same, 99th percentile.
    pub scrape_p99_us: f64,
    /// The process collector alone (reads `/proc`), median µs.
    pub process_p50_us: f64,
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Installs the node's recorder in this process (once per process) and times `o.scrapes` scrapes.
pub fn run(o: &Options) -> Result<Report, String> {
    let handle = m::recorder()
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    m::describe("bench", "0000000000000000".into());
    for t in 0..o.topics {
        let topic = format!("topic-{t}");
        for name in [
            m::QUEUE_PUBLISHED,
            m::QUEUE_PUBLISHED_BYTES,
            m::QUEUE_DELIVERED,
            m::QUEUE_ACKED,
            m::QUEUE_NAKD,
            m::QUEUE_REDELIVERED,
            m::QUEUE_DEAD_LETTERED,
        ] {
            metrics::counter!(name, "topic" => topic.clone()).increment(1_000);
        }
        metrics::gauge!(m::QUEUE_DEPTH, "topic" => topic.clone()).set(1_000.0);
        metrics::gauge!(m::QUEUE_IN_FLIGHT, "topic" => topic, "group" => "workers").set(8.0);
    }
    for i in 0..10_000u32 {
        metrics::histogram!(m::QUEUE_CONFIRM_DURATION).record(f64::from(i % 97) * 1e-5);
    }
    for (method, _) in vigil_actors::rpc::roles::METHOD_ROLES {
        for i in 0..10u32 {
            metrics::histogram!(m::RPC_DURATION, "method" => method).record(f64::from(i) * 1e-4);
        }
    }
    for source in ["mainnet", "sepolia"] {
        metrics::gauge!(m::CHAIN_HEAD, "source" => source).set(21_000_000.0);
        metrics::gauge!(m::CHAIN_HEALTHY, "source" => source).set(1.0);
        metrics::gauge!(m::CHAIN_HEAD_AGE, "source" => source).set(3.0);
        metrics::gauge!(m::CHAIN_FINALITY_LAG, "source" => source).set(64.0);
    }
    for actor in [
        "store",
        "bus",
        "net",
        "epochs",
        "vdf",
        "challenges",
        "chain",
        "continuity",
        "layer2",
        "rpc",
    ] {
        metrics::gauge!(m::ACTOR_UP, "actor" => actor).set(1.0);
        metrics::gauge!(m::ACTOR_MAILBOX, "actor" => actor).set(0.0);
        metrics::counter!(m::ACTOR_RESTARTS, "actor" => actor).increment(0);
    }
    let started = Instant::now();
    let scrape = || {
        m::on_scrape(started, true);
        handle.render()
    };
    let text = scrape();
    let mut times = Vec::with_capacity(o.scrapes);
    for _ in 0..o.scrapes.max(1) {
        let t = Instant::now();
        std::hint::black_box(scrape());
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let collector = metrics_process::Collector::default();
    let mut process = Vec::with_capacity(o.scrapes);
    for _ in 0..o.scrapes.max(1) {
        let t = Instant::now();
        collector.collect();
        process.push(t.elapsed().as_secs_f64() * 1e6);
    }
    process.sort_by(|a, b| a.total_cmp(b));
    Ok(Report {
        families: text.lines().filter(|l| l.starts_with("# TYPE")).count(),
        series: text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count(),
        bytes: text.len(),
        scrape_p50_us: pct(&times, 0.5),
        scrape_p99_us: pct(&times, 0.99),
        process_p50_us: pct(&process, 0.5),
    })
}
