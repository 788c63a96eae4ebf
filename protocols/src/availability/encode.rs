//! The prover-specific encoding: `replica = plaintext XOR E(peer, R, sector)`.
//!
//! A sector is 1 MiB (1,024 leaves). Its keystream is the memory of an
//! Argon2d fill of 1 MiB with `cost` passes (`params.encoding_cost`) keyed by
//! `BLAKE3(peer ‖ R ‖ sector)`: every block of the last pass depends on the
//! passes before it, data-dependently, so regenerating any leaf of a sector
//! costs about as much as the whole sector. A prover that keeps only the
//! plaintext pays that on every challenge; one that keeps the replica
//! answers from disk. The peer id in the key makes two nodes' replicas of
//! the same data differ (no deduplication, no borrowing another's replica).

use argon2::{Algorithm, Argon2, Block, Params, Version};
use rayon::prelude::*;

/// Sector size.
pub const SECTOR: usize = 1 << 20;
const SALT: &[u8] = b"vigil/replica/v1";

/// Keystream of one sector (1 MiB).
pub fn keystream(peer: &[u8], root: &[u8; 32], sector: u64, cost: u32) -> Vec<u8> {
    let mut key = blake3::Hasher::new();
    key.update(b"vigil/replica-key/v1");
    key.update(&(peer.len() as u32).to_be_bytes());
    key.update(peer);
    key.update(root);
    key.update(&sector.to_be_bytes());
    let key = key.finalize();
    let params =
        Params::new((SECTOR / 1024) as u32, cost.max(1), 1, None).expect("1 MiB, t >= 1, p = 1 are valid");
    let argon = Argon2::new(Algorithm::Argon2d, Version::V0x13, params);
    let mut blocks = vec![Block::default(); SECTOR / 1024];
    argon
        .fill_memory(key.as_bytes(), SALT, &mut blocks)
        .expect("valid inputs");
    let mut out = Vec::with_capacity(SECTOR);
    for b in &blocks {
        for w in b.as_ref() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// XORs sectors `first ..` of `data` (whole sectors but maybe a short last
/// one) with their keystreams, in parallel: encodes and decodes alike.
pub fn xor_sectors(peer: &[u8], root: &[u8; 32], first: u64, data: &mut [u8], cost: u32) {
    data.par_chunks_mut(SECTOR).enumerate().for_each(|(i, s)| {
        let ks = keystream(peer, root, first + i as u64, cost);
        for (d, k) in s.iter_mut().zip(ks) {
            *d ^= k;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystreams_differ_by_peer_root_sector_and_round_trip() {
        let a = keystream(b"peer-a", &[1; 32], 0, 2);
        assert_eq!(a.len(), SECTOR);
        assert_eq!(a, keystream(b"peer-a", &[1; 32], 0, 2));
        assert_ne!(a, keystream(b"peer-b", &[1; 32], 0, 2));
        assert_ne!(a, keystream(b"peer-a", &[2; 32], 0, 2));
        assert_ne!(a, keystream(b"peer-a", &[1; 32], 1, 2));
        assert_ne!(a, keystream(b"peer-a", &[1; 32], 0, 3));
        let plain: Vec<u8> = (0..SECTOR + 5000).map(|i| i as u8).collect();
        let mut d = plain.clone();
        xor_sectors(b"p", &[3; 32], 0, &mut d, 1);
        assert_ne!(d, plain);
        xor_sectors(b"p", &[3; 32], 0, &mut d, 1);
        assert_eq!(d, plain);
    }
}
