//! Standard libp2p peers. A js-libp2p node with its default settings (TCP,
//! Noise, Yamux, identify, ping; installed from npm by scripts/test)
//! identifies and pings a vigil node, is refused the standard DHT and
//! gossipsub ids and every vigil request, is left out of the peer count,
//! and is disconnected after `network.idle_timeout_secs`. A vigil node of
//! another genesis is refused with a log line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use vigil_testnet::adversary::Adversary;
use vigil_testnet::{call, create, start, wait_peers, Options};

use super::cheats::log_of;
use super::{bin, fetch_metrics, metric, quick, wait_for, Guard};

/// The probe's folder, its node_modules installed (`npm ci`, by scripts/test).
fn probe_dir() -> PathBuf {
    let dir = std::env::var("VIGIL_JS_LIBP2P")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js-libp2p"));
    assert!(
        dir.join("node_modules/libp2p").is_dir(),
        "js-libp2p is not installed in {}: run scripts/test (it runs npm ci there) or set VIGIL_JS_LIBP2P",
        dir.display()
    );
    dir
}

const IDLE_SECS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_libp2p_peer_identifies_and_pings_a_node_and_stays_out_of_the_vigil_network() {
    std::env::set_var("VIGIL_BIN", bin("vigil"));
    let probe = probe_dir();
    let dir = tempfile::tempdir().unwrap();
    let m = create(&dir.path().join("tn"), &Options { n: 2, ..quick() }).unwrap();
    for n in &m.nodes {
        let cfg = n.dir.join("config.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text.replacen(
            "[network]\n",
            &format!("[network]\nidle_timeout_secs = {IDLE_SECS}\n"),
            1,
        );
        std::fs::write(&cfg, text).unwrap();
    }
    let guard = Guard(m.clone());
    start(&m, &m.nodes, Duration::from_secs(60)).await.unwrap();
    wait_peers(&m, 1, Duration::from_secs(60)).await.unwrap();
    let node = &m.nodes[0];
    let g8 = &m.genesis_hash[..16];

    let child = std::process::Command::new("node")
        .arg(probe.join("probe.mjs"))
        .args([&node.p2p_addr, g8, &(IDLE_SECS * 5).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node.js) runs");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output());

    // While it is connected: listed, not a member, not counted.
    let js = || async {
        let peers = call(node, "net_peers", json!([])).await.unwrap();
        peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["agent"].as_str().is_some_and(|a| a.starts_with("js-libp2p")))
            .cloned()
    };
    wait_for("the js-libp2p peer in net_peers", 30, async || {
        js().await.is_some()
    })
    .await;
    let p = js().await.unwrap();
    assert_eq!(p["member"], false, "{p}");
    assert_eq!(p["direction"], "inbound", "{p}");
    let info = call(node, "net_info", json!([])).await.unwrap();
    assert_eq!(info["peers"], 1, "only the other vigil node counts: {info}");
    let metrics = fetch_metrics(node).await;
    assert_eq!(metric(&metrics, "vigil_net_peers{"), 1.0, "{metrics}");

    let out = out.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "probe output: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{r:#}");
    assert!(r["error"].is_null(), "{r:#}");
    assert_eq!(r["encryption"], "/noise", "{r:#}");
    assert_eq!(r["multiplexer"], "/yamux/1.0.0", "{r:#}");
    let id = &r["identify"];
    assert_eq!(id["peer"], node.peer_id.as_str(), "{r:#}");
    let protocols: Vec<&str> = id["protocols"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for p in [
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
        &format!("/vigil/{g8}/status/1"),
    ] {
        assert!(protocols.contains(&p), "{p} not in {protocols:?}");
    }
    let listen = node.p2p_addr.split("/p2p/").next().unwrap();
    assert!(
        id["listen_addrs"].as_array().unwrap().iter().any(|a| a == listen),
        "{listen} not among the listen addresses identify reported: {r:#}"
    );
    assert!(r["ping_ms"].as_f64().is_some(), "{r:#}");
    for p in ["/ipfs/kad/1.0.0", "/meshsub/1.1.0"] {
        assert_eq!(r["tried"][p], "UnsupportedProtocolError", "{p}: {r:#}");
    }
    for p in [format!("/vigil/{g8}/sync/1"), format!("/vigil/{g8}/challenge/1")] {
        assert!(
            r["tried"][&p]
                .as_str()
                .is_some_and(|s| s.starts_with("closed unanswered")),
            "{p}: {r:#}"
        );
    }
    assert_eq!(r["closed_by_node"], true, "{r:#}");
    let open = r["open_secs"].as_f64().unwrap();
    assert!(open < (IDLE_SECS * 3) as f64, "closed after {open} s: {r:#}");

    // Afterwards: gone, refusals counted, the node says what happened.
    wait_for("the js-libp2p peer to leave net_peers", 10, async || {
        js().await.is_none()
    })
    .await;
    let metrics = fetch_metrics(node).await;
    assert!(
        metric(
            &metrics,
            "vigil_net_requests_refused_total{kind=\"sync\",reason=\"not_member\"}"
        ) >= 1.0,
        "{metrics}"
    );
    let log = log_of(node);
    assert!(
        log.contains("a libp2p peer that speaks no vigil protocol"),
        "{log}"
    );
    assert!(
        log.contains("did not join within network.idle_timeout_secs"),
        "{log}"
    );

    // A vigil node of another genesis: refused, with a line that names both.
    let mut other = m.genesis().unwrap();
    other.network = "another-network".into();
    let theirs = format!("/vigil/{}/status/1", other.hash().short());
    let adv = Adversary::join(&other, vec![node.p2p_addr.parse().unwrap()])
        .await
        .unwrap();
    wait_for("the other genesis refused", 30, async || {
        log_of(node).contains("peer is on another genesis")
    })
    .await;
    let line = log_of(node)
        .lines()
        .find(|l| l.contains("peer is on another genesis"))
        .unwrap()
        .to_owned();
    assert!(
        line.contains(&theirs) && line.contains(&adv.peer_id().to_string()),
        "{line}"
    );
    assert!(metric(&fetch_metrics(node).await, "vigil_net_foreign_peers_total") >= 1.0);
    let peers = call(node, "net_peers", json!([])).await.unwrap();
    assert!(!peers.to_string().contains(&adv.peer_id().to_string()), "{peers}");
    // The two vigil nodes are still members of each other.
    assert_eq!(call(node, "net_info", json!([])).await.unwrap()["peers"], 1);
    drop(guard);
}
