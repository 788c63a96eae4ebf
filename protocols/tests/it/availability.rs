//! Availability proofs: an honest prover, proof sizes, tampering, the
//! encoding, and the wire format.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use vigil_protocols::availability::challenge::{
    check_request, derive_indices, proof_bytes, prove_leaf, verify, ChallengeRequest, ChunkProof, Outcome,
    Request, Response,
};
use vigil_protocols::availability::encode::{keystream, xor_sectors, SECTOR};
use vigil_protocols::availability::tree::{group_cvs, leaves, Tree, GROUP, LEAF};

const SIZE: usize = 3 * SECTOR + 5_000;

struct Replica {
    data: Vec<u8>,
    tree: Tree,
    root: [u8; 32],
}

fn replica(peer: &[u8]) -> Replica {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let plain: Vec<u8> = (0..SIZE).map(|_| rng.gen()).collect();
    let r = *blake3::hash(&plain).as_bytes();
    let mut data = plain;
    xor_sectors(peer, &r, 0, &mut data, 2);
    let tree = Tree::build(&data);
    let root = tree.root(&data[..GROUP * LEAF]);
    Replica { data, tree, root }
}

fn group(data: &[u8], index: u64) -> &[u8] {
    let s = index as usize / GROUP * GROUP * LEAF;
    &data[s..(s + GROUP * LEAF).min(data.len())]
}

fn answer(r: &Replica, req: &ChallengeRequest) -> Response {
    Response::Proofs(
        req.indices
            .iter()
            .map(|&i| prove_leaf(&r.tree, i, group(&r.data, i), Some(&req.nonce)))
            .collect(),
    )
}

fn request(r: &Replica, rng: &mut impl Rng, n: usize) -> ChallengeRequest {
    let output: [u8; 32] = rng.gen();
    let nonce: [u8; 32] = rng.gen();
    ChallengeRequest {
        replica_root: r.root,
        epoch: 7,
        nonce,
        indices: derive_indices(&output, &nonce, &r.root, SIZE as u64, n),
    }
}

#[test]
fn an_honest_prover_passes_1000_random_challenges() {
    let r = replica(b"honest");
    assert_eq!(
        &r.root,
        blake3::hash(&r.data).as_bytes(),
        "R_p is the BLAKE3 hash of the replica"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..1000 {
        let req = request(&r, &mut rng, 4);
        let resp = answer(&r, &req);
        let wire = Response::decode(&resp.encode()).unwrap();
        assert_eq!(verify(&req, SIZE as u64, &wire), Outcome::Ok);
    }
}

#[test]
fn proofs_are_under_2_kb_per_chunk_at_1_gib() {
    // A real 1 GiB-shaped tree: 2^17 group CVs, one of them over real bytes.
    let size: u64 = 1 << 30;
    let groups = leaves(size) as usize / GROUP;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut cvs: Vec<[u8; 32]> = (0..groups).map(|_| rng.gen()).collect();
    let index: u64 = 777_777;
    let g = index as usize / GROUP;
    let bytes: Vec<u8> = (0..GROUP * LEAF).map(|i| i as u8).collect();
    cvs[g] = group_cvs((g * GROUP * LEAF) as u64, &bytes)[0];
    let tree = Tree::from_groups(size, cvs);
    let root = tree.root(&[]);
    let nonce = [5u8; 32];
    let p = prove_leaf(&tree, index, &bytes, Some(&nonce));
    let req = ChallengeRequest {
        replica_root: root,
        epoch: 1,
        nonce,
        indices: vec![index],
    };
    assert_eq!(
        verify(&req, size, &Response::Proofs(vec![p.clone()])),
        Outcome::Ok
    );
    let one = Response::Proofs(vec![p]).encode().len() - 3;
    assert_eq!(one, proof_bytes(size));
    assert!(one <= 2000, "{one} bytes per chunk at 1 GiB");
    assert_eq!(proof_bytes(1 << 20), 8 + 2 + 1024 + 1 + 10 * 32 + 32);
}

#[test]
fn a_flipped_replica_byte_is_wrong_and_replicas_are_not_interchangeable() {
    let mut r = replica(b"a");
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let req = request(&r, &mut rng, 1);
    let i = req.indices[0] as usize;
    r.data[i * LEAF + 10] ^= 0x01;
    assert!(matches!(
        verify(&req, SIZE as u64, &answer(&r, &req)),
        Outcome::Wrong(_)
    ));
    // B's replica of the same plaintext, offered for A's R_p.
    let a = replica(b"a");
    let b = replica(b"b");
    assert_ne!(a.root, b.root);
    let mut req = request(&a, &mut rng, 4);
    let resp = answer(&b, &req);
    assert!(matches!(verify(&req, SIZE as u64, &resp), Outcome::Wrong(_)));
    req.replica_root = b.root;
    assert_eq!(verify(&req, SIZE as u64, &resp), Outcome::Ok);
}

#[test]
fn indices_not_derived_from_the_entropy_are_refused() {
    let r = replica(b"p");
    let output = [8u8; 32];
    let nonce = [1u8; 32];
    let mut req = ChallengeRequest {
        replica_root: r.root,
        epoch: 3,
        nonce,
        indices: derive_indices(&output, &nonce, &r.root, SIZE as u64, 4),
    };
    check_request(&req, &output, SIZE as u64).unwrap();
    req.indices[2] = (req.indices[2] + 1) % leaves(SIZE as u64);
    let e = check_request(&req, &output, SIZE as u64).unwrap_err();
    assert!(e.contains("not the ones derived"), "{e}");
    assert!(check_request(&req, &[9; 32], SIZE as u64).is_err());
}

#[test]
fn decoding_the_replica_restores_the_plaintext() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let plain: Vec<u8> = (0..SIZE).map(|_| rng.gen()).collect();
    let r = *blake3::hash(&plain).as_bytes();
    let mut d = plain.clone();
    xor_sectors(b"p", &r, 0, &mut d, 2);
    // Sector by sector, as the node decodes a range.
    let second = SECTOR..2 * SECTOR;
    let mut part = d[second.clone()].to_vec();
    xor_sectors(b"p", &r, 1, &mut part, 2);
    assert_eq!(part, plain[second]);
    xor_sectors(b"p", &r, 0, &mut d, 2);
    assert_eq!(blake3::hash(&d).as_bytes(), &r);
    assert_eq!(keystream(b"p", &r, 0, 2).len(), SECTOR);
}

fn proof_strategy() -> impl Strategy<Value = ChunkProof> {
    (
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 1..=1024),
        prop::collection::vec(any::<[u8; 32]>(), 0..24),
        any::<[u8; 32]>(),
    )
        .prop_map(|(index, leaf, siblings, keyed)| ChunkProof {
            index,
            leaf,
            siblings,
            keyed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn requests_and_responses_round_trip(
        root in any::<[u8; 32]>(), epoch in any::<u64>(), nonce in any::<[u8; 32]>(),
        indices in prop::collection::vec(any::<u64>(), 1..=16),
        proofs in prop::collection::vec(proof_strategy(), 0..4),
        why in ".{0,40}",
    ) {
        let req = Request::Challenge(ChallengeRequest { replica_root: root, epoch, nonce, indices });
        prop_assert_eq!(Request::decode(&req.encode()).unwrap(), req);
        let audit = Request::Audit { replica_root: root, index: epoch };
        prop_assert_eq!(Request::decode(&audit.encode()).unwrap(), audit);
        let busy = Response::Busy(epoch as u32);
        for resp in [Response::Proofs(proofs.clone()), Response::Missing, Response::Refused(why.clone()), busy] {
            prop_assert_eq!(Response::decode(&resp.encode()).unwrap(), resp);
        }
        if proofs.len() >= 2 {
            let a = Response::Audit { replica: proofs[0].clone(), plain: proofs[1].clone() };
            prop_assert_eq!(Response::decode(&a.encode()).unwrap(), a);
        }
    }

    #[test]
    fn decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
    }
}

#[test]
fn every_single_bit_flip_of_a_proof_is_rejected() {
    let r = replica(b"flip");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let req = request(&r, &mut rng, 2);
    let bytes = answer(&r, &req).encode();
    assert_eq!(
        verify(&req, SIZE as u64, &Response::decode(&bytes).unwrap()),
        Outcome::Ok
    );
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        if let Ok(resp) = Response::decode(&b) {
            assert_ne!(
                verify(&req, SIZE as u64, &resp),
                Outcome::Ok,
                "bit {bit} flipped and still accepted"
            );
        }
    }
}

#[test]
fn a_lazy_prover_misses_the_deadline_under_the_testnet_preset() {
    // The lazy prover keeps the plaintext (and the replica's tree) but not the
    // replica: each challenge makes it regenerate the challenged sector.
    let g = vigil_genesis::Preset::Testnet.genesis().unwrap();
    let (cost, deadline) = (
        g.params.encoding_cost,
        std::time::Duration::from_millis(g.params.response_deadline_ms.into()),
    );
    let peer = b"lazy";
    let plain: Vec<u8> = (0..SECTOR).map(|i| (i % 251) as u8).collect();
    let r = *blake3::hash(&plain).as_bytes();
    let mut honest = plain.clone();
    xor_sectors(peer, &r, 0, &mut honest, cost);
    let tree = Tree::build(&honest);
    let root = tree.root(&honest[..GROUP * LEAF]);
    let req = ChallengeRequest {
        replica_root: root,
        epoch: 1,
        nonce: [3; 32],
        indices: derive_indices(&[1; 32], &[3; 32], &root, SECTOR as u64, 1),
    };
    let t0 = std::time::Instant::now();
    let i = req.indices[0];
    let ks = keystream(peer, &r, 0, cost);
    let s = i as usize / GROUP * GROUP * LEAF;
    let group: Vec<u8> = plain[s..s + GROUP * LEAF]
        .iter()
        .zip(&ks[s..])
        .map(|(p, k)| p ^ k)
        .collect();
    let resp = Response::Proofs(vec![prove_leaf(&tree, i, &group, Some(&req.nonce))]);
    let took = t0.elapsed();
    // Its proof is right, but far too late: the challenger scores it `late`.
    assert_eq!(verify(&req, SECTOR as u64, &resp), Outcome::Ok);
    assert!(
        took > deadline * 4,
        "regenerating one sector took {took:?}; the encoding must cost >= 4 x the {deadline:?} deadline"
    );
    eprintln!("lazy prover answered in {took:?} (deadline {deadline:?})");
}
