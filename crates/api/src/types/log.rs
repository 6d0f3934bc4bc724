//! The paperwork log's public endpoints: the signed checkpoint and the RFC 6962 proofs. Hashes are
//! lowercase hex, as the endpoints send them; a client parses them when it checks a proof.

use serde::{Deserialize, Serialize};

/// `GET /stacknet/v1/log/checkpoint`: the log's size and root, signed by the hub key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCheckpoint {
    pub origin: String,
    pub size: u64,
    /// The tree's root hash, hex.
    pub root: String,
    /// The whole C2SP signed note, signed under the key name `origin`.
    pub note: String,
    /// The note verifier key, `<origin>+<key id>+<base64 key>`, for note-reading tools.
    pub vkey: String,
}

/// Query of `GET /stacknet/v1/log/proof/inclusion`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionQuery {
    /// The paperwork's id (`pw_...`).
    pub paperwork: String,
    /// The tree size to prove against; the log's current size when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_size: Option<u64>,
}

/// `GET /stacknet/v1/log/proof/inclusion`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Hex.
    pub leaf_hash: String,
    /// The audit path, hex, leaf side first.
    pub proof: Vec<String>,
}

/// Query of `GET /stacknet/v1/log/proof/consistency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyQuery {
    pub from: u64,
    /// The log's current size when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// `GET /stacknet/v1/log/proof/consistency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Hex.
    pub proof: Vec<String>,
}
