//! The epoch chain with real `vigil run` processes: determinism across nodes
//! and thread counts, delivery on the bus, and a VDF worker that resumes from
//! its last checkpoint after SIGKILL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_genesis::Preset;

use crate::util::*;

/// A genesis file like dev with `iterations` VDF steps per epoch.
fn genesis_file(dir: &Path, iterations: u64) -> PathBuf {
    let text = Preset::Dev
        .toml()
        .replace(
            "vdf_iterations = 100000000",
            &format!("vdf_iterations = {iterations}"),
        )
        .replace("vigil-dev", "vigil-epochs");
    assert!(text.contains(&format!("vdf_iterations = {iterations}")));
    let p = dir.join("genesis.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn computing(data: &Path, pass: &Path, threads: &str) -> Node {
    let mut cmd = run_cmd(data, pass, &[]);
    cmd.env("VIGIL_VDF__COMPUTE", "true")
        .env("VIGIL_DEBUG__FAULT_INJECTION", "true")
        .env("VIGIL_NETWORK__ENABLED", "false")
        .env("RAYON_NUM_THREADS", threads);
    Node::spawn(cmd, data)
}

#[test]
fn two_nodes_on_two_thread_counts_compute_identical_epochs_and_publish_them() {
    let tmp = tempfile::tempdir().unwrap();
    let g = genesis_file(tmp.path(), 3_000_000);
    let pass = pass_file(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a, s(&g), &pass);
    init(&b, s(&g), &pass);
    // b keeps two epochs on the bus; a keeps the node's default.
    let mut cfg = std::fs::read_to_string(b.join("config.toml")).unwrap();
    cfg.push_str("\n[[bus.topics]]\nname = \"epoch.new\"\nkind = \"stream\"\nmax_msgs = 2\n");
    std::fs::write(b.join("config.toml"), cfg).unwrap();
    let mut na = computing(&a, &pass, "1");
    let mut nb = computing(&b, &pass, "2");
    let (ua, ub) = (na.wait_ready(), nb.wait_ready());
    wait_for("three epochs on both nodes", 60, || {
        rpc_result(&ua, &a, "epoch_head", json!([]))["head"].as_u64() >= Some(3)
            && rpc_result(&ub, &b, "epoch_head", json!([]))["head"].as_u64() >= Some(3)
    });
    for n in 1..=3 {
        let ea = rpc_result(&ua, &a, "epoch_get", json!([n]));
        let eb = rpc_result(&ub, &b, "epoch_get", json!([n]));
        assert_eq!(ea, eb, "epoch {n} differs between the nodes");
        assert_eq!(ea["output"].as_str().unwrap().len(), 64);
    }
    // Bad params name what is allowed.
    let payload = json!({"jsonrpc": "2.0", "id": 1, "method": "epoch_get", "params": [0]}).to_string();
    let (_, body) = rpc_raw(&ua, Some(&cookie(&a)), &payload);
    assert!(body.contains("number >= 1"), "{body}");
    // Every epoch is a durable message on `epoch.new`.
    wait_for("epochs on the bus", 20, || {
        let stats = rpc_result(&ua, &a, "queue_stats", json!([]));
        stats
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["topic"] == "epoch.new" && t["depth"].as_u64() >= Some(3))
    });
    // Nothing in the node consumes its own topics: they are streams with
    // retention (a work queue nobody reads grows for ever).
    let topics = |u: &str, d: &Path| -> Vec<Value> {
        let stats = rpc_result(u, d, "queue_stats", json!([]));
        stats.as_array().unwrap().clone()
    };
    for name in ["epoch.new", "challenge.results", "layer2.events"] {
        let t = topics(&ua, &a);
        let t = t
            .iter()
            .find(|t| t["topic"] == name)
            .unwrap_or_else(|| panic!("{name}: {t:?}"));
        assert_eq!(t["kind"], "stream", "{t}");
    }
    let depth_b = |t: Vec<Value>| {
        t.iter().find(|t| t["topic"] == "epoch.new").unwrap()["depth"]
            .as_u64()
            .unwrap()
    };
    assert!(depth_b(topics(&ub, &b)) <= 2, "{:?}", topics(&ub, &b));
    let published = |t: Vec<Value>| {
        t.iter().find(|t| t["topic"] == "epoch.new").unwrap()["next_seq"]
            .as_u64()
            .unwrap()
    };
    wait_for("b to publish past its retention", 30, || {
        published(topics(&ub, &b)) >= 4
    });
    assert_eq!(depth_b(topics(&ub, &b)), 2, "{:?}", topics(&ub, &b));
    let status = rpc_result(&ua, &a, "vdf_status", json!([]));
    assert_eq!(status["mode"], "hash");
    assert!(status["rate"].as_f64().unwrap() > 0.0, "{status}");
    // The operator's view of the same.
    let o = vigilctl(&["--data-dir", s(&a), "epoch", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e2 = rpc_result(&ua, &a, "epoch_get", json!([2]));
    assert!(
        stdout(&o).contains(e2["output"].as_str().unwrap()),
        "{}",
        stdout(&o)
    );
    let o = vigilctl(&["--data-dir", s(&a), "vdf"]);
    assert!(
        stdout(&o).contains("M iterations/s") && stdout(&o).contains("hash"),
        "{}",
        stdout(&o)
    );
    let o = vigilctl(&["--data-dir", s(&a), "--json", "epoch"]);
    let head: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        head["head"].as_u64().unwrap() >= 3 && head["synced"] == true,
        "{head}"
    );
    let o = vigilctl(&["--data-dir", s(&a), "epoch", "999999"]);
    assert!(
        !o.status.success() && stderr(&o).contains("no epoch 999999"),
        "{}",
        stderr(&o)
    );
    na.signal("TERM");
    nb.signal("TERM");
    assert!(na.wait_exit(20).success());
    assert!(nb.wait_exit(20).success());
}

#[test]
fn the_vdf_worker_resumes_from_its_last_checkpoint_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    // About 5 s per epoch at ~20 M steps/s: time to kill it and panic it mid-epoch.
    let g = genesis_file(tmp.path(), 100_000_000);
    let pass = pass_file(tmp.path());
    let data = tmp.path().join("n");
    init(&data, s(&g), &pass);
    let mut node = computing(&data, &pass, "2");
    let url = node.wait_ready();
    let mut before = 0;
    wait_for("the worker to pass segment 8 of epoch 1", 60, || {
        let st = rpc_result(&url, &data, "vdf_status", json!([]));
        before = st["segments_done"].as_u64().unwrap_or(0);
        st["computing"] == 1 && before >= 8
    });
    node.signal("KILL");
    node.wait_exit(10);
    let mut node = computing(&data, &pass, "2");
    let url = node.wait_ready();
    let st = rpc_result(&url, &data, "vdf_status", json!([]));
    assert_eq!(st["computing"], 1, "{st}");
    assert_eq!(st["resumed"], true, "{st}");
    assert!(
        st["segments_done"].as_u64().unwrap() >= before,
        "resumed at {} after reaching {before}: {st}",
        st["segments_done"]
    );
    // A panic in the worker thread: supervised, restarted, resumed again.
    let before = rpc_result(&url, &data, "vdf_status", json!([]))["segments_done"]
        .as_u64()
        .unwrap();
    rpc_result(&url, &data, "actors_inject_panic", json!(["vdf"]));
    wait_for("the vdf worker to restart", 20, || {
        let tree = rpc_result(&url, &data, "actors_tree", json!([]));
        tree.as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "vdf" && a["restarts"] == 1 && a["status"] == "running")
    });
    let st = rpc_result(&url, &data, "vdf_status", json!([]));
    if st["computing"] == 1 {
        assert_eq!(st["resumed"], true, "{st}");
        assert!(
            st["segments_done"].as_u64().unwrap() >= before.saturating_sub(1),
            "{st}"
        );
    }
    wait_for("epoch 1", 60, || {
        rpc_result(&url, &data, "epoch_head", json!([]))["head"].as_u64() >= Some(1)
    });
    assert!(
        node.log().matches("resumes from its last checkpoint").count() >= 2,
        "{}",
        node.log()
    );
    // The resumed epoch is the one an uninterrupted evaluation gives.
    let genesis = vigil_genesis::Genesis::load_file(&g).unwrap();
    let gh = genesis.hash().0;
    let params = vigil_protocols::vdf::VdfParams::from_genesis(&genesis.params);
    let input = vigil_protocols::epoch::input(&gh, 1, &gh, &[]);
    let proof = vigil_protocols::vdf::Vdf::new(params, &input)
        .unwrap()
        .prove(&input);
    let e1 = rpc_result(&url, &data, "epoch_get", json!([1]));
    assert_eq!(e1["output"], hex::encode(proof.output));
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
}

#[test]
fn calibrate_measures_and_suggests_iterations() {
    let o = vigil(&["vdf", "calibrate", "--genesis", "dev", "--secs", "1", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["mode"], "hash");
    assert_eq!(c["target_secs"], 5);
    let rate = c["iterations_per_sec"].as_f64().unwrap();
    let its = c["iterations"].as_u64().unwrap();
    assert!(rate > 100_000.0, "{c}");
    // Two significant digits of rate x target, rounded down.
    assert!(its as f64 <= rate * 5.0 && its as f64 > rate * 5.0 * 0.89, "{c}");
    let o = vigil(&["vdf", "calibrate", "--mode", "aes"]).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("allowed hash, memory-hard"), "{}", stderr(&o));
}
