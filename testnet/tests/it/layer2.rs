//! Two `vigil run` processes with a payment channel over libp2p, settled on a
//! real anvil: payments both ways (also at the same moment) and a cooperative
//! close whose payouts match; SIGKILL of either side mid-burst; and an old
//! state posted by a counterparty that then vanished, disputed by the
//! other's watcher through a reorg, and paid out in full.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use serde_json::{json, Value};
use vigil_layer2::contract::PaymentChannel;
use vigil_layer2::Account;
use vigil_testnet::{call, signal, start_node, wait_peers, NodeSpec, Options};

use super::{bin, quick, wait_for, Guard};

const ETH: u128 = 1_000_000_000_000_000_000;
const WINDOW: u64 = 20;

struct Anvil(Child);

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn anvil_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("VIGIL_ANVIL") {
        return p.into();
    }
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        p.exists(),
        "anvil is not installed: run scripts/test or set VIGIL_ANVIL"
    );
    p
}

async fn anvil() -> (Anvil, u16, DynProvider) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(anvil_bin())
        .args(["--port", &port.to_string(), "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = ProviderBuilder::new()
        .connect_http(format!("http://127.0.0.1:{port}").parse().unwrap())
        .erased();
    let t0 = Instant::now();
    while p.get_chain_id().await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "anvil did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Anvil(child), port, p)
}

/// A call with room for a 1,000-payment batch: in a debug build on a CI
/// machine running other testnets it took 18-30 s, past the client's
/// default 30 s (speed is measured by `vigil-bench layer2`, not here).
async fn rpc(node: &NodeSpec, method: &str, params: Value) -> Value {
    slow_call(node, method, params)
        .await
        .unwrap_or_else(|e| panic!("{method} on {}: {e:#}", node.name))
}

async fn slow_call(node: &NodeSpec, method: &str, params: Value) -> anyhow::Result<Value> {
    vigil_node::client::Endpoint::resolve(Some(&node.dir), None, None)?
        .with_timeout(Duration::from_secs(180))
        .call(method, params)
        .await
}

async fn channel(node: &NodeSpec, id: &str) -> Value {
    rpc(node, "layer2_channel", json!([id])).await
}

fn wei(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

/// Both sides agree on the newest co-signed state, which sums to the deposits.
async fn agree(a: &NodeSpec, b: &NodeSpec, id: &str) -> (u64, u128) {
    let (ca, cb) = (channel(a, id).await, channel(b, id).await);
    assert_eq!(ca["nonce"], cb["nonce"], "{ca} vs {cb}");
    assert_eq!(wei(&ca["ours"]), wei(&cb["theirs"]), "{ca} vs {cb}");
    assert_eq!(wei(&ca["ours"]) + wei(&ca["theirs"]), wei(&ca["capacity"]));
    (ca["nonce"].as_u64().unwrap(), wei(&ca["ours"]))
}

async fn restart(m: &vigil_testnet::Manifest, node: &NodeSpec) {
    wait_for("the killed node to exit", 10, async || {
        vigil_testnet::running_pid(node).is_none()
    })
    .await;
    start_node(m, node).unwrap();
    wait_for("the restarted node's RPC", 30, async || {
        call(node, "layer2_status", json!([])).await.is_ok()
    })
    .await;
    wait_for("the nodes to reconnect", 30, async || {
        call(node, "net_peers", json!([]))
            .await
            .is_ok_and(|p| !p.as_array().unwrap().is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_between_two_nodes_pays_both_ways_survives_sigkill_and_defends_an_old_state() {
    std::env::set_var("VIGIL_BIN", bin("vigil"));
    let (_anvil, port, eth) = anvil().await;
    let url = format!("http://127.0.0.1:{port}");
    let contract = vigil_layer2::evm::deploy(&url, &Account::anvil_dev(), WINDOW)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tn = dir.path().join("tn");
    let m = vigil_testnet::create(&tn, &Options { n: 2, ..quick() }).unwrap();
    for n in &m.nodes {
        let cfg = n.dir.join("config.toml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!(
            "\n[[chain.sources]]\nname = \"anvil\"\nkind = \"evm\"\nurl = \"{url}\"\nws_url = \"ws://127.0.0.1:{port}\"\nchain_id = 31337\nblock_time_ms = 1000\n\n[layer2]\nenabled = true\nsource = \"anvil\"\ncontract = \"{contract}\"\nmax_join_deposit = \"5eth\"\nrequest_timeout_ms = 3000\n"
        ));
        std::fs::write(&cfg, text).unwrap();
    }
    let _g = Guard(m.clone());
    for n in &m.nodes {
        start_node(&m, n).unwrap();
    }
    wait_peers(&m, 1, Duration::from_secs(60))
        .await
        .expect("the two nodes connect");
    let (a, b) = (&m.nodes[0], &m.nodes[1]);
    // Each node has its own account; fund both.
    let mut addrs = Vec::new();
    for n in [a, b] {
        let addr: Address = rpc(n, "node_info", json!([])).await["evm_address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        eth.raw_request::<_, ()>("anvil_setBalance".into(), (addr, U256::from(100 * ETH)))
            .await
            .unwrap();
        addrs.push(addr);
    }
    assert_ne!(addrs[0], addrs[1]);

    // Open: A deposits 10 ETH and asks B for 8; B puts in its limit, 5.
    let info = rpc(a, "layer2_open", json!([b.peer_id, "10eth", "8eth"])).await;
    let id = info["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (info["state"].as_str(), wei(&info["ours"]), wei(&info["theirs"])),
        (Some("open"), 10 * ETH, 5 * ETH)
    );

    // 1,000 payments each way, then 300 each way at the same moment.
    let r = rpc(a, "layer2_pay", json!([id, "2gwei", 1000])).await;
    eprintln!(
        "A -> B: 1000 payments in {} ms, p50 {} us, p99 {} us",
        r["elapsed_ms"], r["p50_us"], r["p99_us"]
    );
    let r = rpc(b, "layer2_pay", json!([id, "1gwei", 1000])).await;
    eprintln!(
        "B -> A: 1000 payments in {} ms, p50 {} us, p99 {} us",
        r["elapsed_ms"], r["p50_us"], r["p99_us"]
    );
    let (pa, pb) = (a.clone(), b.clone());
    let (ida, idb) = (id.clone(), id.clone());
    let ta = tokio::spawn(async move { slow_call(&pa, "layer2_pay", json!([ida, "3gwei", 300])).await });
    let tb = tokio::spawn(async move { slow_call(&pb, "layer2_pay", json!([idb, "1gwei", 300])).await });
    ta.await.unwrap().expect("A's burst while B pays");
    tb.await.unwrap().expect("B's burst while A pays");
    let gwei = 1_000_000_000u128;
    let (_, a_bal) = agree(a, b, &id).await;
    assert_eq!(
        a_bal,
        10 * ETH - 2000 * gwei + 1000 * gwei - 900 * gwei + 300 * gwei
    );

    // Bad input: more than the balance, an unknown channel, a malformed amount.
    let e = call(b, "layer2_pay", json!([id, "100eth"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("-32092") || e.contains("cannot pay"), "{e}");
    let e = call(a, "layer2_channel", json!([format!("0x{}", "ab".repeat(32))]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no channel"), "{e}");
    let e = call(a, "layer2_pay", json!([id, "1.5wei"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("finer than 1 wei"), "{e}");

    // SIGKILL the payer, then the payee, in the middle of a burst: after a
    // restart both agree, nothing co-signed went back, and payments go on.
    for (victim, payer) in [(a, a), (b, a)] {
        let before = agree(a, b, &id).await.0;
        let p = payer.clone();
        let idc = id.clone();
        let burst = tokio::spawn(async move { call(&p, "layer2_pay", json!([idc, "1gwei", 100000])).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        signal(victim, libc::SIGKILL).unwrap();
        let _ = burst.await;
        let survivor = if victim.name == a.name { b } else { a };
        let seen = channel(survivor, &id).await["nonce"].as_u64().unwrap();
        assert!(seen > before, "the burst made progress before the kill");
        restart(&m, victim).await;
        let back = channel(victim, &id).await["nonce"].as_u64().unwrap();
        assert!(
            back + 1 >= seen && back <= seen + 1,
            "{} came back at nonce {back}; its peer holds {seen}",
            victim.name
        );
        rpc(a, "layer2_pay", json!([id, "1gwei"])).await;
        let (n, _) = agree(a, b, &id).await;
        assert!(n > seen, "the channel goes on after {} was killed", victim.name);
        eprintln!(
            "{} killed at nonce ~{seen}: back at {back}, channel at {n}",
            victim.name
        );
    }

    // Cooperative close: the contract pays the co-signed balances.
    let (nonce, a_bal) = agree(a, b, &id).await;
    let b0 = eth.get_balance(addrs[1]).await.unwrap();
    let closed = rpc(a, "layer2_close", json!([id])).await;
    assert_eq!(closed["state"], "closed");
    assert_eq!(
        eth.get_balance(addrs[1]).await.unwrap() - b0,
        U256::from(15 * ETH - a_bal),
        "B is paid its balance at nonce {nonce}, and pays no gas"
    );
    wait_for("B to see the close", 20, async || {
        channel(b, &id).await["state"] == "closed"
    })
    .await;

    // A second channel: A pays B, then A vanishes and its operator posts state 1.
    let id2 = rpc(a, "layer2_open", json!([b.peer_id, "1eth"])).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    rpc(a, "layer2_pay", json!([id2, "0.1eth", 5])).await;
    let (five, _) = agree(a, b, &id2).await;
    assert_eq!(five, 5);
    signal(a, libc::SIGKILL).unwrap();
    let cid = id2.parse().unwrap();
    let ledger = a.dir.join("layer2").join(format!("{cid:x}.ledger"));
    let records = vigil_layer2::Ledger::read_all(&ledger).unwrap();
    let old = records
        .iter()
        .find_map(|e| e.signed().filter(|s| s.state.nonce == 1))
        .unwrap();
    let close = PaymentChannel::closeCall {
        s: PaymentChannel::State {
            channelId: cid,
            nonce: 1,
            balanceA: old.state.balanceA,
            balanceB: old.state.balanceB,
            isFinal: false,
        },
        sigA: old.sig_a.to_vec().into(),
        sigB: old.sig_b.to_vec().into(),
    };
    eth.raw_request::<_, ()>("anvil_impersonateAccount".into(), (addrs[0],))
        .await
        .unwrap();
    let tx = TransactionRequest::default()
        .with_from(addrs[0])
        .with_to(contract)
        .with_input(close.abi_encode());
    eth.send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let on_chain = |eth: DynProvider| async move {
        PaymentChannel::new(contract, eth)
            .channels(cid)
            .call()
            .await
            .unwrap()
    };
    // B's watcher answers with nonce 5 by itself.
    let t0 = Instant::now();
    wait_for("B's watcher to dispute", 20, async || {
        on_chain(eth.clone()).await.nonce == 5
    })
    .await;
    eprintln!("old state disputed {:?} after it was posted", t0.elapsed());
    // A reorg drops the dispute; the watcher sends it again.
    eth.raw_request::<_, ()>("anvil_reorg".into(), (1u64, Vec::<()>::new()))
        .await
        .unwrap();
    assert_eq!(
        on_chain(eth.clone()).await.nonce,
        1,
        "the reorg dropped the dispute"
    );
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        eth.raw_request::<_, ()>("anvil_mine".into(), (U256::from(1),))
            .await
            .unwrap();
    }
    wait_for("the dispute to land again", 20, async || {
        on_chain(eth.clone()).await.nonce == 5
    })
    .await;
    // After the window B's watcher finalizes: B is paid its 0.5 ETH (less its gas).
    let b0 = eth.get_balance(addrs[1]).await.unwrap();
    eth.raw_request::<_, ()>("anvil_mine".into(), (U256::from(WINDOW + 1),))
        .await
        .unwrap();
    wait_for("B's watcher to finalize", 20, async || {
        on_chain(eth.clone()).await.status == 4
    })
    .await;
    let gain = eth.get_balance(addrs[1]).await.unwrap() + U256::from(ETH / 100) - b0;
    assert!(
        gain >= U256::from(ETH / 2) && gain <= U256::from(ETH / 2 + ETH / 100),
        "B gained {gain}"
    );
    wait_for("B to see the payout", 20, async || {
        channel(b, &id2).await["state"] == "closed"
    })
    .await;
    // Every step is in B's audit log and on its bus.
    let audit = rpc(b, "audit_list", json!([0, 1000])).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in [
        "layer2.joined",
        "layer2.closing",
        "layer2.disputed",
        "layer2.closed",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let q = rpc(b, "queue_stats", json!(["layer2.events"])).await;
    assert!(q[0]["depth"].as_u64() >= Some(5), "{q}");
    let metrics = super::fetch_metrics(b).await;
    assert!(
        super::metric(&metrics, "vigil_layer2_disputes_total") >= 2.0,
        "two disputes sent"
    );
    // B restarted after its kill: its counters start there.
    assert!(super::metric(&metrics, "vigil_layer2_payments_total") >= 1.0);
    assert!(
        metrics.contains("vigil_layer2_channels{state=\"closed\"} 2"),
        "channels by state"
    );
    let ctl = super::vigilctl(b, &["layer2"]);
    assert_eq!(ctl["channels"].as_array().unwrap().len(), 2, "{ctl}");
}
