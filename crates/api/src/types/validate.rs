//! Stakes and validation: a key's bond (worker or validator), the tasks a validator is assigned,
//! its commit and reveal, and what anyone can read of the outcome (attestations, slashes).
//!
//! Every request is a `stacknet/node-request/v1` signed by the key (`NodeAction::Stake`, `Bond`,
//! `Unbond`, `Withdraw`, `Assignments`, `Commit`, `Reveal`), posted to [`crate::paths::STAKE`] or
//! [`crate::paths::VALIDATION`]; the answers are below.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stacknet_protocol::attestation::Attestation;
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Sha256Digest, Signed, Timestamp};

/// One unbonding amount: slashable until `withdrawable_at`, then the key's to withdraw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbonding {
    pub amount: Amount,
    pub withdrawable_at: Timestamp,
}

/// One slash of a key's stake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slash {
    pub node_key: NodeKeyId,
    /// The whole amount slashed: `slash_bps` of what the key had bonded and unbonding.
    pub amount: Amount,
    /// The part of `amount` taken from stake the key was unbonding (the rest came from its bond).
    #[serde(default)]
    pub from_unbonding: Amount,
    /// `convicted` (a quorum of validators), `equivocation`, `canary_pass`, `canary_fail`.
    pub reason: String,
    /// The task it was for.
    pub paperwork: PaperworkId,
    /// The objective check the conviction cites (`C0_envelope`, ...), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub at: Timestamp,
}

/// The answer to every stake request: where the key's stake stands after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeStatus {
    pub node_key: NodeKeyId,
    /// Bonded now (routing and attestations count this).
    pub bonded: Amount,
    pub unbonding: Vec<Unbonding>,
    /// What the key's earnings account holds (what it can bond from).
    pub earnings: Amount,
    /// The network's minimum bonds.
    pub min_worker_bond: Amount,
    pub min_validator_bond: Amount,
    /// Suspended after a conviction: no tasks, no attestations, no probes.
    pub suspended: bool,
    /// When the suspension ends (the network's suspension period after the latest conviction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_until: Option<Timestamp>,
    pub slashes: Vec<Slash>,
}

/// Why a task was assigned (a validator cannot tell a canary from a sampled task; the field only
/// says whether it is a first check or a committee's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Round {
    /// One validator checks a sampled task.
    Check,
    /// A committee re-checks a task a first check failed.
    Committee,
}

/// One task to check, with what the hub kept of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub paperwork_id: PaperworkId,
    pub paperwork: Signed<Paperwork>,
    pub round: Round,
    /// The request as the task carried it (its canonical JSON hashes to `request_sha256`).
    pub request: Value,
    /// What the output digest covers (docs/PROTOCOL.md 7.7): a text task's `choices` array; a
    /// media task's files as [`kept_files`] writes them.
    pub output: Value,
    /// The token ids the commitment hashes, for built-in text backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<Vec<u32>>,
    /// The pinned sha256 of the contract's model, where the catalog pins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_model_sha256: Option<stacknet_protocol::Sha256Digest>,
    /// Commit before this; reveal after every member committed, or after it.
    pub commit_by: Timestamp,
}

/// The most bytes of a media task's files the hub keeps for validators; larger outputs keep their
/// hashes only.
pub const KEEP_MEDIA_BYTES: usize = 8 << 20;

/// A media task's output as an [`Assignment`] carries it: `[{"sha256": hex, "b64_json"?: ...}]`,
/// each file's hash and, with `with_bytes`, the file.
pub fn kept_files(files: &[&[u8]], with_bytes: bool) -> Value {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    Value::Array(
        files
            .iter()
            .map(|bytes| {
                let mut file = serde_json::json!({ "sha256": Sha256Digest::of(bytes).to_string() });
                if with_bytes {
                    file["b64_json"] = Value::String(engine.encode(bytes));
                }
                file
            })
            .collect(),
    )
}

/// The files of a media task's kept output ([`kept_files`]): each one's hash, and its bytes when
/// they were kept.
#[derive(Debug, PartialEq, Eq)]
pub struct KeptFiles {
    pub hashes: Vec<Sha256Digest>,
    /// Every file's bytes, in order; `None` when the hub kept hashes only.
    pub bytes: Option<Vec<Vec<u8>>>,
}

impl KeptFiles {
    /// Reads what [`kept_files`] wrote, each kept file's bytes checked against its hash.
    pub fn parse(output: &Value) -> Result<Self, String> {
        use base64::Engine as _;
        let items = output.as_array().ok_or("the output is not an array of files")?;
        let mut hashes = Vec::with_capacity(items.len());
        let mut bytes = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let hash: Sha256Digest = item
                .get("sha256")
                .and_then(Value::as_str)
                .and_then(|h| h.parse().ok())
                .ok_or_else(|| format!("file {i} has no sha256"))?;
            if let Some(b64) = item.get("b64_json").and_then(Value::as_str) {
                let file = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| format!("file {i} is not valid base64"))?;
                if Sha256Digest::of(&file) != hash {
                    return Err(format!("file {i}'s bytes do not hash to its sha256"));
                }
                bytes.push(file);
            }
            hashes.push(hash);
        }
        let bytes = match bytes.len() {
            0 if !hashes.is_empty() => None,
            n if n == hashes.len() => Some(bytes),
            _ => return Err("some files were kept and others not".into()),
        };
        Ok(Self { hashes, bytes })
    }

    /// The output digest of the files (docs/PROTOCOL.md 7.7).
    pub fn digest(&self) -> Result<Sha256Digest, String> {
        crate::output::files_digest(&self.hashes).map_err(|e| e.to_string())
    }
}

/// `Assignments`: the tasks this validator is to check now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignments {
    pub assignments: Vec<Assignment>,
    /// Tasks whose commits are all in (or past their deadline): reveal these now.
    pub reveal: Vec<PaperworkId>,
}

/// `Commit` and `Reveal` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationAck {
    pub paperwork_id: PaperworkId,
    /// `committed`, `revealed`, or the task's outcome once decided: `passed`, `convicted`,
    /// `disputed`, `inconclusive`.
    pub status: String,
}

/// Query of `GET /stacknet/v1/attestations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationQuery {
    /// Only those about this worker node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeKeyId>,
    /// Only those about this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paperwork: Option<PaperworkId>,
}

/// One task's outcome, public.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub paperwork_id: PaperworkId,
    pub node_key: NodeKeyId,
    /// `pending`, `passed`, `convicted`, `disputed`, `inconclusive`.
    pub status: String,
    /// The revealed attestations, signed by their validators.
    pub attestations: Vec<Signed<Attestation>>,
}

/// `GET /stacknet/v1/attestations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationList {
    pub tasks: Vec<TaskOutcome>,
    /// The slashes of `node` (every key's when no node is named).
    pub slashes: Vec<Slash>,
}

/// `POST /stacknet/v1/admin/nodes/{id}/topup`: credits to a node key's earnings account (so it can
/// bond), as a Stack's top-up does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTopUp {
    pub amount: Amount,
    /// The payment's reference; a top-up with the same reference is applied once.
    pub reference: String,
}
