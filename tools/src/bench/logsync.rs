//! `vigil-bench log-sync`: what one durable write of the queue's log costs,
//! three ways side by side on the same file system, in alternating rounds:
//! - `append`: write at the end of a growing file + `fdatasync` (each sync
//!   also commits the file's new size);
//! - `overwrite`: write into a preallocated file through the page cache +
//!   `fdatasync` (what the log did before);
//! - `direct`: the same overwrite with `O_DIRECT` (whole aligned blocks, no
//!   page cache) + `fdatasync` (what `vigil-queue.wal` does now);
//! - `direct-dsync`: the same `O_DIRECT` overwrite on a file opened `O_DSYNC`,
//!   no `fdatasync` (the kernel flushes the device cache before `pwrite`
//!   returns: one system call and one sleep per write instead of two).
//!
//! Each write is one 4 KiB block (a group commit of ~20 small messages).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::{cpu_secs, Percentiles};

const BLOCK: usize = 4096;
/// Preallocated size of the overwrite files (the log's own size).
const SIZE: u64 = 8 << 20;

/// One way of writing, over every round.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `append`, `overwrite`, `direct` or `direct-dsync`.
    pub method: String,
    /// Wall time per write + sync.
    pub latency: Percentiles,
    /// Mean wall time per write + sync, µs.
    pub mean_us: f64,
    /// CPU time of this process per write + sync, µs (10 ms ticks over all rounds).
    pub cpu_us: f64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the files were.
    pub dir: String,
    /// Writes per method.
    pub writes: usize,
    /// One row per method.
    pub rows: Vec<Row>,
    /// `direct` mean latency / `overwrite` mean latency.
    pub direct_vs_overwrite: f64,
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Append,
    Overwrite,
    Direct,
    DirectDsync,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Append => "append",
            Method::Overwrite => "overwrite",
            Method::Direct => "direct",
            Method::DirectDsync => "direct-dsync",
        }
    }
}

/// A block-aligned 4 KiB slice inside `raw` (safe code: `align_offset`).
fn aligned(raw: &mut [u8]) -> &mut [u8] {
    let at = raw.as_ptr().align_offset(BLOCK);
    &mut raw[at..at + BLOCK]
}

fn preallocate(path: &Path) -> anyhow::Result<()> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < SIZE {
        f.write_all_at(&zeros, at)?;
        at += zeros.len() as u64;
    }
    f.sync_all()?;
    Ok(())
}

fn open(dir: &Path, m: Method) -> anyhow::Result<File> {
    let path = dir.join(format!("{}.bin", m.name()));
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    match m {
        Method::Append => {
            o.create(true).truncate(true);
        }
        Method::Overwrite => {}
        Method::Direct => {
            o.custom_flags(libc::O_DIRECT);
        }
        Method::DirectDsync => {
            o.custom_flags(libc::O_DIRECT | libc::O_DSYNC);
        }
    }
    o.open(&path).with_context(|| {
        format!(
            "cannot open {} for `{}` (O_DIRECT needs a file system that supports it, not tmpfs)",
            path.display(),
            m.name()
        )
    })
}

/// Runs `rounds` rounds of `per_round` writes per method in `dir`.
pub fn run(dir: &Path, rounds: usize, per_round: usize, progress: &dyn Fn(&str)) -> anyhow::Result<Report> {
    let work =
        tempfile::tempdir_in(dir).with_context(|| format!("cannot make a temp dir in {}", dir.display()))?;
    preallocate(&work.path().join("overwrite.bin"))?;
    preallocate(&work.path().join("direct.bin"))?;
    preallocate(&work.path().join("direct-dsync.bin"))?;
    let methods = [
        Method::Append,
        Method::Overwrite,
        Method::Direct,
        Method::DirectDsync,
    ];
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); methods.len()];
    let mut cpu = vec![0.0f64; methods.len()];
    let mut raw = vec![b'x'; BLOCK * 2];
    let block = aligned(&mut raw);
    let mut append_at = 0u64;
    for round in 0..rounds {
        progress(&format!("round {}/{rounds}", round + 1));
        for (i, m) in methods.iter().enumerate() {
            let f = open(work.path(), *m)?;
            if matches!(m, Method::Append) {
                f.set_len(append_at)?;
            }
            let c0 = cpu_secs(None).unwrap_or(0.0);
            for n in 0..per_round {
                let at = match m {
                    Method::Append => {
                        append_at += BLOCK as u64;
                        append_at - BLOCK as u64
                    }
                    _ => (n * BLOCK) as u64 % SIZE,
                };
                let t = Instant::now();
                f.write_all_at(block, at)
                    .with_context(|| format!("`{}` write failed", m.name()))?;
                if !matches!(m, Method::DirectDsync) {
                    f.sync_data()?;
                }
                lat[i].push(t.elapsed().as_nanos() as u64);
            }
            cpu[i] += cpu_secs(None).unwrap_or(0.0) - c0;
        }
    }
    let rows: Vec<Row> = methods
        .iter()
        .zip(lat)
        .zip(&cpu)
        .map(|((m, l), c)| {
            let n = l.len().max(1);
            let mean_us = l.iter().sum::<u64>() as f64 / n as f64 / 1000.0;
            Row {
                method: m.name().into(),
                latency: Percentiles::from_nanos(l),
                mean_us,
                cpu_us: c * 1e6 / n as f64,
            }
        })
        .collect();
    let direct_vs_overwrite = rows[2].mean_us / rows[1].mean_us;
    Ok(Report {
        dir: dir.display().to_string(),
        writes: rounds * per_round,
        rows,
        direct_vs_overwrite,
    })
}
