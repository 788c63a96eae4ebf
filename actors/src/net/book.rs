//! The persisted peer book (`net/peers`: addresses of peers this node spoke
//! to, so a restart reconnects even when every bootnode is down) and the ban
//! list (`net/bans`: bans survive restarts).

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

use crate::store::{decode_value, encode_value, SledStore, Store};
use crate::{Error, Result};

const PEERS: &str = "net/peers";
const BANS: &str = "net/bans";
const IP_BANS: &str = "net/ip_bans";
const FORMAT: u8 = 1;
/// Addresses kept per peer.
const MAX_ADDRS: usize = 8;
/// Peers kept in the book.
pub const MAX_PEERS: usize = 2048;

/// A ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    /// The banned peer.
    pub peer: String,
    /// Unix seconds when the ban ends.
    pub until_unix: u64,
    /// Why.
    pub reason: String,
}

/// Peer book and bans on sled.
#[derive(Debug, Clone)]
pub struct PeerBook {
    store: SledStore,
}

pub(crate) fn unix_now() -> u64 {
    crate::clock::unix_secs()
}

fn corrupt(tree: &str, why: impl ToString) -> Error {
    Error::Corrupt {
        tree: tree.into(),
        why: why.to_string(),
    }
}

fn encode_addrs(last_seen: u64, addrs: &[Multiaddr]) -> Vec<u8> {
    let mut out = last_seen.to_be_bytes().to_vec();
    out.push(addrs.len().min(MAX_ADDRS) as u8);
    for a in addrs.iter().take(MAX_ADDRS) {
        let b = a.to_vec();
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

fn decode_addrs(b: &[u8]) -> Option<(u64, Vec<Multiaddr>)> {
    let last = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let n = *b.get(8)? as usize;
    let mut rest = &b[9..];
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        addrs.push(Multiaddr::try_from(rest.get(2..2 + len)?.to_vec()).ok()?);
        rest = &rest[2 + len..];
    }
    rest.is_empty().then_some((last, addrs))
}

impl PeerBook {
    /// The book in `store`.
    pub fn new(store: SledStore) -> Self {
        Self { store }
    }

    /// Records addresses that reached `peer` (newest first, at most 8). A
    /// full book makes room by evicting the peer with the lowest `score`,
    /// the one seen longest ago among equals: a flood of new identities
    /// cannot push out the peers this node knows to be good.
    pub fn remember(&self, peer: &PeerId, addrs: &[Multiaddr], score: impl Fn(&PeerId) -> f64) -> Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        let key = peer.to_bytes();
        let mut all: Vec<Multiaddr> = addrs.to_vec();
        if let Some((_, old)) = self.addrs_of(peer)? {
            all.extend(old.into_iter().filter(|a| !addrs.contains(a)));
        } else {
            let rows = self.store.scan_prefix(PEERS, b"")?;
            if rows.len() >= MAX_PEERS {
                let victim = rows
                    .iter()
                    .filter_map(|(k, v)| {
                        let p = PeerId::from_bytes(k).ok()?;
                        let last = decode_value(PEERS, FORMAT, v)
                            .ok()
                            .and_then(decode_addrs)
                            .map_or(0, |(l, _)| l);
                        Some((score(&p), last, k))
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                match victim {
                    Some((s, _, k)) if s <= score(peer) => {
                        self.store.remove(PEERS, k)?;
                    }
                    _ => return Ok(()),
                }
            }
        }
        all.truncate(MAX_ADDRS);
        self.store.insert(
            PEERS,
            &key,
            &encode_value(FORMAT, &encode_addrs(unix_now(), &all)),
        )
    }

    fn addrs_of(&self, peer: &PeerId) -> Result<Option<(u64, Vec<Multiaddr>)>> {
        match self.store.get(PEERS, &peer.to_bytes())? {
            None => Ok(None),
            Some(v) => {
                let b = decode_value(PEERS, FORMAT, &v)?;
                decode_addrs(b)
                    .map(Some)
                    .ok_or_else(|| corrupt(PEERS, format!("bad entry for {peer}")))
            }
        }
    }

    /// Every known peer and its addresses; undecodable entries are skipped with a warning.
    pub fn known(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix(PEERS, b"")? {
            let entry = PeerId::from_bytes(&k)
                .ok()
                .zip(decode_value(PEERS, FORMAT, &v).ok().and_then(decode_addrs));
            match entry {
                Some((p, (_, addrs))) => out.push((p, addrs)),
                None => tracing::warn!(tree = PEERS, "skipping a corrupt peer book entry"),
            }
        }
        Ok(out)
    }

    /// Forgets a peer (another genesis, or banned).
    pub fn forget(&self, peer: &PeerId) -> Result<()> {
        self.store.remove(PEERS, &peer.to_bytes()).map(|_| ())
    }

    /// Bans `peer` until `until_unix`.
    pub fn ban(&self, peer: &PeerId, until_unix: u64, reason: &str) -> Result<()> {
        let mut v = until_unix.to_be_bytes().to_vec();
        v.extend_from_slice(reason.as_bytes());
        self.store
            .insert(BANS, &peer.to_bytes(), &encode_value(FORMAT, &v))?;
        self.store.flush().map(|_| ())
    }

    /// Bans address `ip` until `until_unix`.
    pub fn ban_ip(&self, ip: &std::net::IpAddr, until_unix: u64, reason: &str) -> Result<()> {
        let mut v = until_unix.to_be_bytes().to_vec();
        v.extend_from_slice(reason.as_bytes());
        self.store
            .insert(IP_BANS, ip.to_string().as_bytes(), &encode_value(FORMAT, &v))?;
        self.store.flush().map(|_| ())
    }

    /// Lifts an address ban; false when there was none.
    pub fn unban_ip(&self, ip: &std::net::IpAddr) -> Result<bool> {
        let had = self.store.remove(IP_BANS, ip.to_string().as_bytes())?;
        self.store.flush()?;
        Ok(had)
    }

    /// Address bans in force, as [`Ban`]s whose `peer` is `ip:ADDRESS`.
    pub fn ip_bans(&self) -> Result<Vec<(std::net::IpAddr, Ban)>> {
        let now = unix_now();
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix(IP_BANS, b"")? {
            let ip = std::str::from_utf8(&k).ok().and_then(|s| s.parse().ok());
            let b = decode_value(IP_BANS, FORMAT, &v)?;
            let until = b.get(..8).and_then(|x| x.try_into().ok()).map(u64::from_be_bytes);
            let (Some(ip), Some(until)) = (ip, until) else {
                tracing::warn!(tree = IP_BANS, "skipping a corrupt address ban");
                continue;
            };
            if until <= now {
                self.store.remove(IP_BANS, &k)?;
                continue;
            }
            out.push((
                ip,
                Ban {
                    peer: format!("ip:{ip}"),
                    until_unix: until,
                    reason: String::from_utf8_lossy(&b[8..]).into_owned(),
                },
            ));
        }
        Ok(out)
    }

    /// Lifts a ban; false when there was none.
    pub fn unban(&self, peer: &PeerId) -> Result<bool> {
        let had = self.store.remove(BANS, &peer.to_bytes())?;
        self.store.flush()?;
        Ok(had)
    }

    /// Bans in force (expired ones are removed).
    pub fn bans(&self) -> Result<Vec<Ban>> {
        let now = unix_now();
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix(BANS, b"")? {
            let Ok(peer) = PeerId::from_bytes(&k) else {
                tracing::warn!(tree = BANS, "skipping a corrupt ban entry");
                continue;
            };
            let b = decode_value(BANS, FORMAT, &v)?;
            let until = b
                .get(..8)
                .and_then(|x| x.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(BANS, format!("bad ban of {peer}")))?;
            if until <= now {
                self.store.remove(BANS, &k)?;
                continue;
            }
            out.push(Ban {
                peer: peer.to_string(),
                until_unix: until,
                reason: String::from_utf8_lossy(&b[8..]).into_owned(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{open_node_db, OpenMode, StoreOptions};

    fn book() -> (tempfile::TempDir, PeerBook) {
        let dir = tempfile::tempdir().unwrap();
        let g = vigil_genesis::Genesis::load("dev").unwrap();
        let db = open_node_db(
            &dir.path().join("db"),
            g.hash(),
            OpenMode::Create,
            &StoreOptions::default(),
        )
        .unwrap();
        (dir, PeerBook::new(db))
    }

    #[test]
    fn addresses_round_trip_newest_first_and_bounded() {
        let (_d, b) = book();
        let p = PeerId::random();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let c: Multiaddr = "/ip4/127.0.0.1/udp/2/quic-v1".parse().unwrap();
        b.remember(&p, std::slice::from_ref(&a), |_| 0.0).unwrap();
        b.remember(&p, std::slice::from_ref(&c), |_| 0.0).unwrap();
        assert_eq!(b.known().unwrap(), vec![(p, vec![c.clone(), a.clone()])]);
        let many: Vec<Multiaddr> = (3..20)
            .map(|i| format!("/ip4/127.0.0.1/tcp/{i}").parse().unwrap())
            .collect();
        b.remember(&p, &many, |_| 0.0).unwrap();
        assert_eq!(b.known().unwrap()[0].1.len(), MAX_ADDRS);
        b.forget(&p).unwrap();
        assert!(b.known().unwrap().is_empty());
    }

    #[test]
    fn a_full_book_evicts_the_worst_scored_then_the_longest_unseen_never_a_better_peer() {
        let (_d, b) = book();
        let a: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let good = PeerId::random();
        b.remember(&good, std::slice::from_ref(&a), |_| 0.0).unwrap();
        let bad = PeerId::random();
        b.remember(&bad, std::slice::from_ref(&a), |_| 0.0).unwrap();
        for _ in 2..MAX_PEERS {
            b.remember(&PeerId::random(), std::slice::from_ref(&a), |_| 0.0)
                .unwrap();
        }
        let score = |p: &PeerId| match p {
            p if *p == good => 10.0,
            p if *p == bad => -30.0,
            _ => 0.0,
        };
        // A newcomer takes the place of the worst-scored peer.
        let newcomer = PeerId::random();
        b.remember(&newcomer, std::slice::from_ref(&a), score).unwrap();
        let known: Vec<PeerId> = b.known().unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(known.len(), MAX_PEERS);
        assert!(known.contains(&newcomer) && known.contains(&good) && !known.contains(&bad));
        // A newcomer worse than everyone in the book is not taken.
        let worse = PeerId::random();
        b.remember(&worse, std::slice::from_ref(&a), |p| {
            if *p == worse {
                -40.0
            } else {
                0.0
            }
        })
        .unwrap();
        assert!(!b.known().unwrap().iter().any(|(p, _)| *p == worse));
    }

    #[test]
    fn bans_expire_and_unban() {
        let (_d, b) = book();
        let (p, q) = (PeerId::random(), PeerId::random());
        b.ban(&p, unix_now() + 100, "malformed frames").unwrap();
        b.ban(&q, unix_now() - 1, "old").unwrap();
        let bans = b.bans().unwrap();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].peer, p.to_string());
        assert_eq!(bans[0].reason, "malformed frames");
        assert!(b.unban(&p).unwrap());
        assert!(!b.unban(&p).unwrap());
        assert!(b.bans().unwrap().is_empty());
    }

    #[test]
    fn corrupt_entries_are_errors_not_panics() {
        for n in 0..20 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            let _ = decode_addrs(&bytes);
        }
        assert!(decode_addrs(&encode_addrs(5, &[])).is_some());
    }
}
