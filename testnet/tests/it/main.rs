//! Real `vigil run` processes on 127.0.0.1, driven through the testnet library
//! and the `vigil-testnet` binary.
#![allow(unreachable_pub)]

mod cheats;
mod flood;
mod interop;
mod layer2;
mod netns;
mod sampling;
mod withdrawals;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_testnet::{call, down, running_pid, signal, start_node, up, wait_peers, Manifest, Options};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Stops the testnet whatever happens in the test.
struct Guard(Manifest);

impl Drop for Guard {
    fn drop(&mut self) {
        let m = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(down(&m, Duration::from_secs(5)));
        })
        .join();
    }
}

fn peers_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_mesh_gossip_resist_a_flood_reconnect_from_the_book_and_heal() {
    std::env::set_var("VIGIL_BIN", bin("vigil"));
    let dir = tempfile::tempdir().unwrap();
    let (m, took) = up(
        &dir.path().join("tn"),
        &Options { n: 5, ..quick() },
        Duration::from_secs(30),
    )
    .await
    .expect("up");
    let g = Guard(m.clone());
    eprintln!("5 nodes with >= 3 peers each in {took:?}");

    // Gossip from node 0 reaches all within 2 s.
    let id = call(&m.nodes[0], "net_probe", json!([])).await.unwrap()["probe"]
        .as_u64()
        .unwrap();
    let t0 = Instant::now();
    for n in &m.nodes[1..] {
        loop {
            let seen = call(n, "net_probes", json!([])).await.unwrap();
            if seen
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"].as_u64() == Some(id))
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{} did not see the probe within 2 s",
                n.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("probe reached 4 nodes in {:?}", t0.elapsed());

    // A flood of 500 inbound connection attempts on node 0: limits hold, RPC answers.
    let p2p_port: u16 = m.nodes[0].p2p_addr.split('/').nth(4).unwrap().parse().unwrap();
    let before = peers_of(&call(&m.nodes[0], "net_peers", json!([])).await.unwrap());
    let flood = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..500 {
            if let Ok(s) =
                TcpStream::connect_timeout(&([127, 0, 0, 1], p2p_port).into(), Duration::from_secs(2))
            {
                held.push(s);
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        held.len()
    });
    let t0 = Instant::now();
    let mut calls = 0;
    while !flood.is_finished() {
        let h = tokio::time::timeout(
            Duration::from_secs(2),
            call(&m.nodes[0], "node_health", json!([])),
        )
        .await
        .expect("the RPC stalled during the flood")
        .unwrap();
        assert_eq!(h["status"], "ok");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = flood.join().unwrap();
    eprintln!(
        "flood: {opened} TCP connections opened, {calls} RPC calls answered in {:?}",
        t0.elapsed()
    );
    let peers = call(&m.nodes[0], "net_peers", json!([])).await.unwrap();
    assert!(
        peers.as_array().unwrap().len() <= 64,
        "more peers than max_inbound + max_outbound allow"
    );
    let metrics = fetch_metrics(&m.nodes[0]).await;
    assert!(
        metric(&metrics, "vigil_net_incoming_refused_total") > 0.0,
        "no inbound connection was refused"
    );
    let after = peers_of(&peers);
    assert!(
        before.iter().all(|p| after.contains(p)),
        "the flood cost node 0 a real peer"
    );

    // node 4 restarts with every bootnode down and reconnects from its peer book.
    let n3 = m.nodes[3].peer_id.clone();
    let t0 = Instant::now();
    while !peers_of(&call(&m.nodes[4], "net_peers", json!([])).await.unwrap()).contains(&n3) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "node-4 never met node-3 through the DHT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &m.nodes[..3] {
        signal(n, libc::SIGKILL);
    }
    signal(&m.nodes[4], libc::SIGKILL);
    while running_pid(&m.nodes[4]).is_some() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start_node(&m, &m.nodes[4]).unwrap();
    let t0 = Instant::now();
    loop {
        if let Ok(p) = call(&m.nodes[4], "net_peers", json!([])).await {
            if peers_of(&p).contains(&n3) {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "node-4 did not reconnect to node-3 from its peer book"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node-4 reconnected from its peer book in {:?}", t0.elapsed());

    // Bring the bootnodes back, then chaos through the binary; the network heals.
    for n in &m.nodes[..3] {
        start_node(&m, n).unwrap();
    }
    wait_peers(&m, 1, Duration::from_secs(30)).await.unwrap();
    let out = Command::new(bin("vigil-testnet"))
        .args(["chaos", "--json", "--duration", "4", "--kill-every", "1", "--dir"])
        .arg(&m.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chaos failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!r["kills"].as_array().unwrap().is_empty());
    // A node just restarted by chaos is ready once it has peers and has
    // synced the epochs it missed: wait for all five.
    let t0 = Instant::now();
    let st = loop {
        let st = Command::new(bin("vigil-testnet"))
            .args(["status", "--json", "--dir"])
            .arg(&m.dir)
            .output()
            .unwrap();
        let st: Value = serde_json::from_slice(&st.stdout).unwrap();
        let all = st.as_array().unwrap();
        assert_eq!(all.len(), 5);
        // Their genesis has bootnodes, so each is ready only because it has peers.
        if all
            .iter()
            .all(|s| s["peers"].as_u64().unwrap_or(0) >= 1 && s["status"] == "ready")
        {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not all ready in 30 s: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // One timelord (node-0); the followers adopted its epochs.
    let _ = st;
    for n in &m.nodes {
        let r = call(n, "epoch_head", json!([])).await.unwrap();
        assert!(r["head"].as_u64().unwrap() >= 1, "{}: {r}", n.name);
    }
    let e1 = call(&m.nodes[0], "epoch_get", json!([1])).await.unwrap();
    for n in &m.nodes[1..] {
        assert_eq!(call(n, "epoch_get", json!([1])).await.unwrap(), e1, "{}", n.name);
    }

    // down stops every process and returns only once they are gone: each
    // node's last word is "stopped cleanly" (nothing is appended after it).
    let cli = |args: &[&str]| {
        let out = Command::new(bin("vigil-testnet"))
            .args(args)
            .arg("--dir")
            .arg(&m.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let urls: Vec<String> = m
        .nodes
        .iter()
        .map(|n| std::fs::read_to_string(n.dir.join("rpc.url")).unwrap())
        .collect();
    let r = cli(&["down", "--json"]);
    assert!(r.as_array().unwrap().iter().all(|s| s["how"] == "stopped"), "{r}");
    assert!(m.nodes.iter().all(|n| running_pid(n).is_none()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in &m.nodes {
        let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap();
        let last = log.lines().last().unwrap_or_default();
        assert!(last.contains("stopped cleanly"), "{}: {last}", n.name);
    }
    // start runs the same testnet again, on the same addresses.
    let st = cli(&["start", "--json", "--timeout", "60"]);
    assert!(
        st.as_array().unwrap().iter().all(|s| s["status"] != "stopped"),
        "{st}"
    );
    for (n, url) in m.nodes.iter().zip(&urls) {
        assert_eq!(
            &std::fs::read_to_string(n.dir.join("rpc.url")).unwrap(),
            url,
            "{}",
            n.name
        );
    }
    // One node stops and starts on its own.
    let r = cli(&["stop", "--json", "--node", "2"]);
    assert_eq!(r.as_array().unwrap().len(), 1, "{r}");
    assert!(running_pid(&m.nodes[2]).is_none());
    assert!(running_pid(&m.nodes[1]).is_some());
    cli(&["start", "--json", "--node", "node-2"]);
    assert!(running_pid(&m.nodes[2]).is_some());
    let r = cli(&["down", "--json"]);
    assert_eq!(r.as_array().unwrap().len(), 5, "{r}");
    assert!(m.nodes.iter().all(|n| running_pid(n).is_none()));
    drop(g);
}

async fn fetch_metrics(node: &vigil_testnet::NodeSpec) -> String {
    let url = std::fs::read_to_string(node.dir.join("rpc.url")).unwrap();
    let addr = url.trim().trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn bad_input_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("vigil-testnet"))
        .args(["up", "-n", "0", "--dir"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1..=100 nodes"));
    let out = Command::new(bin("vigil-testnet"))
        .args(["status", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("vigil-testnet up --dir"));
    // Completions and man pages come from the same definition as the flags.
    let out = Command::new(bin("vigil-testnet"))
        .args(["completions", "fish"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kill-every"));
    let out = Command::new(bin("vigil-testnet"))
        .args(["man", "--out"])
        .arg(dir.path().join("man"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("man").join("vigil-testnet-start.1").is_file());
}

/// Short hash-mode epochs (dev preset, ~0.25 s) so tests see epochs without
/// a 40 s memory-hard testnet epoch.
fn quick() -> Options {
    Options {
        preset: "dev".into(),
        vdf_iterations: Some(5_000_000),
        ..Options::default()
    }
}

pub(crate) async fn head_of(node: &vigil_testnet::NodeSpec) -> u64 {
    match call(node, "epoch_head", json!([])).await {
        Ok(r) => r["head"].as_u64().unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_syncs_from_several_peers_faster_than_the_epochs_were_computed() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        n: 4,
        vdf_iterations: Some(10_000_000),
        ..quick()
    };
    let m = vigil_testnet::create(&dir.path().join("tn"), &o).unwrap();
    let _guard = Guard(m.clone());
    for node in &m.nodes[..3] {
        start_node(&m, node).unwrap();
    }
    // node-0 computes; time N epochs of it.
    const N: u64 = 14;
    let (mut first, t0) = (None, Instant::now());
    loop {
        let h = head_of(&m.nodes[0]).await;
        if h >= 1 && first.is_none() {
            first = Some((Instant::now(), h));
        }
        if h >= N {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "node-0 computed only {h} epochs in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t_first, h_first) = first.unwrap();
    let per_epoch = t_first.elapsed().as_secs_f64() / (N - h_first).max(1) as f64;

    // Freeze the chain: node-0 restarts as a follower, so the joiner's
    // verification has the machine's cores to itself.
    let cfg = m.nodes[0].dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("compute = true", "compute = false");
    std::fs::write(&cfg, text).unwrap();
    signal(&m.nodes[0], libc::SIGTERM);
    while running_pid(&m.nodes[0]).is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start_node(&m, &m.nodes[0]).unwrap();
    let mut head = 0;
    let t = Instant::now();
    while head == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "node-0 did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
        head = head_of(&m.nodes[0]).await;
    }
    for node in &m.nodes[..3] {
        let t = Instant::now();
        while head_of(node).await < head {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} did not reach {head}",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The late joiner asks 3 epochs per request, so the ranges spread over its peers.
    let joiner = &m.nodes[3];
    let cfg = joiner.dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap() + "sync_batch = 3\n";
    std::fs::write(&cfg, text).unwrap();
    let t = Instant::now();
    start_node(&m, joiner).unwrap();
    while head_of(joiner).await < head {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the joiner did not sync {head} epochs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let synced = t.elapsed().as_secs_f64();
    let computed = per_epoch * head as f64;
    eprintln!(
        "joiner synced and verified {head} epochs in {synced:.2} s (start included); computing them took {computed:.2} s ({per_epoch:.3} s each)"
    );
    assert!(
        synced < computed,
        "sync {synced:.2} s is not faster than computing {computed:.2} s"
    );
    for n in [1, head / 2, head] {
        let a = call(&m.nodes[1], "epoch_get", json!([n])).await.unwrap();
        assert_eq!(call(joiner, "epoch_get", json!([n])).await.unwrap(), a);
    }
    let jm = fetch_metrics(joiner).await;
    assert_eq!(
        metric(&jm, "vigil_epoch_accepted_total{origin=\"sync\"}"),
        head as f64,
        "{jm}"
    );
    let log = std::fs::read_to_string(joiner.dir.join("node.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("epoch chain synced"))
        .unwrap_or_default()
        .to_owned();
    let servers: usize = line
        .split("peers=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(servers >= 2, "ranges came from {servers} peer(s): {line}");
    let ready = call(joiner, "node_health", json!([])).await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
}

fn vigilctl(node: &vigil_testnet::NodeSpec, args: &[&str]) -> Value {
    let out = Command::new(bin("vigilctl"))
        .arg("--data-dir")
        .arg(&node.dir)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vigilctl {args:?} on {}: {}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn wait_for(what: &str, secs: u64, mut ok: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !ok().await {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_store_and_challenge_each_other_and_ban_a_corrupt_prover() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        n: 3,
        vdf_iterations: Some(10_000_000),
        ..quick()
    };
    let (m, _) = up(&dir.path().join("tn"), &o, Duration::from_secs(60))
        .await
        .unwrap();
    let _guard = Guard(m.clone());
    let ids: Vec<String> = m.nodes.iter().map(|n| n.peer_id.clone()).collect();
    // Each node stores its own random file (300 KB: 293 leaves, one sector).
    let mut roots = Vec::new();
    for (i, node) in m.nodes.iter().enumerate() {
        let f = dir.path().join(format!("data-{i}.bin"));
        let bytes: Vec<u8> = (0..300_000u32)
            .map(|x| (x.wrapping_mul(2654435761) >> (i + 3)) as u8)
            .collect();
        std::fs::write(&f, &bytes).unwrap();
        let info = vigilctl(node, &["storage", "put", f.to_str().unwrap()]);
        assert_eq!(
            info["root"].as_str().unwrap(),
            blake3::hash(&bytes).to_hex().as_str()
        );
        roots.push(info["replica_root"].as_str().unwrap().to_owned());
    }
    // Every node learns the other two datasets and challenges them every epoch.
    for node in &m.nodes {
        wait_for("announcements", 40, async || {
            call(node, "storage_announced", json!([]))
                .await
                .unwrap()
                .as_array()
                .unwrap()
                .len()
                == 2
        })
        .await;
    }
    for (i, node) in m.nodes.iter().enumerate() {
        wait_for("10 ok challenges to each peer", 60, async || {
            let st = call(node, "challenge_stats", json!([])).await.unwrap();
            ids.iter().enumerate().filter(|(j, _)| *j != i).all(|(_, id)| {
                let s = &st["peers"][id];
                s["ok"].as_u64().unwrap_or(0) >= 10
            })
        })
        .await;
        let st = call(node, "challenge_stats", json!([])).await.unwrap();
        for (j, id) in ids.iter().enumerate().filter(|(j, _)| *j != i) {
            let s = &st["peers"][id];
            assert_eq!(s["success_rate"], 1.0, "{} -> node-{j}: {s}", node.name);
        }
    }
    // A follower kept in sync by gossip sees the timelord at the head they
    // share (peers and `vdf` once showed it at 0, its head when it connected).
    let head = call(&m.nodes[1], "epoch_head", json!([])).await.unwrap()["head"]
        .as_u64()
        .unwrap();
    assert!(head >= 2, "{head}");
    // (It polls one peer's head every 10 s.)
    wait_for("node-1 to see the timelord's head", 45, async || {
        let peers = call(&m.nodes[1], "net_peers", json!([])).await.unwrap();
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == ids[0].as_str() && p["head"].as_u64() >= Some(head))
    })
    .await;
    let vdf = call(&m.nodes[1], "vdf_status", json!([])).await.unwrap();
    assert!(vdf["best_peer_head"].as_u64() >= Some(head), "{vdf}");
    // Outcomes are on the bus and attested to the other nodes.
    let q = call(&m.nodes[0], "queue_stats", json!(["challenge.results"]))
        .await
        .unwrap();
    assert!(q[0]["depth"].as_u64().unwrap() >= 20, "{q}");
    let att = call(&m.nodes[0], "challenge_attestations", json!([1000]))
        .await
        .unwrap();
    assert!(
        att.as_array()
            .unwrap()
            .iter()
            .any(|a| a["challenger"] == ids[1] && a["outcome"] == "ok"),
        "{att}"
    );
    // An operator challenge and an audit (the replica really encodes the plaintext).
    let r = vigilctl(&m.nodes[0], &["challenge", "run", &ids[1]]);
    assert_eq!(r["outcome"], "ok", "{r}");
    assert!(r["proof_bytes"].as_u64().unwrap() > 4 * 1024, "{r}");
    let a = vigilctl(&m.nodes[0], &["challenge", "audit", &ids[1]]);
    assert_eq!(a["passed"], true, "{a}");

    // A frozen prover (node-0, SIGSTOP) never answers: `timeout`, naming the wait,
    // after seconds (not the transport's minute), in one warn line per round.
    let pid = std::fs::read_to_string(m.nodes[0].dir.join("vigil.pid")).unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, pid.trim()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let t0 = std::time::Instant::now();
    let r = vigilctl(&m.nodes[1], &["challenge", "run", &ids[0]]);
    signal("-CONT");
    assert_eq!(r["outcome"], "timeout", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("(deadline 500 ms + allowance"),
        "{r}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let log = std::fs::read_to_string(m.nodes[1].dir.join("node.log")).unwrap();
    assert!(log.contains("challenges failed"), "{log}");
    assert!(!log.contains("detail=None"), "{log}");

    // Continuity: node-0's chain for its dataset, proven up to its signed root.
    let st = call(&m.nodes[0], "continuity_status", json!([])).await.unwrap();
    assert_eq!(st["chains"], 1, "{st}");
    let e = st["last_epoch"].as_u64().unwrap();
    let p = call(&m.nodes[0], "continuity_proof", json!([roots[0], e]))
        .await
        .unwrap();
    assert_eq!(p["verified"], true, "{p}");
    // node-1 fetches that proof over /vigil/<g8>/continuity/1 and checks it.
    wait_for("node-1 to hold that epoch", 20, async || {
        call(&m.nodes[1], "epoch_head", json!([])).await.unwrap()["head"].as_u64() >= Some(e)
    })
    .await;
    // Once node-0's root for that epoch (its commitment) reached node-1.
    let mut c = Value::Null;
    wait_for("node-0's proof to check out at node-1", 20, async || {
        c = call(&m.nodes[1], "continuity_check", json!([ids[0], roots[0], e]))
            .await
            .unwrap();
        c["verified"] == true
    })
    .await;
    assert!(c["link"].is_string(), "{c}");
    let c = call(&m.nodes[1], "continuity_check", json!([ids[0], roots[1], e]))
        .await
        .unwrap();
    assert_eq!(
        c["verified"], false,
        "node-0 holds no link for node-1's dataset: {c}"
    );
    wait_for("signed continuity roots from both peers", 20, async || {
        let r = call(&m.nodes[0], "continuity_roots", json!([])).await.unwrap();
        r.as_array().unwrap().len() == 2
    })
    .await;
    // The same through vigilctl continuity: status, proof, roots, check; a
    // check that fails exits non-zero and says where the chain broke.
    let st = vigilctl(&m.nodes[0], &["continuity"]);
    assert_eq!(st["chains"], 1, "{st}");
    let e = e.to_string();
    let p = vigilctl(&m.nodes[0], &["continuity", "proof", &roots[0], &e]);
    assert_eq!(p["verified"], true, "{p}");
    let r = vigilctl(&m.nodes[0], &["continuity", "roots"]);
    assert_eq!(r.as_array().unwrap().len(), 2, "{r}");
    let c = vigilctl(&m.nodes[1], &["continuity", "check", &ids[0], &roots[0], &e]);
    assert_eq!(c["verified"], true, "{c}");
    let out = Command::new(bin("vigilctl"))
        .arg("--data-dir")
        .arg(&m.nodes[1].dir)
        .args(["continuity", "check", &ids[0], &roots[1], &e])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chain BROKEN at epoch"), "{err}");

    // node-2's replica rots: every proof from it is now wrong; the others ban it.
    let rep = m.nodes[2].dir.join("storage").join(&roots[2]).join("replica");
    let len = std::fs::metadata(&rep).unwrap().len() as usize;
    std::fs::write(&rep, vec![0x5a; len]).unwrap();
    for node in &m.nodes[..2] {
        wait_for("node-2 banned for wrong proofs", 60, async || {
            let bans = call(node, "net_bans", json!([])).await.unwrap();
            bans.as_array().unwrap().iter().any(|b| b["peer"] == ids[2])
        })
        .await;
        let st = call(node, "challenge_stats", json!([])).await.unwrap();
        assert!(
            st["peers"][&ids[2]]["outcomes"]["wrong"].as_u64() >= Some(1),
            "{st}"
        );
    }
    // A replica deleted from disk answers `missing`.
    std::fs::remove_file(m.nodes[1].dir.join("storage").join(&roots[1]).join("replica")).unwrap();
    let r = vigilctl(&m.nodes[0], &["challenge", "run", &ids[1]]);
    assert_eq!(r["outcome"], "missing", "{r}");
}
