//! The vigil rows: the queue engine in-process, and publishers over the bus
//! of a node process (or an in-process bus when the binary is missing).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_actors::queue::{ConfirmMode, Publish, QueueConfig, Queues};
use vigil_actors::store::SledStore;

use super::{join_latencies, CpuMark, Percentiles, Row, RssWatch, Transport};

pub(super) fn engine(dir: &std::path::Path) -> Arc<Queues> {
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

pub(super) async fn vigil_row(publishers: usize, per: usize, payload: usize) -> Row {
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
        confirm_mode: "fsync",
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
        ..BusSettings::default()
    };
    let bus = Bus::new(settings, queues, apps, audit);
    let token = bus.add_app("bench", "bench").expect("app");
    bus.grant("bench", Verb::Publish, "*", "bench").expect("grant");
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
pub(super) struct NodeProcess {
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
pub(super) async fn node_process(
    confirm: &str,
    transport: Transport,
) -> Result<(NodeProcess, String, String), String> {
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
pub(super) enum Target {
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
pub(super) async fn bus_row(
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
    let mode = match target {
        Target::Durable => "fsync",
        Target::NoFsync => "no-fsync",
        Target::Ephemeral => "no-disk",
    };
    Row::measured((system, mode), publishers, per, secs, all, &cpu, rss).await
}
