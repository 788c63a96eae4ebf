//! The hostile clients of the flood, each a loop until `stop`: new
//! identities as the old ones get banned or cut off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use libp2p::{Multiaddr, PeerId};
use vigil_actors::challenge::attest::{Attestation, TOPIC as ATTEST_TOPIC};
use vigil_actors::challenge::ChallengeResult;
use vigil_genesis::Genesis;
use vigil_protocols::availability::challenge::Request;
use vigil_testnet::adversary::{Adversary, RawProtocol};

/// What the hostile clients did.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Identities made.
    pub identities: AtomicU64,
    /// Raw garbage and oversized frames sent.
    pub raw_frames: AtomicU64,
    /// Audit requests sent.
    pub audits: AtomicU64,
    /// Range syncs sent.
    pub syncs: AtomicU64,
    /// Attestations gossiped.
    pub attestations: AtomicU64,
    /// Announcements gossiped.
    pub announcements: AtomicU64,
    /// Bad bus hellos.
    pub bad_hellos: AtomicU64,
}

/// Where and what to attack.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub genesis: Genesis,
    pub addr: Multiaddr,
    pub peer: PeerId,
    pub replica_root: [u8; 32],
    pub bus_url: String,
    pub head: Arc<AtomicU64>,
}

/// A fresh identity connected to the target, or `None` once `stop` is set.
async fn identity(t: &Target, stop: &AtomicBool, n: &Counts) -> Option<Adversary> {
    while !stop.load(Ordering::Relaxed) {
        let Ok(a) = Adversary::join(&t.genesis, vec![t.addr.clone()]).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        n.identities.fetch_add(1, Ordering::Relaxed);
        for _ in 0..50 {
            if a.connected() > 0 {
                return Some(a);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    None
}

/// Garbage and oversized frames on every vigil protocol.
pub(super) async fn garbage(t: Target, stop: Arc<AtomicBool>, n: Arc<Counts>) {
    while let Some(a) = identity(&t, &stop, &n).await {
        while a.connected() > 0 && !stop.load(Ordering::Relaxed) {
            let sends = RawProtocol::ALL.iter().flat_map(|p| {
                let garbage: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
                let over = vec![0xAB; p.request_max() + 1];
                [(*p, garbage), (*p, over)]
            });
            let futs: Vec<_> = sends.map(|(p, body)| a.send_raw(t.peer, p, body)).collect();
            n.raw_frames.fetch_add(futs.len() as u64, Ordering::Relaxed);
            join_all(futs).await;
        }
    }
}

/// Audits and range syncs as fast as it can ask.
pub(super) async fn work(t: Target, stop: Arc<AtomicBool>, n: Arc<Counts>) {
    while let Some(a) = identity(&t, &stop, &n).await {
        while a.connected() > 0 && !stop.load(Ordering::Relaxed) {
            let audits = (0..16u64).map(|i| {
                a.ask(
                    t.peer,
                    Request::Audit {
                        replica_root: t.replica_root,
                        index: i,
                    },
                )
            });
            let syncs = (0..16).map(|_| a.fetch_epochs_from(t.peer, 1));
            n.audits.fetch_add(16, Ordering::Relaxed);
            n.syncs.fetch_add(16, Ordering::Relaxed);
            futures::join!(join_all(audits), join_all(syncs));
        }
    }
}

/// `total` attestations with every field at its limit, from one identity
/// after another (each may record 64 per epoch; the rest is ignored).
pub(super) async fn attestations(t: Target, total: u64, stop: Arc<AtomicBool>, n: Arc<Counts>) {
    while let Some(a) = identity(&t, &stop, &n).await {
        while a.connected() > 0 && !stop.load(Ordering::Relaxed) {
            let sent = n.attestations.load(Ordering::Relaxed);
            if sent >= total {
                return;
            }
            let r = ChallengeResult {
                peer: String::new(),
                dataset: format!("{sent:064x}"),
                epoch: t.head.load(Ordering::Relaxed),
                outcome: "audit_failed",
                detail: Some("x".repeat(vigil_actors::challenge::attest::MAX_DETAIL)),
                latency_ms: 1.0,
                ping_ms: None,
                allowance_ms: 0.0,
                proof_bytes: 0,
            };
            let Ok(att) = Attestation::sign(a.key(), PeerId::random(), &r) else {
                return;
            };
            if a.publish(ATTEST_TOPIC, att.encode()).await.is_err() {
                break;
            }
            n.attestations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Announcements in bulk (datasets it does not store: it fails their
/// challenges and is banned; the next identity goes on).
pub(super) async fn announcements(t: Target, stop: Arc<AtomicBool>, n: Arc<Counts>) {
    while let Some(a) = identity(&t, &stop, &n).await {
        let mut i = 0u32;
        while a.connected() > 0 && !stop.load(Ordering::Relaxed) && i < 400 {
            let mut rp = [0x5Au8; 32];
            rp[..4].copy_from_slice(&i.to_be_bytes());
            rp[4..12].copy_from_slice(&rand::random::<u64>().to_be_bytes());
            if a.announce(rand::random(), rp, 300_000).await.is_err() {
                break;
            }
            n.announcements.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        while a.connected() > 0 && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Bus hellos with a wrong token, one after another.
pub(super) async fn bad_hellos(t: Target, stop: Arc<AtomicBool>, n: Arc<Counts>) {
    while !stop.load(Ordering::Relaxed) {
        let _ = crate::bus::BusClient::connect(&t.bus_url, "intruder", "guess").await;
        n.bad_hellos.fetch_add(1, Ordering::Relaxed);
    }
}

/// `count` TCP connections to `addr`'s port, held until `stop` (the node
/// refuses what is over its pending and per-address limits).
pub(super) fn hold_connections(
    port: u16,
    count: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..count {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(s) =
                std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
            {
                held.push(s);
            }
        }
        let opened = held.len();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        opened
    })
}
