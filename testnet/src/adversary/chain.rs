//! The adversary's continuity chains, kept as an honest node keeps them
//! (one link per epoch it hears of, aggregated and signed), so that a test
//! can compare an honest prover with one that computes its links after the
//! fact or commits nothing.

use std::collections::{BTreeMap, HashMap};

use libp2p::identity::Keypair;
use vigil_protocols::availability::challenge::{prove_leaf, ChunkProof};
use vigil_protocols::availability::tree::{Tree, GROUP, LEAF};
use vigil_protocols::continuity::{
    aggregate, link, proof_digest, root_message, select, start_link, Evidence, SignedProof, H,
};

use super::{ContinuityParams, Replica};

/// One epoch's links (sorted by replica root) and its signed root.
#[derive(Debug, Clone)]
struct EpochLinks {
    /// `(R_p, link, previous link's epoch, previous link)`.
    records: Vec<(H, H, u64, H)>,
    root: H,
    signature: Vec<u8>,
}

/// Every chain the adversary keeps.
#[derive(Debug, Default)]
pub(super) struct Chains {
    epochs: BTreeMap<u64, EpochLinks>,
    /// Each chain's last link: `R_p -> (epoch, link)`.
    last: HashMap<H, (u64, H)>,
}

/// The chunk proofs epoch `output` selects in the first `size` bytes of `r`'s replica.
fn chunk_proofs(r: &Replica, size: u64, output: &H, k: usize) -> Vec<ChunkProof> {
    let bytes = &r.replica_bytes()[..size as usize];
    let tree = Tree::build(bytes);
    select(output, &r.replica_root, size, k)
        .into_iter()
        .map(|i| {
            let start = i as usize / GROUP * GROUP * LEAF;
            prove_leaf(
                &tree,
                i,
                &bytes[start..(start + GROUP * LEAF).min(bytes.len())],
                None,
            )
        })
        .collect()
}

impl Chains {
    /// Extends every chain in `replicas` with epoch `n` (once per epoch, in
    /// order) and signs the root; returns the root message and signature to
    /// gossip.
    pub(super) fn extend(
        &mut self,
        key: &Keypair,
        p: &ContinuityParams,
        n: u64,
        output: &H,
        replicas: &[&Replica],
    ) -> Option<Vec<u8>> {
        if self.epochs.keys().next_back().is_some_and(|last| *last >= n) || replicas.is_empty() {
            return None;
        }
        let mut records: Vec<(H, H, u64, H)> = replicas
            .iter()
            .map(|r| {
                let (pe, pl) = self
                    .last
                    .get(&r.replica_root)
                    .copied()
                    .unwrap_or((0, start_link(&r.replica_root)));
                let digests: Vec<H> = chunk_proofs(r, r.size, output, p.chunks)
                    .iter()
                    .map(proof_digest)
                    .collect();
                (r.replica_root, link(&pl, output, &digests), pe, pl)
            })
            .collect();
        records.sort_by_key(|r| r.0);
        for r in &records {
            self.last.insert(r.0, (n, r.1));
        }
        let links: Vec<H> = records.iter().map(|r| r.1).collect();
        let h = aggregate(&links, p.group_size, p.region_size);
        let msg = root_message(n, links.len() as u64, &h.root);
        let signature = key.sign(&msg).ok()?;
        self.epochs.insert(
            n,
            EpochLinks {
                records,
                root: h.root,
                signature: signature.clone(),
            },
        );
        while self.epochs.len() > 128 {
            self.epochs.pop_first();
        }
        Some([msg, signature].concat())
    }

    /// Epochs it holds links for.
    pub(super) fn epochs(&self) -> Vec<u64> {
        self.epochs.keys().copied().collect()
    }

    /// The proof of `r` at epoch `n` from the links it kept, as a node serves it.
    pub(super) fn proof(&self, p: &ContinuityParams, r: &Replica, n: u64, output: &H) -> Option<SignedProof> {
        let e = self.epochs.get(&n)?;
        let i = e.records.iter().position(|x| x.0 == r.replica_root)?;
        let (_, l, prev_epoch, prev_link) = e.records[i];
        let links: Vec<H> = e.records.iter().map(|x| x.1).collect();
        let h = aggregate(&links, p.group_size, p.region_size);
        Some(SignedProof {
            evidence: Evidence {
                epoch: n,
                replica_root: r.replica_root,
                size: r.size,
                prev_epoch,
                prev_link,
                link: l,
                chunks: chunk_proofs(r, r.size, output, p.chunks),
                path: h.path(&links, i, p.group_size, p.region_size),
                root: e.root,
            },
            signature: e.signature.clone(),
        })
    }
}

/// A proof computed now, as if the chain started at epoch `n` and held only
/// `r` (first `size` bytes): a fresh link under a fresh root, signed now —
/// what a prover that fetched the data today can make for any past epoch.
pub(super) fn after_the_fact(
    key: &Keypair,
    p: &ContinuityParams,
    r: &Replica,
    size: u64,
    n: u64,
    output: &H,
) -> SignedProof {
    let chunks = chunk_proofs(r, size, output, p.chunks);
    let prev_link = start_link(&r.replica_root);
    let digests: Vec<H> = chunks.iter().map(proof_digest).collect();
    let l = link(&prev_link, output, &digests);
    let h = aggregate(&[l], p.group_size, p.region_size);
    let path = h.path(&[l], 0, p.group_size, p.region_size);
    let signature = key.sign(&root_message(n, 1, &h.root)).unwrap_or_default();
    SignedProof {
        evidence: Evidence {
            epoch: n,
            replica_root: r.replica_root,
            size,
            prev_epoch: 0,
            prev_link,
            link: l,
            chunks,
            path,
            root: h.root,
        },
        signature,
    }
}
