//! The adversary's swarm loop: commands from its handle, events from its
//! swarm, and the lies [`super::Cheats`] asks for when it answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, request_response, Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc;
use vigil_actors::net::codec::{Frame, Status};
use vigil_actors::net::SyncResponse;
use vigil_actors::storage::Announcement;
use vigil_protocols::availability::challenge::Response;
use vigil_protocols::continuity::{ProofRequest, SignedProof};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{
    chain, lock, raw, AskReply, AuditAnswer, Cmd, ContinuityCheat, ContinuityParams, FetchReply, RawProtocol,
    RawReply, Replica, Shared,
};

pub(super) struct Loop {
    pub(super) cont: ContinuityParams,
    pub(super) key: Keypair,
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) tx: mpsc::Sender<Cmd>,
    pub(super) rx: mpsc::Receiver<Cmd>,
    pub(super) peers: Vec<Multiaddr>,
    pub(super) genesis: [u8; 32],
    /// Where epochs are gossiped (it extends its chains with each new one).
    pub(super) epochs_topic: gossipsub::TopicHash,
    /// Where it gossips its signed continuity roots.
    pub(super) roots_topic: gossipsub::IdentTopic,
    /// Where it gossips announcements and withdrawals.
    pub(super) datasets_topic: gossipsub::IdentTopic,
    /// Answers it never sends (stalled audits), kept so their streams stay open.
    pub(super) held: Vec<request_response::ResponseChannel<Frame<Response>>>,
    /// Sync requests it never answers.
    pub(super) held_sync: Vec<request_response::ResponseChannel<Frame<SyncResponse>>>,
    /// Its own sync requests waiting for their answers.
    pub(super) fetches: HashMap<request_response::OutboundRequestId, FetchReply>,
    /// Its own challenge-protocol requests waiting for their answers.
    pub(super) asks: HashMap<request_response::OutboundRequestId, AskReply>,
    /// Its raw frames waiting for their answers.
    pub(super) raws: HashMap<(RawProtocol, request_response::OutboundRequestId), RawReply>,
}

impl Loop {
    pub(super) async fn run(mut self) {
        let mut redial = tokio::time::interval(Duration::from_secs(1));
        let mut refresh = tokio::time::interval(vigil_actors::storage::REFRESH);
        loop {
            tokio::select! {
                _ = refresh.tick() => self.refresh_announcements(),
                _ = redial.tick() => {
                    if lock(&self.shared).connected == 0 {
                        for p in self.peers.clone() {
                            let _ = self.swarm.dial(p);
                        }
                    }
                }
                Some(cmd) = self.rx.recv() => self.on_cmd(cmd),
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        let first_peer = self.swarm.connected_peers().next().copied();
        let b = self.swarm.behaviour_mut();
        match cmd {
            Cmd::Publish(topic, bytes, reply) => {
                let r = b
                    .gossipsub
                    .publish(topic, bytes)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Cmd::Pong(ch, bytes) => {
                let _ = b.ping.send_response(ch, bytes);
            }
            Cmd::Answer(ch, resp) => {
                let _ = b.challenge.send_response(ch, Frame::Valid(resp));
            }
            Cmd::Fetch(peer, from, reply) => match peer.or(first_peer) {
                Some(p) => {
                    let req = Frame::Valid(vigil_actors::net::SyncRequest { from, count: 64 });
                    let id = b.sync.send_request(&p, req);
                    self.fetches.insert(id, reply);
                }
                None => {
                    let _ = reply.send(Err("not connected".into()));
                }
            },
            Cmd::Raw(p, protocol, body, reply) => {
                let id = b.raw.send(protocol, &p, body);
                self.raws.insert((protocol, id), reply);
            }
            Cmd::Ask(p, req, reply) => {
                let id = b.challenge.send_request(&p, Frame::Valid(req));
                self.asks.insert(id, reply);
            }
            Cmd::Status => {
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for p in peers {
                    let status = self.status();
                    self.swarm
                        .behaviour_mut()
                        .status
                        .send_request(&p, Frame::Valid(status));
                }
            }
        }
    }

    /// Re-signs and re-gossips what it announced (verifiers forget
    /// announcements not heard of for a minute).
    fn refresh_announcements(&mut self) {
        let announced = lock(&self.shared).announced.clone();
        for (root, rp, size) in announced {
            if let Ok(a) = Announcement::sign(&self.key, root, rp, size) {
                let topic = self.datasets_topic.clone();
                let _ = self.swarm.behaviour_mut().gossipsub.publish(topic, a.encode());
            }
        }
    }

    /// Sends `cmd` back to this loop after `delay` (answers held back).
    fn later(&self, delay: Duration, cmd: Cmd) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(cmd).await;
        });
    }

    fn status(&self) -> Status {
        let mut s = lock(&self.shared);
        let head = s.cheats.claimed_head.unwrap_or(0);
        if head > 0 {
            s.seen.head_claims += 1;
        }
        Status {
            genesis: self.genesis,
            head,
            agent: "vigil-adversary/test".into(),
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        use request_response::{Event, Message};
        match ev {
            SwarmEvent::ConnectionEstablished { .. } => lock(&self.shared).connected += 1,
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                let mut s = lock(&self.shared);
                s.connected = s.connected.saturating_sub(1);
                s.seen.refused += 1;
                if num_established == 0 {
                    s.joined.remove(&peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Status(Event::Message {
                peer,
                message: Message::Response { .. },
                ..
            })) => {
                lock(&self.shared).joined.insert(peer);
            }
            SwarmEvent::OutgoingConnectionError { .. } => lock(&self.shared).seen.refused += 1,
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id, ..
            })) => {
                let status = self.status();
                self.swarm
                    .behaviour_mut()
                    .status
                    .send_request(&peer_id, Frame::Valid(status));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(Event::Message {
                message: Message::Request { request, channel, .. },
                ..
            })) => {
                let delay = {
                    let mut s = lock(&self.shared);
                    s.seen.pongs += 1;
                    s.cheats.pong_delay
                };
                self.later(delay, Cmd::Pong(channel, request));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Status(Event::Message {
                peer,
                message: Message::Request { channel, .. },
                ..
            })) => {
                lock(&self.shared).joined.insert(peer);
                let status = self.status();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .status
                    .send_response(channel, Frame::Valid(status));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(Event::Message {
                message: Message::Request { channel, .. },
                ..
            })) => {
                // It claims a head it cannot back: no epochs, ever.
                if lock(&self.shared).cheats.stall_sync {
                    self.held_sync.push(channel);
                    return;
                }
                let head = self.status().head;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, Frame::Valid(SyncResponse::new(head, Vec::new())));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Challenge(Event::Message {
                message: Message::Request { request, channel, .. },
                ..
            })) => self.on_challenge(request, channel),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(Event::Message {
                message: Message::Response { request_id, response },
                ..
            })) => {
                if let Some(reply) = self.fetches.remove(&request_id) {
                    let _ = reply.send(match response {
                        Frame::Valid(SyncResponse {
                            busy_ms: Some(ms), ..
                        }) => Err(format!("busy: try again in {ms} ms")),
                        Frame::Valid(r) => Ok(r.epochs),
                        Frame::Invalid(e) => Err(e.to_string()),
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Challenge(Event::Message {
                message: Message::Response { request_id, response },
                ..
            })) => {
                if let Some(reply) = self.asks.remove(&request_id) {
                    let _ = reply.send(match response {
                        Frame::Valid(r) => Ok(r),
                        Frame::Invalid(e) => Err(e.to_string()),
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Raw(ev)) => {
                if let Some((key, r)) = raw::answer(ev) {
                    if let Some(reply) = self.raws.remove(&key) {
                        let _ = reply.send(r);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Challenge(Event::OutboundFailure {
                request_id,
                error,
                ..
            })) => {
                if let Some(reply) = self.asks.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(Event::OutboundFailure {
                request_id, error, ..
            })) => {
                if let Some(reply) = self.fetches.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message, ..
            })) if message.topic == self.epochs_topic => {
                if let Ok(e) = vigil_protocols::epoch::Epoch::decode(&message.data) {
                    self.on_epoch(e.number, e.output);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Continuity(Event::Message {
                message: Message::Request { request, channel, .. },
                ..
            })) => {
                let answer = match request {
                    Frame::Valid(req) => self.continuity_proof(&req),
                    Frame::Invalid(e) => SignedProof::refusal(&e.to_string()),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .continuity
                    .send_response(channel, Frame::Valid(answer));
            }
            _ => {}
        }
    }

    /// A new epoch heard in gossip: its chains grow by a link each, and
    /// (unless it is silent) the signed root goes out at once.
    fn on_epoch(&mut self, n: u64, output: [u8; 32]) {
        let root = {
            let mut s = lock(&self.shared);
            s.outputs.insert(n, output);
            let sh = &mut *s;
            let replicas: Vec<&Replica> = sh
                .datasets
                .values()
                .filter(|(_, plain)| !plain)
                .map(|(r, _)| r)
                .collect();
            let signed = sh.chains.extend(&self.key, &self.cont, n, &output, &replicas);
            let mut out = Vec::new();
            match (signed, sh.cheats.continuity) {
                (Some(_), ContinuityCheat::Silent) | (None, _) => {}
                (Some(m), ContinuityCheat::Late) => sh.late_roots.push((n, m)),
                (Some(m), _) => out.push(m),
            }
            let (due, held) = std::mem::take(&mut sh.late_roots)
                .into_iter()
                .partition(|(e, _)| e + 4 <= n);
            sh.late_roots = held;
            out.extend(due.into_iter().map(|(_, m): (u64, Vec<u8>)| m));
            sh.seen.roots_gossiped += out.len() as u64;
            out
        };
        for m in root {
            let topic = self.roots_topic.clone();
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, m) {
                tracing::debug!(error = %e, "adversary cannot gossip its continuity root");
            }
        }
    }

    /// A continuity proof: from the links it kept, or (cheating) computed
    /// now, or for the size [`Cheats::continuity_size`] names.
    fn continuity_proof(&self, req: &[u8]) -> Vec<u8> {
        let req = match ProofRequest::decode(req) {
            Ok(r) => r,
            Err(e) => return SignedProof::refusal(&e),
        };
        let s = lock(&self.shared);
        let (Some((r, false)), Some(output)) = (s.datasets.get(&req.replica_root), s.outputs.get(&req.epoch))
        else {
            return SignedProof::refusal("no such chain here");
        };
        let proof = match (s.cheats.continuity_size, s.cheats.continuity) {
            (None, ContinuityCheat::Honest | ContinuityCheat::Silent | ContinuityCheat::Late) => {
                s.chains.proof(&self.cont, r, req.epoch, output)
            }
            (size, _) => {
                let size = size.unwrap_or(r.size).min(r.size);
                Some(chain::after_the_fact(
                    &self.key, &self.cont, r, size, req.epoch, output,
                ))
            }
        };
        match proof {
            Some(p) => p.encode(),
            None => SignedProof::refusal(&format!("no links for epoch {} on this node", req.epoch)),
        }
    }

    fn on_challenge(
        &mut self,
        request: Frame<vigil_protocols::availability::challenge::Request>,
        channel: request_response::ResponseChannel<Frame<Response>>,
    ) {
        use vigil_protocols::availability::challenge::Request;
        let mut s = lock(&self.shared);
        if s.cheats.withdraw_when_challenged {
            let rp = match &request {
                Frame::Valid(Request::Challenge(c)) => Some(c.replica_root),
                Frame::Valid(Request::Audit { replica_root, .. }) => Some(*replica_root),
                Frame::Invalid(_) => None,
            };
            if let Some((r, _)) = rp.and_then(|rp| s.datasets.remove(&rp)) {
                s.datasets.remove(&r.root);
                s.announced.retain(|(_, rp, _)| *rp != r.replica_root);
                s.seen.withdrawals += 1;
                drop(s);
                match Announcement::withdrawal(&self.key, r.root, r.replica_root, r.size) {
                    Ok(w) => {
                        let topic = self.datasets_topic.clone();
                        let _ = self.swarm.behaviour_mut().gossipsub.publish(topic, w.encode());
                    }
                    Err(e) => tracing::warn!(error = %e, "adversary cannot sign a withdrawal"),
                }
                self.later(
                    Duration::from_millis(300),
                    Cmd::Answer(channel, Response::Missing),
                );
                return;
            }
        }
        let (resp, delay) = match request {
            Frame::Valid(Request::Challenge(c)) => {
                s.seen.challenges += 1;
                let resp = match s.datasets.get(&c.replica_root) {
                    Some((r, false)) => Response::Proofs(r.prove(&c.indices, &c.nonce)),
                    Some((r, true)) => Response::Proofs(r.prove_plain(&c.indices, &c.nonce)),
                    None => Response::Missing,
                };
                (resp, s.cheats.challenge_delay)
            }
            Frame::Valid(Request::Audit { replica_root, index }) => {
                s.seen.audits += 1;
                match s.cheats.audits {
                    AuditAnswer::Drop => return,
                    AuditAnswer::Stall => {
                        drop(s);
                        self.held.push(channel);
                        return;
                    }
                    AuditAnswer::Refuse => (Response::Refused("busy".into()), Duration::ZERO),
                    AuditAnswer::Honest => {
                        let resp = match s.datasets.get(&replica_root) {
                            Some((r, false)) => {
                                let (replica, plain) = r.audit(index);
                                Response::Audit { replica, plain }
                            }
                            // Its "replica" is the plaintext: show it as both.
                            Some((r, true)) => {
                                let (_, plain) = r.audit(index);
                                Response::Audit {
                                    replica: plain.clone(),
                                    plain,
                                }
                            }
                            None => Response::Missing,
                        };
                        (resp, Duration::ZERO)
                    }
                }
            }
            Frame::Invalid(_) => return,
        };
        drop(s);
        if delay.is_zero() {
            let _ = self
                .swarm
                .behaviour_mut()
                .challenge
                .send_response(channel, Frame::Valid(resp));
        } else {
            self.later(delay, Cmd::Answer(channel, resp));
        }
    }
}
