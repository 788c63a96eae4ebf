//! One task per chain source: polls (and wakes on `newHeads`), follows the
//! chain with a `Tracker`, and raises detections: reorg, height regression,
//! stall, outage and recovery, interval anomaly, source errors.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use vigil_protocols::chain::{interval_z, BlockRef, ChainEvent, Tracker};

use super::security::{Detection, SecurityHub};
use super::source::ChainSource;
use crate::metrics as m;

/// How to follow one source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Expected block time.
    pub block_time: Duration,
    /// A stall is this many block times without a new head.
    pub stall_factor: f64,
    /// Blocks kept for reorg detection.
    pub keep_blocks: usize,
    /// Consecutive failed polls that make an outage.
    pub outage_after: u32,
}

/// What `chain_status` shows per source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    /// Name.
    pub name: String,
    /// Head height.
    pub head: Option<u64>,
    /// Head hash.
    pub head_hash: Option<String>,
    /// Finalized height.
    pub finalized: Option<u64>,
    /// Head − finalized.
    pub lag: Option<u64>,
    /// The last reorg.
    pub last_reorg: Option<Detection>,
    /// `ok`, or `unhealthy: <why>`.
    pub health: String,
    /// Detections raised.
    pub detections: u64,
}

/// A followed source and its status.
#[derive(Debug)]
pub struct Followed {
    /// The source.
    pub source: Arc<dyn ChainSource>,
    /// Its settings.
    pub settings: SourceSettings,
    /// Its status.
    pub status: Mutex<SourceStatus>,
    heads: tokio::sync::watch::Sender<Option<(u64, String)>>,
}

fn now_ms() -> u64 {
    crate::queue::now_us() / 1000
}

impl Followed {
    /// A source to follow.
    pub fn new(source: Arc<dyn ChainSource>, settings: SourceSettings) -> Arc<Self> {
        let status = SourceStatus {
            name: source.name().to_owned(),
            health: "starting".into(),
            ..SourceStatus::default()
        };
        Arc::new(Self {
            source,
            settings,
            status: Mutex::new(status),
            heads: tokio::sync::watch::Sender::new(None),
        })
    }

    /// The head (height, hash) as it changes, reorgs included: what a
    /// watcher of this chain (Layer2) acts on.
    pub fn heads(&self) -> tokio::sync::watch::Receiver<Option<(u64, String)>> {
        self.heads.subscribe()
    }

    /// The status now.
    pub fn status(&self) -> SourceStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, f: impl FnOnce(&mut SourceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn raise(&self, hub: &SecurityHub, mut d: Detection) {
        d.source = self.source.name().to_owned();
        d.at_unix_ms = now_ms();
        self.set(|s| {
            s.detections += 1;
            if d.kind == "reorg" {
                s.last_reorg = Some(d.clone());
            }
        });
        hub.raise(d).await;
    }
}

/// Follows `f` until the task is aborted.
pub async fn follow(f: Arc<Followed>, hub: Arc<SecurityHub>) {
    let s = f.settings.clone();
    let name = f.source.name().to_owned();
    let (tx, mut hints) = mpsc::channel(16);
    f.source.subscribe(tx);
    let poll = (s.block_time / 4).clamp(Duration::from_millis(50), Duration::from_secs(2));
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = Tracker::new(s.keep_blocks);
    let mut failures = 0u32;
    let mut down = false;
    let mut checked = false;
    let mut last_head_at = Instant::now();
    let mut stalled = false;
    let mut intervals: Vec<f64> = Vec::new();
    let mut polls = 0u64;
    let reorgs = metrics::counter!(m::CHAIN_REORGS, "source" => name.clone());
    reorgs.increment(0);
    let head_age = metrics::gauge!(m::CHAIN_HEAD_AGE, "source" => name.clone());
    let finality_lag = metrics::gauge!(m::CHAIN_FINALITY_LAG, "source" => name.clone());
    metrics::gauge!(m::CHAIN_HEALTHY, "source" => name.clone()).set(0.0);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = hints.recv() => {}
        }
        polls += 1;
        let r = async {
            if !checked {
                f.source.check().await?;
            }
            let head = f.source.head().await?;
            let src = f.source.clone();
            let rt = tokio::runtime::Handle::current();
            let events =
                tokio::task::block_in_place(|| tracker.observe(head.clone(), |h| rt.block_on(src.block(h))))?;
            let fin = if polls % 10 == 1 {
                Some(f.source.finalized().await?)
            } else {
                None
            };
            Ok::<_, String>((head, events, fin))
        }
        .await;
        match r {
            Err(e) => {
                failures += 1;
                checked = false;
                metrics::gauge!(m::CHAIN_HEALTHY, "source" => name.clone()).set(0.0);
                f.set(|st| st.health = format!("unhealthy: {e}"));
                if failures >= s.outage_after && !down {
                    down = true;
                    let kind = if e.contains("chain id")
                        || e.contains("absurd")
                        || e.contains("not a")
                        || e.contains("lacks")
                    {
                        "source_error"
                    } else {
                        "outage"
                    };
                    f.raise(
                        &hub,
                        Detection {
                            kind: kind.into(),
                            detail: e.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
                }
                // Back off while down: at most one poll per 2 s.
                if down {
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(failures.min(8)))).await;
                }
            }
            Ok((head, events, fin)) => {
                checked = true;
                failures = 0;
                metrics::gauge!(m::CHAIN_HEALTHY, "source" => name.clone()).set(1.0);
                if down {
                    down = false;
                    f.raise(
                        &hub,
                        Detection {
                            kind: "recovery".into(),
                            detail: format!("answering again at height {}", head.height),
                            ..Default::default()
                        },
                    )
                    .await;
                }
                f.set(|st| {
                    st.health = "ok".into();
                    st.head = Some(head.height);
                    st.head_hash = Some(head.hash.clone());
                    if let Some(fin) = fin {
                        st.finalized = fin;
                    }
                    st.lag = st.finalized.map(|x| head.height.saturating_sub(x));
                    if let Some(lag) = st.lag {
                        finality_lag.set(lag as f64);
                    }
                });
                metrics::gauge!(m::CHAIN_HEAD, "source" => name.clone()).set(head.height as f64);
                let now = Some((head.height, head.hash.clone()));
                f.heads.send_if_modified(|h| {
                    let changed = *h != now;
                    *h = now;
                    changed
                });
                for ev in events {
                    match ev {
                        ChainEvent::NewHead(b) => {
                            on_head(&f, &hub, &b, &mut last_head_at, &mut stalled, &mut intervals).await
                        }
                        ChainEvent::Reorg {
                            depth,
                            ancestor,
                            ancestor_hash,
                            old,
                            new,
                        } => {
                            reorgs.increment(1);
                            metrics::histogram!(m::CHAIN_REORG_DEPTH).record(depth as f64);
                            let d = Detection {
                                kind: "reorg".into(),
                                detail: format!("{depth} block(s) replaced above height {ancestor}"),
                                reorg_depth: Some(depth),
                                ancestor: Some(ancestor),
                                ancestor_hash: Some(ancestor_hash),
                                old_hashes: old,
                                new_hashes: new,
                                ..Default::default()
                            };
                            f.raise(&hub, d).await;
                        }
                        ChainEvent::HeightRegression { from, to } => {
                            let d = Detection {
                                kind: "height_regression".into(),
                                detail: format!("head went back from {from} to {to} (rollback)"),
                                regression_depth: Some(from - to),
                                ..Default::default()
                            };
                            f.raise(&hub, d).await;
                        }
                    }
                }
            }
        }
        let quiet = last_head_at.elapsed().as_secs_f64();
        head_age.set(quiet);
        if !stalled && !down && quiet > s.block_time.as_secs_f64() * s.stall_factor {
            stalled = true;
            let d = Detection {
                kind: "stall".into(),
                detail: format!(
                    "no new head for {quiet:.1} s (expected one every {:?})",
                    s.block_time
                ),
                stall_secs: Some(quiet),
                ..Default::default()
            };
            f.raise(&hub, d).await;
        }
    }
}

async fn on_head(
    f: &Followed,
    hub: &SecurityHub,
    b: &BlockRef,
    last: &mut Instant,
    stalled: &mut bool,
    intervals: &mut Vec<f64>,
) {
    let dt = last.elapsed().as_secs_f64();
    *last = Instant::now();
    *stalled = false;
    if let Some(z) = interval_z(intervals, dt) {
        if z.abs() > 3.5 {
            let d = Detection {
                kind: "interval_anomaly".into(),
                detail: format!(
                    "block {} came {dt:.2} s after the previous one (robust z {z:.1})",
                    b.height
                ),
                interval_z: Some(z),
                ..Default::default()
            };
            f.raise(hub, d).await;
        }
    }
    intervals.push(dt);
    if intervals.len() > 64 {
        intervals.remove(0);
    }
}
