//! Hooks for the node's protocols above the network: gossip topics with a
//! handler that judges each message, and the challenge protocol
//! `/vigil/<g8>/challenge/1` served by a [`ChallengeServer`].

use std::time::Duration;

use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use vigil_protocols::availability::challenge::{Request, Response};

use super::codec::{Frame, Wire};
use super::sync::GossipVerdict;
use super::{Command, Network};

/// Largest challenge request body.
pub const CHALLENGE_REQUEST_MAX: usize = 4 * 1024;
/// Largest challenge response body (16 proofs of ~2 KB, or an audit).
pub const CHALLENGE_RESPONSE_MAX: usize = 64 * 1024;

impl Wire for Request {
    fn encode(&self) -> Vec<u8> {
        Request::encode(self)
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Request::decode(bytes)
    }
}

impl Wire for Response {
    fn encode(&self) -> Vec<u8> {
        Response::encode(self)
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Response::decode(bytes)
    }
}

/// Judges the messages of one gossip topic (cheaply: it runs on the swarm task).
pub trait GossipHandler: Send + Sync + std::fmt::Debug + 'static {
    /// A message from `source` (its signed author), forwarded by `from`.
    fn on_gossip(&self, from: PeerId, source: Option<PeerId>, data: &[u8]) -> GossipVerdict;
}

/// Answers challenge requests; must not block (hand the work to a thread).
pub trait ChallengeServer: Send + Sync + std::fmt::Debug + 'static {
    /// A request from `from`; answer through `reply`.
    fn serve(&self, from: PeerId, req: Request, reply: ChallengeReply);
}

/// Where a challenge answer goes.
#[derive(Debug)]
pub struct ChallengeReply {
    pub(super) channel: ResponseChannel<Frame<Response>>,
    pub(super) net: Network,
    /// The request's slot ([`super::limits`]), freed once the answer is sent.
    pub(super) _permit: super::limits::Permit,
}

impl ChallengeReply {
    /// Sends the answer (dropped if the network restarted meanwhile).
    pub async fn send(self, resp: Response) {
        let tx = super::lock(&self.net.inner.cmd).clone();
        if let Some(tx) = tx {
            let _ = tx.send(Command::ChallengeRespond(self.channel, resp)).await;
        }
    }
}

impl Network {
    /// Handles gossip topic `/vigil/<g8>/<suffix>` with `h` (before or after
    /// [`Network::launch`]; survives relaunches).
    pub fn set_gossip_handler(&self, suffix: &str, h: std::sync::Arc<dyn GossipHandler>) {
        let topic = self.inner.names.topic(suffix);
        super::lock(&self.inner.handlers).insert(topic.hash(), (topic.clone(), h));
        // A running swarm subscribes now; a (re)launch subscribes every handler's topic.
        if let Some(tx) = super::lock(&self.inner.cmd).clone() {
            let _ = tx.try_send(Command::Subscribe(topic));
        }
    }

    /// Serves `/vigil/<g8>/challenge/1` with `s`.
    pub fn set_challenge_server(&self, s: std::sync::Arc<dyn ChallengeServer>) {
        *super::lock(&self.inner.challenge_server) = Some(s);
    }

    /// Publishes on gossip topic `/vigil/<g8>/<suffix>`; alone on the network it is a no-op.
    pub async fn publish(&self, suffix: &str, bytes: Vec<u8>) -> crate::Result<()> {
        let topic = self.inner.names.topic(suffix);
        self.ask(|r| Command::Publish(topic, bytes, r)).await
    }

    /// Sends a challenge request; the answer and the round trip the swarm timed.
    pub async fn challenge(&self, peer: PeerId, req: Request) -> crate::Result<(Frame<Response>, Duration)> {
        self.ask(|r| Command::Challenge(peer, req, r)).await
    }

    /// Raises a peer's score for a good answer seen outside the network (a valid proof).
    pub async fn credit(&self, peer: PeerId) {
        let tx = super::lock(&self.inner.cmd).clone();
        if let Some(tx) = tx {
            let _ = tx.send(Command::Credit(peer)).await;
        }
    }

    /// The lowest ping round trip to `peer` over [`super::RTT_WINDOW`], if any.
    pub fn rtt_floor(&self, peer: &PeerId) -> Option<Duration> {
        super::lock(&self.inner.snapshot)
            .peers
            .get(peer)
            .and_then(|p| p.rtt_floor_ms)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    /// The last ping round trip to `peer`, if any.
    pub fn ping_rtt(&self, peer: &PeerId) -> Option<Duration> {
        super::lock(&self.inner.snapshot)
            .peers
            .get(peer)
            .and_then(|p| p.latency_ms)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }
}

/// Largest frame of `/vigil/<g8>/channel/1` either way: a batch of at most
/// 64 channel messages of at most 1 KiB each, with their lengths (the
/// adapter checks each message).
pub const CHANNEL_FRAME_MAX: usize = 3 + 64 * (2 + 1024);

const BUSY_PREFIX: &str = "busy: try again in ";

/// The wait a bytes answer asks for when it says the node is busy
/// (`BytesProtocol::busy`); `None` for any other answer.
pub fn busy_ms(answer: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(answer.strip_prefix(b"\0")?).ok()?;
    text.strip_prefix(BUSY_PREFIX)?.strip_suffix(" ms")?.parse().ok()
}

/// A bytes-in, bytes-out protocol served by a handler above the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BytesProtocol {
    /// `/vigil/<g8>/continuity/1`: continuity proofs.
    Continuity,
    /// `/vigil/<g8>/channel/1`: Layer2 payment channels.
    Channel,
}

impl BytesProtocol {
    /// Its name in errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Continuity => "continuity",
            Self::Channel => "channel",
        }
    }

    /// What a node without a server for it answers.
    pub(super) fn off(self) -> Vec<u8> {
        match self {
            Self::Continuity => b"\0continuity chains are off on this node".to_vec(),
            Self::Channel => b"\0layer2 is off on this node".to_vec(),
        }
    }

    /// The kind of work a request costs ([`super::limits`]).
    pub(super) fn work(self) -> super::limits::Work {
        match self {
            Self::Continuity => super::limits::Work::Continuity,
            Self::Channel => super::limits::Work::Channel,
        }
    }

    /// What a busy node answers: a 0 byte, then `busy: try again in <ms> ms`
    /// ([`busy_ms`] reads it back).
    pub(super) fn busy(self, ms: u32) -> Vec<u8> {
        format!("\0{BUSY_PREFIX}{ms} ms").into_bytes()
    }
}

/// Answers a bytes-in, bytes-out protocol; must not block.
pub trait BytesServer: Send + Sync + std::fmt::Debug + 'static {
    /// A request from `from`; answer through `reply`.
    fn serve(&self, from: PeerId, req: Vec<u8>, reply: BytesReply);
}

/// Where a bytes answer goes.
#[derive(Debug)]
pub struct BytesReply {
    pub(super) protocol: BytesProtocol,
    pub(super) channel: ResponseChannel<Frame<Vec<u8>>>,
    pub(super) net: Network,
    /// The request's slot ([`super::limits`]), freed once the answer is sent.
    pub(super) _permit: super::limits::Permit,
}

impl BytesReply {
    /// Sends the answer.
    pub async fn send(self, resp: Vec<u8>) {
        let tx = super::lock(&self.net.inner.cmd).clone();
        if let Some(tx) = tx {
            let _ = tx
                .send(Command::BytesRespond(self.protocol, self.channel, resp))
                .await;
        }
    }
}

impl Network {
    /// Serves `protocol` with `s` (before or after launch).
    pub fn set_bytes_server(&self, protocol: BytesProtocol, s: std::sync::Arc<dyn BytesServer>) {
        super::lock(&self.inner.bytes_servers).insert(protocol, s);
    }

    /// Asks `peer` on `protocol`.
    pub async fn bytes_request(
        &self,
        protocol: BytesProtocol,
        peer: PeerId,
        req: Vec<u8>,
    ) -> crate::Result<Frame<Vec<u8>>> {
        self.ask(|r| Command::BytesRequest(protocol, peer, req, r)).await
    }
}
