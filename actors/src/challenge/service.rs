//! The `challenges` actor's task: announce our datasets (every 15 s, so
//! peers that joined since learn them), and at every new epoch challenge
//! `per_epoch` datasets our connected peers announced, chosen from the
//! previous epoch's output (every prover has had a whole epoch to receive
//! it), and audit the datasets whose slot falls in that epoch ([`super::audit`]).

use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use libp2p::PeerId;

use super::Challenger;
use crate::storage::Announced;

/// The supervised actor owning the challenge task.
#[derive(Debug)]
pub struct ChallengeActor {
    c: Challenger,
    abort: Option<tokio::task::AbortHandle>,
}

impl ChallengeActor {
    /// An actor for `c`.
    pub fn new(c: Challenger) -> Self {
        Self { c, abort: None }
    }
}

impl Actor for ChallengeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let task = tokio::spawn(run(self.c.clone()));
        self.abort = Some(task.abort_handle());
        crate::supervision::watch_task(ctx, task, "the challenge task");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(a) = self.abort.take() {
            a.abort();
        }
    }
}

impl Supervised for ChallengeActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if let Some(a) = self.abort.take() {
            a.abort();
        }
    }
}

/// Runs the challenge task outside an actor (tests); the node uses [`ChallengeActor`].
pub fn spawn(c: Challenger) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(c))
}

async fn run(c: Challenger) {
    let chain = c.inner.chain.clone();
    let mut last = chain.final_head();
    let mut announce = tokio::time::interval(crate::storage::REFRESH);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = announce.tick() => c.inner.storage.announce_all().await,
            _ = tick.tick() => {
                // Only epochs verified in full: a failure (and a ban) never rests on one rolled back.
                let head = chain.final_head();
                // Challenge with the previous epoch's output once the next
                // one exists: every prover had a whole epoch to receive it.
                if head > last {
                    last = head;
                    let paused = c.inner.settings.paused.load(std::sync::atomic::Ordering::Acquire);
                    if paused {
                        tracing::debug!(epoch = head, "challenges paused: no round");
                    }
                    if c.inner.settings.enabled && !paused && chain.synced() && head >= 2 {
                        c.epoch_round(head - 1).await;
                    }
                }
            }
        }
    }
}

/// `n` targets from `cands` (sorted by peer): a peer first, each peer
/// alike, then one of its datasets. A peer that announces a thousand
/// datasets is challenged as often as one that announces one, so bulk
/// announcements dilute nobody's challenges.
fn pick(cands: &[(PeerId, Announced)], n: usize, mut draw: impl FnMut() -> u64) -> Vec<&(PeerId, Announced)> {
    let mut peers: Vec<&[(PeerId, Announced)]> = cands.chunk_by(|a, b| a.0 == b.0).collect();
    peers.retain(|p| !p.is_empty());
    if peers.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|_| {
            let of = peers[(draw() % peers.len() as u64) as usize];
            &of[(draw() % of.len() as u64) as usize]
        })
        .collect()
}

impl Challenger {
    /// The datasets of connected peers, in a fixed order.
    fn candidates(&self) -> Vec<(PeerId, Announced)> {
        let connected = self.inner.net.peer_ids();
        let mut v: Vec<(PeerId, Announced)> = self
            .inner
            .storage
            .announced()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.peer.parse::<PeerId>().ok().map(|p| (p, a)))
            .filter(|(p, _)| connected.contains(p))
            .collect();
        v.sort_by(|a, b| (&a.1.peer, &a.1.replica_root).cmp(&(&b.1.peer, &b.1.replica_root)));
        v
    }

    /// Challenges `per_epoch` datasets chosen from the epoch's output.
    async fn epoch_round(&self, epoch: u64) {
        let Ok(Some(e)) = self.inner.chain.store().get(epoch) else {
            return;
        };
        let cands = self.candidates();
        if cands.is_empty() {
            return;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"vigil/targets/v1");
        h.update(&e.output);
        h.update(&self.inner.net.peer_id().to_bytes());
        let mut xof = h.finalize_xof();
        let picks = pick(&cands, self.inner.settings.per_epoch as usize, || {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            u64::from_le_bytes(b)
        });
        let runs = picks.iter().map(|(peer, a)| async move {
            match self.challenge(*peer, a, epoch, &e.output).await {
                Ok(r) => {
                    self.record(*peer, &r).await;
                    Some((*peer, r))
                }
                Err(err) => {
                    tracing::warn!(peer = %peer, error = %err, "cannot challenge");
                    None
                }
            }
        });
        let mut by_peer: std::collections::HashMap<PeerId, Vec<super::ChallengeResult>> = Default::default();
        for (peer, r) in join_all(runs).await.into_iter().flatten() {
            by_peer.entry(peer).or_default().push(r);
        }
        for (peer, results) in by_peer {
            let failed: Vec<_> = results.iter().filter(|r| r.outcome != "ok").cloned().collect();
            super::failed_line(&peer, epoch, &failed);
            let outcomes: Vec<&str> = results.iter().map(|r| r.outcome).collect();
            self.score(peer, &outcomes).await;
        }
        self.audit_due(&cands, epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced(peer: &PeerId, i: usize) -> (PeerId, Announced) {
        (
            *peer,
            Announced {
                peer: peer.to_string(),
                root: format!("{i:064x}"),
                replica_root: format!("{i:064x}"),
                size: 1,
                at: 0,
            },
        )
    }

    #[test]
    fn a_peer_with_a_thousand_datasets_is_picked_as_often_as_one_with_one() {
        let (bulk, honest) = (PeerId::random(), PeerId::random());
        let mut cands: Vec<_> = (0..1000).map(|i| announced(&bulk, i)).collect();
        cands.push(announced(&honest, 5000));
        cands.sort_by(|a, b| (&a.1.peer, &a.1.replica_root).cmp(&(&b.1.peer, &b.1.replica_root)));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let picks = pick(&cands, 10_000, || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        });
        let honest_picks = picks.iter().filter(|(p, _)| *p == honest).count();
        assert!(
            (4_500..=5_500).contains(&honest_picks),
            "{honest_picks} of 10,000"
        );
        assert!(pick(&[], 3, || 1).is_empty());
    }
}
