//! The VDF worker: computes epoch `head + 1` on a dedicated thread, saving
//! its progress at every checkpoint (flushed), so a crash or a kill resumes
//! from the last checkpoint. When a peer's valid epoch for the same number
//! arrives first, the head moves past the worker's target; it drops its work
//! and starts on the next epoch. With a genesis anchor, it first waits until
//! the epoch's anchor block is final in its source. With `min_epoch` set, a
//! worker that finished an epoch sooner waits out the rest before the next.

use std::time::{Duration, Instant};

use vigil_protocols::epoch::{self, Epoch};
use vigil_protocols::vdf::{Outcome, Progress, Vdf};

use super::store::SavedProgress;
use super::{Chain, Origin};
use crate::metrics as m;
use crate::supervision::WorkerCtx;

/// The worker body for `ChildSpec::worker("vdf", ...)`.
pub fn run(chain: &Chain, ctx: &WorkerCtx) -> Result<(), String> {
    while !ctx.should_stop() {
        let started = Instant::now();
        let target = chain.head() + 1;
        let prev = chain
            .prev_output(target)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("epoch {} is missing from the store", target - 1))?;
        let Some(anchor) = wait_for_anchor(chain, ctx, target) else {
            continue;
        };
        let input = epoch::input(chain.genesis(), target, &prev, &anchor);
        let saved = chain.store().load_progress().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring an unreadable VDF checkpoint");
            None
        });
        let (from, resumed) = match saved {
            Some(s) if s.number == target && s.input == input => (s.progress, true),
            _ => (Progress::start(&input), false),
        };
        if resumed {
            tracing::info!(
                epoch = target,
                segment = from.done,
                "VDF worker resumes from its last checkpoint"
            );
        }
        let params = *chain.params();
        let vdf = Vdf::new(params, &input).map_err(|e| e.to_string())?;
        chain.update_status(|s| {
            s.computing = target;
            s.segments_done = from.done;
            s.progress = f64::from(from.done) / f64::from(params.segments);
            s.resumed = resumed;
        });
        let mut last = Instant::now();
        let mut save_err = None;
        let outcome = vdf.evaluate(from, &|| ctx.should_stop() || chain.head() + 1 != target, |p| {
            let steps = params.segment_len(p.done - 1);
            let rate = steps as f64 / last.elapsed().as_secs_f64().max(1e-9);
            last = Instant::now();
            metrics::counter!(m::VDF_ITERATIONS).increment(steps);
            metrics::gauge!(m::VDF_RATE).set(rate);
            let left = params.iterations - params.boundary(p.done);
            // Saved before shown: a status never runs ahead of what a restart resumes from.
            let saved = SavedProgress {
                number: target,
                input,
                progress: p.clone(),
            };
            if let Err(e) = chain.store().save_progress(&saved) {
                save_err.get_or_insert(e.to_string());
            }
            chain.update_status(|s| {
                s.segments_done = p.done;
                s.progress = f64::from(p.done) / f64::from(params.segments);
                s.rate = rate;
                s.eta_secs = Some(left as f64 / rate.max(1.0));
            });
        });
        if let Some(e) = save_err {
            // Losing checkpoints loses work after a crash, not correctness.
            tracing::warn!(error = %e, "cannot save a VDF checkpoint");
        }
        match outcome {
            Outcome::Done(proof) => {
                let e = Epoch::from_proof(target, anchor, proof);
                match chain.append(e, Origin::Local) {
                    Ok(_) => {}
                    // A peer's epoch landed in between: it is the same epoch
                    // (the VDF is deterministic) or the chain moved on.
                    Err(super::AppendError::Conflict(n)) => {
                        return Err(format!(
                            "our epoch {n} differs from the stored one: VDF or store fault"
                        ));
                    }
                    Err(super::AppendError::OutOfOrder { .. }) => {}
                    Err(super::AppendError::Store(e)) => {
                        return Err(format!("cannot store epoch {target}: {e}"))
                    }
                }
                let _ = chain.store().clear_progress();
                pace(chain, ctx, started, target);
            }
            Outcome::Stopped(_) if chain.head() + 1 != target => {
                tracing::info!(
                    epoch = target,
                    head = chain.head(),
                    "the head moved (a peer's epoch arrived first, or a rollback): starting over from it"
                );
                let _ = chain.store().clear_progress();
            }
            Outcome::Stopped(_) => break,
        }
    }
    chain.update_status(|s| s.computing = 0);
    Ok(())
}

/// Waits until `min_epoch` has passed since the worker `started` on epoch
/// `done`, unless it should stop or the head moved on from `done` (a peer's
/// epoch: the next one is due).
fn pace(chain: &Chain, ctx: &WorkerCtx, started: Instant, done: u64) {
    let until = started + chain.inner.settings.min_epoch;
    while Instant::now() < until && !ctx.should_stop() && chain.head() == done {
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(PACE_POLL));
    }
}

/// How often a pacing worker looks at the head and its stop flag.
const PACE_POLL: Duration = Duration::from_millis(20);

/// How often a worker asks its source again while the anchor is not final.
const ANCHOR_POLL: Duration = Duration::from_millis(500);

/// The anchor of epoch `target`, waiting while it is not final; `None` when
/// the worker should stop or a peer's epoch `target` arrived meanwhile.
fn wait_for_anchor(chain: &Chain, ctx: &WorkerCtx, target: u64) -> Option<Vec<u8>> {
    let mut last_why = String::new();
    loop {
        if ctx.should_stop() || chain.head() + 1 != target {
            chain.update_status(|s| s.waiting_for_anchor = None);
            return None;
        }
        match chain.expected_anchor_blocking(target) {
            Ok(anchor) => {
                chain.update_status(|s| s.waiting_for_anchor = None);
                return Some(anchor);
            }
            Err(e) => {
                let why = e.to_string();
                if why != last_why {
                    tracing::info!(epoch = target, reason = %why, "VDF worker waits for the epoch's anchor");
                    chain.update_status(|s| {
                        s.computing = target;
                        s.waiting_for_anchor = Some(why.clone());
                    });
                    last_why = why;
                }
                let until = Instant::now() + ANCHOR_POLL;
                while Instant::now() < until && !ctx.should_stop() && chain.head() + 1 == target {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}
