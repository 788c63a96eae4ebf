//! Sampled verification's second half (issue 22, hole 6): an epoch a
//! sampling node took is verified in full behind the head before anything
//! final uses it; one that fails is rolled back and its sender banned.

use serde_json::{json, Value};
use vigil_testnet::adversary::Adversary;
use vigil_testnet::call;

use super::cheats::{banned, compute_epoch, full_and_sampling_nodes, log_of};
use super::{fetch_metrics, metric, wait_for};

async fn vdf(node: &vigil_testnet::NodeSpec) -> Value {
    call(node, "vdf_status", json!([])).await.unwrap()
}

async fn bus_depth(node: &vigil_testnet::NodeSpec) -> u64 {
    let q = call(node, "queue_stats", json!(["epoch.new"])).await.unwrap();
    q[0]["depth"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_that_passes_sampling_is_rolled_back_before_anything_final_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    // No honest timelord: epochs come from the test. node-1 samples 2 segments.
    let (m, _guard) = full_and_sampling_nodes(dir.path()).await;
    let (n0, n1) = (&m.nodes[0], &m.nodes[1]);
    let genesis = m.genesis().unwrap();
    let n1_addr: libp2p::Multiaddr = n1.p2p_addr.parse().unwrap();
    let honest = Adversary::join(&genesis, vec![n1_addr.clone()]).await.unwrap();
    let e1 = compute_epoch(&genesis, 1, &genesis.hash().0);
    honest.publish("epochs", e1.encode()).await.unwrap();
    for node in [n0, n1] {
        wait_for("the honest epoch 1", 30, async || {
            vdf(node).await["final_head"].as_u64() == Some(1)
        })
        .await;
    }
    wait_for("epoch 1 on node-1's bus", 20, async || bus_depth(n1).await == 1).await;

    // Epoch 2 broken in one middle checkpoint: two of the 31 segments
    // besides the output one are wrong, so sampling one of them misses it
    // 93.5% of the time. A forger that sampling catches is scored, not yet
    // banned; the next identity tries another checkpoint.
    let honest2 = compute_epoch(&genesis, 2, &e1.output);
    let mut forger = None;
    for k in 3..8 {
        let adv = Adversary::join(&genesis, vec![n1_addr.clone()]).await.unwrap();
        let mut forged = honest2.clone();
        forged.checkpoints[k][0] ^= 1;
        let rejected = |t: &str| metric(t, "vigil_epoch_rejected_total{reason=\"invalid\"}");
        let before = rejected(&fetch_metrics(n1).await);
        adv.publish("epochs", forged.encode()).await.unwrap();
        let mut caught = false;
        wait_for("node-1 to take or refuse the forgery", 30, async || {
            caught = rejected(&fetch_metrics(n1).await) > before;
            caught || vdf(n1).await["rolled_back"].as_u64() >= Some(1)
        })
        .await;
        if !caught {
            forger = Some(adv);
            break;
        }
    }
    let forger = forger.expect("sampling caught five forgeries in a row (p < 1e-5)");
    let me = forger.peer_id().to_string();
    // Taken by sampling, then verified in full behind the head: rolled back,
    // its sender banned (persisted, with the reason).
    let v = vdf(n1).await;
    assert_eq!(v["rolled_back"], 1, "{v}");
    assert_eq!(v["head"], 1, "{v}");
    assert_eq!(v["final_head"], 1, "{v}");
    let ban = banned(n1, &me).await.expect("the forger is banned at node-1");
    assert!(
        ban["reason"]
            .as_str()
            .unwrap()
            .contains("failed its full verification"),
        "{ban}"
    );
    assert!(log_of(n1).contains("failed its full check: rolled back"));
    let text = fetch_metrics(n1).await;
    assert_eq!(metric(&text, "vigil_epoch_rolled_back_total"), 1.0, "{text}");
    // Nothing final saw it: the bus still holds epoch 1 only, and node-0
    // (verifying in full) never took it.
    assert_eq!(bus_depth(n1).await, 1);
    assert_eq!(vdf(n0).await["head"], 1);

    // The honest epoch 2 is taken by both, verified in full at node-1 too.
    honest.publish("epochs", honest2.encode()).await.unwrap();
    for node in [n0, n1] {
        wait_for("the honest epoch 2, final", 30, async || {
            vdf(node).await["final_head"].as_u64() == Some(2)
        })
        .await;
    }
    let got = call(n1, "epoch_get", json!([2])).await.unwrap();
    assert_eq!(got["output"], hex::encode(honest2.output), "{got}");
    wait_for("epoch 2 on node-1's bus", 20, async || bus_depth(n1).await == 2).await;
}
