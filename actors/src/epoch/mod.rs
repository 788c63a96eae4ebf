//! The epoch chain: the node's clock and entropy.
//!
//! - [`store`]: epochs and the worker's checkpoints in sled.
//! - [`worker`]: the VDF worker, a supervised dedicated thread that computes
//!   the next epoch, saving its progress at every checkpoint.
//! - [`service`]: the supervised `epochs` actor's task: verifies gossiped
//!   epochs off the swarm task, syncs by range from several peers when
//!   behind, gossips local epochs and publishes every epoch to the durable
//!   bus topic `epoch.new`.
//!
//! - [`anchor`]: the external anchor of each epoch's input, read from a
//!   chain source when the genesis names one.
//!
//! [`Chain`] is the handle all of them (and the RPC) share.

pub mod anchor;
mod claims;
mod finality;
pub mod service;
pub mod store;
pub mod worker;

pub use finality::FORGER_BAN_SECS;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libp2p::gossipsub::MessageId;
use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use vigil_protocols::epoch::{Check, Epoch, EpochError};
use vigil_protocols::vdf::{State, VdfParams};

pub use anchor::{AnchorError, Anchors};
pub use service::EpochActor;
pub use store::{AppendError, Appended, EpochStore};

use crate::metrics as m;
use crate::net::{EpochSource, Network};
use crate::queue::Queues;
use crate::Result;

/// Bus topic every epoch is published on (durable).
pub const BUS_TOPIC: &str = "epoch.new";

/// How received epochs are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    /// Every segment, in parallel.
    Full,
    /// This many segments chosen by the node's own randomness.
    Sampled(u32),
}

/// The node's `[vdf]` settings.
#[derive(Debug, Clone)]
pub struct EpochSettings {
    /// Run a VDF worker (a follower only verifies and adopts).
    pub compute: bool,
    /// Verification of gossiped and synced epochs.
    pub verify: VerifyMode,
    /// Epochs asked of one peer per sync request.
    pub sync_batch: u32,
    /// Peers asked in parallel when behind.
    pub sync_peers: usize,
    /// The least time from the start of one computed epoch to the start of
    /// the next: a worker done sooner waits (zero: back to back). For
    /// testnets whose nodes share one machine's cores.
    pub min_epoch: std::time::Duration,
    /// Draw a progress bar on stderr while syncing (a terminal); log lines otherwise.
    pub progress_bar: bool,
    /// The genesis anchor's source; `None` when the genesis has no anchor
    /// (then every epoch must carry an empty one).
    pub anchors: Option<Arc<Anchors>>,
}

impl Default for EpochSettings {
    fn default() -> Self {
        Self {
            compute: true,
            verify: VerifyMode::Full,
            sync_batch: 64,
            sync_peers: 3,
            min_epoch: std::time::Duration::ZERO,
            progress_bar: false,
            anchors: None,
        }
    }
}

/// One epoch as the RPC shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EpochView {
    /// Number.
    pub number: u64,
    /// Input (hex).
    pub input: String,
    /// Output (hex): the epoch's entropy.
    pub output: String,
    /// External anchor (hex, empty for none).
    pub anchor: String,
    /// Checkpoints in the proof.
    pub checkpoints: usize,
    /// Encoded size, bytes.
    pub bytes: usize,
}

/// What `vdf_status` shows.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VdfStatus {
    /// `hash` or `memory-hard`.
    pub mode: &'static str,
    /// Steps per epoch (genesis).
    pub iterations: u64,
    /// Segments per proof (genesis).
    pub segments: u32,
    /// Dataset MiB (memory-hard).
    pub memory_mib: u32,
    /// Whether this node runs a worker.
    pub compute: bool,
    /// Epoch being computed (0: idle).
    pub computing: u64,
    /// Segments done of it.
    pub segments_done: u32,
    /// Progress 0..=1.
    pub progress: f64,
    /// Steps per second over the last checkpoint.
    pub rate: f64,
    /// Seconds to the end of the epoch at that rate.
    pub eta_secs: Option<f64>,
    /// Whether the epoch resumed from a saved checkpoint.
    pub resumed: bool,
    /// Local head.
    pub head: u64,
    /// Highest epoch verified in full with every one before it (equal to
    /// `head` unless sampling): bus, continuity, challenges and sync use
    /// only epochs up to it.
    pub final_head: u64,
    /// Epochs taken by sampling and not yet verified in full.
    pub unverified: usize,
    /// Epochs rolled back since start (a sampled epoch failed its full check).
    pub rolled_back: u64,
    /// Best head a peer backed with epochs that verified.
    pub best_peer_head: u64,
    /// Head + 1 >= every backed peer head.
    pub synced: bool,
    /// Peer claims no epoch backs yet (not counted; checked by the sync loop).
    pub unbacked_claims: usize,
    /// Verification of received epochs.
    pub verify: Option<VerifyMode>,
    /// Name of the chain source the epoch anchors come from (none: no anchor).
    pub anchor_source: Option<String>,
    /// Why the worker is waiting for the next epoch's anchor, while it is.
    pub waiting_for_anchor: Option<String>,
}

/// Where an appended epoch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This node's worker.
    Local,
    /// Gossip.
    Gossip,
    /// Range sync.
    Sync,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Gossip => "gossip",
            Self::Sync => "sync",
        }
    }
}

/// A gossiped epoch waiting for verification.
pub(crate) type GossipItem = (PeerId, MessageId, Vec<u8>);

#[derive(Debug)]
struct Inner {
    genesis: [u8; 32],
    params: VdfParams,
    settings: EpochSettings,
    store: EpochStore,
    head: AtomicU64,
    /// Set when the node stops: an epoch still being verified is not
    /// appended after the final flush (peers serve it after the restart).
    stopping: AtomicBool,
    claims: Mutex<claims::Claims>,
    status: Mutex<VdfStatus>,
    /// Epochs taken by sampling, not yet verified in full.
    unverified: Mutex<finality::Unverified>,
    /// Wakes the background full check.
    final_wake: Notify,
    /// Local epochs waiting to be gossiped.
    outbox: Mutex<Vec<Epoch>>,
    /// Wakes the service: a new head (bus, gossip) or new work.
    wake: Notify,
    gossip: Mutex<Option<mpsc::Sender<GossipItem>>>,
    net: Option<Network>,
    queues: Option<Arc<Queues>>,
    /// Runs anchor lookups for the worker's thread.
    runtime: Option<tokio::runtime::Handle>,
}

/// Handle to the epoch chain; cheap to clone.
#[derive(Debug, Clone)]
pub struct Chain {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a received epoch was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Decoding or VDF verification failed: the sender is at fault.
    #[error(transparent)]
    Invalid(#[from] EpochError),
    /// We do not hold its predecessor yet.
    #[error("epoch {got} is ahead of our head {head}: sync first")]
    Ahead {
        /// Our head.
        head: u64,
        /// Offered.
        got: u64,
    },
    /// Appending failed (conflict or store).
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Its anchor is not known here yet: not the sender's fault.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    /// The verification task died (a panic): not the sender's fault.
    #[error("epoch verification task failed: {0}")]
    Aborted(String),
    /// The node is stopping: nothing more is appended (not the sender's fault).
    #[error("the node is stopping: epoch {0} not taken (peers serve it again after the restart)")]
    Stopping(u64),
}

impl Chain {
    /// The chain of genesis `genesis` in `store`.
    pub fn open(
        genesis: [u8; 32],
        params: VdfParams,
        settings: EpochSettings,
        store: EpochStore,
        net: Option<Network>,
        queues: Option<Arc<Queues>>,
    ) -> Result<Self> {
        let head = store.head()?;
        metrics::gauge!(m::EPOCH_HEAD).set(head as f64);
        let status = VdfStatus {
            mode: params.mode_name(),
            iterations: params.iterations,
            segments: params.segments,
            memory_mib: params.memory_mib,
            compute: settings.compute,
            verify: Some(settings.verify),
            anchor_source: settings.anchors.as_ref().map(|a| a.source_name().to_owned()),
            ..VdfStatus::default()
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        if settings.anchors.is_some() && runtime.is_none() {
            return Err(crate::Error::Invalid(
                "an anchored epoch chain must be opened inside the tokio runtime".into(),
            ));
        }
        let chain = Self {
            inner: Arc::new(Inner {
                genesis,
                params,
                settings,
                store,
                head: AtomicU64::new(head),
                stopping: AtomicBool::new(false),
                claims: Mutex::new(claims::Claims::default()),
                status: Mutex::new(status),
                unverified: Mutex::new(Default::default()),
                final_wake: Notify::new(),
                outbox: Mutex::new(Vec::new()),
                wake: Notify::new(),
                gossip: Mutex::new(None),
                net,
                queues,
                runtime,
            }),
        };
        if let Some(n) = &chain.inner.net {
            n.set_epoch_source(Arc::new(chain.clone()));
        }
        metrics::gauge!(m::EPOCH_FINAL_HEAD).set(chain.final_head() as f64);
        Ok(chain)
    }

    /// Genesis hash.
    pub fn genesis(&self) -> &[u8; 32] {
        &self.inner.genesis
    }

    /// VDF parameters.
    pub fn params(&self) -> &VdfParams {
        &self.inner.params
    }

    /// Settings.
    pub fn settings(&self) -> &EpochSettings {
        &self.inner.settings
    }

    /// The store.
    pub fn store(&self) -> &EpochStore {
        &self.inner.store
    }

    /// The node is stopping: epochs received from now on (and those still
    /// being verified) are not appended, so nothing is written after the
    /// final flush and "stopped cleanly" is the node's last word.
    pub fn stop_accepting(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    /// Highest epoch held (0: none).
    pub fn head(&self) -> u64 {
        self.inner.head.load(Ordering::Acquire)
    }

    /// Best head a connected peer claimed and backed with epochs that
    /// verified (see the `claims` module): what a peer only says counts for nothing.
    pub fn best_peer_head(&self) -> u64 {
        lock(&self.inner.claims).best(self.head())
    }

    /// `peer` says its head is `h`.
    pub(crate) fn saw_peer_head(&self, peer: PeerId, h: u64) {
        lock(&self.inner.claims).saw(peer, h, Instant::now());
        if let Some(net) = &self.inner.net {
            net.note_head(&peer, h);
        }
    }

    /// Epochs of `peer` verified and were appended: its claim counts.
    pub(crate) fn claim_backed(&self, peer: PeerId) {
        lock(&self.inner.claims).backed(peer, Instant::now());
    }

    /// `peer` could not back its claim: it no longer counts.
    pub(crate) fn claim_refuted(&self, peer: &PeerId) {
        lock(&self.inner.claims).refute(peer, self.head());
    }

    /// Claims ahead of our head that nothing backs yet, best first; drops
    /// the claims of peers gone or silent first.
    pub(crate) fn unbacked_claims(&self) -> Vec<(PeerId, u64)> {
        let connected: Option<std::collections::HashSet<PeerId>> = self
            .inner
            .net
            .as_ref()
            .map(|n| n.peer_ids().into_iter().collect());
        let mut c = lock(&self.inner.claims);
        c.expire(connected.as_ref(), Instant::now());
        c.unbacked_ahead(self.head())
    }

    /// True when no peer backed a head more than one epoch beyond ours (the
    /// newest epoch is usually on its way by gossip: a follower one behind
    /// for the milliseconds it takes is not out of sync).
    pub fn synced(&self) -> bool {
        self.head() + 1 >= self.best_peer_head()
    }

    /// The output epoch `n` builds on (the genesis hash for epoch 1).
    pub fn prev_output(&self, n: u64) -> Result<Option<State>> {
        if n <= 1 {
            return Ok(Some(self.inner.genesis));
        }
        Ok(self.inner.store.get(n - 1)?.map(|e| e.output))
    }

    /// Epoch `n` as the RPC shows it.
    pub fn view(&self, n: u64) -> Result<Option<EpochView>> {
        let Some(e) = self.inner.store.get(n)? else {
            return Ok(None);
        };
        let prev = self.prev_output(n)?.unwrap_or([0; 32]);
        Ok(Some(EpochView {
            number: e.number,
            input: hex::encode(e.input(&self.inner.genesis, &prev)),
            output: hex::encode(e.output),
            anchor: hex::encode(&e.anchor),
            checkpoints: e.checkpoints.len(),
            bytes: e.encode().len(),
        }))
    }

    /// What `vdf_status` shows.
    pub fn status(&self) -> VdfStatus {
        let mut s = lock(&self.inner.status).clone();
        s.head = self.head();
        s.final_head = self.final_head();
        s.unverified = self.unverified();
        s.best_peer_head = self.best_peer_head();
        s.synced = self.synced();
        s.unbacked_claims = lock(&self.inner.claims).unbacked();
        s
    }

    pub(crate) fn update_status(&self, f: impl FnOnce(&mut VdfStatus)) {
        f(&mut lock(&self.inner.status));
    }

    /// The anchor epoch `n` must carry: empty when the genesis has none.
    pub async fn expected_anchor(&self, n: u64) -> std::result::Result<Vec<u8>, AnchorError> {
        match &self.inner.settings.anchors {
            Some(a) => a.get(n).await.map(|h| h.to_vec()),
            None => Ok(Vec::new()),
        }
    }

    /// The anchors of epochs `from..from + count`, in order (empty ones without a genesis anchor).
    pub async fn expected_anchors(
        &self,
        from: u64,
        count: u64,
    ) -> Vec<std::result::Result<Vec<u8>, AnchorError>> {
        match &self.inner.settings.anchors {
            Some(a) => a
                .range(from, count)
                .await
                .into_iter()
                .map(|r| r.map(|h| h.to_vec()))
                .collect(),
            None => (0..count).map(|_| Ok(Vec::new())).collect(),
        }
    }

    /// [`Chain::expected_anchor`] from a thread outside the runtime (the VDF worker).
    pub(crate) fn expected_anchor_blocking(&self, n: u64) -> std::result::Result<Vec<u8>, AnchorError> {
        match (&self.inner.settings.anchors, &self.inner.runtime) {
            (Some(a), Some(rt)) => rt.block_on(a.get(n)).map(|h| h.to_vec()),
            _ => Ok(Vec::new()),
        }
    }

    /// Verifies `e` against its stored predecessor and the anchor it must
    /// carry, with the configured check.
    pub fn verify(
        &self,
        e: &Epoch,
        prev_output: &State,
        anchor: &[u8],
    ) -> std::result::Result<(), EpochError> {
        let t = Instant::now();
        let mut rng = rand::thread_rng();
        let check = match self.inner.settings.verify {
            VerifyMode::Full => Check::Full,
            VerifyMode::Sampled(samples) => Check::Sampled {
                samples,
                rng: &mut rng,
            },
        };
        let r = e.validate(
            &self.inner.genesis,
            &self.inner.params,
            prev_output,
            Some(anchor),
            check,
        );
        metrics::histogram!(m::EPOCH_VERIFY_DURATION).record(t.elapsed().as_secs_f64());
        r
    }

    /// Appends an epoch already verified (or computed here), then tells the
    /// service (bus, gossip) and the worker (which moves on).
    pub fn append(&self, e: Epoch, origin: Origin) -> std::result::Result<Appended, AppendError> {
        let r = self.inner.store.append(&e)?;
        if r == Appended::New {
            self.inner.head.fetch_max(e.number, Ordering::AcqRel);
            metrics::gauge!(m::EPOCH_HEAD).set(e.number as f64);
            metrics::counter!(m::EPOCH_ACCEPTED, "origin" => origin.as_str()).increment(1);
            tracing::info!(
                epoch = e.number,
                output = %hex::encode(&e.output[..8]),
                origin = origin.as_str(),
                "epoch appended"
            );
            if origin == Origin::Local {
                lock(&self.inner.outbox).push(e);
            }
            self.inner.wake.notify_one();
        }
        Ok(r)
    }

    /// Decodes, checks and appends an epoch from a peer; looks up its anchor
    /// first when it is the next one (a blocking verification runs off the
    /// async threads).
    pub async fn accept_bytes(
        &self,
        bytes: &[u8],
        origin: Origin,
        from: Option<PeerId>,
    ) -> std::result::Result<Appended, AcceptError> {
        let e = Epoch::decode(bytes).inspect_err(|_| {
            metrics::counter!(m::EPOCH_REJECTED, "reason" => "malformed").increment(1);
        })?;
        let anchor = if e.number == self.head() + 1 {
            self.expected_anchor(e.number).await.inspect_err(|_| {
                metrics::counter!(m::EPOCH_REJECTED, "reason" => "anchor_unknown").increment(1);
            })?
        } else {
            Vec::new()
        };
        let c = self.clone();
        tokio::task::spawn_blocking(move || c.accept(e, origin, &anchor, from))
            .await
            .map_err(|e| AcceptError::Aborted(e.to_string()))?
    }

    /// Checks and appends an epoch from a peer (`from`, if known); `anchor`
    /// is the one it must carry if it is the next epoch.
    pub fn accept(
        &self,
        e: Epoch,
        origin: Origin,
        anchor: &[u8],
        from: Option<PeerId>,
    ) -> std::result::Result<Appended, AcceptError> {
        let head = self.head();
        if e.number <= head {
            return match self.inner.store.get(e.number).map_err(AppendError::from)? {
                Some(stored) if stored == e => Ok(Appended::Duplicate),
                _ => {
                    metrics::counter!(m::EPOCH_REJECTED, "reason" => "conflict").increment(1);
                    Err(AppendError::Conflict(e.number).into())
                }
            };
        }
        if e.number > head + 1 {
            return Err(AcceptError::Ahead { head, got: e.number });
        }
        let prev = self
            .prev_output(e.number)
            .map_err(AppendError::from)?
            .ok_or(AcceptError::Ahead { head, got: e.number })?;
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(AcceptError::Stopping(e.number));
        }
        if let Err(err) = self.verify(&e, &prev, anchor) {
            metrics::counter!(m::EPOCH_REJECTED, "reason" => "invalid").increment(1);
            return Err(err.into());
        }
        // (A verification takes up to seconds: the node may have begun to stop.)
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(AcceptError::Stopping(e.number));
        }
        Ok(self.append_received(e, origin, from)?)
    }

    fn take_outbox(&self) -> Vec<Epoch> {
        std::mem::take(&mut *lock(&self.inner.outbox))
    }
}

/// What peers see: only epochs verified in full are told of and served.
impl EpochSource for Chain {
    fn head(&self) -> u64 {
        self.final_head()
    }

    fn range(&self, from: u64, count: u32, max_bytes: usize) -> Vec<Vec<u8>> {
        let last = self.final_head();
        if from > last {
            return Vec::new();
        }
        let count = count.min(u32::try_from(last - from + 1).unwrap_or(u32::MAX));
        self.inner
            .store
            .range_encoded(from, count, max_bytes)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read epochs to serve a sync request");
                Vec::new()
            })
    }

    fn gossip(&self, from: PeerId, id: MessageId, data: Vec<u8>) {
        let tx = lock(&self.inner.gossip).clone();
        let full = match tx {
            Some(tx) => tx.try_send((from, id.clone(), data)).is_err(),
            None => true,
        };
        if full {
            // Nobody to verify it now: neither forwarded nor held against the peer.
            if let Some(net) = self.inner.net.clone() {
                tokio::spawn(async move {
                    net.report_epoch(id, from, crate::net::GossipVerdict::Ignore)
                        .await;
                });
            }
        }
    }
}
