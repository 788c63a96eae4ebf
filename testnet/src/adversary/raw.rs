//! Raw frames on every vigil protocol: what a hostile peer sends to see
//! what breaks (garbage bodies, frames over the protocol's limit). Outbound
//! only, so they do not compete with the typed behaviours for inbound
//! streams.

use std::time::Duration;

use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::StreamProtocol;
use vigil_actors::net::codec::{Frame, FrameCodec, STATUS_MAX};
use vigil_actors::net::Names;

/// A vigil protocol to send raw frames on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawProtocol {
    /// `/vigil/<g8>/status/1`.
    Status,
    /// `/vigil/<g8>/sync/1`.
    Sync,
    /// `/vigil/<g8>/challenge/1`.
    Challenge,
    /// `/vigil/<g8>/continuity/1`.
    Continuity,
    /// `/vigil/<g8>/channel/1`.
    Channel,
}

impl RawProtocol {
    /// Every one.
    pub const ALL: [RawProtocol; 5] = [
        Self::Status,
        Self::Sync,
        Self::Challenge,
        Self::Continuity,
        Self::Channel,
    ];

    /// The honest node's request limit on it, bytes: one more is oversized.
    pub fn request_max(self) -> usize {
        match self {
            Self::Status => STATUS_MAX,
            Self::Sync => vigil_actors::net::sync::SYNC_REQUEST_MAX,
            Self::Challenge => vigil_actors::net::app::CHALLENGE_REQUEST_MAX,
            Self::Continuity => 64,
            Self::Channel => vigil_actors::net::app::CHANNEL_FRAME_MAX,
        }
    }
}

type Raw = request_response::Behaviour<FrameCodec<Vec<u8>, Vec<u8>>>;

/// One outbound raw behaviour per protocol.
#[derive(NetworkBehaviour)]
pub(crate) struct RawFrames {
    status: Raw,
    sync: Raw,
    challenge: Raw,
    continuity: Raw,
    channel: Raw,
}

fn raw(p: StreamProtocol) -> Raw {
    request_response::Behaviour::with_codec(
        FrameCodec::new(1 << 20, 8 << 20),
        [(p, ProtocolSupport::Outbound)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
    )
}

impl RawFrames {
    pub(crate) fn new(n: &Names) -> Self {
        Self {
            status: raw(n.status.clone()),
            sync: raw(n.sync.clone()),
            challenge: raw(n.challenge.clone()),
            continuity: raw(n.continuity.clone()),
            channel: raw(n.channel.clone()),
        }
    }

    pub(crate) fn send(&mut self, p: RawProtocol, peer: &libp2p::PeerId, body: Vec<u8>) -> OutboundRequestId {
        let b = match p {
            RawProtocol::Status => &mut self.status,
            RawProtocol::Sync => &mut self.sync,
            RawProtocol::Challenge => &mut self.challenge,
            RawProtocol::Continuity => &mut self.continuity,
            RawProtocol::Channel => &mut self.channel,
        };
        b.send_request(peer, Frame::Valid(body))
    }
}

/// A raw request: its protocol and id.
pub(crate) type RawKey = (RawProtocol, OutboundRequestId);

/// The answer to a raw request in `ev`, keyed by protocol and request id.
pub(crate) fn answer(ev: RawFramesEvent) -> Option<(RawKey, Result<Vec<u8>, String>)> {
    let (p, e) = match ev {
        RawFramesEvent::Status(e) => (RawProtocol::Status, e),
        RawFramesEvent::Sync(e) => (RawProtocol::Sync, e),
        RawFramesEvent::Challenge(e) => (RawProtocol::Challenge, e),
        RawFramesEvent::Continuity(e) => (RawProtocol::Continuity, e),
        RawFramesEvent::Channel(e) => (RawProtocol::Channel, e),
    };
    match e {
        request_response::Event::Message {
            message: request_response::Message::Response { request_id, response },
            ..
        } => Some((
            (p, request_id),
            match response {
                Frame::Valid(b) => Ok(b),
                Frame::Invalid(e) => Err(e.to_string()),
            },
        )),
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => Some(((p, request_id), Err(error.to_string()))),
        _ => None,
    }
}
