//! Real libp2p swarms on 127.0.0.1 with ephemeral ports and real sled peer
//! books: mesh, gossip, genesis isolation, reconnection from the peer book,
//! scoring and bans of a hostile peer.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, request_response, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use tokio::task::JoinHandle;
use vigil_actors::net::codec::{Frame, FrameCodec, STATUS_MAX};
use vigil_actors::net::{NetSettings, Network};
use vigil_actors::store::{open_node_db, OpenMode, SledStore, StoreOptions};

use crate::util::wait_until;

struct Node {
    net: Network,
    task: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn genesis_hash(tag: u8) -> [u8; 32] {
    [tag; 32]
}

fn db(path: &Path, mode: OpenMode) -> SledStore {
    let g = vigil_genesis::Genesis::load("dev").unwrap();
    open_node_db(path, g.hash(), mode, &StoreOptions::default()).unwrap()
}

async fn start(key: Keypair, genesis: [u8; 32], store: SledStore, bootnodes: Vec<Multiaddr>) -> Node {
    let settings = NetSettings {
        bootnodes,
        reconnect_initial: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(2),
        ..NetSettings::default()
    };
    let net = Network::new(key, genesis, settings, store, None);
    let task = net.launch().await.expect("launch");
    Node { net, task }
}

/// A node with a new key and database `dir/name`.
async fn fresh(dir: &Path, name: &str, genesis: u8, bootnodes: Vec<Multiaddr>) -> Node {
    let store = db(&dir.join(name), OpenMode::Create);
    start(
        Keypair::generate_ed25519(),
        genesis_hash(genesis),
        store,
        bootnodes,
    )
    .await
}

/// Whether `n` counts `other` as a member (connected, status exchanged:
/// only then is it in the peer book and the routing table).
fn connected_to(n: &Node, other: &Node) -> bool {
    let id = other.net.peer_id().to_string();
    n.net.peers().iter().any(|p| p.peer_id == id && p.member)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_a_mesh_and_gossip_reaches_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..5 {
        let boot: Vec<Multiaddr> = nodes.iter().take(3).flat_map(|n| n.net.dial_addrs()).collect();
        nodes.push(fresh(dir.path(), &format!("n{i}"), 1, boot).await);
    }
    let took = wait_until("every node to have >= 3 peers", 30, || {
        nodes.iter().all(|n| n.net.peer_count() >= 3)
    })
    .await;
    eprintln!("mesh of 5 formed in {took:?}");
    // Gossip needs the peers' topic subscriptions; publish once they are known.
    let t0 = Instant::now();
    let id = loop {
        match nodes[0].net.probe().await {
            Ok(id) => break id,
            Err(e) if t0.elapsed() < Duration::from_secs(10) => {
                eprintln!("probe not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot publish a probe: {e}"),
        }
    };
    let took = wait_until("the probe to reach every node", 2, || {
        nodes[1..]
            .iter()
            .all(|n| n.net.probes().iter().any(|p| p.id == id))
    })
    .await;
    eprintln!("probe reached all 4 peers in {took:?}");
    let origin = nodes[0].net.peer_id().to_string();
    for n in &nodes[1..] {
        let p = n.net.probes().into_iter().find(|p| p.id == id).unwrap();
        assert_eq!(p.origin, origin, "the probe names its publisher");
        assert!(p.received_at_us >= p.sent_at_us);
    }
    let peers = nodes[0].net.peers();
    assert!(peers
        .iter()
        .all(|p| p.agent.as_deref().unwrap_or("").starts_with("vigil/")));
    assert!(peers
        .iter()
        .all(|p| p.protocols.iter().any(|x| x.ends_with("/status/1"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = fresh(dir.path(), "a", 1, vec![]).await;
    let b = fresh(dir.path(), "b", 1, a.net.dial_addrs()).await;
    wait_until("a and b to connect", 15, || connected_to(&a, &b)).await;
    let mut boot = a.net.dial_addrs();
    boot.extend(b.net.dial_addrs());
    let x = fresh(dir.path(), "x", 2, boot).await;
    // x dials both (it is told their addresses) and is dropped at identify; it keeps retrying with backoff.
    let xid = x.net.peer_id().to_string();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        for n in [&a, &b] {
            assert!(
                !n.net.peers().iter().any(|p| p.peer_id == xid && p.member),
                "x was accepted"
            );
        }
        assert_eq!(x.net.peer_count(), 0, "x accepted a peer of another genesis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected_to(&a, &b), "the good peers stay connected");
    assert_ne!(a.net.names().g8, x.net.names().g8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_reconnects_from_its_peer_book_with_bootnodes_down() {
    let dir = tempfile::tempdir().unwrap();
    let boot = fresh(dir.path(), "boot", 1, vec![]).await;
    let c = fresh(dir.path(), "c", 1, boot.net.dial_addrs()).await;
    let b_key = Keypair::generate_ed25519();
    let b_path = dir.path().join("b");
    let b = start(
        b_key.clone(),
        genesis_hash(1),
        db(&b_path, OpenMode::Create),
        boot.net.dial_addrs(),
    )
    .await;
    // b meets c through the DHT (the bootnode knows both).
    wait_until("b to find c through the DHT", 30, || connected_to(&b, &c)).await;
    let boot_addrs = boot.net.dial_addrs();
    drop(boot);
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = start(
        b_key,
        genesis_hash(1),
        db(&b_path, OpenMode::Existing),
        boot_addrs,
    )
    .await;
    let took = wait_until("the restarted b to reconnect to c from its peer book", 20, || {
        connected_to(&b, &c)
    })
    .await;
    eprintln!("reconnected from the peer book in {took:?}");
}

/// A hand-built peer speaking the status protocol with garbage.
async fn hostile(
    key: Keypair,
    target: Multiaddr,
    protocol: StreamProtocol,
    frames: Vec<Vec<u8>>,
) -> (PeerId, usize) {
    let codec: FrameCodec<Vec<u8>, Vec<u8>> = FrameCodec::new(1 << 20, 1 << 20);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                codec,
                [(protocol, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let me = *swarm.local_peer_id();
    let (_, target_id) = {
        let mut a = target.clone();
        match a.pop() {
            Some(libp2p::multiaddr::Protocol::P2p(id)) => (a, id),
            _ => panic!("target without /p2p"),
        }
    };
    swarm.dial(target.clone()).unwrap();
    let mut failures = 0;
    let mut sent = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    let mut frames = frames.into_iter().peekable();
    let mut redial = tokio::time::interval(Duration::from_millis(200));
    // One bad frame at a time; when the node disconnects us for our score, come back.
    let mut in_flight = false;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = redial.tick() => {
                if frames.peek().is_none() && !in_flight {
                    break;
                }
                if !swarm.is_connected(&target_id) {
                    let _ = swarm.dial(target.clone());
                }
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { .. } if !in_flight => {
                    if let Some(f) = frames.next() {
                        swarm.behaviour_mut().send_request(&target_id, Frame::Valid(f));
                        sent += 1;
                        in_flight = true;
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. })
                | SwarmEvent::Behaviour(request_response::Event::Message { .. }) => {
                    failures += 1;
                    in_flight = false;
                    if swarm.is_connected(&target_id) {
                        if let Some(f) = frames.next() {
                            swarm.behaviour_mut().send_request(&target_id, Frame::Valid(f));
                            sent += 1;
                            in_flight = true;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    eprintln!("hostile peer sent {sent} bad frames, {failures} failed");
    (me, sent)
}

async fn hostile_again(target: Multiaddr, protocol: StreamProtocol, key: Keypair) {
    loop {
        hostile(key.clone(), target.clone(), protocol.clone(), vec![vec![1]]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_malformed_and_oversized_frames_is_banned_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n");
    let key = Keypair::generate_ed25519();
    let n = start(key.clone(), genesis_hash(1), db(&path, OpenMode::Create), vec![]).await;
    let target = n.net.dial_addrs()[0].clone();
    let mut frames = Vec::new();
    for i in 0..8 {
        frames.push(if i % 2 == 0 {
            vec![0xff; 10] // not a status frame
        } else {
            vec![0; STATUS_MAX + 1] // over the limit
        });
    }
    let hkey = Keypair::generate_ed25519();
    let (hid, _) = hostile(hkey.clone(), target.clone(), n.net.names().status.clone(), frames).await;
    wait_until("the hostile peer to be banned", 10, || {
        n.net.bans().unwrap().iter().any(|b| b.peer == hid.to_string())
    })
    .await;
    let ban = n
        .net
        .bans()
        .unwrap()
        .into_iter()
        .find(|b| b.peer == hid.to_string())
        .unwrap();
    assert!(ban.reason.contains("score"), "reason: {}", ban.reason);
    assert!(!n.net.peers().iter().any(|p| p.peer_id == hid.to_string()));
    // Restart on the same database: the ban is still there and enforced.
    drop(n);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = start(key, genesis_hash(1), db(&path, OpenMode::Existing), vec![]).await;
    assert!(
        n.net.bans().unwrap().iter().any(|b| b.peer == hid.to_string()),
        "the ban did not survive a restart"
    );
    // The banned peer comes back (same key): it is never let in.
    let again = tokio::spawn(hostile_again(
        n.net.dial_addrs()[0].clone(),
        n.net.names().status.clone(),
        hkey,
    ));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        assert!(
            !n.net.peers().iter().any(|p| p.peer_id == hid.to_string()),
            "a banned peer got in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    again.abort();
    // Unbanning by the operator works and resets the score.
    assert!(n.net.unban(hid).await.unwrap());
    assert!(n.net.bans().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let quic = |store| {
        let settings = NetSettings {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
            ..NetSettings::default()
        };
        Network::new(
            Keypair::generate_ed25519(),
            genesis_hash(1),
            settings,
            store,
            None,
        )
    };
    let a = quic(db(&dir.path().join("a"), OpenMode::Create));
    let ta = a.launch().await.unwrap();
    assert!(a.dial_addrs()[0].to_string().contains("/quic-v1/p2p/"));
    let b = quic(db(&dir.path().join("b"), OpenMode::Create));
    let tb = b.launch().await.unwrap();
    b.dial(a.dial_addrs()[0].clone()).await.unwrap();
    let (a, b) = (Node { net: a, task: ta }, Node { net: b, task: tb });
    wait_until("a QUIC connection", 15, || {
        connected_to(&a, &b) && connected_to(&b, &a)
    })
    .await;
    assert!(a.net.peers()[0].addresses[0].contains("quic-v1"));
}
