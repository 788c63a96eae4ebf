//! The epoch chain over real swarms on 127.0.0.1: forged epochs are rejected
//! and their sender scored down until banned; a follower syncs a chain by
//! range and verifies it.

use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use tokio::task::JoinHandle;
use vigil_actors::epoch::{self, Chain, EpochSettings, EpochStore, Origin};
use vigil_actors::net::{NetSettings, Network, ScoreParams};
use vigil_actors::store::{open_node_db, OpenMode, StoreOptions};
use vigil_genesis::VdfMode;
use vigil_protocols::epoch::{input, Epoch};
use vigil_protocols::vdf::{Vdf, VdfParams};

use crate::util::wait_until;

pub const GENESIS: [u8; 32] = [0x61; 32];

pub fn params() -> VdfParams {
    VdfParams {
        iterations: 40_000,
        segments: 8,
        mode: VdfMode::Hash,
        memory_mib: 0,
    }
}

/// Epochs 1..=n of the test genesis.
fn epochs(n: u64) -> Vec<Epoch> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|i| {
            let inp = input(&GENESIS, i, &prev, &[]);
            let e = Epoch::from_proof(i, Vec::new(), Vdf::new(params(), &inp).unwrap().prove(&inp));
            prev = e.output;
            e
        })
        .collect()
}

pub struct Node {
    pub net: Network,
    pub chain: Option<Chain>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A node; with `chain`, an epoch chain (follower) and its task.
async fn node(dir: &Path, name: &str, bootnodes: Vec<Multiaddr>, chain: bool) -> Node {
    let settings = EpochSettings {
        compute: false,
        sync_batch: 4,
        ..EpochSettings::default()
    };
    node_with(dir, name, bootnodes, chain.then_some(settings)).await
}

/// A node; with `chain`, an epoch chain with those settings and its task.
pub async fn node_with(
    dir: &Path,
    name: &str,
    bootnodes: Vec<Multiaddr>,
    chain: Option<EpochSettings>,
) -> Node {
    let g = vigil_genesis::Genesis::load("dev").unwrap();
    let store = open_node_db(
        &dir.join(name),
        g.hash(),
        OpenMode::Create,
        &StoreOptions::default(),
    )
    .unwrap();
    let settings = NetSettings {
        bootnodes,
        reconnect_initial: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(1),
        score: ScoreParams {
            // Three failed proofs (-20 each) ban without an earlier disconnect.
            disconnect_below: -50.0,
            ban_below: -55.0,
            ..ScoreParams::default()
        },
        ..NetSettings::default()
    };
    let net = Network::new(
        Keypair::generate_ed25519(),
        GENESIS,
        settings,
        store.clone(),
        None,
    );
    let mut tasks = vec![net.launch().await.unwrap()];
    let chain = chain.map(|settings| {
        let c = Chain::open(
            GENESIS,
            params(),
            settings,
            EpochStore::new(store),
            Some(net.clone()),
            None,
        )
        .unwrap();
        tasks.push(epoch::service::spawn(c.clone()));
        c
    });
    Node { net, chain, tasks }
}

pub fn score_of(at: &Node, of: &Node) -> Option<f64> {
    let id = of.net.peer_id().to_string();
    at.net
        .peers()
        .into_iter()
        .find(|p| p.peer_id == id)
        .map(|p| p.score)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_epochs_are_rejected_and_their_sender_banned() {
    let dir = tempfile::tempdir().unwrap();
    let honest = node(dir.path(), "honest", vec![], true).await;
    let boot = honest.net.dial_addrs()[0].clone();
    let forger = node(dir.path(), "forger", vec![boot.clone()], false).await;
    let chain = honest.chain.clone().unwrap();
    wait_until("the forger to connect", 20, || {
        score_of(&honest, &forger).is_some()
    })
    .await;

    let good = epochs(1).remove(0);
    let mut wrong_output = good.clone();
    wrong_output.output[0] ^= 1;
    let mut tampered = good.clone();
    tampered.checkpoints[3][17] ^= 0x80;
    // A genuine proof, but for another input (built on the wrong predecessor).
    let other = input(&GENESIS, 1, &[0; 32], &[]);
    let wrong_input = Epoch::from_proof(1, Vec::new(), Vdf::new(params(), &other).unwrap().prove(&other));

    let forgeries = [
        ("wrong output", wrong_output),
        ("tampered checkpoint", tampered),
        ("wrong input", wrong_input),
    ];
    for (i, (what, forged)) in forgeries.into_iter().enumerate() {
        let expected = -20.0 * (i as f64 + 1.0) + 1.0;
        let t0 = Instant::now();
        // Gossip needs the mesh: publish again until the honest node has judged it.
        loop {
            forger.net.publish_epoch(forged.encode()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let banned = honest
                .net
                .bans()
                .unwrap()
                .iter()
                .any(|b| b.peer == forger.net.peer_id().to_string());
            if banned || score_of(&honest, &forger).is_some_and(|s| s <= expected) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the {what} forgery was never judged"
            );
        }
        assert_eq!(chain.head(), 0, "the {what} forgery was not appended");
    }
    wait_until("the forger to be banned", 10, || {
        honest
            .net
            .bans()
            .unwrap()
            .iter()
            .any(|b| b.peer == forger.net.peer_id().to_string())
    })
    .await;

    // An honest peer's valid epoch is adopted.
    let friend = node(dir.path(), "friend", vec![boot], false).await;
    wait_until("the friend to connect", 20, || {
        score_of(&honest, &friend).is_some()
    })
    .await;
    let t0 = Instant::now();
    while chain.head() == 0 {
        friend.net.publish_epoch(good.encode()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the valid epoch was never adopted"
        );
    }
    assert_eq!(chain.store().get(1).unwrap().unwrap(), good);
    assert!(
        score_of(&honest, &friend).unwrap() > 0.0,
        "a valid epoch raises the score"
    );
    // Both nodes noted the message under one key: published by the friend,
    // then received by the honest node (propagation figures use this).
    let sent = friend.net.gossip_seen(0);
    let got = honest.net.gossip_seen(0);
    let own = sent
        .iter()
        .find(|g| g.own && g.topic == "epochs")
        .expect("the friend's publish is noted");
    let recv = got
        .iter()
        .find(|g| g.key == own.key)
        .expect("the honest node noted the same message");
    assert!(!recv.own && recv.topic == "epochs" && recv.at_us >= own.at_us);
    assert!(honest
        .net
        .gossip_seen(recv.at_us + 1)
        .iter()
        .all(|g| g.at_us > recv.at_us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_syncs_the_chain_by_range_and_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "a", vec![], true).await;
    let chain_a = a.chain.clone().unwrap();
    let all = epochs(20);
    for e in &all {
        chain_a.append(e.clone(), Origin::Local).unwrap();
    }
    let boot = a.net.dial_addrs()[0].clone();
    let b = node(dir.path(), "b", vec![boot.clone()], true).await;
    let c = node(dir.path(), "c", vec![boot], true).await;
    let (chain_b, chain_c) = (b.chain.clone().unwrap(), c.chain.clone().unwrap());
    wait_until("both followers to sync 20 epochs", 30, || {
        chain_b.head() == 20 && chain_c.head() == 20
    })
    .await;
    for (i, e) in all.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(&chain_b.store().get(n).unwrap().unwrap(), e);
        assert_eq!(&chain_c.store().get(n).unwrap().unwrap(), e);
    }
    assert!(chain_b.synced() && chain_c.synced());
    assert_eq!(chain_b.best_peer_head(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computing_node_adopts_a_peer_epoch_and_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    // About 1.5 s per epoch: the peer's epoch lands while ours is in progress.
    let slow = VdfParams {
        iterations: 30_000_000,
        segments: 30,
        mode: VdfMode::Hash,
        memory_mib: 0,
    };
    let inp = input(&GENESIS, 1, &GENESIS, &[]);
    let theirs = Epoch::from_proof(1, Vec::new(), Vdf::new(slow, &inp).unwrap().prove(&inp));
    // Sampled verification keeps the adoption quick beside the busy worker.
    let settings = EpochSettings {
        verify: epoch::VerifyMode::Sampled(4),
        ..EpochSettings::default()
    };
    let (chain, worker) = computing(dir.path(), slow, settings);
    wait_until("the worker to start epoch 1", 10, || {
        let s = chain.status();
        s.computing == 1 && s.segments_done >= 1
    })
    .await;
    let c = chain.clone();
    let r = tokio::task::spawn_blocking(move || c.accept(theirs, Origin::Gossip, &[], None))
        .await
        .unwrap();
    // New, not Duplicate: the worker had not finished epoch 1 itself.
    assert!(matches!(r, Ok(epoch::Appended::New)), "{r:?}");
    // The worker drops epoch 1 at once (it looks every 2^20 steps) and starts epoch 2.
    let t0 = Instant::now();
    wait_until("the worker to move to epoch 2", 5, || {
        chain.status().computing == 2
    })
    .await;
    eprintln!("worker moved on {:?} after the adoption", t0.elapsed());
    worker.stop();
    assert_eq!(chain.head(), 1);
}

/// A VDF worker on its own thread; [`Worker::stop`] asks it to stop and
/// joins it (it must end cleanly).
struct Worker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl Worker {
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.join().unwrap().unwrap();
    }
}

/// A chain with no network in `dir` and its VDF worker, started.
fn computing(dir: &Path, params: VdfParams, settings: EpochSettings) -> (Chain, Worker) {
    let g = vigil_genesis::Genesis::load("dev").unwrap();
    let store = open_node_db(
        &dir.join("n"),
        g.hash(),
        OpenMode::Create,
        &StoreOptions::default(),
    )
    .unwrap();
    let chain = Chain::open(GENESIS, params, settings, EpochStore::new(store), None, None).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ctx = vigil_actors::supervision::WorkerCtx::standalone("vdf", stop.clone());
    let c = chain.clone();
    let thread = std::thread::spawn(move || epoch::worker::run(&c, &ctx));
    (chain, Worker { stop, thread })
}

#[tokio::test]
async fn a_paced_worker_starts_epochs_no_sooner_than_min_epoch_apart_and_stops_while_waiting() {
    let dir = tempfile::tempdir().unwrap();
    // Epochs of a few milliseconds: back to back, three would take ~10 ms.
    let min_epoch = Duration::from_millis(400);
    let settings = EpochSettings {
        min_epoch,
        ..EpochSettings::default()
    };
    let t0 = Instant::now();
    let (chain, worker) = computing(dir.path(), params(), settings);
    let mut seen = vec![];
    while chain.head() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "head {} after 20 s",
            chain.head()
        );
        if chain.head() as usize > seen.len() {
            seen.push(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen.push(t0.elapsed());
    // Each epoch starts at least min_epoch after the one before (less the
    // 5 ms polling here); the first is not held back.
    assert!(seen[0] < min_epoch, "epoch 1 came after {:?}", seen[0]);
    for w in seen.windows(2).take(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= min_epoch - Duration::from_millis(20),
            "epochs {gap:?} apart: {seen:?}"
        );
    }
    // Asked to stop while it waits out the pace, it stops at once.
    let t1 = Instant::now();
    worker.stop();
    assert!(
        t1.elapsed() < Duration::from_millis(300),
        "stopped after {:?}",
        t1.elapsed()
    );
    assert!(chain.head() <= 4);
}
