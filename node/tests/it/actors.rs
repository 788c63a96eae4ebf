use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

fn chaos_node(tmp: &tempfile::TempDir, max_restarts: &str) -> (Node, String) {
    let data = tmp.path().join("dev");
    let mut cmd = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]);
    cmd.env("VIGIL_DEBUG__FAULT_INJECTION", "true")
        .env("VIGIL_SUPERVISION__MAX_RESTARTS", max_restarts);
    let mut node = Node::spawn(cmd, &data);
    let url = node.wait_ready();
    (node, url)
}

fn tree(data: &std::path::Path) -> Vec<Value> {
    let o = vigilctl(&["--data-dir", s(data), "actors", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str::<Value>(&stdout(&o))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn actor(data: &std::path::Path, name: &str) -> Value {
    tree(data).into_iter().find(|n| n["name"] == name).unwrap()
}

/// Injects a panic into `name` and waits until it is running again with one more restart.
fn panic_and_wait(node: &Node, name: &str) {
    let before = actor(&node.dir, name)["restarts"].as_u64().unwrap();
    let o = vigilctl(&["--data-dir", s(&node.dir), "actors", "panic", name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = actor(&node.dir, name);
        if a["restarts"].as_u64().unwrap() == before + 1 && a["status"] == "running" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not come back: {a}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn repeated_panics_keep_the_node_healthy_and_show_in_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = chaos_node(&tmp, "50");
    for name in [
        "store",
        "bus",
        "net",
        "epochs",
        "chain",
        "challenges",
        "continuity",
        "rpc",
    ] {
        for _ in 0..3 {
            panic_and_wait(&node, name);
            assert_eq!(http_get(&format!("{url}/health")).0, 200);
        }
    }
    let nodes = tree(&node.dir);
    let names: Vec<_> = nodes
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["parent"].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("root", None),
            ("store", Some("root")),
            ("bus", Some("root")),
            ("net", Some("root")),
            ("epochs", Some("root")),
            ("chain", Some("root")),
            ("challenges", Some("root")),
            ("continuity", Some("root")),
            ("rpc", Some("root"))
        ]
    );
    for n in &nodes[1..] {
        assert_eq!(n["restarts"], 3, "{n}");
        let kind = if n["name"] == "continuity" {
            "worker"
        } else {
            "actor"
        };
        assert_eq!(n["kind"], kind, "{n}");
        assert_eq!(n["restart"], "permanent");
        assert!(
            n["last_panic"].as_str().unwrap().contains("injected panic"),
            "{n}"
        );
    }
    assert_eq!(nodes[0]["strategy"], "one_for_one");

    // Operator restart of the store: stopped (flushed) and started again.
    let o = vigilctl(&["--data-dir", s(&node.dir), "actors", "restart", "store"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(actor(&node.dir, "store")["restarts"], 4);
    assert!(node.log().contains("database flushed"), "{}", node.log());

    let human = vigilctl(&["--data-dir", s(&node.dir), "actors"]);
    let table = stdout(&human);
    assert!(
        table.contains("RESTARTS") && table.contains("  store") && table.contains("injected panic"),
        "{table}"
    );

    let (_, metrics) = http_get(&format!("{url}/metrics"));
    let text = body(&metrics);
    assert!(
        text.contains("vigil_actor_restarts_total{actor=\"store\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("vigil_actor_restarts_total{actor=\"rpc\"} 3"),
        "{text}"
    );
    assert!(text.contains("vigil_actor_up{actor=\"rpc\"} 1"), "{text}");
    assert!(
        text.contains("vigil_actor_last_restart_timestamp_seconds{actor=\"store\"}"),
        "{text}"
    );
    assert!(
        text.contains("vigil_actor_mailbox_depth{actor=\"store\"} 0"),
        "{text}"
    );

    let o = vigilctl(&["--data-dir", s(&node.dir), "actors", "panic", "nobody"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no actor named `nobody`"), "{}", stderr(&o));
}

#[test]
fn fault_injection_is_refused_unless_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut node = Node::spawn(
        vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]),
        &data,
    );
    node.wait_ready();
    let o = vigilctl(&["--data-dir", s(&data), "actors", "panic", "store"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("debug.fault_injection"), "{}", stderr(&o));
    assert_eq!(actor(&data, "store")["restarts"], 0);
}

#[test]
fn exceeding_the_root_intensity_exits_non_zero_naming_the_actor() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, _url) = chaos_node(&tmp, "3");
    for _ in 0..3 {
        panic_and_wait(&node, "store");
    }
    let o = vigilctl(&["--data-dir", s(&node.dir), "actors", "panic", "store"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let status = node.wait_exit(20);
    assert_eq!(status.code(), Some(1), "{}", node.log());
    let log = node.log();
    assert!(
        log.contains("the actor tree gave up") && log.contains("`store`") && log.contains("injected panic"),
        "{log}"
    );
}

#[test]
fn each_panic_of_net_costs_one_restart_also_with_a_quic_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let mut cmd = vigil(&["dev", "--data-dir", s(&data), "--rpc-addr", "127.0.0.1:0"]);
    cmd.env("VIGIL_DEBUG__FAULT_INJECTION", "true")
        .env("VIGIL_SUPERVISION__MAX_RESTARTS", "50")
        .env(
            "VIGIL_NETWORK__LISTEN",
            "/ip4/0.0.0.0/tcp/0,/ip4/0.0.0.0/udp/0/quic-v1",
        );
    let mut node = Node::spawn(cmd, &data);
    node.wait_ready();
    for i in 1..=3u64 {
        panic_and_wait(&node, "net");
        // Settled: no second restart follows the first.
        std::thread::sleep(Duration::from_millis(1500));
        let n = actor(&node.dir, "net");
        assert_eq!(n["restarts"], i, "{n}\n{}", node.log());
        assert_eq!(n["status"], "running");
    }
    let info = vigilctl(&["--data-dir", s(&node.dir), "net", "info", "--json"]);
    let text = stdout(&info);
    assert!(text.contains("quic-v1"), "{text}");
}
