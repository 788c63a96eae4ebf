//! Continuity chains: every epoch, each stored dataset's chain is extended
//! with proofs of chunks the epoch's output selects,
//! `link_n = H(link_prev ‖ epoch output ‖ H(proof_1) ‖ … ‖ H(proof_k))`, and
//! all links are aggregated chains -> groups -> regions -> a global root
//! (binary BLAKE3 Merkle trees at each level, built in parallel) that the
//! node signs. A continuity proof for (dataset, epoch) is the link, the chunk
//! proofs behind it, the previous link, and the path from the link to the
//! signed root.

use rayon::prelude::*;

use crate::availability::challenge::ChunkProof;
use crate::availability::tree::{leaves, verify_leaf};

/// A 32-byte hash.
pub type H = [u8; 32];

/// The first link of a dataset's chain.
pub fn start_link(replica_root: &H) -> H {
    *blake3::Hasher::new()
        .update(b"vigil/continuity-start/v1")
        .update(replica_root)
        .finalize()
        .as_bytes()
}

/// The leaves epoch `output` selects in a dataset.
pub fn select(output: &H, replica_root: &H, size: u64, k: usize) -> Vec<u64> {
    let mut h = blake3::Hasher::new();
    h.update(b"vigil/continuity/v1");
    h.update(output);
    h.update(replica_root);
    let mut xof = h.finalize_xof();
    let n = leaves(size);
    (0..k)
        .map(|_| {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            u64::from_le_bytes(b) % n
        })
        .collect()
}

/// Digest of one chunk proof (index, leaf, siblings).
pub fn proof_digest(p: &ChunkProof) -> H {
    let mut h = blake3::Hasher::new();
    h.update(&p.index.to_be_bytes());
    h.update(&(p.leaf.len() as u32).to_be_bytes());
    h.update(&p.leaf);
    for s in &p.siblings {
        h.update(s);
    }
    *h.finalize().as_bytes()
}

/// The next link.
pub fn link(prev: &H, output: &H, digests: &[H]) -> H {
    let mut h = blake3::Hasher::new();
    h.update(b"vigil/link/v1");
    h.update(prev);
    h.update(output);
    for d in digests {
        h.update(d);
    }
    *h.finalize().as_bytes()
}

fn node(l: &H, r: &H) -> H {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(l);
    h.update(r);
    *h.finalize().as_bytes()
}

/// Merkle root (pairs hashed with a `0x01` prefix; an odd last node carried up; empty: zeros).
pub fn merkle_root(leaves: &[H]) -> H {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| if p.len() == 2 { node(&p[0], &p[1]) } else { p[0] })
            .collect();
    }
    level[0]
}

/// Siblings of leaf `i` up to the root.
pub fn merkle_path(leaves: &[H], mut i: usize) -> Vec<H> {
    let mut out = Vec::new();
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        if (i ^ 1) < level.len() {
            out.push(level[i ^ 1]);
        }
        level = level
            .chunks(2)
            .map(|p| if p.len() == 2 { node(&p[0], &p[1]) } else { p[0] })
            .collect();
        i >>= 1;
    }
    out
}

/// Recomputes the root of `n` leaves from leaf `i` and its path.
pub fn merkle_climb(leaf: &H, mut i: usize, mut n: usize, path: &[H]) -> Result<H, String> {
    let mut cur = *leaf;
    let mut next = path.iter();
    while n > 1 {
        if (i ^ 1) < n {
            let s = next.next().ok_or("the path is too short")?;
            cur = if i & 1 == 0 { node(&cur, s) } else { node(s, &cur) };
        }
        i >>= 1;
        n = n.div_ceil(2);
    }
    if next.next().is_some() {
        return Err("the path is too long".into());
    }
    Ok(cur)
}

/// The aggregation of one epoch's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Group roots (one per `group_size` links).
    pub groups: Vec<H>,
    /// Region roots (one per `region_size` groups).
    pub regions: Vec<H>,
    /// Global root.
    pub root: H,
}

/// Aggregates links (in the caller's fixed order) with rayon: the result
/// depends only on the links, never on the thread count.
pub fn aggregate(links: &[H], group_size: usize, region_size: usize) -> Hierarchy {
    let groups: Vec<H> = links.par_chunks(group_size.max(1)).map(merkle_root).collect();
    let regions: Vec<H> = groups.par_chunks(region_size.max(1)).map(merkle_root).collect();
    let root = merkle_root(&regions);
    Hierarchy {
        groups,
        regions,
        root,
    }
}

/// Path of chain `index` from its link to the global root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Chain index (position in the epoch's order).
    pub index: u64,
    /// Chains in the epoch.
    pub chains: u64,
    /// Siblings within the group.
    pub in_group: Vec<H>,
    /// Siblings within the region.
    pub in_region: Vec<H>,
    /// Siblings among the regions.
    pub in_global: Vec<H>,
}

impl Hierarchy {
    /// The path of chain `i` (`links` as aggregated).
    pub fn path(&self, links: &[H], i: usize, group_size: usize, region_size: usize) -> Path {
        let g = i / group_size;
        let r = g / region_size;
        let group = &links[g * group_size..((g + 1) * group_size).min(links.len())];
        let region = &self.groups[r * region_size..((r + 1) * region_size).min(self.groups.len())];
        Path {
            index: i as u64,
            chains: links.len() as u64,
            in_group: merkle_path(group, i % group_size),
            in_region: merkle_path(region, g % region_size),
            in_global: merkle_path(&self.regions, r),
        }
    }
}

/// Checks that `link` is chain `path.index` under `root`.
pub fn verify_path(
    link: &H,
    path: &Path,
    group_size: usize,
    region_size: usize,
    root: &H,
) -> Result<(), String> {
    let (i, n) = (path.index as usize, path.chains as usize);
    if i >= n {
        return Err(format!("chain {i} of {n}"));
    }
    let groups = n.div_ceil(group_size);
    let regions = groups.div_ceil(region_size);
    let (g, r) = (i / group_size, i / group_size / region_size);
    let in_group = (n - g * group_size).min(group_size);
    let in_region = (groups - r * region_size).min(region_size);
    let gr =
        merkle_climb(link, i % group_size, in_group, &path.in_group).map_err(|e| format!("group: {e}"))?;
    let rr =
        merkle_climb(&gr, g % region_size, in_region, &path.in_region).map_err(|e| format!("region: {e}"))?;
    let top = merkle_climb(&rr, r, regions, &path.in_global).map_err(|e| format!("global: {e}"))?;
    if &top == root {
        Ok(())
    } else {
        Err("the path does not lead to the signed root".into())
    }
}

/// Bytes a node signs for an epoch's root.
pub fn root_message(epoch: u64, chains: u64, root: &H) -> Vec<u8> {
    [
        b"vigil/continuity-root/v1".as_slice(),
        &epoch.to_be_bytes(),
        &chains.to_be_bytes(),
        root,
    ]
    .concat()
}

/// Everything a verifier needs for (dataset, epoch), signature aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Epoch.
    pub epoch: u64,
    /// Replica root.
    pub replica_root: H,
    /// Dataset bytes.
    pub size: u64,
    /// Epoch the previous link belongs to (`epoch - 1` for an unbroken chain; 0: the start).
    pub prev_epoch: u64,
    /// Previous link.
    pub prev_link: H,
    /// This epoch's link.
    pub link: H,
    /// The selected chunks' proofs.
    pub chunks: Vec<ChunkProof>,
    /// Path to the root.
    pub path: Path,
    /// Global root.
    pub root: H,
}

impl Evidence {
    /// Checks the chain of evidence against the epoch's `output` for a
    /// dataset of `size` bytes — the size the verifier knows (the one
    /// announced), never the one the proof carries, which shapes the tree and
    /// the selection: a proof for another size is refused outright. Then the
    /// selection, every chunk proof, the link, and the path to the root; and
    /// that the chain is unbroken (the previous link is from `epoch - 1`, or
    /// the chain starts here).
    pub fn verify(
        &self,
        output: &H,
        size: u64,
        k: usize,
        group_size: usize,
        region_size: usize,
    ) -> Result<(), String> {
        if self.size != size {
            return Err(format!(
                "the proof answers for a {}-byte dataset; it is {size} bytes",
                self.size
            ));
        }
        let want = select(output, &self.replica_root, size, k);
        let got: Vec<u64> = self.chunks.iter().map(|c| c.index).collect();
        if want != got {
            return Err(format!(
                "chunks {got:?} are not the ones epoch {} selects ({want:?})",
                self.epoch
            ));
        }
        for c in &self.chunks {
            verify_leaf(&self.replica_root, size, c.index, &c.leaf, &c.siblings)
                .map_err(|e| format!("chunk {}: {e}", c.index))?;
        }
        if self.prev_epoch == 0 && self.prev_link != start_link(&self.replica_root) {
            return Err("a chain's first link must start from the dataset's start link".into());
        }
        if self.prev_epoch != 0 && self.prev_epoch + 1 != self.epoch {
            return Err(format!(
                "broken chain: epoch {} extends epoch {}; epochs {}..={} have no link",
                self.epoch,
                self.prev_epoch,
                self.prev_epoch + 1,
                self.epoch - 1
            ));
        }
        let digests: Vec<H> = self.chunks.iter().map(proof_digest).collect();
        if link(&self.prev_link, output, &digests) != self.link {
            return Err(
                "the link is not the hash of its previous link, the epoch output and the chunks".into(),
            );
        }
        verify_path(&self.link, &self.path, group_size, region_size, &self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(n: usize) -> Vec<H> {
        (0..n)
            .map(|i| *blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
            .collect()
    }

    #[test]
    fn every_path_climbs_to_the_root() {
        for n in [1, 2, 3, 7, 999, 1000, 1001, 12_345] {
            let l = links(n);
            let h = aggregate(&l, 100, 10);
            for i in (0..n).step_by((n / 50).max(1)).chain([n - 1]) {
                let p = h.path(&l, i, 100, 10);
                verify_path(&l[i], &p, 100, 10, &h.root).unwrap_or_else(|e| panic!("n {n} i {i}: {e}"));
                let mut bad = l[i];
                bad[0] ^= 1;
                assert!(verify_path(&bad, &p, 100, 10, &h.root).is_err());
            }
        }
    }
}

/// `/vigil/<g8>/continuity/1` request: the proof of one dataset at one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofRequest {
    /// Replica root.
    pub replica_root: H,
    /// Epoch.
    pub epoch: u64,
}

impl ProofRequest {
    /// `R_p ‖ epoch`.
    pub fn encode(&self) -> Vec<u8> {
        [self.replica_root.as_slice(), &self.epoch.to_be_bytes()].concat()
    }

    /// Decodes 40 bytes.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != 40 {
            return Err(format!("continuity request of {} bytes; 40 expected", b.len()));
        }
        Ok(Self {
            replica_root: b[..32].try_into().map_err(|_| "root")?,
            epoch: u64::from_be_bytes(b[32..].try_into().map_err(|_| "epoch")?),
        })
    }
}

/// A signed continuity proof on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProof {
    /// The evidence.
    pub evidence: Evidence,
    /// Signature over [`root_message`].
    pub signature: Vec<u8>,
}

fn put_hashes(out: &mut Vec<u8>, v: &[H]) {
    out.push(v.len() as u8);
    for h in v {
        out.extend_from_slice(h);
    }
}

impl SignedProof {
    /// Encoding: `1` ‖ fields (big-endian), or `0` ‖ reason for a refusal.
    pub fn encode(&self) -> Vec<u8> {
        let e = &self.evidence;
        let mut out = vec![1u8];
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.replica_root);
        out.extend_from_slice(&e.size.to_be_bytes());
        out.extend_from_slice(&e.prev_epoch.to_be_bytes());
        out.extend_from_slice(&e.prev_link);
        out.extend_from_slice(&e.link);
        out.push(e.chunks.len() as u8);
        for c in &e.chunks {
            out.extend_from_slice(&c.index.to_be_bytes());
            out.extend_from_slice(&(c.leaf.len() as u16).to_be_bytes());
            out.extend_from_slice(&c.leaf);
            put_hashes(&mut out, &c.siblings);
        }
        out.extend_from_slice(&e.path.index.to_be_bytes());
        out.extend_from_slice(&e.path.chains.to_be_bytes());
        put_hashes(&mut out, &e.path.in_group);
        put_hashes(&mut out, &e.path.in_region);
        put_hashes(&mut out, &e.path.in_global);
        out.extend_from_slice(&e.root);
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes; `Err` names what is wrong (a refusal's reason included).
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let s = b
                .get(at..at + n)
                .ok_or_else(|| format!("continuity proof truncated at byte {at}"))?;
            at += n;
            Ok(s)
        };
        match take(1)?[0] {
            1 => {}
            0 => return Err(format!("refused: {}", String::from_utf8_lossy(&b[1..]))),
            v => return Err(format!("continuity proof kind {v}")),
        }
        let u64v = |s: &[u8]| u64::from_be_bytes(s.try_into().expect("8 bytes"));
        let h = |s: &[u8]| -> H { s.try_into().expect("32 bytes") };
        let epoch = u64v(take(8)?);
        let replica_root = h(take(32)?);
        let size = u64v(take(8)?);
        let prev_epoch = u64v(take(8)?);
        let prev_link = h(take(32)?);
        let link_v = h(take(32)?);
        let n = take(1)?[0] as usize;
        if n > 16 {
            return Err(format!("{n} chunks; at most 16"));
        }
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            let index = u64v(take(8)?);
            let len = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
            if len == 0 || len > crate::availability::tree::LEAF {
                return Err(format!("leaf of {len} bytes"));
            }
            let leaf = take(len)?.to_vec();
            let k = take(1)?[0] as usize;
            let siblings = (0..k).map(|_| take(32).map(h)).collect::<Result<_, _>>()?;
            chunks.push(ChunkProof {
                index,
                leaf,
                siblings,
                keyed: [0; 32],
            });
        }
        let index = u64v(take(8)?);
        let chains = u64v(take(8)?);
        let mut hashes = || -> Result<Vec<H>, String> {
            let k = take(1)?[0] as usize;
            (0..k).map(|_| take(32).map(h)).collect()
        };
        let (in_group, in_region, in_global) = (hashes()?, hashes()?, hashes()?);
        let root = h(take(32)?);
        let sl = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let signature = take(sl)?.to_vec();
        if at != b.len() {
            return Err(format!("{} trailing bytes", b.len() - at));
        }
        Ok(Self {
            evidence: Evidence {
                epoch,
                replica_root,
                size,
                prev_epoch,
                prev_link,
                link: link_v,
                chunks,
                path: Path {
                    index,
                    chains,
                    in_group,
                    in_region,
                    in_global,
                },
                root,
            },
            signature,
        })
    }

    /// A refusal on the wire.
    pub fn refusal(why: &str) -> Vec<u8> {
        [&[0u8][..], why.as_bytes()].concat()
    }
}
