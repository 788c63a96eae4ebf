//! The epoch heads peers claim, and which of them count.
//!
//! A claimed head is a peer's word, so it counts (for `synced`, `/ready` and
//! the challenges that wait on them) only once the peer backed it: epochs of
//! its verified beyond the head this node had. The sync loop asks every peer
//! whose unbacked claim is ahead for the epochs it claims; a peer that
//! serves none, or an invalid one, is refuted (its claim drops to this
//! node's head) and scored down, so a peer claiming head `u64::MAX` freezes
//! nothing and is banned after a few rounds. Claims expire when their peer
//! disconnects or has not repeated them for [`CLAIM_TTL`], and a backed claim
//! that jumps by more than [`CLAIM_JUMP`] must be backed again. Relaying a
//! valid gossiped epoch backs nothing: only epochs a peer serves in answer to
//! this node's own sync request do.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// A claim not repeated for this long no longer counts.
pub(crate) const CLAIM_TTL: Duration = Duration::from_secs(120);
/// A backed claim that rises by more than this at once must be backed again
/// (a peer that once served good epochs does not get to claim anything).
pub(crate) const CLAIM_JUMP: u64 = 64;

#[derive(Debug, Clone, Copy)]
struct Claim {
    head: u64,
    seen: Instant,
    backed: bool,
}

/// Claimed heads by peer.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    map: HashMap<PeerId, Claim>,
}

impl Claims {
    /// `peer` says its head is `head`.
    pub(crate) fn saw(&mut self, peer: PeerId, head: u64, now: Instant) {
        let c = self.map.entry(peer).or_insert(Claim {
            head,
            seen: now,
            backed: false,
        });
        if head > c.head.saturating_add(CLAIM_JUMP) {
            c.backed = false;
        }
        c.head = head;
        c.seen = now;
    }

    /// `peer` delivered epochs that verified: its claim counts.
    pub(crate) fn backed(&mut self, peer: PeerId, now: Instant) {
        if let Some(c) = self.map.get_mut(&peer) {
            c.backed = true;
            c.seen = now;
        }
    }

    /// `peer` could not back its claim: it falls to `our_head`, unbacked.
    pub(crate) fn refute(&mut self, peer: &PeerId, our_head: u64) {
        if let Some(c) = self.map.get_mut(peer) {
            c.backed = false;
            c.head = our_head;
        }
    }

    /// Drops the claims of peers not in `connected` and those older than [`CLAIM_TTL`].
    pub(crate) fn expire(&mut self, connected: Option<&HashSet<PeerId>>, now: Instant) {
        self.map.retain(|p, c| {
            connected.is_none_or(|set| set.contains(p)) && now.duration_since(c.seen) <= CLAIM_TTL
        });
    }

    /// The best head that counts (0: none): a backed claim, or an unbacked
    /// one up to `our_head` (this node holds those epochs itself, so the
    /// claim asks nothing of it: a follower kept in sync by gossip shows its
    /// timelord at the head they share, not at 0).
    pub(crate) fn best(&self, our_head: u64) -> u64 {
        self.map
            .values()
            .map(|c| if c.backed { c.head } else { c.head.min(our_head) })
            .max()
            .unwrap_or(0)
    }

    /// Peers whose unbacked claim is more than one epoch ahead of `head`
    /// (the next epoch is on its way by gossip), best claim first.
    pub(crate) fn unbacked_ahead(&self, head: u64) -> Vec<(PeerId, u64)> {
        let mut v: Vec<(PeerId, u64)> = self
            .map
            .iter()
            .filter(|(_, c)| !c.backed && c.head > head.saturating_add(1))
            .map(|(p, c)| (*p, c.head))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Claims in force that no epoch backs (for status).
    pub(crate) fn unbacked(&self) -> usize {
        self.map.values().filter(|c| !c.backed).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_counts_once_backed_and_drops_when_refuted() {
        let (mut c, now, liar, honest) = (
            Claims::default(),
            Instant::now(),
            PeerId::random(),
            PeerId::random(),
        );
        c.saw(liar, u64::MAX, now);
        c.saw(honest, 40, now);
        assert_eq!(c.best(0), 0, "an unbacked claim counts for nothing");
        assert_eq!(c.best(7), 7, "an unbacked claim counts up to our own head");
        assert_eq!(c.unbacked_ahead(10), vec![(liar, u64::MAX), (honest, 40)]);
        c.backed(honest, now);
        assert_eq!(c.best(0), 40);
        c.refute(&liar, 10);
        assert!(
            c.unbacked_ahead(10).is_empty(),
            "a refuted claim is not asked again until repeated"
        );
        c.saw(liar, 11, now);
        assert!(
            c.unbacked_ahead(10).is_empty(),
            "one epoch ahead comes by gossip: nothing to check"
        );
        assert_eq!(c.best(0), 40);
        // Repeating the lie makes it a claim to check again, still not counted.
        c.saw(liar, u64::MAX, now);
        assert_eq!(c.best(0), 40);
        assert_eq!(c.unbacked(), 1);
        // An honest head moving on stays backed; a jump must be backed anew.
        c.saw(honest, 41, now);
        assert_eq!(c.best(0), 41);
        c.saw(honest, 41 + CLAIM_JUMP + 1, now);
        assert_eq!(c.best(0), 0, "a backed peer cannot jump its claim");
    }

    #[test]
    fn claims_expire_on_disconnect_and_silence() {
        let (mut c, now, a, b) = (
            Claims::default(),
            Instant::now(),
            PeerId::random(),
            PeerId::random(),
        );
        c.saw(a, 50, now);
        c.saw(b, 60, now);
        c.backed(a, now);
        c.backed(b, now);
        let connected: HashSet<PeerId> = [a].into();
        c.expire(Some(&connected), now);
        assert_eq!(c.best(0), 50, "a disconnected peer's claim is gone");
        c.expire(None, now + CLAIM_TTL + Duration::from_secs(1));
        assert_eq!(c.best(0), 0, "a claim not repeated expires");
    }
}
