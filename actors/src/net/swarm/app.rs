//! The swarm side of app gossip topics and the challenge protocol.

use std::time::{Duration, Instant};

use libp2p::{gossipsub, request_response, PeerId};
use tokio::sync::oneshot;
use vigil_protocols::availability::challenge::{Request, Response};

use super::super::app::{BytesProtocol, BytesReply, ChallengeReply};
use super::super::codec::Frame;
use super::super::limits::Work;
use super::super::score::{Merit, Offence};
use super::super::sync::GossipVerdict;
use super::{lock, Loop};
use crate::metrics as m;

pub(super) type ChallengeAnswer = oneshot::Sender<Result<(Frame<Response>, Duration), String>>;

impl Loop {
    pub(super) fn subscribe_app_topics(&mut self) {
        let topics: Vec<gossipsub::IdentTopic> = lock(&self.net.inner.handlers)
            .values()
            .map(|(t, _)| t.clone())
            .collect();
        for t in topics {
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&t) {
                tracing::error!(topic = %t, error = %e, "cannot subscribe");
            }
        }
    }

    pub(super) fn publish_app(&mut self, topic: gossipsub::IdentTopic, bytes: Vec<u8>) -> Result<(), String> {
        let len = bytes.len();
        self.record_gossip(&topic.hash(), &bytes, true);
        match self.swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes) {
            Ok(_) => {
                metrics::counter!(m::NET_BYTES, "protocol" => "gossip", "direction" => "out")
                    .increment(len as u64);
                Ok(())
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
            Err(e) => Err(format!("cannot publish on {topic}: {e}")),
        }
    }

    /// Gossip on an app topic: `Some(verdict)` when a handler owns the topic.
    pub(super) fn on_app_gossip(&mut self, from: PeerId, msg: &gossipsub::Message) -> Option<GossipVerdict> {
        let handler = lock(&self.net.inner.handlers)
            .get(&msg.topic)
            .map(|(_, h)| h.clone())?;
        metrics::counter!(m::NET_BYTES, "protocol" => "gossip", "direction" => "in")
            .increment(msg.data.len() as u64);
        Some(handler.on_gossip(from, msg.source, &msg.data))
    }

    /// Tells gossipsub what became of a message, counts it under `topic`,
    /// and scores its forwarder (`offence` for a reject).
    pub(super) fn report_gossip(
        &mut self,
        id: &gossipsub::MessageId,
        from: PeerId,
        topic: String,
        v: GossipVerdict,
        offence: Offence,
    ) {
        let (acceptance, result) = match v {
            GossipVerdict::Accept => (gossipsub::MessageAcceptance::Accept, "accepted"),
            GossipVerdict::Ignore => (gossipsub::MessageAcceptance::Ignore, "ignored"),
            GossipVerdict::Reject => (gossipsub::MessageAcceptance::Reject, "rejected"),
        };
        metrics::counter!(m::NET_GOSSIP, "topic" => topic, "result" => result).increment(1);
        match v {
            GossipVerdict::Accept => self.reward(from, Merit::ValidGossip),
            GossipVerdict::Reject => self.penalize(from, offence),
            GossipVerdict::Ignore => {}
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &from, acceptance);
    }

    pub(super) fn send_challenge(&mut self, peer: PeerId, req: Request, reply: ChallengeAnswer) {
        if !self.swarm.is_connected(&peer) {
            let _ = reply.send(Err(format!("peer {peer} is not connected")));
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .challenge
            .send_request(&peer, Frame::Valid(req));
        self.pending_challenges.insert(id, (Instant::now(), reply));
    }

    pub(super) fn on_challenge(&mut self, ev: request_response::Event<Frame<Request>, Frame<Response>>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => match request {
                Frame::Valid(req) => {
                    let work = match req {
                        Request::Challenge(_) => Work::Challenge,
                        Request::Audit { .. } => Work::Audit,
                    };
                    let permit = match self.admit(peer, work) {
                        Ok(p) => p,
                        Err(ms) => return self.respond_challenge(channel, Response::Busy(ms)),
                    };
                    let server = lock(&self.net.inner.challenge_server).clone();
                    match server {
                        Some(s) => s.serve(
                            peer,
                            req,
                            ChallengeReply {
                                channel,
                                net: self.net.clone(),
                                _permit: permit,
                            },
                        ),
                        None => {
                            let resp = Response::Refused("this node stores no datasets".into());
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .challenge
                                .send_response(channel, Frame::Valid(resp));
                        }
                    }
                }
                Frame::Invalid(e) => self.bad_frame(peer, e),
            },
            Event::Message {
                message: Message::Response { request_id, response },
                ..
            } => {
                // Invalid frames go back to the challenger: it scores the outcome `malformed`.
                if let Some((t0, reply)) = self.pending_challenges.remove(&request_id) {
                    let _ = reply.send(Ok((response, t0.elapsed())));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.pending_challenges.remove(&request_id) {
                    let _ = reply.send(Err(format!("challenge to {peer} failed: {error}")));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound challenge failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn respond_challenge(
        &mut self,
        channel: request_response::ResponseChannel<Frame<Response>>,
        resp: Response,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .challenge
            .send_response(channel, Frame::Valid(resp));
    }
}

pub(super) type BytesAnswer = oneshot::Sender<Result<Frame<Vec<u8>>, String>>;

impl Loop {
    fn bytes_behaviour(
        &mut self,
        p: BytesProtocol,
    ) -> &mut request_response::Behaviour<super::super::codec::FrameCodec<Vec<u8>, Vec<u8>>> {
        match p {
            BytesProtocol::Continuity => &mut self.swarm.behaviour_mut().continuity,
            BytesProtocol::Channel => &mut self.swarm.behaviour_mut().channel,
        }
    }

    fn bytes_server(&self, p: BytesProtocol) -> Option<std::sync::Arc<dyn super::super::app::BytesServer>> {
        lock(&self.net.inner.bytes_servers).get(&p).cloned()
    }

    pub(super) fn send_bytes(&mut self, p: BytesProtocol, peer: PeerId, req: Vec<u8>, reply: BytesAnswer) {
        if !self.swarm.is_connected(&peer) {
            let _ = reply.send(Err(format!("peer {peer} is not connected")));
            return;
        }
        let id = self.bytes_behaviour(p).send_request(&peer, Frame::Valid(req));
        self.pending_bytes.insert((p, id), reply);
    }

    pub(super) fn respond_bytes(
        &mut self,
        p: BytesProtocol,
        channel: request_response::ResponseChannel<Frame<Vec<u8>>>,
        resp: Vec<u8>,
    ) {
        let _ = self.bytes_behaviour(p).send_response(channel, Frame::Valid(resp));
    }

    pub(super) fn on_bytes(
        &mut self,
        p: BytesProtocol,
        ev: request_response::Event<Frame<Vec<u8>>, Frame<Vec<u8>>>,
    ) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => match request {
                Frame::Valid(req) => {
                    let permit = match self.admit(peer, p.work()) {
                        Ok(permit) => permit,
                        Err(ms) => return self.respond_bytes(p, channel, p.busy(ms)),
                    };
                    match self.bytes_server(p) {
                        Some(s) => s.serve(
                            peer,
                            req,
                            BytesReply {
                                protocol: p,
                                channel,
                                net: self.net.clone(),
                                _permit: permit,
                            },
                        ),
                        None => self.respond_bytes(p, channel, p.off()),
                    }
                }
                Frame::Invalid(e) => self.bad_frame(peer, e),
            },
            Event::Message {
                message: Message::Response { request_id, response },
                ..
            } => {
                if let Some(reply) = self.pending_bytes.remove(&(p, request_id)) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_bytes.remove(&(p, request_id)) {
                    let _ = reply.send(Err(format!("{} request to {peer} failed: {error}", p.name())));
                }
            }
            _ => {}
        }
    }
}
