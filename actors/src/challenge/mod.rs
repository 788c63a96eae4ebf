//! Availability challenges: this node proves what it stores
//! ([`prover`]) and challenges what its peers announced ([`service`]), every
//! epoch, timing each round trip itself against the deadline plus an
//! allowance for network distance that only the verifier's own measurements
//! set (the lowest ping it saw, capped by genesis).
//!
//! Every outcome feeds peer scoring (ok +1; wrong, malformed or missing −20;
//! late or refused −5), the durable bus topic `challenge.results`, this
//! node's per-peer statistics, and a signed attestation gossiped on
//! `/vigil/<g8>/attestations` that other nodes verify and record ([`attest`]).

pub mod attest;
pub mod audit;
pub mod prover;
pub mod service;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use rand::Rng;
use serde::Serialize;
use vigil_protocols::availability::challenge::{
    derive_indices, verify, ChallengeRequest, Outcome, Request, Response,
};

pub use service::ChallengeActor;

use crate::epoch::Chain;
use crate::metrics as m;
use crate::net::codec::Frame;
use crate::net::{Network, Offence};
use crate::queue::{Publish, Queues};
use crate::storage::{parse_root, Announced, Storage};
use crate::{Error, Result};

/// Bus topic of outcomes (durable).
pub const BUS_TOPIC: &str = "challenge.results";
/// Latencies kept per peer for the percentiles.
const LATENCIES_KEPT: usize = 1000;

/// Times a challenge is asked again after a "busy" answer.
const BUSY_RETRIES: usize = 3;

/// A challenge with no answer after this many times its deadline (plus
/// the network allowance), and at least [`GIVE_UP_MIN`], is `timeout`.
const GIVE_UP_FACTOR: u32 = 10;
/// The shortest wait for an answer.
const GIVE_UP_MIN: Duration = Duration::from_secs(5);

/// Settings from genesis and `[challenge]`.
#[derive(Debug, Clone)]
pub struct ChallengeSettings {
    /// Challenges issued per epoch (genesis).
    pub per_epoch: u32,
    /// Response deadline (genesis).
    pub deadline: Duration,
    /// Leaves asked per challenge.
    pub chunks: usize,
    /// Each announced dataset of a connected peer is audited once in this
    /// many epochs (genesis `security.audit_period_epochs`; 0: never, for tools).
    pub audit_period: u64,
    /// An audit not answered correctly within this is a failed proof (genesis).
    pub audit_deadline: Duration,
    /// Largest allowance for network distance over the deadline (genesis
    /// `security.rtt_allowance_max_ms`).
    pub rtt_allowance_max: Duration,
    /// Issue challenges every epoch (false: only answer them).
    pub enabled: bool,
    /// Set while the actor is paused by the security rules or the operator:
    /// it stays supervised and keeps answering, but issues no challenges.
    pub paused: Arc<std::sync::atomic::AtomicBool>,
}

/// One challenge's result, as `challenge_run` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct ChallengeResult {
    /// The prover.
    pub peer: String,
    /// Replica root (hex).
    pub dataset: String,
    /// Epoch whose output seeded the indices.
    pub epoch: u64,
    /// `ok | wrong | late | missing | malformed | refused | timeout`, or for an audit
    /// `audit_ok | audit_failed`.
    pub outcome: &'static str,
    /// What was wrong, if anything.
    pub detail: Option<String>,
    /// Round trip, ms.
    pub latency_ms: f64,
    /// The peer's last ping round trip, ms.
    pub ping_ms: Option<f64>,
    /// What the deadline allowed for network distance, ms: the lowest ping
    /// round trip this node measured to the peer, capped by genesis.
    pub allowance_ms: f64,
    /// Proof bytes received.
    pub proof_bytes: usize,
}

/// Per-peer figures for `challenge_stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    /// Challenges and audits issued to it.
    pub challenges: u64,
    /// Answered `ok` (or `audit_ok`).
    pub ok: u64,
    /// Count per outcome.
    pub outcomes: HashMap<&'static str, u64>,
    /// `ok / challenges`.
    pub success_rate: f64,
    /// Round trip percentiles, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// The last failure.
    pub last_failure: Option<ChallengeResult>,
    #[serde(skip)]
    latencies: VecDeque<f64>,
}

#[derive(Debug)]
struct Inner {
    settings: ChallengeSettings,
    storage: Storage,
    chain: Chain,
    net: Network,
    queues: Option<Arc<Queues>>,
    stats: Mutex<HashMap<String, PeerStats>>,
    /// Audits running at once (each regenerates a sector's encoding here).
    audits: tokio::sync::Semaphore,
    attestations: Arc<attest::Recorder>,
}

/// Handle to the challenge machinery; cheap to clone.
#[derive(Debug, Clone)]
pub struct Challenger {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

impl Challenger {
    /// Serves challenges from `storage` and issues them with `net`.
    pub fn new(
        settings: ChallengeSettings,
        storage: Storage,
        chain: Chain,
        net: Network,
        queues: Option<Arc<Queues>>,
    ) -> Self {
        let head = chain.clone();
        let attestations = Arc::new(attest::Recorder::new(storage.store(), move || head.head()));
        let c = Self {
            inner: Arc::new(Inner {
                settings,
                storage,
                chain,
                net,
                queues,
                stats: Mutex::new(HashMap::new()),
                audits: tokio::sync::Semaphore::new(2),
                attestations,
            }),
        };
        c.inner.net.set_challenge_server(Arc::new(prover::Prover::new(
            c.inner.storage.clone(),
            c.inner.chain.clone(),
        )));
        c.inner
            .net
            .set_gossip_handler(attest::TOPIC, c.inner.attestations.clone());
        c
    }

    /// The settings.
    pub fn settings(&self) -> &ChallengeSettings {
        &self.inner.settings
    }

    /// Per-peer statistics.
    pub fn stats(&self) -> HashMap<String, PeerStats> {
        lock(&self.inner.stats).clone()
    }

    /// Attestations recorded: this node's own and those gossiped by others.
    pub fn attestations(&self, limit: usize) -> Result<Vec<attest::Attestation>> {
        self.inner.attestations.list(limit)
    }

    /// A dataset `peer` announced: `dataset` (replica root hex) or the first one.
    pub fn target(&self, peer: &PeerId, dataset: Option<&str>) -> Result<Announced> {
        let id = peer.to_string();
        self.inner
            .storage
            .announced()?
            .into_iter()
            .find(|a| a.peer == id && dataset.is_none_or(|d| a.replica_root == d || a.root == d))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "peer {peer} announced no dataset{}: see storage_announced",
                    dataset.map(|d| format!(" `{d}`")).unwrap_or_default()
                ))
            })
    }

    /// Challenges `peer` on `target` with the output of the epoch before the
    /// head (which every prover has had time to receive), and records the outcome.
    pub async fn run(&self, peer: PeerId, target: &Announced) -> Result<ChallengeResult> {
        let epoch = self.inner.chain.final_head().saturating_sub(1).max(1);
        let e = self
            .inner
            .chain
            .store()
            .get(epoch)?
            .ok_or_else(|| Error::Invalid("no epoch yet: challenges start with epoch 1".into()))?;
        let r = self.challenge(peer, target, epoch, &e.output).await?;
        self.record(peer, &r).await;
        if r.outcome != "ok" {
            failed_line(&peer, epoch, std::slice::from_ref(&r));
        }
        self.score(peer, &[r.outcome]).await;
        Ok(r)
    }

    async fn challenge(
        &self,
        peer: PeerId,
        target: &Announced,
        epoch: u64,
        output: &[u8; 32],
    ) -> Result<ChallengeResult> {
        let replica_root = parse_root(&target.replica_root)?;
        let nonce: [u8; 32] = rand::thread_rng().gen();
        let req = ChallengeRequest {
            replica_root,
            epoch,
            nonce,
            indices: derive_indices(
                output,
                &nonce,
                &replica_root,
                target.size,
                self.inner.settings.chunks,
            ),
        };
        let ping = self.inner.net.ping_rtt(&peer);
        let allowance = self.allowance(&peer);
        // A frozen prover never answers: give up long after the deadline
        // (an answer by then would be late anyway), not at the transport's
        // 60 s, and record `timeout` with the wait.
        let give_up = ((self.inner.settings.deadline + allowance) * GIVE_UP_FACTOR).max(GIVE_UP_MIN);
        let ask = || async {
            match tokio::time::timeout(
                give_up,
                self.inner.net.challenge(peer, Request::Challenge(req.clone())),
            )
            .await
            {
                Ok(answer) => answer,
                Err(_) => Err(Error::Timeout(format!(
                    "no answer within {} ms (deadline {} ms + allowance {} ms)",
                    give_up.as_millis(),
                    self.inner.settings.deadline.as_millis(),
                    allowance.as_millis()
                ))),
            }
        };
        // A busy prover names a wait: ask again after it (a few times at
        // most); busy to the end is neither a failure nor a pass.
        let mut answer = ask().await;
        for _ in 0..BUSY_RETRIES {
            let wait = match &answer {
                Ok((Frame::Valid(Response::Busy(ms)), _)) if *ms <= 2000 => {
                    Duration::from_millis(u64::from(*ms))
                }
                _ => break,
            };
            tokio::time::sleep(wait).await;
            answer = ask().await;
        }
        let mut why_missing = None;
        let (outcome, rtt, bytes) = match answer {
            Err(Error::Timeout(why)) => (Outcome::Timeout(why), give_up, 0),
            // The stream closed, the peer went away: no proof, and why.
            Err(e) => {
                why_missing = Some(e.to_string());
                (Outcome::Missing, Duration::ZERO, 0)
            }
            Ok((Frame::Invalid(e), rtt)) => (Outcome::Malformed(e.to_string()), rtt, 0),
            Ok((Frame::Valid(resp), rtt)) => {
                let bytes = match &resp {
                    Response::Proofs(p) => p.iter().map(|p| p.leaf.len() + 32 * p.siblings.len() + 43).sum(),
                    _ => 0,
                };
                let mut o = verify(&req, target.size, &resp);
                if o == Outcome::Ok && rtt > self.inner.settings.deadline + allowance {
                    o = Outcome::Late;
                }
                (o, rtt, bytes)
            }
        };
        Ok(ChallengeResult {
            peer: peer.to_string(),
            dataset: target.replica_root.clone(),
            epoch,
            outcome: outcome.as_str(),
            detail: outcome.detail().map(str::to_owned).or(why_missing),
            latency_ms: rtt.as_secs_f64() * 1000.0,
            ping_ms: ping.map(|p| p.as_secs_f64() * 1000.0),
            allowance_ms: allowance.as_secs_f64() * 1000.0,
            proof_bytes: bytes,
        })
    }

    /// The allowance for network distance to `peer`: the lowest round trip
    /// this node measured itself, never more than genesis'
    /// `security.rtt_allowance_max_ms` (a prover that delays its pongs gains
    /// that much at most), nothing before a first ping.
    fn allowance(&self, peer: &PeerId) -> Duration {
        self.inner
            .net
            .rtt_floor(peer)
            .unwrap_or_default()
            .min(self.inner.settings.rtt_allowance_max)
    }

    /// Scores a peer once for a round of outcomes: the worst one counts
    /// (ok +1; late or refused −5; wrong, malformed, missing or timeout −20; busy
    /// nothing: neither credit nor blame), so ten
    /// failed challenges in one epoch cost what one does and a failing
    /// prover is banned after a few epochs, not by one burst.
    async fn score(&self, peer: PeerId, outcomes: &[&str]) {
        let net = &self.inner.net;
        if outcomes
            .iter()
            .any(|o| matches!(*o, "wrong" | "malformed" | "missing" | "timeout"))
        {
            net.penalize(peer, Offence::FailedProof).await;
        } else if outcomes.iter().any(|o| matches!(*o, "late" | "refused")) {
            net.penalize(peer, Offence::LateProof).await;
        } else if outcomes.contains(&"ok") {
            net.credit(peer).await;
        }
    }

    /// Counts, publishes and attests one result (scoring is per round: [`Challenger::score`]).
    async fn record(&self, peer: PeerId, r: &ChallengeResult) {
        metrics::counter!(m::CHALLENGES, "outcome" => r.outcome).increment(1);
        if r.outcome == "busy" || r.outcome == audit::AUDIT_BUSY {
            // Neither proof nor failure: counted, not attested.
            *lock(&self.inner.stats)
                .entry(r.peer.clone())
                .or_default()
                .outcomes
                .entry(r.outcome)
                .or_default() += 1;
            return;
        }
        if r.outcome == "ok" {
            metrics::histogram!(m::CHALLENGE_RTT).record(r.latency_ms / 1000.0);
        }
        {
            let mut all = lock(&self.inner.stats);
            let s = all.entry(r.peer.clone()).or_default();
            s.challenges += 1;
            *s.outcomes.entry(r.outcome).or_default() += 1;
            if r.outcome == "ok" || r.outcome == audit::AUDIT_OK {
                s.ok += 1;
            } else {
                s.last_failure = Some(r.clone());
            }
            if r.latency_ms > 0.0 {
                if s.latencies.len() == LATENCIES_KEPT {
                    s.latencies.pop_front();
                }
                s.latencies.push_back(r.latency_ms);
            }
            let mut sorted: Vec<f64> = s.latencies.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            s.latency_p50_ms = percentile(&sorted, 0.5);
            s.latency_p99_ms = percentile(&sorted, 0.99);
            s.success_rate = s.ok as f64 / s.challenges as f64;
        }
        let net = &self.inner.net;
        if let Some(q) = &self.inner.queues {
            let p = Publish {
                sender: "node:challenges".into(),
                correlation: format!("challenge-{}-{}", r.epoch, &r.peer),
                headers: Default::default(),
                payload: serde_json::to_vec(r).unwrap_or_default(),
            };
            if let Err(e) = q.publish(BUS_TOPIC, p).await {
                tracing::error!(error = %e, "cannot publish a challenge result on the bus");
            }
        }
        match attest::Attestation::sign(self.inner.storage.key(), peer, r) {
            Ok(a) => {
                if let Err(e) = self.inner.attestations.record(&a) {
                    tracing::error!(error = %e, "cannot record our attestation");
                }
                if let Err(e) = net.publish(attest::TOPIC, a.encode()).await {
                    tracing::debug!(error = %e, "cannot gossip an attestation");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot sign an attestation"),
        }
    }
}

/// One warn line for a peer's failed challenges of a round (not one per
/// challenge: a frozen peer fails them all in the same millisecond).
fn failed_line(peer: &PeerId, epoch: u64, failed: &[ChallengeResult]) {
    let Some(first) = failed.first() else { return };
    let outcomes: Vec<&str> = failed.iter().map(|r| r.outcome).collect();
    let datasets: Vec<&str> = failed.iter().map(|r| r.dataset.as_str()).collect();
    tracing::warn!(
        %peer,
        epoch,
        failed = failed.len(),
        outcomes = %outcomes.join(","),
        datasets = %datasets.join(","),
        detail = first.detail.as_deref().unwrap_or(first.outcome),
        "challenges failed"
    );
}
