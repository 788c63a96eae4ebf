//! The `epochs` actor and its task: gossip verification, range sync, and
//! delivery of new epochs (gossip for local ones, the bus for all).
//!
//! The task runs beside the actor (like the swarm task); a panic in it
//! panics the actor, so the supervisor restarts both.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::PeerId;
use rayon::prelude::*;
use tokio::sync::mpsc;
use vigil_protocols::epoch::{Epoch, EpochError};

use super::{lock, AcceptError, Appended, Chain, GossipItem, Origin, BUS_TOPIC};
use crate::metrics as m;
use crate::net::{GossipVerdict, Network, Offence, SyncRequest};
use crate::queue::Publish;

/// Sync rounds between polls of a peer's head while we seem synced.
const POLL_EVERY: u32 = 10;
/// How long a peer has to back a claimed head with its first epochs; past
/// it the claim is refuted (the loop that also verifies gossip waits no longer).
const CLAIM_CHECK: Duration = Duration::from_secs(3);
/// Epochs published on the bus per pass.
const BUS_BATCH: u64 = 512;

/// The supervised actor owning the epoch task.
#[derive(Debug)]
pub struct EpochActor {
    chain: Chain,
    abort: Option<tokio::task::AbortHandle>,
}

impl EpochActor {
    /// An actor for `chain`.
    pub fn new(chain: Chain) -> Self {
        Self { chain, abort: None }
    }

    fn stop_task(&mut self) {
        *lock(&self.chain.inner.gossip) = None;
        if let Some(a) = self.abort.take() {
            a.abort();
        }
    }
}

impl Actor for EpochActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let task = tokio::spawn(run(self.chain.clone()));
        self.abort = Some(task.abort_handle());
        // A panic in the task becomes a panic of the actor: the supervisor restarts it.
        crate::supervision::watch_task(ctx, task, "the epoch task");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.stop_task();
    }
}

impl Supervised for EpochActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.stop_task();
    }
}

/// Runs the epoch task outside an actor (tests, tools); the node uses [`EpochActor`].
pub fn spawn(chain: Chain) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(chain))
}

async fn run(chain: Chain) {
    let (tx, mut rx) = mpsc::channel::<GossipItem>(64);
    *lock(&chain.inner.gossip) = Some(tx);
    // Gossip is judged, and ranges synced, on tasks of their own: a sync
    // request waiting on a slow or lying peer never holds back the epochs
    // peers gossip, nor the gossip and bus delivery of new ones (this loop).
    let c = chain.clone();
    let mut judges = AbortOnDrop(tokio::spawn(async move {
        let mut seen = Forgeries::default();
        while let Some(item) = rx.recv().await {
            judge(&c, &mut seen, item).await;
        }
    }));
    // Epochs taken by sampling are verified in full behind the head.
    let mut finalizer = AbortOnDrop(tokio::spawn(super::finality::run(chain.clone())));
    let c = chain.clone();
    let mut syncer = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sync = SyncState::new(&c);
        loop {
            tick.tick().await;
            sync.round(&c).await;
        }
    }));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut judges.0 => match r {
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => return,
            },
            r = &mut syncer.0 => match r {
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => return,
            },
            r = &mut finalizer.0 => match r {
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => return,
            },
            _ = chain.inner.wake.notified() => {}
            _ = tick.tick() => {}
        }
        gossip_local(&chain).await;
        publish_bus(&chain).await;
    }
}

/// Aborts its task when dropped (the epoch task aborted takes its helpers with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Failed verifications of one peer's gossip for one epoch number after
/// which its further gossip for that number is not verified at all.
const FAILURES_PER_PEER_EPOCH: u32 = 2;
/// Forged epochs remembered by the hash of their bytes.
const FORGERIES_KEPT: usize = 1024;

/// What the judge remembers of forgeries, so that the work a peer (or many
/// relaying one forgery) can make it do is bounded: a forgery seen before is
/// rejected by its hash, unverified, and a peer that sent
/// [`FAILURES_PER_PEER_EPOCH`] invalid epochs for a number gets no more
/// verified for it (each failure also costs it 20 points: it is banned after three).
#[derive(Debug, Default)]
struct Forgeries {
    hashes: std::collections::HashSet<[u8; 32]>,
    order: std::collections::VecDeque<[u8; 32]>,
    failures: std::collections::HashMap<(PeerId, u64), u32>,
}

impl Forgeries {
    fn remember(&mut self, hash: [u8; 32], from: PeerId, number: u64, head: u64) {
        if self.hashes.insert(hash) {
            self.order.push_back(hash);
            if self.order.len() > FORGERIES_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.hashes.remove(&old);
                }
            }
        }
        *self.failures.entry((from, number)).or_default() += 1;
        self.failures.retain(|(_, n), _| *n > head);
    }
}

/// Verifies a gossiped epoch off the async threads and tells gossipsub;
/// cheap refusals (a forgery seen before, a peer over its budget, a number
/// far from our head, a duplicate) come before any VDF work, and the VDF
/// check itself stops at the first bad segment.
async fn judge(chain: &Chain, seen: &mut Forgeries, (from, id, data): GossipItem) {
    let hash = *blake3::hash(&data).as_bytes();
    let number = Epoch::decode(&data).map(|e| e.number).unwrap_or(0);
    let verdict = if seen.hashes.contains(&hash) {
        metrics::counter!(m::EPOCH_REJECTED, "reason" => "known_forgery").increment(1);
        tracing::info!(peer = %from, epoch = number, "a known forged epoch: rejected unverified");
        GossipVerdict::Reject
    } else if seen.failures.get(&(from, number)).copied().unwrap_or(0) >= FAILURES_PER_PEER_EPOCH {
        metrics::counter!(m::EPOCH_REJECTED, "reason" => "over_budget").increment(1);
        GossipVerdict::Ignore
    } else {
        let v = judge_fresh(chain, from, &data).await;
        if v == GossipVerdict::Reject {
            seen.remember(hash, from, number, chain.head());
        }
        v
    };
    if let Some(net) = &chain.inner.net {
        net.report_epoch(id, from, verdict).await;
    }
}

async fn judge_fresh(chain: &Chain, from: PeerId, data: &[u8]) -> GossipVerdict {
    match chain.accept_bytes(data, Origin::Gossip, Some(from)).await {
        // Taken by sampling: not passed on until verified in full.
        Ok(Appended::New) if chain.final_head() < chain.head() => GossipVerdict::Ignore,
        Ok(Appended::New) => GossipVerdict::Accept,
        Ok(Appended::Duplicate) => GossipVerdict::Ignore,
        Err(AcceptError::Ahead { got, .. }) => {
            // A claim like any other: it counts once the sender serves the epochs before it.
            chain.saw_peer_head(from, got);
            GossipVerdict::Ignore
        }
        Err(AcceptError::Invalid(e)) => {
            tracing::warn!(peer = %from, error = %e, "invalid epoch by gossip: rejected, peer scored down");
            GossipVerdict::Reject
        }
        Err(AcceptError::Append(super::AppendError::Conflict(n))) => {
            tracing::warn!(peer = %from, epoch = n, "gossiped epoch conflicts with ours: rejected, peer scored down");
            GossipVerdict::Reject
        }
        Err(AcceptError::Anchor(e)) => {
            // Our view of the anchor chain lags (or our source is down): not the peer's fault.
            tracing::info!(peer = %from, error = %e, "gossiped epoch waits for its anchor: ignored");
            GossipVerdict::Ignore
        }
        // The node is stopping: silently (its log ends with "stopped cleanly").
        Err(AcceptError::Stopping(_)) => GossipVerdict::Ignore,
        Err(e) => {
            tracing::error!(error = %e, "cannot take a gossiped epoch");
            GossipVerdict::Ignore
        }
    }
}

async fn gossip_local(chain: &Chain) {
    let Some(net) = &chain.inner.net else {
        chain.take_outbox();
        return;
    };
    for e in chain.take_outbox() {
        if let Err(err) = net.publish_epoch(e.encode()).await {
            tracing::warn!(epoch = e.number, error = %err, "cannot gossip our epoch (peers sync it instead)");
        }
    }
}

/// Publishes every epoch after the bus watermark to `epoch.new`, waits for
/// the confirm, then moves the watermark (a crash republishes, with the same
/// `msg-id`, so a dedupe window drops the copy).
async fn publish_bus(chain: &Chain) {
    let Some(q) = &chain.inner.queues else {
        return;
    };
    let store = &chain.inner.store;
    let from = match store.bus_published() {
        Ok(n) => n + 1,
        Err(e) => return tracing::error!(error = %e, "cannot read the epoch bus watermark"),
    };
    // Only epochs verified in full go on the bus: consumers never see one rolled back.
    let to = chain.final_head().min(from + BUS_BATCH - 1);
    let mut last = None;
    for n in from..=to {
        let Ok(Some(v)) = chain.view(n) else { break };
        let payload = serde_json::to_vec(&v).unwrap_or_default();
        let p = Publish {
            sender: "node:epochs".into(),
            correlation: format!("epoch-{n}"),
            headers: [("msg-id".to_string(), format!("epoch-{n}").into_bytes())].into(),
            payload,
        };
        match q.publish_nowait(BUS_TOPIC, p) {
            Ok((_, ticket)) => last = Some((n, ticket)),
            Err(e) => {
                tracing::error!(epoch = n, error = %e, "cannot publish the epoch on the bus");
                break;
            }
        }
    }
    if let Some((n, ticket)) = last {
        match q.confirmed(ticket).await {
            // Only a durable epoch moves the watermark: the rest is published again.
            Err(e) => tracing::error!(epoch = n, error = %e, "epoch not confirmed on the bus"),
            Ok(()) => {
                if let Err(e) = store.set_bus_published(n) {
                    tracing::error!(error = %e, "cannot record the epoch bus watermark");
                }
            }
        }
    }
}

struct SyncState {
    rounds: u32,
    /// Peers whose epochs this sync appended.
    sources: std::collections::HashSet<PeerId>,
    bar: Option<ProgressBar>,
    started: Option<(Instant, u64)>,
    last_log: Instant,
    /// Claims being checked, each on a task of its own.
    checking: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PeerId>>>,
}

impl SyncState {
    fn new(_: &Chain) -> Self {
        Self {
            rounds: 0,
            sources: std::collections::HashSet::new(),
            bar: None,
            started: None,
            last_log: Instant::now(),
            checking: Default::default(),
        }
    }

    /// Checks a claim ahead of us on a task of its own (one per peer at a
    /// time): the claimer must serve the epoch after our head within
    /// [`CLAIM_CHECK`], and it must verify; otherwise its claim is refuted
    /// and it is scored down. A liar that never answers costs the sync loop
    /// nothing; verification is not timed (a slow machine is no offence).
    fn check_claim(&self, chain: &Chain, net: &Network, peer: PeerId, claim: u64) {
        if !lock(&self.checking).insert(peer) {
            return;
        }
        let (chain, net, checking) = (chain.clone(), net.clone(), self.checking.clone());
        tokio::spawn(async move {
            back_claim(&chain, &net, peer, claim).await;
            lock(&checking).remove(&peer);
        });
    }

    /// Learns peer heads; while behind, downloads and appends ranges.
    async fn round(&mut self, chain: &Chain) {
        let Some(net) = chain.inner.net.clone() else {
            return;
        };
        for p in net.peers() {
            if let (true, Some(h), Ok(id)) = (p.member, p.head, p.peer_id.parse()) {
                chain.saw_peer_head(id, h);
            }
        }
        self.rounds += 1;
        let peers = net.peer_ids();
        if peers.is_empty() {
            return;
        }
        if chain.synced() && self.rounds % POLL_EVERY == 0 {
            // Ask one peer what it holds (the answer carries its head).
            let p = peers[self.rounds as usize / POLL_EVERY as usize % peers.len()];
            let req = SyncRequest {
                from: chain.head() + 1,
                count: 1,
            };
            if let Ok(Ok(r)) = tokio::time::timeout(CLAIM_CHECK, net.sync_range(p, req)).await {
                chain.saw_peer_head(p, r.head);
            }
        }
        // Claims ahead of us that nothing backs yet: ask each claimer for
        // the epochs it claims (they count only once some verify).
        for (peer, claim) in chain
            .unbacked_claims()
            .into_iter()
            .take(chain.settings().sync_peers.max(1))
        {
            self.check_claim(chain, &net, peer, claim);
        }
        while chain.head() < chain.best_peer_head() {
            let before = chain.head();
            self.progress(chain);
            // Ask the peers known to hold more than we do, best score first.
            let ahead: Vec<PeerId> = net
                .peers()
                .into_iter()
                .filter(|p| p.member && p.head.is_some_and(|h| h > before))
                .filter_map(|p| p.peer_id.parse().ok())
                .collect();
            let best = chain.best_peer_head();
            let got = download(chain, &net, if ahead.is_empty() { &peers } else { &ahead }, best).await;
            self.sources.extend(got.used);
            if chain.head() == before {
                break;
            }
        }
        self.progress(chain);
    }

    fn progress(&mut self, chain: &Chain) {
        let (head, best) = (chain.head(), chain.best_peer_head());
        let remaining = best.saturating_sub(head);
        metrics::gauge!(m::EPOCH_SYNC_REMAINING).set(remaining as f64);
        if remaining == 0 {
            if let Some((t, from)) = self.started.take() {
                tracing::info!(
                    epochs = head - from,
                    secs = t.elapsed().as_secs_f64(),
                    head,
                    peers = self.sources.len(),
                    "epoch chain synced"
                );
                self.sources.clear();
            }
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
            return;
        }
        let (t, from) = *self.started.get_or_insert((Instant::now(), head));
        if chain.settings().progress_bar {
            let bar = self.bar.get_or_insert_with(|| {
                let b = ProgressBar::new(best);
                b.set_style(
                    ProgressStyle::with_template("syncing epochs {bar:40} {pos}/{len} {per_sec} eta {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            });
            bar.set_length(best);
            bar.set_position(head);
        } else if self.last_log.elapsed() >= Duration::from_secs(2) || head == from {
            self.last_log = Instant::now();
            let rate = (head - from) as f64 / t.elapsed().as_secs_f64().max(1e-3);
            tracing::info!(
                head,
                best,
                remaining,
                rate = format!("{rate:.1} epochs/s"),
                "syncing epochs"
            );
        }
    }
}

/// Asks `peer`, whose unbacked claim is `claim`, for the epoch after our
/// head, and backs or refutes the claim by what comes back.
async fn back_claim(chain: &Chain, net: &Network, peer: PeerId, claim: u64) {
    let from = chain.head() + 1;
    let refute = |why: &'static str, offence: Offence| {
        tracing::warn!(%peer, claim, asked = from, why, "claimed head not backed: claim refuted, peer scored down");
        chain.claim_refuted(&peer);
        net.penalize(peer, offence)
    };
    let answer =
        tokio::time::timeout(CLAIM_CHECK, net.sync_range(peer, SyncRequest { from, count: 1 })).await;
    let resp = match answer {
        Err(_) => return refute("no answer in time", Offence::UnbackedClaim).await,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "cannot check a claimed head");
            return chain.claim_refuted(&peer);
        }
        Ok(Ok(r)) => r,
    };
    chain.saw_peer_head(peer, resp.head);
    let Some(bytes) = resp.epochs.first() else {
        if resp.head >= from {
            refute("it serves none of the epochs it claims", Offence::UnbackedClaim).await;
        } else {
            chain.claim_refuted(&peer);
        }
        return;
    };
    match chain.accept_bytes(bytes, Origin::Sync, Some(peer)).await {
        Ok(_) => chain.claim_backed(peer),
        Err(AcceptError::Invalid(_)) | Err(AcceptError::Append(super::AppendError::Conflict(_))) => {
            refute("the epoch it served does not verify", Offence::FailedProof).await;
        }
        // Our anchor view lags, our head moved, or our store failed: not its fault.
        Err(e) => tracing::debug!(%peer, error = %e, "claimed head not checked this round"),
    }
}

/// What one download did.
#[derive(Debug, Default)]
struct Downloaded {
    /// Peers whose epochs were appended (their claims now count).
    used: std::collections::HashSet<PeerId>,
}

/// One download of epochs up to `best`: ranges from up to `sync_peers` peers
/// in parallel, decoded, verified in parallel, appended in order up to the
/// first bad one. A peer whose epochs are appended backs its claim; one that
/// answers a range it claims to hold with no epoch, or with an invalid one,
/// is refuted and scored down.
async fn download(chain: &Chain, net: &Network, peers: &[PeerId], best: u64) -> Downloaded {
    let mut got = Downloaded::default();
    let used = &mut got.used;
    let s = chain.settings();
    let head = chain.head();
    let asks: Vec<(PeerId, SyncRequest)> = peers
        .iter()
        .take(s.sync_peers.max(1))
        .enumerate()
        .map(|(i, p)| {
            let from = head + 1 + i as u64 * u64::from(s.sync_batch);
            (
                *p,
                SyncRequest {
                    from,
                    count: s.sync_batch,
                },
            )
        })
        .filter(|(_, r)| r.from <= best)
        .collect();
    let answers = join_all(asks.iter().map(|(p, r)| net.sync_range(*p, *r))).await;
    let mut batch: Vec<(PeerId, Epoch)> = Vec::new();
    for ((peer, req), answer) in asks.iter().zip(answers) {
        let resp = match answer {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "sync request failed");
                chain.claim_refuted(peer);
                break;
            }
        };
        chain.saw_peer_head(*peer, resp.head);
        if resp.epochs.is_empty() && resp.head >= req.from {
            tracing::warn!(%peer, claimed = resp.head, asked = req.from, "peer claims epochs it does not serve: claim refuted, peer scored down");
            chain.claim_refuted(peer);
            net.penalize(*peer, Offence::UnbackedClaim).await;
            break;
        }
        let mut complete = true;
        for (i, bytes) in resp.epochs.iter().enumerate() {
            let want = req.from + i as u64;
            match Epoch::decode(bytes) {
                Ok(e) if e.number == want => batch.push((*peer, e)),
                Ok(e) => {
                    tracing::warn!(%peer, want, got = e.number, "sync answer out of order");
                    net.penalize(*peer, Offence::Malformed).await;
                    complete = false;
                    break;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "malformed epoch in a sync answer");
                    net.penalize(*peer, Offence::Malformed).await;
                    complete = false;
                    break;
                }
            }
        }
        // Later ranges only help if this one was whole.
        if !complete || resp.epochs.len() < req.count as usize {
            break;
        }
    }
    // Only epochs whose anchors this node can see are verified now; the rest wait.
    let anchors = chain.expected_anchors(head + 1, batch.len() as u64).await;
    let known = anchors.iter().take_while(|a| a.is_ok()).count();
    if let Some(Err(e)) = anchors.get(known) {
        tracing::info!(epoch = head + 1 + known as u64, error = %e, "synced epochs wait for their anchor");
        batch.truncate(known);
    }
    let anchors: Vec<Vec<u8>> = anchors
        .into_iter()
        .take(known)
        .map(|a| a.unwrap_or_default())
        .collect();
    if batch.is_empty() {
        return got;
    }
    let c = chain.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let prev0 = c.prev_output(head + 1).ok().flatten();
        let results: Vec<Result<(), EpochError>> = (0..batch.len())
            .into_par_iter()
            .map(|i| {
                let prev = if i == 0 {
                    prev0
                } else {
                    Some(batch[i - 1].1.output)
                };
                match prev {
                    Some(prev) => c.verify(&batch[i].1, &prev, &anchors[i]),
                    None => Err(EpochError::OutOfOrder {
                        head,
                        got: batch[i].1.number,
                    }),
                }
            })
            .collect();
        (batch, results)
    })
    .await;
    let Ok((batch, results)) = checked else {
        return got;
    };
    for ((peer, e), r) in batch.into_iter().zip(results) {
        let n = e.number;
        if let Err(err) = r {
            metrics::counter!(m::EPOCH_REJECTED, "reason" => "invalid").increment(1);
            tracing::warn!(%peer, epoch = n, error = %err, "invalid epoch in a sync answer: peer scored down");
            chain.claim_refuted(&peer);
            net.penalize(peer, Offence::FailedProof).await;
            break;
        }
        if let Err(err) = chain.append_received(e, Origin::Sync, Some(peer)) {
            tracing::warn!(epoch = n, error = %err, "cannot append a synced epoch");
            break;
        }
        if used.insert(peer) {
            chain.claim_backed(peer);
        }
    }
    got
}
