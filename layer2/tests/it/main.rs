//! The settlement contract driven from Rust on a real anvil (installed by
//! scripts/test; set VIGIL_ANVIL to use another): states signed with this
//! crate's EIP-712 code are what the contract accepts, and what it refuses.

mod channels;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::network::{Ethereum, EthereumWallet};
use alloy::primitives::U256;
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use vigil_layer2::contract::PaymentChannel;
use vigil_layer2::{channel_id, domain, State};

/// anvil's first three well-known accounts (funded with 10,000 ETH each).
const KEYS: [&str; 3] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];
pub(crate) const ETH: u128 = 1_000_000_000_000_000_000;
pub(crate) const WINDOW: u64 = 5;

fn anvil_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VIGIL_ANVIL") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        p.exists(),
        "anvil is not installed: run scripts/test (it installs it) or set VIGIL_ANVIL"
    );
    p
}

struct Anvil(Child, String);

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn anvil() -> Anvil {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(anvil_bin())
        .args(["--port", &port.to_string(), "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn anvil");
    let url = format!("http://127.0.0.1:{port}");
    let probe = ProviderBuilder::new().connect_http(url.parse().unwrap());
    let t0 = Instant::now();
    while probe.get_chain_id().await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "anvil did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Anvil(child, url)
}

pub(crate) fn key(i: usize) -> PrivateKeySigner {
    KEYS[i].parse().unwrap()
}

fn as_sol(s: &State) -> PaymentChannel::State {
    PaymentChannel::State {
        channelId: s.channelId,
        nonce: s.nonce,
        balanceA: s.balanceA,
        balanceB: s.balanceB,
        isFinal: s.isFinal,
    }
}

/// The receipt of a sent transaction, which must have succeeded.
async fn mined(
    sent: Result<PendingTransactionBuilder<Ethereum>, alloy::contract::Error>,
) -> TransactionReceipt {
    let r = sent.unwrap().get_receipt().await.unwrap();
    assert!(r.status(), "reverted: {r:?}");
    r
}

pub(crate) fn provider(url: &str, k: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::new()
        .wallet(EthereumWallet::from(k))
        .connect_http(url.parse().unwrap())
        .erased()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_signed_here_settle_on_chain_and_strangers_and_old_states_are_refused() {
    let node = anvil().await;
    let (ka, kb, kc) = (key(0), key(1), key(2));
    let (a, b) = (ka.address(), kb.address());
    let pa = provider(&node.1, ka.clone());
    let pb = provider(&node.1, kb.clone());
    let pc = provider(&node.1, kc.clone());
    let deployed = PaymentChannel::deploy(pa.clone(), WINDOW).await.unwrap();
    let addr = *deployed.address();
    let as_a = PaymentChannel::new(addr, pa.clone());
    let as_b = PaymentChannel::new(addr, pb.clone());
    let as_c = PaymentChannel::new(addr, pc.clone());
    let chain = pa.get_chain_id().await.unwrap();
    let d = domain(chain, addr);

    // Open (3 ETH) and join (1 ETH).
    let r = mined(as_a.open(b, 7).value(U256::from(3 * ETH)).send().await).await;
    let open_gas = r.gas_used;
    let id = channel_id(a, b, 7);
    mined(as_b.join(id).value(U256::from(ETH)).send().await).await;

    // The contract computes the digest this crate signs.
    let s1 = State {
        channelId: id,
        nonce: 1,
        balanceA: 2 * ETH,
        balanceB: 2 * ETH,
        isFinal: false,
    };
    let on_chain = as_c.digest(as_sol(&s1)).call().await.unwrap();
    assert_eq!(on_chain, s1.digest(&d));

    // A stranger cannot close with a valid co-signed state.
    let (sa, sb) = (s1.sign(&ka, &d).unwrap(), s1.sign(&kb, &d).unwrap());
    let err = as_c
        .close(as_sol(&s1), sa.to_vec().into(), sb.to_vec().into())
        .call()
        .await
        .unwrap_err();
    assert!(
        err.as_decoded_error::<PaymentChannel::NotAParty>().is_some(),
        "{err}"
    );

    // A posts the old state 1; a watcher (c) answers with state 2 in the window.
    let s2 = State {
        nonce: 2,
        balanceA: ETH / 2,
        balanceB: 3 * ETH + ETH / 2,
        ..s1.clone()
    };
    mined(
        as_a.close(as_sol(&s1), sa.to_vec().into(), sb.to_vec().into())
            .send()
            .await,
    )
    .await;
    let (s2a, s2b) = (s2.sign(&ka, &d).unwrap(), s2.sign(&kb, &d).unwrap());
    // Signatures swapped (b's as a's) are refused.
    let err = as_c
        .challenge(as_sol(&s2), s2b.to_vec().into(), s2a.to_vec().into())
        .call()
        .await
        .unwrap_err();
    assert!(
        err.as_decoded_error::<PaymentChannel::BadSignature>().is_some(),
        "{err}"
    );
    let r = mined(
        as_c.challenge(as_sol(&s2), s2a.to_vec().into(), s2b.to_vec().into())
            .send()
            .await,
    )
    .await;
    let dispute_gas = r.gas_used;
    // The old state cannot come back.
    let err = as_a
        .challenge(as_sol(&s1), sa.to_vec().into(), sb.to_vec().into())
        .call()
        .await
        .unwrap_err();
    let stale = err
        .as_decoded_error::<PaymentChannel::StaleState>()
        .expect("stale");
    assert_eq!((stale.posted, stale.got), (2, 1));
    // After the window, finalize pays the latest state.
    pa.raw_request::<_, ()>("anvil_mine".into(), (U256::from(WINDOW + 1),))
        .await
        .unwrap();
    let (a0, b0) = (pa.get_balance(a).await.unwrap(), pa.get_balance(b).await.unwrap());
    mined(as_c.finalize(id).send().await).await;
    assert_eq!(pa.get_balance(a).await.unwrap() - a0, U256::from(ETH / 2));
    assert_eq!(
        pa.get_balance(b).await.unwrap() - b0,
        U256::from(3 * ETH + ETH / 2)
    );

    // A second channel closed cooperatively with a final state.
    mined(as_a.open(b, 8).value(U256::from(ETH)).send().await).await;
    let id2 = channel_id(a, b, 8);
    mined(as_b.join(id2).send().await).await;
    let fin = State {
        channelId: id2,
        nonce: 1000,
        balanceA: ETH / 4,
        balanceB: 3 * ETH / 4,
        isFinal: true,
    };
    let (fa, fb) = (fin.sign(&ka, &d).unwrap(), fin.sign(&kb, &d).unwrap());
    let (a0, b0) = (pa.get_balance(a).await.unwrap(), pa.get_balance(b).await.unwrap());
    let r = mined(
        as_c.cooperativeClose(as_sol(&fin), fa.to_vec().into(), fb.to_vec().into())
            .send()
            .await,
    )
    .await;
    assert_eq!(pa.get_balance(a).await.unwrap() - a0, U256::from(ETH / 4));
    assert_eq!(pa.get_balance(b).await.unwrap() - b0, U256::from(3 * ETH / 4));
    assert_eq!(
        pa.get_balance(addr).await.unwrap(),
        U256::ZERO,
        "nothing left in the contract"
    );
    println!(
        "gas on anvil: open {open_gas}, dispute (challenge) {dispute_gas}, cooperative close {}",
        r.gas_used
    );
}
