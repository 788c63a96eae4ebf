//! VDF figures, side by side in one run: evaluation rate against the raw
//! SHA-256 chain, memory-hard rate at the testnet's dataset size, full
//! verification on all cores against evaluation, and sampled verification of
//! a real testnet-preset epoch.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::SeedableRng;
use serde::Serialize;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use vigil_genesis::{Preset, VdfMode};
use vigil_protocols::epoch;
use vigil_protocols::vdf::{Dataset, MemoryHard, Progress, Vdf, VdfParams};

use super::median;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Iterations per hash-mode measurement.
    pub iterations: u64,
    /// Iterations per memory-hard measurement.
    pub mem_iterations: u64,
    /// Dataset size, MiB.
    pub memory_mib: u32,
    /// Rounds per side-by-side comparison (medians reported).
    pub rounds: usize,
    /// Segments the sampled verification recomputes.
    pub samples: u32,
    /// Skip computing a full testnet-preset epoch (the sampled figure).
    pub skip_epoch: bool,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Rayon threads used for verification.
    pub threads: usize,
    /// `Sha256::digest` chain, M iterations/s.
    pub raw_digest_mips: f64,
    /// Bare compression-function chain, M iterations/s.
    pub raw_compress_mips: f64,
    /// `Vdf::evaluate` in hash mode with checkpoints, M iterations/s.
    pub eval_mips: f64,
    /// `eval_mips` / the faster raw chain.
    pub eval_vs_raw: f64,
    /// Memory-hard dataset fill, seconds.
    pub mem_fill_secs: f64,
    /// Memory-hard evaluation, M iterations/s.
    pub mem_mips: f64,
    /// Hash mode: evaluation seconds / full verification seconds.
    pub full_verify_speedup: f64,
    /// Memory-hard: evaluation / full verification (both without the fill).
    pub mem_full_verify_speedup: f64,
    /// The sampled-verification epoch, when computed.
    pub epoch: Option<EpochFigures>,
}

/// A real epoch of the testnet preset and its sampled verification.
#[derive(Debug, Clone, Serialize)]
pub struct EpochFigures {
    /// Iterations (testnet genesis).
    pub iterations: u64,
    /// Segments.
    pub segments: u32,
    /// Evaluation wall time including the fill, seconds.
    pub eval_secs: f64,
    /// Segments sampled.
    pub samples: u32,
    /// Sampled verification including the dataset fill, seconds (median).
    pub sampled_verify_secs: f64,
    /// Full verification including the fill, seconds.
    pub full_verify_secs: f64,
}

fn mips(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64() / 1e6
}

fn raw_digest(n: u64) -> ([u8; 32], Duration) {
    let t = Instant::now();
    let mut s = [1u8; 32];
    for _ in 0..n {
        s = Sha256::digest(s).into();
    }
    (s, t.elapsed())
}

fn raw_compress(n: u64) -> ([u8; 32], Duration) {
    const IV: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let t = Instant::now();
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&[1u8; 32]);
    block[32] = 0x80;
    block[62] = 1;
    for _ in 0..n {
        let mut h = IV;
        sha2::compress256(&mut h, std::slice::from_ref(GenericArray::from_slice(&block)));
        for (i, w) in h.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(&block[..32]);
    (s, t.elapsed())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// Runs every measurement; `progress` names each as it starts.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    let input = [1u8; 32];
    let hash = VdfParams {
        iterations: o.iterations,
        segments: 256,
        mode: VdfMode::Hash,
        memory_mib: 0,
    };
    let vdf = Vdf::new(hash, &input)?;
    progress("hash-mode evaluation vs the raw SHA-256 chain");
    let (mut digest, mut compress, mut eval) = (Vec::new(), Vec::new(), Vec::new());
    let mut proof = None;
    for _ in 0..o.rounds {
        let (a, da) = raw_digest(o.iterations);
        let (b, db) = raw_compress(o.iterations);
        let (p, de) = timed(|| vdf.prove(&input));
        assert_eq!(a, b, "both raw chains compute SHA-256");
        assert_eq!(a, p.output, "the VDF output is the SHA-256 chain");
        digest.push(mips(o.iterations, da));
        compress.push(mips(o.iterations, db));
        eval.push(mips(o.iterations, de));
        proof = Some(p);
    }
    let proof = proof.context("rounds must be at least 1")?;
    progress("hash-mode full verification");
    let eval_secs = o.iterations as f64 / (median(eval.clone()) * 1e6);
    let verify: Vec<f64> = (0..o.rounds)
        .map(|_| {
            let (r, d) = timed(|| vdf.verify_full(&input, &proof));
            r.map(|_| d.as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    let (raw_digest_mips, raw_compress_mips, eval_mips) = (median(digest), median(compress), median(eval));

    progress("memory-hard fill and evaluation");
    let mem = VdfParams {
        iterations: o.mem_iterations,
        segments: 256,
        mode: VdfMode::MemoryHard,
        memory_mib: o.memory_mib,
    };
    let (data, fill) = timed(|| Dataset::fill(&input, o.memory_mib));
    let mvdf = Vdf::with_step(mem, Box::new(MemoryHard::new(data?)));
    let (mproof, meval) = timed(|| mvdf.prove(&input));
    progress("memory-hard full verification");
    let (r, mverify) = timed(|| mvdf.verify_full(&input, &mproof));
    r?;

    let epoch = if o.skip_epoch {
        None
    } else {
        Some(testnet_epoch(o.samples, progress)?)
    };
    Ok(Report {
        threads: rayon::current_num_threads(),
        raw_digest_mips,
        raw_compress_mips,
        eval_mips,
        eval_vs_raw: eval_mips / raw_digest_mips.max(raw_compress_mips),
        mem_fill_secs: fill.as_secs_f64(),
        mem_mips: mips(o.mem_iterations, meval),
        full_verify_speedup: eval_secs / median(verify),
        mem_full_verify_speedup: meval.as_secs_f64() / mverify.as_secs_f64(),
        epoch,
    })
}

/// Epoch 1 of the testnet preset, computed for real (with `iterations`
/// instead of the preset's when given), its parameters, the genesis hash
/// (also epoch 1's predecessor output) and the evaluation's wall seconds.
pub(crate) fn compute_testnet_epoch(
    iterations: Option<u64>,
    progress: &dyn Fn(&str),
) -> Result<(epoch::Epoch, VdfParams, [u8; 32], f64)> {
    let g = Preset::Testnet.genesis()?;
    let mut params = VdfParams::from_genesis(&g.params);
    if let Some(n) = iterations {
        params.iterations = n;
    }
    let gh = g.hash().0;
    let input = epoch::input(&gh, 1, &gh, &[]);
    progress(&format!(
        "one testnet-preset epoch ({} M iterations, {} MiB; the preset's takes about epoch_target_secs = {} s)",
        params.iterations / 1_000_000,
        params.memory_mib,
        g.params.epoch_target_secs
    ));
    let t = Instant::now();
    let vdf = Vdf::new(params, &input)?;
    let proof = match vdf.evaluate(Progress::start(&input), &|| false, |_| {}) {
        vigil_protocols::vdf::Outcome::Done(p) => p,
        vigil_protocols::vdf::Outcome::Stopped(_) => anyhow::bail!("evaluation stopped"),
    };
    let eval_secs = t.elapsed().as_secs_f64();
    Ok((
        epoch::Epoch::from_proof(1, Vec::new(), proof),
        params,
        gh,
        eval_secs,
    ))
}

/// Computes epoch 1 of the testnet preset for real, then verifies it.
fn testnet_epoch(samples: u32, progress: &dyn Fn(&str)) -> Result<EpochFigures> {
    let (e, params, gh, eval_secs) = compute_testnet_epoch(None, progress)?;
    progress("sampled and full verification of that epoch (dataset fill included)");
    let mut rng = rand::rngs::StdRng::from_entropy();
    let sampled: Vec<f64> = (0..3)
        .map(|_| {
            let (r, d) = timed(|| {
                e.validate(
                    &gh,
                    &params,
                    &gh,
                    None,
                    epoch::Check::Sampled {
                        samples,
                        rng: &mut rng,
                    },
                )
            });
            r.map(|_| d.as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    let (r, full) = timed(|| e.validate(&gh, &params, &gh, None, epoch::Check::Full));
    r?;
    Ok(EpochFigures {
        iterations: params.iterations,
        segments: params.segments,
        eval_secs,
        samples,
        sampled_verify_secs: median(sampled),
        full_verify_secs: full.as_secs_f64(),
    })
}
