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
mod event_loop;
mod raw;
mod replica;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use libp2p::identity::Keypair;
use libp2p::{gossipsub, request_response, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use vigil_actors::net::codec::Frame;
use vigil_actors::net::Names;
use vigil_actors::storage::{Announcement, ANNOUNCE_TOPIC};
use vigil_genesis::Genesis;
use vigil_protocols::availability::challenge::Response;

use event_loop::Loop;
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
