//! `vigil-testnet`: start, watch, disturb and stop a local testnet.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use anyhow::Result;
use clap::{Parser, Subcommand};
use vigil_testnet::{chaos, down, start, status, stop, up, Manifest, NodeSpec, Stopped};

/// A local vigil testnet: N `vigil run` processes of one fresh genesis on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(
    name = "vigil-testnet",
    version,
    about,
    long_about = "A local vigil testnet: N `vigil run` processes of one fresh genesis on 127.0.0.1.\n\n\
        Examples:\n  vigil-testnet up -n 5 --dir /tmp/tn\n  vigil-testnet status --dir /tmp/tn --json\n  \
        vigil-testnet chaos --dir /tmp/tn --duration 60 --kill-every 10\n  vigil-testnet logs --dir /tmp/tn 2\n  \
        vigil-testnet down --dir /tmp/tn\n  \
        vigil-testnet start --dir /tmp/tn          (the same testnet again: keys, data and ports kept)\n  \
        vigil-testnet stop --dir /tmp/tn --node 2  (one node; `start --node 2` brings it back)\n  \
        vigil-testnet up -n 6 --netns --dir /tmp/tn6  (root: each node in its own network namespace)\n  \
        vigil-testnet net --dir /tmp/tn6 partition 0,1,2 3,4,5\n  vigil-testnet net --dir /tmp/tn6 heal\n\nThe `vigil` binary is taken from $VIGIL_BIN, beside this program, or PATH."
)]
struct Cli {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create keys, genesis and data dirs, start the nodes, wait until they peer.
    Up {
        /// Number of nodes (1..=100).
        #[arg(short, long, default_value_t = 4)]
        n: usize,
        /// Folder for the testnet (must be new or empty).
        #[arg(long)]
        dir: PathBuf,
        /// p2p port of node 0; node i uses base + i (default: free ports).
        #[arg(long)]
        base_port: Option<u16>,
        /// Seconds to wait for the nodes to peer.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Genesis preset the local genesis derives from.
        #[arg(long, default_value = "testnet", value_name = "testnet|dev")]
        preset: String,
        /// Override the preset's vdf_iterations (e.g. 5000000 for sub-second epochs).
        #[arg(long, value_name = "N")]
        vdf_iterations: Option<u64>,
        /// Nodes that compute the VDF (node-0 first); the others verify and follow.
        #[arg(long, default_value_t = 1)]
        timelords: usize,
        /// Network mode: each node in its own Linux network namespace with
        /// its own address (`10.77.<i>.2`), routed through a hub whose links
        /// `vigil-testnet net` can cut or make lossy. Needs root, iproute2
        /// and iptables; `down` removes the namespaces.
        #[arg(long)]
        netns: bool,
        /// Followers verify K sampled segments of each epoch instead of
        /// recomputing all (in hash mode a full check costs what computing
        /// did: many nodes on few cores need this).
        #[arg(long, value_name = "K")]
        sampled_verify: Option<u32>,
        /// Timelords start epochs at least MS apart (`vdf.min_epoch_ms`):
        /// with many nodes on few cores, every follower's verification of a
        /// chain computed flat out adds up to more than the machine has.
        #[arg(long, value_name = "MS")]
        min_epoch_ms: Option<u64>,
    },
    /// Network mode (`up --netns`): partition, isolate, heal, or drop packets at random.
    Net {
        /// The testnet folder.
        #[arg(long)]
        dir: PathBuf,
        #[command(subcommand)]
        action: NetAction,
    },
    /// Every node: peer id, p2p address, RPC URL, peers, status.
    Status {
        /// The testnet folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop every node (SIGTERM, then SIGKILL after --timeout seconds); returns once every process is gone. The folder stays: `start` runs it again.
    Down {
        /// The testnet folder.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds before SIGKILL.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Start a stopped testnet again (or one node of it), with the same keys, data and ports; waits until the nodes peer.
    Start {
        /// The testnet folder.
        #[arg(long)]
        dir: PathBuf,
        /// Only this node (`2` or `node-2`).
        #[arg(long)]
        node: Option<String>,
        /// Seconds to wait for the nodes to peer.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Stop the testnet (like `down`), or one node of it with --node.
    Stop {
        /// The testnet folder.
        #[arg(long)]
        dir: PathBuf,
        /// Only this node (`2` or `node-2`).
        #[arg(long)]
        node: Option<String>,
        /// Seconds before SIGKILL.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// SIGKILL random nodes and restart them, then check the network heals.
    /// With --preset: make a network-mode testnet in --dir (root), play a
    /// seeded schedule of partitions, kills, freezes, loss and delay on it,
    /// check that it converges to one chain and bans no honest node, and
    /// take it down.
    Chaos {
        /// The testnet folder (with --preset: new or empty).
        #[arg(long)]
        dir: PathBuf,
        /// Seconds of chaos (without --preset).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Seconds between kills (without --preset).
        #[arg(long, default_value_t = 5)]
        kill_every: u64,
        /// A schedule preset: short (12 nodes, 150 s of faults) or long (24 nodes, 30 min).
        #[arg(long, value_name = "short|long")]
        preset: Option<String>,
        /// The schedule's seed (printed with every failure; the same seed replays the same faults).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the schedule and exit.
        #[arg(long)]
        dry_run: bool,
        /// With --preset: nodes 1..=N store a dataset that every other node
        /// challenges each epoch, and the run checks each storer answered
        /// each challenger (0, the default for now: partitions still get
        /// honest storers banned, see docs/testnet.md).
        #[arg(long, default_value_t = 0, value_name = "N")]
        datasets: usize,
    },
    /// Print a shell completion script, e.g. `vigil-testnet completions bash > /etc/bash_completion.d/vigil-testnet`.
    Completions(vigil_node::cli::CompletionsArgs),
    /// Write man pages (vigil-testnet.1 and one per subcommand) into --out, or print vigil-testnet(1).
    Man(vigil_node::cli::ManArgs),
    /// The delay process of network mode (started by `net delay` in the hub namespace).
    #[command(hide = true)]
    Netd {
        /// Its settings file.
        #[arg(long)]
        settings: PathBuf,
    },
    /// Print a node's log (NODE is `2` or `node-2`).
    Logs {
        /// The testnet folder.
        #[arg(long)]
        dir: PathBuf,
        /// The node.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
enum NetAction {
    /// Cut the network into groups of nodes, e.g. `partition 0,1 2,3,4`: no
    /// packet crosses between groups; a node in no group is cut off.
    Partition {
        /// Comma-separated node numbers, one argument per group.
        #[arg(required = true, num_args = 1..)]
        groups: Vec<String>,
    },
    /// Cut one node (`2` or `node-2`) off from all others.
    Isolate {
        /// The node.
        node: String,
    },
    /// End every partition.
    Heal,
    /// Drop this percentage of packets between nodes at random (0 ends it).
    Loss {
        /// 0 to 100.
        percent: f64,
    },
    /// Delay every packet between nodes by MS milliseconds one way (a
    /// round trip takes twice that), ± --jitter MS uniformly per packet,
    /// so packets can overtake each other; 0 ends it.
    Delay {
        /// One-way delay, milliseconds.
        ms: u32,
        /// Jitter, ± milliseconds (at most the delay).
        #[arg(long, default_value_t = 0)]
        jitter: u32,
    },
}

fn main() -> ExitCode {
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

async fn print_status(m: &Manifest, json: bool) -> Result<()> {
    let st = status(m).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<54} {:<24} {:<24} {:>5}  status",
        "node", "peer id", "p2p", "rpc", "peers"
    );
    for s in st {
        let p2p = s.p2p_addr.split("/p2p/").next().unwrap_or("").to_owned();
        println!(
            "{:<8} {:<54} {:<24} {:<24} {:>5}  {}",
            s.name,
            s.peer_id,
            p2p,
            s.rpc_url.unwrap_or_else(|| "-".into()),
            s.peers.map_or("-".into(), |p| p.to_string()),
            s.status
        );
    }
    Ok(())
}

/// The nodes a command acts on: `--node N`, or all.
fn chosen(m: &Manifest, node: Option<&str>) -> Result<Vec<NodeSpec>> {
    Ok(match node {
        Some(n) => vec![m.node(n)?.clone()],
        None => m.nodes.clone(),
    })
}

fn print_stopped(m: &Manifest, r: &[Stopped], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    for s in r {
        match s.how {
            "stopped" => println!("{}: stopped in {:.1} s", s.name, s.secs),
            "killed" => println!("{}: killed (SIGKILL) after {:.1} s", s.name, s.secs),
            how => println!("{}: {how}", s.name),
        }
    }
    if r.iter().any(|s| s.how == "still running") {
        anyhow::bail!("some nodes did not exit even after SIGKILL: see `ps` and their node.log");
    }
    println!(
        "start it again with: vigil-testnet start --dir {}",
        m.dir.display()
    );
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Up {
            n,
            dir,
            base_port,
            timeout,
            preset,
            vdf_iterations,
            timelords,
            netns,
            sampled_verify,
            min_epoch_ms,
        } => {
            let o = vigil_testnet::Options {
                n,
                base_port,
                preset,
                vdf_iterations,
                timelords,
                security: None,
                netns,
                sampled_verify,
                min_epoch_ms,
            };
            let (m, took) = up(&dir, &o, Duration::from_secs(timeout)).await?;
            if !cli.json {
                println!(
                    "testnet of {n} nodes up in {:.1} s (genesis {})",
                    took.as_secs_f64(),
                    &m.genesis_hash[..16]
                );
            }
            print_status(&m, cli.json).await?;
            if !cli.json {
                println!("stop it with: vigil-testnet down --dir {}", m.dir.display());
            }
        }
        Cmd::Status { dir } => print_status(&Manifest::load(&dir)?, cli.json).await?,
        Cmd::Down { dir, timeout } => {
            let m = Manifest::load(&dir)?;
            let r = down(&m, Duration::from_secs(timeout)).await?;
            print_stopped(&m, &r, cli.json)?;
        }
        Cmd::Net { dir, action } => {
            let m = Manifest::load(&dir)?;
            let net = m.net.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{} runs all nodes on 127.0.0.1: its links cannot be cut; make a testnet with `vigil-testnet up --netns`",
                    dir.display()
                )
            })?;
            if !net.exists() {
                anyhow::bail!(
                    "the testnet's network is down: `vigil-testnet start --dir {}` first",
                    dir.display()
                );
            }
            let index = |name: &str| m.node(name).map(NodeSpec::index);
            let done = match action {
                NetAction::Partition { groups } => {
                    let mut parsed = Vec::new();
                    for g in &groups {
                        parsed.push(
                            g.split(',')
                                .map(|x| index(x.trim()))
                                .collect::<Result<Vec<_>>>()?,
                        );
                    }
                    net.partition(&parsed)?;
                    format!("partitioned into {}", groups.join(" | "))
                }
                NetAction::Isolate { node } => {
                    net.isolate(index(&node)?)?;
                    format!("{node} cut off from every other node")
                }
                NetAction::Heal => {
                    net.heal()?;
                    "every partition ended".to_owned()
                }
                NetAction::Loss { percent } => {
                    net.set_loss(percent)?;
                    format!("{percent}% of packets between nodes dropped at random")
                }
                NetAction::Delay { ms, jitter } => {
                    let d = vigil_testnet::netns::delay::Delay {
                        ms,
                        jitter_ms: jitter,
                    };
                    net.set_delay(&m.dir, d)?;
                    format!("packets between nodes delayed {ms} ms ± {jitter} ms one way")
                }
            };
            if cli.json {
                println!("{}", serde_json::json!({ "ok": true, "done": done }));
            } else {
                println!("{done}");
            }
        }
        Cmd::Stop { dir, node, timeout } => {
            let m = Manifest::load(&dir)?;
            let r = stop(&chosen(&m, node.as_deref())?, Duration::from_secs(timeout)).await?;
            print_stopped(&m, &r, cli.json)?;
        }
        Cmd::Start { dir, node, timeout } => {
            let m = Manifest::load(&dir)?;
            let took = start(&m, &chosen(&m, node.as_deref())?, Duration::from_secs(timeout)).await?;
            if !cli.json {
                println!("started; peered in {:.1} s", took.as_secs_f64());
            }
            print_status(&m, cli.json).await?;
        }
        Cmd::Chaos {
            dir,
            preset: Some(preset),
            seed,
            dry_run,
            datasets,
            ..
        } => {
            let p = vigil_testnet::schedule::Preset {
                datasets,
                ..vigil_testnet::schedule::Preset::named(&preset)?
            };
            let steps = vigil_testnet::schedule::schedule(&p, seed);
            if dry_run {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "preset": p, "seed": seed, "steps": steps }))?
                );
                return Ok(());
            }
            let r = vigil_testnet::schedule::play(&dir, &p, seed, &|line| eprintln!("chaos: {line}")).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "chaos {} (seed {seed}): {} nodes peered in {:.1} s; {} steps; heals converged in {}; one chain (head {}) {:.1} s after the last step; honest nodes banned: {}",
                    p.name,
                    p.nodes,
                    r.mesh_ms as f64 / 1e3,
                    r.outcome.steps,
                    r.outcome
                        .heals
                        .iter()
                        .map(|h| h.converged_ms.map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1e3)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.outcome.head,
                    r.outcome.final_converged_ms as f64 / 1e3,
                    r.outcome.honest_banned.len()
                );
                let o = &r.outcome.observed;
                for (topic, g) in &o.gossip {
                    println!(
                        "  gossip {topic}: {} messages, {} receipts ({:.0}% of all nodes), p50 {:.1} ms, p99 {:.1} ms",
                        g.messages,
                        g.receipts,
                        g.coverage * 100.0,
                        g.p50_ms,
                        g.p99_ms
                    );
                }
                println!(
                    "  CPU per node over {:.0} s: median {:.1}%, max {:.1}% of a core",
                    o.secs, o.cpu_median_pct, o.cpu_max_pct
                );
                if let Some(c) = &r.outcome.challenges {
                    println!(
                        "  challenges to the {} storers: {} issued, {} ok ({:.1}%); outcomes {:?}",
                        p.datasets,
                        c.challenges,
                        c.ok,
                        c.success_rate * 100.0,
                        c.outcomes
                    );
                }
            }
            if !r.outcome.honest_banned.is_empty() {
                anyhow::bail!(
                    "seed {seed}: honest nodes were banned: {:?}",
                    r.outcome.honest_banned
                );
            }
        }
        Cmd::Chaos {
            dir,
            duration,
            kill_every,
            ..
        } => {
            let m = Manifest::load(&dir)?;
            let r = chaos(
                &m,
                Duration::from_secs(duration),
                Duration::from_secs(kill_every.max(1)),
            )
            .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} kills ({}); every node had a peer again {} ms after the last",
                    r.kills.len(),
                    r.kills.join(", "),
                    r.recovered_in_ms
                );
            }
        }
        Cmd::Netd { settings } => vigil_testnet::netns::delay::run(&settings)?,
        Cmd::Completions(args) => args.run(<Cli as clap::CommandFactory>::command()),
        Cmd::Man(args) => args.run(<Cli as clap::CommandFactory>::command())?,
        Cmd::Logs { dir, node } => {
            let m = Manifest::load(&dir)?;
            let n = m.node(&node)?;
            let p = n.dir.join("node.log");
            print!(
                "{}",
                std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?
            );
        }
    }
    Ok(())
}
