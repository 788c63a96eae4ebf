//! Availability: datasets as BLAKE3 trees of 1 KiB leaves, the
//! prover-specific encoding, and the challenge protocol.

pub mod challenge;
pub mod encode;
pub mod tree;
