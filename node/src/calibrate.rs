//! `vigil vdf calibrate`: this machine's VDF rate, and the iterations that
//! make an epoch last the target time here.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vigil_genesis::{Genesis, VdfMode};
use vigil_protocols::vdf::{Dataset, MemoryHard, Sha256Chain, Step};

use crate::cli::CalibrateArgs;

#[derive(Debug, Serialize)]
struct Calibration {
    mode: &'static str,
    memory_mib: u32,
    fill_secs: f64,
    measured_secs: f64,
    iterations_per_sec: f64,
    target_secs: u32,
    iterations: u64,
    genesis_iterations: u64,
    genesis_epoch_secs_here: f64,
}

/// Runs the calibration and prints the result.
pub(crate) fn run(args: CalibrateArgs) -> Result<()> {
    let g = Genesis::load(&args.genesis)?;
    let mode = args.mode.unwrap_or(g.params.vdf_mode);
    let mib = match mode {
        VdfMode::Hash => 0,
        VdfMode::MemoryHard => args.memory_mib.unwrap_or(g.params.vdf_memory_mib.max(1)),
    };
    let target = args.target_secs.unwrap_or(g.params.epoch_target_secs);
    let t = Instant::now();
    let step: Box<dyn Step> = match mode {
        VdfMode::Hash => Box::new(Sha256Chain),
        VdfMode::MemoryHard => {
            if !args.json {
                eprintln!("filling the {mib} MiB dataset...");
            }
            Box::new(MemoryHard::new(Dataset::fill(&[7; 32], mib)?))
        }
    };
    let fill = t.elapsed().as_secs_f64();
    let bar = if std::io::stderr().is_terminal() && !args.json {
        let b = ProgressBar::new(args.secs * 10);
        b.set_style(
            ProgressStyle::with_template("measuring {bar:40} {elapsed}/{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(format!("{}s", args.secs));
        Some(b)
    } else {
        None
    };
    let chunk = 1u64 << 18;
    let mut state = [1u8; 32];
    let mut steps = 0u64;
    let t = Instant::now();
    let budget = Duration::from_secs(args.secs);
    while t.elapsed() < budget {
        step.run(&mut state, chunk);
        steps += chunk;
        if let Some(b) = &bar {
            b.set_position((t.elapsed().as_secs_f64() * 10.0) as u64);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let rate = steps as f64 / secs;
    let iterations = round2(rate * f64::from(target));
    let c = Calibration {
        mode: match mode {
            VdfMode::Hash => "hash",
            VdfMode::MemoryHard => "memory-hard",
        },
        memory_mib: mib,
        fill_secs: fill,
        measured_secs: secs,
        iterations_per_sec: rate,
        target_secs: target,
        iterations,
        genesis_iterations: g.params.vdf_iterations,
        genesis_epoch_secs_here: g.params.vdf_iterations as f64 / rate,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    let mem = if mib > 0 {
        format!(" over {mib} MiB (fill {fill:.2} s)")
    } else {
        String::new()
    };
    println!(
        "{} mode{mem}: {:.2} M iterations/s on one core ({secs:.1} s measured)",
        c.mode,
        rate / 1e6
    );
    println!("for {target} s epochs on this machine: vdf_iterations = {iterations}");
    println!(
        "genesis `{}` has vdf_iterations = {}: {:.1} s per epoch here",
        g.network, g.params.vdf_iterations, c.genesis_epoch_secs_here
    );
    println!("(put the figure in a genesis with `vigil genesis new`; every node of a network shares it)");
    Ok(())
}

/// `x` rounded down to two significant digits.
fn round2(x: f64) -> u64 {
    let x = x.max(1000.0) as u64;
    let mut scale = 1u64;
    while x / scale >= 100 {
        scale *= 10;
    }
    x / scale * scale
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_to_two_digits() {
        assert_eq!(super::round2(146_234_567.0), 140_000_000);
        assert_eq!(super::round2(99_999.0), 99_000);
        assert_eq!(super::round2(10.0), 1000);
    }
}
