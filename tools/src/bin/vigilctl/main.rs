//! `vigilctl`: the admin RPC client of a vigil node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use vigil_tools::client::Endpoint;

mod audit;
mod bus;
mod chain;
mod continuity;
mod epoch;
mod keys;
mod layer2;
mod net;
mod storage;
use bus::{bus_cmd, queue_cmd, BusCmd, QueueCmd};
use net::NetCmd;

/// Talk to a running vigil node over its admin RPC.
#[derive(Debug, Parser)]
#[command(
    name = "vigilctl",
    version,
    about = "Talk to a running vigil node over its admin RPC",
    long_about = "Talk to a running vigil node over its admin RPC.\n\n\
        The node writes its RPC URL to DIR/rpc.url and an auth cookie to DIR/.cookie at start;\n\
        vigilctl reads both from --data-dir (default .vigil-dev, the `vigil dev` data dir).\n\n\
        Examples:\n  vigilctl --data-dir /var/lib/vigil status\n  vigilctl status --json | jq .info.peer_id\n  vigilctl call node_info"
)]
struct Cli {
    /// Data dir of the node (finds rpc.url and .cookie there).
    #[arg(long, global = true, env = "VIGIL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// RPC URL (overrides DIR/rpc.url).
    #[arg(long, global = true, value_name = "URL")]
    rpc: Option<String>,
    /// Cookie file (overrides DIR/.cookie).
    #[arg(long, global = true, value_name = "FILE")]
    cookie: Option<PathBuf>,
    /// Call with this API key instead of the cookie (what its role allows;
    /// see `vigilctl keys`). Prefer the environment variable: arguments are
    /// visible to other users in `ps`.
    #[arg(
        long,
        global = true,
        env = "VIGIL_RPC_KEY",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    key: Option<String>,
    /// Trust this PEM certificate (or CA) for an https:// node instead of
    /// the system's roots, e.g. the node's self-signed rpc.tls_cert.
    #[arg(long, global = true, env = "VIGIL_RPC_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Seconds a call may take before vigilctl gives up on it (the node
    /// may still finish it).
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Summary of the node: identity, genesis, uptime, health.
    Status,
    /// Ask the node to shut down cleanly.
    Stop,
    /// The supervision tree; `restart NAME`, `panic NAME`, `dead-letters`.
    Actors {
        #[command(subcommand)]
        cmd: Option<ActorsCmd>,
    },
    /// Connected peers: id, direction, ping, score, agent, address.
    Peers,
    /// The epoch chain: the head and sync state, or epoch N.
    Epoch {
        /// Epoch number (default: the head).
        number: Option<u64>,
    },
    /// The VDF worker: mode, progress, rate, ETA.
    Vdf,
    /// Datasets: put (upload with a progress bar), list, announced, get, remove.
    Storage {
        #[command(subcommand)]
        cmd: storage::StorageCmd,
    },
    /// External chains followed: head, finalized, lag, last reorg, health.
    Chain,
    /// Security: rules and paused actors (default), pause, resume, alerts.
    Security {
        #[command(subcommand)]
        cmd: Option<chain::SecurityCmd>,
    },
    /// Layer2 payment channels: list (default), channel, open, pay, close, dispute.
    Layer2 {
        #[command(subcommand)]
        cmd: Option<layer2::Layer2Cmd>,
    },
    /// Continuity chains: status (default), `proof DATASET EPOCH`, roots, `check PEER DATASET FROM [TO]`.
    Continuity {
        #[command(subcommand)]
        cmd: Option<continuity::ContinuityCmd>,
    },
    /// Availability challenges: run, audit, stats, attestations.
    Challenge {
        #[command(subcommand)]
        cmd: storage::ChallengeCmd,
    },
    /// The p2p network: info, bans, ban/unban, dial, gossip probes.
    Net {
        #[command(subcommand)]
        cmd: NetCmd,
    },
    /// The inter-application bus: topics, apps, grants; publish and consume.
    Bus {
        #[command(subcommand)]
        cmd: BusCmd,
    },
    /// Durable queues: stats and dead letters.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
    /// The audit log (a hash chain with signed checkpoints): list (default), verify, export.
    Audit {
        #[command(subcommand)]
        cmd: Option<audit::AuditCmd>,
        /// Same as `audit verify`.
        #[arg(long, hide = true)]
        verify: bool,
        /// First entry to list.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Entries to list at most (1-1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// API keys of the admin RPC: list (default), add NAME --role ROLE, revoke NAME.
    Keys {
        #[command(subcommand)]
        cmd: Option<keys::KeysCmd>,
    },
    /// Print a shell completion script, e.g. `vigilctl completions bash > /etc/bash_completion.d/vigilctl`.
    Completions(vigil_node::cli::CompletionsArgs),
    /// Write man pages (vigilctl.1 and one per subcommand) into --out, or print vigilctl(1).
    Man(vigil_node::cli::ManArgs),
    /// Call any RPC method; PARAMS is a JSON array.
    Call {
        /// Method name, e.g. node_info.
        method: String,
        /// Positional params as a JSON array.
        #[arg(default_value = "[]")]
        params: String,
    },
}

#[derive(Debug, Subcommand)]
enum ActorsCmd {
    /// Stop and restart one actor (or a supervisor and its children).
    Restart {
        /// Actor name, as shown by `vigilctl actors`.
        name: String,
    },
    /// Make an actor panic (needs `debug.fault_injection = true` on the node).
    Panic {
        /// Actor name, as shown by `vigilctl actors`.
        name: String,
    },
    /// Messages that crashed their handler too often.
    DeadLetters,
}

fn main() -> ExitCode {
    // `vigilctl ... | head` ends quietly when the reader goes away, like
    // other command-line tools, instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every list command says when its list is empty, in one line with what
/// to do, instead of printing nothing or a bare header: prints `message`
/// and returns true when `list` (an array or object) is empty or absent.
pub(crate) fn none(list: &Value, message: &str) -> bool {
    let empty = match list {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => true,
    };
    if empty {
        println!("{message}");
    }
    empty
}

/// `--json` output: pretty-printed, one document per command (`bus consume`
/// alone streams, one compact message per line).
pub(crate) fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let resolve = || {
        let ep = match &cli.key {
            Some(key) => Endpoint::with_key(cli.data_dir.as_deref(), cli.rpc.as_deref(), key),
            None => Endpoint::resolve(cli.data_dir.as_deref(), cli.rpc.as_deref(), cli.cookie.as_deref()),
        }?
        .with_timeout(std::time::Duration::from_secs_f64(cli.timeout.max(0.001)));
        match &cli.ca {
            Some(ca) => ep.with_ca(ca),
            None => Ok(ep),
        }
    };
    // `bus publish` and `bus consume` speak the bus with an app's token:
    // only the admin commands need the RPC endpoint and its cookie.
    if let Command::Bus { cmd } = cli.command {
        return bus_cmd(&resolve, cmd, cli.json, cli.data_dir.as_deref()).await;
    }
    // Completions and man pages need no node.
    match &cli.command {
        Command::Completions(args) => {
            args.run(<Cli as clap::CommandFactory>::command());
            return Ok(());
        }
        Command::Man(args) => return args.run(<Cli as clap::CommandFactory>::command()),
        _ => {}
    }
    let ep = resolve()?;
    match cli.command {
        Command::Status => {
            let info = ep.call("node_info", json!([])).await?;
            let health = ep.call("node_health", json!([])).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "rpc": ep.url, "info": info, "health": health }))?
                );
            } else {
                print_status(&ep.url, &info, &health);
            }
        }
        Command::Stop => {
            let r = ep.call("node_shutdown", json!([])).await?;
            if cli.json {
                print_json(&json!({ "result": r }))?;
            } else {
                println!("node at {}: {}", ep.url, r.as_str().unwrap_or("shutting down"));
            }
        }
        Command::Actors { cmd } => {
            let (method, params) = match &cmd {
                None => ("actors_tree", json!([])),
                Some(ActorsCmd::Restart { name }) => ("actors_restart", json!([name])),
                Some(ActorsCmd::Panic { name }) => ("actors_inject_panic", json!([name])),
                Some(ActorsCmd::DeadLetters) => ("actors_dead_letters", json!([])),
            };
            let r = ep.call(method, params).await?;
            if cli.json {
                crate::print_json(&r)?;
            } else {
                match cmd {
                    None => print_tree(&r),
                    Some(ActorsCmd::Restart { name }) => println!("restarted {name}"),
                    Some(ActorsCmd::Panic { name }) => {
                        println!("panic injected into {name}; see `vigilctl actors`")
                    }
                    Some(ActorsCmd::DeadLetters) => print_dead_letters(&r),
                }
            }
        }
        Command::Peers => net::peers(&ep, cli.json).await?,
        Command::Epoch { number } => epoch::epoch(&ep, number, cli.json).await?,
        Command::Vdf => epoch::vdf(&ep, cli.json).await?,
        Command::Storage { cmd } => storage::storage_cmd(&ep, cmd, cli.json).await?,
        Command::Chain => chain::chain(&ep, cli.json).await?,
        Command::Security { cmd } => chain::security(&ep, cmd, cli.json).await?,
        Command::Challenge { cmd } => storage::challenge_cmd(&ep, cmd, cli.json).await?,
        Command::Continuity { cmd } => continuity::continuity(&ep, cmd, cli.json).await?,
        Command::Layer2 { cmd } => layer2::layer2(&ep, cmd, cli.json).await?,
        Command::Net { cmd } => net::net_cmd(&ep, cmd, cli.json).await?,
        Command::Bus { .. } => unreachable!("handled above"),
        Command::Queue { cmd } => queue_cmd(&ep, cmd, cli.json).await?,
        Command::Keys { cmd } => keys::keys(&ep, cmd, cli.json).await?,
        Command::Audit {
            cmd,
            verify,
            from,
            limit,
        } => {
            let cmd = match (cmd, verify) {
                (Some(c), _) => c,
                (None, true) => audit::AuditCmd::Verify,
                (None, false) => audit::AuditCmd::List { from, limit },
            };
            audit::audit(&ep, cmd, cli.json).await?
        }
        Command::Completions(_) | Command::Man(_) => unreachable!("handled before the endpoint"),
        Command::Call { method, params } => {
            let params: Value =
                serde_json::from_str(&params).context("PARAMS must be a JSON array, e.g. '[1, \"x\"]'")?;
            let r = ep.call(&method, params).await?;
            crate::print_json(&r)?;
        }
    }
    Ok(())
}

fn print_status(url: &str, info: &Value, health: &Value) {
    let s = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let hash = s(&info["genesis_hash"]);
    let uptime = info["uptime_secs"].as_u64().unwrap_or(0);
    let ready = if health["ready"].as_bool() == Some(true) {
        "ready"
    } else {
        "not ready"
    };
    println!("node      vigil {}", s(&info["version"]));
    println!("peer id   {}", s(&info["peer_id"]));
    println!(
        "genesis   {} ({})",
        s(&info["genesis_name"]),
        hash.get(..16).unwrap_or(&hash)
    );
    println!("health    {}, {ready}", s(&health["status"]));
    println!(
        "uptime    {}h {}m {}s",
        uptime / 3600,
        uptime / 60 % 60,
        uptime % 60
    );
    println!("account   {} (settlement chain)", s(&info["evm_address"]));
    println!("rpc       {url}");
    println!("data dir  {}", s(&info["data_dir"]));
    if let Some(addrs) = info["listen_addrs"].as_array() {
        let list: Vec<String> = addrs.iter().map(s).collect();
        println!("listen    {} (configured)", list.join(", "));
    }
    if info["insecure_key"].as_bool() == Some(true) {
        println!("WARNING   node key is stored unencrypted (dev data dir)");
    }
}

fn print_tree(tree: &Value) {
    let nodes = tree.as_array().cloned().unwrap_or_default();
    let depth = |name: &str| -> usize {
        let mut d = 0;
        let mut cur = name.to_owned();
        while let Some(parent) = nodes
            .iter()
            .find(|n| n["name"] == cur.as_str())
            .and_then(|n| n["parent"].as_str())
        {
            d += 1;
            cur = parent.to_owned();
        }
        d
    };
    println!(
        "{:<20} {:<10} {:<13} {:<9} {:<10} {:>8} {:>10}  LAST PANIC",
        "NAME", "KIND", "STRATEGY", "RESTART", "STATUS", "RESTARTS", "UPTIME"
    );
    for n in &nodes {
        let name = n["name"].as_str().unwrap_or("?");
        let text = |k: &str| n[k].as_str().unwrap_or("-").to_owned();
        let uptime = n["uptime_secs"]
            .as_f64()
            .map(|s| format!("{s:.1}s"))
            .unwrap_or_else(|| "-".into());
        let mut panic = n["last_panic"].as_str().unwrap_or("-").replace('\n', " ");
        if panic.len() > 60 {
            panic.truncate(
                panic
                    .char_indices()
                    .nth(57)
                    .map(|(i, _)| i)
                    .unwrap_or(panic.len()),
            );
            panic.push_str("...");
        }
        println!(
            "{:<20} {:<10} {:<13} {:<9} {:<10} {:>8} {:>10}  {}",
            format!("{}{}", "  ".repeat(depth(name)), name),
            text("kind"),
            text("strategy"),
            text("restart"),
            text("status"),
            n["restarts"].as_u64().unwrap_or(0),
            uptime,
            panic
        );
    }
}

fn print_dead_letters(list: &Value) {
    let items = list.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no dead letters");
        return;
    }
    for d in items {
        println!(
            "{}  {}  {}  after {} crashes: {}",
            d["actor"].as_str().unwrap_or("?"),
            d["message_type"].as_str().unwrap_or("?"),
            d["message"].as_str().unwrap_or("?"),
            d["attempts"],
            d["panic"].as_str().unwrap_or("?")
        );
    }
}
