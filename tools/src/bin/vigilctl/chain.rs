//! `vigilctl chain` and `vigilctl security`.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

/// `vigilctl security ...`
#[derive(Debug, Subcommand)]
pub(crate) enum SecurityCmd {
    /// Rules and which actors are paused.
    Rules,
    /// Pause an actor (it stays supervised and keeps its queue; it just does not act).
    Pause {
        /// `challenges` or `layer2`.
        actor: String,
    },
    /// Resume a paused actor.
    Resume {
        /// `challenges` or `layer2`.
        actor: String,
    },
    /// The newest detections.
    Alerts {
        /// Newest N.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

/// `vigilctl chain`: every source's head, finalized, lag, last reorg, health.
pub(crate) async fn chain(ep: &Endpoint, json_out: bool) -> Result<()> {
    let r = ep.call("chain_status", json!([])).await?;
    if json_out {
        crate::print_json(&r)?;
        return Ok(());
    }
    if crate::none(&r, "no chain sources ([[chain.sources]] in the config)") {
        return Ok(());
    }
    println!(
        "{:<16} {:>10} {:>10} {:>6}  {:<22} health",
        "source", "head", "finalized", "lag", "last reorg"
    );
    for s in r.as_array().into_iter().flatten() {
        let n = |v: &Value| v.as_u64().map_or("-".into(), |x| x.to_string());
        let reorg = s["last_reorg"].as_object().map_or("-".into(), |d| {
            format!("depth {} above {}", d["reorg_depth"], d["ancestor"])
        });
        println!(
            "{:<16} {:>10} {:>10} {:>6}  {:<22} {}",
            s["name"].as_str().unwrap_or("-"),
            n(&s["head"]),
            n(&s["finalized"]),
            n(&s["lag"]),
            reorg,
            s["health"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

pub(crate) async fn security(ep: &Endpoint, cmd: Option<SecurityCmd>, json_out: bool) -> Result<()> {
    let r = match &cmd {
        None | Some(SecurityCmd::Rules) => ep.call("security_rules", json!([])).await?,
        Some(SecurityCmd::Pause { actor }) => ep.call("security_pause", json!([actor])).await?,
        Some(SecurityCmd::Resume { actor }) => ep.call("security_resume", json!([actor])).await?,
        Some(SecurityCmd::Alerts { limit }) => ep.call("chain_alerts", json!([limit])).await?,
    };
    if json_out {
        crate::print_json(&r)?;
        return Ok(());
    }
    match cmd {
        None | Some(SecurityCmd::Rules) => {
            // The pause switches, not whether the actor runs on this node
            // (`vigilctl actors` shows that).
            for (actor, paused) in r["paused"].as_object().into_iter().flatten() {
                println!(
                    "{actor:<12} {}",
                    if paused.as_bool() == Some(true) {
                        "PAUSED"
                    } else {
                        "not paused"
                    }
                );
            }
            let rules = r["rules"].as_array().cloned().unwrap_or_default();
            if rules.is_empty() {
                println!("no security rules configured ([[security.rules]] in the config)");
            }
            for rule in &rules {
                println!(
                    "rule: when {} -> {}{}",
                    rule["when"].as_str().unwrap_or("-"),
                    rule["action"].as_str().unwrap_or("-"),
                    rule["source"]
                        .as_str()
                        .map(|s| format!(" (source {s})"))
                        .unwrap_or_default()
                );
            }
        }
        Some(SecurityCmd::Pause { actor }) | Some(SecurityCmd::Resume { actor }) => {
            println!(
                "{actor}: {}",
                if r["paused"].as_bool() == Some(true) {
                    "paused"
                } else {
                    "not paused"
                }
            );
        }
        Some(SecurityCmd::Alerts { .. }) => {
            if crate::none(&r, "no security detections") {
                return Ok(());
            }
            for d in r.as_array().into_iter().flatten() {
                println!(
                    "{} {:<10} {:<18} {}{}",
                    d["at_unix_ms"],
                    d["source"].as_str().unwrap_or("-"),
                    d["kind"].as_str().unwrap_or("-"),
                    d["detail"].as_str().unwrap_or(""),
                    d["actions"]
                        .as_array()
                        .filter(|a| !a.is_empty())
                        .map(|a| {
                            let names: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
                            format!(" -> {}", names.join(", "))
                        })
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
