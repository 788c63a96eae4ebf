//! Bounds on inbound requests that cost this node work (anchors: rust-libp2p's
//! and Lighthouse's per-peer rate limits, bitcoind's "a peer gets a share").
//!
//! Every request on a vigil protocol that makes this node read its disk or
//! burn CPU (a challenge, an audit, a range sync, a continuity proof, a
//! Layer2 channel frame) is admitted by `Limiter::admit` on the swarm task
//! before any work starts:
//! - **per peer**, a token bucket per kind of work (`burst` requests at once,
//!   refilled by `per_epoch` at every new epoch for the work verifiers do
//!   per epoch, by `per_sec` for the rest: epochs run as fast as the
//!   network's VDF, not at genesis' target); a served request takes a
//!   token. A request without a token is past the peer's share: answered
//!   "busy" and scored down a little ([`super::Offence::Flood`]). An honest
//!   node never gets there: it waits as long as a "busy" answer says, and
//!   that wait always covers its next token;
//! - **node-wide**, at most `at_once` requests of a kind are served at the
//!   same time (one audit: each regenerates a sector's encoding): past that
//!   the request is answered "busy" without blame and takes no token (a
//!   verifier that retries a challenge after such an answer must not be
//!   blamed for the prover's load). A flooder that asks for many at once
//!   gets one served and "busy" for the rest, and each one it gets served
//!   uses up its share.
//!
//! "Busy" is an answer of its own in every protocol (never a failed proof):
//! the asker retries after the time it names, or gives up without blaming.
//! A [`Permit`] travels with the request's reply and frees its slot when the
//! answer leaves (or is dropped).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Kinds of inbound work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// An availability challenge (Merkle proofs of a few chunks: disk reads).
    Challenge,
    /// An audit (one sector's encoding regenerated: seconds of CPU).
    Audit,
    /// A range of epochs (up to 8 MiB read).
    Sync,
    /// A continuity proof.
    Continuity,
    /// A Layer2 channel frame (up to 64 signature checks and fsyncs).
    Channel,
}

impl Work {
    /// Every kind.
    pub const ALL: [Work; 5] = [
        Work::Challenge,
        Work::Audit,
        Work::Sync,
        Work::Continuity,
        Work::Channel,
    ];

    /// Name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Challenge => "challenge",
            Work::Audit => "audit",
            Work::Sync => "sync",
            Work::Continuity => "continuity",
            Work::Channel => "channel",
        }
    }

    /// When to try again after "every slot is taken": about one request's work.
    fn slot_wait(self) -> Duration {
        match self {
            Work::Audit => Duration::from_millis(1000),
            Work::Sync | Work::Continuity => Duration::from_millis(200),
            Work::Challenge | Work::Channel => Duration::from_millis(50),
        }
    }
}

/// One kind's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Requests a peer may make at once before it must wait.
    pub burst: f64,
    /// A peer's share, requests per second.
    pub per_sec: f64,
    /// A peer's share, requests per epoch (added as the head moves).
    pub per_epoch: f64,
    /// Requests of this kind served at the same time, node-wide.
    pub at_once: usize,
    /// The burst of a peer that has earned no credit here yet (a new
    /// identity costs an attacker nothing; an audit costs us seconds).
    pub newcomer_burst: f64,
}

/// The bounds of every kind.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundLimits {
    /// Challenges.
    pub challenge: Quota,
    /// Audits.
    pub audit: Quota,
    /// Range syncs.
    pub sync: Quota,
    /// Continuity proofs.
    pub continuity: Quota,
    /// Layer2 channel frames.
    pub channel: Quota,
}

impl InboundLimits {
    /// The bounds on a network where each verifier challenges
    /// `challenges_per_epoch` datasets per epoch: an honest verifier stays
    /// well inside them. A peer may challenge four times as often per epoch
    /// as a verifier does in all (should we be its only prover; a verifier
    /// that fell behind runs rounds back to back and retries busy answers:
    /// a flood run saw an honest one go past twice), audit 4
    /// datasets at once and one more per epoch; ranges and continuity
    /// proofs are bounded per second (catching up asks for many in a row).
    pub fn new(challenges_per_epoch: u32) -> Self {
        let challenges = f64::from(challenges_per_epoch.max(1)) * 4.0;
        let per_sec = |burst: f64, per_sec: f64, at_once: usize| Quota {
            burst,
            newcomer_burst: burst,
            per_sec,
            per_epoch: 0.0,
            at_once,
        };
        Self {
            // A few Merkle proofs each: verifiers send a round's at once.
            challenge: Quota {
                burst: challenges,
                newcomer_burst: challenges,
                per_sec: 0.0,
                per_epoch: challenges,
                at_once: 32,
            },
            // Each regenerates a sector's encoding: one for a new identity
            // until it has earned credit here, four for a known peer.
            audit: Quota {
                burst: 4.0,
                newcomer_burst: 1.0,
                per_sec: 0.0,
                per_epoch: 1.0,
                at_once: 1,
            },
            sync: per_sec(20.0, 10.0, 4),
            continuity: per_sec(64.0, 20.0, 4),
            channel: per_sec(1000.0, 1000.0, 64),
        }
    }

    /// The bounds of `w`.
    pub fn quota(&self, w: Work) -> Quota {
        match w {
            Work::Challenge => self.challenge,
            Work::Audit => self.audit,
            Work::Sync => self.sync,
            Work::Continuity => self.continuity,
            Work::Channel => self.channel,
        }
    }
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self::new(10)
    }
}

/// A served request's slot; freed when dropped.
#[derive(Debug, Default)]
pub struct Permit(Option<Arc<AtomicUsize>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What `Limiter::admit` decided.
#[derive(Debug)]
pub enum Admit {
    /// Serve it, holding the permit until the answer leaves.
    Go(Permit),
    /// Answer "busy: try again after `retry_after`".
    Busy {
        /// When the asker may try again.
        retry_after: Duration,
        /// The peer is past its own share (scored), not just unlucky.
        over_quota: bool,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    epoch: u64,
}

impl Bucket {
    /// Tokens by `now` and `epoch`, at most `q.burst`.
    fn refilled(&self, q: &Quota, now: Instant, epoch: u64) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        let epochs = epoch.saturating_sub(self.epoch) as f64;
        (self.tokens + secs * q.per_sec + epochs * q.per_epoch).min(q.burst)
    }
}

/// A bucket not used for this long is forgotten (its share long refilled).
const IDLE_BUCKET: Duration = Duration::from_secs(600);

/// Per-peer buckets and node-wide slots; owned by the swarm task.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: InboundLimits,
    buckets: HashMap<(PeerId, Work), Bucket>,
    busy: HashMap<Work, Arc<AtomicUsize>>,
    /// Our epoch head, and when it last moved.
    epoch: u64,
    epoch_moved: Option<Instant>,
    /// How long the last epochs took (for "try again in"; the median).
    epoch_lens: std::collections::VecDeque<Duration>,
}

impl Limiter {
    pub(crate) fn new(limits: InboundLimits) -> Self {
        Self {
            limits,
            buckets: HashMap::new(),
            busy: Work::ALL.iter().map(|w| (*w, Arc::default())).collect(),
            epoch: 0,
            epoch_moved: None,
            epoch_lens: std::collections::VecDeque::new(),
        }
    }

    /// How long an epoch takes: the median of the last 8 (5 s before any).
    fn epoch_len(&self) -> Duration {
        let mut v: Vec<Duration> = self.epoch_lens.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(Duration::from_secs(5))
    }

    /// Our epoch head is `head` at `now`: per-epoch shares refill.
    pub(crate) fn set_head(&mut self, head: u64, now: Instant) {
        if head <= self.epoch {
            return;
        }
        if let Some(t) = self.epoch_moved {
            let per = now.saturating_duration_since(t) / (head - self.epoch).min(u64::from(u32::MAX)) as u32;
            if self.epoch_lens.len() == 8 {
                self.epoch_lens.pop_front();
            }
            self.epoch_lens.push_back(per);
        }
        self.epoch = head;
        self.epoch_moved = Some(now);
    }

    /// Admits one request of kind `w` from `peer` at `now` (a `newcomer`:
    /// no credit earned here yet), or says when to retry.
    pub(crate) fn admit(&mut self, peer: PeerId, w: Work, now: Instant, newcomer: bool) -> Admit {
        let mut q = self.limits.quota(w);
        if newcomer {
            q.burst = q.burst.min(q.newcomer_burst);
        }
        let epoch = self.epoch;
        let rate = q.per_sec + q.per_epoch / self.epoch_len().as_secs_f64().max(0.001);
        let b = self.buckets.entry((peer, w)).or_insert(Bucket {
            tokens: q.burst,
            at: now,
            epoch,
        });
        b.tokens = b.refilled(&q, now, epoch);
        b.at = now;
        b.epoch = epoch;
        let until_token =
            |tokens: f64| Duration::from_secs_f64(((1.0 - tokens) / rate.max(1e-9)).clamp(0.0, 3600.0));
        if b.tokens < 1.0 {
            return Admit::Busy {
                retry_after: until_token(b.tokens),
                over_quota: true,
            };
        }
        let slots = self.busy.get(&w).expect("every kind has slots");
        if slots.load(Ordering::Acquire) >= q.at_once {
            return Admit::Busy {
                retry_after: w.slot_wait(),
                over_quota: false,
            };
        }
        b.tokens -= 1.0;
        slots.fetch_add(1, Ordering::AcqRel);
        Admit::Go(Permit(Some(slots.clone())))
    }

    /// Forgets buckets that have refilled (the same as no bucket): memory
    /// stays bounded by the peers active within a refill time.
    pub(crate) fn prune(&mut self, now: Instant) {
        let (limits, epoch) = (&self.limits, self.epoch);
        self.buckets.retain(|(_, w), b| {
            let q = limits.quota(*w);
            b.refilled(&q, now, epoch) < q.burst && now.saturating_duration_since(b.at) < IDLE_BUCKET
        });
    }

    /// Buckets held.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> InboundLimits {
        let mut l = InboundLimits::new(10);
        l.audit = Quota {
            burst: 2.0,
            newcomer_burst: 2.0,
            per_sec: 1.0,
            per_epoch: 0.0,
            at_once: 1,
        };
        l.challenge.per_sec = 20.0;
        l
    }

    #[test]
    fn a_peer_gets_its_burst_then_waits_for_its_share_and_another_peer_is_not_affected() {
        let mut l = Limiter::new(limits());
        let (p, q) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let mut permits = Vec::new();
        for _ in 0..limits().challenge.burst as usize {
            match l.admit(p, Work::Challenge, t0, false) {
                Admit::Go(permit) => permits.push(permit),
                other => panic!("within the burst: {other:?}"),
            }
            permits.clear();
        }
        match l.admit(p, Work::Challenge, t0, false) {
            Admit::Busy {
                retry_after,
                over_quota: true,
            } => assert!(retry_after <= Duration::from_millis(60), "{retry_after:?}"),
            other => panic!("past the burst: {other:?}"),
        }
        assert!(matches!(l.admit(q, Work::Challenge, t0, false), Admit::Go(_)));
        // Refilled at 20/s: one more after 50 ms.
        let t1 = t0 + Duration::from_millis(50);
        assert!(matches!(l.admit(p, Work::Challenge, t1, false), Admit::Go(_)));
        assert!(matches!(
            l.admit(p, Work::Challenge, t1, false),
            Admit::Busy { .. }
        ));
    }

    #[test]
    fn one_audit_at_a_time_node_wide_and_busy_then_is_nobodys_fault() {
        let mut l = Limiter::new(limits());
        let (p, q) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let Admit::Go(permit) = l.admit(p, Work::Audit, t0, false) else {
            panic!("the first audit is served")
        };
        match l.admit(q, Work::Audit, t0, false) {
            Admit::Busy {
                retry_after,
                over_quota: false,
            } => assert_eq!(retry_after, Duration::from_secs(1)),
            other => panic!("one at a time: {other:?}"),
        }
        drop(permit);
        // A busy answer took no token: q has both, p one left.
        assert!(matches!(l.admit(q, Work::Audit, t0, false), Admit::Go(_)));
        assert!(matches!(l.admit(q, Work::Audit, t0, false), Admit::Go(_)));
        assert!(matches!(l.admit(p, Work::Audit, t0, false), Admit::Go(_)));
        assert!(matches!(
            l.admit(p, Work::Audit, t0, false),
            Admit::Busy { over_quota: true, .. }
        ));
    }

    #[test]
    fn waiting_as_told_never_runs_past_the_share() {
        let mut l = Limiter::new(limits());
        let (p, q) = (PeerId::random(), PeerId::random());
        let mut now = Instant::now();
        // q holds the one audit slot for a long time; p keeps asking, each
        // time after the wait it was told.
        let Admit::Go(_held) = l.admit(q, Work::Audit, now, false) else {
            panic!("q is served")
        };
        for _ in 0..20 {
            match l.admit(p, Work::Audit, now, false) {
                Admit::Busy {
                    retry_after,
                    over_quota: false,
                } => now += retry_after,
                other => panic!("p waited as told yet got {other:?}"),
            }
        }
    }

    #[test]
    fn per_epoch_shares_refill_as_the_head_moves_however_fast_epochs_run() {
        let mut l = Limiter::new(InboundLimits::new(10));
        let p = PeerId::random();
        let t0 = Instant::now();
        l.set_head(100, t0);
        for _ in 0..4 {
            assert!(matches!(l.admit(p, Work::Audit, t0, false), Admit::Go(_)));
        }
        // No new epoch: no new audit, however long it has been.
        let later = t0 + Duration::from_secs(3600);
        assert!(matches!(
            l.admit(p, Work::Audit, later, false),
            Admit::Busy { over_quota: true, .. }
        ));
        // Epochs of 250 ms: one more audit per epoch, and the wait it names is about one epoch.
        for (i, ms) in [250u64, 500, 750, 1000].iter().enumerate() {
            l.set_head(101 + i as u64, later + Duration::from_millis(*ms));
        }
        let now = later + Duration::from_millis(1000);
        for _ in 0..4 {
            assert!(matches!(l.admit(p, Work::Audit, now, false), Admit::Go(_)));
        }
        match l.admit(p, Work::Audit, now, false) {
            Admit::Busy {
                retry_after,
                over_quota: true,
            } => assert!(retry_after < Duration::from_secs(2), "{retry_after:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_identity_gets_one_audit_a_known_peer_four() {
        let mut l = Limiter::new(InboundLimits::new(10));
        let (new, known) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(matches!(l.admit(new, Work::Audit, t0, true), Admit::Go(_)));
        assert!(matches!(
            l.admit(new, Work::Audit, t0, true),
            Admit::Busy { over_quota: true, .. }
        ));
        for _ in 0..4 {
            assert!(matches!(l.admit(known, Work::Audit, t0, false), Admit::Go(_)));
        }
        // Other kinds are not smaller for newcomers.
        for _ in 0..20 {
            assert!(matches!(l.admit(new, Work::Sync, t0, true), Admit::Go(_)));
        }
    }

    #[test]
    fn refilled_buckets_are_forgotten() {
        let mut l = Limiter::new(limits());
        let t0 = Instant::now();
        for _ in 0..100 {
            let _ = l.admit(PeerId::random(), Work::Sync, t0, true);
        }
        assert_eq!(l.tracked(), 100);
        l.prune(t0 + Duration::from_millis(10));
        assert_eq!(l.tracked(), 100, "not refilled yet");
        l.prune(t0 + Duration::from_secs(1));
        assert_eq!(l.tracked(), 0);
    }
}
