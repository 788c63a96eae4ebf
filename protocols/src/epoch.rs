//! The epoch record, its input rule, compact encoding and validation.
//!
//! `input_n = SHA-256("vigil/epoch/v1" ‖ genesis ‖ n ‖ output_{n-1} ‖ len(anchor_n) ‖ anchor_n)`
//! with `n` a big-endian u64, `output_0` the genesis hash (epoch 0 is the
//! genesis itself; the first computed epoch is 1) and `anchor_n` empty or
//! the 32-byte hash of a finalized external block; `output_n = VDF(input_n)`.
//!
//! Encoding (big-endian): version `1` (u8) ‖ number (u64) ‖ anchor length (u8,
//! 0 or 32) ‖ anchor ‖ output (32) ‖ checkpoint count (u16) ‖ checkpoints
//! (32 each): 44 + 32·k bytes without an anchor.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::vdf::{Proof, State, Vdf, VdfError, VdfParams};

/// Domain tag of the input hash.
pub const DOMAIN: &[u8] = b"vigil/epoch/v1";
/// Encoding version.
pub const VERSION: u8 = 1;
/// Anchor length when present.
pub const ANCHOR_LEN: usize = 32;
/// Most checkpoints an encoded epoch may carry (the genesis limit).
pub const MAX_CHECKPOINTS: usize = 4096;

/// Why an epoch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// The bytes are not an epoch.
    #[error("malformed epoch: {0}")]
    Malformed(String),
    /// Not the epoch that comes next.
    #[error("epoch {got} does not follow epoch {head} (expected {})", head + 1)]
    OutOfOrder {
        /// Local head.
        head: u64,
        /// Received.
        got: u64,
    },
    /// The anchor does not match this node's view of the external chain.
    #[error("anchor {got} differs from the expected {expected}")]
    Anchor {
        /// Expected anchor (hex, empty for none).
        expected: String,
        /// Received (hex).
        got: String,
    },
    /// The VDF proof does not verify.
    #[error("epoch {number}: {source}")]
    Vdf {
        /// Epoch number.
        number: u64,
        /// Why.
        source: VdfError,
    },
}

/// One epoch of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// Epoch number (1, 2, ...).
    pub number: u64,
    /// External anchor: empty or 32 bytes.
    pub anchor: Vec<u8>,
    /// VDF output: the epoch's entropy.
    pub output: State,
    /// VDF checkpoints `c_1 .. c_{k-1}`.
    pub checkpoints: Vec<State>,
}

/// How much of the VDF proof to recompute.
pub enum Check<'a> {
    /// Every segment (in parallel).
    Full,
    /// This many segments, chosen with the verifier's generator.
    Sampled {
        /// Segments recomputed.
        samples: u32,
        /// The verifier's randomness.
        rng: &'a mut dyn RngCore,
    },
}

impl std::fmt::Debug for Check<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("Full"),
            Self::Sampled { samples, .. } => write!(f, "Sampled({samples})"),
        }
    }
}

/// The input of epoch `number`.
pub fn input(genesis: &[u8; 32], number: u64, prev_output: &State, anchor: &[u8]) -> State {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(genesis);
    h.update(number.to_be_bytes());
    h.update(prev_output);
    h.update([anchor.len() as u8]);
    h.update(anchor);
    h.finalize().into()
}

impl Epoch {
    /// The epoch computed from `input` by `proof`.
    pub fn from_proof(number: u64, anchor: Vec<u8>, proof: Proof) -> Self {
        Self {
            number,
            anchor,
            output: proof.output,
            checkpoints: proof.checkpoints,
        }
    }

    /// This epoch's input given the previous output.
    pub fn input(&self, genesis: &[u8; 32], prev_output: &State) -> State {
        input(genesis, self.number, prev_output, &self.anchor)
    }

    /// The proof part.
    pub fn proof(&self) -> Proof {
        Proof {
            output: self.output,
            checkpoints: self.checkpoints.clone(),
        }
    }

    /// Compact encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(44 + self.anchor.len() + 32 * self.checkpoints.len());
        out.push(VERSION);
        out.extend_from_slice(&self.number.to_be_bytes());
        out.push(self.anchor.len() as u8);
        out.extend_from_slice(&self.anchor);
        out.extend_from_slice(&self.output);
        out.extend_from_slice(&(self.checkpoints.len() as u16).to_be_bytes());
        for c in &self.checkpoints {
            out.extend_from_slice(c);
        }
        out
    }

    /// Decodes [`Epoch::encode`]'s output; every deviation is an error naming it.
    pub fn decode(bytes: &[u8]) -> Result<Self, EpochError> {
        let bad = |m: String| EpochError::Malformed(m);
        let mut r = Reader { bytes, at: 0 };
        let version = r.take::<1>("version")?[0];
        if version != VERSION {
            return Err(bad(format!(
                "version {version}; this node reads version {VERSION}"
            )));
        }
        let number = u64::from_be_bytes(r.take("number")?);
        if number == 0 {
            return Err(bad("epoch number 0 is the genesis; epochs start at 1".into()));
        }
        let anchor_len = r.take::<1>("anchor length")?[0] as usize;
        let anchor = match anchor_len {
            0 => Vec::new(),
            ANCHOR_LEN => r.take::<ANCHOR_LEN>("anchor")?.to_vec(),
            n => return Err(bad(format!("anchor of {n} bytes; allowed 0 or {ANCHOR_LEN}"))),
        };
        let output = r.take::<32>("output")?;
        let count = u16::from_be_bytes(r.take("checkpoint count")?) as usize;
        if count > MAX_CHECKPOINTS {
            return Err(bad(format!("{count} checkpoints; at most {MAX_CHECKPOINTS}")));
        }
        let mut checkpoints = Vec::with_capacity(count);
        for _ in 0..count {
            checkpoints.push(r.take::<32>("checkpoint")?);
        }
        if r.at != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - r.at)));
        }
        Ok(Self {
            number,
            anchor,
            output,
            checkpoints,
        })
    }

    /// Checks this epoch as the successor of an epoch with `prev_output`:
    /// the anchor (when the node expects one), the checkpoint count and the
    /// VDF proof. The caller checks the number follows its head.
    pub fn validate(
        &self,
        genesis: &[u8; 32],
        params: &VdfParams,
        prev_output: &State,
        expected_anchor: Option<&[u8]>,
        check: Check<'_>,
    ) -> Result<(), EpochError> {
        if let Some(want) = expected_anchor {
            if want != self.anchor.as_slice() {
                return Err(EpochError::Anchor {
                    expected: hex::encode(want),
                    got: hex::encode(&self.anchor),
                });
            }
        }
        let vdf_err = |source| EpochError::Vdf {
            number: self.number,
            source,
        };
        let expected = params.segments as usize - 1;
        if self.checkpoints.len() != expected {
            return Err(vdf_err(VdfError::CheckpointCount {
                expected,
                got: self.checkpoints.len(),
            }));
        }
        let input = self.input(genesis, prev_output);
        let vdf = Vdf::new(*params, &input).map_err(vdf_err)?;
        let proof = self.proof();
        match check {
            Check::Full => vdf.verify_full(&input, &proof),
            Check::Sampled { samples, rng } => vdf.verify_sampled(&input, &proof, samples, rng),
        }
        .map_err(vdf_err)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EpochError> {
        let end = self.at + N;
        let Some(s) = self.bytes.get(self.at..end) else {
            return Err(EpochError::Malformed(format!(
                "truncated at the {what} (byte {} of {})",
                self.at,
                self.bytes.len()
            )));
        };
        self.at = end;
        Ok(s.try_into().expect("length checked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_genesis::VdfMode;

    fn params() -> VdfParams {
        VdfParams {
            iterations: 2_000,
            segments: 4,
            mode: VdfMode::Hash,
            memory_mib: 0,
        }
    }

    fn epoch(genesis: &[u8; 32], number: u64, prev: &State) -> Epoch {
        let input = input(genesis, number, prev, &[]);
        let proof = Vdf::new(params(), &input).unwrap().prove(&input);
        Epoch::from_proof(number, Vec::new(), proof)
    }

    #[test]
    fn encoding_round_trips_and_is_compact() {
        let g = [5u8; 32];
        let e = epoch(&g, 1, &g);
        let bytes = e.encode();
        assert_eq!(bytes.len(), 44 + 32 * 3);
        assert_eq!(Epoch::decode(&bytes).unwrap(), e);
        let mut anchored = e.clone();
        anchored.anchor = vec![9; 32];
        assert_eq!(Epoch::decode(&anchored.encode()).unwrap(), anchored);
    }

    #[test]
    fn malformed_bytes_name_the_problem() {
        let g = [5u8; 32];
        let bytes = epoch(&g, 1, &g).encode();
        let msg = |b: &[u8]| Epoch::decode(b).unwrap_err().to_string();
        assert!(
            msg(&bytes[..20]).contains("truncated at the output"),
            "{}",
            msg(&bytes[..20])
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(msg(&long).contains("1 trailing bytes"));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(msg(&v2).contains("version 2"));
        let mut anchor = bytes.clone();
        anchor[9] = 7;
        assert!(msg(&anchor).contains("allowed 0 or 32"));
        assert!(msg(&[]).contains("truncated at the version"));
    }

    #[test]
    fn validation_checks_link_anchor_and_proof() {
        let g = [5u8; 32];
        let e1 = epoch(&g, 1, &g);
        e1.validate(&g, &params(), &g, None, Check::Full).unwrap();
        let e2 = epoch(&g, 2, &e1.output);
        e2.validate(&g, &params(), &e1.output, Some(&[]), Check::Full)
            .unwrap();
        // Built on the wrong predecessor: the first segment starts elsewhere.
        let err = e2.validate(&g, &params(), &g, None, Check::Full).unwrap_err();
        assert!(err.to_string().contains("segment 0 of 4"), "{err}");
        let err = e2
            .validate(&g, &params(), &e1.output, Some(&[1; 32]), Check::Full)
            .unwrap_err();
        assert!(matches!(err, EpochError::Anchor { .. }), "{err}");
    }
}
