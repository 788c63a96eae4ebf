//! Network mode (issue 29): each node in its own network namespace on its
//! own address, links cut by partitions, made lossy and slow through the
//! hub, everything (the delay process too) removed by `down`.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_testnet::netns::delay::Delay;
use vigil_testnet::{call, down, up, Options};

use super::{bin, head_of, quick, wait_for, Guard};

/// Epoch `n`'s output on `node`, if it has it.
async fn output(node: &vigil_testnet::NodeSpec, n: u64) -> Option<String> {
    let r: Value = call(node, "epoch_get", json!([n])).await.ok()?;
    r["output"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_in_namespaces_peer_on_their_own_addresses_and_a_cut_off_node_catches_up_after_heal() {
    std::env::set_var("VIGIL_BIN", bin("vigil"));
    let dir = tempfile::tempdir().unwrap();
    let (m, took) = up(
        &dir.path().join("tn"),
        &Options {
            n: 3,
            netns: true,
            ..quick()
        },
        Duration::from_secs(60),
    )
    .await
    .expect("up --netns (needs root, iproute2 and iptables: scripts/test installs them)");
    let _g = Guard(m.clone());
    let net = m.net.clone().expect("a network-mode manifest");
    eprintln!("3 nodes in namespaces peered in {took:?}");

    // Each node is reached on its own address, none on 127.0.0.1.
    for (i, n) in m.nodes.iter().enumerate() {
        assert!(
            n.p2p_addr.starts_with(&format!("/ip4/10.77.{i}.2/tcp/")),
            "{}",
            n.p2p_addr
        );
        let peers = call(n, "net_peers", json!([])).await.unwrap();
        for p in peers.as_array().unwrap() {
            let a = p["addresses"].to_string();
            assert!(
                a.contains("/ip4/10.77.") && !a.contains("127.0.0.1"),
                "{}: {a}",
                n.name
            );
        }
    }

    // node-2 (a follower) cut off: its head stops while node-0's goes on.
    wait_for("node-2 to follow the chain", 60, async || {
        head_of(&m.nodes[2]).await >= 2
    })
    .await;
    net.isolate(2).unwrap();
    // A proof already in flight may still land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut_at = head_of(&m.nodes[2]).await;
    let h0 = head_of(&m.nodes[0]).await;
    wait_for("node-0 to go 5 epochs on", 60, async || {
        head_of(&m.nodes[0]).await >= h0 + 5
    })
    .await;
    let stalled = head_of(&m.nodes[2]).await;
    assert!(
        stalled <= cut_at + 1,
        "node-2 got epochs through the partition: {cut_at} -> {stalled}"
    );

    // Healed: node-2 catches up to the same chain (same epoch output).
    net.heal().unwrap();
    let target = head_of(&m.nodes[0]).await;
    wait_for("node-2 to catch up after the heal", 90, async || {
        head_of(&m.nodes[2]).await >= target
    })
    .await;
    let (a, b) = (
        output(&m.nodes[0], target).await,
        output(&m.nodes[2], target).await,
    );
    assert!(
        a.is_some() && a == b,
        "epoch {target}: node-0 {a:?}, node-2 {b:?}"
    );

    // 10% loss between all nodes: the chain still advances everywhere.
    net.set_loss(10.0).unwrap();
    let h = head_of(&m.nodes[2]).await;
    wait_for("node-2 to follow through 10% loss", 90, async || {
        head_of(&m.nodes[2]).await >= h + 3
    })
    .await;
    net.set_loss(0.0).unwrap();

    // 50 ms ± 10 ms one way: a TCP handshake from node-0 to node-1 (two
    // crossings of the hub) takes over 80 ms, and the chain goes on.
    let handshake = || {
        let t0 = std::time::Instant::now();
        net.connect_from(0, "10.77.1.2:4001".parse().unwrap()).unwrap();
        t0.elapsed()
    };
    let fast = handshake();
    let slow = Delay {
        ms: 50,
        jitter_ms: 10,
    };
    net.set_delay(&m.dir, slow).unwrap();
    let delayed = handshake();
    eprintln!("TCP handshake node-0 -> node-1: {fast:?} undelayed, {delayed:?} at 50 ± 10 ms");
    assert!(delayed >= Duration::from_millis(80), "{delayed:?}");
    let h = head_of(&m.nodes[2]).await;
    wait_for("node-2 to follow over 50 ms links", 90, async || {
        head_of(&m.nodes[2]).await >= h + 3
    })
    .await;
    net.set_delay(&m.dir, Delay::default()).unwrap();
    assert!(handshake() < Duration::from_millis(80), "the delay did not end");

    // Cut and lossy links alone get no honest node banned.
    for n in &m.nodes {
        let bans = call(n, "net_bans", json!([])).await.unwrap();
        assert_eq!(bans.as_array().map(Vec::len), Some(0), "{}: {bans}", n.name);
    }

    // `down` removes every namespace.
    down(&m, Duration::from_secs(10)).await.unwrap();
    assert!(!net.exists(), "the hub namespace is still there");
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains(&format!("vt{}-", net.tag)), "left behind: {left}");
    let settings = m.dir.join("net-delay.json");
    let stray = std::process::Command::new("pgrep")
        .args(["-f", settings.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(stray.stdout.is_empty(), "the delay process outlived `down`");
}

/// Peers of `node` by peer id.
async fn peer_ids(node: &vigil_testnet::NodeSpec) -> Vec<String> {
    let peers = call(node, "net_peers", json!([])).await.unwrap_or_default();
    peers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
        .collect()
}

/// Regression (issue 29, found by the chaos schedule): a node cut off by a
/// partition kept counting its peers, and stayed `ready`, for as long as
/// TCP kept retrying (45 s and more seen; ~15 min by default), and its
/// peers kept counting it. A ping unanswered for `ping_timeout_secs` now
/// closes the connection; after the heal the reconnect logic finds the
/// peers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_drops_its_peers_within_the_ping_timeout_and_reconnects_after_heal() {
    std::env::set_var("VIGIL_BIN", bin("vigil"));
    let dir = tempfile::tempdir().unwrap();
    let m = vigil_testnet::create(
        &dir.path().join("tn"),
        &Options {
            n: 3,
            netns: true,
            ..quick()
        },
    )
    .unwrap();
    let _g = Guard(m.clone());
    for n in &m.nodes {
        let cfg = n.dir.join("config.toml");
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "reconnect_max_ms = 10000",
            "reconnect_max_ms = 2000\nping_interval_secs = 1\nping_timeout_secs = 3",
        );
        std::fs::write(&cfg, text).unwrap();
    }
    vigil_testnet::start(&m, &m.nodes, Duration::from_secs(60))
        .await
        .expect("3 nodes in namespaces");
    let net = m.net.clone().unwrap();
    let id0 = m.nodes[0].peer_id.clone();
    wait_for("every node to have both others", 60, async || {
        for n in &m.nodes {
            if peer_ids(n).await.len() < 2 {
                return false;
            }
        }
        true
    })
    .await;

    net.isolate(0).unwrap();
    let t0 = std::time::Instant::now();
    // Interval 1 s + timeout 3 s, and the scheduling of debug nodes on two cores.
    wait_for("node-0 and its peers to drop each other", 20, async || {
        peer_ids(&m.nodes[0]).await.is_empty()
            && !peer_ids(&m.nodes[1]).await.contains(&id0)
            && !peer_ids(&m.nodes[2]).await.contains(&id0)
    })
    .await;
    let dropped = t0.elapsed();
    let st = vigil_testnet::status(&m).await;
    assert_eq!(st[0].status, "not ready", "{st:?}");
    // The others still have each other.
    assert!(peer_ids(&m.nodes[1]).await.contains(&m.nodes[2].peer_id));

    net.heal().unwrap();
    let t1 = std::time::Instant::now();
    wait_for("node-0 to be back with both peers", 30, async || {
        peer_ids(&m.nodes[0]).await.len() == 2
    })
    .await;
    eprintln!(
        "cut off: peers dropped after {dropped:?}; healed: reconnected after {:?}",
        t1.elapsed()
    );
    // Lost pings are not misbehaviour: nobody was banned.
    for n in &m.nodes {
        let bans = call(n, "net_bans", json!([])).await.unwrap();
        assert_eq!(bans.as_array().map(Vec::len), Some(0), "{}: {bans}", n.name);
    }
}

/// The short chaos schedule (issue 29): 12 nodes in namespaces, 150 s of
/// seeded faults (partitions, kills, a freeze, 1% loss, 20 ± 5 ms delay),
/// then the checkers. Heavy (12 debug nodes on two cores): `scripts/test`
/// runs it on its own after the other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "4 minutes, 12 nodes: run alone by scripts/test"]
async fn chaos_short_schedule_converges_to_one_chain_and_bans_no_honest_node() {
    use vigil_testnet::schedule::{play, schedule, Preset};
    std::env::set_var("VIGIL_BIN", bin("vigil"));
    let dir = tempfile::tempdir().unwrap();
    let p = Preset::named("short").unwrap();
    let seed = 3;
    let r = play(&dir.path().join("tn"), &p, seed, &|l| eprintln!("chaos: {l}"))
        .await
        .expect("the schedule ran and the chain converged");
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.outcome.steps, schedule(&p, seed).len());
    assert!(
        r.outcome.honest_banned.is_empty(),
        "{:?}",
        r.outcome.honest_banned
    );
    assert_eq!(
        r.outcome.heals.len(),
        p.partitions,
        "each partition's heal measured"
    );
    assert!(r.outcome.head > 0);
    // The observer saw the timelord's epochs reach the other nodes by gossip.
    let epochs = &r.outcome.observed.gossip["epochs"];
    assert!(epochs.messages > 10, "{epochs:?}");
    assert!(epochs.coverage > 0.5, "{epochs:?}");
    assert!(r.outcome.observed.cpu_median_pct > 0.0);
    // No datasets in the preset yet (see `Preset::datasets`): nothing tallied.
    assert!(r.outcome.challenges.is_none());
    let net = vigil_testnet::netns::Net::for_dir(&dir.path().join("tn").canonicalize().unwrap(), p.nodes);
    assert!(!net.exists(), "play left its namespaces behind");
}
