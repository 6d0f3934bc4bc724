//! The client side of the paperwork log, shared by the hub (which builds proofs), the SDK and the
//! CLI (which check them): what a leaf is ([`paperwork_leaf`]), the origin line ([`log_origin`]), and
//! pure functions over a signed checkpoint note and the JSON of a proof endpoint. Nothing is fetched;
//! the caller brings the hub key it trusts and the origin it expects (normally [`log_origin`] of
//! that key). Described in docs/PROTOCOL.md ("Paperwork log").
//!
//! A proof is accepted only against a checkpoint of exactly its tree size. A proof against a smaller
//! tree says nothing about the checkpoint without a consistency proof as well, so a client that holds
//! a checkpoint asks for the inclusion proof at that checkpoint's size instead (`tree_size=`).

use serde::Deserialize;
use serde_json::Value;
use stacknet_protocol::checkpoint::{Checkpoint, CheckpointError};
use stacknet_protocol::jcs::{self, JcsError};
use stacknet_protocol::merkle::{self, Hash, MerkleError};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{PublicKey, Signed};

use crate::types::{ConsistencyProof, InclusionProof};

/// The origin line of a hub's checkpoints is this prefix and the first [`LOG_ORIGIN_KEY_HEX_CHARS`]
/// hex characters of the hub key; it is also the checkpoint's signing key name.
pub const LOG_ORIGIN_PREFIX: &str = "stacknet.hub/";
pub const LOG_ORIGIN_KEY_HEX_CHARS: usize = 16;

/// Why a log query, a checkpoint or a proof response was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("leaf {index} is not in a tree of size {size}")]
    LeafOutOfRange { index: u64, size: u64 },
    #[error("the log has {size} leaves; there is no tree of size {requested} yet")]
    TreeTooLarge { requested: u64, size: u64 },
    #[error("a consistency proof goes from a smaller tree to a larger one, not from size {from} to {to}")]
    SizeDecreased { from: u64, to: u64 },
    #[error("cannot encode the paperwork as canonical JSON: {0}")]
    PaperworkJson(#[source] serde_json::Error),
    #[error("cannot encode the paperwork as canonical JSON: {0}")]
    PaperworkCanonical(#[from] JcsError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the checkpoint is for log {got:?}, expected {expected:?}")]
    WrongOrigin { expected: String, got: String },
    #[error("malformed proof response: {0}")]
    MalformedResponse(#[source] serde_json::Error),
    #[error("{field} is not a 32-byte hash in hex")]
    BadHash { field: String },
    #[error("the proof is for leaf hash {got}, not {expected}")]
    LeafMismatch { expected: String, got: String },
    #[error("the proof is for a tree of size {proof}, the checkpoint for size {checkpoint}")]
    SizeMismatch { proof: u64, checkpoint: u64 },
    #[error("the proof is from size {from} to {to}, the checkpoints are of sizes {old} and {new}")]
    ConsistencySizeMismatch { from: u64, to: u64, old: u64, new: u64 },
    #[error("proof does not verify: {0}")]
    Proof(#[from] MerkleError),
    #[error("leaves for index {first} cannot be appended to a tree of size {size}: the next leaf is {size}")]
    NotNextIndex { first: u64, size: u64 },
}

/// The leaf of a paperwork: `merkle::leaf_hash` of the RFC 8785 canonical JSON of the *signed*
/// paperwork (its fields and `signature`), encoded from the typed object so that spelling, field order
/// and whitespace of whatever JSON it arrived as do not matter. The signature is part of the leaf, so
/// the log commits to the exact object that was filed, not only to what was signed.
pub fn paperwork_leaf(pw: &Signed<Paperwork>) -> Result<Hash, LogError> {
    let value = serde_json::to_value(pw).map_err(LogError::PaperworkJson)?;
    Ok(merkle::leaf_hash(jcs::canonicalize_signed(&value)?.as_bytes()))
}

/// The origin line (and signing key name) of the checkpoints of the hub with this key:
/// `stacknet.hub/` + the first 16 hex characters of the key.
pub fn log_origin(hub: &PublicKey) -> String {
    let hex = hub.to_hex();
    let short = hex.get(..LOG_ORIGIN_KEY_HEX_CHARS).unwrap_or(&hex);
    format!("{LOG_ORIGIN_PREFIX}{short}")
}

/// An inclusion proof that verified against a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedInclusion {
    pub leaf_index: u64,
    pub leaf_hash: Hash,
    /// The opened checkpoint: its size is the proof's tree size, its root the one proven.
    pub checkpoint: Checkpoint,
}

/// A consistency proof that verified between two signed checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedConsistency {
    pub old: Checkpoint,
    pub new: Checkpoint,
}

/// Opens a checkpoint note signed by `hub_key` under the key name `origin`, and checks that it is the
/// checkpoint of that log (the signature alone does not say which origin line it covers).
pub fn open_checkpoint(note: &str, origin: &str, hub_key: &PublicKey) -> Result<Checkpoint, LogError> {
    let checkpoint = Checkpoint::open(note, origin, hub_key)?;
    if checkpoint.origin != origin {
        return Err(LogError::WrongOrigin {
            expected: origin.to_owned(),
            got: checkpoint.origin,
        });
    }
    Ok(checkpoint)
}

/// Checks that `leaf_hash` (for paperwork, [`paperwork_leaf`]) is in the tree that the signed
/// `checkpoint_note` commits to, given the body of the inclusion endpoint.
pub fn verify_inclusion_response(
    leaf_hash: &Hash,
    response: &Value,
    checkpoint_note: &str,
    origin: &str,
    hub_key: &PublicKey,
) -> Result<VerifiedInclusion, LogError> {
    let checkpoint = open_checkpoint(checkpoint_note, origin, hub_key)?;
    let body = InclusionProof::deserialize(response).map_err(LogError::MalformedResponse)?;
    let claimed = parse_hash("leaf_hash", &body.leaf_hash)?;
    if claimed != *leaf_hash {
        return Err(LogError::LeafMismatch {
            expected: hex::encode(leaf_hash),
            got: body.leaf_hash,
        });
    }
    if body.tree_size != checkpoint.size {
        return Err(LogError::SizeMismatch {
            proof: body.tree_size,
            checkpoint: checkpoint.size,
        });
    }
    let proof = parse_proof(&body.proof)?;
    merkle::verify_inclusion(
        body.leaf_index,
        body.tree_size,
        leaf_hash,
        &proof,
        &checkpoint.root,
    )?;
    Ok(VerifiedInclusion {
        leaf_index: body.leaf_index,
        leaf_hash: *leaf_hash,
        checkpoint,
    })
}

/// Checks that the log of the signed `new_note` extends that of `old_note`, given the body of the
/// consistency endpoint for their two sizes.
pub fn verify_consistency_response(
    response: &Value,
    old_note: &str,
    new_note: &str,
    origin: &str,
    hub_key: &PublicKey,
) -> Result<VerifiedConsistency, LogError> {
    let old = open_checkpoint(old_note, origin, hub_key)?;
    let new = open_checkpoint(new_note, origin, hub_key)?;
    let body = ConsistencyProof::deserialize(response).map_err(LogError::MalformedResponse)?;
    if body.from != old.size || body.to != new.size {
        return Err(LogError::ConsistencySizeMismatch {
            from: body.from,
            to: body.to,
            old: old.size,
            new: new.size,
        });
    }
    let proof = parse_proof(&body.proof)?;
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof)?;
    Ok(VerifiedConsistency { old, new })
}

fn parse_proof(proof: &[String]) -> Result<Vec<Hash>, LogError> {
    proof
        .iter()
        .enumerate()
        .map(|(i, h)| parse_hash(&format!("proof[{i}]"), h))
        .collect()
}

fn parse_hash(field: &str, hex_hash: &str) -> Result<Hash, LogError> {
    hex::decode(hex_hash)
        .ok()
        .and_then(|bytes| merkle::hash_from_slice(&bytes).ok())
        .ok_or_else(|| LogError::BadHash {
            field: field.to_owned(),
        })
}

/// The checkpoint extension line that commits to the hub's Node Key bindings:
/// `stacknet-bindings <count> <hex root>`, the RFC 6962 root of the leaves [`binding_leaf`] of every
/// rebinding in the hub's order (`GET /stacknet/v1/market/bindings`).
pub const BINDINGS_EXTENSION: &str = "stacknet-bindings";

/// The leaf of a rebinding in the bindings tree: `merkle::leaf_hash` of its RFC 8785 canonical JSON.
pub fn binding_leaf(r: &stacknet_protocol::binding::Rebinding) -> Result<Hash, LogError> {
    let value = serde_json::to_value(r).map_err(LogError::PaperworkJson)?;
    Ok(merkle::leaf_hash(jcs::canonicalize(&value)?.as_bytes()))
}

/// The root of the bindings tree of `bindings` (every one, in the hub's order).
pub fn bindings_root(bindings: &[stacknet_protocol::binding::Rebinding]) -> Result<Hash, LogError> {
    let leaves = bindings.iter().map(binding_leaf).collect::<Result<Vec<_>, _>>()?;
    Ok(merkle::root(&leaves))
}

/// The extension line for `count` bindings whose tree has `root`.
pub fn bindings_extension(count: u64, root: &Hash) -> String {
    format!("{BINDINGS_EXTENSION} {count} {}", hex::encode(root))
}

/// The bindings a checkpoint commits to, `(count, root)`; `None` when it has no such line (a hub
/// from before bindings were committed to).
pub fn checkpoint_bindings(cp: &Checkpoint) -> Result<Option<(u64, Hash)>, LogError> {
    let Some(line) = cp.extensions.iter().find_map(|l| {
        l.strip_prefix(BINDINGS_EXTENSION)
            .and_then(|r| r.strip_prefix(' '))
    }) else {
        return Ok(None);
    };
    let bad = || LogError::BadHash {
        field: BINDINGS_EXTENSION.to_owned(),
    };
    let (count, root) = line.split_once(' ').ok_or_else(bad)?;
    let count: u64 = count.parse().map_err(|_| bad())?;
    Ok(Some((count, parse_hash(BINDINGS_EXTENSION, root)?)))
}
