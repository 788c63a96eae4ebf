//! `vigil-bench`: measured figures for docs/benchmarks.md, one subcommand per area.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use vigil_tools::bench::{
    chain, continuity, flood, forgery, layer2, logsync, metrics, network, proofs, queue, rpc, supervision,
    vdf,
};

/// Benchmarks of vigil's parts; every comparison is measured side by side in one run.
#[derive(Debug, Parser)]
#[command(name = "vigil-bench", version, about)]
struct Cli {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    area: Area,
}

#[derive(Debug, Subcommand)]
enum Area {
    /// Restart latency after a panic, and supervised vs plain actix throughput.
    Supervision {
        /// Crashes to time.
        #[arg(long, default_value_t = 10_000)]
        crashes: usize,
        /// Messages per throughput round.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Throughput rounds (alternating supervised and plain).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Local testnets of real nodes: mesh formation (5, 10, 20), gossip propagation, idle RSS.
    Network {
        /// Probes published for the propagation percentiles.
        #[arg(long, default_value_t = 20)]
        probes: usize,
        /// Testnet sizes, comma separated.
        #[arg(long, default_value = "5,10,20", value_delimiter = ',')]
        sizes: Vec<usize>,
    },
    /// Durable publish -> confirm (fsync per confirm) vs Redis Streams, and end to end.
    Queue {
        /// Messages per publisher.
        #[arg(long, default_value_t = 5_000)]
        per_publisher: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 128)]
        payload: usize,
        /// Skip the Redis comparison.
        #[arg(long)]
        no_redis: bool,
        /// Publishes each publisher keeps in flight over the wire (vigil node and Redis alike).
        #[arg(long, default_value_t = 1)]
        window: usize,
        /// Publisher counts to measure (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        publishers: Vec<usize>,
        /// How the clients reach vigil and Redis (comma-separated): tcp
        /// (vigil's WebSocket, Redis's TCP port) and unix (each one's Unix socket).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "tcp,unix")]
        transports: Vec<queue::Transport>,
        /// Runs of the whole comparison; more than one prints the median,
        /// min and max of every figure (the figures in docs/benchmarks.md
        /// are medians of 5).
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// One durable write of the queue's log, three ways side by side: append,
    /// overwrite through the page cache, overwrite with O_DIRECT (each + fdatasync).
    LogSync {
        /// Directory on the file system to measure (a node's data dir's, for a real figure).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Alternating rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Writes per method per round.
        #[arg(long, default_value_t = 2_000)]
        writes: usize,
    },
    /// Chain monitoring: anvil_reorg -> alert on the bus latency, over N reorgs of a real anvil.
    Chain {
        /// Reorgs timed.
        #[arg(long, default_value_t = 50)]
        reorgs: usize,
        /// Reorg depth.
        #[arg(long, default_value_t = 1)]
        depth: u64,
        /// The anvil binary (default: $VIGIL_ANVIL, else .tools/anvil from scripts/test).
        #[arg(long)]
        anvil: Option<std::path::PathBuf>,
    },
    /// Flood: an honest 3-node testnet under hostile clients (connections,
    /// garbage frames, audits, syncs, attestations, announcements, bad bus
    /// hellos): what is refused, and what the honest side keeps doing.
    Flood {
        /// Seconds of the quiet phase before it.
        #[arg(long, default_value_t = 20)]
        idle_secs: u64,
        /// Seconds of flood.
        #[arg(long, default_value_t = 60)]
        flood_secs: u64,
        /// TCP connections opened to node-0 and held.
        #[arg(long, default_value_t = 500)]
        connections: usize,
        /// Attestations gossiped in all.
        #[arg(long, default_value_t = 100_000)]
        attestations: u64,
        /// Run the attackers at normal priority (by default nice 19: they
        /// stand for other machines and must not take the honest nodes' CPU).
        #[arg(long)]
        greedy_attackers: bool,
    },
    /// Metrics: what one Prometheus scrape of a busy node costs (families, series, bytes, time).
    Metrics {
        /// Scrapes timed.
        #[arg(long, default_value_t = 1_000)]
        scrapes: usize,
        /// Durable topics with traffic.
        #[arg(long, default_value_t = 16)]
        topics: usize,
    },
    /// Admin RPC: what the checks (Host/Origin, API key, role, rate limits) add to a call, against the same methods served bare.
    Rpc {
        /// Rounds, alternating which server goes first.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Calls per server per round.
        #[arg(long, default_value_t = 2_000)]
        calls: usize,
    },
    /// Layer2: payments/s and latency between two vigil processes (one channel, then N at once), and gas.
    Layer2 {
        /// Payments on the single channel.
        #[arg(long, default_value_t = 5_000)]
        payments: u64,
        /// Channels paying at once.
        #[arg(long, default_value_t = 16)]
        channels: usize,
        /// Payments per channel in the concurrent run.
        #[arg(long, default_value_t = 1_000)]
        per_channel: u64,
        /// The anvil binary (default: $VIGIL_ANVIL, else .tools/anvil from scripts/test).
        #[arg(long)]
        anvil: Option<std::path::PathBuf>,
    },
    /// Continuity chains: one epoch over N synthetic datasets (cold and warm cache), 1 vs 2 threads, peak RSS.
    Continuity {
        /// Chains (datasets created in a temporary folder under the current directory).
        #[arg(long, default_value_t = 100_000)]
        chains: usize,
        /// Largest synthetic dataset, bytes.
        #[arg(long, default_value_t = 4096)]
        max_bytes: usize,
        /// Warm epochs per thread count (medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Availability proofs: tree hashing vs blake3, encoding cost, prove/verify, challenge round trips, proof sizes.
    Proofs {
        /// MiB hashed for the tree-vs-blake3 comparison.
        #[arg(long, default_value_t = 256)]
        hash_mib: usize,
        /// Challenge round trips timed.
        #[arg(long, default_value_t = 500)]
        round_trips: usize,
        /// Leaves per challenge.
        #[arg(long, default_value_t = 4)]
        chunks: usize,
    },
    /// Forged epochs: the CPU a node spends rejecting one (wrong output,
    /// wrong middle checkpoint) against verifying an honest testnet-preset
    /// epoch, full and sampled, in one run (computes the epoch first: ~40 s).
    Forgery {
        /// Iterations of the epoch (default: the testnet preset's).
        #[arg(long)]
        iterations: Option<u64>,
        /// Segments the sampled verification recomputes (node default: vdf.samples).
        #[arg(long, default_value_t = 8)]
        samples: u32,
        /// Rounds of each verification (medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// VDF: evaluation vs the raw SHA-256 chain, memory-hard rate, full and sampled verification.
    Vdf {
        /// Iterations per hash-mode measurement.
        #[arg(long, default_value_t = 50_000_000)]
        iterations: u64,
        /// Iterations of the memory-hard measurement.
        #[arg(long, default_value_t = 15_000_000)]
        mem_iterations: u64,
        /// Memory-hard dataset, MiB (the testnet preset's figure).
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
        /// Rounds of the side-by-side comparison (medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Segments the sampled verification recomputes (node default: vdf.samples).
        #[arg(long, default_value_t = 8)]
        samples: u32,
        /// Skip computing a real testnet-preset epoch (about 40 s).
        #[arg(long)]
        skip_epoch: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let progress = |what: &str| {
        if std::io::stderr().is_terminal() || !cli.json {
            eprintln!("measuring {what}...");
        }
    };
    match cli.area {
        Area::Network { probes, sizes } => {
            let r = or_exit(network::run(&network::Options { sizes, probes }, &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                println!("network: local testnets of real `vigil run` processes on 127.0.0.1");
                println!("  {:>6} {:>16} {:>16}", "nodes", "mesh formed ms", "idle RSS MiB");
                for m in &r.meshes {
                    println!("  {:>6} {:>16} {:>16.1}", m.nodes, m.formed_ms, m.idle_rss_mib);
                }
                let p = &r.propagation;
                println!(
                    "  gossip publish -> receipt across {} nodes ({} receipts): p50 {:.2} ms, p99 {:.2} ms",
                    r.propagation_nodes,
                    p.n,
                    p.p50_us / 1000.0,
                    p.p99_us / 1000.0
                );
            }
        }
        Area::Queue {
            per_publisher,
            payload,
            no_redis,
            window,
            publishers,
            transports,
            runs,
        } => {
            let opts = queue::Options {
                per_publisher,
                publishers: publishers.into_iter().map(|n| n.max(1)).collect(),
                payload: payload.max(8),
                redis: !no_redis,
                window: window.max(1),
                transports,
            };
            if runs > 1 {
                let reports: Vec<_> = (1..=runs)
                    .map(|i| queue::run(&opts, &|what| progress(&format!("run {i}/{runs}: {what}"))))
                    .collect();
                let summary = queue::summary::summarize(&reports);
                if cli.json {
                    let all = serde_json::json!({ "summary": summary, "runs": reports });
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&all).expect("report serializes")
                    );
                } else {
                    queue::summary::print(&summary);
                }
                return;
            }
            let r = queue::run(&opts, &progress);
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                queue::table::print(&r);
            }
        }
        Area::LogSync { dir, rounds, writes } => {
            let r = or_exit(logsync::run(&dir, rounds.max(1), writes.max(1), &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                println!(
                    "log-sync: one 4 KiB write + fdatasync, {} per method in {}",
                    r.writes, r.dir
                );
                println!(
                    "  {:<10} {:>10} {:>10} {:>10} {:>10}",
                    "method", "mean us", "p50 us", "p99 us", "cpu us"
                );
                for row in &r.rows {
                    println!(
                        "  {:<10} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
                        row.method, row.mean_us, row.latency.p50_us, row.latency.p99_us, row.cpu_us
                    );
                }
                println!("  direct / overwrite mean latency: {:.2}x", r.direct_vs_overwrite);
            }
        }
        Area::Chain { reorgs, depth, anvil } => {
            let anvil = anvil
                .or_else(|| std::env::var_os("VIGIL_ANVIL").map(Into::into))
                .unwrap_or_else(|| {
                    ".tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil".into()
                });
            let o = chain::Options {
                reorgs: reorgs.max(1),
                depth: depth.max(1),
                anvil,
            };
            let r = or_exit(chain::run(&o, &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                let p = &r.latency;
                println!(
                    "chain: anvil_reorg (depth {}) -> reorg alert stored on security.alerts, {} reorgs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    r.depth,
                    p.n,
                    p.p50_us / 1000.0,
                    p.p99_us / 1000.0,
                    p.max_us / 1000.0
                );
            }
        }
        Area::Flood {
            idle_secs,
            flood_secs,
            connections,
            attestations,
            greedy_attackers,
        } => {
            let o = flood::Options {
                nice_attackers: !greedy_attackers,
                idle: std::time::Duration::from_secs(idle_secs.max(1)),
                flood: std::time::Duration::from_secs(flood_secs.max(1)),
                connections,
                attestations,
            };
            let r = or_exit(flood::run(&o, &progress));
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&flood::json(&r)).expect("report serializes")
                );
            } else {
                for l in flood::lines(&r) {
                    println!("{l}");
                }
            }
        }
        Area::Layer2 {
            payments,
            channels,
            per_channel,
            anvil,
        } => {
            let anvil = anvil
                .or_else(|| std::env::var_os("VIGIL_ANVIL").map(Into::into))
                .unwrap_or_else(|| {
                    ".tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil".into()
                });
            let o = layer2::Options {
                payments: payments.max(1),
                channels: channels.clamp(1, 256),
                per_channel: per_channel.max(1),
                anvil,
            };
            let r = or_exit(layer2::run(&o, &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                for run in [&r.single, &r.concurrent] {
                    println!(
                        "layer2: {} channel(s), {} payments: {:.0} payments/s, p50 {:.2} ms, p99 {:.2} ms",
                        run.channels,
                        run.payments,
                        run.per_sec,
                        run.p50_us as f64 / 1000.0,
                        run.p99_us as f64 / 1000.0
                    );
                }
                println!(
                    "layer2 gas on anvil: open {}, join {}, cooperative close {}",
                    r.gas_open, r.gas_join, r.gas_close
                );
            }
        }
        Area::Continuity {
            chains,
            max_bytes,
            rounds,
        } => {
            let o = continuity::Options {
                chains: chains.max(1),
                max_bytes: max_bytes.max(1),
                rounds: rounds.max(1),
            };
            let r = or_exit(continuity::run(&o, &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                println!(
                    "continuity: {} chains (datasets of 256..={} bytes; setup {:.1} s)",
                    r.chains, o.max_bytes, r.setup_secs
                );
                match r.cold_secs {
                    Some(s) => println!("  cold epoch (page cache dropped), 2 threads   {s:>8.3} s"),
                    None => println!("  cold epoch: not measured (dropping the page cache needs root)"),
                }
                println!(
                    "  warm epoch, 1 thread                         {:>8.3} s",
                    r.warm_1_thread_secs
                );
                println!(
                    "  warm epoch, 2 threads                        {:>8.3} s",
                    r.warm_2_threads_secs
                );
                println!(
                    "  speedup 2 threads / 1                        {:>8.2}x",
                    r.speedup
                );
                println!(
                    "  per chain, 2 threads                         {:>8.2} us",
                    r.per_chain_us
                );
                println!(
                    "  peak RSS                                     {:>8.1} MiB",
                    r.peak_rss_mib
                );
            }
        }
        Area::Proofs {
            hash_mib,
            round_trips,
            chunks,
        } => {
            let o = proofs::Options {
                hash_mib: hash_mib.max(1),
                round_trips: round_trips.max(1),
                chunks: chunks.clamp(1, 16),
            };
            let r = or_exit(proofs::run(&o, &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                print_proofs(&o, &r);
            }
        }
        Area::Forgery {
            iterations,
            samples,
            rounds,
        } => {
            let o = forgery::Options {
                iterations,
                samples: samples.max(1),
                rounds: rounds.max(1),
            };
            let r = or_exit(forgery::run(&o, &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                print_forgery(&r);
            }
        }
        Area::Vdf {
            iterations,
            mem_iterations,
            memory_mib,
            rounds,
            samples,
            skip_epoch,
        } => {
            let opts = vdf::Options {
                iterations,
                mem_iterations,
                memory_mib,
                rounds: rounds.max(1),
                samples,
                skip_epoch,
            };
            let r = or_exit(vdf::run(&opts, &progress));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                print_vdf(&opts, &r);
            }
        }
        Area::Metrics { scrapes, topics } => {
            let r = or_exit(metrics::run(&metrics::Options { scrapes, topics }).map_err(anyhow::Error::msg));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                println!(
                    "one scrape: {} families, {} series, {} bytes ({topics} topics with traffic, every RPC method's latency)",
                    r.families, r.series, r.bytes
                );
                println!(
                    "  scrape (on-scrape gauges + process collector + render)  p50 {:>8.1} us   p99 {:>8.1} us",
                    r.scrape_p50_us, r.scrape_p99_us
                );
                println!(
                    "  process collector alone                                  p50 {:>8.1} us",
                    r.process_p50_us
                );
            }
        }
        Area::Rpc { rounds, calls } => {
            let r = or_exit(rpc::run(&rpc::Options { rounds, calls }).map_err(anyhow::Error::msg));
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                println!(
                    "admin RPC, node_health over one keep-alive HTTP connection ({} calls each)",
                    r.bare.calls
                );
                println!(
                    "  bare jsonrpsee              p50 {:>7.1} us   p99 {:>7.1} us",
                    r.bare.p50_us, r.bare.p99_us
                );
                println!(
                    "  with every check (API key)  p50 {:>7.1} us   p99 {:>7.1} us",
                    r.checked.p50_us, r.checked.p99_us
                );
                println!(
                    "  ratio                       p50 x{:.3}       p99 x{:.3}",
                    r.ratio_p50, r.ratio_p99
                );
            }
        }
        Area::Supervision {
            crashes,
            messages,
            rounds,
        } => {
            let r = supervision::run(
                &supervision::Options {
                    crashes,
                    messages,
                    rounds,
                },
                &progress,
            );
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
            } else {
                let l = &r.restart_latency;
                println!(
                    "supervision ({} crashes; {} messages x {} rounds)",
                    r.crashes, r.messages, r.rounds
                );
                println!("  panic -> restarted -> first reply   p50 {:.1} us   p90 {:.1} us   p99 {:.1} us   max {:.1} us", l.p50_us, l.p90_us, l.p99_us, l.max_us);
                println!(
                    "  throughput, plain actix actor       {:>10.0} msg/s",
                    r.plain_msgs_per_sec
                );
                println!(
                    "  throughput, supervised actor        {:>10.0} msg/s",
                    r.supervised_msgs_per_sec
                );
                println!(
                    "  throughput, SupervisedAddr::call    {:>10.0} msg/s",
                    r.call_msgs_per_sec
                );
                println!(
                    "  supervision overhead                {:>10.1} %",
                    r.overhead_percent
                );
            }
        }
    }
}

fn print_forgery(r: &forgery::Report) {
    println!(
        "forgery: one testnet-preset epoch ({} M iterations, {} segments, {} MiB), computed in {:.1} s; {} threads; process CPU time, medians",
        r.iterations / 1_000_000,
        r.segments,
        r.memory_mib,
        r.eval_secs,
        r.threads
    );
    let row = |what: &str, c: &forgery::Cost| {
        println!(
            "  {what:<44} {:>9.3} s CPU {:>9.3} s wall",
            c.cpu_secs, c.wall_secs
        );
    };
    row("honest, full verification", &r.honest_full);
    row(
        &format!("honest, sampled ({} segments)", r.samples),
        &r.honest_sampled,
    );
    row("wrong output, full (rejected)", &r.output_forged_full);
    row("wrong output, sampled (rejected)", &r.output_forged_sampled);
    row("wrong middle checkpoint, full (rejected)", &r.middle_forged_full);
    println!(
        "  wrong output, full / honest full         {:>9.4}   (target <= 0.1)",
        r.output_full_ratio
    );
    println!(
        "  wrong output, sampled / honest sampled   {:>9.4}",
        r.output_sampled_ratio
    );
    println!(
        "  wrong middle, full / honest full         {:>9.4}",
        r.middle_full_ratio
    );
}

fn print_vdf(o: &vdf::Options, r: &vdf::Report) {
    println!(
        "vdf: {} M iterations hash mode, {} M memory-hard over {} MiB, {} verification threads",
        o.iterations / 1_000_000,
        o.mem_iterations / 1_000_000,
        o.memory_mib,
        r.threads
    );
    println!(
        "  raw SHA-256 chain (Sha256::digest)     {:>8.2} M it/s",
        r.raw_digest_mips
    );
    println!(
        "  raw SHA-256 chain (compress256)        {:>8.2} M it/s",
        r.raw_compress_mips
    );
    println!(
        "  Vdf::evaluate, hash mode, 256 ckpts    {:>8.2} M it/s",
        r.eval_mips
    );
    println!("  evaluation / raw chain                 {:>8.3}", r.eval_vs_raw);
    println!(
        "  memory-hard dataset fill               {:>8.3} s",
        r.mem_fill_secs
    );
    println!(
        "  memory-hard evaluation                 {:>8.2} M it/s",
        r.mem_mips
    );
    println!(
        "  full verification speedup, hash        {:>8.2}x",
        r.full_verify_speedup
    );
    println!(
        "  full verification speedup, memory-hard {:>8.2}x",
        r.mem_full_verify_speedup
    );
    if let Some(e) = &r.epoch {
        println!(
            "  testnet epoch: {} M iterations, {} segments, evaluated in {:.1} s",
            e.iterations / 1_000_000,
            e.segments,
            e.eval_secs
        );
        println!(
            "  sampled verification ({} segments)     {:>8.3} s",
            e.samples, e.sampled_verify_secs
        );
        println!(
            "  full verification                      {:>8.3} s",
            e.full_verify_secs
        );
    }
}

fn print_proofs(o: &proofs::Options, r: &proofs::Report) {
    println!(
        "proofs: {} MiB hashed, {} round trips of {} chunks, {} threads",
        o.hash_mib, r.round_trip.n, o.chunks, r.threads
    );
    println!(
        "  blake3::hash, one thread             {:>9.0} MiB/s",
        r.blake3_mib_s
    );
    println!(
        "  Tree::build (8-leaf groups, rayon)   {:>9.0} MiB/s",
        r.tree_mib_s
    );
    println!(
        "  tree / blake3                        {:>9.2}x",
        r.tree_vs_blake3
    );
    println!(
        "  encoding per MiB, dev preset         {:>9.1} ms",
        r.encode_ms_per_mib_dev
    );
    println!(
        "  encoding per MiB, testnet preset     {:>9.1} ms ({:.1}x the {} ms deadline)",
        r.encode_ms_per_mib_testnet,
        r.encode_ms_per_mib_testnet / r.deadline_ms as f64,
        r.deadline_ms
    );
    println!("  prove one chunk                      {:>9.2} us", r.prove_us);
    println!("  verify one chunk                     {:>9.2} us", r.verify_us);
    let p = &r.round_trip;
    println!(
        "  challenge round trip                 p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        p.p50_us / 1000.0,
        p.p99_us / 1000.0,
        p.max_us / 1000.0
    );
    for (size, bytes) in &r.proof_bytes {
        println!("  proof bytes per chunk at {:>14} bytes: {bytes}", size);
    }
}

/// The report, or the error on stderr and exit status 1.
fn or_exit<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    })
}
