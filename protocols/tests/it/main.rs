//! Properties of the VDF and the epoch chain.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use vigil_genesis::VdfMode;
use vigil_protocols::epoch::{self, Check, Epoch, EpochError};
use vigil_protocols::vdf::{detection_probability, sampled_segments, Vdf, VdfParams};

const GENESIS: [u8; 32] = [0x42; 32];

fn hash_params() -> VdfParams {
    VdfParams {
        iterations: 4_096,
        segments: 16,
        mode: VdfMode::Hash,
        memory_mib: 0,
    }
}

fn mem_params() -> VdfParams {
    VdfParams {
        iterations: 4_096,
        segments: 8,
        mode: VdfMode::MemoryHard,
        memory_mib: 2,
    }
}

/// Epochs 1..=n on top of the genesis.
fn chain(params: VdfParams, n: u64) -> Vec<Epoch> {
    let mut prev = GENESIS;
    (1..=n)
        .map(|number| {
            let input = epoch::input(&GENESIS, number, &prev, &[]);
            let e = Epoch::from_proof(
                number,
                Vec::new(),
                Vdf::new(params, &input).unwrap().prove(&input),
            );
            prev = e.output;
            e
        })
        .collect()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn epochs_are_identical_across_thread_counts_and_modes() {
    for params in [hash_params(), mem_params()] {
        let one = in_pool(1, || chain(params, 3));
        let two = in_pool(2, || chain(params, 3));
        let bytes = |c: &[Epoch]| c.iter().map(Epoch::encode).collect::<Vec<_>>();
        assert_eq!(bytes(&one), bytes(&two), "{params:?}");
        // And every epoch verifies in both pools, fully.
        let mut prev = GENESIS;
        for e in &one {
            for t in [1, 2] {
                in_pool(t, || e.validate(&GENESIS, &params, &prev, None, Check::Full)).unwrap();
            }
            prev = e.output;
        }
    }
    assert_ne!(chain(hash_params(), 1), chain(mem_params(), 1), "modes differ");
}

#[test]
fn sampled_detection_rate_matches_the_math() {
    // One tampered checkpoint breaks two of 16 segments (neither the output
    // segment, always checked); the 3 other samples find one with
    // probability 1 - C(13,3)/C(15,3) = 169/455.
    let params = hash_params();
    let e = &chain(params, 1)[0];
    let mut forged = e.clone();
    forged.checkpoints[6][3] ^= 0x10;
    let trials = 4_000;
    let mut rng = StdRng::seed_from_u64(7);
    let caught = (0..trials)
        .filter(|_| {
            forged
                .validate(
                    &GENESIS,
                    &params,
                    &GENESIS,
                    None,
                    Check::Sampled {
                        samples: 4,
                        rng: &mut rng,
                    },
                )
                .is_err()
        })
        .count();
    let p = detection_probability(16, 2, 4, false);
    assert!((p - 169.0 / 455.0).abs() < 1e-9, "{p}");
    let sigma = (trials as f64 * p * (1.0 - p)).sqrt();
    let expected = trials as f64 * p;
    assert!(
        (caught as f64 - expected).abs() < 5.0 * sigma,
        "caught {caught} of {trials}; expected {expected:.0} ± {:.0}",
        5.0 * sigma
    );
}

#[derive(Debug, Clone)]
enum Tamper {
    Output(usize, u8),
    Checkpoint(usize, usize, u8),
    /// The input: built on another predecessor output.
    Input(usize, u8),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let mask = 1u8..=255;
    prop_oneof![
        (0..32usize, mask.clone()).prop_map(|(b, m)| Tamper::Output(b, m)),
        (0..15usize, 0..32usize, mask.clone()).prop_map(|(i, b, m)| Tamper::Checkpoint(i, b, m)),
        (0..32usize, mask).prop_map(|(b, m)| Tamper::Input(b, m)),
    ]
}

/// The segments a tamper breaks (16 segments; checkpoints c_1..c_15).
fn broken(t: &Tamper) -> Vec<u32> {
    match t {
        Tamper::Output(..) => vec![15],
        Tamper::Checkpoint(i, ..) => vec![*i as u32, *i as u32 + 1],
        Tamper::Input(..) => vec![0],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any changed byte of output, checkpoint or input: full verification
    /// rejects; sampled verification rejects exactly when its own sample
    /// (reproduced from the same seed) holds a broken segment.
    #[test]
    fn any_changed_byte_is_rejected(t in tamper(), seed in any::<u64>(), samples in 1u32..=16) {
        let params = hash_params();
        let e = chain(params, 1).remove(0);
        let mut forged = e.clone();
        let mut prev = GENESIS;
        match &t {
            Tamper::Output(b, m) => forged.output[*b] ^= m,
            Tamper::Checkpoint(i, b, m) => forged.checkpoints[*i][*b] ^= m,
            Tamper::Input(b, m) => prev[*b] ^= m,
        }
        let full = forged.validate(&GENESIS, &params, &prev, None, Check::Full);
        prop_assert!(matches!(full, Err(EpochError::Vdf { .. })), "{:?}", full);
        let mut rng = StdRng::seed_from_u64(seed);
        let sampled = forged.validate(&GENESIS, &params, &prev, None, Check::Sampled { samples, rng: &mut rng });
        let picked = sampled_segments(16, samples, &mut StdRng::seed_from_u64(seed));
        let hits = picked.iter().any(|i| broken(&t).contains(i));
        prop_assert_eq!(sampled.is_err(), hits, "sample {:?} broken {:?}", picked, broken(&t));
    }

    /// Any changed byte of the encoding is refused by decoding or by validation.
    #[test]
    fn any_changed_encoded_byte_is_refused(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let params = hash_params();
        let e = chain(params, 1).remove(0);
        let mut bytes = e.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        match Epoch::decode(&bytes) {
            Err(_) => {}
            Ok(d) if d.number != e.number => {}
            Ok(d) => prop_assert!(d.validate(&GENESIS, &params, &GENESIS, None, Check::Full).is_err()),
        }
    }

    /// Decoding never panics on arbitrary bytes, and round-trips what it accepts.
    #[test]
    fn decode_is_total(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(e) = Epoch::decode(&bytes) {
            prop_assert_eq!(e.encode(), bytes);
        }
    }
}

#[test]
fn memory_hard_forgeries_are_rejected() {
    let params = mem_params();
    let e = chain(params, 1).remove(0);
    for i in 0..e.checkpoints.len() {
        let mut f = e.clone();
        f.checkpoints[i][31] ^= 1;
        let err = f
            .validate(&GENESIS, &params, &GENESIS, None, Check::Full)
            .unwrap_err();
        // c_{i+1} ends segment i and starts segment i + 1: either is reported.
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("segment {i} of 8")) || msg.contains(&format!("segment {} of 8", i + 1)),
            "{err}"
        );
    }
    // The dataset comes from the input: a proof for one input fails for another.
    let err = e
        .validate(&GENESIS, &params, &[0; 32], None, Check::Full)
        .unwrap_err();
    assert!(matches!(err, EpochError::Vdf { .. }), "{err}");
}

mod availability;
