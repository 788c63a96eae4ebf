//! The read-only dataset of memory-hard mode, filled from the epoch input.
//!
//! The fill is one pass of Argon2d (`t = 1`, one lane) over the whole size:
//! each 1 KiB block depends on its predecessor and on an earlier block chosen
//! by the data, so an item cannot be recomputed on demand without most of the
//! dataset — unlike a XOF, where any item costs one hash.

use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::VdfError;

/// Salt of the dataset fill (domain separation).
const SALT: &[u8] = b"vigil/vdf/dataset/v1";
/// 32-byte items per 1 KiB Argon2 block.
const ITEMS_PER_BLOCK: u64 = 32;

/// A filled dataset: `mib` MiB of 32-byte items.
pub struct Dataset {
    blocks: Vec<Block>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("mib", &(self.blocks.len() >> 10))
            .finish()
    }
}

impl Dataset {
    /// Fills `mib` MiB from `input` (1..=4096 MiB).
    pub fn fill(input: &[u8; 32], mib: u32) -> Result<Self, VdfError> {
        if !(1..=4096).contains(&mib) {
            return Err(VdfError::Params(format!(
                "dataset of {mib} MiB: allowed 1..=4096"
            )));
        }
        let kib = mib * 1024;
        let params = Params::new(kib, 1, 1, None).map_err(|e| VdfError::Params(format!("argon2: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2d, Version::V0x13, params);
        let mut blocks = vec![Block::default(); kib as usize];
        argon
            .fill_memory(input, SALT, &mut blocks)
            .map_err(|e| VdfError::Params(format!("argon2 fill: {e}")))?;
        Ok(Self { blocks })
    }

    /// Number of 32-byte items.
    pub fn items(&self) -> u64 {
        self.blocks.len() as u64 * ITEMS_PER_BLOCK
    }

    /// Item `idx` (< [`Dataset::items`]) as bytes (its four words little-endian).
    #[inline]
    pub fn item(&self, idx: u64) -> [u8; 32] {
        let block = self.blocks[(idx / ITEMS_PER_BLOCK) as usize].as_ref();
        let at = (idx % ITEMS_PER_BLOCK) as usize * 4;
        let mut out = [0u8; 32];
        for (i, w) in block[at..at + 4].iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_deterministic_and_input_dependent() {
        let a = Dataset::fill(&[1; 32], 1).unwrap();
        let b = Dataset::fill(&[1; 32], 1).unwrap();
        let c = Dataset::fill(&[2; 32], 1).unwrap();
        assert_eq!(a.items(), 32 * 1024);
        for i in [0, 1, 31, 32, 1000, a.items() - 1] {
            assert_eq!(a.item(i), b.item(i));
            assert_ne!(a.item(i), c.item(i));
        }
        assert_ne!(a.item(0), a.item(1));
    }

    #[test]
    fn size_out_of_range_is_refused() {
        let e = Dataset::fill(&[0; 32], 0).unwrap_err().to_string();
        assert!(e.contains("allowed 1..=4096"), "{e}");
    }
}
