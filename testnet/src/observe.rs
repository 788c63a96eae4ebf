//! Figures gathered while a chaos schedule plays: gossip propagation per
//! topic (from every node's `net_gossip_seen`, one machine, one clock: a
//! skewed node's times are moved back by its `clock_offset_ms`) and
//! CPU per node (from `/proc/<pid>/stat`, summed over restarts).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::{call, running_pid, Manifest};

/// How often every node is asked.
const EVERY: Duration = Duration::from_secs(4);

/// Propagation of one gossip topic: for each message, the delay from the
/// first node that had it (its publisher) to each other node that got it
/// by gossip.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Propagation {
    /// Messages seen published.
    pub messages: usize,
    /// Receipts by other nodes.
    pub receipts: usize,
    /// Receipts / (messages × (nodes − 1)): the rest came by sync, after
    /// a restart, or not at all while cut off.
    pub coverage: f64,
    /// Median delay, ms.
    pub p50_ms: f64,
    /// 99th percentile delay, ms.
    pub p99_ms: f64,
}

/// What the observer measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Observed {
    /// Per topic (`epochs`, `attestations/2`, ...).
    pub gossip: BTreeMap<String, Propagation>,
    /// CPU per node over the observed time, percent of one core (median, max).
    pub cpu_median_pct: f64,
    /// The busiest node's CPU, percent of one core.
    pub cpu_max_pct: f64,
    /// Seconds observed.
    pub secs: f64,
}

/// One message: when each node had it first, and who published it.
#[derive(Debug, Default)]
struct Message {
    topic: String,
    first: HashMap<usize, u64>,
    /// The first node seen publishing it, and when (a follower that
    /// verified an epoch in full gossips it again: the earliest counts).
    origin: Option<(usize, u64)>,
}

#[derive(Debug, Default)]
struct State {
    messages: HashMap<String, Message>,
    /// Per node: the pid last seen and its CPU ticks then; ticks summed.
    cpu: HashMap<usize, (i32, u64)>,
    ticks: HashMap<usize, u64>,
    since_us: HashMap<usize, u64>,
    /// Each node's `clock_offset_ms` (a skewed node stamps its own clock).
    offset_us: HashMap<usize, i64>,
}

/// A background observer of a testnet; [`Observer::finish`] stops it and
/// returns the figures.
#[derive(Debug)]
pub struct Observer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<State>,
    started: Instant,
    nodes: usize,
}

impl Observer {
    /// Starts asking every node of `m` every few seconds.
    pub fn start(m: &Manifest) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let nodes = m.nodes.len();
        let (m, flag) = (m.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut s = State::default();
            while !flag.load(Ordering::Acquire) {
                poll(&m, &mut s).await;
                let t = Instant::now();
                while t.elapsed() < EVERY && !flag.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            poll(&m, &mut s).await;
            s
        });
        Self {
            stop,
            task,
            started: Instant::now(),
            nodes,
        }
    }

    /// Stops (after one last round) and sums up.
    pub async fn finish(self) -> Observed {
        self.stop.store(true, Ordering::Release);
        let secs = self.started.elapsed().as_secs_f64();
        let Ok(s) = self.task.await else {
            return Observed::default();
        };
        sum_up(&s, self.nodes, secs)
    }
}

/// One round: every node's new gossip receipts and its CPU ticks.
async fn poll(m: &Manifest, s: &mut State) {
    for (i, node) in m.nodes.iter().enumerate() {
        if let Some(pid) = running_pid(node) {
            if let Some(t) = cpu_ticks(pid) {
                let before = s.cpu.insert(i, (pid, t));
                let delta = match before {
                    Some((p, b)) if p == pid => t.saturating_sub(b),
                    // A restarted node: its new process's ticks so far.
                    _ => t,
                };
                *s.ticks.entry(i).or_default() += delta;
            }
        }
        let offset = match s.offset_us.get(&i) {
            Some(&o) => o,
            None => {
                let h =
                    tokio::time::timeout(Duration::from_secs(3), call(node, "node_health", json!([]))).await;
                let Some(ms) = h
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|h| h["clock_offset_ms"].as_i64())
                else {
                    continue;
                };
                s.offset_us.insert(i, ms * 1_000);
                ms * 1_000
            }
        };
        let since = s.since_us.get(&i).copied().unwrap_or(0);
        let asked = tokio::time::timeout(
            Duration::from_secs(3),
            call(node, "net_gossip_seen", json!([since])),
        );
        let Ok(Ok(seen)) = asked.await else {
            // Down or frozen: its receipts since are asked next round (a
            // restart loses what the old process held).
            continue;
        };
        for g in seen.as_array().into_iter().flatten() {
            let (Some(topic), Some(key), Some(at)) =
                (g["topic"].as_str(), g["key"].as_str(), g["at_us"].as_u64())
            else {
                continue;
            };
            s.since_us.insert(i, at);
            // On the host's clock, which every node shares.
            let at = at.saturating_add_signed(-offset);
            let msg = s.messages.entry(key.to_owned()).or_default();
            msg.topic = topic.to_owned();
            let first = msg.first.entry(i).or_insert(at);
            *first = (*first).min(at);
            if g["own"].as_bool() == Some(true) && msg.origin.is_none_or(|(_, t)| at < t) {
                msg.origin = Some((i, at));
            }
        }
    }
}

/// utime + stime of `pid`, clock ticks.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let f = crate::proc_stat(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn sum_up(s: &State, nodes: usize, secs: f64) -> Observed {
    let mut delays: BTreeMap<&str, (usize, Vec<f64>)> = BTreeMap::new();
    for msg in s.messages.values() {
        // Only messages whose publisher was seen publishing: their start is known.
        let Some((origin, t0)) = msg.origin else { continue };
        let e = delays.entry(&msg.topic).or_default();
        e.0 += 1;
        for (&i, &at) in &msg.first {
            if i != origin {
                e.1.push(at.saturating_sub(t0) as f64 / 1e3);
            }
        }
    }
    let gossip = delays
        .into_iter()
        .map(|(topic, (messages, mut d))| {
            d.sort_by(f64::total_cmp);
            let p = Propagation {
                messages,
                receipts: d.len(),
                coverage: d.len() as f64 / (messages * nodes.saturating_sub(1)).max(1) as f64,
                p50_ms: quantile(&d, 0.50),
                p99_ms: quantile(&d, 0.99),
            };
            (topic.to_owned(), p)
        })
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut cpu: Vec<f64> = (0..nodes)
        .map(|i| s.ticks.get(&i).copied().unwrap_or(0) as f64 / hz / secs.max(1e-9) * 100.0)
        .collect();
    cpu.sort_by(f64::total_cmp);
    Observed {
        gossip,
        cpu_median_pct: quantile(&cpu, 0.5),
        cpu_max_pct: cpu.last().copied().unwrap_or(0.0),
        secs,
    }
}

/// The `q` quantile of sorted `v` (nearest rank); 0 when empty.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_counts_delays_from_the_publisher_and_skips_unknown_origins() {
        let mut s = State::default();
        let mut m = Message {
            topic: "epochs".into(),
            origin: Some((0, 1_000_000)),
            ..Message::default()
        };
        m.first.extend([(0, 1_000_000), (1, 1_004_000), (2, 1_010_000)]);
        s.messages.insert("a".into(), m);
        // No publisher seen (it restarted): not counted.
        let mut orphan = Message {
            topic: "epochs".into(),
            ..Message::default()
        };
        orphan.first.extend([(1, 5), (2, 900_000_000)]);
        s.messages.insert("b".into(), orphan);
        s.ticks.extend([(0, 100), (1, 50), (2, 0)]);
        let o = sum_up(&s, 3, 10.0);
        let e = &o.gossip["epochs"];
        assert_eq!((e.messages, e.receipts), (1, 2));
        assert_eq!(e.coverage, 1.0);
        assert_eq!((e.p50_ms, e.p99_ms), (4.0, 10.0));
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((o.cpu_max_pct - 100.0 / hz / 10.0 * 100.0).abs() < 1e-9);
        assert!((o.cpu_median_pct - 50.0 / hz / 10.0 * 100.0).abs() < 1e-9);
    }

    #[test]
    fn cpu_ticks_of_this_process_are_read() {
        let pid = std::process::id() as i32;
        assert!(cpu_ticks(pid).is_some());
        assert_eq!(cpu_ticks(-5), None);
    }
}
