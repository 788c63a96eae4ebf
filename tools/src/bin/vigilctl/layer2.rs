//! `vigilctl layer2`: payment channels.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use vigil_layer2::amount::format_eth;
use vigil_tools::client::Endpoint;

/// `vigilctl layer2 ...`
#[derive(Debug, Subcommand)]
pub(crate) enum Layer2Cmd {
    /// The adapter's state and every channel (the default).
    Channels,
    /// One channel in full.
    Channel {
        /// Channel id (0x + 64 hex), as `vigilctl layer2` lists it.
        channel: String,
    },
    /// Open a channel with a connected peer, depositing DEPOSIT on the settlement chain.
    Open {
        /// The counterparty's peer id (see `vigilctl peers`).
        peer: String,
        /// This node's deposit: wei, or with a unit: `0.5eth`, `300gwei`.
        deposit: String,
        /// What to ask the counterparty to deposit (it puts in at most its layer2.max_join_deposit).
        #[arg(long, default_value = "0")]
        ask: String,
    },
    /// Pay AMOUNT to the counterparty: a new co-signed state, no transaction.
    Pay {
        /// Channel id.
        channel: String,
        /// Amount: wei, or with a unit: `0.01eth`.
        amount: String,
        /// Make this many payments of AMOUNT, one after another (prints p50/p99 latency).
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Close: cooperatively (both sign a final state, paid at once), or post
    /// the newest co-signed state and wait out the challenge window.
    Close {
        /// Channel id.
        channel: String,
        /// Close without the counterparty (it is unreachable or refuses).
        #[arg(long)]
        unilateral: bool,
    },
    /// Answer an old state the counterparty posted with our newest one (the
    /// watcher does this by itself).
    Dispute {
        /// Channel id.
        channel: String,
    },
}

fn wei(v: &Value) -> String {
    v.as_str()
        .and_then(|s| s.parse::<u128>().ok())
        .map_or("-".into(), format_eth)
}

fn short(id: &str) -> String {
    match id.len() {
        66 => format!("{}…{}", &id[..10], &id[62..]),
        _ => id.to_owned(),
    }
}

fn print_channel(c: &Value) {
    println!("channel   {}", c["id"].as_str().unwrap_or("-"));
    println!("peer      {}", c["peer"].as_str().unwrap_or("-"));
    println!("state     {}", c["state"].as_str().unwrap_or("-"));
    println!("nonce     {}", c["nonce"]);
    println!("ours      {}", wei(&c["ours"]));
    println!("theirs    {}", wei(&c["theirs"]));
    println!("capacity  {}", wei(&c["capacity"]));
}

pub(crate) async fn layer2(ep: &Endpoint, cmd: Option<Layer2Cmd>, json_out: bool) -> Result<()> {
    let cmd = cmd.unwrap_or(Layer2Cmd::Channels);
    let r = match &cmd {
        Layer2Cmd::Channels => {
            let status = ep.call("layer2_status", json!([])).await?;
            let channels = ep.call("layer2_channels", json!([])).await?;
            json!({"status": status, "channels": channels})
        }
        Layer2Cmd::Channel { channel } => ep.call("layer2_channel", json!([channel])).await?,
        Layer2Cmd::Open { peer, deposit, ask } => ep.call("layer2_open", json!([peer, deposit, ask])).await?,
        Layer2Cmd::Pay {
            channel,
            amount,
            count,
        } => ep.call("layer2_pay", json!([channel, amount, count])).await?,
        Layer2Cmd::Close { channel, unilateral } => {
            let mode = if *unilateral { "unilateral" } else { "cooperative" };
            ep.call("layer2_close", json!([channel, mode])).await?
        }
        Layer2Cmd::Dispute { channel } => ep.call("layer2_dispute", json!([channel])).await?,
    };
    if json_out {
        crate::print_json(&r)?;
        return Ok(());
    }
    match cmd {
        Layer2Cmd::Channels => {
            let s = &r["status"];
            println!(
                "{} as {}: {}, watcher {}",
                s["adapter"].as_str().unwrap_or("-"),
                s["address"].as_str().unwrap_or("-"),
                if s["paused"] == true {
                    "PAUSED (payments refused)"
                } else {
                    "payments on"
                },
                if s["watching"] == true {
                    "following the chain"
                } else {
                    "NOT following the chain"
                }
            );
            let list = r["channels"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no channels: `vigilctl layer2 open PEER DEPOSIT` opens one");
                return Ok(());
            }
            println!(
                "{:<23} {:<8} {:>7} {:>24} {:>24}  peer",
                "channel", "state", "nonce", "ours", "theirs"
            );
            for c in list {
                println!(
                    "{:<23} {:<8} {:>7} {:>24} {:>24}  {}",
                    short(c["id"].as_str().unwrap_or("-")),
                    c["state"].as_str().unwrap_or("-"),
                    c["nonce"],
                    wei(&c["ours"]),
                    wei(&c["theirs"]),
                    c["peer"].as_str().unwrap_or("-")
                );
            }
        }
        Layer2Cmd::Pay { count, .. } => {
            if count > 1 {
                println!(
                    "{count} payments in {} ms (p50 {} µs, p99 {} µs); now nonce {}, ours {}",
                    r["elapsed_ms"],
                    r["p50_us"],
                    r["p99_us"],
                    r["nonce"],
                    wei(&r["ours"])
                );
            } else {
                println!(
                    "paid {} in {} µs: nonce {}, ours {}",
                    wei(&r["amount"]),
                    r["latency_us"],
                    r["nonce"],
                    wei(&r["ours"])
                );
            }
        }
        _ => print_channel(&r),
    }
    Ok(())
}
