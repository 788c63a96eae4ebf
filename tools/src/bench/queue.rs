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

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use vigil_actors::queue::{ConfirmMode, Publish, QueueConfig, Queues};
use vigil_actors::store::SledStore;

use super::{cpu_secs, rss_mib, Percentiles};
use std::sync::atomic::{AtomicUsize, Ordering};

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

fn engine(dir: &std::path::Path) -> Arc<Queues> {
    let store = SledStore::open(dir, 256 << 20, None).expect("open sled");
    Queues::open(
        store,
        QueueConfig {
            confirm: ConfirmMode::Always,
            ..QueueConfig::default()
        },
    )
    .expect("open queues")
}

async fn vigil_row(publishers: usize, per: usize, payload: usize) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = engine(dir.path());
    let cpu = CpuMark::now(None);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let mut body = vec![b'x'; payload];
                    body[..8].copy_from_slice(&((p * per + i) as u64).to_be_bytes());
                    let msg = Publish {
                        sender: "bench".into(),
                        payload: body,
                        ..Publish::default()
                    };
                    let t = Instant::now();
                    q.publish("bench", msg).await.expect("publish");
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let all = join_latencies(tasks).await;
    let secs = t0.elapsed().as_secs_f64();
    let (_, client_cpu_us) = cpu.per_msg(publishers * per);
    Row {
        system: "vigil".into(),
        publishers,
        msgs_per_sec: (publishers * per) as f64 / secs,
        confirm: Percentiles::from_nanos(all),
        server_cpu_us: None,
        client_cpu_us,
        server_rss_half_mib: None,
        server_rss_end_mib: None,
    }
}

/// A bus server on 127.0.0.1:0 (and a Unix socket in `dir`) over a fresh
/// engine, with one app allowed to publish; the URL is `transport`'s.
async fn bus_server(
    dir: &std::path::Path,
    confirm: ConfirmMode,
    transport: Transport,
) -> (vigil_actors::bus::RunningBus, String, String) {
    use vigil_actors::bus::{Apps, Bus, BusSettings, Verb};
    let store = SledStore::open(dir, 256 << 20, None).expect("open sled");
    let queues = Queues::open(
        store.clone(),
        QueueConfig {
            confirm,
            ..QueueConfig::default()
        },
    )
    .expect("queues");
    let apps = Apps::open(store.clone(), &[]).expect("apps");
    let audit = vigil_actors::audit::Audit::open(store).expect("audit");
    let settings = BusSettings {
        addr: "127.0.0.1:0".parse().expect("addr"),
        unix_socket: Some(dir.join("bus.sock")),
        max_frame_bytes: 1 << 20,
        ephemeral_topics: vec![],
        outbound_queue: 4096,
        hello_timeout: Duration::from_secs(10),
    };
    let bus = Bus::new(settings, queues, apps, audit);
    let token = bus.add_app("bench").expect("app");
    bus.grant("bench", Verb::Publish, "*").expect("grant");
    let running = vigil_actors::bus::start(bus.clone(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bus listens");
    let url = match transport {
        Transport::Tcp => format!("ws://{}", running.ws_addr),
        Transport::Unix => format!("unix:{}", dir.join("bus.sock").display()),
    };
    (running, url, token)
}

/// A real `vigil dev` node process (the binary beside this one), killed on drop.
struct NodeProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `vigil dev` on temp dirs and free ports, with `bus.confirm` set to
/// `confirm`; returns it, the bus URL for `transport` and an app token.
async fn node_process(confirm: &str, transport: Transport) -> Result<(NodeProcess, String, String), String> {
    let exe = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("vigil");
    if !exe.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release --bin vigil`",
            exe.display()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("node");
    let child = Command::new(&exe)
        .args(["dev", "--data-dir"])
        .arg(&data)
        .args(["--rpc-addr", "127.0.0.1:0"])
        .env("VIGIL_BUS__ADDR", "127.0.0.1:0")
        // A follower: a timelord's VDF worker would hold one of the two cores
        // the broker is measured on (redis-server computes no VDF).
        .env("VIGIL_VDF__COMPUTE", "false")
        .env("VIGIL_BUS__CONFIRM", confirm)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let node = NodeProcess { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    let bus_url = loop {
        if let (Ok(u), true) = (
            std::fs::read_to_string(data.join("bus.url")),
            data.join("rpc.url").exists(),
        ) {
            break match transport {
                Transport::Tcp => u.trim().to_owned(),
                Transport::Unix => format!("unix:{}", data.join("bus.sock").display()),
            };
        }
        if Instant::now() > deadline {
            return Err("the vigil node did not start within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ep = crate::client::Endpoint::resolve(Some(&data), None, None).map_err(|e| e.to_string())?;
    let added = ep
        .call("bus_app_add", serde_json::json!(["bench"]))
        .await
        .map_err(|e| e.to_string())?;
    for verb in ["publish", "subscribe"] {
        ep.call("bus_grant", serde_json::json!(["bench", verb, "*"]))
            .await
            .map_err(|e| e.to_string())?;
    }
    let token = added["token"].as_str().unwrap_or_default().to_owned();
    Ok((node, bus_url, token))
}

/// What a bus row publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A durable topic, confirmed after an fsync (`bus.confirm = always`): row `vigil-node`.
    Durable,
    /// The same durable topic on a node with `bus.confirm = none`: stored, no
    /// fsync; what the durable path costs besides the disk (row `node-no-fsync`).
    NoFsync,
    /// An ephemeral topic `live.bench` (at-most-once, never on disk): the
    /// bus's own round trip (row `bus-no-disk`).
    Ephemeral,
}

impl Target {
    /// The row's name: measured on a node process, or on an in-process bus.
    fn system(self, process: bool) -> &'static str {
        match (self, process) {
            (Target::Durable, true) => "vigil-node",
            (Target::Durable, false) => "vigil-bus",
            (Target::NoFsync, true) => "node-no-fsync",
            (Target::NoFsync, false) => "bus-no-fsync",
            (Target::Ephemeral, true) => "bus-no-disk",
            (Target::Ephemeral, false) => "bus-no-disk-in-process",
        }
    }
    fn confirm(self) -> ConfirmMode {
        match self {
            Target::NoFsync => ConfirmMode::None,
            _ => ConfirmMode::Always,
        }
    }
}

/// Publishes over the bus to a real node.
async fn bus_row(
    publishers: usize,
    per: usize,
    payload: usize,
    window: usize,
    target: Target,
    transport: Transport,
) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let ephemeral = target == Target::Ephemeral;
    let confirm = if target.confirm() == ConfirmMode::None {
        "none"
    } else {
        "always"
    };
    // A real node process, like redis-server; in-process only if the binary is missing.
    let (system, _node, _running, url, token) = match node_process(confirm, transport).await {
        Ok((node, url, token)) => (
            format!("{}{}", target.system(true), transport.suffix()),
            Some(node),
            None,
            url,
            token,
        ),
        Err(why) => {
            eprintln!("note: {why}; measuring an in-process bus instead");
            let (running, url, token) = bus_server(dir.path(), target.confirm(), transport).await;
            let system = format!("{}{}", target.system(false), transport.suffix());
            (system, None, Some(running), url, token)
        }
    };
    let mut clients = Vec::new();
    for _ in 0..publishers {
        clients.push(
            crate::bus::BusClient::connect(&url, "bench", &token)
                .await
                .expect("connect"),
        );
    }
    let cpu = CpuMark::now(_node.as_ref().map(|n| n.child.id()));
    let rss = RssWatch::start(_node.as_ref().map(|n| n.child.id()), publishers * per);
    let t0 = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let topic = if ephemeral { "live.bench" } else { "bench" };
            let confirmed = rss.confirmed.clone();
            tokio::spawn(async move {
                let body = vec![b'x'; payload];
                let mut lat = Vec::with_capacity(per);
                let mut in_flight = std::collections::VecDeque::new();
                for i in 0..per {
                    in_flight.push_back((Instant::now(), c.publish_start(topic, &body)));
                    while in_flight.len() >= window.max(1) || (i + 1 == per && !in_flight.is_empty()) {
                        let (t, f) = in_flight.pop_front().expect("non-empty");
                        f.await.expect("publish");
                        lat.push(t.elapsed().as_nanos() as u64);
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat
            })
        })
        .collect();
    let all = join_latencies(tasks).await;
    let secs = t0.elapsed().as_secs_f64();
    let (server_cpu_us, client_cpu_us) = cpu.per_msg(publishers * per);
    let (server_rss_half_mib, server_rss_end_mib) = rss.finish().await;
    Row {
        system,
        publishers,
        msgs_per_sec: (publishers * per) as f64 / secs,
        confirm: Percentiles::from_nanos(all),
        server_cpu_us,
        client_cpu_us,
        server_rss_half_mib,
        server_rss_end_mib,
    }
}

async fn end_to_end(publishers: usize, per: usize, payload: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = engine(dir.path());
    let total = publishers * per;
    let waker = q.waker("e2e").expect("topic");
    let consumer = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < total {
                let notified = waker.notified();
                let (d, _) = q.fetch("e2e", "g", 512).expect("fetch");
                if d.is_empty() {
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                }
                let seqs: Vec<u64> = d.iter().map(|m| m.envelope.seq).collect();
                q.ack_many("e2e", "g", &seqs).expect("ack");
                acked += seqs.len();
            }
        })
    };
    let t0 = Instant::now();
    let pubs: Vec<_> = (0..publishers)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    let msg = Publish {
                        sender: "bench".into(),
                        payload: vec![b'y'; payload],
                        ..Publish::default()
                    };
                    q.publish("e2e", msg).await.expect("publish");
                }
            })
        })
        .collect();
    for p in pubs {
        p.await.expect("publisher");
    }
    consumer.await.expect("consumer");
    total as f64 / t0.elapsed().as_secs_f64()
}

/// Publish -> deliver -> ack through a `vigil dev` node: `publishers` apps
/// publish `per` messages each (waiting for each confirm) to a durable
/// topic; one consumer app in a consumer group receives them and acks what
/// has arrived with one `ack` frame (`seqs`), up to [`ACKS_IN_FLIGHT`] such
/// frames outstanding. Each payload carries its send time, so the consumer
/// measures publish -> delivery.
async fn end_to_end_bus(
    publishers: usize,
    per: usize,
    payload: usize,
    transport: Transport,
) -> Result<EndToEnd, String> {
    let (_node, url, token) = node_process("always", transport).await?;
    let connect = || crate::bus::BusClient::connect(&url, "bench", &token);
    let mut consumer = connect().await.map_err(|e| e.to_string())?;
    let sub = consumer
        .subscribe_with("e2e", Some("bench.e2e"), Some(1024))
        .await
        .map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    for _ in 0..publishers {
        clients.push(connect().await.map_err(|e| e.to_string())?);
    }
    let total = publishers * per;
    let t0 = Instant::now();
    // An ack frame's answer: every listed delivery acked.
    let all_acked = |v: serde_json::Value| match v["not_acked"].as_array() {
        Some(n) if n.is_empty() => Ok(()),
        _ => Err(format!("deliveries not acked: {v}")),
    };
    let receive = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total);
        // A delivery that comes again (its lease ended) is acked, not counted twice.
        let mut seen = std::collections::HashSet::with_capacity(total);
        let mut acks = std::collections::VecDeque::new();
        while seen.len() < total {
            let Some(first) = consumer.next_msg(Duration::from_secs(30)).await else {
                return Err(format!("no delivery within 30 s after {} of {total}", lat.len()));
            };
            // What has arrived meanwhile, acked together in one frame, as
            // Redis's consumer acks each XREADGROUP batch with one XACK.
            let mut batch = vec![first];
            while batch.len() < 512 {
                match consumer.next_msg(Duration::ZERO).await {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            let now = t0.elapsed().as_nanos() as u64;
            let mut seqs = Vec::with_capacity(batch.len());
            for m in &batch {
                let seq = m["seq"].as_u64().ok_or("a delivery without seq")?;
                // A repeat (its lease ended before the ack arrived) needs no
                // ack of its own: the first one, processed after the repeat
                // was delivered, acks the delivery the session holds.
                if seen.insert(seq) {
                    let sent = sent_at(&crate::bus::payload(m)).ok_or("a delivery without its send time")?;
                    lat.push(now.saturating_sub(sent));
                    seqs.push(seq);
                }
            }
            if seqs.is_empty() {
                continue;
            }
            acks.push_back(consumer.start(serde_json::json!({ "op": "ack", "sub": sub, "seqs": seqs })));
            if acks.len() >= ACKS_IN_FLIGHT {
                all_acked(
                    acks.pop_front()
                        .expect("non-empty")
                        .await
                        .map_err(|e| e.to_string())?,
                )?;
            }
        }
        for a in acks {
            all_acked(a.await.map_err(|e| e.to_string())?)?;
        }
        Ok::<_, String>(lat)
    });
    let pubs: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                for _ in 0..per {
                    c.publish("e2e", &timed_payload(t0, payload))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for p in pubs {
        p.await.map_err(|e| e.to_string())??;
    }
    let lat = receive.await.map_err(|e| e.to_string())??;
    Ok(EndToEnd {
        system: "vigil-node".into(),
        transport,
        publishers,
        msgs_per_sec: total as f64 / t0.elapsed().as_secs_f64(),
        deliver: Percentiles::from_nanos(lat),
    })
}

/// A `redis-server` with `appendfsync always` in a temp dir, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// The client URL for `transport`.
    fn url(&self, transport: Transport) -> String {
        match transport {
            Transport::Tcp => format!("redis://127.0.0.1:{}/", self.port),
            Transport::Unix => format!("redis+unix://{}", self.dir.path().join("redis.sock").display()),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Result<RedisServer, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .arg("--unixsocket")
        .arg(dir.path().join("redis.sock"))
        .args(["--unixsocketperm", "700"])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start redis-server ({e}): install it with `apt-get install redis-server`")
        })?;
    let sock = dir.path().join("redis.sock");
    let server = RedisServer { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !sock.exists() {
        if Instant::now() > deadline {
            return Err("redis-server did not start listening within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

async fn redis_row(
    server: &RedisServer,
    transport: Transport,
    publishers: usize,
    per: usize,
    payload: usize,
    window: usize,
) -> Result<Row, String> {
    let pid = server.child.id();
    let client = redis::Client::open(server.url(transport)).map_err(|e| e.to_string())?;
    let mut conns = Vec::new();
    for _ in 0..publishers {
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let key = format!("bench{publishers}{}", transport.suffix());
    let cpu = CpuMark::now(Some(pid));
    let rss = RssWatch::start(Some(pid), publishers * per);
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let key = key.clone();
            let confirmed = rss.confirmed.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let body = vec![b'x'; payload];
                let mut in_flight = std::collections::VecDeque::new();
                for i in 0..per {
                    // A multiplexed connection pipelines concurrent commands on one socket.
                    let (mut c, key, body) = (c.clone(), key.clone(), body.clone());
                    let xadd = async move {
                        redis::cmd("XADD")
                            .arg(&key)
                            .arg("*")
                            .arg("p")
                            .arg(&body)
                            .query_async::<String>(&mut c)
                            .await
                    };
                    if window <= 1 {
                        // One at a time: awaited here, no task of its own to pay for.
                        let t = Instant::now();
                        xadd.await?;
                        lat.push(t.elapsed().as_nanos() as u64);
                        confirmed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Spawned so the command is sent now, like the vigil client's.
                    in_flight.push_back((Instant::now(), tokio::spawn(xadd)));
                    while in_flight.len() >= window || (i + 1 == per && !in_flight.is_empty()) {
                        let (t, f) = in_flight.pop_front().expect("non-empty");
                        f.await
                            .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))??;
                        lat.push(t.elapsed().as_nanos() as u64);
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, redis::RedisError>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let (server_cpu_us, client_cpu_us) = cpu.per_msg(publishers * per);
    let (server_rss_half_mib, server_rss_end_mib) = rss.finish().await;
    Ok(Row {
        system: format!("redis{}", transport.suffix()),
        publishers,
        msgs_per_sec: (publishers * per) as f64 / secs,
        confirm: Percentiles::from_nanos(all),
        server_cpu_us,
        client_cpu_us,
        server_rss_half_mib,
        server_rss_end_mib,
    })
}

/// Batch acks an end-to-end consumer keeps outstanding, vigil and Redis alike.
const ACKS_IN_FLIGHT: usize = 8;

/// The ids and first field values of an `XREADGROUP` reply for one stream.
fn stream_entries(reply: redis::Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    use redis::Value;
    let mut out = Vec::new();
    let Value::Array(streams) = reply else {
        return out; // Nil: nothing within the block time.
    };
    for stream in streams {
        let Value::Array(mut kv) = stream else { continue };
        let Some(Value::Array(entries)) = kv.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let mut parts = parts.into_iter();
            if let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (parts.next(), parts.next()) {
                let value = match fields.into_iter().nth(1) {
                    Some(Value::BulkString(v)) => v,
                    _ => Vec::new(),
                };
                out.push((id, value));
            }
        }
    }
    out
}

/// The send time (ns since the run's start) that leads a payload.
fn sent_at(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(&body[..20.min(body.len())])
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A payload of `size` bytes led by the send time.
fn timed_payload(t0: Instant, size: usize) -> Vec<u8> {
    let mut body = format!("{:<20}", t0.elapsed().as_nanos()).into_bytes();
    body.resize(size.max(20), b'x');
    body
}

/// The Redis side of [`end_to_end_bus`]: `XADD` by each publisher (waiting
/// for each reply), one consumer in a consumer group reading with
/// `XREADGROUP ... COUNT 512 BLOCK` and acking each batch with one `XACK`
/// (up to [`ACKS_IN_FLIGHT`] outstanding); every command fsynced
/// (`appendfsync always`).
async fn end_to_end_redis(
    server: &RedisServer,
    publishers: usize,
    per: usize,
    payload: usize,
    transport: Transport,
) -> Result<EndToEnd, String> {
    let client = redis::Client::open(server.url(transport)).map_err(|e| e.to_string())?;
    let key = format!("e2e{}", transport.suffix());
    let mut reader = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut reader)
        .await
        .map_err(|e| e.to_string())?;
    let mut conns = Vec::new();
    for _ in 0..publishers {
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let total = publishers * per;
    let t0 = Instant::now();
    let k = key.clone();
    let receive = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total);
        let mut acks = std::collections::VecDeque::new();
        while lat.len() < total {
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(512)
                .arg("BLOCK")
                .arg(30_000)
                .arg("STREAMS")
                .arg(&k)
                .arg(">")
                .query_async(&mut reader)
                .await
                .map_err(|e| e.to_string())?;
            let entries = stream_entries(reply);
            if entries.is_empty() {
                return Err(format!("no delivery within 30 s after {} of {total}", lat.len()));
            }
            let now = t0.elapsed().as_nanos() as u64;
            let mut ack = redis::cmd("XACK");
            ack.arg(&k).arg("g");
            for (id, body) in &entries {
                lat.push(now.saturating_sub(sent_at(body).ok_or("an entry without its send time")?));
                ack.arg(id);
            }
            let mut c = reader.clone();
            acks.push_back(tokio::spawn(async move { ack.query_async::<u64>(&mut c).await }));
            if acks.len() >= ACKS_IN_FLIGHT {
                let a = acks.pop_front().expect("non-empty").await;
                a.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            }
        }
        for a in acks {
            a.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(lat)
    });
    let pubs: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    redis::cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("p")
                        .arg(timed_payload(t0, payload))
                        .query_async::<String>(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for p in pubs {
        p.await.map_err(|e| e.to_string())??;
    }
    let lat = receive.await.map_err(|e| e.to_string())??;
    Ok(EndToEnd {
        system: "redis".into(),
        transport,
        publishers,
        msgs_per_sec: total as f64 / t0.elapsed().as_secs_f64(),
        deliver: Percentiles::from_nanos(lat),
    })
}

/// Runs the benchmark on a 2-worker tokio runtime.
pub fn run(opts: &Options, progress: &dyn Fn(&str)) -> Report {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime");
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
        Report {
            rows,
            end_to_end_msgs_per_sec,
            end_to_end_bus: through_node,
            ratio_vs_redis,
            redis_note,
            payload: opts.payload,
            window: opts.window,
        }
    })
}
