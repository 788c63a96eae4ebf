//! Network mode: every node in its own Linux network namespace, joined to
//! a hub namespace that routes between them, so the testnet's links can
//! fail the way real ones do.
//!
//! ```text
//!   vt<tag>-0 (10.77.0.2) ──veth── ┐
//!   vt<tag>-1 (10.77.1.2) ──veth── ├─ vt<tag>-hub: routes 10.77.i.0/24,
//!   vt<tag>-2 (10.77.2.2) ──veth── ┘   iptables FORWARD: partitions, loss
//! ```
//!
//! Each node has its own stack, so its p2p address is its own (the node's
//! per-address limits apply as on a real network) and its RPC and bus stay
//! on 127.0.0.1 inside its namespace: the tool reaches the RPC through a
//! forwarder whose connections are opened from inside that namespace
//! ([`Net::rpc_url`]). All inter-node traffic crosses the hub, whose FORWARD
//! chain holds two chains of this testnet: `vigil-part` (partitions: DROP
//! between groups, both directions, silent like a real cut) and
//! `vigil-loss` (random loss). Nothing is added to the host's own network
//! namespace, and only 10.77.0.0/16 addresses inside these namespaces are
//! used.
//!
//! Delay and jitter go through a third chain, `vigil-delay`, to NFQUEUE and
//! a small process in the hub that holds each packet for its delay
//! ([`delay`]): the kernels this runs on here are built without tc netem.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` (iproute2) and
//! `iptables`.

pub mod delay;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The namespaces of one testnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Net {
    /// Short tag in every namespace name, from the testnet folder.
    pub tag: String,
    /// Nodes.
    pub n: usize,
}

/// Runs `ip`/`iptables` with `args`; an error names the command and its stderr.
fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (install iproute2 and iptables)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// The namespaces of the testnet in `dir` (the tag is a hash of its path).
    pub fn for_dir(dir: &Path, n: usize) -> Self {
        let h = blake3::hash(dir.as_os_str().as_encoded_bytes());
        Self {
            tag: h.to_hex()[..6].to_owned(),
            n,
        }
    }

    /// The hub namespace.
    pub fn hub(&self) -> String {
        format!("vt{}-hub", self.tag)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("vt{}-{i}", self.tag)
    }

    /// Node `i`'s address (10.77.i.2; the hub is 10.77.i.1).
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, i as u8, 2)
    }

    /// Checks that namespaces can be made here; the error says why not and what to do.
    pub fn check_available() -> Result<()> {
        // Unique per call: two testnets of one process may be made at once.
        static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = format!("vtprobe-{}-{k}", std::process::id());
        run("ip", &["netns", "add", &probe]).context(
            "network mode needs Linux network namespaces: run as root with iproute2 installed, or leave out --netns (all nodes on 127.0.0.1)",
        )?;
        let _ = run("ip", &["netns", "del", &probe]);
        Command::new("iptables")
            .arg("--version")
            .output()
            .context("network mode needs iptables (apt-get install iptables)")?;
        Ok(())
    }

    /// Builds the namespaces, links and routes (removing any left by an
    /// earlier run of this testnet first); on failure removes what it made.
    pub fn create(&self) -> Result<()> {
        if self.n > 250 {
            bail!("network mode has room for 250 nodes, not {}", self.n);
        }
        Self::check_available()?;
        self.teardown()?;
        let r = self.build();
        if r.is_err() {
            let _ = self.teardown();
        }
        r
    }

    /// Whether the hub namespace exists (the testnet's network is up).
    pub fn exists(&self) -> bool {
        list().iter().any(|n| *n == self.hub())
    }

    fn build(&self) -> Result<()> {
        let hub = self.hub();
        run("ip", &["netns", "add", &hub])?;
        run(
            "ip",
            &["netns", "exec", &hub, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        )?;
        for chain in ["vigil-part", "vigil-loss", "vigil-delay"] {
            self.iptables(&["-N", chain])?;
            self.iptables(&["-A", "FORWARD", "-j", chain])?;
        }
        for i in 0..self.n {
            let (ns, link) = (self.ns(i), format!("h{i}"));
            let (hub_ip, ip) = (format!("10.77.{i}.1"), self.ip(i).to_string());
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "-n", &hub, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run(
                "ip",
                &["-n", &hub, "addr", "add", &format!("{hub_ip}/24"), "dev", &link],
            )?;
            run("ip", &["-n", &hub, "link", "set", &link, "up"])?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", &ns, "route", "add", "default", "via", &hub_ip])?;
        }
        Ok(())
    }

    /// Removes every namespace of this testnet (also those of a failed run);
    /// their links and rules go with them.
    pub fn teardown(&self) -> Result<()> {
        let prefix = format!("vt{}-", self.tag);
        for ns in list().into_iter().filter(|n| n.starts_with(&prefix)) {
            // Whatever still runs in it (the delay process; a node of a
            // failed run) would outlive the namespace's name.
            for pid in pids(&ns) {
                // SAFETY: kill only sends a signal.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            run("ip", &["netns", "del", &ns])?;
        }
        Ok(())
    }

    /// Whether a process reads the delay queue in the hub (the kernel's
    /// list of bound queues in that namespace).
    fn queue_bound(&self) -> bool {
        let Ok(out) = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hub(),
                "cat",
                "/proc/net/netfilter/nfnetlink_queue",
            ])
            .output()
        else {
            return false;
        };
        let q = delay::QUEUE.to_string();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(q.as_str()))
    }

    /// Delays every packet between nodes (one way; 0 ms ends it). The
    /// setting goes to `dir/net-delay.json`, read by the delay process in
    /// the hub, started here on first use (its log: `dir/netd.log`).
    pub fn set_delay(&self, dir: &Path, d: delay::Delay) -> Result<()> {
        if d.jitter_ms > d.ms {
            bail!(
                "jitter of {} ms over a delay of {} ms: the jitter is at most the delay",
                d.jitter_ms,
                d.ms
            );
        }
        let settings = dir.join("net-delay.json");
        std::fs::write(&settings, serde_json::to_string(&d)?)
            .with_context(|| format!("cannot write {}", settings.display()))?;
        self.iptables(&["-F", "vigil-delay"])?;
        if d.ms == 0 {
            return Ok(());
        }
        if pids(&self.hub()).is_empty() {
            let log = std::fs::File::create(dir.join("netd.log"))?;
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.hub()])
                .arg(testnet_bin())
                .arg("netd")
                .arg("--settings")
                .arg(&settings)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0);
            c.spawn()
                .context("cannot start the delay process (vigil-testnet netd)")?;
            // Until it reads the queue, `--queue-bypass` lets packets
            // through undelayed: wait for the kernel to list its binding.
            let t0 = std::time::Instant::now();
            while !self.queue_bound() {
                if t0.elapsed() > std::time::Duration::from_secs(10) {
                    bail!(
                        "the delay process did not bind NFQUEUE {} within 10 s: see {}",
                        delay::QUEUE,
                        dir.join("netd.log").display()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let q = delay::QUEUE.to_string();
        self.iptables(&[
            "-A",
            "vigil-delay",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &q,
            "--queue-bypass",
        ])
    }

    fn iptables(&self, args: &[&str]) -> Result<()> {
        let hub = self.hub();
        let mut all = vec!["netns", "exec", hub.as_str(), "iptables", "-w"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Cuts the network into `groups` (node indices): no packet crosses
    /// between two groups, in either direction; nodes in no group are cut
    /// off from everyone. Replaces the previous partition.
    pub fn partition(&self, groups: &[Vec<usize>]) -> Result<()> {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        if let Some(bad) = groups.iter().flatten().find(|&&i| i >= self.n) {
            bail!("no node {bad}: this testnet has nodes 0..{}", self.n - 1);
        }
        self.cut_where(|a, b| group_of(a).is_none() || group_of(a) != group_of(b))
    }

    /// A ring: each node reaches only its two neighbours (node i: i-1 and
    /// i+1, wrapping), so everything else has to be relayed.
    pub fn ring(&self) -> Result<()> {
        let n = self.n;
        self.cut_where(|a, b| (a + 1) % n != b && (b + 1) % n != a)
    }

    /// Replaces the partition: drops every packet from a to b where `cut(a, b)`.
    /// One `iptables-restore` for all the rules (24 nodes in halves are
    /// 288 of them): the partition changes at once, not rule by rule.
    fn cut_where(&self, cut: impl Fn(usize, usize) -> bool) -> Result<()> {
        use std::io::Write as _;
        let mut rules = String::from("*filter\n-F vigil-part\n");
        for a in 0..self.n {
            for b in 0..self.n {
                if a != b && cut(a, b) {
                    rules.push_str(&format!(
                        "-A vigil-part -s {} -d {} -j DROP\n",
                        self.ip(a),
                        self.ip(b)
                    ));
                }
            }
        }
        rules.push_str("COMMIT\n");
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hub(),
                "iptables-restore",
                "-w",
                "--noflush",
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run iptables-restore (install iptables)")?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "iptables-restore failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&self, i: usize) -> Result<()> {
        let rest: Vec<usize> = (0..self.n).filter(|&j| j != i).collect();
        self.partition(&[vec![i], rest])
    }

    /// Ends every partition.
    pub fn heal(&self) -> Result<()> {
        self.iptables(&["-F", "vigil-part"])
    }

    /// Drops `percent` of the packets between nodes, at random (0 ends it).
    pub fn set_loss(&self, percent: f64) -> Result<()> {
        if !(0.0..=100.0).contains(&percent) {
            bail!("loss of {percent}%: give a percentage from 0 to 100");
        }
        self.iptables(&["-F", "vigil-loss"])?;
        if percent > 0.0 {
            let p = format!("{:.4}", percent / 100.0);
            self.iptables(&[
                "-A",
                "vigil-loss",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ])?;
        }
        Ok(())
    }

    /// `program` to be run in node `i`'s namespace (`ip netns exec`, which
    /// execs it: the child's pid is the program's).
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }

    /// A TCP connection to `127.0.0.1:port` inside node `i`'s namespace,
    /// opened from a thread that joins that namespace for the call.
    pub fn connect(&self, i: usize, port: u16) -> std::io::Result<TcpStream> {
        self.connect_from(i, (Ipv4Addr::LOCALHOST, port).into())
    }

    /// A TCP connection to `to`, opened from inside node `i`'s namespace
    /// (to another node's address, it crosses the hub and its links).
    pub fn connect_from(&self, i: usize, to: SocketAddr) -> std::io::Result<TcpStream> {
        let path = format!("/var/run/netns/{}", self.ns(i));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path)?;
            // SAFETY: setns on a valid namespace fd affects only this
            // thread, which ends right after the connect.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpStream::connect_timeout(&to, std::time::Duration::from_secs(10))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    }

    /// An `http://127.0.0.1:P` URL in this process's namespace that reaches
    /// the RPC at `127.0.0.1:port` inside node `i`'s namespace (a forwarder
    /// thread, started once per node and port for this process).
    pub fn rpc_url(&self, i: usize, port: u16) -> Result<String> {
        static FORWARDERS: OnceLock<Mutex<HashMap<(String, u16), u16>>> = OnceLock::new();
        let key = (self.ns(i), port);
        let mut map = FORWARDERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(&key) {
            return Ok(format!("http://127.0.0.1:{p}"));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot open an RPC forwarder")?;
        let local = listener.local_addr()?.port();
        let net = self.clone();
        std::thread::Builder::new()
            .name(format!("fwd-{}", key.0))
            .spawn(move || {
                for client in listener.incoming().flatten() {
                    let Ok(upstream) = net.connect(i, port) else {
                        continue;
                    };
                    pipe(client, upstream);
                }
            })?;
        map.insert(key, local);
        Ok(format!("http://127.0.0.1:{local}"))
    }
}

/// Copies both ways between `a` and `b` until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    one_way(a, b2);
    one_way(b, a2);
}

/// The `vigil-testnet` binary (the delay process is one of its commands):
/// `$VIGIL_TESTNET_BIN`, beside the `vigil` binary, this program, or PATH.
fn testnet_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_TESTNET_BIN") {
        return p.into();
    }
    let beside = crate::vigil_bin().with_file_name("vigil-testnet");
    if beside.is_file() {
        return beside;
    }
    match std::env::current_exe() {
        Ok(exe) if exe.file_name().is_some_and(|n| n == "vigil-testnet") => exe,
        _ => "vigil-testnet".into(),
    }
}

/// Processes in namespace `ns`.
fn pids(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Names of the network namespaces on this machine.
fn list() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}
