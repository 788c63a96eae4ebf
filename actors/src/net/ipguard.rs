//! Limits by remote IP address (anchor: bitcoind's per-address bans and
//! inbound eviction): a peer id costs nothing to make, an address does.
//!
//! - At most `max_inbound_per_ip` inbound connections (in their handshake or
//!   established) come from one IP at a time; one more is denied before its
//!   handshake.
//! - When `ip_ban_threshold` different peer ids from one IP have been banned
//!   (each ban still in force), the IP itself is banned until the last of
//!   them ends: a banned node that comes back with a new key from the same
//!   address is refused before its handshake.
//!
//! Local testnets run every node on 127.0.0.1: `vigil-testnet` raises the
//! per-IP cap and turns address bans off in the configs it writes.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;

use super::book::unix_now;

/// The IP of a multiaddr (`/ip4/..` or `/ip6/..` first).
pub(crate) fn ip_of(a: &Multiaddr) -> Option<IpAddr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Why a connection was denied, shown in the swarm's `IncomingConnectionError`.
#[derive(Debug)]
pub(crate) struct Denied(String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Denied {}

/// The behaviour: per-IP inbound counts and address bans.
#[derive(Debug)]
pub(crate) struct IpGuard {
    max_per_ip: usize,
    ban_threshold: usize,
    inbound: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
    /// Banned peer ids seen at each IP, with when their ban ends.
    banned_peers: HashMap<IpAddr, HashMap<PeerId, u64>>,
    /// Banned addresses: until (Unix seconds).
    banned: HashMap<IpAddr, u64>,
}

impl IpGuard {
    pub(crate) fn new(max_per_ip: usize, ban_threshold: usize) -> Self {
        Self {
            max_per_ip,
            ban_threshold,
            inbound: HashMap::new(),
            per_ip: HashMap::new(),
            banned_peers: HashMap::new(),
            banned: HashMap::new(),
        }
    }

    /// `peer`, seen at `ips`, is banned until `until`; returns the IPs that
    /// are banned now because of it.
    pub(crate) fn peer_banned(&mut self, peer: PeerId, ips: &HashSet<IpAddr>, until: u64) -> Vec<IpAddr> {
        if self.ban_threshold == 0 {
            return Vec::new();
        }
        let now = unix_now();
        let mut newly = Vec::new();
        for ip in ips {
            let at = self.banned_peers.entry(*ip).or_default();
            at.retain(|_, u| *u > now);
            at.insert(peer, until);
            if at.len() >= self.ban_threshold {
                let last = at.values().copied().max().unwrap_or(until);
                if self.banned.insert(*ip, last).is_none_or(|u| u <= now) {
                    newly.push(*ip);
                }
            }
        }
        newly
    }

    /// Bans `ip` until `until` (a ban loaded from disk).
    pub(crate) fn ban_ip(&mut self, ip: IpAddr, until: u64) {
        self.banned.insert(ip, until);
    }

    /// Lifts the ban of `ip` and forgets its banned peers.
    pub(crate) fn unban_ip(&mut self, ip: &IpAddr) -> bool {
        self.banned_peers.remove(ip);
        self.banned.remove(ip).is_some()
    }

    /// Drops ended address bans, and banned peers whose ban ended.
    pub(crate) fn prune(&mut self) {
        let now = unix_now();
        self.banned.retain(|_, u| *u > now);
        self.banned_peers.retain(|_, m| {
            m.retain(|_, u| *u > now);
            !m.is_empty()
        });
    }

    fn release(&mut self, id: &ConnectionId) {
        if let Some(ip) = self.inbound.remove(id) {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    /// Whether a connection from `ip` may start now; why not.
    fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        if let Some(until) = self.banned.get(&ip).filter(|u| **u > unix_now()) {
            return Err(Denied(format!(
                "address {ip} is banned until {until} (Unix time): {} of its peers were banned",
                self.ban_threshold
            )));
        }
        let n = self.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= self.max_per_ip {
            return Err(Denied(format!(
                "{n} inbound connections from {ip} already (network.max_inbound_per_ip = {})",
                self.max_per_ip
            )));
        }
        Ok(())
    }
}

impl NetworkBehaviour for IpGuard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        if let Err(e) = self.check(ip) {
            metrics::counter!(crate::metrics::NET_INCOMING_REFUSED).increment(1);
            tracing::debug!(%ip, why = %e, "inbound connection denied");
            return Err(ConnectionDenied::new(e));
        }
        self.inbound.insert(connection_id, ip);
        *self.per_ip.entry(ip).or_default() += 1;
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(c) => self.release(&c.connection_id),
            FromSwarm::ListenFailure(f) => self.release(&f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_banned_once_enough_of_its_peers_are_and_its_connections_capped() {
        let mut g = IpGuard::new(2, 2);
        let (a, b) = (ip("203.0.113.7"), ip("198.51.100.1"));
        let later = unix_now() + 600;
        assert!(g
            .peer_banned(PeerId::random(), &HashSet::from([a]), later)
            .is_empty());
        assert!(g.check(a).is_ok(), "one banned peer is not enough");
        assert_eq!(
            g.peer_banned(PeerId::random(), &HashSet::from([a]), later + 60),
            vec![a]
        );
        let e = g.check(a).unwrap_err().to_string();
        assert!(e.contains("banned") && e.contains("2 of its peers"), "{e}");
        assert!(g.check(b).is_ok());
        g.prune();
        assert_eq!(g.banned.get(&a), Some(&(later + 60)));
        // Per-IP cap: the third concurrent inbound connection from b is denied.
        let (c1, c2, c3) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        let remote: Multiaddr = "/ip4/198.51.100.1/tcp/4000".parse().unwrap();
        let local: Multiaddr = "/ip4/0.0.0.0/tcp/1".parse().unwrap();
        g.handle_pending_inbound_connection(c1, &local, &remote).unwrap();
        g.handle_pending_inbound_connection(c2, &local, &remote).unwrap();
        assert!(g.handle_pending_inbound_connection(c3, &local, &remote).is_err());
        g.release(&c1);
        g.handle_pending_inbound_connection(c3, &local, &remote).unwrap();
        // Off: no address bans at all.
        let mut off = IpGuard::new(8, 0);
        for _ in 0..5 {
            assert!(off
                .peer_banned(PeerId::random(), &HashSet::from([a]), later)
                .is_empty());
        }
        assert!(off.check(a).is_ok());
        assert!(g.unban_ip(&a));
        assert!(g.check(a).is_ok());
    }
}
