//! Sequential step functions: the VDF is `T` applications of one of them.
//!
//! Both call the SHA-256 compression function directly (the `sha2` crate picks
//! SHA-NI at run time), so the loop carries no hashing-API overhead.

use sha2::digest::generic_array::GenericArray;

use super::dataset::Dataset;

/// The 32-byte chaining state.
pub type State = [u8; 32];

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// One sequential step, applied `n` times in a row by [`Step::run`].
pub trait Step: Send + Sync {
    /// Applies the step `n` times to `state`.
    fn run(&self, state: &mut State, n: u64);
    /// Short name for logs and status (`sha256`, `sha256-mem`).
    fn name(&self) -> &'static str;
}

fn compress(block: &[u8; 64]) -> [u32; 8] {
    let mut h = IV;
    sha2::compress256(&mut h, std::slice::from_ref(GenericArray::from_slice(block)));
    h
}

fn store(h: &[u32; 8], out: &mut [u8]) {
    for (i, w) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
}

/// `state = SHA-256(state)`: exactly the standard digest of the 32-byte
/// state (one padded block), computed with one compression call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256Chain;

impl Step for Sha256Chain {
    fn run(&self, state: &mut State, n: u64) {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(state);
        block[32] = 0x80;
        // Message length: 256 bits, big-endian, in the last 8 bytes.
        block[62] = 0x01;
        for _ in 0..n {
            let h = compress(&block);
            store(&h, &mut block[..32]);
        }
        state.copy_from_slice(&block[..32]);
    }

    fn name(&self) -> &'static str {
        "sha256"
    }
}

/// Memory-hard step: `state = SHA-256-compress(IV, state ‖ dataset[state mod N])`,
/// where the index is the state's first 8 bytes (little-endian) and `N` the
/// dataset's 32-byte items. Every step depends on a read the previous step
/// chose, so the dataset must be at hand; it is read-only, so any segment can
/// be recomputed from its starting checkpoint.
#[derive(Debug)]
pub struct MemoryHard {
    data: Dataset,
}

impl MemoryHard {
    /// A step over `data`.
    pub fn new(data: Dataset) -> Self {
        Self { data }
    }
}

impl Step for MemoryHard {
    fn run(&self, state: &mut State, n: u64) {
        let items = self.data.items();
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(state);
        for _ in 0..n {
            let idx = u64::from_le_bytes(block[..8].try_into().expect("8 bytes")) % items;
            block[32..].copy_from_slice(&self.data.item(idx));
            let h = compress(&block);
            store(&h, &mut block[..32]);
        }
        state.copy_from_slice(&block[..32]);
    }

    fn name(&self) -> &'static str {
        "sha256-mem"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn sha256_chain_is_the_standard_digest() {
        let mut s = [7u8; 32];
        let mut expected = s;
        for _ in 0..1000 {
            expected = Sha256::digest(expected).into();
        }
        Sha256Chain.run(&mut s, 1000);
        assert_eq!(s, expected);
    }

    #[test]
    fn memory_hard_reads_the_dataset() {
        let a = MemoryHard::new(Dataset::fill(&[1; 32], 1).unwrap());
        let b = MemoryHard::new(Dataset::fill(&[2; 32], 1).unwrap());
        let (mut x, mut y) = ([9u8; 32], [9u8; 32]);
        a.run(&mut x, 100);
        b.run(&mut y, 100);
        assert_ne!(x, y, "another dataset gives another chain");
        let mut z = [9u8; 32];
        a.run(&mut z, 60);
        a.run(&mut z, 40);
        assert_eq!(x, z, "runs compose");
    }
}
