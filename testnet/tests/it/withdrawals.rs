//! Withdrawals (issue 22, hole 9): a node that drops a dataset says so,
//! signed, and is not punished for it; a prover that withdraws to dodge a
//! challenge already sent is not let off.

use serde_json::{json, Value};
use vigil_genesis::SecurityParams;
use vigil_testnet::call;

use super::cheats::{announced, banned, data, honest_and_adversary, stats_of, store_and_announce};
use super::{vigilctl, wait_for};

async fn head(node: &vigil_testnet::NodeSpec) -> u64 {
    call(node, "epoch_head", json!([])).await.unwrap()["head"]
        .as_u64()
        .unwrap()
}

/// Challenges and audits `node` recorded on `dataset` (its attestations).
async fn outcomes_on(node: &vigil_testnet::NodeSpec, dataset: &str) -> Vec<Value> {
    let att = call(node, "challenge_attestations", json!([10_000]))
        .await
        .unwrap();
    let me = node.peer_id.as_str();
    att.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["dataset"] == dataset && a["challenger"] == me)
        .cloned()
        .collect()
}

async fn lists(node: &vigil_testnet::NodeSpec, rp: &str) -> bool {
    announced(node).await.iter().any(|a| a["replica_root"] == rp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_dataset_is_not_challenged_and_a_withdrawal_voids_no_challenge() {
    let dir = tempfile::tempdir().unwrap();
    // Audits every 2 epochs with a 1.5 s deadline: withdrawal grace 66.6 s.
    let sec = SecurityParams {
        audit_period_epochs: 2,
        audit_deadline_ms: 1_500,
        ..SecurityParams::default()
    };
    let (m, _guard, adv) = honest_and_adversary(dir.path(), 2, sec).await;
    let me = adv.peer_id().to_string();
    let (n0, n1) = (&m.nodes[0], &m.nodes[1]);

    // 1. An honest operator removes a dataset: peers stop challenging it at
    //    once, challenges already sent are answered in the grace, nothing fails.
    let f = dir.path().join("honest.bin");
    std::fs::write(&f, data(3)).unwrap();
    let info = vigilctl(n1, &["storage", "put", f.to_str().unwrap()]);
    let honest = info["replica_root"].as_str().unwrap().to_owned();
    wait_for("node-0 to challenge node-1's dataset", 60, async || {
        outcomes_on(n0, &honest).await.len() >= 3
    })
    .await;
    let r = vigilctl(n1, &["storage", "remove", &honest]);
    assert_eq!(r["removed"], true, "{r}");
    let grace = r["delete_at_ms"].as_u64().unwrap() - r["withdrawn_at_ms"].as_u64().unwrap();
    assert_eq!(grace, 60_000 + 1_500 + 100 + 5_000, "{r}");
    wait_for("node-0 to drop node-1's withdrawn dataset", 20, async || {
        !lists(n0, &honest).await
    })
    .await;
    // The data is kept (and proven) for the grace; deleted after (checked last).
    let folder = n1.dir.join("storage").join(&honest);
    assert!(folder.exists());
    let listed = vigilctl(n1, &["storage", "list"]);
    assert!(listed.to_string().contains("withdrawn_at_ms"), "{listed}");
    let before = outcomes_on(n0, &honest).await.len();
    let h = head(n0).await;
    wait_for("4 more epochs", 30, async || head(n0).await >= h + 4).await;
    let after = outcomes_on(n0, &honest).await;
    assert!(
        after.len() <= before + 1,
        "node-0 went on challenging a withdrawn dataset: {} then {} outcomes",
        before,
        after.len()
    );

    // 2. The adversary announces a dataset, is challenged on it, withdraws
    //    it: no more challenges, no failure; an old announcement replayed
    //    after the withdrawal does not bring it back.
    let r1 = adv.store(data(4));
    let old = adv.announce(r1.root, r1.replica_root, r1.size).await.unwrap();
    let d1 = hex::encode(r1.replica_root);
    wait_for("the adversary to be challenged on its dataset", 60, async || {
        outcomes_on(n0, &d1).await.len() >= 2
    })
    .await;
    adv.withdraw(&r1).await.unwrap();
    for n in [n0, n1] {
        wait_for("the withdrawal to reach every node", 20, async || {
            !lists(n, &d1).await
        })
        .await;
    }
    let before = outcomes_on(n0, &d1).await.len();
    adv.publish(vigil_actors::storage::ANNOUNCE_TOPIC, old)
        .await
        .unwrap();
    // Its second dataset, announced after the replay, shows the replay was
    // handled (gossip from one peer arrives in order).
    let d2 = store_and_announce(n0, &adv, data(5)).await;
    assert!(
        !lists(n0, &d1).await,
        "a replayed announcement undid the withdrawal"
    );
    let h = head(n0).await;
    wait_for("4 more epochs", 30, async || head(n0).await >= h + 4).await;
    let after = outcomes_on(n0, &d1).await;
    assert!(
        after.len() <= before + 1,
        "challenged after its withdrawal: {after:?}"
    );
    assert!(
        after
            .iter()
            .all(|a| a["outcome"] == "ok" || a["outcome"] == "audit_ok"),
        "{after:?}"
    );

    // 3. Now it withdraws whatever it is challenged on and answers `missing`
    //    300 ms later, once the withdrawal reached the challenger: the
    //    challenge was sent before, so it counts.
    let failed = |s: &Value| s["challenges"].as_u64().unwrap_or(0) - s["ok"].as_u64().unwrap_or(0);
    let f0 = failed(&stats_of(n0, &me).await);
    adv.cheat(|c| c.withdraw_when_challenged = true);
    wait_for("a withdrawal made when challenged", 60, async || {
        adv.seen().withdrawals >= 1
    })
    .await;
    wait_for("that challenge to count as failed", 30, async || {
        let s = stats_of(n0, &me).await;
        failed(&s) > f0 || stats_of(n1, &me).await["last_failure"]["dataset"] == d2
    })
    .await;
    let failures: Vec<Value> = [outcomes_on(n0, &d2).await, outcomes_on(n1, &d2).await]
        .concat()
        .into_iter()
        .filter(|a| a["outcome"] != "ok" && a["outcome"] != "audit_ok")
        .collect();
    assert!(!failures.is_empty(), "the dodge voided the challenge");
    assert!(
        failures
            .iter()
            .all(|a| a["outcome"] == "missing" || a["outcome"] == "audit_failed"),
        "{failures:?}"
    );
    // ... though the withdrawal itself took: the dataset is gone from every list.
    for n in [n0, n1] {
        wait_for("the dodged dataset to be withdrawn", 20, async || {
            !lists(n, &d2).await
        })
        .await;
    }

    // 1, ended: node-1's data is deleted once its grace is over, and it
    // never failed a challenge or audit, before or after its withdrawal.
    wait_for("node-1 to delete the data after the grace", 90, async || {
        !folder.exists()
    })
    .await;
    let listed = vigilctl(n1, &["storage", "list"]);
    assert!(!listed.to_string().contains(&honest), "{listed}");
    let s = stats_of(n0, &n1.peer_id).await;
    assert_eq!(s["ok"], s["challenges"], "node-1 failed something: {s}");
    assert!(banned(n0, &n1.peer_id).await.is_none());
    let all = outcomes_on(n0, &honest).await;
    assert!(
        all.iter()
            .all(|a| a["outcome"] == "ok" || a["outcome"] == "audit_ok"),
        "{all:?}"
    );
}
