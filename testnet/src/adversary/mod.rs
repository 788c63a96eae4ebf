//! A cheating peer for tests: it joins a vigil network over libp2p like any
//! node (the genesis' protocol names, identify, gossipsub, status, sync and
//! challenge protocols over TCP on 127.0.0.1) and then lies in the ways
//! [`Cheats`] says: it holds back pongs and challenge answers, drops or
//! stalls audits, announces datasets it does not really store, claims an
//! absurd epoch head. It is never part of the shipped node.
//!
//! ```no_run
//! # async fn f(genesis: vigil_genesis::Genesis, node: libp2p::Multiaddr) -> anyhow::Result<()> {
//! use vigil_testnet::adversary::{Adversary, AuditAnswer};
//! let adv = Adversary::join(&genesis, vec![node]).await?;
//! let r = adv.store(vec![7u8; 300_000]);
//! adv.announce(r.root, r.replica_root, r.size).await?;
//! adv.cheat(|c| c.audits = AuditAnswer::Drop);
//! # Ok(()) }
//! ```

mod behaviour;
mod chain;
mod raw;
mod replica;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, request_response, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use vigil_actors::net::codec::{Frame, Status};
use vigil_actors::net::{Names, SyncResponse};
use vigil_actors::storage::{Announcement, ANNOUNCE_TOPIC};
use vigil_genesis::Genesis;
use vigil_protocols::availability::challenge::Response;
use vigil_protocols::continuity::{ProofRequest, SignedProof};

use behaviour::{Behaviour, BehaviourEvent};
pub use raw::RawProtocol;
pub use replica::Replica;

/// How the adversary answers an audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditAnswer {
    /// Correctly, from what it stores.
    #[default]
    Honest,
    /// Closes the stream unanswered at once.
    Drop,
    /// Never answers (the stream stays open until the asker gives up).
    Stall,
    /// Answers `refused`.
    Refuse,
}

/// How the adversary keeps its continuity chains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ContinuityCheat {
    /// As a node does: a link per epoch it hears of, its signed root gossiped
    /// at once, proofs served from those links.
    #[default]
    Honest,
    /// Keeps its links but gossips no root (commits to nothing).
    Silent,
    /// Keeps its links and gossips each root only 4 epochs after its epoch.
    Late,
    /// Answers every proof with links computed now, under a fresh root
    /// signed now (what a prover that fetched the data today can make).
    AfterTheFact,
}

/// What the adversary lies about; change it at any time with [`Adversary::cheat`].
#[derive(Debug, Clone, Default)]
pub struct Cheats {
    /// Every pong is held back this long.
    pub pong_delay: Duration,
    /// Every challenge answer is held back this long.
    pub challenge_delay: Duration,
    /// How audits are answered.
    pub audits: AuditAnswer,
    /// The epoch head claimed in status and sync answers (none: 0).
    pub claimed_head: Option<u64>,
    /// Never answer sync requests (instead of answering with no epochs).
    pub stall_sync: bool,
    /// Continuity proofs answer for a dataset of this many bytes (a prefix
    /// of the replica) instead of its announced size.
    pub continuity_size: Option<u64>,
    /// How it keeps and proves its continuity chains.
    pub continuity: ContinuityCheat,
    /// On a challenge or audit of a dataset it holds, it drops the dataset,
    /// gossips its withdrawal at once and answers `missing` 300 ms later
    /// (once the withdrawal is everywhere), hoping to void the challenge.
    pub withdraw_when_challenged: bool,
}

/// What a continuity proof needs from the network (the adversary keeps no chain).
#[derive(Debug, Clone, Copy)]
pub struct ContinuityParams {
    /// Chunks per link (the nodes' `continuity.chunks`).
    pub chunks: usize,
    /// Genesis `group_size`.
    pub group_size: usize,
    /// Genesis `region_size`.
    pub region_size: usize,
}

/// What the adversary has seen and done.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Pings answered.
    pub pongs: u64,
    /// Challenges received.
    pub challenges: u64,
    /// Audits received.
    pub audits: u64,
    /// Status or sync answers that carried the claimed head.
    pub head_claims: u64,
    /// Dials refused or connections closed by the honest side.
    pub refused: u64,
    /// Continuity roots it gossiped.
    pub roots_gossiped: u64,
    /// Withdrawals it gossiped when challenged.
    pub withdrawals: u64,
}

#[derive(Debug, Default)]
struct Shared {
    cheats: Cheats,
    seen: Seen,
    /// Datasets by the root a challenge names: `(replica, answer from the plaintext)`.
    datasets: HashMap<[u8; 32], (Replica, bool)>,
    connected: usize,
    /// Peers it exchanged a status with: a node serves only those.
    joined: std::collections::HashSet<PeerId>,
    /// Epoch outputs it was told or heard in gossip, for continuity answers.
    outputs: HashMap<u64, [u8; 32]>,
    /// Its continuity chains.
    chains: chain::Chains,
    /// What it announced, re-signed and re-gossiped every 15 s as a node does.
    announced: Vec<([u8; 32], [u8; 32], u64)>,
    /// Roots held back (`ContinuityCheat::Late`): `(epoch, signed root)`.
    late_roots: Vec<(u64, Vec<u8>)>,
}

type FetchReply = oneshot::Sender<Result<Vec<Vec<u8>>, String>>;
type AskReply = oneshot::Sender<Result<Response, String>>;
type RawReply = oneshot::Sender<Result<Vec<u8>, String>>;

enum Cmd {
    Publish(
        gossipsub::IdentTopic,
        Vec<u8>,
        oneshot::Sender<Result<(), String>>,
    ),
    Pong(request_response::ResponseChannel<Vec<u8>>, Vec<u8>),
    Answer(request_response::ResponseChannel<Frame<Response>>, Response),
    Status,
    Fetch(Option<PeerId>, u64, FetchReply),
    Ask(
        PeerId,
        vigil_protocols::availability::challenge::Request,
        AskReply,
    ),
    Raw(PeerId, RawProtocol, Vec<u8>, RawReply),
}

/// A cheating peer on a vigil network; stops when dropped.
#[derive(Debug)]
pub struct Adversary {
    key: Keypair,
    names: Names,
    cost: u32,
    shared: Arc<Mutex<Shared>>,
    cmd: mpsc::Sender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Adversary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Adversary {
    /// A new identity on `genesis`' network that dials `peers` (and
    /// redials them whenever it is not connected, until they ban it).
    pub async fn join(genesis: &Genesis, peers: Vec<Multiaddr>) -> Result<Self> {
        let key = Keypair::generate_ed25519();
        let names = Names::new(&genesis.hash().short());
        let mut swarm = behaviour::build(&key, &names)?;
        for suffix in [ANNOUNCE_TOPIC, "epochs", "attestations/2", "continuity"] {
            let _ = swarm.behaviour_mut().gossipsub.subscribe(&names.topic(suffix));
        }
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid"))
            .context("adversary cannot listen")?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = mpsc::channel(256);
        let cont = ContinuityParams {
            chunks: 2,
            group_size: genesis.params.group_size as usize,
            region_size: genesis.params.region_size as usize,
        };
        let run = Loop {
            cont,
            key: key.clone(),
            swarm,
            shared: shared.clone(),
            tx: tx.clone(),
            rx,
            peers,
            genesis: genesis.hash().0,
            epochs_topic: names.topic("epochs").hash(),
            roots_topic: names.topic("continuity"),
            datasets_topic: names.topic(ANNOUNCE_TOPIC),
            held: Vec::new(),
            held_sync: Vec::new(),
            fetches: HashMap::new(),
            asks: HashMap::new(),
            raws: HashMap::new(),
        };
        Ok(Self {
            key,
            names,
            cost: genesis.params.encoding_cost,
            shared,
            cmd: tx,
            task: tokio::spawn(run.run()),
        })
    }

    /// Its key (to sign what it gossips as itself).
    pub fn key(&self) -> &Keypair {
        &self.key
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    /// Changes what it lies about.
    pub fn cheat(&self, f: impl FnOnce(&mut Cheats)) {
        f(&mut lock(&self.shared).cheats);
    }

    /// What it has seen so far.
    pub fn seen(&self) -> Seen {
        lock(&self.shared).seen.clone()
    }

    /// Peers it is connected to and exchanged a status with (a node
    /// closes requests from a peer that has not, unanswered).
    pub fn connected(&self) -> usize {
        lock(&self.shared).joined.len()
    }

    /// Epochs it holds continuity links for (a root signed for each).
    pub fn continuity_epochs(&self) -> Vec<u64> {
        lock(&self.shared).chains.epochs()
    }

    /// Tells it epoch `n`'s output (read from an honest node), so that it can
    /// answer continuity requests for that epoch.
    pub fn know_epoch(&self, n: u64, output: [u8; 32]) {
        lock(&self.shared).outputs.insert(n, output);
    }

    /// Asks a connected peer for encoded epochs `from ..` (at most 64) over
    /// the sync protocol, as any node may.
    pub async fn fetch_epochs(&self, from: u64) -> Result<Vec<Vec<u8>>> {
        self.fetch(None, from).await
    }

    /// [`Adversary::fetch_epochs`] from connected `peer`.
    pub async fn fetch_epochs_from(&self, peer: PeerId, from: u64) -> Result<Vec<Vec<u8>>> {
        self.fetch(Some(peer), from).await
    }

    async fn fetch(&self, peer: Option<PeerId>, from: u64) -> Result<Vec<Vec<u8>>> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Fetch(peer, from, reply))
            .await
            .map_err(|_| anyhow!("the adversary stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the adversary stopped"))?
            .map_err(|e| anyhow!("cannot fetch epochs: {e}"))
    }

    /// Sends `req` (a challenge or an audit) to connected `peer` over the
    /// challenge protocol, as any verifier may; its answer.
    pub async fn ask(
        &self,
        peer: PeerId,
        req: vigil_protocols::availability::challenge::Request,
    ) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Ask(peer, req, reply))
            .await
            .map_err(|_| anyhow!("the adversary stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the adversary stopped"))?
            .map_err(|e| anyhow!("no answer: {e}"))
    }

    /// Sends `body` as one frame on `protocol` to connected `peer`, whatever
    /// it holds (garbage, or more than the protocol allows); the answer, or
    /// why there was none.
    pub async fn send_raw(&self, peer: PeerId, protocol: RawProtocol, body: Vec<u8>) -> Result<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Raw(peer, protocol, body, reply))
            .await
            .map_err(|_| anyhow!("the adversary stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the adversary stopped"))?
            .map_err(|e| anyhow!("no answer: {e}"))
    }

    /// Sends its status (with the claimed head) to every connected peer now.
    pub async fn tell_status(&self) {
        let _ = self.cmd.send(Cmd::Status).await;
    }

    /// Encodes `plain` for this identity and keeps it: challenges naming its
    /// replica root are answered from the replica, challenges naming its
    /// plaintext root (after announcing `R_p = R`) from the plaintext.
    pub fn store(&self, plain: Vec<u8>) -> Replica {
        let r = Replica::encode(&self.peer_id(), plain, self.cost);
        let mut s = lock(&self.shared);
        s.datasets.insert(r.replica_root, (r.clone(), false));
        s.datasets.entry(r.root).or_insert((r.clone(), true));
        r
    }

    /// Signs and gossips an announcement of `(root, replica_root, size)`,
    /// whatever it stores; retries while gossipsub has no peer for the
    /// topic. Returns the signed message (to replay it later).
    pub async fn announce(&self, root: [u8; 32], replica_root: [u8; 32], size: u64) -> Result<Vec<u8>> {
        let a = Announcement::sign(&self.key, root, replica_root, size)?.encode();
        self.publish(ANNOUNCE_TOPIC, a.clone()).await?;
        let mut s = lock(&self.shared);
        if !s.announced.contains(&(root, replica_root, size)) {
            s.announced.push((root, replica_root, size));
        }
        Ok(a)
    }

    /// Stops announcing `r` and gossips its signed withdrawal, as a node
    /// does when it removes a dataset; it still answers for `r` (a node keeps
    /// the data for a grace).
    pub async fn withdraw(&self, r: &Replica) -> Result<()> {
        // Like a node, it keeps the data (and answers challenges sent before
        // the withdrawal reached their sender): dropping it first failed an
        // audit already in flight now and then.
        lock(&self.shared)
            .announced
            .retain(|(_, rp, _)| *rp != r.replica_root);
        let w = Announcement::withdrawal(&self.key, r.root, r.replica_root, r.size)?;
        self.publish(ANNOUNCE_TOPIC, w.encode()).await
    }

    /// Publishes raw bytes on `/vigil/<g8>/<suffix>` (retrying for 20 s
    /// while no peer subscribed to it is in the mesh yet).
    pub async fn publish(&self, suffix: &str, bytes: Vec<u8>) -> Result<()> {
        let topic = self.names.topic(suffix);
        let t0 = std::time::Instant::now();
        loop {
            let (reply, rx) = oneshot::channel();
            self.cmd
                .send(Cmd::Publish(topic.clone(), bytes.clone(), reply))
                .await
                .map_err(|_| anyhow!("the adversary stopped"))?;
            match rx.await.map_err(|_| anyhow!("the adversary stopped"))? {
                Ok(()) => return Ok(()),
                Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                    tracing::debug!(error = %e, "adversary cannot publish yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(anyhow!("cannot publish on {suffix}: {e}")),
            }
        }
    }
}

struct Loop {
    cont: ContinuityParams,
    key: Keypair,
    swarm: Swarm<Behaviour>,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::Sender<Cmd>,
    rx: mpsc::Receiver<Cmd>,
    peers: Vec<Multiaddr>,
    genesis: [u8; 32],
    /// Where epochs are gossiped (it extends its chains with each new one).
    epochs_topic: gossipsub::TopicHash,
    /// Where it gossips its signed continuity roots.
    roots_topic: gossipsub::IdentTopic,
    /// Where it gossips announcements and withdrawals.
    datasets_topic: gossipsub::IdentTopic,
    /// Answers it never sends (stalled audits), kept so their streams stay open.
    held: Vec<request_response::ResponseChannel<Frame<Response>>>,
    /// Sync requests it never answers.
    held_sync: Vec<request_response::ResponseChannel<Frame<SyncResponse>>>,
    /// Its own sync requests waiting for their answers.
    fetches: HashMap<request_response::OutboundRequestId, FetchReply>,
    /// Its own challenge-protocol requests waiting for their answers.
    asks: HashMap<request_response::OutboundRequestId, AskReply>,
    /// Its raw frames waiting for their answers.
    raws: HashMap<(RawProtocol, request_response::OutboundRequestId), RawReply>,
}

impl Loop {
    async fn run(mut self) {
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
