//! The composed libp2p behaviour and the swarm built from it.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, kad, noise, ping, request_response, tcp, yamux,
    StreamProtocol, Swarm, SwarmBuilder,
};

use super::app::{CHALLENGE_REQUEST_MAX, CHALLENGE_RESPONSE_MAX, CHANNEL_FRAME_MAX};
use super::codec::{FrameCodec, Status, STATUS_MAX};
use super::sync::{SyncRequest, SyncResponse, SYNC_REQUEST_MAX, SYNC_RESPONSE_MAX};
use super::NetSettings;
use crate::{Error, Result};
use vigil_protocols::availability::challenge::{Request as ChallengeRequest, Response as ChallengeResponse};

/// Every behaviour of a vigil node. `limits` is the first field so its
/// verdict on a connection comes before any other behaviour sees it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub ips: super::ipguard::IpGuard,
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub status: request_response::Behaviour<FrameCodec<Status, Status>>,
    pub sync: request_response::Behaviour<FrameCodec<SyncRequest, SyncResponse>>,
    pub challenge: request_response::Behaviour<FrameCodec<ChallengeRequest, ChallengeResponse>>,
    pub continuity: request_response::Behaviour<FrameCodec<Vec<u8>, Vec<u8>>>,
    pub channel: request_response::Behaviour<FrameCodec<Vec<u8>, Vec<u8>>>,
}

/// Protocol names and topics of one genesis: `/vigil/<g8>/...`.
#[derive(Debug, Clone)]
pub struct Names {
    /// The genesis hash prefix (16 hex chars).
    pub g8: String,
    /// Identify's `protocol_version`, `/vigil/<g8>/1`: informative only
    /// (other implementations cannot choose theirs); membership follows
    /// from the status handshake.
    pub protocol_version: String,
    /// Gossipsub's protocol prefix, `/vigil/<g8>/meshsub` (then `/1.1.0`,
    /// `/1.0.0`): the mesh is of this genesis's nodes only.
    pub gossip_prefix: String,
    /// `/vigil/<g8>/kad/1`.
    pub kad: StreamProtocol,
    /// `/vigil/<g8>/status/1`.
    pub status: StreamProtocol,
    /// `/vigil/<g8>/sync/1`: epochs by range.
    pub sync: StreamProtocol,
    /// `/vigil/<g8>/challenge/1`: availability challenges and audits.
    pub challenge: StreamProtocol,
    /// `/vigil/<g8>/continuity/1`: continuity proofs.
    pub continuity: StreamProtocol,
    /// `/vigil/<g8>/channel/1`: Layer2 payment channels.
    pub channel: StreamProtocol,
    /// Gossip topic of operator probes, `/vigil/<g8>/probe/1`.
    pub probe_topic: gossipsub::IdentTopic,
    /// Gossip topic of new epochs, `/vigil/<g8>/epochs`.
    pub epoch_topic: gossipsub::IdentTopic,
}

impl Names {
    /// The names for genesis prefix `g8`.
    pub fn new(g8: &str) -> Self {
        let p = |s: &str| StreamProtocol::try_from_owned(format!("/vigil/{g8}/{s}")).expect("starts with /");
        Self {
            g8: g8.to_owned(),
            protocol_version: format!("/vigil/{g8}/1"),
            gossip_prefix: format!("/vigil/{g8}/meshsub"),
            kad: p("kad/1"),
            status: p("status/1"),
            sync: p("sync/1"),
            challenge: p("challenge/1"),
            continuity: p("continuity/1"),
            channel: p("channel/1"),
            probe_topic: gossipsub::IdentTopic::new(format!("/vigil/{g8}/probe/1")),
            epoch_topic: gossipsub::IdentTopic::new(format!("/vigil/{g8}/epochs")),
        }
    }

    /// Gossip topic `/vigil/<g8>/<suffix>`.
    pub fn topic(&self, suffix: &str) -> gossipsub::IdentTopic {
        gossipsub::IdentTopic::new(format!("/vigil/{}/{suffix}", self.g8))
    }
}

pub(crate) fn build(key: &Keypair, names: &Names, s: &NetSettings) -> Result<Swarm<Behaviour>> {
    let err = |what: &str, e: &dyn std::fmt::Display| Error::Invalid(format!("cannot build the {what}: {e}"));
    let peer_id = key.public().to_peer_id();
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .protocol_id_prefix(names.gossip_prefix.clone())
        .heartbeat_interval(Duration::from_millis(700))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(s.max_gossip_bytes)
        .build()
        .map_err(|e| err("gossipsub config", &e))?;
    let gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
            .map_err(|e| err("gossipsub behaviour", &e))?;
    let mut kad_cfg = kad::Config::new(names.kad.clone());
    kad_cfg.set_query_timeout(Duration::from_secs(30));
    let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
    // On loopback and LANs kad would stay a client and the DHT empty.
    kad.set_mode(Some(kad::Mode::Server));
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(s.max_pending))
        .with_max_established_incoming(Some(s.max_inbound))
        .with_max_established_outgoing(Some(s.max_outbound))
        .with_max_established_per_peer(Some(s.max_per_peer));
    let behaviour = Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        ips: super::ipguard::IpGuard::new(s.max_inbound_per_ip as usize, s.ip_ban_threshold as usize),
        blocked: allow_block_list::Behaviour::default(),
        identify: identify::Behaviour::new(
            identify::Config::new(names.protocol_version.clone(), key.public())
                .with_agent_version(s.agent.clone()),
        ),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(s.ping_interval)
                .with_timeout(s.ping_timeout),
        ),
        kad,
        gossipsub,
        status: request_response::Behaviour::with_codec(
            FrameCodec::new(STATUS_MAX, STATUS_MAX),
            [(names.status.clone(), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        ),
        sync: request_response::Behaviour::with_codec(
            FrameCodec::new(SYNC_REQUEST_MAX, SYNC_RESPONSE_MAX),
            [(names.sync.clone(), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
        ),
        // Audits make the prover regenerate a sector's encoding: allow for it.
        challenge: request_response::Behaviour::with_codec(
            FrameCodec::new(CHALLENGE_REQUEST_MAX, CHALLENGE_RESPONSE_MAX),
            [(names.challenge.clone(), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        ),
        continuity: request_response::Behaviour::with_codec(
            FrameCodec::new(64, 256 * 1024),
            [(names.continuity.clone(), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
        ),
        // Joining a channel waits for an on-chain transaction.
        channel: request_response::Behaviour::with_codec(
            FrameCodec::new(CHANNEL_FRAME_MAX, CHANNEL_FRAME_MAX),
            [(names.channel.clone(), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        ),
    };
    let idle = s.idle_timeout;
    let swarm = SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| err("TCP transport", &e))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| err("behaviour", &e))?
        // 0-RTT protocol negotiation on the streams this node opens: the
        // request goes out with the protocol name instead of a round trip
        // later (a Layer2 payment, a challenge, a sync request: one round
        // trip each instead of two). Listeners accept both forms.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(idle)
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}
