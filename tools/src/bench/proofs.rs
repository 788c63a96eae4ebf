//! Availability figures, side by side in one run: tree hashing against the
//! blake3 crate's own single-thread hash of the same bytes, the encoding's
//! cost per MiB (dev and testnet presets), prove and verify per chunk, the
//! challenge round trip between two real swarms on loopback, proof sizes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libp2p::identity::Keypair;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use vigil_actors::challenge::{ChallengeSettings, Challenger};
use vigil_actors::epoch::{Chain, EpochSettings, EpochStore, Origin};
use vigil_actors::net::codec::Frame;
use vigil_actors::net::{NetSettings, Network};
use vigil_actors::storage::Storage;
use vigil_genesis::{Preset, VdfMode};
use vigil_protocols::availability::challenge::{
    derive_indices, proof_bytes, prove_leaf, verify, ChallengeRequest, Outcome, Request,
};
use vigil_protocols::availability::encode::keystream;
use vigil_protocols::availability::tree::{leaves, verify_leaf, Tree, GROUP, LEAF};
use vigil_protocols::epoch::Epoch;
use vigil_protocols::vdf::{Vdf, VdfParams};

use super::{median, Percentiles};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// MiB hashed for the throughput comparison.
    pub hash_mib: usize,
    /// Challenge round trips timed.
    pub round_trips: usize,
    /// Leaves per challenge in the round trips.
    pub chunks: usize,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `blake3::hash`, one thread, MiB/s.
    pub blake3_mib_s: f64,
    /// `Tree::build` (8-leaf groups on rayon's pool), MiB/s.
    pub tree_mib_s: f64,
    /// tree / blake3.
    pub tree_vs_blake3: f64,
    /// Rayon threads.
    pub threads: usize,
    /// Encoding one 1 MiB sector, dev preset, ms.
    pub encode_ms_per_mib_dev: f64,
    /// Encoding one 1 MiB sector, testnet preset (= a lazy prover's cost per challenge), ms.
    pub encode_ms_per_mib_testnet: f64,
    /// Testnet response deadline, ms.
    pub deadline_ms: u64,
    /// Proving one chunk (group read from memory, rehash of its 8 KiB group), µs.
    pub prove_us: f64,
    /// Verifying one chunk proof, µs.
    pub verify_us: f64,
    /// Challenge round trips (`chunks` leaves each) between two swarms on loopback.
    pub round_trip: Percentiles,
    /// Proof bytes per chunk: (dataset bytes, proof bytes).
    pub proof_bytes: Vec<(u64, usize)>,
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// Runs every measurement.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    progress("tree hashing vs blake3::hash (same bytes, alternating rounds)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let data: Vec<u8> = (0..o.hash_mib << 20).map(|_| rng.gen()).collect();
    let (mut b3, mut tree) = (Vec::new(), Vec::new());
    let mut built = None;
    for _ in 0..5 {
        let (h, d) = timed(|| blake3::hash(&data));
        b3.push(o.hash_mib as f64 / d.as_secs_f64());
        let (t, d) = timed(|| Tree::build(&data));
        tree.push(o.hash_mib as f64 / d.as_secs_f64());
        anyhow::ensure!(
            t.root(&data[..GROUP * LEAF]) == *h.as_bytes(),
            "tree root differs from blake3"
        );
        built = Some(t);
    }
    let built = built.context("five rounds ran")?;
    let (blake3_mib_s, tree_mib_s) = (median(b3), median(tree));

    progress("encoding cost per 1 MiB sector (dev, testnet)");
    let dev = Preset::Dev.genesis()?.params;
    let testnet = Preset::Testnet.genesis()?.params;
    let dev_ms: Vec<f64> = (0..5)
        .map(|s| {
            timed(|| keystream(b"bench", &[1; 32], s, dev.encoding_cost))
                .1
                .as_secs_f64()
                * 1e3
        })
        .collect();
    let (_, tn) = timed(|| keystream(b"bench", &[1; 32], 0, testnet.encoding_cost));

    progress("prove and verify per chunk");
    let size = data.len() as u64;
    let root = built.root(&data[..GROUP * LEAF]);
    let n = leaves(size);
    let idx: Vec<u64> = (0..10_000).map(|_| rng.gen_range(0..n)).collect();
    let nonce = [7u8; 32];
    let (proofs, dp) = timed(|| {
        idx.iter()
            .map(|&i| {
                let s = i as usize / GROUP * GROUP * LEAF;
                prove_leaf(
                    &built,
                    i,
                    &data[s..(s + GROUP * LEAF).min(data.len())],
                    Some(&nonce),
                )
            })
            .collect::<Vec<_>>()
    });
    let (ok, dv) = timed(|| {
        proofs
            .iter()
            .all(|p| verify_leaf(&root, size, p.index, &p.leaf, &p.siblings).is_ok())
    });
    anyhow::ensure!(ok, "a proof did not verify");

    progress("challenge round trips between two swarms on 127.0.0.1");
    let round_trip = round_trips(o)?;
    Ok(Report {
        blake3_mib_s,
        tree_mib_s,
        tree_vs_blake3: tree_mib_s / blake3_mib_s,
        threads: rayon::current_num_threads(),
        encode_ms_per_mib_dev: median(dev_ms),
        encode_ms_per_mib_testnet: tn.as_secs_f64() * 1e3,
        deadline_ms: testnet.response_deadline_ms.into(),
        prove_us: dp.as_secs_f64() * 1e6 / idx.len() as f64,
        verify_us: dv.as_secs_f64() * 1e6 / idx.len() as f64,
        round_trip,
        proof_bytes: [1u64 << 20, 1 << 30, 1 << 40]
            .iter()
            .map(|&s| (s, proof_bytes(s)))
            .collect(),
    })
}

fn round_trips(o: &Options) -> Result<Percentiles> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let genesis = [0x42u8; 32];
        let params = VdfParams {
            iterations: 10_000,
            segments: 4,
            mode: VdfMode::Hash,
            memory_mib: 0,
        };
        let mut nodes = Vec::new();
        let mut boot = Vec::new();
        for name in ["prover", "challenger"] {
            let db = super::dev_db(&dir.path().join(name))?;
            let key = Keypair::generate_ed25519();
            let settings = NetSettings {
                bootnodes: boot.clone(),
                ..NetSettings::default()
            };
            let net = Network::new(key.clone(), genesis, settings, db.clone(), None);
            let task = net.launch().await?;
            boot = net.dial_addrs();
            let es = EpochSettings {
                compute: false,
                ..EpochSettings::default()
            };
            let chain = Chain::open(
                genesis,
                params,
                es,
                EpochStore::new(db.clone()),
                Some(net.clone()),
                None,
            )?;
            let storage = Storage::open(
                &dir.path().join(format!("{name}-storage")),
                key,
                16,
                1 << 30,
                db,
                Some(net.clone()),
            )?;
            let cs = ChallengeSettings {
                per_epoch: 0,
                deadline: Duration::from_millis(500),
                chunks: o.chunks,
                audit_period: 0,
                audit_deadline: Duration::from_secs(30),
                rtt_allowance_max: Duration::from_millis(100),
                enabled: false,
                paused: Default::default(),
            };
            let _c = Challenger::new(cs, storage.clone(), chain.clone(), net.clone(), None);
            nodes.push((net, chain, storage, task));
        }
        // One epoch on the prover, a 16 MiB dataset stored there.
        let input = vigil_protocols::epoch::input(&genesis, 1, &genesis, &[]);
        let e = Epoch::from_proof(1, Vec::new(), Vdf::new(params, &input)?.prove(&input));
        nodes[0].1.append(e.clone(), Origin::Local)?;
        let storage = nodes[0].2.clone();
        let info = tokio::task::spawn_blocking(move || -> Result<_> {
            let size = 16u64 << 20;
            let id = storage.put_begin("bench", size)?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(2);
            let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.gen()).collect();
            for i in 0..16u64 {
                storage.put_chunk(id, i << 20, &chunk)?;
            }
            Ok(storage.put_finish(id)?)
        })
        .await??;
        let prover = nodes[0].0.peer_id();
        let challenger = nodes[1].0.clone();
        let t0 = Instant::now();
        while !challenger.peer_ids().contains(&prover) {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "the two swarms did not connect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let replica_root = vigil_actors::storage::parse_root(&info.replica_root)?;
        let mut ns = Vec::with_capacity(o.round_trips);
        for k in 0..o.round_trips + 10 {
            let nonce: [u8; 32] = rand::thread_rng().gen();
            let req = ChallengeRequest {
                replica_root,
                epoch: 1,
                nonce,
                indices: derive_indices(&e.output, &nonce, &replica_root, info.size, o.chunks),
            };
            let (frame, rtt) = challenger
                .challenge(prover, Request::Challenge(req.clone()))
                .await?;
            let Frame::Valid(resp) = frame else {
                anyhow::bail!("malformed answer");
            };
            anyhow::ensure!(verify(&req, info.size, &resp) == Outcome::Ok, "a proof failed");
            if k >= 10 {
                ns.push(rtt.as_nanos() as u64);
            }
        }
        for n in nodes {
            n.3.abort();
        }
        Ok(Percentiles::from_nanos(ns))
    })
}
