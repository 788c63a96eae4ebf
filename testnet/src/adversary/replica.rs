//! A dataset the adversary holds in memory, encoded for its own identity
//! exactly as a vigil node encodes it, so that it can answer challenges and
//! audits correctly when it chooses to.

use libp2p::PeerId;
use vigil_protocols::availability::challenge::{prove_leaf, ChunkProof};
use vigil_protocols::availability::encode::xor_sectors;
use vigil_protocols::availability::tree::{Tree, GROUP, LEAF};

/// Plaintext and replica of one dataset, with both trees.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Plaintext root `R`.
    pub root: [u8; 32],
    /// Replica root `R_p` (the encoding for the adversary's identity).
    pub replica_root: [u8; 32],
    /// Plaintext bytes.
    pub size: u64,
    plain: Vec<u8>,
    replica: Vec<u8>,
    plain_tree: Tree,
    replica_tree: Tree,
}

impl Replica {
    /// Encodes `plain` for `peer` with the genesis `encoding_cost`.
    pub fn encode(peer: &PeerId, plain: Vec<u8>, cost: u32) -> Self {
        let plain_tree = Tree::build(&plain);
        let root = plain_tree.root(&plain[..plain.len().min(GROUP * LEAF)]);
        let mut replica = plain.clone();
        xor_sectors(&peer.to_bytes(), &root, 0, &mut replica, cost);
        let replica_tree = Tree::build(&replica);
        let replica_root = replica_tree.root(&replica[..replica.len().min(GROUP * LEAF)]);
        Self {
            root,
            replica_root,
            size: plain.len() as u64,
            plain,
            replica,
            plain_tree,
            replica_tree,
        }
    }

    fn group(bytes: &[u8], index: u64) -> &[u8] {
        let start = index as usize / GROUP * GROUP * LEAF;
        &bytes[start..(start + GROUP * LEAF).min(bytes.len())]
    }

    /// Proofs of leaves `indices` of the replica, keyed with `nonce`.
    pub fn prove(&self, indices: &[u64], nonce: &[u8; 32]) -> Vec<ChunkProof> {
        indices
            .iter()
            .map(|&i| prove_leaf(&self.replica_tree, i, Self::group(&self.replica, i), Some(nonce)))
            .collect()
    }

    /// The honest audit answer for leaf `index`: (replica leaf, plaintext leaf).
    pub fn audit(&self, index: u64) -> (ChunkProof, ChunkProof) {
        (
            prove_leaf(&self.replica_tree, index, Self::group(&self.replica, index), None),
            prove_leaf(&self.plain_tree, index, Self::group(&self.plain, index), None),
        )
    }

    /// The bytes of its replica.
    pub fn replica_bytes(&self) -> &[u8] {
        &self.replica
    }

    /// Proofs from the plaintext as if it were the replica (a prover that
    /// announced `R_p = R` and stores one copy for every identity).
    pub fn prove_plain(&self, indices: &[u64], nonce: &[u8; 32]) -> Vec<ChunkProof> {
        indices
            .iter()
            .map(|&i| prove_leaf(&self.plain_tree, i, Self::group(&self.plain, i), Some(nonce)))
            .collect()
    }
}
