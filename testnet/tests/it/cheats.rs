//! A cheating peer ([`vigil_testnet::adversary`]) against real `vigil run`
//! processes: each test tries one attack over libp2p and checks what an
//! operator of the honest nodes sees — the failure recorded, the score
//! down, the ban persisted, the honest nodes unaffected.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_genesis::SecurityParams;
use vigil_protocols::epoch::Epoch;
use vigil_protocols::vdf::{Vdf, VdfParams};
use vigil_testnet::adversary::{Adversary, AuditAnswer, ContinuityCheat};
use vigil_testnet::{call, up, Manifest, Options};

use super::{quick, wait_for, Guard};

/// A testnet of `n` honest nodes with `security` bounds, and an adversary connected to all of them.
pub(super) async fn honest_and_adversary(
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

pub(super) fn data(seed: u32) -> Vec<u8> {
    (0..300_000u32)
        .map(|x| (x.wrapping_mul(2654435761) >> (seed + 3)) as u8)
        .collect()
}

pub(super) async fn stats_of(node: &vigil_testnet::NodeSpec, peer: &str) -> Value {
    let st = call(node, "challenge_stats", json!([])).await.unwrap();
    st["peers"][peer].clone()
}

pub(super) async fn banned(node: &vigil_testnet::NodeSpec, peer: &str) -> Option<Value> {
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

/// The datasets `node` took from announcements.
pub(super) async fn announced(node: &vigil_testnet::NodeSpec) -> Vec<Value> {
    call(node, "storage_announced", json!([]))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub(super) fn log_of(node: &vigil_testnet::NodeSpec) -> String {
    std::fs::read_to_string(node.dir.join("node.log")).unwrap_or_default()
}

pub(super) fn node_log_has(node: &vigil_testnet::NodeSpec, what: &str) -> bool {
    log_of(node).contains(what)
}

fn root(hex_root: &str) -> [u8; 32] {
    hex::decode(hex_root).unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_copy_cannot_pass_for_several_identities() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _guard, adv) = honest_and_adversary(dir.path(), 2, SecurityParams::default()).await;
    let me = adv.peer_id().to_string();
    // node-1 stores a dataset; node-0 learns it.
    let f = dir.path().join("honest.bin");
    std::fs::write(&f, data(5)).unwrap();
    let info = super::vigilctl(&m.nodes[1], &["storage", "put", f.to_str().unwrap()]);
    let (honest_root, honest_replica) = (
        info["root"].as_str().unwrap().to_owned(),
        info["replica_root"].as_str().unwrap().to_owned(),
    );
    wait_for("node-0 to learn node-1's dataset", 40, async || {
        announced(&m.nodes[0])
            .await
            .iter()
            .any(|a| a["replica_root"] == honest_replica)
    })
    .await;
    // The adversary keeps one plaintext and calls it its replica (R_p = R),
    // then claims node-1's replica as its own: three times each.
    let r = adv.store(data(6));
    for _ in 0..3 {
        adv.announce(r.root, r.root, r.size).await.unwrap();
        adv.announce(root(&honest_root), root(&honest_replica), r.size)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let node = &m.nodes[0];
    wait_for("both refusals in node-0's log", 30, async || {
        let log = log_of(node);
        log.contains("replica root equals its plaintext root") && log.contains("announced first by")
    })
    .await;
    assert!(
        !announced(node).await.iter().any(|a| a["peer"] == me),
        "an announcement of the adversary was taken: {:?}",
        announced(node).await
    );
    // Each refusal costs it score: an adversary that keeps trying (as a node
    // re-announces) is banned by every honest node.
    for n in &m.nodes {
        wait_for("the copier to be banned", 60, async || {
            let _ = adv.announce(r.root, r.root, r.size).await;
            banned(n, &me).await.is_some()
        })
        .await;
        let ban = banned(n, &me).await.unwrap();
        assert!(
            ban["reason"].as_str().unwrap().contains("invalid_gossip"),
            "{ban}"
        );
    }
    // node-1's own dataset is still what node-0 challenges it on.
    let held = announced(node).await;
    assert!(
        held.iter()
            .any(|a| a["peer"] == m.nodes[1].peer_id && a["replica_root"] == honest_replica),
        "{held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_pongs_do_not_stretch_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _guard, adv) = honest_and_adversary(dir.path(), 2, SecurityParams::default()).await;
    let me = adv.peer_id().to_string();
    // Pongs 2 s late, proofs correct but 1.2 s late: the deadline is 500 ms,
    // and a deadline stretched by the prover's own ping would let them pass.
    adv.cheat(|c| {
        c.pong_delay = Duration::from_secs(2);
        c.challenge_delay = Duration::from_millis(1_200);
    });
    let r = adv.store(data(7));
    adv.announce(r.root, r.replica_root, r.size).await.unwrap();
    // An honest prover next to it, to show honest challenges are unaffected.
    let f = dir.path().join("honest.bin");
    std::fs::write(&f, data(8)).unwrap();
    super::vigilctl(&m.nodes[1], &["storage", "put", f.to_str().unwrap()]);
    let node = &m.nodes[0];
    // Late proofs, once a (delayed) ping to it has been measured: pings run
    // on their own timer, so the first challenges may come before any.
    wait_for(
        "the adversary's late proofs, with its slow ping",
        60,
        async || {
            let s = stats_of(node, &me).await;
            s["outcomes"]["late"].as_u64() >= Some(2) && s["last_failure"]["ping_ms"].as_f64().is_some()
        },
    )
    .await;
    let s = stats_of(node, &me).await;
    let last = &s["last_failure"];
    assert_eq!(last["outcome"], "late", "{s}");
    assert!(
        last["ping_ms"].as_f64() >= Some(2_000.0),
        "the pongs were not delayed: {s}"
    );
    assert!(last["latency_ms"].as_f64() >= Some(1_200.0), "{s}");
    assert!(
        last["allowance_ms"].as_f64() <= Some(100.0),
        "allowance over the genesis cap: {s}"
    );
    assert!(s["outcomes"]["ok"].is_null(), "a delayed proof passed: {s}");
    // A round is scored once all its challenges are in, after the stats
    // above: its penalty (-5) outweighs what the status handshake and a few
    // relayed gossip messages earned (+1, +0.2 each).
    wait_for("late proofs to cost the adversary score", 30, async || {
        let peers = call(node, "net_peers", json!([])).await.unwrap();
        match peers.as_array().unwrap().iter().find(|p| p["peer_id"] == me) {
            Some(p) => p["score"].as_f64() < Some(0.0),
            None => banned(node, &me).await.is_some(),
        }
    })
    .await;
    // node-1 answers in time and passes every challenge.
    let honest = &m.nodes[1].peer_id;
    wait_for("node-0's challenges of node-1", 60, async || {
        stats_of(node, honest).await["ok"].as_u64() >= Some(5)
    })
    .await;
    let h = stats_of(node, honest).await;
    assert_eq!(h["success_rate"], 1.0, "{h}");
    // Late every epoch, the adversary is banned by both nodes.
    for n in &m.nodes {
        wait_for("the late prover to be banned", 120, async || {
            banned(n, &me).await.is_some()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_head_claim_freezes_nothing_and_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _guard, adv) = honest_and_adversary(dir.path(), 2, SecurityParams::default()).await;
    let me = adv.peer_id().to_string();
    let f = dir.path().join("honest.bin");
    std::fs::write(&f, data(9)).unwrap();
    super::vigilctl(&m.nodes[1], &["storage", "put", f.to_str().unwrap()]);
    let honest = m.nodes[1].peer_id.clone();
    wait_for("node-0's first challenges of node-1", 60, async || {
        stats_of(&m.nodes[0], &honest).await["ok"].as_u64() >= Some(1)
    })
    .await;
    // The adversary now says its head is u64::MAX, in every status and sync
    // answer, and never answers the sync requests that would check it.
    adv.cheat(|c| {
        c.claimed_head = Some(u64::MAX);
        c.stall_sync = true;
    });
    let ok_before = stats_of(&m.nodes[0], &honest).await["ok"].as_u64().unwrap();
    let head_before = call(&m.nodes[0], "epoch_head", json!([])).await.unwrap()["head"]
        .as_u64()
        .unwrap();
    // A follower may trail the newest epoch for a moment on two busy cores;
    // the lie must never hold a node out of sync (it would: for good).
    let t0 = std::time::Instant::now();
    let mut samples = 0;
    let mut unready_since: Vec<Option<std::time::Instant>> = vec![None; m.nodes.len()];
    while banned(&m.nodes[0], &me).await.is_none() || banned(&m.nodes[1], &me).await.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(150),
            "the liar was not banned: {:?}",
            adv.seen()
        );
        adv.tell_status().await;
        for (i, node) in m.nodes.iter().enumerate() {
            let h = call(node, "node_health", json!([])).await.unwrap();
            let v = call(node, "vdf_status", json!([])).await.unwrap();
            assert!(
                v["best_peer_head"].as_u64() < Some(1 << 40),
                "{}: the lie counted: {v}",
                node.name
            );
            if h["ready"] == true {
                unready_since[i] = None;
            } else {
                let since = *unready_since[i].get_or_insert_with(std::time::Instant::now);
                assert!(
                    since.elapsed() < Duration::from_secs(3),
                    "{}: /ready held at 503 by the lie: {h} {v}",
                    node.name
                );
            }
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        adv.seen().head_claims >= 2,
        "the lie was never told: {:?}",
        adv.seen()
    );
    assert!(node_log_has(&m.nodes[0], "claimed head not backed"));
    assert!(samples >= 3, "banned before the lie could be observed");
    for n in &m.nodes {
        let ban = banned(n, &me).await.unwrap();
        assert!(
            ban["reason"].as_str().unwrap().contains("unbacked_claim"),
            "{ban}"
        );
    }
    // The clock and the challenges went on throughout.
    wait_for("epochs and challenges to go on", 60, async || {
        let head = call(&m.nodes[0], "epoch_head", json!([])).await.unwrap()["head"]
            .as_u64()
            .unwrap();
        let ok = stats_of(&m.nodes[0], &honest).await["ok"].as_u64().unwrap();
        head > head_before + 2 && ok > ok_before + 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuity_proof_for_a_smaller_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _guard, adv) = honest_and_adversary(dir.path(), 2, SecurityParams::default()).await;
    let me = adv.peer_id().to_string();
    let node = &m.nodes[0];
    let rp = store_and_announce(node, &adv, data(10)).await;
    wait_for("a few epochs", 40, async || {
        call(node, "epoch_head", json!([])).await.unwrap()["head"].as_u64() >= Some(2)
    })
    .await;
    // In the honest shape (its chain kept and its root gossiped each epoch), its proof checks out.
    let e = honest_link_checked(node, &adv, &rp).await;
    // Now it answers for an 8 KiB prefix, a tree of its choosing.
    adv.cheat(|c| c.continuity_size = Some(8192));
    let c = call(node, "continuity_check", json!([me, rp, e])).await.unwrap();
    assert_eq!(c["verified"], false, "{c}");
    let why = c["error"].as_str().unwrap();
    assert!(
        why.contains("answers for a 8192-byte dataset; it is 300000 bytes"),
        "not refused for its size: {why}"
    );
}

/// The adversary stores `plain` and announces it; returns its `R_p` (hex) once `node` took it.
pub(super) async fn store_and_announce(
    node: &vigil_testnet::NodeSpec,
    adv: &Adversary,
    plain: Vec<u8>,
) -> String {
    let me = adv.peer_id().to_string();
    let r = adv.store(plain);
    adv.announce(r.root, r.replica_root, r.size).await.unwrap();
    let rp = hex::encode(r.replica_root);
    wait_for("node-0 to take the adversary's announcement", 40, async || {
        announced(node)
            .await
            .iter()
            .any(|a| a["peer"] == me && a["replica_root"] == rp)
    })
    .await;
    rp
}

/// `continuity_check` of `node` on the adversary's chain of `rp` over `from..=to`.
async fn check(node: &vigil_testnet::NodeSpec, adv: &Adversary, rp: &str, from: u64, to: u64) -> Value {
    let me = adv.peer_id().to_string();
    call(node, "continuity_check", json!([me, rp, from, to]))
        .await
        .unwrap()
}

/// Waits until `node` holds an epoch the adversary linked (and committed),
/// after its first, and its proof there verifies with the link before it;
/// returns that epoch.
async fn honest_link_checked(node: &vigil_testnet::NodeSpec, adv: &Adversary, rp: &str) -> u64 {
    let mut at = 0;
    wait_for("the adversary's honest chain to check out", 60, async || {
        let head = call(node, "epoch_head", json!([])).await.unwrap()["head"]
            .as_u64()
            .unwrap_or(0);
        let kept = adv.continuity_epochs();
        let Some(e) = kept
            .iter()
            .rev()
            .copied()
            .find(|e| *e <= head && kept.contains(&(e - 1)))
        else {
            return false;
        };
        at = e;
        check(node, adv, rp, e, e).await["verified"] == true
    })
    .await;
    at
}

pub(super) async fn score_of(node: &vigil_testnet::NodeSpec, peer: &str) -> Option<f64> {
    let peers = call(node, "net_peers", json!([])).await.ok()?;
    peers.as_array()?.iter().find(|p| p["peer_id"] == peer)?["score"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuity_computed_after_the_fact_or_uncommitted_is_a_break() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _guard, adv) = honest_and_adversary(dir.path(), 2, SecurityParams::default()).await;
    let me = adv.peer_id().to_string();
    let node = &m.nodes[0];
    let rp = store_and_announce(node, &adv, data(11)).await;
    // Honest: each link extends the one committed the epoch before, under the root gossiped then.
    let e = honest_link_checked(node, &adv, &rp).await;
    let first = adv.continuity_epochs()[0];
    let c = check(node, &adv, &rp, first.max(e.saturating_sub(3)), e).await;
    assert_eq!(c["verified"], true, "{c}");
    assert!(c["epochs_verified"].as_u64() >= Some(2), "{c}");
    let before = score_of(node, &me).await.unwrap();

    // After the fact: the links and a fresh root computed now, as a prover
    // that fetched the data today would make them. Everything in the proof is
    // consistent, only it is not what the prover committed at that epoch.
    adv.cheat(|c| c.continuity = ContinuityCheat::AfterTheFact);
    let c = check(node, &adv, &rp, e, e).await;
    assert_eq!(c["verified"], false, "{c}");
    let why = c["error"].as_str().unwrap();
    assert!(
        why.contains("it gossiped at that epoch: the link was not committed when the epoch came"),
        "not refused against its commitment: {why}"
    );
    assert_eq!(c["break_epoch"], e, "{c}");
    // The penalty (-20) reaches the swarm's score table a moment later;
    // honest challenges meanwhile may earn back a point or two.
    wait_for("the break to be scored as a failed proof", 10, async || {
        score_of(node, &me)
            .await
            .is_some_and(|after| after <= before - 15.0)
    })
    .await;
    assert!(node_log_has(node, "continuity chain broken"), "no warn line");

    // Silent: it keeps its links but commits to none of them.
    adv.cheat(|c| c.continuity = ContinuityCheat::Silent);
    let silent_from = adv.continuity_epochs().last().copied().unwrap() + 1;
    let mut s = 0;
    wait_for("an epoch it linked without committing", 60, async || {
        let head = call(node, "epoch_head", json!([])).await.unwrap()["head"]
            .as_u64()
            .unwrap_or(0);
        match adv
            .continuity_epochs()
            .into_iter()
            .find(|x| *x >= silent_from && *x <= head)
        {
            Some(x) => {
                s = x;
                true
            }
            None => false,
        }
    })
    .await;
    let c = check(node, &adv, &rp, s, s).await;
    assert_eq!(c["verified"], false, "{c}");
    let why = c["error"].as_str().unwrap();
    assert!(
        why.contains("reached this node"),
        "not a missing commitment: {why}"
    );
    // Checked link by link from the last honest epoch, the break is where the commitments stop.
    let c = check(node, &adv, &rp, silent_from - 1, s).await;
    assert_eq!(c["verified"], false, "{c}");
    assert_eq!(c["break_epoch"], silent_from, "{c}");

    // Late: each root gossiped only 4 epochs after its epoch.
    adv.cheat(|c| c.continuity = ContinuityCheat::Late);
    let late_from = adv.continuity_epochs().last().copied().unwrap() + 1;
    let gossiped = adv.seen().roots_gossiped;
    wait_for("a late root to go out", 90, async || {
        adv.seen().roots_gossiped > gossiped
    })
    .await;
    let mut c = Value::Null;
    wait_for("node-0 to hold the late root", 20, async || {
        c = check(node, &adv, &rp, late_from, late_from).await;
        c["error"]
            .as_str()
            .is_some_and(|e| !e.contains("no continuity root of this peer"))
    })
    .await;
    assert_eq!(c["verified"], false, "{c}");
    let why = c["error"].as_str().unwrap();
    assert!(
        why.contains("epochs late: a late commitment is a break"),
        "not late: {why}"
    );
}

/// Epoch `n` on top of `prev_output`, computed honestly (the adversary can
/// run the VDF like anyone).
pub(super) fn compute_epoch(genesis: &vigil_genesis::Genesis, n: u64, prev_output: &[u8; 32]) -> Epoch {
    let params = VdfParams::from_genesis(&genesis.params);
    let input = vigil_protocols::epoch::input(&genesis.hash().0, n, prev_output, &[]);
    let proof = Vdf::new(params, &input).unwrap().prove(&input);
    Epoch::from_proof(n, Vec::new(), proof)
}

/// Two nodes and no honest timelord (epochs come from the test); node-1
/// verifies by sampling 2 of 32 segments.
pub(super) async fn full_and_sampling_nodes(dir: &std::path::Path) -> (Manifest, Guard) {
    let o = Options {
        n: 2,
        timelords: 0,
        vdf_iterations: Some(10_000_000),
        ..quick()
    };
    let m = vigil_testnet::create(&dir.join("tn"), &o).unwrap();
    let guard = Guard(m.clone());
    let cfg = m.nodes[1].dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap() + "verify = \"sampled\"\nsamples = 2\n";
    std::fs::write(&cfg, text).unwrap();
    for node in &m.nodes {
        vigil_testnet::start_node(&m, node).unwrap();
    }
    vigil_testnet::wait_peers(&m, 1, Duration::from_secs(60))
        .await
        .unwrap();
    (m, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_epochs_are_rejected_cheaply_and_their_sender_banned() {
    let dir = tempfile::tempdir().unwrap();
    // The adversary is the only source of epochs; node-1 samples.
    let (m, _guard) = full_and_sampling_nodes(dir.path()).await;
    let genesis = m.genesis().unwrap();
    let addrs = m.nodes.iter().map(|n| n.p2p_addr.parse().unwrap()).collect();
    let adv = Adversary::join(&genesis, addrs).await.unwrap();
    let me = adv.peer_id().to_string();
    let v = call(&m.nodes[1], "vdf_status", json!([])).await.unwrap();
    assert_eq!(v["verify"]["sampled"], 2, "node-1 does not sample: {v}");
    // An honest epoch 1 from it is taken by both.
    let e1 = compute_epoch(&genesis, 1, &genesis.hash().0);
    adv.publish("epochs", e1.encode()).await.unwrap();
    for node in &m.nodes {
        wait_for("the honest epoch 1", 30, async || {
            call(node, "epoch_head", json!([])).await.unwrap()["head"].as_u64() == Some(1)
        })
        .await;
    }
    // Epoch 2, correct in every segment but the one producing the output:
    // sampling 2 of 32 segments used to miss that about 94% of the time.
    let honest2 = compute_epoch(&genesis, 2, &e1.output);
    let mut last_wrong = honest2.clone();
    last_wrong.output[0] ^= 1;
    adv.publish("epochs", last_wrong.encode()).await.unwrap();
    // And garbage in every segment: rejected at the first one it checks.
    let mut garbage = honest2.clone();
    for c in garbage.checkpoints.iter_mut() {
        c[0] ^= 0x55;
    }
    garbage.output[1] ^= 1;
    adv.publish("epochs", garbage.encode()).await.unwrap();
    // The same forgery again: refused by its hash, unverified.
    adv.publish("epochs", last_wrong.encode()).await.unwrap();
    for node in &m.nodes {
        wait_for("the forger to be banned", 30, async || {
            banned(node, &me).await.is_some()
        })
        .await;
        let head = call(node, "epoch_head", json!([])).await.unwrap()["head"].as_u64();
        assert_eq!(head, Some(1), "{}: a forged epoch was appended", node.name);
        let text = super::fetch_metrics(node).await;
        assert!(
            super::metric(&text, "vigil_epoch_rejected_total{reason=\"invalid\"}") >= 1.0,
            "{}: {text}",
            node.name
        );
    }
    let log = log_of(&m.nodes[1]);
    assert!(
        log.contains("does not reach its output"),
        "node-1 did not check the output segment"
    );
    // The honest epoch 2, from anyone, is still taken.
    let n1_addr: libp2p::Multiaddr = m.nodes[1].p2p_addr.parse().unwrap();
    let honest = Adversary::join(&genesis, vec![n1_addr]).await.unwrap();
    honest.publish("epochs", honest2.encode()).await.unwrap();
    for node in &m.nodes {
        wait_for("the honest epoch 2", 30, async || {
            call(node, "epoch_head", json!([])).await.unwrap()["head"].as_u64() == Some(2)
        })
        .await;
    }
}
