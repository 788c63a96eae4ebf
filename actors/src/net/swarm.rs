//! The swarm task: one loop over swarm events, commands from [`Network`] and
//! a maintenance tick (reconnection with backoff, DHT walks, ban expiry,
//! metrics).

mod app;
mod discipline;
mod epochs;
mod listen;
mod members;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, kad, ping, request_response, Multiaddr, PeerId, Swarm};
use rand::Rng;
use tokio::sync::mpsc;

use listen::{listen_error, pin_port};

use super::behaviour::{build, Behaviour, BehaviourEvent};
use super::book::unix_now;
use super::codec::{Frame, WireError};
use super::score::{Merit, Offence, Scores};
use super::sync::GossipVerdict;
use super::{lock, Command, Network, PeerInfo, ProbeSeen, PROBES_KEPT};
use crate::metrics as m;
use crate::{Error, Result};

struct Retry {
    next: Instant,
    delay: Duration,
}

struct Loop {
    net: Network,
    swarm: Swarm<Behaviour>,
    cmds: mpsc::Receiver<Command>,
    scores: Scores,
    /// Addresses to reach peers by: bootnodes, the peer book, the DHT.
    known: HashMap<PeerId, Vec<Multiaddr>>,
    bootnodes: HashSet<PeerId>,
    retry: HashMap<PeerId, Retry>,
    dialing: HashSet<PeerId>,
    foreign: HashSet<PeerId>,
    /// Peers that exchanged a status of our genesis (see [`members`]).
    members: HashSet<PeerId>,
    /// Listen addresses from identify of peers still to exchange status.
    heard: HashMap<PeerId, Vec<Multiaddr>>,
    banned: HashMap<PeerId, u64>,
    last_walk: Instant,
    walk_every: Duration,
    pending_sync: HashMap<request_response::OutboundRequestId, epochs::SyncReply>,
    pending_challenges: HashMap<request_response::OutboundRequestId, (Instant, app::ChallengeAnswer)>,
    pending_bytes:
        HashMap<(super::app::BytesProtocol, request_response::OutboundRequestId), app::BytesAnswer>,
    limiter: super::limits::Limiter,
}

/// How long a restarted swarm keeps trying to bind its old ports.
const RELAUNCH_BIND: Duration = Duration::from_secs(10);

/// Peers kept in memory to dial (the persisted book keeps 2,048).
const MAX_KNOWN: usize = 4096;

fn now_us() -> u64 {
    crate::queue::now_us()
}

/// A multiaddr without its trailing `/p2p/<id>`, and that id.
fn split_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(id)) => (a, Some(id)),
        Some(other) => {
            a.push(other);
            (a, None)
        }
        None => (a, None),
    }
}

/// Addresses worth storing and dialing: not unspecified, not relayed.
fn dialable(a: &Multiaddr) -> bool {
    !a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        Protocol::P2pCircuit => true,
        _ => false,
    })
}

pub(super) async fn launch(net: Network) -> Result<tokio::task::JoinHandle<()>> {
    let settings = lock(&net.inner.settings).clone();
    let mut swarm = build(&net.inner.key, &net.inner.names, &settings)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&net.inner.names.probe_topic)
        .map_err(|e| Error::Invalid(format!("cannot subscribe to the probe topic: {e}")))?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&net.inner.names.epoch_topic)
        .map_err(|e| Error::Invalid(format!("cannot subscribe to the epoch topic: {e}")))?;
    for result in ["published", "accepted", "ignored", "rejected"] {
        metrics::counter!(m::NET_GOSSIP, "topic" => "epochs", "result" => result).increment(0);
    }
    {
        // A relaunch (actor restart) lists what the new swarm binds, not the old one's.
        let mut snap = lock(&net.inner.snapshot);
        snap.listen.clear();
        snap.external.clear();
    }
    // Bind every listen address before serving: a bad one fails the start.
    // A restart binds the ports the last swarm had, which may hold them a
    // little longer (a QUIC endpoint drains its connections first): it
    // tries again for a while instead of failing (and costing a second
    // restart).
    let relaunch = net.inner.launched.swap(true, std::sync::atomic::Ordering::AcqRel);
    let give_up = Instant::now() + if relaunch { RELAUNCH_BIND } else { Duration::ZERO };
    let mut pending = HashMap::new();
    for addr in &settings.listen {
        let id = loop {
            match swarm.listen_on(addr.clone()) {
                Ok(id) => break id,
                Err(e) if Instant::now() < give_up => {
                    tracing::debug!(%addr, error = %e, "the last swarm still holds the port: trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(listen_error(&addr.to_string(), &e)),
            }
        };
        pending.insert(id, addr.clone());
    }
    let mut bound = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    while !pending.is_empty() {
        tokio::select! {
            _ = &mut deadline => {
                return Err(Error::Invalid(format!("listening on {:?} took over 10 s", pending.values().collect::<Vec<_>>())));
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    if let Some(asked) = pending.remove(&listener_id) {
                        bound.push((asked, address.clone()));
                    }
                    lock(&net.inner.snapshot).listen.push(address);
                }
                SwarmEvent::ListenerError { listener_id, error } | SwarmEvent::ListenerClosed { listener_id, reason: Err(error), .. } => {
                    let asked = pending.remove(&listener_id);
                    if let Some(a) = asked.clone().filter(|_| Instant::now() < give_up) {
                        tracing::debug!(addr = %a, %error, "the last swarm still holds the port: trying again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if let Ok(id) = swarm.listen_on(a.clone()) {
                            pending.insert(id, a);
                            continue;
                        }
                    }
                    let asked = asked.map(|a| a.to_string()).unwrap_or_default();
                    return Err(listen_error(&asked, &error));
                }
                _ => {}
            }
        }
    }
    // A relaunch binds the same ports, so addresses peers stored stay valid.
    {
        let mut s = lock(&net.inner.settings);
        s.listen = settings
            .listen
            .iter()
            .map(|asked| pin_port(asked, &bound))
            .collect();
    }
    let (tx, rx) = mpsc::channel(256);
    let mut lp = Loop {
        scores: super::score::Scores::new(settings.score),
        net: net.clone(),
        swarm,
        cmds: rx,
        known: HashMap::new(),
        bootnodes: HashSet::new(),
        retry: HashMap::new(),
        dialing: HashSet::new(),
        foreign: HashSet::new(),
        members: HashSet::new(),
        heard: HashMap::new(),
        banned: HashMap::new(),
        last_walk: Instant::now(),
        walk_every: Duration::from_secs(1),
        pending_sync: HashMap::new(),
        pending_challenges: HashMap::new(),
        pending_bytes: HashMap::new(),
        limiter: super::limits::Limiter::new(settings.limits.clone()),
    };
    lp.subscribe_app_topics();
    lp.load(&settings.bootnodes)?;
    *lock(&net.inner.cmd) = Some(tx);
    Ok(tokio::spawn(lp.run()))
}

impl Loop {
    fn load(&mut self, bootnodes: &[Multiaddr]) -> Result<()> {
        let me = self.net.peer_id();
        for (ip, b) in self.net.inner.book.ip_bans()? {
            self.swarm.behaviour_mut().ips.ban_ip(ip, b.until_unix);
        }
        for b in &self.net.inner.book.bans()? {
            if let Ok(p) = b.peer.parse::<PeerId>() {
                self.swarm.behaviour_mut().blocked.block_peer(p);
                self.banned.insert(p, b.until_unix);
            }
        }
        for (peer, addrs) in self.net.inner.book.known()? {
            if peer != me {
                self.learn(peer, &addrs);
            }
        }
        for b in bootnodes {
            match split_p2p(b) {
                (addr, Some(peer)) if peer != me => {
                    self.bootnodes.insert(peer);
                    self.learn(peer, &[addr]);
                }
                (_, Some(_)) => {}
                (addr, None) => {
                    tracing::warn!(%addr, "bootnode without /p2p/<peer id> is dialed once");
                    let _ = self.swarm.dial(addr);
                }
            }
        }
        self.publish_gauges();
        Ok(())
    }

    /// Room in `known` for `newcomer`: at [`MAX_KNOWN`] the worst-scored
    /// peer that is neither connected nor a bootnode goes, if it is not
    /// better than the newcomer; false when nothing could go.
    fn room_for(&mut self, newcomer: &PeerId) -> bool {
        if self.known.len() < MAX_KNOWN || self.known.contains_key(newcomer) {
            return true;
        }
        let now = Instant::now();
        let victim = self
            .known
            .keys()
            .filter(|p| !self.swarm.is_connected(p) && !self.bootnodes.contains(p))
            .map(|p| (self.scores.get(p, now), *p))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        match victim {
            Some((s, p)) if s <= self.scores.get(newcomer, now) => {
                self.known.remove(&p);
                self.retry.remove(&p);
                true
            }
            _ => false,
        }
    }

    fn learn(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if !self.room_for(&peer) {
            return;
        }
        let entry = self.known.entry(peer).or_default();
        for a in addrs.iter().filter(|a| dialable(a)) {
            let (a, _) = split_p2p(a);
            if !entry.contains(&a) {
                entry.insert(0, a.clone());
                self.swarm.behaviour_mut().kad.add_address(&peer, a);
            }
        }
        entry.truncate(8);
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_event(ev),
                cmd = self.cmds.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tick.tick() => self.maintain(),
            }
        }
    }

    fn connected(&self) -> usize {
        self.swarm.connected_peers().count()
    }

    fn maintain(&mut self) {
        let now = Instant::now();
        // Bans end.
        let ended: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= unix_now())
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            self.banned.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
            let book = self.net.inner.book.clone();
            tokio::task::spawn_blocking(move || book.unban(&p));
            tracing::info!(peer = %p, "ban ended");
        }
        // Reconnect: bootnodes first, then the book and the DHT, while below target.
        let target = lock(&self.net.inner.settings).target_peers;
        let mut candidates: Vec<PeerId> = self
            .known
            .keys()
            .filter(|p| !self.swarm.is_connected(p))
            .filter(|p| {
                !self.dialing.contains(p) && !self.banned.contains_key(p) && !self.foreign.contains(p)
            })
            .filter(|p| self.retry.get(p).is_none_or(|r| r.next <= now))
            .copied()
            .collect();
        candidates.sort_by_key(|p| !self.bootnodes.contains(p));
        let room = target.saturating_sub(self.connected() + self.dialing.len());
        for peer in candidates.into_iter().take(room) {
            let addrs = self.known.get(&peer).cloned().unwrap_or_default();
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            metrics::counter!(m::NET_DIALS).increment(1);
            if self.swarm.dial(opts).is_ok() {
                self.dialing.insert(peer);
            } else {
                self.backoff(peer);
            }
        }
        // Walk the DHT to find peers beyond the bootnodes: soon after the
        // first connections, then less often (every 1, 2, 4 ... 60 s).
        if now.duration_since(self.last_walk) > self.walk_every && self.connected() > 0 {
            self.last_walk = now;
            self.walk_every = (self.walk_every * 2).min(Duration::from_secs(60));
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        // Scores heal: refresh them in the snapshot and the histogram.
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        self.scores.prune(now, |p| connected.contains(p));
        if let Some(src) = self.net.epoch_source() {
            self.limiter.set_head(src.head(), now);
        }
        self.limiter.prune(now);
        self.swarm.behaviour_mut().ips.prune();
        self.close_strangers(now);
        // Peers of another genesis met: forgotten in bulk past the cap (one
        // that comes back is identified and dropped again).
        if self.foreign.len() > MAX_KNOWN {
            self.foreign.clear();
        }
        // Retries only for peers we would dial.
        let known = &self.known;
        self.retry.retain(|p, _| known.contains_key(p));
        let mut snap = lock(&self.net.inner.snapshot);
        for (p, info) in snap.peers.iter_mut() {
            info.score = self.scores.get(p, now);
            metrics::histogram!(m::NET_PEER_SCORE).record(info.score);
        }
        drop(snap);
        self.publish_gauges();
    }

    fn backoff(&mut self, peer: PeerId) {
        let s = lock(&self.net.inner.settings);
        let (initial, max) = (s.reconnect_initial, s.reconnect_max);
        drop(s);
        let r = self.retry.entry(peer).or_insert(Retry {
            next: Instant::now(),
            delay: Duration::ZERO,
        });
        r.delay = if r.delay.is_zero() {
            initial
        } else {
            (r.delay * 2).min(max)
        };
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        r.next = Instant::now() + r.delay.mul_f64(jitter);
    }

    fn publish_gauges(&self) {
        let snap = lock(&self.net.inner.snapshot);
        let members = snap.peers.values().filter(|p| p.member);
        let inbound = members.clone().filter(|p| p.direction == "inbound").count();
        let outbound = members.count() - inbound;
        drop(snap);
        metrics::gauge!(m::NET_PEERS, "direction" => "inbound").set(inbound as f64);
        metrics::gauge!(m::NET_PEERS, "direction" => "outbound").set(outbound as f64);
        metrics::gauge!(m::NET_BANNED).set(self.banned.len() as f64);
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Dial(addr, reply) => {
                let (bare, peer) = split_p2p(&addr);
                if let Some(p) = peer {
                    self.learn(p, &[bare]);
                    self.retry.remove(&p);
                }
                metrics::counter!(m::NET_DIALS).increment(1);
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| format!("cannot dial {addr}: {e}"));
                let _ = reply.send(r);
            }
            Command::Ban {
                peer,
                secs,
                reason,
                by,
                reply,
            } => {
                self.ban(peer, secs, &reason, &by, Some(reply));
            }
            Command::Unban(peer, reply) => {
                self.banned.remove(&peer);
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                self.scores.reset(&peer);
                self.retry.remove(&peer);
                let book = self.net.inner.book.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(book.unban(&peer).map_err(|e| e.to_string()));
                });
            }
            Command::UnbanIp(ip, reply) => {
                self.swarm.behaviour_mut().ips.unban_ip(&ip);
                let book = self.net.inner.book.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(book.unban_ip(&ip).map_err(|e| e.to_string()));
                });
            }
            Command::Probe(reply) => {
                let id: u64 = rand::thread_rng().gen();
                let sent = now_us();
                let mut data = id.to_be_bytes().to_vec();
                data.extend_from_slice(&sent.to_be_bytes());
                let topic = self.net.inner.names.probe_topic.clone();
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic, data)
                    .map(|_| id)
                    .map_err(|e| format!("cannot publish the probe: {e}"));
                if r.is_ok() {
                    metrics::counter!(m::NET_GOSSIP, "topic" => "probe", "result" => "published")
                        .increment(1);
                    self.record_probe(ProbeSeen {
                        id,
                        origin: self.net.peer_id().to_string(),
                        sent_at_us: sent,
                        received_at_us: sent,
                    });
                }
                let _ = reply.send(r);
            }
            Command::Penalize(peer, offence) => self.penalize(peer, offence),
            Command::PublishEpoch(bytes, reply) => {
                let _ = reply.send(self.publish_epoch(bytes));
            }
            Command::ReportEpoch(id, from, verdict) => self.report_epoch(id, from, verdict),
            Command::Sync(peer, req, reply) => self.request_sync(peer, req, reply),
            Command::Publish(topic, bytes, reply) => {
                let _ = reply.send(self.publish_app(topic, bytes));
            }
            Command::Challenge(peer, req, reply) => self.send_challenge(peer, req, reply),
            Command::ChallengeRespond(channel, resp) => self.respond_challenge(channel, resp),
            Command::SyncRespond(channel, resp) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, Frame::Valid(resp));
            }
            Command::Credit(peer) => self.reward(peer, Merit::GoodResponse),
            Command::BytesRequest(p, peer, req, reply) => self.send_bytes(p, peer, req, reply),
            Command::BytesRespond(p, channel, resp) => self.respond_bytes(p, channel, resp),
            Command::Subscribe(topic) => {
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                    tracing::error!(%topic, error = %e, "cannot subscribe");
                }
            }
        }
    }

    /// Notes a gossip message for [`super::Network::gossip_seen`].
    fn record_gossip(&self, topic: &gossipsub::TopicHash, data: &[u8], own: bool) {
        let mut h = blake3::Hasher::new();
        h.update(topic.as_str().as_bytes());
        h.update(data);
        let key = h.finalize();
        let seen = super::GossipSeen {
            topic: topic
                .as_str()
                .splitn(4, '/')
                .nth(3)
                .unwrap_or_default()
                .to_owned(),
            key: key.to_hex()[..16].to_owned(),
            own,
            at_us: now_us(),
        };
        let mut snap = lock(&self.net.inner.snapshot);
        if snap.gossip.len() == super::GOSSIP_KEPT {
            snap.gossip.pop_front();
        }
        snap.gossip.push_back(seen);
    }

    fn record_probe(&self, p: ProbeSeen) {
        let mut snap = lock(&self.net.inner.snapshot);
        if snap.probes.len() == PROBES_KEPT {
            snap.probes.pop_front();
        }
        snap.probes.push_back(p);
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                self.dialing.remove(&peer_id);
                self.retry.remove(&peer_id);
                let (direction, addr) = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => ("outbound", address.clone()),
                    ConnectedPoint::Listener { send_back_addr, .. } => ("inbound", send_back_addr.clone()),
                };
                let score = self.scores.get(&peer_id, Instant::now());
                let mut snap = lock(&self.net.inner.snapshot);
                let e = snap.peers.entry(peer_id).or_insert_with(|| PeerInfo {
                    peer_id: peer_id.to_string(),
                    addresses: Vec::new(),
                    direction,
                    latency_ms: None,
                    rtt_floor_ms: None,
                    rtts: Default::default(),
                    score,
                    agent: None,
                    protocols: Vec::new(),
                    identified: false,
                    member: false,
                    head: None,
                    connections: 0,
                    connected_secs: 0,
                    since: Some(Instant::now()),
                });
                e.connections += 1;
                e.addresses.push(addr.to_string());
                drop(snap);
                tracing::debug!(peer = %peer_id, direction, %addr, "connected");
                self.publish_gauges();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let mut snap = lock(&self.net.inner.snapshot);
                if num_established == 0 {
                    snap.peers.remove(&peer_id);
                } else if let Some(e) = snap.peers.get_mut(&peer_id) {
                    e.connections = num_established as usize;
                    let gone = endpoint.get_remote_address().to_string();
                    if let Some(i) = e.addresses.iter().position(|a| *a == gone) {
                        e.addresses.remove(i);
                    }
                }
                drop(snap);
                if num_established == 0 {
                    tracing::debug!(peer = %peer_id, "disconnected");
                    self.left(&peer_id);
                    // Back off before redialing a peer that just went away;
                    // one we would not redial leaves nothing behind.
                    if self.known.contains_key(&peer_id) {
                        self.backoff(peer_id);
                    } else {
                        self.retry.remove(&peer_id);
                    }
                }
                self.publish_gauges();
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                metrics::counter!(m::NET_DIAL_FAILURES).increment(1);
                if let Some(p) = peer_id {
                    self.dialing.remove(&p);
                    tracing::debug!(peer = %p, error = %error, "dial failed");
                    self.backoff(p);
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                metrics::counter!(m::NET_INCOMING_REFUSED).increment(1);
                tracing::debug!(from = %send_back_addr, error = %error, "inbound connection failed or refused");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let mut snap = lock(&self.net.inner.snapshot);
                if !snap.listen.contains(&address) {
                    snap.listen.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                lock(&self.net.inner.snapshot).listen.retain(|a| *a != address);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                let mut snap = lock(&self.net.inner.snapshot);
                if !snap.external.contains(&address) {
                    snap.external.push(address);
                }
            }
            SwarmEvent::Behaviour(b) => self.on_behaviour(b),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info)
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(p) = lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
                    p.saw_rtt(rtt.as_secs_f64() * 1000.0, Instant::now());
                }
            }
            // A peer that stopped answering is gone: counting it as a peer
            // (and `/ready`) would hide a partition from the operator, and
            // gossip would queue behind TCP's backoff. Closing lets the
            // reconnect logic find it again once the network heals.
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            }) => {
                tracing::info!(%peer, error = %e, "peer stopped answering pings: closing the connection");
                metrics::counter!(m::NET_PING_FAILURES).increment(1);
                self.swarm.close_connection(connection);
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, addresses, .. })
                if peer != self.net.peer_id() && !self.foreign.contains(&peer) && self.room_for(&peer) =>
            {
                let entry = self.known.entry(peer).or_default();
                for a in addresses.iter().filter(|a| dialable(a)) {
                    if !entry.contains(a) {
                        entry.push(a.clone());
                    }
                }
                entry.truncate(8);
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Status(e) => self.on_status(e),
            BehaviourEvent::Sync(e) if self.may_handle(&e, "sync") => self.on_sync(e),
            BehaviourEvent::Challenge(e) if self.may_handle(&e, "challenge") => self.on_challenge(e),
            BehaviourEvent::Continuity(e) if self.may_handle(&e, "continuity") => {
                self.on_bytes(super::app::BytesProtocol::Continuity, e)
            }
            BehaviourEvent::Channel(e) if self.may_handle(&e, "channel") => {
                self.on_bytes(super::app::BytesProtocol::Channel, e)
            }
            _ => {}
        }
    }

    fn bad_frame(&mut self, peer: PeerId, e: WireError) {
        tracing::info!(%peer, error = %e, "bad frame from peer");
        let offence = match e {
            WireError::Oversized { .. } => Offence::Oversized,
            WireError::Malformed(_) => Offence::Malformed,
        };
        self.penalize(peer, offence);
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, msg: gossipsub::Message) {
        if msg.topic != self.net.inner.names.probe_topic.hash() {
            self.record_gossip(&msg.topic, &msg.data, false);
        }
        if msg.topic == self.net.inner.names.epoch_topic.hash() {
            return self.on_epoch_gossip(source, id, msg.data);
        }
        if let Some(v) = self.on_app_gossip(source, &msg) {
            let name = msg.topic.as_str().rsplit('/').next().unwrap_or("app").to_owned();
            return self.report_gossip(&id, source, name, v, Offence::InvalidGossip);
        }
        let probe_topic = self.net.inner.names.probe_topic.hash();
        let valid = if msg.topic == probe_topic && msg.data.len() == 16 {
            let pid = u64::from_be_bytes(msg.data[..8].try_into().unwrap_or_default());
            let sent = u64::from_be_bytes(msg.data[8..].try_into().unwrap_or_default());
            self.record_probe(ProbeSeen {
                id: pid,
                origin: msg.source.map(|p| p.to_string()).unwrap_or_default(),
                sent_at_us: sent,
                received_at_us: now_us(),
            });
            true
        } else {
            false
        };
        let verdict = if valid {
            metrics::counter!(m::NET_BYTES, "protocol" => "gossip", "direction" => "in")
                .increment(msg.data.len() as u64);
            GossipVerdict::Accept
        } else {
            tracing::info!(peer = %source, topic = %msg.topic, len = msg.data.len(), "invalid gossip");
            GossipVerdict::Reject
        };
        self.report_gossip(&id, source, "probe".into(), verdict, Offence::InvalidGossip);
    }
}
