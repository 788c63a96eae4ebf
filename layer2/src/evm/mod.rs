//! The EVM payment channel: the first [`Layer2Adapter`].
//!
//! Two vigil nodes lock deposits in the settlement contract, then pay each
//! other off chain by co-signing EIP-712 states over
//! `/vigil/<g8>/channel/1` ([`crate::wire`]); either may close on chain at
//! any time with the newest state both signed, and the watcher
//! ([`EvmChannels::on_head`]) answers an old state posted by the other side
//! inside the challenge window.
//!
//! Everything this node signs is in the channel's [`Ledger`] (fsynced)
//! before the signature leaves the node; the channel's life (opening, open,
//! closing, closed) is in [`meta`]. After a crash both are read back and the
//! channel goes on.

mod batch;
mod chain;
pub mod meta;
mod pay;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::sol_types::Eip712Domain;
use serde::Serialize;
use serde_json::json;

pub use chain::{deploy, status, Chain, OnChain};
use meta::Meta;

use crate::adapter::{AdapterStatus, ChannelInfo, ChannelState, CloseMode, OpenRequest, Payment};
use crate::state::{channel_id, domain, SignedState, State};
use crate::wire::{Reply, Request};
use crate::{Account, Layer2Adapter, Layer2Error, Ledger};

/// The adapter's kind, as channels show it.
pub const KIND: &str = "evm-channel";

/// Sends a channel-protocol frame to a peer and returns its answer (the
/// node's libp2p network; a direct pipe in tests).
#[async_trait::async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug + 'static {
    /// One request to `peer` (a peer id), one reply.
    async fn request(&self, peer: &str, frame: Vec<u8>) -> Result<Vec<u8>, String>;
}

/// Something that happened to a channel: opened, joined, closing, disputed,
/// closed. The node audits each and publishes it on `layer2.events`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: &'static str,
    /// The channel.
    pub channel: String,
    /// The counterparty.
    pub peer: String,
    /// Facts (nonces, balances, gas, transaction).
    pub detail: serde_json::Value,
}

/// Where events go.
pub trait EventSink: Send + Sync + std::fmt::Debug + 'static {
    /// Records `e` (must not block).
    fn emit(&self, e: Event);
}

/// The adapter's settings.
#[derive(Debug, Clone)]
pub struct EvmConfig {
    /// The settlement chain's JSON-RPC (HTTP).
    pub rpc_url: String,
    /// Its chain id.
    pub chain_id: u64,
    /// The `PaymentChannel` contract.
    pub contract: Address,
    /// Where channels and ledgers live.
    pub dir: PathBuf,
    /// The most this node deposits when a peer opens a channel with it.
    pub max_join_deposit: u128,
    /// How long a payment waits for the counterparty's signature.
    pub request_timeout: Duration,
}

/// One channel in memory: its facts, ledger and newest co-signed state.
#[derive(Debug)]
struct Chan {
    meta: Meta,
    ledger: Arc<std::sync::Mutex<Ledger>>,
    latest: Option<SignedState>,
    newest_signed: u64,
    watch: watch::Watch,
    /// The last proposal's round trip.
    rtt: Duration,
    /// Hold our next proposal until then: we just refused one of the
    /// counterparty's because ours was in flight, and it retries now.
    yield_until: Option<std::time::Instant>,
    /// Whether the newest co-signed state was our proposal: when both sides
    /// propose at once, the side that made the last payment yields, so
    /// turns alternate and neither starves.
    last_by_us: bool,
    /// The coalesced acknowledgement of our co-signed payments.
    ack: Arc<Ack>,
    /// Our newest proposal (signed and sent; co-signed or not).
    pending: Option<State>,
}

/// The newest co-signed nonce to acknowledge, and whether one is due.
#[derive(Debug, Default)]
struct Ack {
    pending: std::sync::atomic::AtomicBool,
    nonce: std::sync::atomic::AtomicU64,
}

impl Chan {
    /// Channel `meta` with its ledger under `dir`, resuming from the newest
    /// states in it (none for a new channel).
    fn open(dir: &std::path::Path, meta: Meta) -> Result<Self, Layer2Error> {
        let (ledger, cut) = Ledger::open(&meta::ledger_path(dir, meta.id))?;
        if cut > 0 {
            tracing::warn!(channel = %hex_id(meta.id), bytes = cut, "cut a torn last ledger record (a crash mid-write)");
        }
        Ok(Self {
            latest: ledger.latest_cosigned(meta.id),
            newest_signed: ledger.newest_signed(meta.id).unwrap_or(0),
            ledger: Arc::new(std::sync::Mutex::new(ledger)),
            watch: watch::Watch::default(),
            rtt: Duration::from_millis(5),
            yield_until: None,
            last_by_us: meta.ours_is_a,
            ack: Arc::default(),
            pending: None,
            meta,
        })
    }

    /// The newest co-signed state, or the deposits at nonce 0.
    fn base(&self) -> State {
        match &self.latest {
            Some(s) => s.state.clone(),
            None => State {
                channelId: self.meta.id,
                nonce: 0,
                balanceA: self.meta.deposit_a,
                balanceB: self.meta.deposit_b,
                isFinal: false,
            },
        }
    }

    fn ours(&self, s: &State) -> u128 {
        if self.meta.ours_is_a {
            s.balanceA
        } else {
            s.balanceB
        }
    }

    fn their_address(&self) -> Address {
        if self.meta.ours_is_a {
            self.meta.b
        } else {
            self.meta.a
        }
    }

    fn info(&self) -> ChannelInfo {
        let base = self.base();
        let ours = self.ours(&base);
        ChannelInfo {
            adapter: KIND.into(),
            id: hex_id(self.meta.id),
            peer: self.meta.peer.clone(),
            state: self.meta.state,
            nonce: base.nonce,
            ours,
            theirs: self.meta.capacity() - ours,
            capacity: self.meta.capacity(),
        }
    }

    fn wrong_state(&self, what: &'static str, needs: &'static str) -> Layer2Error {
        Layer2Error::WrongState {
            channel: hex_id(self.meta.id),
            state: self.meta.state,
            what,
            needs,
        }
    }
}

/// A channel and its two locks: `state` is held only briefly (never across
/// a network round trip, or two nodes paying each other at once would each
/// wait for the other's lock); `out` lets one own proposal at a time leave.
#[derive(Debug)]
struct Cell {
    state: tokio::sync::Mutex<Chan>,
    out: tokio::sync::Mutex<()>,
}

impl Cell {
    fn new(c: Chan) -> Self {
        Self {
            state: tokio::sync::Mutex::new(c),
            out: tokio::sync::Mutex::new(()),
        }
    }

    async fn lock(&self) -> tokio::sync::MutexGuard<'_, Chan> {
        self.state.lock().await
    }
}

type Shared = Arc<Cell>;

/// The EVM payment-channel adapter.
#[derive(Debug)]
pub struct EvmChannels {
    cfg: EvmConfig,
    account: Account,
    domain: Eip712Domain,
    chain: Chain,
    net: Arc<dyn Transport>,
    batcher: batch::Batcher,
    events: Arc<dyn EventSink>,
    paused: Arc<AtomicBool>,
    chans: RwLock<HashMap<B256, Shared>>,
    watching: AtomicBool,
}

fn lock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn hex_id(id: B256) -> String {
    format!("{id:#x}")
}

/// Parses a channel id: 0x and 64 hex digits.
pub fn parse_channel(s: &str) -> Result<B256, Layer2Error> {
    s.parse::<B256>().map_err(|_| {
        Layer2Error::Invalid(format!(
            "channel `{s}` is not a channel id: 0x and 64 hex digits (see layer2_channels)"
        ))
    })
}

impl EvmChannels {
    /// Opens the adapter: reads every channel and ledger under `cfg.dir`
    /// (creating it), and checks that the settlement chain answers with the
    /// configured chain id and has the contract deployed.
    pub async fn open(
        cfg: EvmConfig,
        account: Account,
        net: Arc<dyn Transport>,
        events: Arc<dyn EventSink>,
        paused: Arc<AtomicBool>,
    ) -> Result<Arc<Self>, Layer2Error> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| Layer2Error::Store(format!("{}: {e}", cfg.dir.display())))?;
        let chain = Chain::connect(&cfg.rpc_url, &account, cfg.contract)?;
        match chain.chain_id().await {
            Ok(id) if id != cfg.chain_id => {
                return Err(Layer2Error::Chain(format!(
                    "{} is chain {id}, not the configured {}: fix layer2's chain source",
                    cfg.rpc_url, cfg.chain_id
                )))
            }
            Ok(_) => {
                if !chain.has_code().await? {
                    return Err(Layer2Error::Chain(format!(
                        "no contract at {} on chain {}: deploy PaymentChannel (docs/layer2.md) and set layer2.contract",
                        cfg.contract, cfg.chain_id
                    )));
                }
            }
            // The chain may be down at start: the watcher catches up when it answers.
            Err(e) => tracing::warn!(error = %e, "the settlement chain does not answer yet"),
        }
        let mut chans = HashMap::new();
        for m in meta::load_all(&cfg.dir)? {
            chans.insert(m.id, Arc::new(Cell::new(Chan::open(&cfg.dir, m)?)));
        }
        let me = Arc::new(Self {
            domain: domain(cfg.chain_id, cfg.contract),
            cfg,
            account,
            chain,
            batcher: batch::Batcher::new(net.clone()),
            net,
            events,
            paused,
            chans: RwLock::new(chans),
            watching: AtomicBool::new(false),
        });
        me.publish_gauges().await;
        Ok(me)
    }

    /// This node's settlement account.
    pub fn address(&self) -> Address {
        self.account.address()
    }

    fn get(&self, id: B256) -> Result<Shared, Layer2Error> {
        lock(&self.chans)
            .get(&id)
            .cloned()
            .ok_or_else(|| Layer2Error::UnknownChannel(hex_id(id)))
    }

    fn all(&self) -> Vec<Shared> {
        lock(&self.chans).values().cloned().collect()
    }

    fn emit(&self, kind: &'static str, m: &Meta, detail: serde_json::Value) {
        tracing::info!(kind, channel = %hex_id(m.id), peer = %m.peer, %detail, "layer2 event");
        self.events.emit(Event {
            kind,
            channel: hex_id(m.id),
            peer: m.peer.clone(),
            detail,
        });
    }

    fn save(&self, m: &Meta) -> Result<(), Layer2Error> {
        meta::save(&self.cfg.dir, m)
    }

    fn insert(&self, m: Meta) -> Result<Shared, Layer2Error> {
        self.save(&m)?;
        let id = m.id;
        let c = Arc::new(Cell::new(Chan::open(&self.cfg.dir, m)?));
        self.chans
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, c.clone());
        Ok(c)
    }

    async fn ask(&self, peer: &str, req: Request, timeout: Duration) -> Result<Reply, Layer2Error> {
        self.batcher.ask(peer, req, timeout).await
    }

    /// Answers one channel-protocol frame from `peer`: a batch's messages
    /// are handled at once (each on its own task) and answered in order.
    pub async fn handle(self: &Arc<Self>, peer: &str, frame: &[u8]) -> Vec<u8> {
        let reply = match Request::decode(frame) {
            Err(e) => Reply::refused(format!("malformed request: {e}")),
            Ok(Request::Batch(items)) => {
                let tasks: Vec<_> = items
                    .into_iter()
                    .map(|req| {
                        let (me, peer) = (self.clone(), peer.to_owned());
                        tokio::spawn(async move { me.handle_one(&peer, req).await })
                    })
                    .collect();
                let mut replies = Vec::with_capacity(tasks.len());
                for t in tasks {
                    replies.push(t.await.unwrap_or_else(|e| Reply::refused(format!("failed: {e}"))));
                }
                Reply::Batch(replies)
            }
            Ok(req) => self.handle_one(peer, req).await,
        };
        reply.encode()
    }

    async fn handle_one(&self, peer: &str, req: Request) -> Reply {
        match req {
            Request::Batch(_) => Reply::refused("batches do not nest"),
            Request::Hello => Reply::Hello {
                address: self.address(),
                chain_id: self.cfg.chain_id,
                contract: self.cfg.contract,
            },
            Request::Join {
                channel,
                salt,
                opener,
                ask,
            } => self.on_join(peer, channel, salt, opener, ask).await,
            Request::Propose { state, sig } => self.on_propose(peer, state, sig).await,
            // The payer holds both signatures durably; this side held them already.
            Request::Ack { .. } => Reply::Done,
        }
    }

    async fn on_join(&self, peer: &str, id: B256, salt: u64, opener: Address, ask: u128) -> Reply {
        if self.paused.load(Ordering::Relaxed) {
            return Reply::refused("layer2 is paused on this node (pause:layer2)");
        }
        if let Ok(c) = self.get(id) {
            let c = c.lock().await;
            return match (c.meta.peer == peer, c.meta.state) {
                (true, ChannelState::Open) => Reply::Joined {
                    deposit: c.meta.deposit_b,
                },
                _ => Reply::refused(format!("channel {} exists here already", hex_id(id))),
            };
        }
        if channel_id(opener, self.address(), salt) != id {
            return Reply::refused("the channel id is not keccak256(opener, this node's address, salt)");
        }
        let on = match self.chain.read(id).await {
            Ok(on) => on,
            Err(e) => return Reply::refused(format!("cannot read the channel on chain: {e}")),
        };
        if on.status != status::OPENING || on.a != opener || on.b != self.address() {
            return Reply::refused(format!(
                "channel {} is not opening on chain between {opener} and {}",
                hex_id(id),
                self.address()
            ));
        }
        let deposit = ask.min(self.cfg.max_join_deposit);
        let m = Meta {
            id,
            peer: peer.to_owned(),
            a: opener,
            b: self.address(),
            ours_is_a: false,
            salt,
            deposit_a: on.deposit_a,
            deposit_b: deposit,
            state: ChannelState::Opening,
            final_nonce: None,
            paid: None,
        };
        // Remembered before the deposit leaves: a crash mid-join still knows the channel.
        let c = match self.insert(m) {
            Ok(c) => c,
            Err(e) => return Reply::refused(format!("cannot record the channel: {e}")),
        };
        let mut c = c.lock().await;
        match self.chain.join(id, deposit).await {
            Ok(gas) => {
                c.meta.state = ChannelState::Open;
                if let Err(e) = self.save(&c.meta) {
                    tracing::error!(error = %e, "cannot record a joined channel; the watcher will see it open");
                }
                self.emit(
                    "joined",
                    &c.meta,
                    json!({"deposit_a": on.deposit_a, "deposit_b": deposit, "gas": gas}),
                );
                drop(c);
                self.publish_gauges().await;
                Reply::Joined { deposit }
            }
            Err(e) => Reply::refused(format!("cannot join on chain: {e}")),
        }
    }

    /// Channels by state.
    async fn counts(&self) -> HashMap<ChannelState, usize> {
        let mut counts: HashMap<ChannelState, usize> = HashMap::new();
        for c in self.all() {
            *counts.entry(c.lock().await.meta.state).or_default() += 1;
        }
        counts
    }

    /// Marks `c` open with B's deposit and tells the node.
    fn opened(&self, c: &mut Chan, deposit_b: u128, detail: serde_json::Value) -> Result<(), Layer2Error> {
        c.meta.state = ChannelState::Open;
        c.meta.deposit_b = deposit_b;
        self.save(&c.meta)?;
        self.emit("opened", &c.meta, detail);
        Ok(())
    }

    async fn publish_gauges(&self) {
        let counts = self.counts().await;
        for s in [
            ChannelState::Opening,
            ChannelState::Open,
            ChannelState::Closing,
            ChannelState::Closed,
        ] {
            metrics::gauge!(crate::metrics::CHANNELS, "state" => s.to_string())
                .set(counts.get(&s).copied().unwrap_or(0) as f64);
        }
    }
}

#[async_trait::async_trait]
impl Layer2Adapter for EvmChannels {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn open(&self, req: OpenRequest) -> Result<ChannelInfo, Layer2Error> {
        if self.paused.load(Ordering::Relaxed) {
            return Err(Layer2Error::Paused);
        }
        if req.deposit == 0 && req.ask == 0 {
            return Err(Layer2Error::Invalid(
                "a channel with no deposit on either side can carry no payment: give deposit > 0".into(),
            ));
        }
        let hello = self
            .ask(&req.peer, Request::Hello, self.cfg.request_timeout)
            .await?;
        let Reply::Hello {
            address,
            chain_id,
            contract,
        } = hello
        else {
            return Err(Layer2Error::Invalid(format!(
                "{} answered hello with {hello:?}",
                req.peer
            )));
        };
        if chain_id != self.cfg.chain_id || contract != self.cfg.contract {
            return Err(Layer2Error::Invalid(format!(
                "{} settles on chain {chain_id} at {contract}; this node on chain {} at {}: both must use one deployment",
                req.peer, self.cfg.chain_id, self.cfg.contract
            )));
        }
        if address == self.address() {
            return Err(Layer2Error::Invalid(format!(
                "{} uses this node's own settlement account {address}: give each node its own account.key",
                req.peer
            )));
        }
        let salt: u64 = rand::random();
        let id = channel_id(self.address(), address, salt);
        let c = self.insert(Meta {
            id,
            peer: req.peer.clone(),
            a: self.address(),
            b: address,
            ours_is_a: true,
            salt,
            deposit_a: req.deposit,
            deposit_b: 0,
            state: ChannelState::Opening,
            final_nonce: None,
            paid: None,
        })?;
        let _out = c.out.lock().await;
        let gas = self.chain.open(address, salt, req.deposit).await?;
        self.publish_gauges().await;
        let join = Request::Join {
            channel: id,
            salt,
            opener: self.address(),
            ask: req.ask,
        };
        let joined = self.ask(&req.peer, join, self.cfg.request_timeout * 6).await;
        let mut c = c.lock().await;
        let why = match joined {
            Ok(Reply::Joined { .. }) => {
                let on = self.chain.read(id).await?;
                if on.status == status::OPEN {
                    let detail =
                        json!({"deposit_a": c.meta.deposit_a, "deposit_b": on.deposit_b, "gas": gas});
                    self.opened(&mut c, on.deposit_b, detail)?;
                    let info = c.info();
                    drop(c);
                    self.publish_gauges().await;
                    return Ok(info);
                }
                format!(
                    "it says it joined, but the channel is not open on chain (status {})",
                    on.status
                )
            }
            Ok(Reply::Refused { reason, .. }) => reason,
            Ok(other) => format!("unexpected answer {other:?}"),
            Err(e) => e.to_string(),
        };
        Err(Layer2Error::Invalid(format!(
            "channel {} is open on chain with your deposit, but {} did not join: {why}. \
             `layer2_close` on it takes the deposit back",
            hex_id(id),
            req.peer
        )))
    }

    async fn pay(&self, channel: &str, amount: u128) -> Result<Payment, Layer2Error> {
        self.pay_id(parse_channel(channel)?, amount).await
    }

    async fn close(&self, channel: &str, mode: CloseMode) -> Result<ChannelInfo, Layer2Error> {
        self.close_id(parse_channel(channel)?, mode).await
    }

    async fn dispute(&self, channel: &str) -> Result<ChannelInfo, Layer2Error> {
        let id = parse_channel(channel)?;
        let c = self.get(id)?;
        let mut c = c.lock().await;
        let on = self.chain.read(id).await?;
        let height = self.chain.height().await?;
        if on.status != status::CLOSING {
            return Err(Layer2Error::Invalid(format!(
                "nothing to dispute: channel {channel} is not closing on chain"
            )));
        }
        if !self.stale(&c, &on, height) {
            return Err(Layer2Error::Invalid(format!(
                "nothing to dispute: the posted nonce {} is our newest co-signed state's, or the window ended at block {}",
                on.nonce, on.deadline
            )));
        }
        self.challenge(&mut c, &on, height).await?;
        Ok(c.info())
    }

    async fn channel(&self, channel: &str) -> Result<ChannelInfo, Layer2Error> {
        let c = self.get(parse_channel(channel)?)?;
        let info = c.lock().await.info();
        Ok(info)
    }

    async fn list(&self) -> Result<Vec<ChannelInfo>, Layer2Error> {
        let mut out = Vec::new();
        for c in self.all() {
            out.push(c.lock().await.info());
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn status(&self) -> AdapterStatus {
        let counts = self.counts().await;
        let mut channels: Vec<(ChannelState, usize)> = counts.into_iter().collect();
        channels.sort_by_key(|(s, _)| *s as u8);
        AdapterStatus {
            adapter: KIND.into(),
            paused: self.paused.load(Ordering::Relaxed),
            channels,
            watching: self.watching.load(Ordering::Relaxed),
        }
    }

    fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
}
