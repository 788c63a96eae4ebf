//! Chain monitoring through the binary: a deep reorg on a real anvil pauses
//! the challenges actor by rule; the operator sees it and resumes it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

fn anvil_bin() -> std::path::PathBuf {
    std::env::var("VIGIL_ANVIL").map(Into::into).unwrap_or_else(|_| {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        assert!(
            p.exists(),
            "anvil is not installed: run scripts/test (it installs it) or set VIGIL_ANVIL"
        );
        p
    })
}

pub(crate) struct Anvil(std::process::Child);

impl Anvil {
    /// anvil on a free port with `extra` flags; returns it and its HTTP URL once it answers.
    pub(crate) fn start(extra: &[&str]) -> (Self, u16, String) {
        let port = free_port();
        let anvil = Anvil(
            std::process::Command::new(anvil_bin())
                .args(["--port", &port.to_string(), "--silent"])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait("anvil", || {
            http("POST", &url, &[("Content-Type", "application/json")], "{}").0 != 0
        });
        (anvil, port, url)
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn eth(url: &str, method: &str, params: Value) -> Value {
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let (status, resp) = http("POST", url, &[("Content-Type", "application/json")], &req);
    assert_eq!(status, 200, "{method}: {resp}");
    serde_json::from_str::<Value>(&body(&resp)).unwrap()["result"].clone()
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_deep_reorg_pauses_challenges_until_the_operator_resumes_them() {
    let (_anvil, port, eth_url) = Anvil::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, url, data) = dev_with_config(
        tmp.path(),
        &format!(
            "[[chain.sources]]\nname = \"anvil\"\nkind = \"evm\"\nurl = \"{eth_url}\"\nws_url = \"ws://127.0.0.1:{port}\"\nchain_id = 31337\nblock_time_ms = 600000\n\n[[security.rules]]\nwhen = \"reorg_depth >= 3\"\naction = \"pause:challenges\"\n"
        ),
    );
    eth(&eth_url, "anvil_mine", json!(["0x5"]));
    wait("head 5", || {
        rpc_result(&url, &data, "chain_status", json!([]))[0]["head"] == 5
    });
    eth(&eth_url, "evm_increaseTime", json!([1]));
    eth(&eth_url, "anvil_reorg", json!([3, []]));
    let paused = || {
        rpc_result(&url, &data, "actors_tree", json!([]))
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "challenges" && a["paused"] == true)
    };
    wait("challenges paused by the rule", paused);
    let tree = rpc_result(&url, &data, "actors_tree", json!([]));
    let ch = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "challenges")
        .unwrap()
        .clone();
    assert_eq!(ch["status"], "running", "a paused actor stays supervised: {ch}");
    let o = vigilctl(&["--data-dir", s(&data), "security"]);
    // The pause switches, not "running" for an actor this node may not run.
    assert!(
        stdout(&o).contains("challenges")
            && stdout(&o).contains("PAUSED")
            && !stdout(&o).contains("layer2       running"),
        "{}",
        stdout(&o)
    );
    let o = vigilctl(&["--data-dir", s(&data), "chain"]);
    assert!(
        stdout(&o).contains("depth 3 above 2") && stdout(&o).contains(" ok"),
        "{}",
        stdout(&o)
    );
    // The detection is a durable bus message and an audit entry; so is the pause.
    let q = rpc_result(&url, &data, "queue_stats", json!(["security.alerts"]));
    assert!(q[0]["depth"].as_u64() >= Some(1), "{q}");
    let audit = rpc_result(&url, &data, "audit_list", json!([0, 1000]));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"security.detection") && actions.contains(&"security.pause"),
        "{actions:?}"
    );
    let o = vigilctl(&["--data-dir", s(&data), "security", "resume", "challenges"]);
    assert!(
        o.status.success() && stdout(&o).contains("challenges: not paused"),
        "{}",
        stderr(&o)
    );
    assert!(!paused());
    let o = vigilctl(&["--data-dir", s(&data), "security", "pause", "store"]);
    assert!(
        !o.status.success() && stderr(&o).contains("cannot be paused"),
        "{}",
        stderr(&o)
    );
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
}

#[test]
fn a_node_follows_another_nodes_epoch_chain() {
    let tmp = tempfile::tempdir().unwrap();
    // Node A computes short epochs (3 M steps).
    let text = vigil_genesis::Preset::Dev
        .toml()
        .replace("vdf_iterations = 100000000", "vdf_iterations = 3000000");
    let g = tmp.path().join("genesis.toml");
    std::fs::write(&g, text).unwrap();
    let pass = pass_file(tmp.path());
    let a = tmp.path().join("a");
    init(&a, s(&g), &pass);
    let mut cmd = run_cmd(&a, &pass, &[]);
    cmd.env("VIGIL_VDF__COMPUTE", "true");
    let mut na = Node::spawn(cmd, &a);
    let url_a = na.wait_ready();
    // Node B watches A's epochs as a chain source.
    let cfg = tmp.path().join("b.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[chain.sources]]\nname = \"node-a\"\nkind = \"vigil\"\nurl = \"{url_a}\"\ncookie_file = \"{}\"\nblock_time_ms = 2000\n",
            a.join(".cookie").display()
        ),
    )
    .unwrap();
    let b = tmp.path().join("b");
    let mut nb = Node::spawn(
        vigil(&[
            "dev",
            "--data-dir",
            s(&b),
            "--rpc-addr",
            "127.0.0.1:0",
            "--config",
            s(&cfg),
        ]),
        &b,
    );
    let url_b = nb.wait_ready();
    wait("node B to follow A's epochs", || {
        let st = rpc_result(&url_b, &b, "chain_status", json!([]));
        st[0]["health"] == "ok" && st[0]["head"].as_u64() >= Some(2)
    });
    let st = rpc_result(&url_b, &b, "chain_status", json!([]));
    let h = st[0]["head"].as_u64().unwrap();
    let e = rpc_result(&url_a, &a, "epoch_get", json!([h]));
    assert_eq!(st[0]["head_hash"], e["output"], "{st}");
    for n in [&mut na, &mut nb] {
        n.signal("TERM");
        assert!(n.wait_exit(20).success());
    }
}

#[test]
fn an_anchored_genesis_takes_each_epochs_anchor_from_anvil_and_needs_a_source() {
    // One block a second: epoch n anchors to block n, final one block later.
    let (_anvil, _, eth_url) = Anvil::start(&["--block-time", "1"]);
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[params.anchor]\nchain_id = 31337\nstart_height = 0\nblocks_per_epoch = 1\nconfirmations = 1\n",
        vigil_genesis::Preset::Dev
            .toml()
            .replace("vdf_iterations = 100000000", "vdf_iterations = 2000000")
            .replace("vigil-dev", "vigil-anchored")
    );
    let g = tmp.path().join("genesis.toml");
    std::fs::write(&g, text).unwrap();
    let pass = pass_file(tmp.path());

    // Without a source of chain 31337 the node says what to add, and stops.
    let lone = tmp.path().join("lone");
    init(&lone, s(&g), &pass);
    let mut cmd = run_cmd(&lone, &pass, &[]);
    cmd.env("VIGIL_NETWORK__ENABLED", "false");
    let mut n = Node::spawn(cmd, &lone);
    assert!(!n.wait_exit(30).success());
    assert!(
        n.log().contains("anchors every epoch to EVM chain 31337")
            && n.log().contains("kind = \"evm\", chain_id = 31337"),
        "{}",
        n.log()
    );

    let a = tmp.path().join("a");
    init(&a, s(&g), &pass);
    let cfg = tmp.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!("[[chain.sources]]\nname = \"anvil\"\nkind = \"evm\"\nurl = \"{eth_url}\"\nchain_id = 31337\nblock_time_ms = 1000\n"),
    )
    .unwrap();
    let mut cmd = run_cmd(&a, &pass, &["--config", s(&cfg)]);
    cmd.env("VIGIL_VDF__COMPUTE", "true")
        .env("VIGIL_NETWORK__ENABLED", "false");
    let mut node = Node::spawn(cmd, &a);
    let url = node.wait_ready();
    wait("two anchored epochs", || {
        rpc_result(&url, &a, "epoch_head", json!([]))["head"].as_u64() >= Some(2)
    });
    for n in 1..=2u64 {
        let e = rpc_result(&url, &a, "epoch_get", json!([n]));
        let block = eth(
            &eth_url,
            "eth_getBlockByNumber",
            json!([format!("0x{n:x}"), false]),
        );
        assert_eq!(
            format!("0x{}", e["anchor"].as_str().unwrap()),
            block["hash"].as_str().unwrap(),
            "epoch {n} must carry block {n}'s hash"
        );
    }
    let st = rpc_result(&url, &a, "vdf_status", json!([]));
    assert_eq!(st["anchor_source"], "anvil", "{st}");
    let o = vigilctl(&["--data-dir", s(&a), "vdf"]);
    assert!(
        stdout(&o).contains("anchor    from chain source `anvil`"),
        "{}",
        stdout(&o)
    );
    node.signal("TERM");
    assert!(node.wait_exit(20).success());
}
