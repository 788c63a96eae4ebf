//! The adversary's libp2p behaviour: the vigil protocols it needs to look
//! like a node (identify with the genesis' protocol version, gossipsub,
//! status, sync, challenge), and a hand-made ping responder that can hold
//! each pong back (libp2p's own ping answers at once).

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{gossipsub, identify, noise, request_response, tcp, yamux, StreamProtocol, Swarm, SwarmBuilder};
use vigil_actors::net::app::{CHALLENGE_REQUEST_MAX, CHALLENGE_RESPONSE_MAX};
use vigil_actors::net::codec::{FrameCodec, Status, STATUS_MAX};
use vigil_actors::net::sync::{SYNC_REQUEST_MAX, SYNC_RESPONSE_MAX};
use vigil_actors::net::{Names, SyncRequest, SyncResponse};
use vigil_protocols::availability::challenge::{Request as ChallengeRequest, Response as ChallengeResponse};

/// The standard ping protocol id.
pub(crate) const PING: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");
const PING_LEN: usize = 32;

/// Ping as request-response: 32 bytes each way. The pinger keeps its
/// stream for the next ping and finds it closed after a pong, so every
/// other ping of a vigil node fails; the ones that succeed carry the delay.
#[derive(Debug, Clone, Default)]
pub(crate) struct PingEcho;

async fn read32<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; PING_LEN];
    io.read_exact(&mut b).await?;
    Ok(b)
}

async fn write32<T: AsyncWrite + Unpin + Send>(io: &mut T, b: Vec<u8>) -> io::Result<()> {
    io.write_all(&b).await?;
    io.flush().await
}

#[async_trait]
impl request_response::Codec for PingEcho {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read32(io).await
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read32(io).await
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        b: Vec<u8>,
    ) -> io::Result<()> {
        write32(io, b).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        b: Vec<u8>,
    ) -> io::Result<()> {
        write32(io, b).await
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: request_response::Behaviour<PingEcho>,
    pub gossipsub: gossipsub::Behaviour,
    pub status: request_response::Behaviour<FrameCodec<Status, Status>>,
    pub sync: request_response::Behaviour<FrameCodec<SyncRequest, SyncResponse>>,
    pub challenge: request_response::Behaviour<FrameCodec<ChallengeRequest, ChallengeResponse>>,
    pub continuity: request_response::Behaviour<FrameCodec<Vec<u8>, Vec<u8>>>,
    pub raw: super::raw::RawFrames,
}

fn rr<C: request_response::Codec<Protocol = StreamProtocol> + Clone + Send + 'static>(
    codec: C,
    protocol: StreamProtocol,
) -> request_response::Behaviour<C> {
    request_response::Behaviour::with_codec(
        codec,
        [(protocol, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(120)),
    )
}

pub(crate) fn build(key: &Keypair, names: &Names) -> anyhow::Result<Swarm<Behaviour>> {
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .protocol_id_prefix(names.gossip_prefix.clone())
        .heartbeat_interval(Duration::from_millis(700))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .max_transmit_size(1 << 20)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
    let behaviour = Behaviour {
        identify: identify::Behaviour::new(
            identify::Config::new(names.protocol_version.clone(), key.public())
                .with_agent_version("vigil-adversary/test".into()),
        ),
        ping: rr(PingEcho, PING),
        gossipsub,
        status: rr(FrameCodec::new(STATUS_MAX, STATUS_MAX), names.status.clone()),
        sync: rr(
            FrameCodec::new(SYNC_REQUEST_MAX, SYNC_RESPONSE_MAX),
            names.sync.clone(),
        ),
        challenge: rr(
            FrameCodec::new(CHALLENGE_REQUEST_MAX, CHALLENGE_RESPONSE_MAX),
            names.challenge.clone(),
        ),
        continuity: rr(FrameCodec::new(64, 256 * 1024), names.continuity.clone()),
        raw: super::raw::RawFrames::new(names),
    };
    Ok(SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build())
}
