//! What a forged epoch costs the node that rejects it, side by side with
//! what an honest one costs, in one run: process CPU time (every rayon
//! thread counted) of `Epoch::validate` on a real testnet-preset epoch,
//! honest and forged, in full and sampled mode.

use std::time::Instant;

use anyhow::{ensure, Result};
use serde::Serialize;
use vigil_protocols::epoch::{Check, Epoch};
use vigil_protocols::vdf::VdfParams;

use super::median;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Iterations of the epoch (none: the testnet preset's).
    pub iterations: Option<u64>,
    /// Segments sampled verification recomputes (node default: vdf.samples).
    pub samples: u32,
    /// Rounds of each verification (medians reported).
    pub rounds: usize,
}

/// CPU and wall time of one kind of verification (medians).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cost {
    /// Process CPU seconds, all threads.
    pub cpu_secs: f64,
    /// Wall seconds.
    pub wall_secs: f64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Rayon threads.
    pub threads: usize,
    /// Iterations of the epoch.
    pub iterations: u64,
    /// Segments of its proof.
    pub segments: u32,
    /// Memory-hard dataset, MiB (its fill is part of every verification).
    pub memory_mib: u32,
    /// Segments sampled.
    pub samples: u32,
    /// Computing the epoch, wall seconds.
    pub eval_secs: f64,
    /// Honest epoch, full verification.
    pub honest_full: Cost,
    /// Honest epoch, sampled verification.
    pub honest_sampled: Cost,
    /// Output wrong (the first segment either mode checks), full verification.
    pub output_forged_full: Cost,
    /// Output wrong, sampled verification.
    pub output_forged_sampled: Cost,
    /// One checkpoint in the middle wrong, full verification (segments in
    /// the verifier's own random order).
    pub middle_forged_full: Cost,
    /// output_forged_full / honest_full (target <= 0.1).
    pub output_full_ratio: f64,
    /// output_forged_sampled / honest_sampled.
    pub output_sampled_ratio: f64,
    /// middle_forged_full / honest_full.
    pub middle_full_ratio: f64,
}

fn process_cpu_secs() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return f64::NAN;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Verifies `e` `rounds` times with `check`; whether it passed and the median cost.
fn cost(rounds: usize, e: &Epoch, params: &VdfParams, gh: &[u8; 32], sampled: Option<u32>) -> (bool, Cost) {
    let mut rng = rand::thread_rng();
    let (mut cpu, mut wall, mut ok) = (Vec::new(), Vec::new(), true);
    for _ in 0..rounds {
        let check = match sampled {
            Some(samples) => Check::Sampled {
                samples,
                rng: &mut rng,
            },
            None => Check::Full,
        };
        let (c0, t0) = (process_cpu_secs(), Instant::now());
        ok &= e.validate(gh, params, gh, None, check).is_ok();
        wall.push(t0.elapsed().as_secs_f64());
        cpu.push(process_cpu_secs() - c0);
    }
    (
        ok,
        Cost {
            cpu_secs: median(cpu),
            wall_secs: median(wall),
        },
    )
}

/// Runs every measurement; `progress` names each as it starts.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    let (honest, params, gh, eval_secs) = super::vdf::compute_testnet_epoch(o.iterations, progress)?;
    let rounds = o.rounds.max(1);
    let mut output_forged = honest.clone();
    output_forged.output[0] ^= 1;
    let mut middle_forged = honest.clone();
    let mid = honest.checkpoints.len() / 2;
    middle_forged.checkpoints[mid][0] ^= 1;

    progress("honest epoch: full and sampled verification");
    let (ok, honest_full) = cost(rounds, &honest, &params, &gh, None);
    ensure!(ok, "the honest epoch failed full verification");
    let (ok, honest_sampled) = cost(rounds, &honest, &params, &gh, Some(o.samples));
    ensure!(ok, "the honest epoch failed sampled verification");
    progress("forged epochs: wrong output, wrong middle checkpoint");
    let (ok, output_forged_full) = cost(rounds, &output_forged, &params, &gh, None);
    ensure!(!ok, "a wrong output passed full verification");
    let (ok, output_forged_sampled) = cost(rounds, &output_forged, &params, &gh, Some(o.samples));
    ensure!(!ok, "a wrong output passed sampled verification");
    let (ok, middle_forged_full) = cost(rounds, &middle_forged, &params, &gh, None);
    ensure!(!ok, "a wrong checkpoint passed full verification");
    Ok(Report {
        threads: rayon::current_num_threads(),
        iterations: params.iterations,
        segments: params.segments,
        memory_mib: params.memory_mib,
        samples: o.samples,
        eval_secs,
        honest_full,
        honest_sampled,
        output_forged_full,
        output_forged_sampled,
        middle_forged_full,
        output_full_ratio: output_forged_full.cpu_secs / honest_full.cpu_secs,
        output_sampled_ratio: output_forged_sampled.cpu_secs / honest_sampled.cpu_secs,
        middle_full_ratio: middle_forged_full.cpu_secs / honest_full.cpu_secs,
    })
}
