//! Following an external chain: the last K blocks, reorg detection by
//! parent-hash / hash mismatch with a walk back to the common ancestor,
//! height regressions (rollbacks, which emit no new head), and the block
//! interval anomaly detector (robust z-score). No I/O: the caller fetches.

use std::collections::VecDeque;

/// A block as seen: height, hash, parent hash (hex strings as the source gives them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: String,
    /// Parent hash.
    pub parent: String,
}

/// What following the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    /// A new head extending the known chain.
    NewHead(BlockRef),
    /// Known blocks were replaced: `depth` of ours above `ancestor`.
    Reorg {
        /// Our blocks replaced (or removed).
        depth: u64,
        /// Height of the common ancestor.
        ancestor: u64,
        /// Hash of the common ancestor.
        ancestor_hash: String,
        /// Our replaced hashes, lowest first.
        old: Vec<String>,
        /// The new hashes up to the head, lowest first.
        new: Vec<String>,
    },
    /// The head went below a height we had seen.
    HeightRegression {
        /// Highest height seen.
        from: u64,
        /// The new head's height.
        to: u64,
    },
}

/// The last `k` blocks of the canonical chain as followed.
#[derive(Debug, Clone)]
pub struct Tracker {
    k: usize,
    blocks: VecDeque<BlockRef>,
}

impl Tracker {
    /// Keeps `k` blocks (reorgs deeper than that are reported at depth `k`).
    pub fn new(k: usize) -> Self {
        Self {
            k: k.max(2),
            blocks: VecDeque::new(),
        }
    }

    /// The newest block followed.
    pub fn head(&self) -> Option<&BlockRef> {
        self.blocks.back()
    }

    fn at(&self, h: u64) -> Option<&BlockRef> {
        let first = self.blocks.front()?.height;
        self.blocks.get(h.checked_sub(first)? as usize)
    }

    fn push(&mut self, b: BlockRef) {
        self.blocks.push_back(b);
        while self.blocks.len() > self.k {
            self.blocks.pop_front();
        }
    }

    /// Takes a new head; `fetch(h)` returns the canonical block at height `h` now.
    pub fn observe<E>(
        &mut self,
        head: BlockRef,
        mut fetch: impl FnMut(u64) -> Result<BlockRef, E>,
    ) -> Result<Vec<ChainEvent>, E> {
        let mut out = Vec::new();
        let Some(last) = self.head().cloned() else {
            // First sight: hold up to k/2 blocks below the head too, so a reorg
            // right after the start still finds its common ancestor.
            let from = head.height.saturating_sub(self.k as u64 / 2);
            for h in from..head.height {
                let b = fetch(h)?;
                self.push(b);
            }
            self.push(head.clone());
            out.push(ChainEvent::NewHead(head));
            return Ok(out);
        };
        if head.height == last.height && head.hash == last.hash {
            return Ok(out);
        }
        // The simple case: the head extends ours directly.
        if head.height == last.height + 1 && head.parent == last.hash {
            self.push(head.clone());
            out.push(ChainEvent::NewHead(head));
            return Ok(out);
        }
        if head.height < last.height {
            out.push(ChainEvent::HeightRegression {
                from: last.height,
                to: head.height,
            });
        }
        // Walk back from min(head, ours) to the highest height where the
        // canonical block is still the one we hold.
        let lowest = self.blocks.front().map_or(0, |b| b.height);
        let mut h = head.height.min(last.height);
        let ancestor = loop {
            let canonical = if h == head.height { head.clone() } else { fetch(h)? };
            match self.at(h) {
                Some(ours) if ours.hash == canonical.hash => break Some(canonical),
                _ if h == lowest => break None,
                _ => h -= 1,
            }
        };
        let (anc_h, anc_hash) = match &ancestor {
            Some(b) => (b.height, b.hash.clone()),
            None => (lowest.saturating_sub(1), String::new()),
        };
        let old: Vec<String> = self
            .blocks
            .iter()
            .filter(|b| b.height > anc_h)
            .map(|b| b.hash.clone())
            .collect();
        // Rebuild above the ancestor from the canonical chain.
        self.blocks.retain(|b| b.height <= anc_h);
        let mut new = Vec::new();
        for hh in anc_h + 1..=head.height {
            let b = if hh == head.height {
                head.clone()
            } else {
                fetch(hh)?
            };
            new.push(b.hash.clone());
            self.push(b);
        }
        if !old.is_empty() {
            out.push(ChainEvent::Reorg {
                depth: old.len() as u64,
                ancestor: anc_h,
                ancestor_hash: anc_hash,
                old,
                new: new.clone(),
            });
        }
        if head.height > last.height {
            out.push(ChainEvent::NewHead(head));
        }
        Ok(out)
    }
}

/// Robust z-score of the newest interval against the window before it:
/// `0.6745 · (x − median) / MAD`; `None` until the window has 8 intervals or
/// when the MAD is 0.
pub fn interval_z(window: &[f64], x: f64) -> Option<f64> {
    if window.len() < 8 {
        return None;
    }
    let med = median(window.to_vec());
    let mad = median(window.iter().map(|v| (v - med).abs()).collect());
    if mad <= f64::EPSILON {
        return None;
    }
    Some(0.6745 * (x - med) / mad)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(tag: &str, from: u64, to: u64, parent: &str) -> Vec<BlockRef> {
        let mut p = parent.to_owned();
        (from..=to)
            .map(|h| {
                let b = BlockRef {
                    height: h,
                    hash: format!("{tag}{h}"),
                    parent: p.clone(),
                };
                p = b.hash.clone();
                b
            })
            .collect()
    }

    fn fetcher(c: &[BlockRef]) -> impl FnMut(u64) -> Result<BlockRef, String> + '_ {
        move |h| {
            c.iter()
                .find(|b| b.height == h)
                .cloned()
                .ok_or(format!("no block {h}"))
        }
    }

    #[test]
    fn follows_heads_detects_reorgs_and_rollbacks() {
        let a = chain("a", 0, 10, "g");
        let mut t = Tracker::new(64);
        for b in &a {
            let ev = t.observe(b.clone(), fetcher(&a)).unwrap();
            assert_eq!(ev, vec![ChainEvent::NewHead(b.clone())]);
        }
        // Replace the last 3 blocks at the same height.
        let mut b = a[..8].to_vec();
        b.extend(chain("b", 8, 10, "a7"));
        let ev = t.observe(b[10].clone(), fetcher(&b)).unwrap();
        assert_eq!(
            ev,
            vec![ChainEvent::Reorg {
                depth: 3,
                ancestor: 7,
                ancestor_hash: "a7".into(),
                old: vec!["a8".into(), "a9".into(), "a10".into()],
                new: vec!["b8".into(), "b9".into(), "b10".into()],
            }]
        );
        // Roll back 2: no new head, a regression.
        let c = b[..9].to_vec();
        let ev = t.observe(c[8].clone(), fetcher(&c)).unwrap();
        assert_eq!(ev[0], ChainEvent::HeightRegression { from: 10, to: 8 });
        assert!(
            matches!(
                &ev[1],
                ChainEvent::Reorg {
                    depth: 2,
                    ancestor: 8,
                    ..
                }
            ),
            "{ev:?}"
        );
        assert_eq!(t.head().unwrap().hash, "b8");
    }

    #[test]
    fn interval_anomaly_uses_a_robust_z_score() {
        let w = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02];
        assert!(interval_z(&w, 1.0).unwrap().abs() < 1.0);
        assert!(interval_z(&w, 10.0).unwrap() > 3.5);
        assert_eq!(interval_z(&w[..4], 10.0), None);
    }
}
