//! Merkle tree hashing and proofs of RFC 6962 / RFC 9162 §2.1: the shape of the paperwork log.
//!
//! Leaves hash as SHA-256(0x00 || data) and interior nodes as SHA-256(0x01 || left || right), so a
//! leaf can never be passed off as a node. Proofs are *generated* with the recursive definitions of
//! RFC 6962 §2.1.1 and §2.1.2 over a slice of leaf hashes, and *verified* with the iterative
//! algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2: the two halves are written independently, so the
//! tests that run one against the other check both.
//!
//! Where the RFCs are silent we follow transparency-dev/merkle: a consistency proof between equal
//! sizes is empty and the roots must be equal; a consistency proof from size 0 is empty and always
//! valid. Every hash that enters from outside goes through [`hash_from_slice`], which insists on
//! exactly [`HASH_LEN_BYTES`].

use sha2::{Digest, Sha256};

/// Length of every hash in the tree (SHA-256).
pub const HASH_LEN_BYTES: usize = 32;

/// A leaf, node or root hash.
pub type Hash = [u8; HASH_LEN_BYTES];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a proof could not be built or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is out of range for a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength { expected: usize, got: usize },
    #[error("root of the tree of size {size} does not match: expected {expected}, computed {got}")]
    MismatchedRoot {
        size: u64,
        expected: String,
        got: String,
    },
    #[error("a hash must be {HASH_LEN_BYTES} bytes, got {got}")]
    BadHashLength { got: usize },
    #[error("tree size cannot decrease from {old} to {new}")]
    SizeDecreased { old: u64, new: u64 },
}

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([LEAF_PREFIX])
        .chain_update(data)
        .finalize()
        .into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_children(left, right)
}

// The RFC defines node hashing over byte strings of any length; only the typed form is public so
// that callers cannot hash a truncated child by mistake.
fn hash_children(left: &[u8], right: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([NODE_PREFIX])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Checks that bytes from outside (a proof, a stored root) are exactly one hash long.
pub fn hash_from_slice(bytes: &[u8]) -> Result<Hash, MerkleError> {
    Hash::try_from(bytes).map_err(|_| MerkleError::BadHashLength { got: bytes.len() })
}

/// MTH of RFC 6962 §2.1 over leaf hashes (not leaf data).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// The audit path (RFC 6962 §2.1.1) of leaf `index` in the tree made of all of `leaves`.
/// To prove against an older tree, pass the prefix `&leaves[..size]`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = leaves.len() as u64;
    let m = usize::try_from(index)
        .ok()
        .filter(|&m| m < leaves.len())
        .ok_or(MerkleError::IndexOutOfRange { index, size })?;
    let mut proof = Vec::new();
    audit_path(m, leaves, &mut proof);
    Ok(proof)
}

/// The consistency proof (RFC 6962 §2.1.2) from the tree of the first `old_size` leaves to the tree
/// of all of `leaves`. Empty when `old_size` is 0 or equals the current size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let m = usize::try_from(old_size)
        .ok()
        .filter(|&m| m <= leaves.len())
        .ok_or(MerkleError::SizeDecreased {
            old: old_size,
            new: leaves.len() as u64,
        })?;
    let mut proof = Vec::new();
    if m != 0 && m != leaves.len() {
        subproof(m, leaves, true, &mut proof);
    }
    Ok(proof)
}

/// Verifies that `leaf` is at `index` in the tree of `tree_size` leaves with this `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    tree_size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange {
            index,
            size: tree_size,
        });
    }
    let expected = inclusion_proof_len(index, tree_size);
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    check_root(tree_size, root, &r)
}

/// Verifies that the tree of `size2` leaves with `root2` extends the tree of `size1` leaves with
/// `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if size1 > size2 {
        return Err(MerkleError::SizeDecreased {
            old: size1,
            new: size2,
        });
    }
    if size1 == size2 || size1 == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                expected: 0,
                got: proof.len(),
            });
        }
        // Every tree extends the empty tree, whatever root the caller believed it had.
        return if size1 == 0 {
            Ok(())
        } else {
            check_root(size2, root2, root1)
        };
    }
    let expected = consistency_proof_len(size1, size2);
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    // When size1 is a power of two its root is a node of the new tree and the proof leaves it out.
    let (seed, path) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        let Some((first, rest)) = proof.split_first() else {
            return Err(MerkleError::WrongProofLength { expected, got: 0 });
        };
        (first, rest)
    };
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in path {
        if sn == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    check_root(size1, root1, &fr)?;
    check_root(size2, root2, &sr)
}

/// The root of a growing log in O(log n) memory: the roots of the perfect subtrees that cover
/// `[0, size)`, largest first (transparency-dev's "compact range"). The hub keeps one in memory so
/// that appending a leaf never re-reads the stored leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    // One entry per set bit of `size`, the perfect subtree for the highest bit first.
    subtrees: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash, merging equal-sized subtrees like a binary counter carries.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut carry = self.size;
        while carry & 1 == 1 {
            let Some(left) = self.subtrees.pop() else { break };
            hash = node_hash(&left, &hash);
            carry >>= 1;
        }
        self.subtrees.push(hash);
        self.size += 1;
    }

    /// MTH of the leaves appended so far; equal to [`root`] over them.
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The largest power of two strictly less than `n`, for `n >= 2`: where MTH splits.
fn split_point(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// PATH(m, D[n]) of RFC 6962 §2.1.1, appended bottom-up to `out`.
fn audit_path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    let (left, right) = leaves.split_at(k);
    if m < k {
        audit_path(m, left, out);
        out.push(root(right));
    } else {
        audit_path(m - k, right, out);
        out.push(root(left));
    }
}

/// SUBPROOF(m, D[n], b) of RFC 6962 §2.1.2 for 0 < m <= n, appended bottom-up to `out`.
fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    if m == leaves.len() {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split_point(leaves.len());
    let (left, right) = leaves.split_at(k);
    if m <= k {
        subproof(m, left, complete, out);
        out.push(root(right));
    } else {
        subproof(m - k, right, false, out);
        out.push(root(left));
    }
}

fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

// The length is known before hashing anything, so a short or padded proof is refused with the exact
// count instead of a generic root mismatch. Shifts use checked_shr because the width can reach 64.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// For 0 < size1 < size2: the inclusion path of leaf size1-1 above the perfect subtree that ends
/// there, plus that subtree's root unless size1 is a power of two.
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let inner = bit_len((size1 - 1) ^ (size2 - 1));
    let border = (size1 - 1).checked_shr(inner).unwrap_or(0).count_ones();
    let shift = size1.trailing_zeros();
    let seed = usize::from(!size1.is_power_of_two());
    seed + (inner.saturating_sub(shift) + border) as usize
}

fn check_root(size: u64, expected: &Hash, computed: &Hash) -> Result<(), MerkleError> {
    if expected == computed {
        Ok(())
    } else {
        Err(MerkleError::MismatchedRoot {
            size,
            expected: hex::encode(expected),
            got: hex::encode(computed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6962 hashes children of any length; transparency-dev pins this value for 4-byte children
    // (reference_tree.json, `node_hash("N123","N456")`), which the typed public form cannot take.
    #[test]
    fn node_hash_matches_transparency_dev_vector() {
        assert_eq!(
            hex::encode(hash_children(b"N123", b"N456")),
            "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
        );
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        let got: Vec<usize> = (2..=9).map(split_point).collect();
        assert_eq!(got, [1, 2, 2, 4, 4, 4, 4, 8]);
    }
}
