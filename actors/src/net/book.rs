//! The persisted peer book (`net/peers`: addresses of peers this node spoke
//! to, so a restart reconnects even when every bootnode is down) and the ban
//! list (`net/bans`: bans survive restarts).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

use crate::store::{decode_value, encode_value, SledStore, Store};
use crate::{Error, Result};

const PEERS: &str = "net/peers";
const BANS: &str = "net/bans";
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
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

    /// Records addresses that reached `peer` (newest first, at most 8).
    pub fn remember(&self, peer: &PeerId, addrs: &[Multiaddr]) -> Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        let key = peer.to_bytes();
        let mut all: Vec<Multiaddr> = addrs.to_vec();
        if let Some((_, old)) = self.addrs_of(peer)? {
            all.extend(old.into_iter().filter(|a| !addrs.contains(a)));
        } else if self.store.scan_prefix(PEERS, b"")?.len() >= MAX_PEERS {
            return Ok(());
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
        b.remember(&p, std::slice::from_ref(&a)).unwrap();
        b.remember(&p, std::slice::from_ref(&c)).unwrap();
        assert_eq!(b.known().unwrap(), vec![(p, vec![c.clone(), a.clone()])]);
        let many: Vec<Multiaddr> = (3..20)
            .map(|i| format!("/ip4/127.0.0.1/tcp/{i}").parse().unwrap())
            .collect();
        b.remember(&p, &many).unwrap();
        assert_eq!(b.known().unwrap()[0].1.len(), MAX_ADDRS);
        b.forget(&p).unwrap();
        assert!(b.known().unwrap().is_empty());
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
