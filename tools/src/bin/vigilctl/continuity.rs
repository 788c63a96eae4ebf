//! `vigilctl continuity`: this node's continuity chains, its proofs, the
//! roots peers committed to, and checking a peer's chain.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

/// `vigilctl continuity ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ContinuityCmd {
    /// Chains kept, the last epoch processed, its root and time (the default).
    Status,
    /// This node's proof for one dataset at one epoch, checked end to end.
    Proof {
        /// Replica root (R_p) of one of this node's datasets (`vigilctl storage list`).
        dataset: String,
        /// Epoch number.
        epoch: u64,
    },
    /// The newest signed root each peer gossiped (its commitment).
    Roots,
    /// Ask a peer for its proofs of one dataset over epochs FROM..=TO (at
    /// most 64) and check each against the root it committed to.
    Check {
        /// The peer's id.
        peer: String,
        /// Replica root of its dataset (`vigilctl storage announced`).
        dataset: String,
        /// First epoch.
        from: u64,
        /// Last epoch (default: FROM).
        to: Option<u64>,
    },
}

fn s(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// Runs `vigilctl continuity [CMD]`.
pub(crate) async fn continuity(ep: &Endpoint, cmd: Option<ContinuityCmd>, json_out: bool) -> Result<()> {
    let cmd = cmd.unwrap_or(ContinuityCmd::Status);
    let r = match &cmd {
        ContinuityCmd::Status => ep.call("continuity_status", json!([])).await?,
        ContinuityCmd::Proof { dataset, epoch } => {
            ep.call("continuity_proof", json!([dataset, epoch])).await?
        }
        ContinuityCmd::Roots => ep.call("continuity_roots", json!([])).await?,
        ContinuityCmd::Check {
            peer,
            dataset,
            from,
            to,
        } => {
            let params = match to {
                Some(to) => json!([peer, dataset, from, to]),
                None => json!([peer, dataset, from]),
            };
            ep.call("continuity_check", params).await?
        }
    };
    // A proof or check that fails exits non-zero (after printing the JSON, if asked).
    let failed = match &cmd {
        ContinuityCmd::Proof { .. } | ContinuityCmd::Check { .. } => r["verified"] != true,
        _ => false,
    };
    if json_out {
        crate::print_json(&r)?;
        if failed {
            bail!("not verified: {}", s(&r["error"]));
        }
        return Ok(());
    }
    match cmd {
        ContinuityCmd::Status => {
            if r["chains"] == 0 && r["last_epoch"].is_null() {
                println!("no continuity chains yet (one per stored dataset, from the first epoch after it is stored)");
                return Ok(());
            }
            println!("chains       {}", r["chains"]);
            println!(
                "last epoch   {} ({} s)",
                s(&r["last_epoch"]),
                fmt_secs(&r["last_secs"])
            );
            println!("last root    {}", s(&r["last_root"]));
            println!("epochs kept  {}", r["epochs_kept"]);
            println!(
                "processed    {} epochs; {} chunks each, groups of {}, regions of {}",
                r["processed"], r["chunks"], r["group_size"], r["region_size"]
            );
        }
        ContinuityCmd::Proof { .. } => {
            if r["verified"] == true {
                println!(
                    "verified: epoch {} of {} links to epoch {}; {} proof bytes, path {} under root {}",
                    r["epoch"],
                    s(&r["dataset"]),
                    s(&r["prev_epoch"]),
                    r["proof_bytes"],
                    r["path_len"],
                    s(&r["root"])
                );
            } else {
                bail!("proof NOT verified: {}", s(&r["error"]));
            }
        }
        ContinuityCmd::Roots => {
            if crate::none(
                &r,
                "no roots from peers yet (peers gossip one per epoch once they store data)",
            ) {
                return Ok(());
            }
            println!("{:<54} {:>7} {:>6}  root", "peer", "epoch", "chains");
            for x in r.as_array().into_iter().flatten() {
                println!(
                    "{:<54} {:>7} {:>6}  {}",
                    s(&x["peer"]),
                    x["epoch"],
                    x["chains"],
                    s(&x["root"])
                );
            }
        }
        ContinuityCmd::Check { .. } => {
            if r["verified"] == true {
                println!(
                    "verified: epochs {}..={} ({} checked) against the roots the peer committed to",
                    r["from"], r["to"], r["epochs_verified"]
                );
            } else {
                bail!(
                    "chain BROKEN at epoch {}: {}",
                    s(&r["break_epoch"]),
                    s(&r["error"])
                );
            }
        }
    }
    Ok(())
}

fn fmt_secs(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.2}"))
}
