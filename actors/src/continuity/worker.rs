//! The continuity worker: a supervised dedicated thread that processes the
//! newest epoch whenever the head moves past the last processed one. Epochs
//! the node was not running for are not backfilled: their links are missing,
//! and proofs spanning them show a broken chain, as they should.

use std::time::Duration;

use super::Continuity;
use crate::epoch::Chain;
use crate::supervision::WorkerCtx;

/// The worker body; `publish` receives each epoch's signed root message.
pub fn run(
    c: &Continuity,
    chain: &Chain,
    ctx: &WorkerCtx,
    publish: &(dyn Fn(Vec<u8>) + Send + Sync),
) -> Result<(), String> {
    while !ctx.should_stop() {
        // Only epochs verified in full: a link is never built on one rolled back.
        let head = chain.final_head();
        if head > c.status().last_epoch {
            let e = chain
                .store()
                .get(head)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("epoch {head} is missing from the store"))?;
            match c.process(head, &e.output) {
                Ok(signed) => publish(signed),
                Err(err) => {
                    tracing::error!(epoch = head, error = %err, "cannot process the continuity epoch");
                    return Err(err.to_string());
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
