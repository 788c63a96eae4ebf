//! `vigilctl bus ...` and `vigilctl queue ...`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

#[derive(Debug, Subcommand)]
pub(crate) enum BusCmd {
    /// Live topics and patterns, and durable topics.
    Topics,
    /// Apps, their grants and connected sessions.
    Apps,
    /// Create an app; prints its token once.
    AppAdd { name: String },
    /// Remove an app created with app-add.
    AppRemove { name: String },
    /// Grant VERB (publish|send|subscribe|request|serve) on PATTERN (*, name, prefix.*) to APP.
    Grant {
        app: String,
        verb: String,
        pattern: String,
    },
    /// Revoke a grant.
    Revoke {
        app: String,
        verb: String,
        pattern: String,
    },
    /// Publish each line of stdin as one durable message; prints how many were confirmed.
    Publish {
        topic: String,
        #[command(flatten)]
        who: AppFlags,
    },
    /// Print each message's payload as one line.
    Consume {
        topic: String,
        /// Consumer group: the app name (the default) or APP.NAME; groups are per app.
        #[arg(long)]
        group: Option<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Ack each message after printing it (else it is delivered again later).
        #[arg(long)]
        ack: bool,
        /// Stop after this long without a message, ms.
        #[arg(long, default_value_t = 2000)]
        idle_ms: u64,
        #[command(flatten)]
        who: AppFlags,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct AppFlags {
    /// App name to connect as.
    #[arg(long)]
    app: String,
    /// The app's token (else --token-file, else VIGIL_BUS_TOKEN).
    #[arg(long, env = "VIGIL_BUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the app's token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Bus URL: `ws://HOST:PORT`, or `unix:PATH` for the node's Unix socket
    /// (DIR/bus.sock, owner only, no WebSocket framing: faster on the same
    /// host). Default: the WebSocket address in DIR/bus.url.
    #[arg(long)]
    bus: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCmd {
    /// Depth, in flight, acked, redelivered, dead-lettered per topic and group.
    Stats { topic: Option<String> },
    /// Messages in TOPIC's dead-letter topic, a page at a time; --replay moves them all back.
    Dlq {
        topic: String,
        /// Move every dead letter back to TOPIC (audited).
        #[arg(long)]
        replay: bool,
        /// First sequence number to list (the previous page's `next`).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Dead letters per page, 1 to 1000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
}

async fn connect_app(
    who: &AppFlags,
    data_dir: Option<&std::path::Path>,
) -> Result<vigil_tools::bus::BusClient> {
    let token = match (&who.token, &who.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?.trim().to_owned(),
        (None, None) => anyhow::bail!("no token: pass --token, --token-file or set VIGIL_BUS_TOKEN (the operator creates one with `vigilctl bus app-add NAME`)"),
    };
    let url = match &who.bus {
        Some(u) => u.clone(),
        None => {
            let dir = data_dir.unwrap_or(std::path::Path::new(".vigil-dev"));
            std::fs::read_to_string(dir.join("bus.url"))
                .map(|s| s.trim().to_owned())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "is the node running with the bus? no bus.url in {} (pass --bus URL)",
                        dir.display()
                    )
                })?
        }
    };
    vigil_tools::bus::BusClient::connect(&url, &who.app, &token).await
}

pub(crate) async fn bus_cmd(
    ep: &dyn Fn() -> Result<Endpoint>,
    cmd: BusCmd,
    json_out: bool,
    data_dir: Option<&std::path::Path>,
) -> Result<()> {
    // Resolved (rpc.url and the cookie read) only by the admin commands.
    let rpc = |m: &'static str, p: Value| async move { ep()?.call(m, p).await };
    match cmd {
        BusCmd::Topics => {
            let r = rpc("bus_topics", json!([])).await?;
            if json_out {
                crate::print_json(&r)?;
            } else {
                if !crate::none(&r["durable"], "no durable topics") {
                    println!("{:<40} {:>8} {:>8}", "DURABLE TOPIC", "DEPTH", "GROUPS");
                }
                for t in r["durable"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<40} {:>8} {:>8}",
                        t["topic"].as_str().unwrap_or("?"),
                        t["depth"].as_u64().unwrap_or(0),
                        t["groups"].as_u64().unwrap_or(0)
                    );
                }
                if !crate::none(&r["live"], "no live subscriptions") {
                    println!("{:<40} {:>8}", "LIVE TOPIC / PATTERN", "SUBS");
                }
                for t in r["live"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<40} {:>8}",
                        t["topic"].as_str().unwrap_or("?"),
                        t["subscribers"].as_u64().unwrap_or(0)
                    );
                }
            }
        }
        BusCmd::Apps => {
            let r = rpc("bus_apps", json!([])).await?;
            if json_out {
                crate::print_json(&r)?;
            } else if !crate::none(&r, "no bus apps (`vigilctl bus app-add NAME` adds one)") {
                for a in r.as_array().cloned().unwrap_or_default() {
                    let grants: Vec<String> = a["grants"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|g| g[0].as_str().unwrap_or("?").to_owned())
                        .collect();
                    println!(
                        "{} ({}; {} sessions): {}",
                        a["name"].as_str().unwrap_or("?"),
                        a["source"].as_str().unwrap_or("?"),
                        a["sessions"],
                        if grants.is_empty() {
                            "no grants".into()
                        } else {
                            grants.join(", ")
                        }
                    );
                }
            }
        }
        BusCmd::AppAdd { name } => {
            let r = rpc("bus_app_add", json!([name])).await?;
            if json_out {
                crate::print_json(&r)?;
            } else {
                println!("{}", r["token"].as_str().unwrap_or(""));
                eprintln!("token for app `{name}` (shown once; grant it rights with `vigilctl bus grant {name} VERB PATTERN`)");
            }
        }
        BusCmd::AppRemove { name } => {
            let r = rpc("bus_app_remove", json!([name])).await?;
            if json_out {
                crate::print_json(&r)?
            } else {
                println!("removed {name}")
            }
        }
        BusCmd::Grant { app, verb, pattern } => {
            let r = rpc("bus_grant", json!([app, verb, pattern])).await?;
            if json_out {
                crate::print_json(&r)?
            } else {
                println!("granted {verb}:{pattern} to {app}")
            }
        }
        BusCmd::Revoke { app, verb, pattern } => {
            let r = rpc("bus_revoke", json!([app, verb, pattern])).await?;
            if json_out {
                crate::print_json(&r)?
            } else {
                println!("revoked {verb}:{pattern} from {app}")
            }
        }
        BusCmd::Publish { topic, who } => {
            let client = connect_app(&who, data_dir).await?;
            let mut pending = std::collections::VecDeque::new();
            let (mut published, mut confirmed, mut failed) = (0u64, 0u64, Vec::new());
            // Lines are bytes (a payload need not be UTF-8); a read error
            // stops reading but still reports what was confirmed.
            let mut input = tokio::io::BufReader::new(tokio::io::stdin());
            let mut line = Vec::new();
            let read_error = loop {
                line.clear();
                match tokio::io::AsyncBufReadExt::read_until(&mut input, b'\n', &mut line).await {
                    Ok(0) => break None,
                    Ok(_) => {}
                    Err(e) => break Some(e),
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                pending.push_back(client.publish_start(&topic, &line));
                published += 1;
                if pending.len() >= 256 {
                    match pending.pop_front().expect("non-empty").await {
                        Ok(_) => confirmed += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
            };
            if let Some(e) = &read_error {
                failed.push(format!("stopped reading stdin after {published} lines: {e}"));
            }
            for p in pending {
                match p.await {
                    Ok(_) => confirmed += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if json_out {
                crate::print_json(
                    &json!({ "published": published, "confirmed": confirmed, "errors": failed }),
                )?;
            } else {
                println!("confirmed {confirmed} of {published} messages on {topic}");
                for e in failed.iter().take(5) {
                    eprintln!("error: {e}");
                }
            }
            anyhow::ensure!(
                failed.is_empty(),
                "{} of {published} messages were not confirmed{}",
                published - confirmed,
                if read_error.is_some() {
                    ", and stdin could not be read to its end"
                } else {
                    ""
                }
            );
        }
        BusCmd::Consume {
            topic,
            group,
            count,
            ack,
            idle_ms,
            who,
        } => {
            let mut client = connect_app(&who, data_dir).await?;
            // Lease no more than we will print, and hand back what we did not settle.
            let credit = count.map(|c| c.clamp(1, 256) as u32);
            let sub = client.subscribe_with(&topic, group.as_deref(), credit).await?;
            let mut n = 0usize;
            // Acks that would free credit for deliveries beyond --count wait
            // for the unsubscribe, which acks them as the subscription ends.
            let mut deferred = Vec::new();
            // With --count, a lease that ends before the unsubscribe brings its
            // message again: it is printed (and counted) once.
            let mut seen = std::collections::HashSet::new();
            while count.is_none_or(|c| n < c) {
                let Some(m) = client.next_msg(std::time::Duration::from_millis(idle_ms)).await else {
                    break;
                };
                if m["op"] == "error" {
                    anyhow::bail!(
                        "{}: {}",
                        m["code"].as_str().unwrap_or("?"),
                        m["message"].as_str().unwrap_or("")
                    );
                }
                if count.is_some() && !seen.insert(m["seq"].as_u64()) {
                    continue;
                }
                if json_out {
                    println!("{m}");
                } else {
                    println!("{}", String::from_utf8_lossy(&vigil_tools::bus::payload(&m)));
                }
                if ack {
                    let seq = m["seq"].as_u64().unwrap_or(0);
                    let left = count.map(|c| c - n - 1);
                    if left.is_none_or(|l| l >= credit.unwrap_or(0) as usize) {
                        client.ack(sub, seq).await?;
                    } else {
                        deferred.push(seq);
                    }
                }
                n += 1;
            }
            let acked = client.unsubscribe_acking(sub, &deferred).await?;
            anyhow::ensure!(
                acked == deferred.len() as u64,
                "{} of the last {} messages printed were not acked (their leases had ended): they will be delivered again",
                deferred.len() as u64 - acked,
                deferred.len()
            );
        }
    }
    Ok(())
}

pub(crate) async fn queue_cmd(ep: &Endpoint, cmd: QueueCmd, json_out: bool) -> Result<()> {
    match cmd {
        QueueCmd::Stats { topic } => {
            let params = topic.map(|t| json!([t])).unwrap_or(json!([]));
            let r = ep.call("queue_stats", params).await?;
            if json_out {
                crate::print_json(&r)?;
                return Ok(());
            }
            if crate::none(&r, "no durable topics") {
                return Ok(());
            }
            println!(
                "{:<30} {:<8} {:>8} {:<16} {:>8} {:>9} {:>9} {:>11} {:>13}",
                "TOPIC",
                "KIND",
                "DEPTH",
                "GROUP",
                "PENDING",
                "DELIVERED",
                "ACKED",
                "REDELIVERED",
                "DEAD-LETTERED"
            );
            for t in r.as_array().cloned().unwrap_or_default() {
                let groups = t["groups"].as_array().cloned().unwrap_or_default();
                if groups.is_empty() {
                    println!(
                        "{:<30} {:<8} {:>8} {:<16}",
                        t["topic"].as_str().unwrap_or("?"),
                        t["kind"].as_str().unwrap_or("?"),
                        t["depth"].as_u64().unwrap_or(0),
                        "-"
                    );
                }
                for g in groups {
                    println!(
                        "{:<30} {:<8} {:>8} {:<16} {:>8} {:>9} {:>9} {:>11} {:>13}",
                        t["topic"].as_str().unwrap_or("?"),
                        t["kind"].as_str().unwrap_or("?"),
                        t["depth"].as_u64().unwrap_or(0),
                        g["group"].as_str().unwrap_or("?"),
                        g["pending"].as_u64().unwrap_or(0),
                        g["delivered"].as_u64().unwrap_or(0),
                        g["acked"].as_u64().unwrap_or(0),
                        g["redelivered"].as_u64().unwrap_or(0),
                        g["dead_lettered"].as_u64().unwrap_or(0)
                    );
                }
            }
        }
        QueueCmd::Dlq {
            topic,
            replay,
            from,
            limit,
        } => {
            if replay {
                let r = ep.call("queue_dlq_replay", json!([topic])).await?;
                if json_out {
                    crate::print_json(&r)?
                } else {
                    println!("replayed {} messages back to {topic}", r["replayed"])
                }
            } else {
                let r = ep.call("queue_dlq", json!([topic, from, limit])).await?;
                if json_out {
                    crate::print_json(&r)?;
                } else if !crate::none(&r["items"], &format!("no dead letters on {topic}")) {
                    for m in r["items"].as_array().cloned().unwrap_or_default() {
                        println!(
                            "seq {} from {} ({} after {} deliveries): {}",
                            m["seq"],
                            m["sender"].as_str().unwrap_or("?"),
                            m["headers"]["dlq-reason"].as_str().unwrap_or("?"),
                            m["headers"]["dlq-deliveries"].as_str().unwrap_or("?"),
                            String::from_utf8_lossy(&vigil_tools::bus::payload(&m))
                        );
                    }
                    if let Some(next) = r["next"].as_u64() {
                        println!("more: vigilctl queue dlq {topic} --from {next}");
                    }
                }
            }
        }
    }
    Ok(())
}
