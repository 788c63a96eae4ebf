//! The verifiable delay function: `T` sequential steps with `k` checkpoints.
//!
//! Segment `i` (0-based) runs from iteration `b_i` to `b_{i+1}` with
//! `b_i = floor(i * T / k)`; checkpoint `c_i` is the state after `b_i` steps,
//! `c_0` the input and `c_k` the output. The proof is `c_1 .. c_{k-1}`.
//! Evaluating is sequential; verifying recomputes segments independently, in
//! parallel with rayon: all of them ([`Vdf::verify_full`]), or `s` of them
//! chosen by the verifier's own random generator ([`Vdf::verify_sampled`]).
//! A prover that skipped work broke at least one segment; sampling finds one
//! of `b` broken segments with probability [`detection_probability`].

mod dataset;
mod step;

use rand::seq::index::sample;
use rand::seq::SliceRandom;
use rand::RngCore;
use rayon::prelude::*;
use vigil_genesis::{Params, VdfMode};

pub use dataset::Dataset;
pub use step::{MemoryHard, Sha256Chain, State, Step};

/// Steps run between two looks at the stop flag.
const CHUNK: u64 = 1 << 20;

/// Why a VDF could not be built or a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VdfError {
    /// Parameters out of range.
    #[error("invalid VDF parameters: {0}")]
    Params(String),
    /// The proof has the wrong number of checkpoints.
    #[error("proof has {got} checkpoints; this genesis needs {expected}")]
    CheckpointCount {
        /// `k - 1`.
        expected: usize,
        /// Found.
        got: usize,
    },
    /// Recomputing a segment did not reach the claimed checkpoint (or output).
    #[error("segment {index} of {segments} does not reach its {what}")]
    Segment {
        /// Segment index.
        index: u32,
        /// Segments in the proof.
        segments: u32,
        /// `checkpoint` or `output`.
        what: &'static str,
    },
}

/// The VDF parameters of one genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VdfParams {
    /// Sequential steps `T`.
    pub iterations: u64,
    /// Segments `k` (checkpoints in the proof: `k - 1`).
    pub segments: u32,
    /// Step construction.
    pub mode: VdfMode,
    /// Dataset size in memory-hard mode, MiB.
    pub memory_mib: u32,
}

impl VdfParams {
    /// The genesis parameters.
    pub fn from_genesis(p: &Params) -> Self {
        Self {
            iterations: p.vdf_iterations,
            segments: p.vdf_checkpoints,
            mode: p.vdf_mode,
            memory_mib: p.vdf_memory_mib,
        }
    }

    /// `b_i`: steps before segment `i`.
    pub fn boundary(&self, i: u32) -> u64 {
        (u128::from(i) * u128::from(self.iterations) / u128::from(self.segments)) as u64
    }

    /// Steps in segment `i`.
    pub fn segment_len(&self, i: u32) -> u64 {
        self.boundary(i + 1) - self.boundary(i)
    }

    /// Mode name for status output.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            VdfMode::Hash => "hash",
            VdfMode::MemoryHard => "memory-hard",
        }
    }
}

/// A checkpointed proof: `c_1 .. c_{k-1}` and the output `c_k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The output.
    pub output: State,
    /// Intermediate checkpoints.
    pub checkpoints: Vec<State>,
}

/// Evaluation progress at a checkpoint boundary; persisted so a crash resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Segments finished.
    pub done: u32,
    /// State after `b_done` steps.
    pub state: State,
    /// `c_1 .. c_done`.
    pub checkpoints: Vec<State>,
}

impl Progress {
    /// Nothing done yet: the state is the input.
    pub fn start(input: &State) -> Self {
        Self {
            done: 0,
            state: *input,
            checkpoints: Vec::new(),
        }
    }
}

/// How [`Vdf::evaluate`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// All segments computed.
    Done(Proof),
    /// `stop` returned true; the progress is at the last finished checkpoint.
    Stopped(Progress),
}

/// A VDF instance for one input: parameters and the step (in memory-hard
/// mode, the step owns the input's dataset).
pub struct Vdf {
    params: VdfParams,
    step: Box<dyn Step>,
}

impl std::fmt::Debug for Vdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vdf")
            .field("params", &self.params)
            .field("step", &self.step.name())
            .finish()
    }
}

impl Vdf {
    /// The VDF for `input` (fills the dataset in memory-hard mode).
    pub fn new(params: VdfParams, input: &State) -> Result<Self, VdfError> {
        if params.segments == 0 || u64::from(params.segments) > params.iterations {
            return Err(VdfError::Params(format!(
                "{} segments for {} iterations: allowed 1..=iterations",
                params.segments, params.iterations
            )));
        }
        let step: Box<dyn Step> = match params.mode {
            VdfMode::Hash => Box::new(Sha256Chain),
            VdfMode::MemoryHard => Box::new(MemoryHard::new(Dataset::fill(input, params.memory_mib)?)),
        };
        Ok(Self { params, step })
    }

    /// A VDF with an explicit step (benchmarks, other constructions).
    pub fn with_step(params: VdfParams, step: Box<dyn Step>) -> Self {
        Self { params, step }
    }

    /// The parameters.
    pub fn params(&self) -> &VdfParams {
        &self.params
    }

    /// Computes the segments after `from`, calling `on_checkpoint` after each
    /// and looking at `stop` every 2^20 steps. On stop, the partial segment is
    /// dropped: resuming from the returned progress gives the same proof.
    pub fn evaluate(
        &self,
        from: Progress,
        stop: &dyn Fn() -> bool,
        mut on_checkpoint: impl FnMut(&Progress),
    ) -> Outcome {
        let k = self.params.segments;
        let mut p = from;
        while p.done < k {
            let mut state = p.state;
            let mut left = self.params.segment_len(p.done);
            while left > 0 {
                if stop() {
                    return Outcome::Stopped(p);
                }
                let n = left.min(CHUNK);
                self.step.run(&mut state, n);
                left -= n;
            }
            p.done += 1;
            p.state = state;
            if p.done < k {
                p.checkpoints.push(state);
            }
            on_checkpoint(&p);
        }
        Outcome::Done(Proof {
            output: p.state,
            checkpoints: p.checkpoints,
        })
    }

    /// Evaluates from the start without stopping.
    pub fn prove(&self, input: &State) -> Proof {
        match self.evaluate(Progress::start(input), &|| false, |_| {}) {
            Outcome::Done(p) => p,
            Outcome::Stopped(_) => unreachable!("stop never returns true"),
        }
    }

    fn check_shape(&self, proof: &Proof) -> Result<(), VdfError> {
        let expected = self.params.segments as usize - 1;
        if proof.checkpoints.len() != expected {
            return Err(VdfError::CheckpointCount {
                expected,
                got: proof.checkpoints.len(),
            });
        }
        Ok(())
    }

    fn check_segment(&self, input: &State, proof: &Proof, i: u32) -> Result<(), VdfError> {
        let k = self.params.segments;
        let mut state = if i == 0 {
            *input
        } else {
            proof.checkpoints[i as usize - 1]
        };
        self.step.run(&mut state, self.params.segment_len(i));
        let (claimed, what) = if i + 1 == k {
            (&proof.output, "output")
        } else {
            (&proof.checkpoints[i as usize], "checkpoint")
        };
        if state == *claimed {
            Ok(())
        } else {
            Err(VdfError::Segment {
                index: i,
                segments: k,
                what,
            })
        }
    }

    /// Recomputes the given segments in parallel (rayon's current pool) and
    /// stops at the first that fails: no segment is started once one is
    /// found bad, so a forgery costs about one segment per thread, not the
    /// whole proof. Which failing segment is reported is the first found.
    pub fn verify_segments(&self, input: &State, proof: &Proof, which: &[u32]) -> Result<(), VdfError> {
        self.check_shape(proof)?;
        if let Some(&bad) = which.iter().find(|&&i| i >= self.params.segments) {
            return Err(VdfError::Params(format!(
                "segment {bad} asked of a {}-segment proof",
                self.params.segments
            )));
        }
        which
            .par_iter()
            .with_max_len(1)
            .try_for_each(|&i| self.check_segment(input, proof, i))
    }

    /// Recomputes every segment: the one that produces the output first,
    /// then the others in an order of this verifier's own choosing, so that
    /// wherever a forgery is broken the prover cannot make it the last
    /// segment checked (a wrong output costs about one segment per thread;
    /// one broken segment elsewhere, half the proof on average).
    pub fn verify_full(&self, input: &State, proof: &Proof) -> Result<(), VdfError> {
        let last = self.params.segments.saturating_sub(1);
        let mut order: Vec<u32> = (0..last).collect();
        order.shuffle(&mut rand::thread_rng());
        order.insert(0, last);
        self.verify_segments(input, proof, &order)
    }

    /// Recomputes `samples` distinct segments ([`sampled_segments`]): the
    /// one that produces the output always, the rest chosen with `rng` (the
    /// verifier's own randomness; nothing the prover sent picks them).
    pub fn verify_sampled(
        &self,
        input: &State,
        proof: &Proof,
        samples: u32,
        rng: &mut dyn RngCore,
    ) -> Result<(), VdfError> {
        let which = sampled_segments(self.params.segments, samples, rng);
        self.verify_segments(input, proof, &which)
    }
}

/// The segments sampled verification recomputes: the last one (it produces
/// the output, so a proof wrong only there never passes), then `samples - 1`
/// distinct others drawn uniformly with `rng`; at most `segments` in all.
pub fn sampled_segments(segments: u32, samples: u32, rng: &mut dyn RngCore) -> Vec<u32> {
    let k = segments as usize;
    let s = (samples as usize).clamp(1, k.max(1));
    let mut which = vec![segments.saturating_sub(1)];
    which.extend(sample(rng, k - 1, s - 1).into_iter().map(|i| i as u32));
    which
}

/// Probability that sampled verification ([`sampled_segments`]) of a proof
/// with `broken` broken segments among `segments` finds one: 1 when the
/// output segment is among them (`output_broken`), else
/// `1 - C(segments - 1 - broken, samples - 1) / C(segments - 1, samples - 1)`.
pub fn detection_probability(segments: u32, broken: u32, samples: u32, output_broken: bool) -> f64 {
    if output_broken && broken > 0 {
        return 1.0;
    }
    let (k, b, s) = (
        segments.saturating_sub(1) as f64,
        broken.min(segments.saturating_sub(1)) as f64,
        samples.clamp(1, segments.max(1)).saturating_sub(1) as f64,
    );
    // C(k-b, s)/C(k, s) = prod_{j<s} (k-b-j)/(k-j)
    let mut miss = 1.0;
    let mut j = 0.0;
    while j < s {
        miss *= ((k - b - j) / (k - j)).max(0.0);
        j += 1.0;
    }
    1.0 - miss
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn params(t: u64, k: u32) -> VdfParams {
        VdfParams {
            iterations: t,
            segments: k,
            mode: VdfMode::Hash,
            memory_mib: 0,
        }
    }

    #[test]
    fn boundaries_cover_all_iterations() {
        let p = params(1003, 7);
        assert_eq!(p.boundary(0), 0);
        assert_eq!(p.boundary(7), 1003);
        assert_eq!((0..7).map(|i| p.segment_len(i)).sum::<u64>(), 1003);
    }

    #[test]
    fn proof_verifies_and_resume_gives_the_same_proof() {
        let vdf = Vdf::new(params(10_000, 8), &[0; 32]).unwrap();
        let input = [3u8; 32];
        let proof = vdf.prove(&input);
        assert_eq!(proof.checkpoints.len(), 7);
        vdf.verify_full(&input, &proof).unwrap();
        // Stop after 3 checkpoints, then resume.
        let seen = std::cell::Cell::new(0);
        let stopped = vdf.evaluate(Progress::start(&input), &|| seen.get() == 3, |_| {
            seen.set(seen.get() + 1)
        });
        let Outcome::Stopped(p) = stopped else {
            panic!("expected a stop")
        };
        assert_eq!(p.done, 3);
        let Outcome::Done(resumed) = vdf.evaluate(p, &|| false, |_| {}) else {
            panic!("expected done")
        };
        assert_eq!(resumed, proof);
    }

    #[test]
    fn tampering_names_a_broken_segment() {
        let vdf = Vdf::new(params(4_000, 4), &[0; 32]).unwrap();
        let input = [1u8; 32];
        let mut proof = vdf.prove(&input);
        proof.checkpoints[1][0] ^= 1;
        // c_2 ends segment 1 and starts segment 2: either is a broken segment.
        match vdf.verify_full(&input, &proof).unwrap_err() {
            VdfError::Segment {
                index, segments: 4, ..
            } => assert!(index == 1 || index == 2, "{index}"),
            e => panic!("{e}"),
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let all = vdf.verify_sampled(&input, &proof, 4, &mut rng);
        assert!(all.is_err(), "sampling every segment finds it");
    }

    #[test]
    fn sampling_always_checks_the_output_segment() {
        let vdf = Vdf::new(params(8_000, 16), &[0; 32]).unwrap();
        let input = [2u8; 32];
        let mut proof = vdf.prove(&input);
        proof.output[0] ^= 1;
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let which = sampled_segments(16, 2, &mut rng);
            assert_eq!(which.len(), 2);
            assert_eq!(which[0], 15);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            assert!(
                vdf.verify_sampled(&input, &proof, 1, &mut rng).is_err(),
                "a proof wrong only in its output passed sampling"
            );
        }
    }

    #[test]
    fn a_forgery_stops_verification_early() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        struct Counting(Arc<AtomicU64>);
        impl Step for Counting {
            fn run(&self, state: &mut State, n: u64) {
                self.0.fetch_add(n, Ordering::Relaxed);
                Sha256Chain.run(state, n)
            }
            fn name(&self) -> &'static str {
                "counting"
            }
        }
        let p = params(256_000, 256);
        let input = [3u8; 32];
        let honest = Vdf::new(p, &input).unwrap().prove(&input);
        let steps = Arc::new(AtomicU64::new(0));
        let vdf = Vdf::with_step(p, Box::new(Counting(steps.clone())));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // Segments in order, the first two wrong: stopped after a few.
        let mut proof = honest.clone();
        proof.checkpoints[0][0] ^= 1;
        let in_order: Vec<u32> = (0..256).collect();
        pool.install(|| vdf.verify_segments(&input, &proof, &in_order))
            .unwrap_err();
        let done = steps.swap(0, Ordering::Relaxed);
        assert!(
            done <= 8 * p.segment_len(0),
            "{done} of {} steps recomputed for a proof wrong in its first segment",
            p.iterations
        );
        // Full verification checks the output segment first: a wrong output
        // costs a few segments, not the proof.
        let mut proof = honest.clone();
        proof.output[0] ^= 1;
        pool.install(|| vdf.verify_full(&input, &proof)).unwrap_err();
        let done = steps.swap(0, Ordering::Relaxed);
        assert!(
            done <= 8 * p.segment_len(0),
            "{done} of {} steps recomputed for a proof wrong in its output",
            p.iterations
        );
        // The honest proof is recomputed whole.
        pool.install(|| vdf.verify_full(&input, &honest)).unwrap();
        assert_eq!(steps.load(Ordering::Relaxed), p.iterations);
    }

    #[test]
    fn detection_probability_matches_the_formula() {
        assert_eq!(detection_probability(10, 0, 3, false), 0.0);
        assert_eq!(detection_probability(10, 1, 10, false), 1.0);
        assert_eq!(
            detection_probability(10, 1, 1, true),
            1.0,
            "the output segment is always checked"
        );
        // One of the 9 non-output segments broken, 2 of them sampled: 2/9.
        assert!((detection_probability(10, 1, 3, false) - 2.0 / 9.0).abs() < 1e-12);
        // 1 - C(7,2)/C(9,2) = 1 - 21/36
        assert!((detection_probability(10, 2, 3, false) - 15.0 / 36.0).abs() < 1e-12);
    }
}
