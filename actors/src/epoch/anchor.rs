//! The epoch anchor (DESIGN, "Epochs and the VDF"): when the genesis has
//! `[params.anchor]`, epoch `n`'s input mixes the hash of the block at height
//! `start_height + n * blocks_per_epoch` of the EVM chain it names, taken only
//! once that block is final (`confirmations` blocks on top of it, or the
//! chain's `finalized` tag at or past it). Every node reads the anchor from
//! its own source of that chain, so an epoch whose anchor differs from the
//! node's view is invalid, and an epoch whose anchor the node cannot see yet is
//! neither accepted nor held against its sender.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{stream, StreamExt};
use vigil_genesis::AnchorParams;

use crate::chain::ChainSource;

/// Resolved anchors kept in memory (stored epochs carry theirs).
const KEEP: usize = 4096;
/// Anchor lookups in flight while syncing a range.
const PARALLEL: usize = 8;

/// Why an epoch's anchor is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// The anchor block is not final in this node's view yet.
    #[error(
        "epoch {epoch} anchors to block {height} of chain {chain_id}, which is not final yet \
         (head {head}, {confirmations} confirmations needed)"
    )]
    NotFinal {
        /// Epoch.
        epoch: u64,
        /// Anchor height.
        height: u64,
        /// The source's head.
        head: u64,
        /// Genesis confirmations.
        confirmations: u64,
        /// Genesis chain id.
        chain_id: u64,
    },
    /// The source failed or answered something unusable.
    #[error("anchor source `{name}`: {why}")]
    Source {
        /// Source name.
        name: String,
        /// What went wrong.
        why: String,
    },
}

/// Reads epoch anchors from one chain source.
#[derive(Debug)]
pub struct Anchors {
    rule: AnchorParams,
    source: Arc<dyn ChainSource>,
    chain_checked: AtomicBool,
    known: Mutex<BTreeMap<u64, [u8; 32]>>,
}

impl Anchors {
    /// Anchors by `rule` read from `source` (its chain id is checked before the first read).
    pub fn new(rule: AnchorParams, source: Arc<dyn ChainSource>) -> Self {
        Self {
            rule,
            source,
            chain_checked: AtomicBool::new(false),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// The genesis rule.
    pub fn rule(&self) -> &AnchorParams {
        &self.rule
    }

    /// The source's name.
    pub fn source_name(&self) -> &str {
        self.source.name()
    }

    fn fail(&self, why: impl ToString) -> AnchorError {
        AnchorError::Source {
            name: self.source.name().to_owned(),
            why: why.to_string(),
        }
    }

    /// The anchor of epoch `n`, once final.
    pub async fn get(&self, n: u64) -> Result<[u8; 32], AnchorError> {
        match self.known(n) {
            Some(h) => Ok(h),
            None => self.resolve(n, self.head().await?).await,
        }
    }

    /// Anchors of epochs `from..from + count`, a few lookups at a time, in
    /// order; the source's head is asked once for all of them.
    pub async fn range(&self, from: u64, count: u64) -> Vec<Result<[u8; 32], AnchorError>> {
        let epochs = from..from.saturating_add(count);
        let head = match self.head().await {
            Ok(h) => h,
            Err(e) => return epochs.map(|_| Err(e.clone())).collect(),
        };
        stream::iter(epochs)
            .map(|n| async move {
                match self.known(n) {
                    Some(h) => Ok(h),
                    None => self.resolve(n, head).await,
                }
            })
            .buffered(PARALLEL)
            .collect()
            .await
    }

    fn known(&self, n: u64) -> Option<[u8; 32]> {
        lock(&self.known).get(&n).copied()
    }

    /// The source's head height, after checking (once) that it is the genesis chain.
    async fn head(&self) -> Result<u64, AnchorError> {
        if !self.chain_checked.load(Ordering::Acquire) {
            self.source.check().await.map_err(|e| self.fail(e))?;
            self.chain_checked.store(true, Ordering::Release);
        }
        Ok(self.source.head().await.map_err(|e| self.fail(e))?.height)
    }

    /// Reads epoch `n`'s anchor block, final when `head` is deep enough above it.
    async fn resolve(&self, n: u64, head: u64) -> Result<[u8; 32], AnchorError> {
        let height = self.rule.height(n);
        let deep = head >= height.saturating_add(self.rule.confirmations);
        if !deep {
            let finalized = self.source.finalized().await.ok().flatten();
            if finalized.is_none_or(|f| f < height) {
                return Err(AnchorError::NotFinal {
                    epoch: n,
                    height,
                    head,
                    confirmations: self.rule.confirmations,
                    chain_id: self.rule.chain_id,
                });
            }
        }
        let block = self.source.block(height).await.map_err(|e| self.fail(e))?;
        if block.height != height {
            return Err(self.fail(format!("asked for block {height}, got block {}", block.height)));
        }
        let hash =
            parse_hash(&block.hash).ok_or_else(|| self.fail(format!("block hash `{}`", block.hash)))?;
        let mut known = lock(&self.known);
        known.insert(n, hash);
        while known.len() > KEEP {
            known.pop_first();
        }
        Ok(hash)
    }
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    hex::decode(s.strip_prefix("0x")?).ok()?.try_into().ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
