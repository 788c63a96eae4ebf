//! Continuity chains over real replicas on disk: proofs verify end to end,
//! any altered element breaks them, roots do not depend on the thread count,
//! 10,000 chains run, and a skipped epoch is a broken chain.

use libp2p::identity::Keypair;
use rand::{Rng, SeedableRng};
use vigil_actors::continuity::{Continuity, ContinuitySettings};
use vigil_actors::storage::{parse_root, Storage};
use vigil_actors::store::{open_node_db, OpenMode, StoreOptions};

fn settings() -> ContinuitySettings {
    ContinuitySettings {
        chunks: 2,
        group_size: 16,
        region_size: 4,
        keep_epochs: 8,
    }
}

fn setup(dir: &std::path::Path, datasets: usize, max_len: usize) -> (Storage, Keypair) {
    let g = vigil_genesis::Genesis::load("dev").unwrap();
    let db = open_node_db(
        &dir.join("db"),
        g.hash(),
        OpenMode::Create,
        &StoreOptions::default(),
    )
    .unwrap();
    let key = Keypair::generate_ed25519();
    let storage = Storage::open(&dir.join("storage"), key.clone(), 1, 1 << 30, db, None).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(datasets as u64);
    for i in 0..datasets {
        let len = rng.gen_range(1..=max_len);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        storage.import_unencoded(&format!("d{i}"), &bytes).unwrap();
    }
    (storage, key)
}

fn output(epoch: u64) -> [u8; 32] {
    *blake3::hash(&epoch.to_be_bytes()).as_bytes()
}

#[test]
fn proofs_verify_end_to_end_and_any_altered_element_breaks_them() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, key) = setup(dir.path(), 100, 40_000);
    let c = Continuity::open(&dir.path().join("continuity"), storage.clone(), key, settings()).unwrap();
    for e in 1..=3 {
        c.process(e, &output(e)).unwrap();
    }
    assert_eq!(c.status().chains, 100);
    for d in storage.list().unwrap().iter().take(20) {
        let rp = parse_root(&d.replica_root).unwrap();
        let p = c.proof(&rp, 3, &output(3)).unwrap();
        c.verify(&p, &output(3)).unwrap();
        // The wire form round-trips; a truncated one is refused with a reason.
        let wire = vigil_protocols::continuity::SignedProof {
            evidence: p.evidence.clone(),
            signature: p.signature.clone(),
        }
        .encode();
        let back = vigil_protocols::continuity::SignedProof::decode(&wire).unwrap();
        assert_eq!(back.evidence, p.evidence);
        assert!(vigil_protocols::continuity::SignedProof::decode(&wire[..wire.len() - 1]).is_err());
        assert_eq!(p.evidence.prev_epoch, 2);
        // Another epoch's output does not fit.
        assert!(c.verify(&p, &output(2)).is_err());
        let mut bad = p.clone();
        bad.evidence.link[0] ^= 1;
        assert!(c.verify(&bad, &output(3)).is_err(), "altered link accepted");
        let mut bad = p.clone();
        bad.evidence.prev_link[5] ^= 1;
        assert!(
            c.verify(&bad, &output(3)).is_err(),
            "altered previous link accepted"
        );
        for k in 0..p.evidence.chunks.len() {
            let mut bad = p.clone();
            let leaf = &mut bad.evidence.chunks[k].leaf;
            let n = leaf.len();
            leaf[n / 2] ^= 0x40;
            assert!(c.verify(&bad, &output(3)).is_err(), "altered chunk accepted");
        }
        let path = &p.evidence.path;
        for (which, len) in [
            (0, path.in_group.len()),
            (1, path.in_region.len()),
            (2, path.in_global.len()),
        ] {
            for j in 0..len {
                let mut bad = p.clone();
                let v = match which {
                    0 => &mut bad.evidence.path.in_group,
                    1 => &mut bad.evidence.path.in_region,
                    _ => &mut bad.evidence.path.in_global,
                };
                v[j][31] ^= 1;
                assert!(
                    c.verify(&bad, &output(3)).is_err(),
                    "altered path element accepted"
                );
            }
        }
        let mut bad = p.clone();
        bad.evidence.root[0] ^= 1;
        assert!(c.verify(&bad, &output(3)).is_err(), "altered root accepted");
        let mut bad = p.clone();
        bad.signature[10] ^= 1;
        assert!(c.verify(&bad, &output(3)).is_err(), "altered signature accepted");
    }
}

#[test]
fn the_root_is_the_same_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, key) = setup(dir.path(), 300, 20_000);
    let roots: Vec<String> = [1, 2]
        .iter()
        .map(|&t| {
            let c = Continuity::open(
                &dir.path().join(format!("c{t}")),
                storage.clone(),
                key.clone(),
                settings(),
            )
            .unwrap();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| {
                c.process(1, &output(1)).unwrap();
                c.process(2, &output(2)).unwrap();
            });
            c.status().last_root
        })
        .collect();
    assert_eq!(roots[0], roots[1]);
}

#[test]
fn ten_thousand_chains_run_and_a_skipped_epoch_is_a_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, key) = setup(dir.path(), 10_000, 2_048);
    let s = ContinuitySettings {
        group_size: 1000,
        region_size: 10,
        ..settings()
    };
    let c = Continuity::open(&dir.path().join("continuity"), storage.clone(), key, s).unwrap();
    c.process(1, &output(1)).unwrap();
    c.process(2, &output(2)).unwrap();
    // The node misses epoch 3, then processes 4.
    c.process(4, &output(4)).unwrap();
    let st = c.status();
    assert_eq!((st.chains, st.last_epoch), (10_000, 4));
    assert_eq!(st.epochs_kept, vec![1, 2, 4]);
    let rp = parse_root(&storage.list().unwrap()[1234].replica_root).unwrap();
    c.verify(&c.proof(&rp, 2, &output(2)).unwrap(), &output(2))
        .unwrap();
    let e = c.proof(&rp, 3, &output(3)).unwrap_err().to_string();
    assert!(e.contains("no links for epoch 3"), "{e}");
    let p4 = c.proof(&rp, 4, &output(4)).unwrap();
    let e = c.verify(&p4, &output(4)).unwrap_err();
    assert!(
        e.contains("broken chain") && e.contains("epochs 3..=3 have no link"),
        "{e}"
    );
}
