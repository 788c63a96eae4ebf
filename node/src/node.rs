//! Assembly of a running node: data dir checks, then the actor tree.
//!
//! The actor tree (root: `one_for_one`, intensity and backoff from
//! `[supervision]`), in start order; it stops in reverse: `store` (the sled
//! handle; flushed last) then `rpc` (admin RPC; stopped first so no request
//! races shutdown); between them `bus`, `net`, `epochs` (gossip, sync, bus
//! delivery of epochs) and the `vdf` worker (unless `vdf.compute = false`).
//! Later issues add challenges, chain and layer2. When the root gives up, the node flushes sled and
//! exits non-zero, naming the actor and its last panic.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use multiaddr::Multiaddr;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use vigil_actors::audit::checkpoint::Checkpoints;
use vigil_actors::audit::Audit;
use vigil_actors::bus::{self, Apps, Bus, BusActor, BusSettings};
use vigil_actors::chain::{ChainActor, Followed, Monitor, Pauses, SecurityHub};
use vigil_actors::challenge::{ChallengeActor, ChallengeSettings, Challenger};
use vigil_actors::continuity::remote::ProofServer;
use vigil_actors::continuity::{self, Continuity, ContinuitySettings, RootRecorder};
use vigil_actors::epoch::{self, Anchors, Chain, EpochActor, EpochSettings, EpochStore, VerifyMode};
use vigil_actors::net::{BytesProtocol, NetActor, NetSettings, Network, ScoreParams};
use vigil_actors::queue::{ConfirmMode, QueueConfig, Queues, TopicConfig, TopicKind};
use vigil_actors::rpc::{self, NodeContext, NodeInfo, RpcActor, RpcSettings, ShutdownReason};
use vigil_actors::storage::Storage;
use vigil_actors::store::{open_node_db, OpenMode, SledStore, Store, StoreActor, StoreOptions};
use vigil_actors::supervision::{
    start_tree, Backoff, ChildSpec, Intensity, Registry, Strategy, SupervisorSpec,
};
use vigil_genesis::Genesis;
use zeroize::Zeroizing;

use crate::config::{Config, ConfirmSetting, SupervisionConfig, VerifySetting};
use crate::datadir::DataDir;
use crate::exit::{tag, Classify, Exit};
use crate::keys::{self, LoadedKey};

mod open;
mod reload;
mod tasks;

pub use open::NODE_TOPICS;
use open::{audit_period, launch_network, open_bus, open_chain, rpc_settings};
use reload::watch_sighup;
use tasks::{
    checkpoint_audit, install_metrics, spawn_audit_checkpoints, spawn_metrics_upkeep, spawn_upload_expiry,
};

/// Everything `vigil run` / `vigil dev` decided before starting.
#[derive(Debug)]
pub struct RunOptions {
    /// The data dir.
    pub dir: DataDir,
    /// Effective configuration.
    pub config: Config,
    /// Passphrase for an encrypted key.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// The genesis the operator asked for (`--genesis`, or `dev`); must match the data dir's.
    pub expect_genesis: Option<Genesis>,
    /// Print the `vigil dev` banner on stdout once serving.
    pub dev_banner: bool,
    /// What SIGHUP rereads; `None`: SIGHUP only reloads the TLS certificate.
    pub reload: Option<Reload>,
}

/// What SIGHUP reloads.
pub struct Reload {
    /// Loads the configuration again, as at start (file, environment, flags).
    pub load: Box<dyn Fn() -> Result<Config> + Send + Sync>,
    /// The configuration as loaded at start (before `vigil dev` moved
    /// ports), to tell what changed.
    pub base: Config,
    /// Replaces the log filter; `None` when `RUST_LOG` fixed it.
    pub log: Option<crate::logging::ReloadFilter>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("log", &self.log.is_some())
            .finish_non_exhaustive()
    }
}

struct Prepared {
    genesis: Genesis,
    key: LoadedKey,
    account: keys::LoadedAccount,
    db: SledStore,
}

/// Checks the data dir, loads genesis and key, opens the database.
fn prepare(opts: &RunOptions) -> Result<Prepared> {
    let dir = &opts.dir;
    if !dir.is_initialized() {
        let missing = dir.missing_parts();
        if missing.is_empty() {
            return Err(tag(
                anyhow::anyhow!(
                    "{} is not a vigil data dir (no node.key, genesis.toml or db/): run `vigil init --data-dir {}` first",
                    dir.root().display(),
                    dir.root().display()
                ),
                Exit::DataDir,
            ));
        }
        return Err(tag(anyhow::anyhow!("{}", damaged(dir, &missing)), Exit::DataDir));
    }
    let genesis = Genesis::load_file(&dir.genesis()).class(Exit::Genesis)?;
    let passphrase = opts.passphrase.as_ref().map(|p| p.as_slice());
    let key = keys::load(&dir.key(), passphrase).class(Exit::Key)?;
    let (account, created) =
        crate::datadir::load_or_create_account(dir, passphrase, key.encrypted).class(Exit::Key)?;
    if created {
        tracing::info!(path = %dir.account_key().display(), address = %account.account.address(), "created the account key this data dir did not have yet");
    }
    let store_opts = StoreOptions {
        cache_capacity_bytes: opts.config.storage.cache_capacity_mb << 20,
        flush_every_ms: Some(opts.config.storage.flush_every_ms).filter(|ms| *ms > 0),
    };
    let db = open_node_db(&dir.db(), genesis.hash(), OpenMode::Existing, &store_opts).map_err(|e| match e {
        vigil_actors::Error::GenesisMismatch { stored, expected } => tag(
            anyhow::anyhow!(
                "{} was edited: it hashes to {expected}, but this data dir was created with genesis {stored} (pinned in db/meta). \
                 A node cannot change its network's genesis: restore the original file (from your backup, or `vigil genesis new` with the same inputs), \
                 or start a fresh data dir for the new genesis",
                dir.genesis().display()
            ),
            Exit::Genesis,
        ),
        other => anyhow::Error::new(other),
    })?;
    if let Some(expected) = &opts.expect_genesis {
        if expected.hash() != genesis.hash() {
            return Err(tag(
                anyhow::anyhow!(
                    "data dir {} was created for genesis `{}` ({}), but genesis `{}` ({}) was asked for: use a fresh data dir or the genesis it was created with",
                    dir.root().display(),
                    genesis.network,
                    genesis.hash(),
                    expected.network,
                    expected.hash()
                ),
                Exit::Genesis,
            ));
        }
    }
    Ok(Prepared {
        genesis,
        key,
        account,
        db,
    })
}

/// What to say about a data dir missing some of its parts.
pub(crate) fn damaged(dir: &DataDir, missing: &[&str]) -> String {
    format!(
        "data dir {} is missing {}: restore it from your backup (`vigil init` will not write into a data dir that has the rest, so as not to replace the node's identity or history)",
        dir.root().display(),
        missing.join(" and ")
    )
}

/// Runs the node until SIGINT, SIGTERM or `node_shutdown`; returns after a clean stop.
pub fn run(opts: RunOptions) -> Result<()> {
    // Before anything is stamped (the store's audit entries at open).
    vigil_actors::clock::set_offset_ms(opts.config.debug.clock_offset_ms);
    let prepared = prepare(&opts)?;
    let metrics = install_metrics()?;
    vigil_actors::metrics::describe(env!("CARGO_PKG_VERSION"), prepared.genesis.hash().short());
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("vigil-rt")
            .build()
            .expect("cannot start the tokio runtime")
    })
    .block_on(serve(opts, prepared, metrics))
}

/// Listens for SIGINT/SIGTERM: the first asks for a clean shutdown, a second forces exit.
fn watch_signals(tx: mpsc::Sender<ShutdownReason>) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        let mut seen = 0u32;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            if seen == 1 {
                tracing::info!(signal = name, "shutting down (send it again to force exit)");
                let _ = tx.try_send(ShutdownReason::Signal(name));
            } else {
                eprintln!("vigil: second {name}: exiting now without a clean shutdown");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

async fn serve(mut opts: RunOptions, p: Prepared, metrics: PrometheusHandle) -> Result<()> {
    let started = Instant::now();
    // Whatever way this returns (a clean stop, a failed start), the files
    // that tell clients where a running node is go with it.
    let _runtime_files = RuntimeFiles(opts.dir.root().to_owned());
    let (tx, mut rx) = mpsc::channel(4);
    watch_signals(tx.clone())?;
    spawn_metrics_upkeep(metrics.clone(), p.db.clone());
    let timeout = Duration::from_millis(opts.config.shutdown.actor_timeout_ms);
    let peer_id = p.key.keypair.public().to_peer_id();
    if !p.key.encrypted {
        tracing::warn!(
            "node key is stored UNENCRYPTED (dev key): never use this data dir for a real network"
        );
    }
    let evm_address = p.account.account.address().to_string();
    if p.account.account.is_anvil_dev() {
        tracing::warn!(
            address = %evm_address,
            "the settlement-chain account is anvil's well-known funded dev key, known to everyone: never use it on a real chain"
        );
    } else {
        tracing::info!(address = %evm_address, encrypted = p.account.encrypted, "settlement-chain account");
    }
    let audit = Audit::open(p.db.clone()).context("cannot open the audit log")?;
    let checkpoints = Arc::new(Checkpoints::new(opts.dir.root(), p.key.keypair.clone()));
    checkpoint_audit(&checkpoints, &audit);
    spawn_audit_checkpoints(checkpoints.clone(), audit.clone());
    let bus = match opts.config.bus.enabled {
        true => Some(open_bus(&opts, &p.db, &audit)?),
        false => None,
    };
    let net = match opts.config.network.enabled {
        true => Some(launch_network(&opts, &p, &audit).await?),
        false => None,
    };
    let chain = open_chain(&opts, &p, net.as_ref().map(|(n, _)| n.clone()), bus.as_ref())?;
    let storage = Storage::open(
        &opts.dir.root().join("storage"),
        p.key.keypair.clone(),
        p.genesis.params.encoding_cost,
        opts.config.storage.max_dataset_mb << 20,
        p.db.clone(),
        net.as_ref().map(|(n, _)| n.clone()),
    )
    .context("cannot open the dataset storage")?;
    storage.set_withdraw_grace(Storage::withdraw_grace(&p.genesis.params.security));
    spawn_upload_expiry(storage.clone(), audit.clone());
    let continuity = match opts.config.continuity.enabled {
        true => Some(
            Continuity::open(
                &opts.dir.root().join("continuity"),
                storage.clone(),
                p.key.keypair.clone(),
                ContinuitySettings {
                    chunks: opts.config.continuity.chunks as usize,
                    group_size: p.genesis.params.group_size as usize,
                    region_size: p.genesis.params.region_size as usize,
                    keep_epochs: opts.config.continuity.keep_epochs,
                },
            )
            .context("cannot open the continuity chains")?,
        ),
        false => None,
    };
    if let Some((n, _)) = &net {
        n.set_gossip_handler(
            continuity::ROOT_TOPIC,
            Arc::new(
                RootRecorder::new(p.db.clone()).clock(chain.clone(), opts.config.continuity.keep_epochs),
            ),
        );
        if let Some(c) = &continuity {
            n.set_bytes_server(
                BytesProtocol::Continuity,
                Arc::new(ProofServer::new(c.clone(), chain.clone())),
            );
        }
    }
    let pauses = Arc::new(Pauses::default());
    let hub = SecurityHub::new(
        &opts.config.security.rules,
        pauses.clone(),
        bus.as_ref().map(|b| b.queues().clone()),
        Some(audit.clone()),
    )
    .map_err(anyhow::Error::msg)?;
    let sources = opts
        .config
        .chain
        .sources
        .iter()
        .map(|c| c.build().map(|s| Followed::new(s, c.settings())))
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)?;
    let monitor = Monitor {
        sources,
        hub: Arc::new(hub),
    };
    let layer2 = crate::layer2::open(crate::layer2::Parts {
        config: &opts.config,
        dir: opts.dir.root().join("layer2"),
        account: p.account.account.clone(),
        net: net.as_ref().map(|(n, _)| n),
        monitor: &monitor,
        audit: &audit,
        queues: bus.as_ref().map(|b| b.queues().clone()),
    })
    .await?;
    let sec = &p.genesis.params.security;
    let challenger = net.as_ref().map(|(n, _)| {
        let settings = ChallengeSettings {
            per_epoch: p.genesis.params.challenges_per_epoch,
            deadline: Duration::from_millis(p.genesis.params.response_deadline_ms.into()),
            chunks: opts.config.challenge.chunks as usize,
            audit_period: audit_period(
                opts.config.challenge.audit_every_epochs,
                p.genesis.params.security.audit_period_epochs,
            ),
            audit_deadline: Duration::from_millis(sec.audit_deadline_ms.into()),
            rtt_allowance_max: Duration::from_millis(sec.rtt_allowance_max_ms.into()),
            enabled: opts.config.challenge.enabled,
            paused: pauses.flag("challenges"),
        };
        Challenger::new(
            settings,
            storage.clone(),
            chain.clone(),
            n.clone(),
            bus.as_ref().map(|b| b.queues().clone()),
        )
    });
    // Actor dead letters are events like any other: on the bus when it runs.
    let registry = match &bus {
        Some(b) => Registry::with_queues(b.queues().clone()),
        None => Registry::with_store(p.db.clone()),
    };
    let l2_methods = crate::layer2::rpc::methods(layer2.as_ref().map(|l| l.adapter.clone()), audit.clone());
    let ctx = Arc::new(NodeContext {
        info: NodeInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            peer_id: peer_id.to_string(),
            genesis_name: p.genesis.network.clone(),
            genesis_hash: p.genesis.hash().to_hex(),
            data_dir: opts.dir.root().to_owned(),
            listen_addrs: match &net {
                Some((n, _)) => n.dial_addrs().iter().map(|a| a.to_string()).collect(),
                None => Vec::new(),
            },
            insecure_key: !p.key.encrypted,
            evm_address: evm_address.clone(),
        },
        started,
        ready: AtomicBool::new(false),
        shutdown: tx,
        metrics: Some(metrics),
        registry: registry.clone(),
        fault_injection: opts.config.debug.fault_injection,
        bus: bus.clone(),
        audit,
        keys: vigil_actors::rpc::ApiKeys::open(p.db.clone())
            .context("cannot load the admin RPC's API keys")?,
        net: net.as_ref().map(|(n, _)| n.clone()),
        ready_alone: p.genesis.bootnodes.is_empty() && opts.config.network.bootnodes.is_empty(),
        epochs: Some(chain.clone()),
        storage: Some(storage.clone()),
        challenger: challenger.clone(),
        continuity: continuity.clone(),
        monitor: Some(monitor.clone()),
        extra: Some(l2_methods),
    });
    if ctx.fault_injection {
        tracing::warn!("debug.fault_injection is on: actors_inject_panic can crash actors");
    }
    if opts.config.debug.clock_offset_ms != 0 {
        tracing::warn!(
            offset_ms = opts.config.debug.clock_offset_ms,
            "debug.clock_offset_ms is set: this node's timestamps (bus, audit log, bans) are shifted from the host clock"
        );
    }
    let settings = rpc_settings(&opts.config.rpc, opts.dir.root())?;
    watch_sighup(
        opts.reload.take(),
        settings.tls.clone(),
        monitor.hub.clone(),
        ctx.audit.clone(),
    )?;
    let server = rpc::start(&settings, ctx.clone()).await.map_err(|e| match e {
        vigil_actors::Error::Bind { .. } => anyhow::Error::new(e).context(bind_hint(settings.addr)),
        other => anyhow::Error::new(other),
    })?;
    let url = server.url.clone();
    // `/metrics` on an address of its own, for a Prometheus server elsewhere;
    // it lives (this binding) until the node stops.
    let _metrics_listener = match (opts.config.metrics.addr, &ctx.metrics) {
        (Some(addr), Some(handle)) => Some(
            rpc::serve_metrics(addr, handle.clone(), ctx.clone(), opts.config.rpc.allowed_hosts.clone())
                .await
                .map_err(|e| {
                    anyhow::Error::new(e).context(format!(
                        "the metrics listener cannot listen on {addr}: pick a free address with --metrics-addr or metrics.addr"
                    ))
                })?,
        ),
        _ => None,
    };

    let db = p.db.clone();
    let rpc_ctx = ctx.clone();
    let mut spec = root_spec(&opts.config.supervision)
        .child(ChildSpec::actor("store", move || StoreActor::new(db)).shutdown(timeout));
    let mut bus_url = None;
    if let Some(bus) = bus {
        let listeners = bus::start(bus.clone(), opts.config.bus.addr).await.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "the bus cannot listen on {}: pick a free address with bus.addr (port 0 picks one)",
                opts.config.bus.addr
            ))
        })?;
        let url = format!("ws://{}", listeners.ws_addr);
        std::fs::write(opts.dir.root().join(BUS_URL_FILE), format!("{url}\n"))
            .context("cannot write bus.url")?;
        tracing::info!(%url, "bus started");
        bus_url = Some(url);
        spec = spec.child(ChildSpec::actor("bus", move || BusActor::new(bus, listeners)).shutdown(timeout));
    }
    let net_handle = net.as_ref().map(|(n, _)| n.clone());
    if let Some((net, task)) = net {
        spec = spec.child(ChildSpec::actor("net", move || NetActor::new(net, task)).shutdown(timeout));
    }
    let c = chain.clone();
    spec = spec.child(ChildSpec::actor("epochs", move || EpochActor::new(c.clone())).shutdown(timeout));
    spec = spec.child(ChildSpec::actor("chain", move || ChainActor::new(monitor.clone())).shutdown(timeout));
    if let Some(l2) = layer2 {
        spec = spec
            .child(ChildSpec::actor("layer2", move || crate::layer2::Layer2Actor::new(l2)).shutdown(timeout));
    }
    if let Some(c) = challenger {
        spec = spec
            .child(ChildSpec::actor("challenges", move || ChallengeActor::new(c.clone())).shutdown(timeout));
    }
    if let Some(c) = continuity {
        let chain = chain.clone();
        let net = net_handle.clone();
        let rt = tokio::runtime::Handle::current();
        let publish = move |signed: Vec<u8>| {
            if let Some(net) = net.clone() {
                rt.spawn(async move {
                    if let Err(e) = net.publish(continuity::ROOT_TOPIC, signed).await {
                        tracing::debug!(error = %e, "cannot gossip the continuity root");
                    }
                });
            }
        };
        spec = spec.child(
            ChildSpec::worker("continuity", move |ctx| {
                continuity::worker::run(&c, &chain, ctx, &publish)
            })
            .shutdown(timeout),
        );
    }
    if opts.config.vdf.compute {
        let c = chain.clone();
        spec = spec.child(ChildSpec::worker("vdf", move |ctx| epoch::worker::run(&c, ctx)).shutdown(timeout));
    }
    let spec = spec
        .child(ChildSpec::actor("rpc", move || RpcActor::new(server, settings, rpc_ctx)).shutdown(timeout));
    let mut tree = start_tree(spec, registry).map_err(anyhow::Error::msg)?;

    ctx.set_ready(true);
    tracing::info!(%peer_id, genesis = %p.genesis.hash().short(), rpc = %url, "node started");
    crate::systemd::ready(&format!("running: peer {peer_id}, admin RPC {url}"));
    crate::systemd::spawn_watchdog();
    if opts.dev_banner {
        print_banner(
            &peer_id.to_string(),
            &url,
            bus_url.as_deref(),
            &opts.dir,
            !p.key.encrypted,
        );
    }

    let outcome = tokio::select! {
        reason = rx.recv() => Ok(reason),
        why = tree.gave_up() => Err(why),
    };
    ctx.set_ready(false);
    match outcome {
        Ok(reason) => {
            tracing::info!(
                reason = reason.as_ref().map(ShutdownReason::label),
                "stopping the actor tree"
            );
            crate::systemd::stopping();
            chain.stop_accepting();
            // Every child has its own timeout; this bounds the whole tree.
            if let Err(e) = tree.stop(timeout * 4 + Duration::from_secs(5)).await {
                tracing::error!(error = %e, "the actor tree did not stop cleanly");
            }
            p.db.flush().context("final database flush")?;
            checkpoint_audit(&checkpoints, &ctx.audit);
            tracing::info!(uptime_secs = started.elapsed().as_secs_f64(), "stopped cleanly");
            Ok(())
        }
        Err(why) => {
            p.db.flush().context("final database flush")?;
            checkpoint_audit(&checkpoints, &ctx.audit);
            bail!("the actor tree gave up: {why}")
        }
    }
}

/// Removes `.cookie`, `rpc.url`, `bus.url` and `bus.sock` when dropped: a
/// stopped node (or one that failed to start) leaves no file that points
/// clients at it.
struct RuntimeFiles(std::path::PathBuf);

impl Drop for RuntimeFiles {
    fn drop(&mut self) {
        for name in [rpc::COOKIE_FILE, rpc::URL_FILE, BUS_URL_FILE, "bus.sock"] {
            let path = self.0.join(name);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove");
                }
            }
        }
    }
}

/// File with the bus WebSocket URL, in the data dir.
pub const BUS_URL_FILE: &str = "bus.url";

fn root_spec(s: &SupervisionConfig) -> SupervisorSpec {
    SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(Intensity {
            max_restarts: s.max_restarts,
            period: Duration::from_secs(s.period_secs),
        })
        .backoff(Backoff {
            initial: Duration::from_millis(s.backoff_initial_ms),
            max: Duration::from_millis(s.backoff_max_ms),
            stable_after: Duration::from_secs(s.stable_after_secs),
            ..Backoff::default()
        })
}

fn bind_hint(addr: SocketAddr) -> String {
    format!("the admin RPC cannot listen on {addr}: is another node running? pick a free address with --rpc-addr or rpc.addr (port 0 picks one)")
}

fn print_banner(peer_id: &str, url: &str, bus_url: Option<&str>, dir: &DataDir, insecure_key: bool) {
    let d = dir.root().display();
    let key = if insecure_key {
        "unencrypted throwaway key"
    } else {
        "encrypted key"
    };
    println!("vigil dev node running ({key}; Ctrl-C to stop)");
    println!("  peer id   {peer_id}");
    println!("  rpc       {url}");
    println!("  cookie    {}", dir.cookie().display());
    println!("  metrics   {url}/metrics");
    if let Some(bus) = bus_url {
        println!(
            "  bus       {bus} (and {}/bus.sock; apps: vigilctl bus app-add NAME)",
            dir.root().display()
        );
    }
    println!("  data dir  {d}");
    println!("  try       vigilctl --data-dir {d} status");
}
