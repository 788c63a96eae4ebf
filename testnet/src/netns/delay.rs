//! Delay and jitter in network mode, in user space: the kernels here have
//! no tc netem, so the hub's `FORWARD` chain hands every packet between
//! nodes to NFQUEUE 0 (chain `vigil-delay`, with `--queue-bypass`: with no
//! reader, packets pass undelayed) and [`run`], a process in the hub
//! namespace, accepts each one once its delay is up. Each packet crosses the
//! hub once, so a round trip between two nodes takes twice the delay.
//! Jitter is uniform in ±`jitter_ms`, per packet, so packets can overtake
//! each other (reordering) as with netem's jitter.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One-way delay of every packet between two nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    /// Mean delay, milliseconds.
    pub ms: u32,
    /// Uniform jitter around it, ± milliseconds (at most `ms`).
    pub jitter_ms: u32,
}

impl Delay {
    fn sample(&self, rng: &mut impl Rng) -> Duration {
        let j = i64::from(self.jitter_ms.min(self.ms));
        let ms = i64::from(self.ms) + if j > 0 { rng.gen_range(-j..=j) } else { 0 };
        Duration::from_millis(ms.max(0) as u64)
    }

    /// Reads the settings file (`{"ms":50,"jitter_ms":10}`); none means no delay.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a delay setting", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// The NFQUEUE number the hub's `vigil-delay` chain uses.
pub const QUEUE: u16 = 0;

/// Holds every queued packet for its delay, then accepts it; rereads
/// `settings` every 200 ms. Runs until killed (`down` kills it).
pub fn run(settings: &Path) -> Result<()> {
    let mut q =
        nfq::Queue::open().context("cannot open a netfilter queue socket (root, in the hub namespace)")?;
    q.bind(QUEUE).context("cannot bind NFQUEUE 0")?;
    // Only the verdict matters: no payload is copied to user space.
    q.set_copy_range(QUEUE, 0)?;
    q.set_queue_max_len(QUEUE, 65_536)?;
    // A full queue lets packets through rather than dropping them.
    q.set_fail_open(QUEUE, true)?;
    q.set_nonblocking(true);
    let mut rng = rand::thread_rng();
    let mut delay = Delay::load(settings)?;
    let mut read_at = Instant::now();
    let mut held: BTreeMap<(Instant, u64), nfq::Message> = BTreeMap::new();
    let mut seq = 0u64;
    loop {
        loop {
            match q.recv() {
                Ok(mut m) => {
                    m.set_verdict(nfq::Verdict::Accept);
                    held.insert((Instant::now() + delay.sample(&mut rng), seq), m);
                    seq += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading the netfilter queue"),
            }
        }
        let now = Instant::now();
        while let Some(e) = held.first_entry() {
            if e.key().0 > now {
                break;
            }
            q.verdict(e.remove())?;
        }
        if read_at.elapsed() >= Duration::from_millis(200) {
            // A bad edit keeps the last good setting.
            if let Ok(d) = Delay::load(settings) {
                delay = d;
            }
            read_at = Instant::now();
        }
        let next = held.keys().next().map_or(Duration::from_millis(1), |(due, _)| {
            due.saturating_duration_since(now)
        });
        std::thread::sleep(next.min(Duration::from_millis(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_within_the_jitter_and_never_go_below_zero() {
        let mut rng = rand::thread_rng();
        let d = Delay {
            ms: 50,
            jitter_ms: 10,
        };
        for _ in 0..1_000 {
            let s = d.sample(&mut rng).as_millis();
            assert!((40..=60).contains(&s), "{s}");
        }
        let wide = Delay { ms: 5, jitter_ms: 50 };
        assert!((0..1_000).all(|_| wide.sample(&mut rng) <= Duration::from_millis(10)));
        assert_eq!(Delay::default().sample(&mut rng), Duration::ZERO);
    }

    #[test]
    fn a_missing_settings_file_is_no_delay_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("net-delay.json");
        assert_eq!(Delay::load(&p).unwrap(), Delay::default());
        std::fs::write(&p, "fifty").unwrap();
        let e = format!("{:#}", Delay::load(&p).unwrap_err());
        assert!(
            e.contains("net-delay.json") && e.contains("not a delay setting"),
            "{e}"
        );
    }
}
