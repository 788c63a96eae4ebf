//! Scores, bans and admission: what a peer's conduct costs it, and whether
//! a request of its is served now, answered busy, or counted as a flood.

use std::collections::HashSet;
use std::time::Instant;

use libp2p::{Multiaddr, PeerId};
use serde_json::json;

use super::Loop;
use crate::metrics as m;
use crate::net::book::unix_now;
use crate::net::limits::{Admit, Permit, Work};
use crate::net::lock;
use crate::net::score::{Merit, Offence, Verdict};

impl Loop {
    /// Bans `peer` at once; the ban and its audit entry are written (an
    /// fsync each) off the swarm task, and `done` answered once they are.
    pub(super) fn ban(
        &mut self,
        peer: PeerId,
        secs: u64,
        reason: &str,
        by: &str,
        done: Option<tokio::sync::oneshot::Sender<std::result::Result<(), String>>>,
    ) {
        let secs = if secs == 0 {
            lock(&self.net.inner.settings).score.ban_for.as_secs()
        } else {
            secs
        };
        let until = unix_now() + secs;
        let (book, audit) = (self.net.inner.book.clone(), self.net.inner.audit.clone());
        let (why, who) = (reason.to_owned(), by.to_owned());
        tokio::task::spawn_blocking(move || {
            let r = book.ban(&peer, until, &why).and_then(|_| book.forget(&peer));
            if let Err(e) = &r {
                tracing::error!(%peer, error = %e, "cannot persist a ban: it holds until this node restarts");
            }
            if let Some(a) = audit {
                a.append_or_log(
                    &who,
                    "net.ban",
                    json!({ "peer": peer.to_string(), "secs": secs, "reason": why }),
                );
            }
            if let Some(done) = done {
                let _ = done.send(r.map_err(|e| e.to_string()));
            }
        });
        // Its addresses: enough banned peers at one of them ban the address.
        let ips: HashSet<std::net::IpAddr> = lock(&self.net.inner.snapshot)
            .peers
            .get(&peer)
            .map(|p| {
                p.addresses
                    .iter()
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                    .filter_map(|a| crate::net::ipguard::ip_of(&a))
                    .collect()
            })
            .unwrap_or_default();
        for ip in self.swarm.behaviour_mut().ips.peer_banned(peer, &ips, until) {
            let why = format!("{reason} (and other peers from this address were banned)");
            tracing::warn!(%ip, %peer, "address banned: another peer from it was banned");
            metrics::counter!(m::NET_BANS).increment(1);
            let (book, audit, who) = (
                self.net.inner.book.clone(),
                self.net.inner.audit.clone(),
                by.to_owned(),
            );
            tokio::task::spawn_blocking(move || {
                if let Err(e) = book.ban_ip(&ip, until, &why) {
                    tracing::error!(%ip, error = %e, "cannot persist an address ban");
                }
                if let Some(a) = audit {
                    a.append_or_log(
                        &who,
                        "net.ip_ban",
                        json!({ "address": ip.to_string(), "until_unix": until, "reason": why }),
                    );
                }
            });
        }
        self.known.remove(&peer);
        self.banned.insert(peer, until);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        metrics::counter!(m::NET_BANS).increment(1);
        tracing::warn!(%peer, secs, reason, by, "peer banned");
    }

    pub(super) fn penalize(&mut self, peer: PeerId, offence: Offence) {
        let (score, verdict) = self.scores.penalize(peer, offence, Instant::now());
        metrics::counter!(m::NET_OFFENCES, "offence" => offence.as_str()).increment(1);
        tracing::info!(%peer, offence = offence.as_str(), score, "peer scored down");
        if let Some(p) = lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
            p.score = score;
        }
        match verdict {
            Verdict::Keep => {}
            Verdict::Disconnect => {
                tracing::warn!(%peer, score, "disconnecting a peer below the disconnect threshold");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Verdict::Ban => {
                let reason = format!("score {score:.1} after {}", offence.as_str());
                self.ban(peer, 0, &reason, "scoring", None);
            }
        }
    }

    /// Admits an inbound request of kind `w` from `peer` ([`super::limits`]),
    /// or says after how many ms to try again; a peer past its share is
    /// scored down.
    pub(super) fn admit(&mut self, peer: PeerId, w: Work) -> std::result::Result<Permit, u32> {
        let now = Instant::now();
        let newcomer = self.scores.get(&peer, now) <= 0.0;
        match self.limiter.admit(peer, w, now, newcomer) {
            Admit::Go(p) => Ok(p),
            Admit::Busy {
                retry_after,
                over_quota,
            } => {
                let reason = if over_quota { "quota" } else { "busy" };
                metrics::counter!(m::NET_REQUESTS_REFUSED, "kind" => w.as_str(), "reason" => reason)
                    .increment(1);
                if over_quota {
                    self.penalize(peer, Offence::Flood);
                }
                Err(retry_after.as_millis().clamp(1, u128::from(u32::MAX)) as u32)
            }
        }
    }

    pub(super) fn reward(&mut self, peer: PeerId, merit: Merit) {
        let s = self.scores.reward(peer, merit, Instant::now());
        if let Some(p) = lock(&self.net.inner.snapshot).peers.get_mut(&peer) {
            p.score = s;
        }
    }
}
