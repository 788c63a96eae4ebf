//! Who is in the vigil network. Any libp2p peer may connect, identify and
//! ping (the standard protocols keep their standard ids); membership (the
//! peer book, Kademlia, the gossipsub mesh, challenges, sync, continuity and
//! channels) follows from a status handshake on `/vigil/<g8>/status/1`,
//! whose name and body carry the genesis. A peer whose identify lists
//! another genesis's status protocol is disconnected and forgotten; a peer
//! that speaks no vigil protocol (a libp2p ping or identify probe, another
//! network's node) is a stranger: its vigil requests are closed unanswered
//! and it is disconnected `network.idle_timeout_secs` after it connected.

use std::time::Instant;

use libp2p::{identify, request_response, Multiaddr, PeerId};

use super::{dialable, Loop};
use crate::metrics as m;
use crate::net::codec::{Frame, Status, WireError};
use crate::net::lock;
use crate::net::score::Merit;

/// What a peer's identify says about it.
enum Kind {
    /// Lists our status protocol: a vigil node of this genesis, pending its status.
    Ours,
    /// Lists the status protocol of another genesis.
    Foreign(String),
    /// Speaks no vigil protocol.
    Stranger,
}

impl Loop {
    fn kind(&self, info: &identify::Info) -> Kind {
        let ours = &self.net.inner.names.status;
        if info.protocols.iter().any(|p| p == ours) {
            return Kind::Ours;
        }
        match info.protocols.iter().find(|p| {
            let p = p.as_ref();
            p.starts_with("/vigil/") && p.ends_with("/status/1")
        }) {
            Some(theirs) => Kind::Foreign(theirs.to_string()),
            None => Kind::Stranger,
        }
    }

    pub(super) fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if let Some(p) = lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
            p.identified = true;
            p.agent = Some(info.agent_version.clone());
            p.protocols = info.protocols.iter().map(|p| p.to_string()).collect();
        }
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| dialable(a))
            .cloned()
            .collect();
        match self.kind(&info) {
            Kind::Foreign(theirs) => {
                tracing::warn!(
                    %peer,
                    theirs = %theirs,
                    ours = %self.net.inner.names.status,
                    agent = %info.agent_version,
                    "peer is on another genesis: disconnecting and forgetting it"
                );
                metrics::counter!(m::NET_FOREIGN).increment(1);
                self.foreign.insert(peer);
                self.known.remove(&peer);
                let _ = self.net.inner.book.forget(&peer);
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                lock(&self.net.inner.snapshot).peers.remove(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Kind::Stranger => {
                tracing::info!(
                    %peer,
                    agent = %info.agent_version,
                    protocol_version = %info.protocol_version,
                    "a libp2p peer that speaks no vigil protocol: identify and ping only, disconnected after network.idle_timeout_secs"
                );
            }
            Kind::Ours if self.members.contains(&peer) => self.learn_member(peer, &addrs),
            Kind::Ours => {
                self.heard.insert(peer, addrs);
                let status = self.our_status();
                self.swarm
                    .behaviour_mut()
                    .status
                    .send_request(&peer, Frame::Valid(status));
            }
        }
        self.publish_gauges();
    }

    /// `peer` exchanged a status of our genesis with us: it is a member.
    pub(super) fn join(&mut self, peer: PeerId) {
        if !self.members.insert(peer) {
            return;
        }
        if let Some(p) = lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
            p.member = true;
        }
        tracing::debug!(%peer, "joined (status exchanged)");
        if let Some(addrs) = self.heard.remove(&peer) {
            self.learn_member(peer, &addrs);
        }
        self.publish_gauges();
    }

    /// Dials `peer` at `addrs` later (the book, Kademlia).
    fn learn_member(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        self.learn(peer, addrs);
        let now = Instant::now();
        let scores = &self.scores;
        if let Err(e) = self.net.inner.book.remember(&peer, addrs, |p| scores.get(p, now)) {
            tracing::warn!(%peer, error = %e, "cannot store the peer's addresses");
        }
    }

    /// Whether `peer`'s requests are served: a member, or a peer whose
    /// identify lists our status protocol while the exchange is under way
    /// (a node sends requests only to peers it has exchanged a status
    /// with, and answers the status request before it counts us; so an
    /// honest peer's request can overtake our own view of the exchange).
    fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains(peer) || self.heard.contains_key(peer)
    }

    /// Whether `ev` may be handled: anything but a request from a peer
    /// that has not joined (see `is_member`). Such a request is
    /// dropped with its response channel, which closes the stream
    /// unanswered.
    pub(super) fn may_handle<Req, Resp>(
        &self,
        ev: &request_response::Event<Req, Resp>,
        kind: &'static str,
    ) -> bool {
        match ev {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { .. },
                ..
            } if !self.is_member(peer) => {
                tracing::debug!(%peer, kind, "request from a peer that has not joined: closed unanswered");
                metrics::counter!(m::NET_REQUESTS_REFUSED, "kind" => kind, "reason" => "not_member")
                    .increment(1);
                false
            }
            _ => true,
        }
    }

    pub(super) fn left(&mut self, peer: &PeerId) {
        self.members.remove(peer);
        self.heard.remove(peer);
    }

    /// Disconnects peers connected longer than `network.idle_timeout_secs`
    /// without joining, whatever streams they keep open.
    pub(super) fn close_strangers(&mut self, now: Instant) {
        let after = lock(&self.net.inner.settings).idle_timeout;
        let due: Vec<PeerId> = lock(&self.net.inner.snapshot)
            .peers
            .iter()
            .filter(|(p, i)| {
                !self.members.contains(p) && i.since.is_some_and(|t| now.duration_since(t) >= after)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            tracing::info!(%peer, "disconnecting a peer that did not join within network.idle_timeout_secs");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    pub(super) fn our_status(&self) -> Status {
        Status {
            genesis: self.net.inner.genesis,
            head: self.net.epoch_source().map_or(0, |s| s.head()),
            agent: lock(&self.net.inner.settings).agent.clone(),
        }
    }

    pub(super) fn on_status(&mut self, ev: request_response::Event<Frame<Status>, Frame<Status>>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => match request {
                Frame::Valid(s) if s.genesis == self.net.inner.genesis => {
                    // Its head is a claim like the one in its answers (checked before it counts).
                    if let Some(p) = lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
                        p.head = Some(s.head);
                    }
                    self.join(peer);
                    let status = self.our_status();
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .status
                        .send_response(channel, Frame::Valid(status));
                }
                Frame::Valid(_) => {
                    self.bad_frame(peer, WireError::Malformed("status of another genesis".into()))
                }
                // Dropping the channel closes the stream unanswered.
                Frame::Invalid(e) => self.bad_frame(peer, e),
            },
            Event::Message {
                peer,
                message: Message::Response { response, .. },
                ..
            } => match response {
                Frame::Valid(s) if s.genesis == self.net.inner.genesis => {
                    if let Some(p) = lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
                        p.head = Some(s.head);
                    }
                    self.join(peer);
                    self.reward(peer, Merit::GoodResponse);
                }
                Frame::Valid(_) => {
                    self.bad_frame(peer, WireError::Malformed("status of another genesis".into()))
                }
                Frame::Invalid(e) => self.bad_frame(peer, e),
            },
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound status request failed");
            }
            Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "outbound status request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
