//! A local vigil testnet: N nodes of one fresh genesis on 127.0.0.1, each a
//! real `vigil run` process with its own data dir under one folder.
//!
//! Layout of `DIR`: `testnet.json` (the manifest), `genesis.toml`,
//! `passphrase` (0600; local testnets only), and `node-<i>/` data dirs, each
//! with `node.log` and `vigil.pid`. The integration tests and
//! `vigil-bench network` drive testnets through this library.

pub mod adversary;
pub mod challenges;
pub mod netns;
pub mod observe;
pub mod schedule;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libp2p_identity::Keypair;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vigil_genesis::Genesis;
use vigil_node::client::Endpoint;
use vigil_node::datadir::{self, DataDir, KeyProtection};
use vigil_node::keys::KdfParams;

/// The manifest file in the testnet folder.
pub const MANIFEST: &str = "testnet.json";

/// One node of the testnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSpec {
    /// `node-<i>`.
    pub name: String,
    /// Its data dir.
    pub dir: PathBuf,
    /// Its peer id.
    pub peer_id: String,
    /// Its p2p address, `/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>` (in
    /// network mode `/ip4/10.77.<i>.2/...`).
    pub p2p_addr: String,
    /// Network mode: the testnet's namespaces (this node runs in `ns(i)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<netns::Net>,
}

impl NodeSpec {
    /// `i` of `node-<i>`.
    pub fn index(&self) -> usize {
        self.name.trim_start_matches("node-").parse().unwrap_or(0)
    }

    /// Where its admin RPC answers, seen from this process: the URL it
    /// wrote, or in network mode a forwarder into its namespace.
    pub fn rpc_url(&self) -> Result<String> {
        let path = self.dir.join("rpc.url");
        let url = fs::read_to_string(&path)
            .with_context(|| {
                format!(
                    "{} has not written {} yet: is it running?",
                    self.name,
                    path.display()
                )
            })?
            .trim()
            .to_owned();
        let Some(net) = &self.net else {
            return Ok(url);
        };
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .with_context(|| format!("{}: no port in {url}", path.display()))?;
        net.rpc_url(self.index(), port)
    }
}

/// What `vigil-testnet up` made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The testnet folder.
    pub dir: PathBuf,
    /// Genesis hash (hex).
    pub genesis_hash: String,
    /// Nodes, bootnodes first.
    pub nodes: Vec<NodeSpec>,
    /// Network mode: each node in its own network namespace (see [`netns`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<netns::Net>,
}

impl Manifest {
    /// Reads `DIR/testnet.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join(MANIFEST);
        let text = fs::read_to_string(&p).with_context(|| {
            format!(
                "no testnet in {} (no {MANIFEST}): run `vigil-testnet up --dir {}` first",
                dir.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a testnet manifest", p.display()))
    }

    /// The node called `name` (`node-3`) or numbered `name` (`3`).
    pub fn node(&self, name: &str) -> Result<&NodeSpec> {
        let want = if name.chars().all(|c| c.is_ascii_digit()) {
            format!("node-{name}")
        } else {
            name.to_owned()
        };
        self.nodes.iter().find(|n| n.name == want).with_context(|| {
            format!(
                "no node `{name}` in this testnet (it has node-0 .. node-{})",
                self.nodes.len().saturating_sub(1)
            )
        })
    }

    /// The testnet's genesis (`DIR/genesis.toml`).
    pub fn genesis(&self) -> Result<Genesis> {
        Ok(Genesis::load_file(&self.dir.join("genesis.toml"))?)
    }

    fn passphrase(&self) -> PathBuf {
        self.dir.join("passphrase")
    }
}

/// The `vigil` binary: `$VIGIL_BIN`, else beside this executable, else `vigil` on PATH.
pub fn vigil_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_BIN") {
        return p.into();
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(3) {
            let c = dir.join("vigil");
            if c.is_file() {
                return c;
            }
        }
    }
    "vigil".into()
}

/// A port free now, below the kernel's ephemeral range: the node binds it
/// only when it starts, and a port from that range (what binding port 0
/// gives) can meanwhile be taken by any outgoing connection, a peer's dial
/// included, which stopped a node at startup once in a loaded test run.
fn free_port(taken: &[u16]) -> Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12_000 {
        (10_000, low)
    } else {
        (1024, low.max(1025))
    };
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(from..to);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// What [`create`] builds.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes (1..=100).
    pub n: usize,
    /// p2p port of node 0; node i uses base + i (default: free ports).
    pub base_port: Option<u16>,
    /// Genesis preset the local genesis derives from (`testnet` or `dev`).
    pub preset: String,
    /// Overrides the preset's `vdf_iterations` (shorter epochs for tests).
    pub vdf_iterations: Option<u64>,
    /// Nodes that run a VDF worker (the first ones); the rest follow.
    pub timelords: usize,
    /// Overrides the preset's `[params.security]` bounds.
    pub security: Option<vigil_genesis::SecurityParams>,
    /// Network mode: each node in its own network namespace, on its own
    /// address (`10.77.<i>.2`), links that can be cut, made lossy or slow (root only).
    pub netns: bool,
    /// Followers verify `Some(k)` sampled segments of each epoch
    /// (`vdf.verify = "sampled"`) instead of recomputing all of them: in
    /// hash mode a full verification costs as much CPU as the timelord's
    /// computation, so n nodes on two cores would spend n times the VDF.
    pub sampled_verify: Option<u32>,
    /// Timelords start epochs at least this many ms apart
    /// (`vdf.min_epoch_ms`): n nodes on two cores verify n epochs' worth of
    /// VDF for every one computed, so a chain that runs flat out starves them.
    pub min_epoch_ms: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            n: 4,
            base_port: None,
            preset: "testnet".into(),
            vdf_iterations: None,
            timelords: 1,
            security: None,
            netns: false,
            sampled_verify: None,
            min_epoch_ms: None,
        }
    }
}

/// Creates the testnet folder: keys, a genesis whose bootnodes are the first
/// min(n, 3) nodes, and n data dirs with their config. Starts nothing.
pub fn create(dir: &Path, o: &Options) -> Result<Manifest> {
    let (n, base_port) = (o.n, o.base_port);
    if !(1..=100).contains(&n) {
        bail!("-n {n}: a local testnet has 1..=100 nodes");
    }
    if dir.join(MANIFEST).exists() {
        bail!(
            "{} already holds a testnet: start it again with `vigil-testnet start --dir {}`, or remove the folder (after `vigil-testnet down`) or pick another --dir for a new one",
            dir.display(),
            dir.display()
        );
    }
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty: pick a new or empty --dir", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let net = if o.netns {
        netns::Net::check_available()?;
        Some(netns::Net::for_dir(&dir, n))
    } else {
        None
    };
    let pass: [u8; 16] = rand::thread_rng().gen();
    let pass = hex::encode(pass);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("passphrase"))?
        .write_all(pass.as_bytes())?;
    let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate_ed25519()).collect();
    let mut ports = Vec::with_capacity(n);
    let mut service_ports = Vec::with_capacity(2 * n);
    if net.is_some() {
        // Each node has its own network stack: the same ports everywhere.
        ports = vec![base_port.unwrap_or(4001); n];
        for _ in 0..n {
            service_ports.extend([8645, 8646]);
        }
    } else {
        for i in 0..n {
            ports.push(match base_port {
                Some(b) => b.checked_add(i as u16).context("--base-port + n is over 65535")?,
                None => free_port(&ports)?,
            });
        }
        // RPC and bus ports are chosen once too: a restarted testnet
        // (`vigil-testnet start`) keeps every address.
        for _ in 0..2 * n {
            let taken: Vec<u16> = ports.iter().chain(&service_ports).copied().collect();
            service_ports.push(free_port(&taken)?);
        }
    }
    let ip = |i: usize| net.as_ref().map_or(std::net::Ipv4Addr::LOCALHOST, |t| t.ip(i));
    let addrs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "/ip4/{}/tcp/{}/p2p/{}",
                ip(i),
                ports[i],
                keys[i].public().to_peer_id()
            )
        })
        .collect();
    let mut genesis = Genesis::load(&o.preset)?;
    if let Some(t) = o.vdf_iterations {
        genesis.params.vdf_iterations = t;
    }
    if let Some(s) = o.security {
        genesis.params.security = s;
    }
    let problems = genesis.problems();
    if let Some(p) = problems.first() {
        bail!("the testnet genesis is invalid: {p}");
    }
    genesis.network = "vigil-local".into();
    genesis.created_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    genesis.bootnodes = addrs[..n.min(3)].to_vec();
    fs::write(dir.join("genesis.toml"), genesis.to_toml())?;
    let mut nodes = Vec::with_capacity(n);
    for (i, key) in keys.into_iter().enumerate() {
        let name = format!("node-{i}");
        let dd = DataDir::new(dir.join(&name));
        let peer_id = key.public().to_peer_id().to_string();
        datadir::init_with_key(
            &dd,
            &genesis,
            KeyProtection::Passphrase(pass.as_bytes(), KdfParams::default()),
            key,
        )
        .with_context(|| format!("cannot create {name}"))?;
        // On 127.0.0.1 every node shares one address: no per-address limits.
        // In network mode each has its own, and the defaults apply.
        let limits = if net.is_some() {
            "# its own address (network mode): the default per-address limits\n"
        } else {
            "# every node is 127.0.0.1 here: no per-address limits\nmax_inbound_per_ip = 1024\nip_ban_threshold = 0\n"
        };
        fs::write(
            dd.config(),
            format!(
                "# written by vigil-testnet\n[rpc]\naddr = \"127.0.0.1:{}\"\n\n[network]\nlisten = [\"/ip4/{}/tcp/{}\"]\nreconnect_max_ms = 10000\n{limits}\n[bus]\naddr = \"127.0.0.1:{}\"\n\n[vdf]\n# {} of the {} nodes compute the VDF (node-0 first); the others verify and follow\ncompute = {}\n{}",
                service_ports[2 * i],
                ip(i),
                ports[i],
                service_ports[2 * i + 1],
                o.timelords.min(n),
                n,
                i < o.timelords,
                o.sampled_verify
                    .map(|k| format!("verify = \"sampled\"\nsamples = {k}\n"))
                    .unwrap_or_default()
                    + &o.min_epoch_ms
                        .filter(|_| i < o.timelords)
                        .map(|ms| format!("min_epoch_ms = {ms}\n"))
                        .unwrap_or_default()
            ),
        )?;
        nodes.push(NodeSpec {
            name,
            dir: dd.root().to_owned(),
            peer_id,
            p2p_addr: addrs[i].clone(),
            net: net.clone(),
        });
    }
    let m = Manifest {
        dir: dir.clone(),
        genesis_hash: genesis.hash().to_hex(),
        nodes,
        net,
    };
    fs::write(dir.join(MANIFEST), serde_json::to_string_pretty(&m)?)?;
    Ok(m)
}

fn pid_file(node: &NodeSpec) -> PathBuf {
    node.dir.join("vigil.pid")
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces, in parentheses): the state first, utime and stime at 11 and 12.
pub(crate) fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The node's pid if its process is alive.
pub fn running_pid(node: &NodeSpec) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file(node)).ok()?.trim().parse().ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    // A killed child of this process stays a zombie until reaped: reap it if
    // it is ours, and count a zombie as dead if it is not.
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid never blocks; a non-child returns -1.
    let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid;
    let zombie = proc_stat(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z"));
    let reaped = reaped || zombie;
    (alive && !reaped).then_some(pid)
}

/// Starts `vigil run` for one node in its own process group, logging to `node.log`.
pub fn start_node(m: &Manifest, node: &NodeSpec) -> Result<i32> {
    if let Some(pid) = running_pid(node) {
        bail!("{} already runs (pid {pid})", node.name);
    }
    // A stale rpc.url would point status at a dead port.
    let _ = fs::remove_file(node.dir.join("rpc.url"));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.join("node.log"))?;
    let mut cmd = match &node.net {
        Some(net) => {
            if !net.exists() {
                net.create()?;
            }
            net.command(node.index(), &vigil_bin())
        }
        None => Command::new(vigil_bin()),
    };
    let child = cmd
        .arg("run")
        .arg("--data-dir")
        .arg(&node.dir)
        .arg("--passphrase-file")
        .arg(m.passphrase())
        .env_remove("VIGIL_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (is it built? set VIGIL_BIN)",
                vigil_bin().display()
            )
        })?;
    let pid = child.id() as i32;
    fs::write(pid_file(node), pid.to_string())?;
    Ok(pid)
}

/// Sends `sig` to the node's process.
pub fn signal(node: &NodeSpec, sig: i32) -> Option<i32> {
    let pid = running_pid(node)?;
    // SAFETY: plain kill(2) on a pid this testnet started.
    unsafe { libc::kill(pid, sig) };
    Some(pid)
}

/// What `vigil-testnet status` shows for a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// `node-<i>`.
    pub name: String,
    /// Peer id.
    pub peer_id: String,
    /// p2p address.
    pub p2p_addr: String,
    /// Admin RPC URL, once the node wrote it.
    pub rpc_url: Option<String>,
    /// Identified peers.
    pub peers: Option<u64>,
    /// `ready`, `not ready`, `starting`, `stopped`.
    pub status: String,
}

/// Calls an RPC method on a node.
pub async fn call(node: &NodeSpec, method: &str, params: Value) -> Result<Value> {
    // Network mode: through a forwarder into the node's namespace.
    let url = match &node.net {
        Some(_) => Some(node.rpc_url()?),
        None => None,
    };
    Endpoint::resolve(Some(&node.dir), url.as_deref(), None)?
        .call(method, params)
        .await
}

/// Status of every node.
pub async fn status(m: &Manifest) -> Vec<NodeStatus> {
    let mut out = Vec::new();
    for n in &m.nodes {
        let rpc_url = fs::read_to_string(n.dir.join("rpc.url"))
            .ok()
            .map(|s| s.trim().to_owned());
        let (peers, status) = if running_pid(n).is_none() {
            (None, "stopped".to_owned())
        } else {
            match (
                call(n, "net_info", json!([])).await,
                call(n, "node_health", json!([])).await,
            ) {
                (Ok(info), Ok(h)) => (
                    info["peers"].as_u64(),
                    if h["ready"] == true { "ready" } else { "not ready" }.to_owned(),
                ),
                _ => (None, "starting".to_owned()),
            }
        };
        out.push(NodeStatus {
            name: n.name.clone(),
            peer_id: n.peer_id.clone(),
            p2p_addr: n.p2p_addr.clone(),
            rpc_url: if status == "stopped" { None } else { rpc_url },
            peers,
            status,
        });
    }
    out
}

/// Waits until every node has at least `min_peers` peers; the error names the slow nodes.
pub async fn wait_peers(m: &Manifest, min_peers: u64, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let st = status(m).await;
        let slow: Vec<String> = st
            .iter()
            .filter(|s| s.peers.unwrap_or(0) < min_peers)
            .map(|s| {
                format!(
                    "{} ({} peers, {})",
                    s.name,
                    s.peers.map_or("?".into(), |p| p.to_string()),
                    s.status
                )
            })
            .collect();
        if slow.is_empty() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            // A node that stopped says why in its last lines.
            let stopped: String = st
                .iter()
                .filter(|s| s.status == "stopped")
                .filter_map(|s| m.nodes.iter().find(|n| n.name == s.name))
                .map(|n| {
                    let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
                    format!("\n{} stopped; the last lines of its node.log:\n  {tail}", n.name)
                })
                .collect();
            bail!(
                "after {:?} these nodes have fewer than {min_peers} peers: {}; see `vigil-testnet logs --dir {} NODE`{stopped}",
                timeout,
                slow.join(", "),
                m.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates and starts a testnet and waits until each node has min(n-1, 3) peers.
pub async fn up(dir: &Path, o: &Options, timeout: Duration) -> Result<(Manifest, Duration)> {
    let n = o.n;
    let m = create(dir, o)?;
    let t0 = Instant::now();
    for node in &m.nodes {
        start_node(&m, node)?;
    }
    let want = (n as u64 - 1).min(3);
    if let Err(e) = wait_peers(&m, want, timeout).await {
        let _ = down(&m, Duration::from_secs(5)).await;
        return Err(e);
    }
    Ok((m, t0.elapsed()))
}

/// How `stop` ended a node.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// `node-<i>`.
    pub name: String,
    /// `stopped` (exited after SIGTERM), `killed` (still running after the
    /// timeout: SIGKILL), `not running` (nothing to stop), or `still
    /// running` (not even SIGKILL ended it: the process is stuck in the kernel).
    pub how: &'static str,
    /// Seconds from the signal to the process being gone.
    pub secs: f64,
}

/// Stops every node of the testnet. Same as [`stop`] on all nodes.
pub async fn down(m: &Manifest, timeout: Duration) -> Result<Vec<Stopped>> {
    let stopped = stop(&m.nodes, timeout).await?;
    // Network mode: the namespaces go too (`start` makes them again).
    if let Some(net) = &m.net {
        net.teardown()?;
    }
    Ok(stopped)
}

/// SIGTERM to `nodes`, then SIGKILL to those still running after
/// `timeout`; returns only once every process is gone (or SIGKILL failed
/// for 5 s), so "stopped" is never printed for a node still at work.
pub async fn stop(nodes: &[NodeSpec], timeout: Duration) -> Result<Vec<Stopped>> {
    let t0 = Instant::now();
    let mut out: Vec<Stopped> = nodes
        .iter()
        .map(|n| Stopped {
            name: n.name.clone(),
            how: if signal(n, libc::SIGTERM).is_some() {
                "stopped"
            } else {
                "not running"
            },
            secs: 0.0,
        })
        .collect();
    let wait_gone = |out: &mut Vec<Stopped>| {
        let mut alive = false;
        for (n, s) in nodes.iter().zip(out.iter_mut()) {
            if s.how == "not running" || s.secs > 0.0 {
                continue;
            }
            if running_pid(n).is_some() {
                alive = true;
            } else {
                s.secs = t0.elapsed().as_secs_f64().max(0.001);
            }
        }
        alive
    };
    while wait_gone(&mut out) && t0.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (n, s) in nodes.iter().zip(out.iter_mut()) {
        if s.how == "stopped" && s.secs == 0.0 && signal(n, libc::SIGKILL).is_some() {
            s.how = "killed";
        }
    }
    let killed_at = Instant::now();
    while wait_gone(&mut out) {
        if killed_at.elapsed() > Duration::from_secs(5) {
            for (n, s) in nodes.iter().zip(out.iter_mut()) {
                if s.secs == 0.0 && running_pid(n).is_some() {
                    s.how = "still running";
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (n, s) in nodes.iter().zip(&out) {
        if s.how != "still running" {
            let _ = fs::remove_file(pid_file(n));
        }
    }
    Ok(out)
}

/// Starts the nodes of a stopped testnet (those not running; same keys,
/// data and ports as before) and waits until each has min(n-1, 3) peers.
pub async fn start(m: &Manifest, nodes: &[NodeSpec], timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    let mut started = 0;
    for node in nodes {
        if running_pid(node).is_none() {
            start_node(m, node)?;
            started += 1;
        }
    }
    if started == 0 {
        bail!(
            "every node asked for already runs: see `vigil-testnet status --dir {}`",
            m.dir.display()
        );
    }
    // Wait on the nodes that run now (others may have been left stopped).
    let running = Manifest {
        nodes: m
            .nodes
            .iter()
            .filter(|n| running_pid(n).is_some())
            .cloned()
            .collect(),
        ..m.clone()
    };
    let want = (running.nodes.len() as u64).saturating_sub(1).min(3);
    wait_peers(&running, want, timeout).await?;
    Ok(t0.elapsed())
}

/// What `chaos` did.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Nodes killed with SIGKILL and restarted.
    pub kills: Vec<String>,
    /// Time until every node had a peer again after the last restart.
    pub recovered_in_ms: u64,
}

/// SIGKILLs a random node every `kill_every` for `duration`, restarting each
/// at once; then waits until every node has at least one peer.
pub async fn chaos(m: &Manifest, duration: Duration, kill_every: Duration) -> Result<ChaosReport> {
    let t0 = Instant::now();
    let mut kills = Vec::new();
    while t0.elapsed() < duration {
        tokio::time::sleep(kill_every).await;
        let i = rand::thread_rng().gen_range(0..m.nodes.len());
        let node = &m.nodes[i];
        if let Some(pid) = signal(node, libc::SIGKILL) {
            let t = Instant::now();
            while running_pid(node).is_some() && t.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            eprintln!("chaos: SIGKILL {} (pid {pid}), restarting", node.name);
            start_node(m, node)?;
            kills.push(node.name.clone());
        }
    }
    let took = wait_peers(m, 1, Duration::from_secs(60)).await?;
    Ok(ChaosReport {
        kills,
        recovered_in_ms: took.as_millis() as u64,
    })
}
