//! Opening the subsystems a node runs, from its config: the bus, the
//! chain monitor and its anchors, the network, the admin RPC settings.

use super::*;

/// The audit period: the genesis', or the node's shorter one (`challenge.audit_every_epochs`).
pub(super) fn audit_period(node: u64, genesis: u32) -> u64 {
    match node {
        0 => genesis.into(),
        n => n.min(genesis.into()),
    }
}

pub(super) fn open_bus(opts: &RunOptions, db: &SledStore, audit: &Audit) -> Result<Arc<Bus>> {
    let c = &opts.config.bus;
    let confirm = match c.confirm {
        ConfirmSetting::Always => ConfirmMode::Always,
        ConfirmSetting::Interval => ConfirmMode::Interval(c.confirm_interval_ms),
        ConfirmSetting::None => ConfirmMode::None,
    };
    let qc = QueueConfig {
        confirm,
        max_payload_bytes: c.max_payload_bytes as usize,
        topics: with_node_topics(&c.topics),
        defaults: c.topic_defaults.clone(),
    };
    let queues = Queues::open(db.clone(), qc).context("cannot open the durable queues")?;
    let apps = Apps::open(db.clone(), &c.apps).context("cannot load the bus apps")?;
    let settings = BusSettings {
        addr: c.addr,
        unix_socket: c.unix_socket.then(|| opts.dir.root().join("bus.sock")),
        max_frame_bytes: c.max_frame_bytes as usize,
        ephemeral_topics: c.ephemeral_topics.clone(),
        outbound_queue: c.outbound_queue as usize,
        hello_timeout: Duration::from_millis(c.hello_timeout_ms),
        max_connections: c.max_connections as usize,
        allowed_origins: c.allowed_origins.clone(),
        auth_failure_window: Duration::from_secs(c.auth_failure_window_secs),
    };
    Ok(Bus::new(settings, queues, apps, audit.clone()))
}

/// The topics the node itself publishes to. Nothing in the node consumes
/// them, so as work queues (the default kind) they would grow for as long
/// as no application reads them: they are streams that keep the newest
/// 10,000 events, 64 MiB and 7 days, unless `[[bus.topics]]` names them.
pub const NODE_TOPICS: [&str; 3] = [
    vigil_actors::epoch::BUS_TOPIC,
    vigil_actors::challenge::BUS_TOPIC,
    crate::layer2::BUS_TOPIC,
];

/// `configured` plus the node's own topics that it does not configure.
pub(super) fn with_node_topics(configured: &[TopicConfig]) -> Vec<TopicConfig> {
    let mut topics = configured.to_vec();
    for name in NODE_TOPICS {
        if !topics.iter().any(|t| t.name == name) {
            topics.push(TopicConfig {
                name: name.to_owned(),
                kind: TopicKind::Stream,
                max_msgs: 10_000,
                max_bytes: 64 << 20,
                max_age_secs: 7 * 24 * 3600,
                ..TopicConfig::default()
            });
        }
    }
    topics
}

pub(super) fn open_chain(
    opts: &RunOptions,
    p: &Prepared,
    net: Option<Network>,
    bus: Option<&Arc<Bus>>,
) -> Result<Chain> {
    use std::io::IsTerminal;
    let c = &opts.config.vdf;
    let settings = EpochSettings {
        compute: c.compute,
        verify: match c.verify {
            VerifySetting::Full => VerifyMode::Full,
            VerifySetting::Sampled => VerifyMode::Sampled(c.samples),
        },
        sync_batch: c.sync_batch,
        sync_peers: c.sync_peers as usize,
        min_epoch: std::time::Duration::from_millis(c.min_epoch_ms),
        progress_bar: std::io::stderr().is_terminal(),
        anchors: anchor_source(opts, p)?,
    };
    let params = vigil_protocols::vdf::VdfParams::from_genesis(&p.genesis.params);
    Chain::open(
        p.genesis.hash().0,
        params,
        settings,
        EpochStore::new(p.db.clone()),
        net,
        bus.map(|b| b.queues().clone()),
    )
    .context("cannot open the epoch chain")
}

/// The chain source for the genesis anchor: the `[[chain.sources]]` entry of
/// kind `evm` whose `chain_id` is the genesis anchor's. Without one this node
/// could neither compute nor check an epoch, so it does not start.
pub(super) fn anchor_source(opts: &RunOptions, p: &Prepared) -> Result<Option<Arc<Anchors>>> {
    let Some(rule) = p.genesis.params.anchor else {
        return Ok(None);
    };
    let Some(src) = opts
        .config
        .chain
        .sources
        .iter()
        .find(|s| s.kind == "evm" && s.chain_id == Some(rule.chain_id))
    else {
        anyhow::bail!(
            "the genesis anchors every epoch to EVM chain {id} ([params.anchor]), and no chain source \
             follows it: add a [[chain.sources]] entry with kind = \"evm\", chain_id = {id} and the URL \
             of a node of that chain",
            id = rule.chain_id
        );
    };
    let source = src.build().map_err(anyhow::Error::msg)?;
    tracing::info!(source = %src.name, chain_id = rule.chain_id, "epochs are anchored to this chain source");
    Ok(Some(Arc::new(Anchors::new(rule, source))))
}

pub(super) async fn launch_network(
    opts: &RunOptions,
    p: &Prepared,
    audit: &Audit,
) -> Result<(Network, tokio::task::JoinHandle<()>)> {
    let c = &opts.config.network;
    let parse = |what: &str, a: &String| {
        a.parse::<Multiaddr>()
            .with_context(|| format!("{what} `{a}` is not a multiaddr"))
            .class(Exit::Config)
    };
    let listen = c
        .listen
        .iter()
        .map(|a| parse("network.listen", a))
        .collect::<Result<_>>()?;
    let bootnodes = p
        .genesis
        .bootnodes
        .iter()
        .map(|a| parse("genesis bootnode", a))
        .chain(c.bootnodes.iter().map(|a| parse("network.bootnodes", a)))
        .collect::<Result<_>>()?;
    let settings = NetSettings {
        listen,
        bootnodes,
        max_inbound: c.max_inbound,
        max_outbound: c.max_outbound,
        max_pending: c.max_pending,
        max_per_peer: c.max_per_peer,
        max_inbound_per_ip: c.max_inbound_per_ip,
        ip_ban_threshold: c.ip_ban_threshold,
        target_peers: c.target_peers as usize,
        idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        ping_interval: Duration::from_secs(c.ping_interval_secs),
        ping_timeout: Duration::from_secs(c.ping_timeout_secs),
        score: ScoreParams {
            disconnect_below: c.score_disconnect.into(),
            ban_below: c.score_ban.into(),
            ban_for: Duration::from_secs(c.ban_secs),
            ..ScoreParams::default()
        },
        reconnect_initial: Duration::from_millis(c.reconnect_initial_ms),
        reconnect_max: Duration::from_millis(c.reconnect_max_ms),
        limits: vigil_actors::net::InboundLimits::new(p.genesis.params.challenges_per_epoch),
        ..NetSettings::default()
    };
    let net = Network::new(
        p.key.keypair.clone(),
        p.genesis.hash().0,
        settings,
        p.db.clone(),
        Some(audit.clone()),
    );
    let task = net.launch().await.context("cannot start the p2p network")?;
    for addr in net.dial_addrs() {
        tracing::info!(%addr, "p2p network listening");
    }
    Ok((net, task))
}

/// The RPC server's settings from `[rpc]`; TLS files are read now, so a bad
/// one stops the start with what is wrong.
pub(super) fn rpc_settings(c: &crate::config::RpcConfig, data_dir: &std::path::Path) -> Result<RpcSettings> {
    let mut s = RpcSettings::new(c.addr, data_dir.to_owned());
    s.max_request_bytes = c.max_request_bytes;
    s.max_connections = c.max_connections;
    s.max_connections_per_ip = c.max_connections_per_ip;
    s.max_batch = c.max_batch;
    s.max_subscriptions = c.max_subscriptions;
    s.rate = rpc::RateSettings {
        per_caller: c.rate_per_caller,
        per_address: c.rate_per_address,
        burst: c.rate_burst,
    };
    s.browser = rpc::BrowserPolicy {
        allowed_hosts: c.allowed_hosts.clone(),
        cors_origins: c.cors_origins.clone(),
    };
    s.allowed_networks = c
        .allowed_networks
        .iter()
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .with_context(|| format!("rpc.allowed_networks: `{n}` is not ADDRESS/PREFIX"))
        })
        .collect::<Result<_>>()?;
    if let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) {
        s.tls = Some(rpc::tls::Tls::open(cert, key)?);
    }
    Ok(s)
}
