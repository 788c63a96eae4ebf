//! BLAKE3 trees with 1 KiB leaves: the root is exactly `blake3::hash(data)`,
//! and a leaf is proven by the chaining values of its siblings up to it.
//!
//! BLAKE3's left-balanced tree equals pairing nodes level by level, an odd
//! last node carried up unchanged; so the node `j` of level `l` covers
//! leaves `[j·2^l, (j+1)·2^l)` and its sibling is `j ^ 1` when that exists.
//! A [`Tree`] stores the levels from 8-leaf groups (level 3) up: hashing a
//! group keeps BLAKE3's SIMD across its 8 chunks, so building runs at the
//! crate's own speed, and a proof recomputes only its leaf's 8 KiB group.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};
use rayon::prelude::*;

/// Leaf (BLAKE3 chunk) size.
pub const LEAF: usize = 1024;
/// Levels below the stored ones (groups of 2^3 leaves).
pub const GROUP_LEVEL: u32 = 3;
/// Leaves per group.
pub const GROUP: usize = 1 << GROUP_LEVEL;

/// Number of 1 KiB leaves of `size` bytes (at least 1).
pub fn leaves(size: u64) -> u64 {
    size.div_ceil(LEAF as u64).max(1)
}

/// Nodes at level `l` over `n` leaves.
pub fn level_len(n: u64, l: u32) -> u64 {
    n.div_ceil(1u64 << l)
}

/// Chaining value of the subtree of `bytes` starting at byte `offset` (a
/// multiple of 1 KiB; `bytes` is one leaf or an aligned group).
pub fn subtree_cv(offset: u64, bytes: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(bytes);
    h.finalize_non_root()
}

/// Group chaining values of `data` at byte `offset` (a multiple of 8 KiB), in parallel.
pub fn group_cvs(offset: u64, data: &[u8]) -> Vec<ChainingValue> {
    data.par_chunks(GROUP * LEAF)
        .enumerate()
        .map(|(i, g)| subtree_cv(offset + (i * GROUP * LEAF) as u64, g))
        .collect()
}

/// The stored levels of a tree: `levels[0]` are the group CVs (tree level 3),
/// each next one pairs the previous, up to a single node or two (the root's children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Bytes covered.
    pub size: u64,
    /// Levels from the groups up.
    pub levels: Vec<Vec<ChainingValue>>,
}

impl Tree {
    /// The tree over group CVs of a `size`-byte input.
    pub fn from_groups(size: u64, groups: Vec<ChainingValue>) -> Self {
        let mut levels = vec![groups];
        while levels.last().is_some_and(|l| l.len() > 2) {
            let prev = levels.last().expect("non-empty");
            let next = prev
                .chunks(2)
                .map(|p| match p {
                    [a, b] => merge_subtrees_non_root(a, b, Mode::Hash),
                    [a] => *a,
                    _ => unreachable!("chunks of 2"),
                })
                .collect();
            levels.push(next);
        }
        Self { size, levels }
    }

    /// The tree of `data` (groups hashed in parallel).
    pub fn build(data: &[u8]) -> Self {
        Self::from_groups(data.len() as u64, group_cvs(0, data))
    }

    /// The root: `blake3::hash` of the input. Inputs of one group or less
    /// need their bytes (`first_group`) since no stored node covers the root.
    pub fn root(&self, first_group: &[u8]) -> [u8; 32] {
        let top = self.levels.last().expect("a tree has a level");
        match top.as_slice() {
            [a, b] => *merge_subtrees_root(a, b, Mode::Hash).as_bytes(),
            _ => *blake3::hash(first_group).as_bytes(),
        }
    }

    /// Serialized: size (u64) ‖ group count (u64) ‖ group CVs (the upper levels are recomputed on load).
    pub fn encode(&self) -> Vec<u8> {
        let g = &self.levels[0];
        let mut out = Vec::with_capacity(16 + 32 * g.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&(g.len() as u64).to_be_bytes());
        for cv in g {
            out.extend_from_slice(cv);
        }
        out
    }

    /// Reads [`Tree::encode`]'s output.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < 16 {
            return Err(format!("tree file of {} bytes", b.len()));
        }
        let size = u64::from_be_bytes(b[..8].try_into().map_err(|_| "size")?);
        let n = u64::from_be_bytes(b[8..16].try_into().map_err(|_| "count")?);
        if n != level_len(leaves(size), GROUP_LEVEL) || b.len() as u64 != 16 + 32 * n {
            return Err(format!(
                "tree file of {} bytes does not fit {size} bytes of data",
                b.len()
            ));
        }
        let groups = b[16..]
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        Ok(Self::from_groups(size, groups))
    }

    /// Sibling CVs of leaf `index` from level 0 up, given the bytes of its
    /// group (`group_bytes`, starting at the group's first leaf).
    pub fn siblings(&self, index: u64, group_bytes: &[u8]) -> Vec<ChainingValue> {
        let n = leaves(self.size);
        let group_start = index / GROUP as u64 * GROUP as u64;
        // The group's own levels 0..3, recomputed from its bytes.
        let mut level: Vec<ChainingValue> = group_bytes
            .chunks(LEAF)
            .enumerate()
            .map(|(i, leaf)| subtree_cv((group_start + i as u64) * LEAF as u64, leaf))
            .collect();
        let mut out = Vec::new();
        let mut j = index;
        for l in 0..GROUP_LEVEL {
            if (j ^ 1) < level_len(n, l) {
                out.push(level[((j ^ 1) - (group_start >> l)) as usize]);
            }
            level = level
                .chunks(2)
                .map(|p| match p {
                    [a, b] => merge_subtrees_non_root(a, b, Mode::Hash),
                    [a] => *a,
                    _ => unreachable!(),
                })
                .collect();
            j >>= 1;
        }
        for stored in &self.levels {
            if (j ^ 1) < stored.len() as u64 {
                out.push(stored[(j ^ 1) as usize]);
            }
            j >>= 1;
        }
        out
    }
}

/// Checks that `leaf` is leaf `index` of a `size`-byte input whose BLAKE3
/// hash is `root`, with `siblings` as [`Tree::siblings`] gives them.
pub fn verify_leaf(
    root: &[u8; 32],
    size: u64,
    index: u64,
    leaf: &[u8],
    siblings: &[ChainingValue],
) -> Result<(), String> {
    let n = leaves(size);
    if index >= n {
        return Err(format!("leaf {index} of a {n}-leaf dataset"));
    }
    let want_len = if index + 1 == n {
        size as usize - index as usize * LEAF
    } else {
        LEAF
    };
    if leaf.len() != want_len {
        return Err(format!(
            "leaf {index} has {} bytes; {want_len} expected",
            leaf.len()
        ));
    }
    if n == 1 {
        return match (siblings.is_empty(), blake3::hash(leaf).as_bytes() == root) {
            (true, true) => Ok(()),
            (false, _) => Err("a one-leaf dataset has no siblings".into()),
            (true, false) => Err("the leaf does not hash to the root".into()),
        };
    }
    let mut cv = subtree_cv(index * LEAF as u64, leaf);
    let mut j = index;
    let mut next = siblings.iter();
    let mut l = 0;
    loop {
        let len = level_len(n, l);
        if (j ^ 1) < len {
            let s = next.next().ok_or_else(|| format!("the path ends at level {l}"))?;
            let (a, b) = if j & 1 == 0 { (&cv, s) } else { (s, &cv) };
            if len == 2 {
                if next.next().is_some() {
                    return Err("siblings beyond the root".into());
                }
                return if merge_subtrees_root(a, b, Mode::Hash).as_bytes() == root {
                    Ok(())
                } else {
                    Err(format!("leaf {index} does not lead to the root"))
                };
            }
            cv = merge_subtrees_non_root(a, b, Mode::Hash);
        }
        j >>= 1;
        l += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 1024) as u8).collect()
    }

    #[test]
    fn root_is_blake3_and_every_leaf_proves() {
        for size in [
            1,
            1024,
            1025,
            3000,
            8 * 1024,
            8 * 1024 + 1,
            9 * 1024,
            17 * 1024 + 5,
            100 * 1024,
            1 << 20,
        ] {
            let d = data(size);
            let t = Tree::build(&d);
            let root = t.root(&d[..d.len().min(GROUP * LEAF)]);
            assert_eq!(&root, blake3::hash(&d).as_bytes(), "size {size}");
            let n = leaves(size as u64);
            for i in (0..n).step_by((n as usize / 40).max(1)).chain([n - 1]) {
                let gs = (i as usize / GROUP) * GROUP * LEAF;
                let group = &d[gs..(gs + GROUP * LEAF).min(d.len())];
                let sib = t.siblings(i, group);
                let leaf = &d[i as usize * LEAF..((i as usize + 1) * LEAF).min(d.len())];
                verify_leaf(&root, size as u64, i, leaf, &sib)
                    .unwrap_or_else(|e| panic!("size {size} leaf {i}: {e}"));
                if size > 2 * LEAF {
                    let mut bad = leaf.to_vec();
                    bad[0] ^= 1;
                    assert!(verify_leaf(&root, size as u64, i, &bad, &sib).is_err());
                }
            }
            assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        }
    }
}
