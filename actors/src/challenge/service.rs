//! The `challenges` actor's task: announce our datasets (every 15 s, so
//! peers that joined since learn them), and at every new epoch challenge
//! `per_epoch` datasets our connected peers announced, chosen from the
//! previous epoch's output (every prover has had a whole epoch to receive
//! it); now and then audit one.

use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use libp2p::PeerId;
use rand::Rng;
use vigil_protocols::availability::challenge::{Request, Response};
use vigil_protocols::availability::encode::{keystream, SECTOR};
use vigil_protocols::availability::tree::{leaves, verify_leaf, LEAF};

use super::Challenger;
use crate::metrics as m;
use crate::net::codec::Frame;
use crate::net::Offence;
use crate::storage::{parse_root, Announced};
use crate::Result;

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
    let mut last = chain.head();
    let mut announce = tokio::time::interval(Duration::from_secs(15));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = announce.tick() => c.inner.storage.announce_all().await,
            _ = tick.tick() => {
                let head = chain.head();
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
        let picks: Vec<&(PeerId, Announced)> = (0..self.inner.settings.per_epoch)
            .map(|_| {
                let mut b = [0u8; 8];
                xof.fill(&mut b);
                &cands[(u64::from_le_bytes(b) % cands.len() as u64) as usize]
            })
            .collect();
        let runs = picks.iter().map(|(peer, a)| async move {
            match self.challenge(*peer, a, epoch, &e.output).await {
                Ok(r) => {
                    self.record(*peer, &r).await;
                    Some((*peer, r.outcome))
                }
                Err(err) => {
                    tracing::warn!(peer = %peer, error = %err, "cannot challenge");
                    None
                }
            }
        });
        let mut by_peer: std::collections::HashMap<PeerId, Vec<&'static str>> = Default::default();
        for (peer, outcome) in join_all(runs).await.into_iter().flatten() {
            by_peer.entry(peer).or_default().push(outcome);
        }
        for (peer, outcomes) in by_peer {
            self.score(peer, &outcomes).await;
        }
        let every = self.inner.settings.audit_every;
        if every > 0 && epoch % every == 0 {
            let (peer, a) = picks[0].clone();
            let me = self.clone();
            tokio::spawn(async move {
                match me.audit(peer, &a).await {
                    Ok(true) => {}
                    Ok(false) => me.inner.net.penalize(peer, Offence::FailedProof).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "audit not run"),
                }
            });
        }
    }

    /// Asks `peer` for one random leaf as replica and as plaintext, and
    /// recomputes the encoding of its sector: does `R_p` encode `R`?
    pub async fn audit(&self, peer: PeerId, a: &Announced) -> Result<bool> {
        let replica_root = parse_root(&a.replica_root)?;
        let root = parse_root(&a.root)?;
        let index = rand::thread_rng().gen_range(0..leaves(a.size));
        let r = self
            .inner
            .net
            .challenge(peer, Request::Audit { replica_root, index })
            .await?;
        let cost = self.inner.storage.cost();
        let size = a.size;
        let verdict = tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
            let (replica, plain) = match r.0 {
                Frame::Valid(Response::Audit { replica, plain }) => (replica, plain),
                Frame::Valid(other) => return Err(format!("answered {other:?} to an audit")),
                Frame::Invalid(e) => return Err(e.to_string()),
            };
            if replica.index != index || plain.index != index {
                return Err("audit answer for another leaf".into());
            }
            verify_leaf(&replica_root, size, index, &replica.leaf, &replica.siblings)?;
            verify_leaf(&root, size, index, &plain.leaf, &plain.siblings)?;
            let off = index * LEAF as u64;
            let ks = keystream(&peer.to_bytes(), &root, off / SECTOR as u64, cost);
            let at = (off % SECTOR as u64) as usize;
            let encoded: Vec<u8> = plain.leaf.iter().zip(&ks[at..]).map(|(p, k)| p ^ k).collect();
            if encoded == replica.leaf {
                Ok(())
            } else {
                Err(format!(
                    "leaf {index} of the replica is not the encoding of the plaintext"
                ))
            }
        })
        .await
        .map_err(|e| crate::Error::Invalid(e.to_string()))?;
        match verdict {
            Ok(()) => {
                metrics::counter!(m::AUDITS, "result" => "ok").increment(1);
                tracing::info!(%peer, dataset = %a.replica_root, index, "audit passed: the replica encodes the plaintext");
                Ok(true)
            }
            Err(why) => {
                metrics::counter!(m::AUDITS, "result" => "failed").increment(1);
                tracing::warn!(%peer, dataset = %a.replica_root, why, "audit failed");
                Ok(false)
            }
        }
    }
}
