//! Peer scoring (anchor: Lighthouse): a score in -100..=100 per peer that
//! offences lower, good behaviour raises slowly, and time heals (half-life).
//! Below `disconnect_below` the peer is disconnected, below `ban_below` banned.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Thresholds and healing of the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreParams {
    /// Disconnect a peer whose score falls below this (default -20).
    pub disconnect_below: f64,
    /// Ban a peer whose score falls below this (default -50).
    pub ban_below: f64,
    /// How long a ban lasts (default 12 h).
    pub ban_for: Duration,
    /// Time for a score to halve towards 0 (default 10 min).
    pub half_life: Duration,
}

impl Default for ScoreParams {
    fn default() -> Self {
        Self {
            disconnect_below: -20.0,
            ban_below: -50.0,
            ban_for: Duration::from_secs(12 * 3600),
            half_life: Duration::from_secs(600),
        }
    }
}

/// Things a peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Offence {
    /// A request-response frame that does not decode.
    Malformed,
    /// A frame over the protocol's size limit.
    Oversized,
    /// A gossip message that fails validation.
    InvalidGossip,
    /// A storage proof that does not verify.
    FailedProof,
    /// A storage proof after its deadline.
    LateProof,
    /// A claimed epoch head its peer cannot back with epochs.
    UnbackedClaim,
    /// A request past the peer's share of a kind of work (it did not wait
    /// when told it was busy).
    Flood,
}

impl Offence {
    /// Score lost for the offence.
    pub fn penalty(self) -> f64 {
        match self {
            Offence::Malformed | Offence::Oversized | Offence::InvalidGossip | Offence::UnbackedClaim => 10.0,
            Offence::FailedProof => 20.0,
            Offence::LateProof => 5.0,
            Offence::Flood => 2.0,
        }
    }

    /// Short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Offence::Malformed => "malformed",
            Offence::Oversized => "oversized",
            Offence::InvalidGossip => "invalid_gossip",
            Offence::FailedProof => "failed_proof",
            Offence::LateProof => "late_proof",
            Offence::UnbackedClaim => "unbacked_claim",
            Offence::Flood => "flood",
        }
    }
}

/// Things a peer did right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merit {
    /// A valid answer to a request.
    GoodResponse,
    /// A valid gossip message.
    ValidGossip,
}

impl Merit {
    fn reward(self) -> f64 {
        match self {
            Merit::GoodResponse => 1.0,
            Merit::ValidGossip => 0.2,
        }
    }
}

/// What to do with a peer after its score changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Close its connections.
    Disconnect,
    /// Ban it for `ban_for`.
    Ban,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    at: Instant,
}

/// Scores of every peer seen recently.
#[derive(Debug)]
pub struct Scores {
    params: ScoreParams,
    map: HashMap<PeerId, Entry>,
}

impl Scores {
    /// No peer scored yet.
    pub fn new(params: ScoreParams) -> Self {
        Self {
            params,
            map: HashMap::new(),
        }
    }

    /// The thresholds.
    pub fn params(&self) -> &ScoreParams {
        &self.params
    }

    fn decayed(&self, e: Entry, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(e.at).as_secs_f64();
        let hl = self.params.half_life.as_secs_f64().max(1e-3);
        e.score * 0.5f64.powf(dt / hl)
    }

    /// The peer's score now (0 for a peer never scored).
    pub fn get(&self, peer: &PeerId, now: Instant) -> f64 {
        self.map.get(peer).map_or(0.0, |e| self.decayed(*e, now))
    }

    fn set(&mut self, peer: PeerId, score: f64, now: Instant) -> f64 {
        let score = score.clamp(-100.0, 100.0);
        self.map.insert(peer, Entry { score, at: now });
        score
    }

    /// Lowers the score; returns the new score and what to do.
    pub fn penalize(&mut self, peer: PeerId, offence: Offence, now: Instant) -> (f64, Verdict) {
        let s = self.set(peer, self.get(&peer, now) - offence.penalty(), now);
        let verdict = if s < self.params.ban_below {
            Verdict::Ban
        } else if s < self.params.disconnect_below {
            Verdict::Disconnect
        } else {
            Verdict::Keep
        };
        (s, verdict)
    }

    /// Raises the score; returns the new score.
    pub fn reward(&mut self, peer: PeerId, merit: Merit, now: Instant) -> f64 {
        self.set(peer, self.get(&peer, now) + merit.reward(), now)
    }

    /// Forgets a peer's score (after an operator unban).
    pub fn reset(&mut self, peer: &PeerId) {
        self.map.remove(peer);
    }

    /// Drops scores that healed to about 0, keeping `keep` peers regardless.
    pub fn prune(&mut self, now: Instant, keep: impl Fn(&PeerId) -> bool) {
        let params = self.params;
        self.map.retain(|p, e| {
            let hl = params.half_life.as_secs_f64().max(1e-3);
            let dt = now.saturating_duration_since(e.at).as_secs_f64();
            keep(p) || (e.score * 0.5f64.powf(dt / hl)).abs() >= 0.01
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offences_disconnect_then_ban() {
        let mut s = Scores::new(ScoreParams::default());
        let p = PeerId::random();
        let now = Instant::now();
        assert_eq!(s.penalize(p, Offence::Malformed, now), (-10.0, Verdict::Keep));
        assert_eq!(s.penalize(p, Offence::Oversized, now), (-20.0, Verdict::Keep));
        assert_eq!(
            s.penalize(p, Offence::Malformed, now),
            (-30.0, Verdict::Disconnect)
        );
        assert_eq!(s.penalize(p, Offence::Malformed, now).1, Verdict::Disconnect);
        assert_eq!(
            s.penalize(p, Offence::Malformed, now),
            (-50.0, Verdict::Disconnect)
        );
        assert_eq!(s.penalize(p, Offence::Malformed, now), (-60.0, Verdict::Ban));
    }

    #[test]
    fn scores_heal_with_time_and_are_bounded() {
        let mut s = Scores::new(ScoreParams::default());
        let p = PeerId::random();
        let now = Instant::now();
        s.penalize(p, Offence::FailedProof, now);
        let later = now + Duration::from_secs(600);
        assert!((s.get(&p, later) + 10.0).abs() < 1e-9, "one half-life halves it");
        for _ in 0..1000 {
            s.reward(p, Merit::GoodResponse, now);
        }
        assert_eq!(s.get(&p, now), 100.0);
        s.prune(now + Duration::from_secs(600 * 20), |_| false);
        assert_eq!(s.get(&p, now), 0.0, "healed scores are forgotten");
    }

    #[test]
    fn good_behaviour_raises_slowly() {
        let mut s = Scores::new(ScoreParams::default());
        let p = PeerId::random();
        let now = Instant::now();
        s.penalize(p, Offence::Malformed, now);
        for _ in 0..5 {
            s.reward(p, Merit::ValidGossip, now);
        }
        assert!((s.get(&p, now) + 9.0).abs() < 1e-9);
    }
}
