//! The epoch anchor against a real anvil: the worker waits until the anchor
//! block is final, every epoch carries that block's hash, a wrong or missing
//! anchor is invalid, and an anchor not yet final here is not held against
//! the sender.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vigil_actors::chain::EvmSource;
use vigil_actors::epoch::{
    self, AcceptError, AnchorError, Anchors, Appended, Chain, EpochSettings, EpochStore, Origin,
};
use vigil_actors::store::{open_node_db, OpenMode, StoreOptions};
use vigil_actors::supervision::WorkerCtx;
use vigil_genesis::{AnchorParams, VdfMode};
use vigil_protocols::epoch::{input, Epoch, EpochError};
use vigil_protocols::vdf::{Vdf, VdfParams};

use crate::chain::{free_port, Anvil};
use crate::util::wait_until;

const GENESIS: [u8; 32] = [0x7a; 32];
const RULE: AnchorParams = AnchorParams {
    chain_id: 31337,
    start_height: 0,
    blocks_per_epoch: 2,
    confirmations: 2,
};

fn params() -> VdfParams {
    VdfParams {
        iterations: 20_000,
        segments: 4,
        mode: VdfMode::Hash,
        memory_mib: 0,
    }
}

fn anchors(port: u16) -> Arc<Anchors> {
    let src = EvmSource::new("anvil", &format!("http://127.0.0.1:{port}"), None, Some(31337)).unwrap();
    Arc::new(Anchors::new(RULE, Arc::new(src)))
}

fn chain(dir: &std::path::Path, name: &str, port: u16) -> Chain {
    let store = open_node_db(
        &dir.join(name),
        vigil_genesis::Genesis::load("dev").unwrap().hash(),
        OpenMode::Create,
        &StoreOptions::default(),
    )
    .unwrap();
    let settings = EpochSettings {
        anchors: Some(anchors(port)),
        ..EpochSettings::default()
    };
    Chain::open(GENESIS, params(), settings, EpochStore::new(store), None, None).unwrap()
}

/// Epoch `n` on `prev` with `anchor`, a valid VDF whatever the anchor.
fn epoch_on(n: u64, prev: &[u8; 32], anchor: &[u8]) -> Epoch {
    let inp = input(&GENESIS, n, prev, anchor);
    Epoch::from_proof(n, anchor.to_vec(), Vdf::new(params(), &inp).unwrap().prove(&inp))
}

async fn block_hash(anvil: &Anvil, height: u64) -> Vec<u8> {
    let b: Value = anvil
        .call(
            "eth_getBlockByNumber",
            vec![json!(format!("0x{height:x}")), json!(false)],
        )
        .await;
    hex::decode(&b["hash"].as_str().unwrap()[2..]).unwrap()
}

async fn mine(anvil: &Anvil, blocks: u64) {
    for _ in 0..blocks {
        anvil.call("evm_mine", vec![]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_carry_the_final_block_of_a_real_anvil_and_nothing_else() {
    let anvil = Anvil::start(free_port(), &[]).await;
    mine(&anvil, 3).await;
    let dir = tempfile::tempdir().unwrap();

    // The worker waits: epoch 1 anchors to block 2, final at head 4; the head is 3.
    let computing = chain(dir.path(), "computing", anvil.port);
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = WorkerCtx::standalone("vdf", stop.clone());
    let c = computing.clone();
    let worker = std::thread::spawn(move || epoch::worker::run(&c, &ctx));
    wait_until("the worker to wait for block 2", 20, || {
        computing
            .status()
            .waiting_for_anchor
            .is_some_and(|w| w.contains("block 2 of chain 31337") && w.contains("head 3"))
    })
    .await;
    assert_eq!(computing.head(), 0);
    assert_eq!(computing.status().anchor_source.as_deref(), Some("anvil"));

    mine(&anvil, 1).await;
    wait_until("epoch 1", 20, || computing.head() >= 1).await;
    let e1 = computing.store().get(1).unwrap().unwrap();
    assert_eq!(e1.anchor, block_hash(&anvil, 2).await);
    // Epoch 2 anchors to block 4, final at head 6.
    wait_until("the worker to wait for block 4", 20, || {
        computing
            .status()
            .waiting_for_anchor
            .is_some_and(|w| w.contains("block 4"))
    })
    .await;

    // A follower accepts epoch 1 and refuses the same VDF work on a wrong or missing anchor.
    let follower = chain(dir.path(), "follower", anvil.port);
    for (wrong, what) in [
        (block_hash(&anvil, 3).await, "block 3"),
        (Vec::new(), "no anchor"),
    ] {
        let forged = epoch_on(1, &GENESIS, &wrong);
        let r = follower
            .accept_bytes(&forged.encode(), Origin::Gossip, None)
            .await;
        assert!(
            matches!(r, Err(AcceptError::Invalid(EpochError::Anchor { .. }))),
            "{what}: {r:?}"
        );
    }
    assert_eq!(follower.head(), 0);
    let r = follower.accept_bytes(&e1.encode(), Origin::Gossip, None).await;
    assert!(matches!(r, Ok(Appended::New)), "{r:?}");

    // Epoch 2 with the right anchor, offered before block 4 is final here: not
    // known yet, so neither accepted nor invalid.
    let e2 = epoch_on(2, &e1.output, &block_hash(&anvil, 4).await);
    let r = follower.accept_bytes(&e2.encode(), Origin::Gossip, None).await;
    assert!(
        matches!(
            r,
            Err(AcceptError::Anchor(AnchorError::NotFinal {
                height: 4,
                head: 4,
                ..
            }))
        ),
        "{r:?}"
    );
    mine(&anvil, 2).await;
    let r = follower.accept_bytes(&e2.encode(), Origin::Gossip, None).await;
    assert!(matches!(r, Ok(Appended::New)), "{r:?}");
    // The worker, meanwhile, computed the same epoch 2 from the same anchor.
    wait_until("the worker's epoch 2", 20, || computing.head() >= 2).await;
    assert_eq!(computing.store().get(2).unwrap().unwrap(), e2);

    stop.store(true, Ordering::Release);
    worker.join().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_on_another_chain_or_down_gives_no_anchor() {
    // anvil on chain 5 while the genesis anchors to 31337.
    let other = Anvil::start(free_port(), &["--chain-id", "5"]).await;
    mine(&other, 5).await;
    let r = anchors(other.port).get(1).await;
    assert!(
        matches!(&r, Err(AnchorError::Source { why, .. }) if why.contains("wrong chain id 5")),
        "{r:?}"
    );
    let down = anchors(free_port()).get(1).await;
    assert!(matches!(down, Err(AnchorError::Source { .. })), "{down:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_syncs_anchored_epochs_up_to_the_last_final_anchor_and_blames_nobody() {
    use crate::epochs::{node_with, params as sync_params, score_of, GENESIS as SYNC_GENESIS};
    let anvil = Anvil::start(free_port(), &[]).await;
    // Head 8: epochs 1..=3 anchor to blocks 2, 4, 6 (final); epoch 4 to block 8 (final at 10).
    mine(&anvil, 8).await;
    let mut prev = SYNC_GENESIS;
    let mut all = Vec::new();
    for n in 1..=4u64 {
        let anchor = block_hash(&anvil, 2 * n).await;
        let inp = input(&SYNC_GENESIS, n, &prev, &anchor);
        let e = Epoch::from_proof(n, anchor, Vdf::new(sync_params(), &inp).unwrap().prove(&inp));
        prev = e.output;
        all.push(e);
    }
    let dir = tempfile::tempdir().unwrap();
    let a = node_with(dir.path(), "a", vec![], Some(EpochSettings::default())).await;
    for e in &all {
        a.chain
            .as_ref()
            .unwrap()
            .append(e.clone(), Origin::Local)
            .unwrap();
    }
    let settings = EpochSettings {
        compute: false,
        sync_batch: 8,
        anchors: Some(anchors(anvil.port)),
        ..EpochSettings::default()
    };
    let boot = a.net.dial_addrs()[0].clone();
    let b = node_with(dir.path(), "b", vec![boot], Some(settings)).await;
    let chain_b = b.chain.clone().unwrap();
    wait_until("the follower to sync epochs 1..=3", 20, || chain_b.head() >= 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(chain_b.head(), 3, "epoch 4's anchor is not final: it must wait");
    assert!(
        score_of(&b, &a).unwrap_or(0.0) >= 0.0,
        "the peer was blamed for our lagging view"
    );
    mine(&anvil, 2).await;
    wait_until("epoch 4 once block 8 is final", 20, || chain_b.head() == 4).await;
    for e in &all {
        assert_eq!(&chain_b.store().get(e.number).unwrap().unwrap(), e);
    }
}
