//! A cheating peer ([`vigil_testnet::adversary`]) against real `vigil run`
//! processes: each test tries one attack over libp2p and checks what an
//! operator of the honest nodes sees — the failure recorded, the score
//! down, the ban persisted, the honest nodes unaffected.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_genesis::SecurityParams;
use vigil_testnet::adversary::{Adversary, AuditAnswer};
use vigil_testnet::{call, up, Manifest, Options};

use super::{quick, wait_for, Guard};

/// A testnet of `n` honest nodes with `security` bounds, and an adversary connected to all of them.
async fn honest_and_adversary(
    dir: &std::path::Path,
    n: usize,
    security: SecurityParams,
) -> (Manifest, Guard, Adversary) {
    let o = Options {
        n,
        vdf_iterations: Some(10_000_000),
        security: Some(security),
        ..quick()
    };
    let (m, _) = up(&dir.join("tn"), &o, Duration::from_secs(60)).await.unwrap();
    let guard = Guard(m.clone());
    let genesis = m.genesis().unwrap();
    let addrs = m.nodes.iter().map(|n| n.p2p_addr.parse().unwrap()).collect();
    let adv = Adversary::join(&genesis, addrs).await.unwrap();
    (m, guard, adv)
}

fn data(seed: u32) -> Vec<u8> {
    (0..300_000u32)
        .map(|x| (x.wrapping_mul(2654435761) >> (seed + 3)) as u8)
        .collect()
}

async fn stats_of(node: &vigil_testnet::NodeSpec, peer: &str) -> Value {
    let st = call(node, "challenge_stats", json!([])).await.unwrap();
    st["peers"][peer].clone()
}

async fn banned(node: &vigil_testnet::NodeSpec, peer: &str) -> Option<Value> {
    let bans = call(node, "net_bans", json!([])).await.ok()?;
    bans.as_array()?.iter().find(|b| b["peer"] == peer).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prover_that_dodges_audits_fails_them_and_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let sec = SecurityParams {
        audit_period_epochs: 2,
        audit_deadline_ms: 1_500,
        ..SecurityParams::default()
    };
    let (m, _guard, adv) = honest_and_adversary(dir.path(), 2, sec).await;
    let me = adv.peer_id().to_string();
    let r = adv.store(data(1));
    adv.announce(r.root, r.replica_root, r.size).await.unwrap();
    // It answers challenges from a real replica, but drops every audit.
    adv.cheat(|c| c.audits = AuditAnswer::Drop);
    let node = &m.nodes[0];
    wait_for("the adversary's challenges to pass", 60, async || {
        stats_of(node, &me).await["ok"].as_u64() >= Some(2)
    })
    .await;
    wait_for("a dropped audit to count as failed", 60, async || {
        stats_of(node, &me).await["outcomes"]["audit_failed"].as_u64() >= Some(1)
    })
    .await;
    let s = stats_of(node, &me).await;
    let why = s["last_failure"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(s["last_failure"]["outcome"], "audit_failed", "{s}");
    assert!(why.contains("no answer"), "{why}");
    // Stalling is no better: the deadline is the verifier's.
    adv.cheat(|c| c.audits = AuditAnswer::Stall);
    wait_for("a stalled audit to time out as failed", 60, async || {
        let s = stats_of(node, &me).await;
        s["last_failure"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("within the 1500 ms audit deadline"))
    })
    .await;
    // The failures are attested with their reason (here and to the other node).
    let att = call(node, "challenge_attestations", json!([10_000]))
        .await
        .unwrap();
    assert!(
        att.as_array().unwrap().iter().any(|a| a["prover"] == me
            && a["outcome"] == "audit_failed"
            && a["detail"].as_str().is_some_and(|d| !d.is_empty())),
        "{att}"
    );
    // Failed audits cost what failed proofs cost: every honest node bans it.
    for node in &m.nodes {
        wait_for("the audit dodger to be banned", 90, async || {
            banned(node, &me).await.is_some()
        })
        .await;
    }
    assert!(adv.seen().audits >= 2, "{:?}", adv.seen());
    // Nothing else suffered: the honest nodes still keep time.
    let h0 = call(&m.nodes[1], "epoch_head", json!([])).await.unwrap()["head"]
        .as_u64()
        .unwrap();
    wait_for("the honest nodes' epochs to go on", 30, async || {
        call(&m.nodes[1], "epoch_head", json!([])).await.unwrap()["head"].as_u64() > Some(h0)
    })
    .await;
}
