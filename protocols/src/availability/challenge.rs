//! The challenge protocol `/vigil/<g8>/challenge/1`: messages, the index
//! derivation, and verification of the answers.
//!
//! Indices come from `BLAKE3("vigil/challenge/v1" ‖ epoch output ‖ nonce ‖ R_p)`
//! read as a stream of little-endian u64s, each reduced modulo the leaf
//! count: the challenger's nonce and the epoch's entropy decide, the prover
//! nothing. A proof per index is the raw leaf, its sibling chaining values up
//! to `R_p` and `blake3::keyed_hash(nonce, leaf)`.

use blake3::hazmat::ChainingValue;

use super::tree::{leaves, verify_leaf, LEAF};

/// Most indices in one challenge.
pub const MAX_INDICES: usize = 16;
/// Most sibling CVs in one path (2^64 leaves).
pub const MAX_SIBLINGS: usize = 64;
const V1: u8 = 1;

/// The indices for a challenge.
pub fn derive_indices(
    epoch_output: &[u8; 32],
    nonce: &[u8; 32],
    replica_root: &[u8; 32],
    size: u64,
    count: usize,
) -> Vec<u64> {
    let mut h = blake3::Hasher::new();
    h.update(b"vigil/challenge/v1");
    h.update(epoch_output);
    h.update(nonce);
    h.update(replica_root);
    let mut xof = h.finalize_xof();
    let n = leaves(size);
    (0..count)
        .map(|_| {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            u64::from_le_bytes(b) % n
        })
        .collect()
}

/// A request on the challenge protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Prove these leaves of a replica.
    Challenge(ChallengeRequest),
    /// Show one leaf both as replica and as plaintext (the verifier recomputes the encoding).
    Audit {
        /// Replica root.
        replica_root: [u8; 32],
        /// Leaf index.
        index: u64,
    },
}

/// A challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRequest {
    /// Replica root `R_p`.
    pub replica_root: [u8; 32],
    /// Epoch whose output seeds the indices.
    pub epoch: u64,
    /// The challenger's nonce.
    pub nonce: [u8; 32],
    /// Leaf indices (must equal the derivation).
    pub indices: Vec<u64>,
}

/// One leaf and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProof {
    /// Leaf index.
    pub index: u64,
    /// The raw leaf (1 KiB, shorter only for the last).
    pub leaf: Vec<u8>,
    /// Sibling chaining values, leaf level first.
    pub siblings: Vec<ChainingValue>,
    /// `blake3::keyed_hash(nonce, leaf)` (challenges; zero in audits).
    pub keyed: [u8; 32],
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// One proof per index, in request order.
    Proofs(Vec<ChunkProof>),
    /// The replica leaf (vs `R_p`) and the plaintext leaf (vs `R`).
    Audit {
        /// Replica leaf.
        replica: ChunkProof,
        /// Plaintext leaf.
        plain: ChunkProof,
    },
    /// The prover does not hold this replica.
    Missing,
    /// The prover refuses (indices not derived from the entropy, unknown epoch...).
    Refused(String),
    /// The prover is serving as much as it allows (the asker's share, or
    /// every slot): try again after this many ms. Not a failed proof.
    Busy(u32),
}

/// What a challenge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every proof verified in time.
    Ok,
    /// A proof does not verify.
    Wrong(String),
    /// Verified, but after the deadline.
    Late,
    /// The prover says it does not hold the replica (or did not answer).
    Missing,
    /// The answer does not decode or does not fit the request.
    Malformed(String),
    /// The prover refused.
    Refused(String),
    /// The prover was busy (not a failure, and no credit either).
    Busy,
    /// No answer in time, or the request failed on the way (a frozen or
    /// vanished prover): as bad as `missing`. The detail names the wait.
    Timeout(String),
}

impl Outcome {
    /// `ok | wrong | late | missing | malformed | refused | busy | timeout`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Wrong(_) => "wrong",
            Self::Late => "late",
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::Refused(_) => "refused",
            Self::Busy => "busy",
            Self::Timeout(_) => "timeout",
        }
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Wrong(s) | Self::Malformed(s) | Self::Refused(s) | Self::Timeout(s) => Some(s),
            _ => None,
        }
    }
}

/// Checks a challenge answer (not the deadline: the caller times it).
pub fn verify(req: &ChallengeRequest, size: u64, resp: &Response) -> Outcome {
    let proofs = match resp {
        Response::Proofs(p) => p,
        Response::Missing => return Outcome::Missing,
        Response::Refused(why) => return Outcome::Refused(why.clone()),
        Response::Busy(_) => return Outcome::Busy,
        Response::Audit { .. } => return Outcome::Malformed("an audit answer to a challenge".into()),
    };
    if proofs.len() != req.indices.len() {
        return Outcome::Malformed(format!(
            "{} proofs for {} indices",
            proofs.len(),
            req.indices.len()
        ));
    }
    for (p, &i) in proofs.iter().zip(&req.indices) {
        if p.index != i {
            return Outcome::Malformed(format!("proof for leaf {} where {i} was asked", p.index));
        }
        if let Err(e) = verify_leaf(&req.replica_root, size, i, &p.leaf, &p.siblings) {
            return Outcome::Wrong(e);
        }
        if blake3::keyed_hash(&req.nonce, &p.leaf).as_bytes() != &p.keyed {
            return Outcome::Wrong(format!("keyed hash of leaf {i} does not match the nonce"));
        }
    }
    Outcome::Ok
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn proof(&mut self, p: &ChunkProof) {
        self.u64(p.index);
        self.u16(p.leaf.len() as u16);
        self.bytes(&p.leaf);
        self.u8(p.siblings.len() as u8);
        for s in &p.siblings {
            self.bytes(s);
        }
        self.bytes(&p.keyed);
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl R<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| format!("truncated at the {what} (byte {} of {})", self.at, self.b.len()))?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_be_bytes(
            self.take(2, what)?.try_into().map_err(|_| what.to_string())?,
        ))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().map_err(|_| what.to_string())?,
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8, what)?.try_into().map_err(|_| what.to_string())?,
        ))
    }
    fn h32(&mut self, what: &str) -> Result<[u8; 32], String> {
        self.take(32, what)?.try_into().map_err(|_| what.to_string())
    }
    fn proof(&mut self) -> Result<ChunkProof, String> {
        let index = self.u64("index")?;
        let len = self.u16("leaf length")? as usize;
        if len == 0 || len > LEAF {
            return Err(format!("leaf of {len} bytes; 1..={LEAF} allowed"));
        }
        let leaf = self.take(len, "leaf")?.to_vec();
        let n = self.u8("sibling count")? as usize;
        if n > MAX_SIBLINGS {
            return Err(format!("{n} siblings; at most {MAX_SIBLINGS}"));
        }
        let siblings = (0..n).map(|_| self.h32("sibling")).collect::<Result<_, _>>()?;
        let keyed = self.h32("keyed hash")?;
        Ok(ChunkProof {
            index,
            leaf,
            siblings,
            keyed,
        })
    }
    fn end(&self) -> Result<(), String> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(format!("{n} trailing bytes")),
        }
    }
}

impl Request {
    /// Encoding: version ‖ kind (1 challenge, 2 audit) ‖ fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(vec![V1]);
        match self {
            Self::Challenge(c) => {
                w.u8(1);
                w.bytes(&c.replica_root);
                w.u64(c.epoch);
                w.bytes(&c.nonce);
                w.u8(c.indices.len() as u8);
                for i in &c.indices {
                    w.u64(*i);
                }
            }
            Self::Audit { replica_root, index } => {
                w.u8(2);
                w.bytes(replica_root);
                w.u64(*index);
            }
        }
        w.0
    }

    /// Decodes; every deviation is an error naming it.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let mut r = R { b, at: 0 };
        if r.u8("version")? != V1 {
            return Err("challenge request version: 1 expected".into());
        }
        let out = match r.u8("kind")? {
            1 => {
                let replica_root = r.h32("replica root")?;
                let epoch = r.u64("epoch")?;
                let nonce = r.h32("nonce")?;
                let n = r.u8("index count")? as usize;
                if n == 0 || n > MAX_INDICES {
                    return Err(format!("{n} indices; 1..={MAX_INDICES} allowed"));
                }
                let indices = (0..n).map(|_| r.u64("index")).collect::<Result<_, _>>()?;
                Self::Challenge(ChallengeRequest {
                    replica_root,
                    epoch,
                    nonce,
                    indices,
                })
            }
            2 => Self::Audit {
                replica_root: r.h32("replica root")?,
                index: r.u64("index")?,
            },
            k => return Err(format!("request kind {k}; 1 (challenge) or 2 (audit) allowed")),
        };
        r.end()?;
        Ok(out)
    }
}

impl Response {
    /// Encoding: version ‖ kind (0 proofs, 1 missing, 2 refused, 3 audit,
    /// 4 busy) ‖ fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(vec![V1]);
        match self {
            Self::Proofs(ps) => {
                w.u8(0);
                w.u8(ps.len() as u8);
                for p in ps {
                    w.proof(p);
                }
            }
            Self::Missing => w.u8(1),
            Self::Refused(why) => {
                w.u8(2);
                let b = &why.as_bytes()[..why.len().min(1024)];
                w.u16(b.len() as u16);
                w.bytes(b);
            }
            Self::Audit { replica, plain } => {
                w.u8(3);
                w.proof(replica);
                w.proof(plain);
            }
            Self::Busy(ms) => {
                w.u8(4);
                w.u32(*ms);
            }
        }
        w.0
    }

    /// Decodes; every deviation is an error naming it.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let mut r = R { b, at: 0 };
        if r.u8("version")? != V1 {
            return Err("challenge response version: 1 expected".into());
        }
        let out = match r.u8("kind")? {
            0 => {
                let n = r.u8("proof count")? as usize;
                if n > MAX_INDICES {
                    return Err(format!("{n} proofs; at most {MAX_INDICES}"));
                }
                Self::Proofs((0..n).map(|_| r.proof()).collect::<Result<_, _>>()?)
            }
            1 => Self::Missing,
            2 => {
                let n = r.u16("reason length")? as usize;
                let s = r.take(n, "reason")?;
                Self::Refused(String::from_utf8_lossy(s).into_owned())
            }
            3 => Self::Audit {
                replica: r.proof()?,
                plain: r.proof()?,
            },
            4 => Self::Busy(r.u32("retry after")?),
            k => return Err(format!("response kind {k}; 0..=4 allowed")),
        };
        r.end()?;
        Ok(out)
    }
}

/// Bytes of one chunk proof at a dataset size (what the encoder writes).
pub fn proof_bytes(size: u64) -> usize {
    let n = leaves(size);
    let mut sib = 0;
    let mut l = 0;
    while super::tree::level_len(n, l) > 1 {
        sib += 1;
        l += 1;
    }
    8 + 2 + LEAF + 1 + 32 * sib + 32
}

/// The prover's check: the indices must be those derived from the epoch's
/// output, the nonce and `R_p`.
pub fn check_request(req: &ChallengeRequest, epoch_output: &[u8; 32], size: u64) -> Result<(), String> {
    let want = derive_indices(
        epoch_output,
        &req.nonce,
        &req.replica_root,
        size,
        req.indices.len(),
    );
    if want == req.indices {
        Ok(())
    } else {
        Err(format!(
            "indices {:?} are not the ones derived from epoch {}'s output, the nonce and the replica root",
            req.indices, req.epoch
        ))
    }
}

/// A proof of leaf `index`, given the bytes of its 8-leaf group.
pub fn prove_leaf(
    tree: &super::tree::Tree,
    index: u64,
    group_bytes: &[u8],
    nonce: Option<&[u8; 32]>,
) -> ChunkProof {
    let within = (index as usize % super::tree::GROUP) * LEAF;
    let leaf = group_bytes[within..(within + LEAF).min(group_bytes.len())].to_vec();
    let keyed = nonce.map_or([0; 32], |n| *blake3::keyed_hash(n, &leaf).as_bytes());
    ChunkProof {
        index,
        siblings: tree.siblings(index, group_bytes),
        leaf,
        keyed,
    }
}
