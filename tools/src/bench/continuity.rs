//! Continuity figures: one epoch over N synthetic small datasets on local
//! disk (page cache warm and cold), with 1 and 2 threads side by side, and
//! the process's peak RSS.

use std::time::Instant;

use anyhow::Result;
use libp2p::identity::Keypair;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use vigil_actors::continuity::{Continuity, ContinuitySettings};
use vigil_actors::storage::Storage;

use super::median;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Chains (datasets).
    pub chains: usize,
    /// Largest synthetic dataset, bytes (sizes are uniform in 256..=max).
    pub max_bytes: usize,
    /// Warm epochs timed per thread count.
    pub rounds: usize,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Chains.
    pub chains: usize,
    /// Seconds to create the datasets.
    pub setup_secs: f64,
    /// Whether the page cache could be dropped (root only).
    pub cold_measured: bool,
    /// First epoch after dropping the page cache, 2 threads, seconds.
    pub cold_secs: Option<f64>,
    /// Warm epoch, 1 thread, seconds (median).
    pub warm_1_thread_secs: f64,
    /// Warm epoch, 2 threads, seconds (median).
    pub warm_2_threads_secs: f64,
    /// Speedup of 2 threads over 1.
    pub speedup: f64,
    /// Per chain at 2 threads, µs.
    pub per_chain_us: f64,
    /// Peak RSS of this process, MiB.
    pub peak_rss_mib: f64,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn drop_caches() -> bool {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Runs the measurement.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let g = vigil_genesis::Preset::Dev.genesis()?;
    let db = super::dev_db(&dir.path().join("db"))?;
    let key = Keypair::generate_ed25519();
    let storage = Storage::open(
        &dir.path().join("storage"),
        key.clone(),
        1,
        1 << 30,
        db.clone(),
        None,
    )?;
    progress(&format!("creating {} synthetic datasets on disk", o.chains));
    let t = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut buf = vec![0u8; o.max_bytes];
    for i in 0..o.chains {
        // At least 256 bytes: tiny random datasets would collide (same R_p).
        let len = rng.gen_range(256.min(o.max_bytes)..=o.max_bytes);
        rng.fill(&mut buf[..len]);
        storage.import_unencoded(&format!("d{i}"), &buf[..len])?;
    }
    vigil_actors::store::Store::flush(&db)?;
    let setup_secs = t.elapsed().as_secs_f64();
    let settings = ContinuitySettings {
        chunks: 2,
        group_size: g.params.group_size as usize,
        region_size: g.params.region_size as usize,
        keep_epochs: 4,
    };
    let output = |e: u64| *blake3::hash(&e.to_be_bytes()).as_bytes();
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build();
    let (one, two) = (pool(1)?, pool(2)?);
    progress("cold epoch (page cache dropped, fresh process state)");
    let cold_measured = drop_caches();
    let c = Continuity::open(
        &dir.path().join("continuity"),
        storage.clone(),
        key.clone(),
        settings.clone(),
    )?;
    let t = Instant::now();
    two.install(|| c.process(1, &output(1)))?;
    let cold = t.elapsed().as_secs_f64();
    progress("warm epochs, 1 and 2 threads alternating");
    let (mut w1, mut w2) = (Vec::new(), Vec::new());
    let mut epoch = 2;
    for _ in 0..o.rounds {
        for (pool, out) in [(&one, &mut w1), (&two, &mut w2)] {
            let t = Instant::now();
            pool.install(|| c.process(epoch, &output(epoch)))?;
            out.push(t.elapsed().as_secs_f64());
            epoch += 1;
        }
    }
    let (a, b) = (median(w1), median(w2));
    anyhow::ensure!(
        c.status().chains as usize == o.chains,
        "not every chain was processed"
    );
    Ok(Report {
        chains: o.chains,
        setup_secs,
        cold_measured,
        cold_secs: cold_measured.then_some(cold),
        warm_1_thread_secs: a,
        warm_2_threads_secs: b,
        speedup: a / b,
        per_chain_us: b * 1e6 / o.chains as f64,
        peak_rss_mib: peak_rss_mib(),
    })
}
