//! `vigilctl peers` and `vigilctl net ...`.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

/// `vigilctl net ...`
#[derive(Debug, Subcommand)]
pub(crate) enum NetCmd {
    /// Peer id, listen and external addresses, protocols.
    Info,
    /// Bans in force.
    Bans,
    /// Ban a peer (persisted; default length from network.ban_secs).
    Ban {
        /// Peer id (12D3KooW...).
        peer: String,
        /// Seconds; 0 = network.ban_secs.
        #[arg(long, default_value_t = 0)]
        secs: u64,
        /// Why (goes to the audit log).
        #[arg(long, default_value = "banned by the operator")]
        reason: String,
    },
    /// Lift a ban and reset the peer's score.
    Unban {
        /// Peer id.
        peer: String,
    },
    /// Dial a multiaddr, e.g. /ip4/10.0.0.2/tcp/30345/p2p/12D3KooW...
    Dial {
        /// Address to dial.
        addr: String,
    },
    /// Publish a gossip probe; `vigilctl net probes` on other nodes shows when it arrived.
    Probe,
    /// Gossip probes this node saw.
    Probes,
}

fn s(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// `vigilctl peers`: the connected peers as a table.
pub(crate) async fn peers(ep: &Endpoint, json_out: bool) -> Result<()> {
    let r = ep.call("net_peers", json!([])).await?;
    if json_out {
        crate::print_json(&r)?;
        return Ok(());
    }
    if crate::none(
        &r,
        "no peers connected (the node dials network.bootnodes; `vigilctl net dial ADDR` dials one)",
    ) {
        return Ok(());
    }
    let peers = r.as_array().cloned().unwrap_or_default();
    println!(
        "{:<54} {:<8} {:<8} {:>8} {:>7}  {:<14} address",
        "peer", "dir", "member", "ping ms", "score", "agent"
    );
    for p in &peers {
        let latency = p["latency_ms"].as_f64().map_or("-".into(), |l| format!("{l:.2}"));
        // A peer that is no vigil node of this genesis is disconnected
        // after network.idle_timeout_secs.
        let member = match (p["member"] == true, p["identified"] == true) {
            (true, _) => "yes",
            (false, true) => "no",
            (false, false) => "pending",
        };
        println!(
            "{:<54} {:<8} {:<8} {:>8} {:>7.1}  {:<14} {}",
            s(&p["peer_id"]),
            s(&p["direction"]),
            member,
            latency,
            p["score"].as_f64().unwrap_or(0.0),
            p["agent"].as_str().unwrap_or(if p["identified"] == true {
                "?"
            } else {
                "(identifying)"
            }),
            p["addresses"][0].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `vigilctl net ...`
pub(crate) async fn net_cmd(ep: &Endpoint, cmd: NetCmd, json_out: bool) -> Result<()> {
    let (method, params) = match &cmd {
        NetCmd::Info => ("net_info", json!([])),
        NetCmd::Bans => ("net_bans", json!([])),
        NetCmd::Ban { peer, secs, reason } => ("net_ban", json!([peer, secs, reason])),
        NetCmd::Unban { peer } => ("net_unban", json!([peer])),
        NetCmd::Dial { addr } => ("net_dial", json!([addr])),
        NetCmd::Probe => ("net_probe", json!([])),
        NetCmd::Probes => ("net_probes", json!([])),
    };
    let r = ep.call(method, params).await?;
    if json_out {
        crate::print_json(&r)?;
        return Ok(());
    }
    match cmd {
        NetCmd::Info => {
            println!("peer id    {}", s(&r["peer_id"]));
            for a in r["listen_addrs"].as_array().cloned().unwrap_or_default() {
                println!("listen     {}/p2p/{}", s(&a), s(&r["peer_id"]));
            }
            for a in r["external_addrs"].as_array().cloned().unwrap_or_default() {
                println!("external   {}", s(&a));
            }
            println!("peers      {}", r["peers"]);
            println!("banned     {}", r["banned"]);
            for p in r["protocols"].as_array().cloned().unwrap_or_default() {
                println!("protocol   {}", s(&p));
            }
        }
        NetCmd::Bans => {
            if crate::none(&r, "no bans") {
                return Ok(());
            }
            for b in r.as_array().into_iter().flatten() {
                println!(
                    "{:<54} until {:>10}  {}",
                    s(&b["peer"]),
                    b["until_unix"],
                    s(&b["reason"])
                );
            }
        }
        NetCmd::Ban { peer, .. } => println!("banned {peer}"),
        NetCmd::Unban { peer } => match r["was_banned"].as_bool() {
            Some(true) => println!("unbanned {peer}"),
            _ => println!("{peer} was not banned"),
        },
        NetCmd::Dial { addr } => println!("dialing {addr}"),
        NetCmd::Probe => println!("published probe {}", r["probe"]),
        NetCmd::Probes => {
            if crate::none(
                &r,
                "no gossip probes received (`vigilctl net probe` on another node sends one)",
            ) {
                return Ok(());
            }
            for p in r.as_array().cloned().unwrap_or_default() {
                let ms = (p["received_at_us"].as_f64().unwrap_or(0.0)
                    - p["sent_at_us"].as_f64().unwrap_or(0.0))
                    / 1000.0;
                println!("{:>20}  from {:<54} {:>8.2} ms", p["id"], s(&p["origin"]), ms);
            }
        }
    }
    Ok(())
}
