//! The libp2p network: a swarm on its own tokio task (TCP + QUIC, Noise,
//! Yamux; connection limits, bans, identify, ping, Kademlia in server mode,
//! gossipsub, request-response with [`codec::FrameCodec`]), owned by the
//! supervised [`NetActor`].
//!
//! Every vigil protocol and topic carries the genesis prefix
//! (`/vigil/<g8>/...`, see [`Names`]: status, sync, challenges, Kademlia,
//! gossipsub); identify and ping keep their standard ids so any libp2p
//! implementation can reach the node. Membership (the peer book, routing,
//! the mesh, challenges) follows from the status handshake; a peer whose
//! identify lists another genesis's status protocol is disconnected and
//! forgotten, and one that speaks no vigil protocol is served identify and
//! ping only and disconnected after `network.idle_timeout_secs`. Peers are scored ([`score`]); bans and the addresses of peers
//! met are kept in sled ([`book`]), so a restarted node reconnects even when
//! every bootnode is down.
//!
//! [`Network`] is the handle the RPC and other actors use: reads come from a
//! snapshot the swarm task keeps current, changes go to the task as commands.

mod actor;
pub mod app;
pub mod behaviour;
pub mod book;
pub mod codec;
mod ipguard;
pub mod limits;
pub mod score;
mod swarm;
pub mod sync;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use actor::NetActor;
pub use app::{BytesProtocol, BytesReply, BytesServer, ChallengeReply, ChallengeServer, GossipHandler};
pub use behaviour::Names;
pub use book::{Ban, PeerBook};
pub use limits::{InboundLimits, Quota, Work};
pub use score::{Offence, ScoreParams};
pub use sync::{EpochSource, GossipVerdict, SyncRequest, SyncResponse};

use vigil_protocols::availability::challenge::{Request as ChallengeRequest, Response as ChallengeResponse};

use crate::audit::Audit;
use crate::store::SledStore;
use crate::{Error, Result};

/// Settings of the network, from the node's `[network]` config.
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// Listen multiaddrs (TCP and/or QUIC).
    pub listen: Vec<Multiaddr>,
    /// Bootnodes (genesis and config), ending in `/p2p/<peer id>`.
    pub bootnodes: Vec<Multiaddr>,
    /// Established inbound connections allowed.
    pub max_inbound: u32,
    /// Established outbound connections allowed.
    pub max_outbound: u32,
    /// Inbound connections still handshaking allowed.
    pub max_pending: u32,
    /// Connections per peer allowed.
    pub max_per_peer: u32,
    /// Peers the node dials towards (from the peer book and the DHT).
    pub target_peers: usize,
    /// A connection with no stream open this long is closed.
    pub idle_timeout: Duration,
    /// How often each connection is pinged.
    pub ping_interval: Duration,
    /// A ping unanswered this long closes its connection: the peer is gone
    /// (its host died, or a partition drops its packets) even though TCP,
    /// backing off, would keep the connection for a quarter of an hour.
    pub ping_timeout: Duration,
    /// Score thresholds and ban length.
    pub score: ScoreParams,
    /// First reconnection delay; doubles per failure.
    pub reconnect_initial: Duration,
    /// Largest reconnection delay.
    pub reconnect_max: Duration,
    /// Largest gossip message, bytes.
    pub max_gossip_bytes: usize,
    /// Identify's agent version, e.g. `vigil/0.1.0`.
    pub agent: String,
    /// Bounds on inbound requests that cost work ([`limits`]).
    pub limits: InboundLimits,
    /// Inbound connections from one IP at once.
    pub max_inbound_per_ip: u32,
    /// Banned peer ids from one IP that get the IP banned (0: never).
    pub ip_ban_threshold: u32,
}

impl Default for NetSettings {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")],
            bootnodes: Vec::new(),
            max_inbound: 64,
            max_outbound: 32,
            max_pending: 32,
            max_per_peer: 2,
            target_peers: 16,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(20),
            score: ScoreParams::default(),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            max_gossip_bytes: 1 << 20,
            agent: format!("vigil/{}", env!("CARGO_PKG_VERSION")),
            limits: InboundLimits::default(),
            max_inbound_per_ip: 16,
            ip_ban_threshold: 3,
        }
    }
}

/// One connected peer, as `net_peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Peer id.
    pub peer_id: String,
    /// Remote addresses of its connections.
    pub addresses: Vec<String>,
    /// `inbound` or `outbound` (of its first connection).
    pub direction: &'static str,
    /// Last ping round trip, ms.
    pub latency_ms: Option<f64>,
    /// Lowest ping round trip over the last [`RTT_WINDOW`], ms: what a
    /// verifier allows for network distance (capped by genesis). A peer can
    /// delay its pongs to raise it, never lower it below the real distance.
    pub rtt_floor_ms: Option<f64>,
    /// Current score (-100..=100).
    pub score: f64,
    /// Identify's agent version.
    pub agent: Option<String>,
    /// Protocols it announced.
    pub protocols: Vec<String>,
    /// Whether its identify arrived (agent and protocols are known).
    pub identified: bool,
    /// Whether it exchanged a status of our genesis: a vigil node of this
    /// network. Only members are dialed again, routed, gossiped with,
    /// challenged or served; a peer that stays out (a standard libp2p
    /// client) is disconnected after `network.idle_timeout_secs`.
    pub member: bool,
    /// The epoch head it last claimed: at the status exchange when it
    /// connected, then with each epoch it gossips or serves (a claim: see
    /// `epoch::claims` for which claims count).
    pub head: Option<u64>,
    /// Open connections.
    pub connections: usize,
    /// Seconds since its first connection.
    pub connected_secs: u64,
    #[serde(skip)]
    since: Option<Instant>,
    #[serde(skip)]
    rtts: VecDeque<(Instant, f64)>,
}

/// How long ping round trips count towards a peer's RTT floor.
pub const RTT_WINDOW: Duration = Duration::from_secs(600);
/// Most round trips kept per peer.
const RTTS_KEPT: usize = 64;

impl PeerInfo {
    /// Records a ping round trip and recomputes the floor over the window.
    fn saw_rtt(&mut self, ms: f64, now: Instant) {
        self.latency_ms = Some(ms);
        while self.rtts.len() >= RTTS_KEPT
            || self
                .rtts
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RTT_WINDOW)
        {
            self.rtts.pop_front();
        }
        self.rtts.push_back((now, ms));
        self.rtt_floor_ms = self.rtts.iter().map(|(_, r)| *r).reduce(f64::min);
    }
}

/// What `net_info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct NetInfo {
    /// Local peer id.
    pub peer_id: String,
    /// Addresses the swarm listens on.
    pub listen_addrs: Vec<String>,
    /// Addresses peers observed us at (identify).
    pub external_addrs: Vec<String>,
    /// Genesis-scoped protocol and topic names.
    pub protocols: Vec<String>,
    /// Identified peers connected.
    pub peers: usize,
    /// Bans in force.
    pub banned: usize,
}

/// A gossip probe this node saw (its own or a peer's).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSeen {
    /// Probe id.
    pub id: u64,
    /// Peer that published it.
    pub origin: String,
    /// Sender's clock at publish, Unix µs.
    pub sent_at_us: u64,
    /// Our clock at receipt, Unix µs.
    pub received_at_us: u64,
}

/// Probes kept.
const PROBES_KEPT: usize = 1024;

/// A gossip message this node published or received first-hand, for
/// propagation figures across nodes (one machine's testnets share a clock).
#[derive(Debug, Clone, Serialize)]
pub struct GossipSeen {
    /// Topic, without the `/vigil/<genesis>/` prefix (`epochs`, `attestations/2`, ...).
    pub topic: String,
    /// BLAKE3 of the topic and the message's data, first 8 bytes in hex: the
    /// same content has the same key on every node, whoever forwarded it.
    pub key: String,
    /// Published by this node (`false`: received from a peer).
    pub own: bool,
    /// Our clock, Unix µs.
    pub at_us: u64,
}

/// Gossip messages kept for [`Network::gossip_seen`].
pub const GOSSIP_KEPT: usize = 4096;

#[derive(Debug, Default)]
struct Snapshot {
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    peers: HashMap<PeerId, PeerInfo>,
    probes: VecDeque<ProbeSeen>,
    gossip: VecDeque<GossipSeen>,
}

pub(crate) enum Command {
    Dial(Multiaddr, oneshot::Sender<std::result::Result<(), String>>),
    Ban {
        peer: PeerId,
        secs: u64,
        reason: String,
        by: String,
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
    Unban(PeerId, oneshot::Sender<std::result::Result<bool, String>>),
    UnbanIp(
        std::net::IpAddr,
        oneshot::Sender<std::result::Result<bool, String>>,
    ),
    Probe(oneshot::Sender<std::result::Result<u64, String>>),
    Penalize(PeerId, Offence),
    PublishEpoch(Vec<u8>, oneshot::Sender<std::result::Result<(), String>>),
    ReportEpoch(libp2p::gossipsub::MessageId, PeerId, GossipVerdict),
    Sync(
        PeerId,
        SyncRequest,
        oneshot::Sender<std::result::Result<SyncResponse, String>>,
    ),
    Publish(
        libp2p::gossipsub::IdentTopic,
        Vec<u8>,
        oneshot::Sender<std::result::Result<(), String>>,
    ),
    Challenge(
        PeerId,
        ChallengeRequest,
        oneshot::Sender<std::result::Result<(codec::Frame<ChallengeResponse>, Duration), String>>,
    ),
    ChallengeRespond(
        libp2p::request_response::ResponseChannel<codec::Frame<ChallengeResponse>>,
        ChallengeResponse,
    ),
    SyncRespond(
        libp2p::request_response::ResponseChannel<codec::Frame<SyncResponse>>,
        SyncResponse,
    ),
    Credit(PeerId),
    Subscribe(libp2p::gossipsub::IdentTopic),
    BytesRequest(
        app::BytesProtocol,
        PeerId,
        Vec<u8>,
        oneshot::Sender<std::result::Result<codec::Frame<Vec<u8>>, String>>,
    ),
    BytesRespond(
        app::BytesProtocol,
        libp2p::request_response::ResponseChannel<codec::Frame<Vec<u8>>>,
        Vec<u8>,
    ),
}

type Handlers =
    HashMap<libp2p::gossipsub::TopicHash, (libp2p::gossipsub::IdentTopic, Arc<dyn GossipHandler>)>;

#[derive(Debug)]
struct Inner {
    key: Keypair,
    genesis: [u8; 32],
    names: Names,
    settings: Mutex<NetSettings>,
    book: PeerBook,
    audit: Option<Audit>,
    snapshot: Mutex<Snapshot>,
    cmd: Mutex<Option<mpsc::Sender<Command>>>,
    epochs: Mutex<Option<Arc<dyn EpochSource>>>,
    handlers: Mutex<Handlers>,
    challenge_server: Mutex<Option<Arc<dyn ChallengeServer>>>,
    bytes_servers: Mutex<HashMap<app::BytesProtocol, Arc<dyn app::BytesServer>>>,
    /// A swarm was launched before (the next launch is a restart).
    launched: std::sync::atomic::AtomicBool,
}

/// Handle to the network; cheap to clone.
#[derive(Debug, Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Network {
    /// A network for genesis `genesis` (full hash); nothing runs until [`Network::launch`].
    pub fn new(
        key: Keypair,
        genesis: [u8; 32],
        settings: NetSettings,
        store: SledStore,
        audit: Option<Audit>,
    ) -> Self {
        let names = Names::new(&hex::encode(&genesis[..8]));
        Self {
            inner: Arc::new(Inner {
                key,
                genesis,
                names,
                settings: Mutex::new(settings),
                book: PeerBook::new(store),
                audit,
                snapshot: Mutex::new(Snapshot::default()),
                cmd: Mutex::new(None),
                epochs: Mutex::new(None),
                handlers: Mutex::new(HashMap::new()),
                challenge_server: Mutex::new(None),
                bytes_servers: Mutex::new(HashMap::new()),
                launched: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Builds the swarm, binds every listen address (an address that cannot
    /// be bound is an error naming it), and runs the swarm on its own task.
    /// Addresses bound to port 0 keep their port across relaunches.
    pub async fn launch(&self) -> Result<tokio::task::JoinHandle<()>> {
        swarm::launch(self.clone()).await
    }

    /// Local peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.key.public().to_peer_id()
    }

    /// Protocol names of this genesis.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// Listen addresses, with `/p2p/<peer id>` appended (what another node dials).
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        let me = self.peer_id();
        lock(&self.inner.snapshot)
            .listen
            .iter()
            .map(|a| a.clone().with(libp2p::multiaddr::Protocol::P2p(me)))
            .collect()
    }

    /// Identified peers connected.
    pub fn peer_count(&self) -> usize {
        lock(&self.inner.snapshot)
            .peers
            .values()
            .filter(|p| p.member)
            .count()
    }

    /// Connected peers, best score first.
    /// `peer` claimed epoch head `head` (after the status exchange).
    pub(crate) fn note_head(&self, peer: &PeerId, head: u64) {
        if let Some(p) = lock(&self.inner.snapshot).peers.get_mut(peer) {
            p.head = Some(head);
        }
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = lock(&self.inner.snapshot)
            .peers
            .values()
            .cloned()
            .map(|mut p| {
                p.connected_secs = p.since.map_or(0, |s| s.elapsed().as_secs());
                p
            })
            .collect();
        v.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.peer_id.cmp(&b.peer_id))
        });
        v
    }

    /// Bans in force.
    pub fn bans(&self) -> Result<Vec<Ban>> {
        let mut out = self.inner.book.bans()?;
        out.extend(self.inner.book.ip_bans()?.into_iter().map(|(_, b)| b));
        Ok(out)
    }

    /// What `net_info` shows.
    pub fn info(&self) -> NetInfo {
        let banned = self.bans().map(|b| b.len()).unwrap_or(0);
        let s = lock(&self.inner.snapshot);
        let n = &self.inner.names;
        NetInfo {
            peer_id: self.peer_id().to_string(),
            listen_addrs: s.listen.iter().map(|a| a.to_string()).collect(),
            external_addrs: s.external.iter().map(|a| a.to_string()).collect(),
            protocols: vec![
                n.kad.to_string(),
                n.status.to_string(),
                n.sync.to_string(),
                n.probe_topic.to_string(),
                n.epoch_topic.to_string(),
                n.challenge.to_string(),
                n.continuity.to_string(),
                n.channel.to_string(),
                format!("{}/1.1.0", n.gossip_prefix),
                n.protocol_version.clone(),
            ],
            peers: s.peers.values().filter(|p| p.member).count(),
            banned,
        }
    }

    /// Probes seen, newest last.
    pub fn probes(&self) -> Vec<ProbeSeen> {
        lock(&self.inner.snapshot).probes.iter().cloned().collect()
    }

    /// The last [`GOSSIP_KEPT`] gossip messages this node published or
    /// received (probes aside), oldest first; with `since_us`, only those at
    /// or after it.
    pub fn gossip_seen(&self, since_us: u64) -> Vec<GossipSeen> {
        let s = lock(&self.inner.snapshot);
        let from = s.gossip.partition_point(|g| g.at_us < since_us);
        s.gossip.range(from..).cloned().collect()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<std::result::Result<T, String>>) -> Command,
    ) -> Result<T> {
        let tx = lock(&self.inner.cmd)
            .clone()
            .ok_or_else(|| Error::Invalid("the network is not running (restarting?): try again".into()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply))
            .await
            .map_err(|_| Error::Invalid("the network stopped: try again".into()))?;
        rx.await
            .map_err(|_| Error::Invalid("the network stopped before answering".into()))?
            .map_err(Error::Invalid)
    }

    /// Dials an address (`/p2p/<id>` optional).
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// Bans a peer for `secs` (0 = the configured ban length); persists it and disconnects.
    pub async fn ban(&self, peer: PeerId, secs: u64, reason: String, by: String) -> Result<()> {
        self.ask(|reply| Command::Ban {
            peer,
            secs,
            reason,
            by,
            reply,
        })
        .await
    }

    /// Lifts a ban and resets the peer's score; false when it was not banned.
    pub async fn unban(&self, peer: PeerId) -> Result<bool> {
        self.ask(|r| Command::Unban(peer, r)).await
    }

    /// Lifts the ban of address `ip`; false when it was not banned.
    pub async fn unban_ip(&self, ip: std::net::IpAddr) -> Result<bool> {
        self.ask(|r| Command::UnbanIp(ip, r)).await
    }

    /// Publishes a gossip probe; returns its id (see [`Network::probes`] on every node).
    pub async fn probe(&self) -> Result<u64> {
        self.ask(Command::Probe).await
    }

    /// Serves epochs from `source` (sync requests, status head) and hands it
    /// epoch gossip. Set before [`Network::launch`]; survives relaunches.
    pub fn set_epoch_source(&self, source: Arc<dyn EpochSource>) {
        *lock(&self.inner.epochs) = Some(source);
    }

    fn epoch_source(&self) -> Option<Arc<dyn EpochSource>> {
        lock(&self.inner.epochs).clone()
    }

    /// Gossips an encoded epoch on `/vigil/<g8>/epochs`.
    pub async fn publish_epoch(&self, bytes: Vec<u8>) -> Result<()> {
        self.ask(|r| Command::PublishEpoch(bytes, r)).await
    }

    /// Tells gossipsub what became of an epoch handed to [`EpochSource::gossip`].
    pub async fn report_epoch(&self, id: libp2p::gossipsub::MessageId, from: PeerId, verdict: GossipVerdict) {
        let tx = lock(&self.inner.cmd).clone();
        if let Some(tx) = tx {
            let _ = tx.send(Command::ReportEpoch(id, from, verdict)).await;
        }
    }

    /// Asks `peer` for epochs by range (`/vigil/<g8>/sync/1`).
    pub async fn sync_range(&self, peer: PeerId, req: SyncRequest) -> Result<SyncResponse> {
        self.ask(|r| Command::Sync(peer, req, r)).await
    }

    /// Member peers, best score first (ids only).
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers()
            .into_iter()
            .filter(|p| p.member)
            .filter_map(|p| p.peer_id.parse().ok())
            .collect()
    }

    /// Lowers a peer's score for an offence seen outside the network (a failed proof).
    pub async fn penalize(&self, peer: PeerId, offence: Offence) {
        let tx = lock(&self.inner.cmd).clone();
        if let Some(tx) = tx {
            let _ = tx.send(Command::Penalize(peer, offence)).await;
        }
    }
}
