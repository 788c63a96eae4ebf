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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sync = SyncState::new(&chain);
    loop {
        tokio::select! {
            Some(item) = rx.recv() => judge(&chain, item).await,
            _ = chain.inner.wake.notified() => {}
            _ = tick.tick() => sync.round(&chain).await,
        }
        gossip_local(&chain).await;
        publish_bus(&chain).await;
    }
}

/// Verifies a gossiped epoch off the async threads and tells gossipsub.
async fn judge(chain: &Chain, (from, id, data): GossipItem) {
    let verdict = match chain.accept_bytes(&data, Origin::Gossip).await {
        Ok(Appended::New) => GossipVerdict::Accept,
        Ok(Appended::Duplicate) | Err(AcceptError::Ahead { .. }) => GossipVerdict::Ignore,
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
        Err(e) => {
            tracing::error!(error = %e, "cannot take a gossiped epoch");
            GossipVerdict::Ignore
        }
    };
    if let Some(net) = &chain.inner.net {
        net.report_epoch(id, from, verdict).await;
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
    let to = chain.head().min(from + BUS_BATCH - 1);
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
}

impl SyncState {
    fn new(_: &Chain) -> Self {
        Self {
            rounds: 0,
            sources: std::collections::HashSet::new(),
            bar: None,
            started: None,
            last_log: Instant::now(),
        }
    }

    /// Learns peer heads; while behind, downloads and appends ranges.
    async fn round(&mut self, chain: &Chain) {
        let Some(net) = chain.inner.net.clone() else {
            return;
        };
        for p in net.peers() {
            if let (true, Some(h)) = (p.identified, p.head) {
                chain.saw_peer_head(h);
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
            if let Ok(r) = net.sync_range(p, req).await {
                chain.saw_peer_head(r.head);
            }
        }
        while !chain.synced() {
            let before = chain.head();
            self.progress(chain);
            // Ask the peers known to hold more than we do, best score first.
            let ahead: Vec<PeerId> = net
                .peers()
                .into_iter()
                .filter(|p| p.identified && p.head.is_some_and(|h| h > before))
                .filter_map(|p| p.peer_id.parse().ok())
                .collect();
            let from = download(chain, &net, if ahead.is_empty() { &peers } else { &ahead }).await;
            self.sources.extend(from);
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

/// One download: ranges from up to `sync_peers` peers in parallel, decoded,
/// verified in parallel, appended in order up to the first bad one.
/// Returns the peers whose epochs were appended.
async fn download(chain: &Chain, net: &Network, peers: &[PeerId]) -> std::collections::HashSet<PeerId> {
    let mut used = std::collections::HashSet::new();
    let s = chain.settings();
    let head = chain.head();
    let best = chain.best_peer_head();
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
                break;
            }
        };
        chain.saw_peer_head(resp.head);
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
        return used;
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
        return used;
    };
    for ((peer, e), r) in batch.into_iter().zip(results) {
        let n = e.number;
        if let Err(err) = r {
            metrics::counter!(m::EPOCH_REJECTED, "reason" => "invalid").increment(1);
            tracing::warn!(%peer, epoch = n, error = %err, "invalid epoch in a sync answer: peer scored down");
            net.penalize(peer, Offence::FailedProof).await;
            break;
        }
        if let Err(err) = chain.append(e, Origin::Sync) {
            tracing::warn!(epoch = n, error = %err, "cannot append a synced epoch");
            break;
        }
        used.insert(peer);
    }
    used
}
