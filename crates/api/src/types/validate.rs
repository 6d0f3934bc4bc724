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
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Signed, Timestamp};

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
    /// The `choices` array the output digest covers (docs/PROTOCOL.md 7.7).
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
