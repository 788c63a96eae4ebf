//! The adapter end to end on a real anvil: two [`EvmChannels`] joined by a
//! direct pipe in place of libp2p (the node tests run them over libp2p).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use vigil_layer2::evm::{Event, EventSink, EvmChannels, EvmConfig, Transport};
use vigil_layer2::{Account, ChannelState, CloseMode, Layer2Adapter, Layer2Error, Ledger, OpenRequest};

use super::*;

/// The other side's `handle`, or nothing when cut.
#[derive(Debug, Default)]
struct Pipe {
    to: OnceLock<Arc<EvmChannels>>,
    from: String,
    cut: AtomicBool,
}

#[async_trait::async_trait]
impl Transport for Pipe {
    async fn request(&self, _peer: &str, frame: Vec<u8>) -> Result<Vec<u8>, String> {
        if self.cut.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return Err("cut".into());
        }
        Ok(self.to.get().expect("wired").handle(&self.from, &frame).await)
    }
}

#[derive(Debug, Default)]
struct Log(Mutex<Vec<Event>>);

impl EventSink for Log {
    fn emit(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

impl Log {
    fn kinds(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(|e| e.kind).collect()
    }
}

struct Side {
    ch: Arc<EvmChannels>,
    pipe: Arc<Pipe>,
    log: Arc<Log>,
    addr: Address,
    paused: Arc<AtomicBool>,
}

async fn side(url: &str, contract: Address, i: usize, dir: &std::path::Path, name: &str) -> Side {
    let account = Account::from_bytes(key(i).to_bytes().as_slice()).unwrap();
    let pipe = Arc::new(Pipe {
        from: name.into(),
        ..Pipe::default()
    });
    let log = Arc::new(Log::default());
    let cfg = EvmConfig {
        rpc_url: url.into(),
        chain_id: 31337,
        contract,
        dir: dir.join(name),
        max_join_deposit: 5 * ETH,
        request_timeout: Duration::from_secs(2),
    };
    let addr = account.address();
    let paused = Arc::new(AtomicBool::new(false));
    let ch = EvmChannels::open(cfg, account, pipe.clone(), log.clone(), paused.clone())
        .await
        .unwrap();
    Side {
        ch,
        pipe,
        log,
        addr,
        paused,
    }
}

async fn pair(url: &str, contract: Address, dir: &std::path::Path) -> (Side, Side) {
    pair_on(url, url, contract, dir).await
}

/// A and B reaching the chain at different URLs (B through a proxy).
async fn pair_on(url_a: &str, url_b: &str, contract: Address, dir: &std::path::Path) -> (Side, Side) {
    let a = side(url_a, contract, 1, dir, "A").await;
    let b = side(url_b, contract, 2, dir, "B").await;
    a.pipe.to.set(b.ch.clone()).unwrap();
    b.pipe.to.set(a.ch.clone()).unwrap();
    (a, b)
}

/// A opens a 1 ETH channel with B and pays it `n` times 0.1 ETH; the
/// channel id, and A's co-signed state 1 (old by then) as read from A's
/// ledger, with A's settlement account ready to post it.
async fn paid_then_cheat(
    a: &Side,
    dir: &std::path::Path,
    url: &str,
    contract: Address,
    n: usize,
) -> (
    String,
    alloy::primitives::B256,
    vigil_layer2::SignedState,
    vigil_layer2::evm::Chain,
) {
    let id =
        a.ch.open(OpenRequest {
            peer: "B".into(),
            deposit: ETH,
            ask: 0,
        })
        .await
        .unwrap()
        .id;
    for _ in 0..n {
        a.ch.pay(&id, ETH / 10).await.unwrap();
    }
    let cid: alloy::primitives::B256 = id.parse().unwrap();
    let records = Ledger::read_all(&dir.join("A").join(format!("{cid:x}.ledger"))).unwrap();
    let old = records
        .iter()
        .find_map(|e| e.signed().filter(|s| s.state.nonce == 1))
        .unwrap();
    let account = Account::from_bytes(key(1).to_bytes().as_slice()).unwrap();
    let cheat = vigil_layer2::evm::Chain::connect(url, &account, contract).unwrap();
    (id, cid, old, cheat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_both_ways_close_cooperatively_and_an_old_state_is_disputed_through_a_reorg() {
    let node = anvil().await;
    let p = provider(&node.1, key(0));
    let contract = *PaymentChannel::deploy(p.clone(), WINDOW).await.unwrap().address();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&node.1, contract, dir.path()).await;

    // Open: A deposits 3 ETH and asks B for 8; B puts in at most its limit, 5.
    let info =
        a.ch.open(OpenRequest {
            peer: "B".into(),
            deposit: 3 * ETH,
            ask: 8 * ETH,
        })
        .await
        .unwrap();
    assert_eq!(
        (info.state, info.ours, info.theirs),
        (ChannelState::Open, 3 * ETH, 5 * ETH)
    );
    let id = info.id.clone();
    assert_eq!(b.ch.channel(&id).await.unwrap().ours, 5 * ETH);

    // 200 payments each way, interleaved.
    for i in 0..200u128 {
        a.ch.pay(&id, 1000 + i).await.unwrap();
        b.ch.pay(&id, 10).await.unwrap();
    }
    let sent_by_a: u128 = (0..200u128).map(|i| 1000 + i).sum();
    let want_a = 3 * ETH - sent_by_a + 2000;
    let ia = a.ch.channel(&id).await.unwrap();
    let ib = b.ch.channel(&id).await.unwrap();
    assert_eq!((ia.ours, ia.nonce), (want_a, 400));
    assert_eq!((ib.ours, ib.theirs, ib.nonce), (8 * ETH - want_a, want_a, 400));

    // 150 each way at the same moment: turns alternate, nobody starves.
    let (ra, rb) = tokio::join!(
        async {
            for _ in 0..150 {
                a.ch.pay(&id, 7).await?;
            }
            Ok::<_, Layer2Error>(())
        },
        async {
            for _ in 0..150 {
                b.ch.pay(&id, 3).await?;
            }
            Ok::<_, Layer2Error>(())
        }
    );
    ra.unwrap();
    rb.unwrap();
    let want_a = want_a - 150 * 7 + 150 * 3;
    let ia = a.ch.channel(&id).await.unwrap();
    assert_eq!(ia.ours, want_a);
    assert_eq!(b.ch.channel(&id).await.unwrap().nonce, ia.nonce);

    // Bad input: more than the balance, nothing, an unknown channel.
    let e = b.ch.pay(&id, 100 * ETH).await.unwrap_err();
    assert!(matches!(e, Layer2Error::InsufficientBalance { .. }), "{e}");
    assert!(a.ch.pay(&id, 0).await.is_err());
    let unknown = format!("{:#x}", alloy::primitives::B256::repeat_byte(7));
    assert!(matches!(
        a.ch.pay(&unknown, 1).await.unwrap_err(),
        Layer2Error::UnknownChannel(_)
    ));
    assert!(a
        .ch
        .pay("0x12", 1)
        .await
        .unwrap_err()
        .to_string()
        .contains("64 hex digits"));

    // A hostile counterparty's frames, straight at B's handler: a state
    // signed by another key, one from a peer the channel is not with, one
    // that takes from B, garbage and an oversized frame. Each is refused
    // with why, and nothing changes.
    use vigil_layer2::wire::{Reply, Request};
    let before = b.ch.channel(&id).await.unwrap();
    let cid: alloy::primitives::B256 = id.parse().unwrap();
    let base = vigil_layer2::State {
        channelId: cid,
        nonce: before.nonce + 10,
        balanceA: before.theirs - 1,
        balanceB: before.ours + 1,
        isFinal: false,
    };
    let d = vigil_layer2::domain(31337, contract);
    let refused = |bytes: Vec<u8>| match Reply::decode(&bytes).unwrap() {
        Reply::Refused { reason, .. } => reason,
        other => panic!("not refused: {other:?}"),
    };
    let stranger = key(0);
    let frame = Request::Propose {
        sig: base.sign(&stranger, &d).unwrap(),
        state: base.clone(),
    }
    .encode();
    let why = refused(b.ch.handle("A", &frame).await);
    assert!(why.contains("not by"), "{why}");
    let good = Request::Propose {
        sig: base.sign(&key(1), &d).unwrap(),
        state: base.clone(),
    }
    .encode();
    let why = refused(b.ch.handle("C", &good).await);
    assert!(why.contains("not with C"), "{why}");
    let mut taking = base.clone();
    taking.balanceA += 2;
    taking.balanceB -= 2;
    let frame = Request::Propose {
        sig: taking.sign(&key(1), &d).unwrap(),
        state: taking,
    }
    .encode();
    let why = refused(b.ch.handle("A", &frame).await);
    assert!(why.contains("lowers this side's balance"), "{why}");
    assert!(refused(b.ch.handle("A", &[3, 1, 2]).await).contains("truncated"));
    assert!(refused(b.ch.handle("A", &[9; 5000]).await).contains("at most 1024"));
    assert_eq!(b.ch.channel(&id).await.unwrap(), before, "nothing changed");

    // pause:layer2 stops payments both ways (the watcher is shown below).
    b.paused.store(true, Ordering::Relaxed);
    assert!(matches!(b.ch.pay(&id, 1).await.unwrap_err(), Layer2Error::Paused));
    let e = a.ch.pay(&id, 1).await.unwrap_err().to_string();
    assert!(e.contains("paused"), "{e}");
    b.paused.store(false, Ordering::Relaxed);

    // A counterparty that stops answering: the payment fails, balances stay.
    b.pipe.cut.store(true, Ordering::Relaxed);
    a.pipe.cut.store(true, Ordering::Relaxed);
    let e = a.ch.pay(&id, 5).await.unwrap_err();
    assert!(matches!(e, Layer2Error::Unreachable(_)), "{e}");
    assert_eq!(a.ch.channel(&id).await.unwrap().ours, want_a);
    a.pipe.cut.store(false, Ordering::Relaxed);
    b.pipe.cut.store(false, Ordering::Relaxed);
    a.ch.pay(&id, 5).await.unwrap();
    let want_a = want_a - 5;

    // Cooperative close: the contract pays the co-signed balances.
    let (a0, b0) = (
        p.get_balance(a.addr).await.unwrap(),
        p.get_balance(b.addr).await.unwrap(),
    );
    let closed = a.ch.close(&id, CloseMode::Cooperative).await.unwrap();
    assert_eq!(closed.state, ChannelState::Closed);
    let gas_paid = |before: U256, after: U256, want: u128| {
        // A pays gas for the close; B pays none.
        let got = after + U256::from(ETH / 100) - before;
        assert!(
            got >= U256::from(want) && got <= U256::from(want + ETH / 100),
            "{got} vs {want}"
        );
    };
    gas_paid(a0, p.get_balance(a.addr).await.unwrap(), want_a);
    assert_eq!(
        p.get_balance(b.addr).await.unwrap() - b0,
        U256::from(8 * ETH - want_a)
    );
    assert!(a.log.kinds().contains(&"opened") && a.log.kinds().contains(&"closed"));
    assert!(b.log.kinds().contains(&"joined"));
    let h = p.get_block_number().await.unwrap();
    b.ch.on_head(h, true).await;
    assert_eq!(b.ch.channel(&id).await.unwrap().state, ChannelState::Closed);

    // A second channel: A pays B 5 times, then posts state 1 (an old one, good for A).
    let (id2, cid, old, cheat) = paid_then_cheat(&a, dir.path(), &node.1, contract, 5).await;
    cheat.close(&old).await.unwrap();
    // Paused, the watcher still defends the channel.
    b.paused.store(true, Ordering::Relaxed);
    let h = p.get_block_number().await.unwrap();
    b.ch.on_head(h, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let on = cheat.read(cid).await.unwrap();
    assert_eq!(on.nonce, 5, "B's watcher answered with its newest state");
    assert!(b.log.kinds().contains(&"disputed"));

    b.paused.store(false, Ordering::Relaxed);
    // A reorg drops the challenge: the watcher sends it again.
    p.raw_request::<_, ()>("anvil_reorg".into(), (1u64, Vec::<()>::new()))
        .await
        .unwrap();
    assert_eq!(
        cheat.read(cid).await.unwrap().nonce,
        1,
        "the reorg dropped the challenge"
    );
    // The watcher runs at every head; the resend lands within a few.
    let mut heads = 0;
    while cheat.read(cid).await.unwrap().nonce != 5 {
        heads += 1;
        assert!(heads <= 20, "not disputed again after the reorg");
        let h = p.get_block_number().await.unwrap();
        b.ch.on_head(h, true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // After the window the watcher finalizes; B is paid in full.
    let b0 = p.get_balance(b.addr).await.unwrap();
    p.raw_request::<_, ()>("anvil_mine".into(), (U256::from(WINDOW + 1),))
        .await
        .unwrap();
    let mut heads = 0;
    while cheat.read(cid).await.unwrap().status != 4 {
        heads += 1;
        assert!(heads <= 20, "not finalized");
        let h = p.get_block_number().await.unwrap();
        b.ch.on_head(h, true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = p.get_block_number().await.unwrap();
    a.ch.on_head(h, true).await;
    b.ch.on_head(h, true).await;
    let paid = p.get_balance(b.addr).await.unwrap() + U256::from(ETH / 100) - b0;
    assert!(
        paid >= U256::from(ETH / 2) && paid <= U256::from(ETH / 2 + ETH / 100),
        "{paid}"
    );
    assert_eq!(a.ch.channel(&id2).await.unwrap().state, ChannelState::Closed);
    assert_eq!(b.ch.channel(&id2).await.unwrap().state, ChannelState::Closed);
}

/// A TCP proxy to anvil that can be cut (connections refused, open ones
/// dropped): the settlement chain's outage as one node sees it.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn to(port: u16) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Self {
            port: l.local_addr().unwrap().port(),
            cut: Arc::default(),
            open: Arc::default(),
        };
        let (cut, open) = (me.cut.clone(), me.open.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                if cut.load(Ordering::Relaxed) {
                    continue; // dropped: the client sees the connection close
                }
                let t = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                open.lock().unwrap().push(t.abort_handle());
            }
        });
        me
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
        if cut {
            for t in self.open.lock().unwrap().drain(..) {
                t.abort();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_acts_in_time_after_an_outage_of_the_settlement_chain() {
    let node = anvil().await;
    let p = provider(&node.1, key(0));
    let contract = *PaymentChannel::deploy(p.clone(), WINDOW).await.unwrap().address();
    let anvil_port: u16 = node.1.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Proxy::to(anvil_port).await;
    let dir = tempfile::tempdir().unwrap();
    let via_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let (a, b) = pair_on(&node.1, &via_proxy, contract, dir.path()).await;
    let (id, cid, old, cheat) = paid_then_cheat(&a, dir.path(), &node.1, contract, 3).await;
    // B's chain goes dark just as A posts its old state; blocks go on.
    proxy.set_cut(true);
    cheat.close(&old).await.unwrap();
    p.raw_request::<_, ()>("anvil_mine".into(), (U256::from(2),))
        .await
        .unwrap();
    let h = p.get_block_number().await.unwrap();
    b.ch.on_head(h, true).await; // fails to read: logged, nothing else
    assert_eq!(cheat.read(cid).await.unwrap().nonce, 1);
    assert_eq!(b.ch.channel(&id).await.unwrap().state, ChannelState::Open);
    // The chain answers again, inside the window: the next head disputes.
    proxy.set_cut(false);
    let mut heads = 0;
    while cheat.read(cid).await.unwrap().nonce != 3 {
        heads += 1;
        assert!(heads <= 20, "not disputed after the outage");
        let h = p.get_block_number().await.unwrap();
        b.ch.on_head(h, true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on = cheat.read(cid).await.unwrap();
    let h = p.get_block_number().await.unwrap();
    assert!(
        h <= on.deadline,
        "disputed inside the window ({h} <= {})",
        on.deadline
    );
    assert_eq!(b.ch.channel(&id).await.unwrap().state, ChannelState::Closing);
    assert!(b.log.kinds().contains(&"disputed"));
}
