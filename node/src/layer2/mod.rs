//! The node's Layer2: the EVM payment-channel adapter wired to the node's
//! parts. Its channel protocol runs over the libp2p network
//! (`/vigil/<g8>/channel/1`), its watcher follows the heads of the chain
//! monitor's EVM source named by `layer2.source`, its events go to the audit
//! log and the bus topic `layer2.events`, `pause:layer2` is the security
//! hub's switch, and the `layer2_*` admin methods ([`rpc`]) reach it.
//! It runs under supervision as the `layer2` actor.

mod actor;
pub mod rpc;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use libp2p_identity::PeerId;
use serde_json::json;
use tokio::sync::mpsc;
use vigil_actors::audit::Audit;
use vigil_actors::chain::Monitor;
use vigil_actors::net::{BytesProtocol, BytesReply, BytesServer, Network};
use vigil_actors::queue::{Publish, Queues};
use vigil_layer2::evm::{Event, EventSink, EvmChannels, EvmConfig, Transport};
use vigil_layer2::{Account, Address};

pub use actor::Layer2Actor;

use crate::config::Config;

/// Bus topic of channel events.
pub const BUS_TOPIC: &str = "layer2.events";

/// The running adapter and the heads its watcher follows.
#[derive(Debug, Clone)]
pub struct Layer2 {
    /// The adapter.
    pub adapter: Arc<EvmChannels>,
    /// Heads of the settlement chain, from the chain monitor.
    pub heads: tokio::sync::watch::Receiver<Option<(u64, String)>>,
}

/// Sends channel frames over the node's libp2p connection.
#[derive(Debug)]
struct NetTransport(Network);

#[async_trait::async_trait]
impl Transport for NetTransport {
    async fn request(&self, peer: &str, frame: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let peer: PeerId = peer
            .parse()
            .map_err(|_| format!("`{peer}` is not a peer id (see net_peers)"))?;
        match self
            .0
            .bytes_request(BytesProtocol::Channel, peer, frame)
            .await
            .map_err(|e| e.to_string())?
        {
            vigil_actors::net::codec::Frame::Valid(b) => match vigil_actors::net::app::busy_ms(&b) {
                Some(ms) => Err(format!("{peer} is busy: try again in {ms} ms")),
                None => Ok(b),
            },
            vigil_actors::net::codec::Frame::Invalid(e) => Err(format!("{peer} sent a bad frame: {e}")),
        }
    }
}

/// Serves the channel protocol: one task per request.
#[derive(Debug)]
struct ChannelServer(Arc<EvmChannels>);

impl BytesServer for ChannelServer {
    fn serve(&self, from: PeerId, req: Vec<u8>, reply: BytesReply) {
        let adapter = self.0.clone();
        tokio::spawn(async move {
            let answer = adapter.handle(&from.to_string(), &req).await;
            reply.send(answer).await;
        });
    }
}

/// Events waiting for the audit log and the bus (they are rare: opens,
/// closes, disputes).
const EVENT_QUEUE: usize = 1024;

/// Audits each event and publishes it on [`BUS_TOPIC`], in order.
#[derive(Debug)]
struct NodeEvents {
    tx: mpsc::Sender<Event>,
    audit: Audit,
}

impl EventSink for NodeEvents {
    fn emit(&self, e: Event) {
        if let Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) =
            self.tx.try_send(e)
        {
            // Never lost from the audit log, even when the bus lags.
            tracing::error!(
                kind = e.kind,
                "layer2 event queue full: audited, not published on the bus"
            );
            self.audit.append_or_log(
                "layer2",
                &format!("layer2.{}", e.kind),
                json!({"channel": e.channel, "peer": e.peer, "detail": e.detail}),
            );
        }
    }
}

fn forward_events(mut rx: mpsc::Receiver<Event>, audit: Audit, queues: Option<Arc<Queues>>) {
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let detail = json!({"channel": e.channel, "peer": e.peer, "detail": e.detail});
            audit.append_or_log("layer2", &format!("layer2.{}", e.kind), detail);
            if let Some(q) = &queues {
                let p = Publish {
                    sender: "node:layer2".into(),
                    correlation: format!("{}-{}", e.channel, e.kind),
                    headers: Default::default(),
                    payload: serde_json::to_vec(&e).unwrap_or_default(),
                };
                if let Err(err) = q.publish(BUS_TOPIC, p).await {
                    tracing::error!(error = %err, "cannot publish a layer2 event on the bus");
                }
            }
        }
    });
}

/// What [`open`] needs from the node.
#[derive(Debug)]
pub struct Parts<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// `DATA_DIR/layer2`.
    pub dir: std::path::PathBuf,
    /// The settlement account.
    pub account: Account,
    /// The network.
    pub net: Option<&'a Network>,
    /// The chain monitor.
    pub monitor: &'a Monitor,
    /// The audit log.
    pub audit: &'a Audit,
    /// The bus queues.
    pub queues: Option<Arc<Queues>>,
}

/// Starts the adapter when `layer2.enabled`.
pub async fn open(p: Parts<'_>) -> Result<Option<Layer2>> {
    let c = &p.config.layer2;
    if !c.enabled {
        return Ok(None);
    }
    let Some(net) = p.net else {
        bail!("layer2 needs the p2p network to reach counterparties: set network.enabled = true or layer2.enabled = false");
    };
    let src = p
        .config
        .chain
        .sources
        .iter()
        .find(|s| s.name == c.source)
        .with_context(|| format!("layer2.source `{}` is not a [[chain.sources]] entry", c.source))?;
    let followed = p
        .monitor
        .sources
        .iter()
        .find(|f| f.source.name() == c.source)
        .context("the chain monitor does not follow layer2.source")?;
    let contract: Address = c
        .contract
        .parse()
        .with_context(|| format!("layer2.contract `{}` is not an address", c.contract))?;
    let cfg = EvmConfig {
        rpc_url: src.url.clone(),
        chain_id: src
            .chain_id
            .context("layer2.source needs a chain_id: settlement signatures are bound to it")?,
        contract,
        dir: p.dir,
        max_join_deposit: vigil_layer2::amount::parse(&c.max_join_deposit).map_err(anyhow::Error::msg)?,
        request_timeout: Duration::from_millis(c.request_timeout_ms),
    };
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    forward_events(rx, p.audit.clone(), p.queues);
    let paused = p.monitor.hub.pauses().flag("layer2");
    let adapter = EvmChannels::open(
        cfg,
        p.account,
        Arc::new(NetTransport(net.clone())),
        Arc::new(NodeEvents {
            tx,
            audit: p.audit.clone(),
        }),
        paused,
    )
    .await
    .context("cannot start layer2")?;
    net.set_bytes_server(BytesProtocol::Channel, Arc::new(ChannelServer(adapter.clone())));
    vigil_layer2::metrics::describe();
    tracing::info!(contract = %contract, source = %c.source, address = %adapter.address(), "layer2 payment channels on");
    Ok(Some(Layer2 {
        adapter,
        heads: followed.heads(),
    }))
}
