//! RFC 6962 Merkle tree hashing, audit paths and consistency proofs.
//!
//! Guarantees:
//! - Hashes are exactly those of RFC 6962 §2.1 (SHA-256; leaf = `H(0x00 || data)`,
//!   node = `H(0x01 || left || right)`, the empty tree hashes to `SHA-256("")`), so any
//!   RFC 6962 / RFC 9162 client can check our roots and proofs.
//! - [`MerkleTree`] appends in O(1) amortised time and answers the root, an inclusion proof
//!   or a consistency proof for *any* past tree size in O(log² n), because it keeps every
//!   complete power-of-two subtree hash (about 64 bytes per leaf in memory).
//! - [`verify_inclusion`] and [`verify_consistency`] are the iterative algorithms of
//!   RFC 9162 §2.1.3.2 and §2.1.4.2: they accept a proof only if it has exactly the right
//!   length and recomputes exactly the given root(s).

use ring::digest::{Context, SHA256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The requested tree size is larger than the tree (or older size > newer size).
    #[error("tree size {requested} is out of range (available: {available})")]
    SizeOutOfRange { requested: u64, available: u64 },
    /// The proof has the wrong number of hashes for the given sizes.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The proof recomputes a different root than the one given.
    #[error("proof does not match the root")]
    RootMismatch,
}

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Hash {
    finish(Context::new(&SHA256))
}

/// The RFC 6962 leaf hash `SHA-256(0x00 || data)`.
pub fn hash_leaf(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    finish(ctx)
}

/// The RFC 6962 interior node hash `SHA-256(0x01 || left || right)`.
pub fn hash_children(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

fn finish(ctx: Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only RFC 6962 Merkle tree over leaf hashes, kept entirely in memory.
///
/// `levels[k][i]` is the hash of the complete subtree over leaves
/// `[i * 2^k, (i + 1) * 2^k)`; `levels[0]` holds the leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hash at `index`, if present.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// Appends a leaf hash (see [`hash_leaf`]) and returns its index.
    pub fn push(&mut self, leaf_hash: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf_hash);
        let index = self.levels[0].len() as u64 - 1;
        let mut level = 0;
        while self.levels[level].len() & 1 == 0 {
            let n = self.levels[level].len();
            let parent = hash_children(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
        index
    }

    /// MTH(D[start : start + n]); the caller guarantees `n >= 1` and `start + n <= size`.
    fn subtree(&self, start: u64, n: u64) -> Hash {
        if n.is_power_of_two() && start & (n - 1) == 0 {
            let k = n.trailing_zeros() as usize;
            // Invariant: levels[k] holds floor(size / 2^k) entries and start + n <= size,
            // so the complete subtree starting at `start` exists.
            return self.levels[k][(start >> k) as usize];
        }
        let k = split_point(n);
        hash_children(&self.subtree(start, k), &self.subtree(start + k, n - k))
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeOutOfRange {
                requested: size,
                available: self.size(),
            });
        }
        Ok(())
    }

    /// The root of the tree made of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        let size = self.size();
        if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        }
    }

    /// The audit path (RFC 6962 §2.1.1) of leaf `index` in the tree of size `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out);
        Ok(out)
    }

    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
        if n == 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, k, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, out);
            out.push(self.subtree(start, k));
        }
    }

    /// The consistency proof (RFC 6962 §2.1.2) between sizes `old <= new`.
    /// Empty when `old == 0` or `old == new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new)?;
        if old > new {
            return Err(ProofError::SizeOutOfRange {
                requested: old,
                available: new,
            });
        }
        let mut out = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut out);
        }
        Ok(out)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Hash>) {
        if m == n {
            if !complete {
                out.push(self.subtree(start, n));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, k, complete, out);
            out.push(self.subtree(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.subtree(start, k));
        }
    }
}

/// Computes the root implied by an audit path (RFC 9162 §2.1.3.2, steps 1–4).
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = hash_children(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = hash_children(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of size `size` with root `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, size, proof)?;
    if computed == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of size `old_size` with root `old_root` is a prefix of the tree of
/// size `new_size` with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Edge cases: `old_size == new_size` needs an empty proof and equal roots; `old_size == 0`
/// needs an empty proof and `old_root` equal to the empty-tree root.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOutOfRange {
            requested: old_size,
            available: new_size,
        });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        let expected_old = if old_size == 0 {
            empty_root()
        } else {
            *new_root
        };
        return if *old_root == expected_old {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // Step 2: a power-of-two old tree is itself a node of the new tree.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);

    let mut fnode = old_size - 1;
    let mut snode = new_size - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = hash_children(c, &fr);
            sr = hash_children(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = hash_children(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The RFC 6962 reference leaves (certificate-transparency / transparency-dev/merkle).
    fn reference_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect()
    }

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_tree() -> MerkleTree {
        let mut t = MerkleTree::new();
        for leaf in reference_leaves() {
            t.push(hash_leaf(&leaf));
        }
        t
    }

    fn tree_of(n: u64) -> MerkleTree {
        let mut t = MerkleTree::new();
        for i in 0..n {
            t.push(hash_leaf(&i.to_be_bytes()));
        }
        t
    }

    #[test]
    fn known_answers_empty() {
        assert_eq!(
            empty_root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(MerkleTree::new().root(), empty_root());
        assert_eq!(
            hash_leaf(b""),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
    }

    #[test]
    fn reference_roots_for_every_size() {
        let t = reference_tree();
        for (i, want) in ROOTS.iter().enumerate() {
            assert_eq!(t.root_at(i as u64 + 1).unwrap(), h(want), "size {}", i + 1);
        }
        assert_eq!(t.root(), h(ROOTS[7]));
        assert!(t.root_at(9).is_err());
    }

    /// Inclusion vectors from transparency-dev/merkle proof/verify_test.go
    /// (there the leaf number is 1-based).
    #[test]
    fn reference_inclusion_proofs() {
        let t = reference_tree();
        let cases: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let leaves = reference_leaves();
        for (index, size, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let got = t.inclusion_proof(index, size).unwrap();
            assert_eq!(got, want, "index {index} size {size}");
            let leaf = hash_leaf(&leaves[index as usize]);
            let root = h(ROOTS[size as usize - 1]);
            verify_inclusion(&leaf, index, size, &got, &root).unwrap();
        }
    }

    /// Consistency vectors from transparency-dev/merkle proof/verify_test.go.
    #[test]
    fn reference_consistency_proofs() {
        let t = reference_tree();
        let cases: [(u64, u64, &[&str]); 5] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (old, new, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let got = t.consistency_proof(old, new).unwrap();
            assert_eq!(got, want, "{old} -> {new}");
            let r1 = h(ROOTS[old as usize - 1]);
            let r2 = h(ROOTS[new as usize - 1]);
            verify_consistency(old, new, &r1, &r2, &got).unwrap();
            if !got.is_empty() {
                assert!(verify_consistency(old, new, &r2, &r1, &got).is_err());
            }
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let e = empty_root();
        let some = hash_leaf(b"x");
        assert!(verify_consistency(0, 0, &e, &e, &[]).is_ok());
        assert!(verify_consistency(0, 5, &e, &some, &[]).is_ok());
        assert!(verify_consistency(0, 5, &some, &some, &[]).is_err());
        assert!(verify_consistency(1, 1, &some, &some, &[]).is_ok());
        assert!(verify_consistency(1, 1, &some, &e, &[]).is_err());
        assert!(verify_consistency(1, 1, &some, &some, &[e]).is_err());
        assert!(verify_consistency(2, 1, &some, &some, &[]).is_err());
        assert!(verify_consistency(1, 2, &some, &e, &[]).is_err());
        assert!(verify_inclusion(&some, 0, 0, &[], &some).is_err());
        assert!(verify_inclusion(&some, 0, 1, &[], &some).is_ok());
        assert!(verify_inclusion(&some, 1, 1, &[], &some).is_err());
    }

    fn flip(proof: &[Hash], i: usize, bit: u8) -> Vec<Hash> {
        let mut p = proof.to_vec();
        p[i][0] ^= 1 << bit;
        p
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn inclusion_proofs_verify_and_mutations_fail(size in 1u64..300, idx_seed in any::<u64>(), bit in 0u8..8) {
            let t = tree_of(size);
            let index = idx_seed % size;
            let root = t.root_at(size).unwrap();
            let leaf = t.leaf_hash(index).unwrap();
            let proof = t.inclusion_proof(index, size).unwrap();
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());

            // Wrong leaf, wrong root, wrong index, wrong size.
            prop_assert!(verify_inclusion(&hash_leaf(b"other"), index, size, &proof, &root).is_err());
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &empty_root()).is_err());
            if index + 1 < size {
                prop_assert!(verify_inclusion(&leaf, index + 1, size, &proof, &root).is_err());
            }
            if index > 0 {
                prop_assert!(verify_inclusion(&leaf, index - 1, size, &proof, &root).is_err());
            }
            prop_assert!(verify_inclusion(&leaf, index, size * 2, &proof, &root).is_err());
            if size > 1 && index < size / 2 {
                prop_assert!(verify_inclusion(&leaf, index, size / 2, &proof, &root).is_err());
            }
            // Flipped bit in each element.
            for i in 0..proof.len() {
                prop_assert!(verify_inclusion(&leaf, index, size, &flip(&proof, i, bit), &root).is_err());
            }
            // Truncated and extended proofs.
            if !proof.is_empty() {
                prop_assert!(verify_inclusion(&leaf, index, size, &proof[..proof.len() - 1], &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            prop_assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
            let mut prefixed = vec![leaf];
            prefixed.extend_from_slice(&proof);
            prop_assert!(verify_inclusion(&leaf, index, size, &prefixed, &root).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_mutations_fail(new in 1u64..300, old_seed in any::<u64>(), bit in 0u8..8) {
            let t = tree_of(new);
            let old = old_seed % new + 1; // 1..=new
            let r1 = t.root_at(old).unwrap();
            let r2 = t.root_at(new).unwrap();
            let proof = t.consistency_proof(old, new).unwrap();
            prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_ok());
            if old == new {
                prop_assert!(proof.is_empty());
                return Ok(());
            }
            prop_assert!(verify_consistency(old, new, &r2, &r1, &proof).is_err(), "swapped roots");
            prop_assert!(verify_consistency(old, new, &empty_root(), &r2, &proof).is_err());
            prop_assert!(verify_consistency(old, new, &r1, &empty_root(), &proof).is_err());
            prop_assert!(verify_consistency(old - 1, new, &r1, &r2, &proof).is_err());
            prop_assert!(verify_consistency(old + 1, new, &r1, &r2, &proof).is_err());
            prop_assert!(verify_consistency(old, new * 2, &r1, &r2, &proof).is_err());
            prop_assert!(verify_consistency(old, new, &r1, &r2, &[]).is_err());
            for i in 0..proof.len() {
                prop_assert!(verify_consistency(old, new, &r1, &r2, &flip(&proof, i, bit)).is_err());
            }
            prop_assert!(verify_consistency(old, new, &r1, &r2, &proof[..proof.len() - 1]).is_err());
            for extra in [r1, r2, proof[0]] {
                let mut longer = proof.clone();
                longer.push(extra);
                prop_assert!(verify_consistency(old, new, &r1, &r2, &longer).is_err());
                let mut prefixed = vec![extra];
                prefixed.extend_from_slice(&proof);
                prop_assert!(verify_consistency(old, new, &r1, &r2, &prefixed).is_err());
            }
        }
    }

    /// The cached tree agrees with a direct recursive MTH on every prefix.
    #[test]
    fn cached_roots_match_naive_mth() {
        fn mth(leaves: &[Hash]) -> Hash {
            match leaves.len() {
                0 => empty_root(),
                1 => leaves[0],
                n => {
                    let k = split_point(n as u64) as usize;
                    hash_children(&mth(&leaves[..k]), &mth(&leaves[k..]))
                }
            }
        }
        let t = tree_of(70);
        let leaves: Vec<Hash> = (0..70).map(|i| t.leaf_hash(i).unwrap()).collect();
        for n in 0..=70u64 {
            assert_eq!(t.root_at(n).unwrap(), mth(&leaves[..n as usize]));
        }
    }
}
