//! vigil protocol logic: synchronous, deterministic, tested without a runtime.
//! The actors in `vigil-actors` add I/O, time and supervision around it.
//!
//! - [`vdf`]: the checkpointed hash-chain VDF (SHA-256 with SHA-NI, and a
//!   memory-hard mode over a read-only Argon2d dataset), with full and sampled
//!   parallel verification.
//! - [`epoch`]: the epoch record, its input rule, compact encoding and validation.
//!
//! ```
//! use vigil_protocols::vdf::{Vdf, VdfParams};
//! use vigil_genesis::VdfMode;
//! let params = VdfParams { iterations: 10_000, segments: 10, mode: VdfMode::Hash, memory_mib: 0 };
//! let input = [7u8; 32];
//! let vdf = Vdf::new(params, &input).unwrap();
//! let proof = vdf.prove(&input);
//! assert!(vdf.verify_full(&input, &proof).is_ok());
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod availability;
pub mod chain;
pub mod continuity;
pub mod epoch;
pub mod vdf;
