//! Chaos schedules for network mode: a seed and a preset give the same list
//! of faults every time (partitions, heals, SIGKILL and restart, SIGSTOP and
//! SIGCONT, loss, delay, skewed clocks), [`run`] plays it against a testnet and records
//! what happened, and checkers run over that record: every heal converges,
//! the chain is one chain at the end, no honest node is banned for loss or
//! a partition alone. A failure names the seed and the step.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::netns::delay::Delay;
use crate::{call, running_pid, signal, start_node, Manifest};

/// One fault (or its end).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Two halves: nodes 0..n/2 and n/2..n (shuffled by the seed).
    Halves {
        /// The first half.
        a: Vec<usize>,
    },
    /// One node cut off from all others.
    Isolate {
        /// The node.
        node: usize,
    },
    /// Each node reaches only its two ring neighbours.
    Ring,
    /// Every partition ends.
    Heal,
    /// SIGKILL.
    Kill {
        /// The node.
        node: usize,
    },
    /// `vigil run` again, same data.
    Restart {
        /// The node.
        node: usize,
    },
    /// SIGSTOP: a frozen peer (connections open, nothing answered).
    Freeze {
        /// The node.
        node: usize,
    },
    /// SIGCONT.
    Thaw {
        /// The node.
        node: usize,
    },
    /// Random loss between all nodes, percent.
    Loss {
        /// Percent.
        percent: f64,
    },
    /// Delay between all nodes.
    Delay {
        /// One way, ms.
        ms: u32,
        /// ± ms.
        jitter_ms: u32,
    },
    /// The node's clock runs `ms` off the host's for the whole run
    /// (`debug.clock_offset_ms`, written before the node starts; the step
    /// checks it took effect).
    Skew {
        /// The node.
        node: usize,
        /// Offset, ms (negative: behind).
        ms: i64,
    },
}

/// A fault at a time from the start.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// Milliseconds from the start of the run.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
}

/// The size of a chaos run.
#[derive(Debug, Clone, Serialize)]
pub struct Preset {
    /// `short` or `long`.
    pub name: &'static str,
    /// Nodes.
    pub nodes: usize,
    /// Seconds of faults.
    pub secs: u64,
    /// Partitions (halves, an isolated node or a ring), each healed.
    pub partitions: usize,
    /// SIGKILLs, each followed by a restart.
    pub kills: usize,
    /// SIGSTOPs, each followed by a SIGCONT.
    pub freezes: usize,
    /// Nodes whose clock is skewed (up to [`MAX_SKEW_MS`] either way) for the whole run.
    pub skews: usize,
    /// Nodes 1..=datasets store a dataset, which every other node challenges
    /// each epoch. 0 in both presets for now (`chaos --datasets N` sets it):
    /// with datasets, challenges that time out during a partition get
    /// honest storers banned (docs/testnet.md).
    pub datasets: usize,
    /// Loss between all nodes during the run, percent.
    pub loss: f64,
    /// Delay between all nodes during the run.
    pub delay: Delay,
    /// The light VDF every node uses (dev preset, 32 segments).
    pub vdf_iterations: u64,
    /// The timelord starts epochs at least this far apart, ms: every
    /// follower verifies each epoch in full, and all of them share two cores.
    pub min_epoch_ms: u64,
}

impl Preset {
    /// `short` (12 nodes, about 2.5 minutes of faults: the test) or `long`
    /// (24 nodes, 30 minutes: the benchmark).
    pub fn named(name: &str) -> Result<Self> {
        Ok(match name {
            "short" => Self {
                name: "short",
                nodes: 12,
                secs: 150,
                partitions: 3,
                kills: 4,
                freezes: 1,
                skews: 2,
                datasets: 0,
                loss: 1.0,
                delay: Delay { ms: 20, jitter_ms: 5 },
                vdf_iterations: LIGHT_VDF,
                min_epoch_ms: EPOCH_MS,
            },
            "long" => Self {
                name: "long",
                nodes: 24,
                secs: 1_800,
                partitions: 5,
                kills: 20,
                freezes: 5,
                skews: 3,
                datasets: 0,
                loss: 1.0,
                delay: Delay { ms: 50, jitter_ms: 20 },
                vdf_iterations: LIGHT_VDF,
                min_epoch_ms: EPOCH_MS,
            },
            other => bail!("no chaos preset `{other}`: the presets are short (12 nodes, 150 s) and long (24 nodes, 30 min)"),
        })
    }
}

/// The largest clock skew drawn: just under the 5 min
/// ([`vigil_actors::storage::MAX_AHEAD`]) a dataset announcement may be
/// signed ahead of its receiver's clock.
pub const MAX_SKEW_MS: i64 = 4 * 60 * 1_000;

/// Iterations per epoch in chaos runs: ~50 ms of one core here, so 24
/// nodes each verifying an epoch (sampled, then in full) spend ~1.3 s of CPU on it.
const LIGHT_VDF: u64 = 1_000_000;

/// An epoch every 2 s: the VDF work of 24 nodes stays under a core of the two.
const EPOCH_MS: u64 = 2_000;

/// The schedule of `preset` for `seed`: the same steps every time.
pub fn schedule(p: &Preset, seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = p.nodes;
    let mut kinds: Vec<u8> = [(0u8, p.partitions), (1, p.kills), (2, p.freezes)]
        .iter()
        .flat_map(|&(k, c)| std::iter::repeat_n(k, c))
        .collect();
    kinds.shuffle(&mut rng);
    let slot = p.secs * 1_000 / (kinds.len() as u64 + 1);
    let mut steps = vec![
        Step {
            at_ms: 0,
            fault: Fault::Loss { percent: p.loss },
        },
        Step {
            at_ms: 0,
            fault: Fault::Delay {
                ms: p.delay.ms,
                jitter_ms: p.delay.jitter_ms,
            },
        },
    ];
    for (k, kind) in kinds.into_iter().enumerate() {
        let start = (k as u64 + 1) * slot;
        let end = start + slot / 2;
        let node = rng.gen_range(0..n);
        let (fault, undo) = match kind {
            0 => match rng.gen_range(0..3) {
                0 => {
                    let mut all: Vec<usize> = (0..n).collect();
                    all.shuffle(&mut rng);
                    let mut a = all[..n / 2].to_vec();
                    a.sort_unstable();
                    (Fault::Halves { a }, Fault::Heal)
                }
                1 => (Fault::Isolate { node }, Fault::Heal),
                _ => (Fault::Ring, Fault::Heal),
            },
            1 => (Fault::Kill { node }, Fault::Restart { node }),
            _ => (Fault::Freeze { node }, Fault::Thaw { node }),
        };
        steps.push(Step { at_ms: start, fault });
        steps.push(Step {
            at_ms: end,
            fault: undo,
        });
    }
    // Drawn last, so the other steps of a seed stay as they were.
    let mut skewed: Vec<usize> = (0..n).collect();
    skewed.shuffle(&mut rng);
    for &node in skewed.iter().take(p.skews) {
        // Within what dataset announcements tolerate (signed by wall clock:
        // at most 5 min ahead of the receiver's, 30 min old).
        let ms = rng.gen_range(1_000..=MAX_SKEW_MS) * if rng.gen_bool(0.5) { 1 } else { -1 };
        steps.push(Step {
            at_ms: 0,
            fault: Fault::Skew { node, ms },
        });
    }
    let end = p.secs * 1_000;
    steps.push(Step {
        at_ms: end,
        fault: Fault::Heal,
    });
    steps.push(Step {
        at_ms: end,
        fault: Fault::Loss { percent: 0.0 },
    });
    steps.push(Step {
        at_ms: end,
        fault: Fault::Delay { ms: 0, jitter_ms: 0 },
    });
    steps.sort_by_key(|s| s.at_ms);
    steps
}

/// How one heal went: time until every running node had the chain up to
/// the highest head any of them had at the heal.
#[derive(Debug, Clone, Serialize)]
pub struct Healed {
    /// The heal's step time, ms from the start.
    pub at_ms: u64,
    /// The highest head at the heal.
    pub target: u64,
    /// Until every running node had it, ms; `None` if not before the next fault.
    pub converged_ms: Option<u64>,
}

/// Waits (at most `limit`) until every node in `nodes` has head `target` or more.
async fn caught_up(m: &Manifest, nodes: &[usize], target: u64, limit: Duration) -> Option<()> {
    let t = Instant::now();
    loop {
        if heads(m, nodes)
            .await
            .iter()
            .all(|h| h.is_some_and(|h| h >= target))
        {
            return Some(());
        }
        if t.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a run did and what the checkers found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The seed (rerun with it to replay the same schedule).
    pub seed: u64,
    /// Steps played.
    pub steps: usize,
    /// Each heal (partitions and the final one).
    pub heals: Vec<Healed>,
    /// After the last step, until every node had the chain up to the
    /// highest head any node had then, ms (all agree on that epoch: checked).
    pub final_converged_ms: u64,
    /// That head.
    pub head: u64,
    /// Honest nodes some node had banned at the end (must be none).
    pub honest_banned: Vec<String>,
    /// Gossip propagation per topic and CPU per node, from the first step
    /// to the end of the checks.
    pub observed: crate::observe::Observed,
    /// The challenges the storers drew (`play` only; each storer must have
    /// answered every other node at least once).
    pub challenges: Option<crate::challenges::Tally>,
}

/// `call` with a bound: a frozen node never answers.
async fn ask(m: &Manifest, i: usize, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
    tokio::time::timeout(Duration::from_secs(3), call(&m.nodes[i], method, params))
        .await
        .ok()?
        .ok()
}

async fn heads(m: &Manifest, nodes: &[usize]) -> Vec<Option<u64>> {
    let mut out = Vec::with_capacity(nodes.len());
    for &i in nodes {
        let h = ask(m, i, "epoch_head", json!([])).await;
        out.push(h.and_then(|v| v["head"].as_u64()));
    }
    out
}

/// Plays `steps` against the network-mode testnet `m` and runs the checkers.
pub async fn run(m: &Manifest, steps: &[Step], seed: u64, progress: &dyn Fn(&str)) -> Result<Outcome> {
    let net = m
        .net
        .as_ref()
        .context("chaos schedules need a network-mode testnet (`vigil-testnet up --netns`)")?;
    let n = m.nodes.len();
    let observer = crate::observe::Observer::start(m);
    let t0 = Instant::now();
    let (mut down, mut frozen) = (BTreeSet::new(), BTreeSet::new());
    let mut heals = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let at = t0 + Duration::from_millis(step.at_ms);
        let now = Instant::now();
        if at > now {
            tokio::time::sleep(at - now).await;
        }
        progress(&format!(
            "step {k} at {:.1} s: {:?}",
            step.at_ms as f64 / 1e3,
            step.fault
        ));
        let fail = |e: anyhow::Error| e.context(format!("seed {seed}, step {k} ({:?})", step.fault));
        let done: Result<()> = match &step.fault {
            Fault::Halves { a } => {
                let b: Vec<usize> = (0..n).filter(|i| !a.contains(i)).collect();
                net.partition(&[a.clone(), b])
            }
            Fault::Isolate { node } => net.isolate(*node),
            Fault::Ring => net.ring(),
            Fault::Heal => net.heal(),
            Fault::Kill { node } => {
                signal(&m.nodes[*node], libc::SIGCONT);
                frozen.remove(node);
                if signal(&m.nodes[*node], libc::SIGKILL).is_some() {
                    let t = Instant::now();
                    while running_pid(&m.nodes[*node]).is_some() && t.elapsed() < Duration::from_secs(5) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                down.insert(*node);
                Ok(())
            }
            Fault::Restart { node } => {
                down.remove(node);
                start_node(m, &m.nodes[*node]).map(|_| ())
            }
            Fault::Freeze { node } => {
                if !down.contains(node) {
                    signal(&m.nodes[*node], libc::SIGSTOP);
                    frozen.insert(*node);
                }
                Ok(())
            }
            Fault::Thaw { node } => {
                signal(&m.nodes[*node], libc::SIGCONT);
                frozen.remove(node);
                Ok(())
            }
            Fault::Loss { percent } => net.set_loss(*percent),
            Fault::Skew { node, ms } => {
                let h = ask(m, *node, "node_health", json!([])).await;
                match h.as_ref().and_then(|h| h["clock_offset_ms"].as_i64()) {
                    Some(got) if got == *ms => Ok(()),
                    got => Err(anyhow::anyhow!(
                        "node-{node} should run {ms} ms off the host clock, but node_health says {got:?} (was `debug.clock_offset_ms` written before it started?)"
                    )),
                }
            }
            Fault::Delay { ms, jitter_ms } => net.set_delay(
                &m.dir,
                Delay {
                    ms: *ms,
                    jitter_ms: *jitter_ms,
                },
            ),
        };
        done.map_err(fail)?;
        // The next fault's time (the final heal has none: the checkers
        // below measure it).
        let next = steps[k + 1..].iter().find(|s| s.at_ms > step.at_ms);
        if let (Fault::Heal, Some(next)) = (&step.fault, next) {
            // Until the next fault: do the running nodes agree again?
            let until = Duration::from_millis(next.at_ms - step.at_ms);
            let up: Vec<usize> = (0..n)
                .filter(|i| !down.contains(i) && !frozen.contains(i))
                .collect();
            let healed_at = Instant::now();
            let target = heads(m, &up).await.into_iter().flatten().max().unwrap_or(0);
            let converged_ms = caught_up(m, &up, target, until)
                .await
                .map(|()| healed_at.elapsed().as_millis() as u64);
            match converged_ms {
                Some(ms) => progress(&format!("healed: every running node reached head {target} in {ms} ms")),
                None => progress(&format!(
                    "healed: not every running node reached head {target} before the next fault: heads {:?} (nodes {up:?})",
                    heads(m, &up).await
                )),
            }
            heals.push(Healed {
                at_ms: step.at_ms,
                target,
                converged_ms,
            });
        }
    }
    // Checkers, on the whole network, everything healed and running.
    let last = steps.len();
    for &i in &frozen {
        signal(&m.nodes[i], libc::SIGCONT);
    }
    for &i in &down {
        start_node(m, &m.nodes[i])
            .with_context(|| format!("seed {seed}, after step {last}: restarting node-{i}"))?;
    }
    let all: Vec<usize> = (0..n).collect();
    let t = Instant::now();
    // Converged: every node has the chain up to the highest head any node
    // had when the faults ended (and, below, the same epoch there).
    let head = heads(m, &all).await.into_iter().flatten().max().unwrap_or(0);
    if caught_up(m, &all, head, Duration::from_secs(180)).await.is_none() {
        let hs = heads(m, &all).await;
        bail!("seed {seed}, after step {last}: not every node reached head {head} within 180 s of the last heal: heads {hs:?}");
    }
    let final_converged_ms = t.elapsed().as_millis() as u64;
    let mut outputs = BTreeSet::new();
    for i in 0..n {
        let e = ask(m, i, "epoch_get", json!([head])).await;
        outputs.insert(e.and_then(|v| v["output"].as_str().map(str::to_owned)));
    }
    if outputs.len() != 1 || outputs.contains(&None) {
        bail!("seed {seed}: the nodes agree on head {head} but not on its epoch: {outputs:?}");
    }
    // Bans are of peer ids and of addresses: every node's are honest here.
    let honest: Vec<String> = m
        .nodes
        .iter()
        .map(|x| x.peer_id.clone())
        .chain((0..n).map(|i| net.ip(i).to_string()))
        .collect();
    let mut honest_banned = Vec::new();
    for i in 0..n {
        let bans = ask(m, i, "net_bans", json!([])).await.unwrap_or_default();
        for b in bans.as_array().into_iter().flatten() {
            let who = b["peer"].as_str().unwrap_or_default();
            if honest
                .iter()
                .any(|h| who == h || who.starts_with(&format!("{h}/")) || who.contains(&format!("/{h}/")))
            {
                honest_banned.push(format!("node-{i} banned {who}: {b}"));
            }
        }
    }
    Ok(Outcome {
        seed,
        steps: last,
        heals,
        final_converged_ms,
        head,
        honest_banned,
        observed: observer.finish().await,
        challenges: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_every_fault_is_undone() {
        let p = Preset::named("short").unwrap();
        let (a, b) = (schedule(&p, 7), schedule(&p, 7));
        assert_eq!(a, b);
        assert_ne!(a, schedule(&p, 8));
        let count = |f: &dyn Fn(&Fault) -> bool| a.iter().filter(|s| f(&s.fault)).count();
        assert_eq!(count(&|f| matches!(f, Fault::Kill { .. })), p.kills);
        assert_eq!(count(&|f| matches!(f, Fault::Restart { .. })), p.kills);
        assert_eq!(count(&|f| matches!(f, Fault::Freeze { .. })), p.freezes);
        assert_eq!(count(&|f| matches!(f, Fault::Thaw { .. })), p.freezes);
        let cuts = count(&|f| matches!(f, Fault::Halves { .. } | Fault::Isolate { .. } | Fault::Ring));
        assert_eq!(cuts, p.partitions);
        assert_eq!(count(&|f| *f == Fault::Heal), p.partitions + 1);
        let skewed: BTreeSet<usize> = a
            .iter()
            .filter_map(|s| match s.fault {
                Fault::Skew { node, ms } => {
                    assert!(s.at_ms == 0 && (1_000..=MAX_SKEW_MS).contains(&ms.abs()), "{s:?}");
                    Some(node)
                }
                _ => None,
            })
            .collect();
        assert_eq!(skewed.len(), p.skews, "distinct skewed nodes");
        assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert_eq!(a.last().unwrap().at_ms, p.secs * 1_000);
        assert!(Preset::named("medium").unwrap_err().to_string().contains("short"));
    }
}

/// A whole chaos run: the testnet made, the schedule played, the checkers' findings.
#[derive(Debug, Clone, Serialize)]
pub struct Played {
    /// The preset.
    pub preset: Preset,
    /// From start to every node having min(n-1, 3) peers, ms (mesh formation).
    pub mesh_ms: u64,
    /// The run and its checks.
    pub outcome: Outcome,
}

/// Sets `debug.clock_offset_ms` in a node's config (before it starts).
fn skew(node: &crate::NodeSpec, ms: i64) -> Result<()> {
    let cfg = node.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&cfg).with_context(|| format!("reading {}", cfg.display()))?;
    text.push_str(&format!(
        "\n[debug]\n# skewed by vigil-testnet chaos\nclock_offset_ms = {ms}\n"
    ));
    std::fs::write(&cfg, text).with_context(|| format!("writing {}", cfg.display()))
}

/// Makes a network-mode testnet of `p.nodes` in `dir` (dev preset with a
/// light VDF, `p.vdf_iterations` an epoch and one every `p.min_epoch_ms`,
/// followers verifying 4 sampled segments of 32 to take an epoch; one
/// timelord, node-0: while it is down or cut off the chain waits, as a
/// real network waits for its timelords),
/// plays `p`'s schedule for `seed`, and takes the testnet down, also on failure.
pub async fn play(dir: &std::path::Path, p: &Preset, seed: u64, progress: &dyn Fn(&str)) -> Result<Played> {
    let o = crate::Options {
        n: p.nodes,
        preset: "dev".into(),
        vdf_iterations: Some(p.vdf_iterations),
        timelords: 1,
        netns: true,
        sampled_verify: Some(4),
        min_epoch_ms: Some(p.min_epoch_ms),
        ..crate::Options::default()
    };
    let steps = schedule(p, seed);
    let storers = 1..p.datasets.min(p.nodes - 1) + 1;
    let m = crate::create(dir, &o)?;
    for s in &steps {
        if let Fault::Skew { node, ms } = s.fault {
            skew(&m.nodes[node], ms)?;
        }
    }
    let t0 = Instant::now();
    let started = async {
        for node in &m.nodes {
            start_node(&m, node)?;
        }
        crate::wait_peers(&m, (p.nodes as u64 - 1).min(3), Duration::from_secs(120)).await?;
        let took = t0.elapsed();
        progress(&format!("{} nodes peered in {took:?}", p.nodes));
        for j in storers.clone() {
            crate::challenges::store(&m, j).await?;
        }
        if !storers.is_empty() {
            progress(&format!("nodes {storers:?} store a dataset each"));
        }
        Ok::<_, anyhow::Error>(took)
    };
    let took = match started.await {
        Ok(took) => took,
        Err(e) => {
            let _ = crate::down(&m, Duration::from_secs(5)).await;
            return Err(e);
        }
    };
    // Ctrl-C ends the run and still takes the testnet down.
    let played = tokio::select! {
        r = run(&m, &steps, seed, progress) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("seed {seed}: interrupted (Ctrl-C); the testnet is taken down")),
    };
    let r = match played {
        Ok(o) if storers.is_empty() => Ok(o),
        Ok(mut o) => {
            let storers: Vec<usize> = storers.collect();
            // Restarted in the last 30 s (two announcement refreshes).
            let end = p.secs * 1_000;
            let recent: BTreeSet<usize> = steps
                .iter()
                .filter_map(|s| match s.fault {
                    Fault::Restart { node } if s.at_ms + 30_000 > end => Some(node),
                    _ => None,
                })
                .collect();
            let t = crate::challenges::tally(&m, &storers, &recent).await;
            let never = t.never_answered.clone();
            o.challenges = Some(t);
            if never.is_empty() {
                Ok(o)
            } else {
                Err(anyhow::anyhow!(
                    "seed {seed}: storers never answered some challengers over the whole run: {never:?}"
                ))
            }
        }
        Err(e) => Err(e),
    };
    let stopped = crate::down(&m, Duration::from_secs(10)).await;
    let outcome = r?;
    stopped?;
    Ok(Played {
        preset: p.clone(),
        mesh_ms: took.as_millis() as u64,
        outcome,
    })
}
