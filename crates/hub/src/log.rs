//! The paperwork log in memory: an RFC 6962 Merkle tree whose every historical root, inclusion proof
//! and consistency proof costs O(log n) hashes, and the signed checkpoints that commit to it.
//!
//! Level k keeps the hash of every complete, aligned block of 2^k leaves (`levels[k][j]` is the root
//! of leaves `[j * 2^k, (j + 1) * 2^k)`), about two hashes per leaf in all. Every subtree that the
//! recursive definitions of RFC 6962 §2.1 visit is either such a block or the right edge of a tree: a
//! range that starts at a multiple of its own power-of-two ceiling, whose root folds the blocks of its
//! length's binary decomposition. So proofs walk the RFC's recursion, but no subtree is ever rehashed
//! from its leaves. The hashing rules stay in [`stacknet_protocol::merkle`]; the tests check that every
//! proof here is the one `merkle::inclusion_proof` / `merkle::consistency_proof` builds.
//!
//! What a leaf is ([`paperwork_leaf`]), the origin line ([`log_origin`]) and the bodies of the three
//! log endpoints ([`inclusion_json`], [`consistency_json`], [`checkpoint_json`], typed in
//! `stacknet_api::types`) are defined here once and described in docs/PROTOCOL.md ("Paperwork log");
//! the client side, pure, is `stacknet_api::proof` (re-exported here), which the SDK and CLI use;
//! [`verify`] holds its tests against this log.

pub mod verify;

use std::fmt;
use std::sync::{PoisonError, RwLock};

use stacknet_api::types::{ConsistencyProof, InclusionProof, LogCheckpoint};
use stacknet_protocol::checkpoint::{vkey_string, Checkpoint};
use stacknet_protocol::merkle::{self, Hash};
use stacknet_protocol::SecretKey;

pub use stacknet_api::proof::{
    log_origin, open_checkpoint, paperwork_leaf, verify_consistency_response, verify_inclusion_response,
    LogError, VerifiedConsistency, VerifiedInclusion, LOG_ORIGIN_KEY_HEX_CHARS, LOG_ORIGIN_PREFIX,
};

/// A checkpoint of the log as the hub hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The whole C2SP signed note, signed under the key name `origin`.
    pub note: String,
    /// The note verifier key, `<origin>+<key id>+<base64 key>`, for note-reading tools.
    pub vkey: String,
}

/// The in-memory tree. `Send + Sync`: readers share a lock, [`MerkleLog::append_at`] takes it alone.
/// One task appends (the hub's `SettleWriter`); everyone else only reads.
pub struct MerkleLog {
    tree: RwLock<Levels>,
}

impl fmt::Debug for MerkleLog {
    // Printing a million hashes helps nobody.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleLog").field("size", &self.size()).finish()
    }
}

impl Default for MerkleLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleLog {
    pub fn new() -> Self {
        Self::from_leaves(Vec::new())
    }

    /// Loads a log from its leaf hashes in order (at hub start): one pass per level, n hashes in all.
    pub fn from_leaves(leaves: Vec<Hash>) -> Self {
        Self {
            tree: RwLock::new(Levels::from_leaves(leaves)),
        }
    }

    /// Appends `leaves` as the leaves numbered from `first`, which must be the current size: leaves
    /// are keyed by their index in the stored log, so two appends of the same stored leaves (read at
    /// the same size) cannot both land; the second is refused and the tree is left as it was.
    /// Returns the new size.
    pub fn append_at(&self, first: u64, leaves: &[Hash]) -> Result<u64, LogError> {
        let mut tree = self.tree.write().unwrap_or_else(PoisonError::into_inner);
        let size = tree.size();
        if first != size {
            return Err(LogError::NotNextIndex { first, size });
        }
        tree.append(leaves);
        Ok(tree.size())
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.read().size()
    }

    /// The current size and root, read together.
    pub fn head(&self) -> (u64, Hash) {
        let tree = self.read();
        (tree.size(), tree.range_root(0, tree.len()))
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, LogError> {
        let tree = self.read();
        let size = tree.size();
        if index >= size {
            return Err(LogError::LeafOutOfRange { index, size });
        }
        Ok(tree.block(0, index as usize))
    }

    /// The root of the tree of the first `size` leaves (the empty root for 0).
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        let tree = self.read();
        let size = tree.checked_size(size)?;
        Ok(tree.range_root(0, size))
    }

    /// The audit path of leaf `index` in the tree of the first `tree_size` leaves, bottom-up as in
    /// RFC 6962 §2.1.1.
    pub fn inclusion(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, LogError> {
        let tree = self.read();
        let size = tree.checked_size(tree_size)?;
        if index >= tree_size {
            return Err(LogError::LeafOutOfRange {
                index,
                size: tree_size,
            });
        }
        Ok(tree.inclusion(index as usize, size))
    }

    /// The consistency proof (RFC 6962 §2.1.2) from the tree of `old` leaves to that of `new`;
    /// empty when `old` is 0 or equals `new`.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        let tree = self.read();
        let size = tree.checked_size(new)?;
        if old > new {
            return Err(LogError::SizeDecreased { from: old, to: new });
        }
        Ok(tree.consistency(old as usize, size))
    }

    /// Signs the current size and root as a C2SP checkpoint, with `origin` as origin line and key name
    /// (see [`log_origin`]).
    pub fn checkpoint(&self, origin: &str, key: &SecretKey) -> Result<SignedCheckpoint, LogError> {
        self.checkpoint_with(origin, key, Vec::new())
    }

    /// As [`Self::checkpoint`], with extension lines (the bindings line, `stacknet_api::proof`).
    pub fn checkpoint_with(
        &self,
        origin: &str,
        key: &SecretKey,
        extensions: Vec<String>,
    ) -> Result<SignedCheckpoint, LogError> {
        let (size, root) = self.head();
        let mut checkpoint = Checkpoint::new(origin, size, root);
        checkpoint.extensions = extensions;
        let note = checkpoint.sign(origin, key)?;
        Ok(SignedCheckpoint {
            origin: origin.to_owned(),
            size,
            root,
            note,
            vkey: vkey_string(origin, &key.public_key()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Levels> {
        // A writer never leaves the levels half-built in a way the next append does not finish (see
        // `Levels::append`), and no code under the lock panics, so a poisoned lock is still usable.
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `levels[0]` are the leaves; `levels[k + 1]` has one hash per pair of `levels[k]`, so it holds
/// `levels[k].len() / 2` hashes. There is always a level 0, and a level above every level of two or
/// more hashes.
#[derive(Debug)]
struct Levels {
    levels: Vec<Vec<Hash>>,
}

impl Levels {
    fn from_leaves(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() >= 2) {
            let above = below
                .as_chunks::<2>()
                .0
                .iter()
                .map(|[l, r]| merkle::node_hash(l, r));
            levels.push(above.collect());
        }
        Self { levels }
    }

    fn len(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn append(&mut self, leaves: &[Hash]) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].extend_from_slice(leaves);
        // Each level catches up with the one below from wherever it stands, so an append that stopped
        // half-way would be completed by the next one.
        let mut k = 0;
        while self.levels[k].len() >= 2 {
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            let (lower, upper) = self.levels.split_at_mut(k + 1);
            let (below, above) = (&lower[k], &mut upper[0]);
            let pending = below.get(above.len() * 2..).unwrap_or_default();
            above.extend(
                pending
                    .as_chunks::<2>()
                    .0
                    .iter()
                    .map(|[l, r]| merkle::node_hash(l, r)),
            );
            k += 1;
        }
    }

    /// `requested` as an index bound, if the log has that many leaves.
    fn checked_size(&self, requested: u64) -> Result<usize, LogError> {
        let size = self.size();
        if requested > size {
            return Err(LogError::TreeTooLarge { requested, size });
        }
        // At most the length of a Vec, so it fits.
        Ok(requested as usize)
    }

    /// The complete block `index` of level `level`. Callers stay below the log size, and every block
    /// that ends at or below it is stored.
    fn block(&self, level: u32, index: usize) -> Hash {
        self.levels[level as usize][index]
    }

    /// The root of the complete block of `len` (a power of two) leaves starting at `start`.
    fn perfect_root(&self, start: usize, len: usize) -> Hash {
        let level = len.trailing_zeros();
        self.block(level, start >> level)
    }

    /// MTH of leaves `[start, start + len)`, where `start` is a multiple of the smallest power of two
    /// at least `len`: the blocks of `len`'s binary decomposition, largest first, folded from the right.
    fn range_root(&self, start: usize, len: usize) -> Hash {
        let mut end = start + len;
        let mut acc: Option<Hash> = None;
        for level in (0..usize::BITS).take_while(|&level| len >> level != 0) {
            if (len >> level) & 1 == 1 {
                end -= 1 << level;
                let block = self.block(level, end >> level);
                acc = Some(acc.map_or(block, |right| merkle::node_hash(&block, &right)));
            }
        }
        acc.unwrap_or_else(merkle::empty_root)
    }

    /// PATH(index, D[0:size]) of RFC 6962 §2.1.1 for index < size, walked top-down and returned
    /// bottom-up.
    fn inclusion(&self, index: usize, size: usize) -> Vec<Hash> {
        let mut path = Vec::new();
        let (mut start, mut len) = (0, size);
        while len > 1 {
            let k = split_point(len);
            if index < start + k {
                path.push(self.range_root(start + k, len - k));
                len = k;
            } else {
                path.push(self.perfect_root(start, k));
                start += k;
                len -= k;
            }
        }
        path.reverse();
        path
    }

    /// PROOF(old, D[0:size]) of RFC 6962 §2.1.2 for old <= size, walked top-down, returned bottom-up.
    fn consistency(&self, old: usize, size: usize) -> Vec<Hash> {
        let mut proof = Vec::new();
        if old == 0 || old == size {
            return proof;
        }
        // SUBPROOF(m, D[start:start+len], complete)
        let (mut m, mut start, mut len, mut complete) = (old, 0, size, true);
        while m != len {
            let k = split_point(len);
            if m <= k {
                proof.push(self.range_root(start + k, len - k));
                len = k;
            } else {
                proof.push(self.perfect_root(start, k));
                start += k;
                len -= k;
                m -= k;
                complete = false;
            }
        }
        if !complete {
            proof.push(self.range_root(start, len));
        }
        proof.reverse();
        proof
    }
}

/// The largest power of two strictly less than `n`, for `n >= 2`: where RFC 6962 splits a tree.
fn split_point(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn hex_list(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// The body of `GET /stacknet/v1/log/proof/inclusion`.
pub fn inclusion_json(leaf_index: u64, tree_size: u64, leaf_hash: &Hash, proof: &[Hash]) -> InclusionProof {
    InclusionProof {
        leaf_index,
        tree_size,
        leaf_hash: hex::encode(leaf_hash),
        proof: hex_list(proof),
    }
}

/// The body of `GET /stacknet/v1/log/proof/consistency`.
pub fn consistency_json(from: u64, to: u64, proof: &[Hash]) -> ConsistencyProof {
    ConsistencyProof {
        from,
        to,
        proof: hex_list(proof),
    }
}

/// The body of `GET /stacknet/v1/log/checkpoint`.
pub fn checkpoint_json(checkpoint: &SignedCheckpoint) -> LogCheckpoint {
    LogCheckpoint {
        origin: checkpoint.origin.clone(),
        size: checkpoint.size,
        root: hex::encode(checkpoint.root),
        note: checkpoint.note.clone(),
        vkey: checkpoint.vkey.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;
    use stacknet_protocol::examples;
    use stacknet_protocol::jcs;
    use stacknet_protocol::paperwork::Paperwork;
    use stacknet_protocol::Signed;

    use super::*;

    fn leaves(seed: u64, n: usize) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| merkle::leaf_hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat()))
            .collect()
    }

    /// Every root, inclusion proof and consistency proof of the tree of the first `size` leaves is
    /// the one the protocol crate builds from the leaves themselves.
    fn assert_matches_protocol(log: &MerkleLog, all: &[Hash], size: usize) {
        let prefix = &all[..size];
        let n = size as u64;
        assert_eq!(
            log.root_at(n).expect("in range"),
            merkle::root(prefix),
            "root at {size}"
        );
        for i in 0..n {
            assert_eq!(
                log.inclusion(i, n).expect("in range"),
                merkle::inclusion_proof(prefix, i).expect("in range"),
                "inclusion of {i} at {size}"
            );
        }
        for old in 0..=n {
            assert_eq!(
                log.consistency(old, n).expect("in range"),
                merkle::consistency_proof(prefix, old).expect("in range"),
                "consistency {old} -> {size}"
            );
        }
    }

    /// Appends `all` in chunks of the given lengths (cycled), checking each returned first index.
    fn appended(all: &[Hash], chunks: &[usize]) -> MerkleLog {
        let log = MerkleLog::new();
        let (mut at, mut lens) = (0, chunks.iter().cycle());
        while at < all.len() {
            let len = lens.next().copied().unwrap_or(1).min(all.len() - at);
            assert_eq!(
                log.append_at(at as u64, &all[at..at + len]).expect("next index"),
                (at + len) as u64
            );
            at += len;
        }
        log
    }

    #[test]
    fn small_trees_match_the_protocol_at_every_size() {
        let all = leaves(1, 40);
        let loaded = MerkleLog::from_leaves(all.clone());
        let grown = appended(&all, &[1]);
        for size in 0..=all.len() {
            assert_matches_protocol(&loaded, &all, size);
            assert_matches_protocol(&grown, &all, size);
        }
    }

    // Few cases: the reference proofs are O(n) each and the protocol crate is unoptimised in tests.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn proofs_match_the_protocol(
            seed: u64,
            n in 1usize..300,
            past in 0.0f64..1.0,
            chunks in prop::collection::vec(1usize..40, 1..8),
        ) {
            let all = leaves(seed, n);
            let loaded = MerkleLog::from_leaves(all.clone());
            let grown = appended(&all, &chunks);
            // The current tree, and one historical tree whose right edge is not stored as such.
            let older = 1 + ((n - 1) as f64 * past) as usize;
            // Growing by appends stores exactly what loading does, so checking one checks both.
            prop_assert_eq!(&grown.read().levels, &loaded.read().levels);
            prop_assert_eq!(loaded.size(), n as u64);
            assert_matches_protocol(&loaded, &all, n);
            assert_matches_protocol(&loaded, &all, older);
        }
    }

    #[test]
    fn out_of_range_queries_say_what_is_wrong() {
        let log = MerkleLog::from_leaves(leaves(2, 5));
        let messages = [
            log.inclusion(7, 5).map(|_| ()),
            log.inclusion(5, 5).map(|_| ()),
            log.inclusion(0, 0).map(|_| ()),
            log.inclusion(0, 6).map(|_| ()),
            log.root_at(6).map(|_| ()),
            log.leaf(5).map(|_| ()),
            log.consistency(3, 9).map(|_| ()),
            log.consistency(4, 2).map(|_| ()),
        ]
        .map(|result| result.expect_err("out of range").to_string());
        assert_eq!(
            messages,
            [
                "leaf 7 is not in a tree of size 5",
                "leaf 5 is not in a tree of size 5",
                "leaf 0 is not in a tree of size 0",
                "the log has 5 leaves; there is no tree of size 6 yet",
                "the log has 5 leaves; there is no tree of size 6 yet",
                "leaf 5 is not in a tree of size 5",
                "the log has 5 leaves; there is no tree of size 9 yet",
                "a consistency proof goes from a smaller tree to a larger one, not from size 4 to 2",
            ]
        );
    }

    #[test]
    fn empty_log() {
        let log = MerkleLog::new();
        assert_eq!(log.head(), (0, merkle::empty_root()));
        assert_eq!(log.root_at(0).expect("in range"), merkle::empty_root());
        assert_eq!(log.consistency(0, 0).expect("in range"), Vec::<Hash>::new());
        assert_eq!(log.append_at(0, &[]).expect("next index"), 0);
        assert_eq!(log.size(), 0);
        assert_eq!(format!("{log:?}"), "MerkleLog { size: 0 }");
    }

    #[test]
    fn leaves_are_appended_only_at_the_next_index() {
        let all = leaves(4, 6);
        let log = MerkleLog::new();
        assert_eq!(log.append_at(0, &all[..4]).expect("next index"), 4);
        let before = log.head();
        // The same leaves again (a second catch-up that read the same size), and a gap.
        let refused = [
            log.append_at(0, &all[..4]),
            log.append_at(2, &all[2..6]),
            log.append_at(5, &all[5..]),
        ]
        .map(|r| r.expect_err("not the next index").to_string());
        assert_eq!(
            refused,
            [
                "leaves for index 0 cannot be appended to a tree of size 4: the next leaf is 4",
                "leaves for index 2 cannot be appended to a tree of size 4: the next leaf is 4",
                "leaves for index 5 cannot be appended to a tree of size 4: the next leaf is 4",
            ]
        );
        assert_eq!(log.head(), before);
        assert_eq!(log.append_at(4, &all[4..]).expect("next index"), 6);
        assert_eq!(log.root_at(6).expect("in range"), merkle::root(&all));
    }

    #[test]
    fn is_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MerkleLog>();
    }

    /// transparency-dev's reference tree (RFC 6962 test data), signed with the key of the golden
    /// checkpoint in docs/PROTOCOL.md: the log reproduces that note byte for byte.
    #[test]
    fn checkpoint_reproduces_the_golden_note() {
        let inputs = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"];
        let reference: Vec<Hash> = inputs
            .iter()
            .chain(&["606162636465666768696a6b6c6d6e6f"])
            .map(|h| merkle::leaf_hash(&hex::decode(h).expect("hex")))
            .collect();
        let log = MerkleLog::from_leaves(reference);
        let key = SecretKey::from_seed(&[7; 32]);
        let origin = "stacknet.example/log";
        let checkpoint = log.checkpoint(origin, &key).expect("signs");
        assert_eq!(
            checkpoint.note,
            "stacknet.example/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} stacknet.example/log \
             a9qyjSLzwWeW/v9RFE4j9wNmYhznREXxtTBin6OYRsI72Bhv3JwXKBkBqQKTX4+H5Jkq/ZEywy6+flSVPkIMgfo9Cg8=\n"
        );
        let opened = Checkpoint::open(&checkpoint.note, origin, &key.public_key()).expect("opens");
        assert_eq!((opened.size, opened.root), (checkpoint.size, checkpoint.root));
        assert_eq!(
            serde_json::to_value(checkpoint_json(&checkpoint)).expect("encodes"),
            json!({
                "origin": "stacknet.example/log",
                "size": 8,
                "root": "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
                "note": checkpoint.note,
                "vkey": "stacknet.example/log+6bdab28d+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs",
            })
        );
    }

    #[test]
    fn a_hub_origin_names_its_key() {
        let hub = examples::hub_key().public_key();
        let origin = log_origin(&hub);
        assert_eq!(origin, format!("stacknet.hub/{}", &hub.to_hex()[..16]));
        // The example in docs/PROTOCOL.md.
        assert_eq!(origin, "stacknet.hub/8a88e3dd7409f195");
        assert!(MerkleLog::new().checkpoint(&origin, &examples::hub_key()).is_ok());
    }

    #[test]
    fn paperwork_leaf_is_the_leaf_hash_of_the_canonical_signed_json() {
        let pw = examples::paperwork().expect("signs");
        let value = serde_json::to_value(&pw).expect("encodes");
        assert!(value.get("signature").is_some());
        let canonical = jcs::canonicalize(&value).expect("canonical");
        assert_eq!(
            paperwork_leaf(&pw).expect("leaf"),
            merkle::leaf_hash(canonical.as_bytes())
        );

        // However the JSON was spelled on the way in.
        let pretty = serde_json::to_string_pretty(&pw).expect("encodes");
        let reread: Signed<Paperwork> = serde_json::from_str(&pretty).expect("decodes");
        assert_eq!(
            paperwork_leaf(&reread).expect("leaf"),
            paperwork_leaf(&pw).expect("leaf")
        );

        // The signature is part of the leaf.
        let mut resigned = pw.clone();
        resigned.signature = examples::validator_key().sign(b"something else");
        assert_ne!(
            paperwork_leaf(&resigned).expect("leaf"),
            paperwork_leaf(&pw).expect("leaf")
        );
    }

    #[test]
    fn proof_json_shapes() {
        let all = leaves(3, 6);
        let log = MerkleLog::from_leaves(all.clone());
        let proof = log.inclusion(4, 6).expect("in range");
        assert_eq!(
            serde_json::to_value(inclusion_json(4, 6, &all[4], &proof)).expect("encodes"),
            json!({
                "leaf_index": 4,
                "tree_size": 6,
                "leaf_hash": hex::encode(all[4]),
                "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            })
        );
        let proof = log.consistency(3, 6).expect("in range");
        assert_eq!(
            serde_json::to_value(consistency_json(3, 6, &proof)).expect("encodes"),
            json!({ "from": 3, "to": 6, "proof": proof.iter().map(hex::encode).collect::<Vec<_>>() })
        );
    }
}
