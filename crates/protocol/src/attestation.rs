//! Validators' attestations and guardians' telemetry: the two signed objects that feed slashing and
//! the public reputation registry.

use serde::{Deserialize, Serialize};

use crate::ids::{AttestationId, ContractId, NodeKeyId, PaperworkId};
use crate::keys::PublicKey;
use crate::signing::{Domain, SignError, Signed, SignedBody};
use crate::values::{Nonce, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The re-check agrees with the node's claims.
    Pass,
    /// The re-check contradicts them.
    Fail,
    /// The validator could not tell (no model, an unsupported backend, an internal error). Never
    /// counts toward a conviction.
    Inconclusive,
}

/// One check a validator ran, e.g. `teacher_forced_score`, `usage_honest`, `reexecution_match`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// A score in parts per million where the check has one (no floats in signed JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_ppm: Option<u32>,
    pub detail: String,
    /// The check could not decide (`passed` is then false, and it is not a failure).
    #[serde(default, skip_serializing_if = "is_false")]
    pub inconclusive: bool,
    /// For a failed check: its objective code (`C0_envelope`, `C1_tokens`, `C2_termination`,
    /// `C3_teacher_forced`), the ones a conviction may cite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For a failed teacher-forced check: the positions that failed, so that anyone holding the
    /// model can re-check them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Mismatch>,
}

/// One output position where the claimed token is not what the model gives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mismatch {
    /// 0 is the first generated token.
    pub position: u32,
    pub claimed: u32,
    /// The validator's top token at that position.
    pub top: u32,
    /// Greedy: the top logit minus the claimed token's, in thousandths. Sampled: how far the
    /// position's draw lies outside the claimed token's slice, in millionths (`u32::MAX`: the
    /// claimed token is not a candidate at all).
    pub gap_milli: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The body of an Attestation, signed by a validator under `stacknet/attestation/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub paperwork: PaperworkId,
    pub contract: ContractId,
    pub node_key: NodeKeyId,
    pub validator: PublicKey,
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
    pub created_at: Timestamp,
}

impl SignedBody for Attestation {
    const DOMAIN: Domain = Domain::Attestation;
}

impl Signed<Attestation> {
    /// `att_` + the first 16 bytes of the SHA-256 of the signed bytes.
    pub fn id(&self) -> Result<AttestationId, SignError> {
        Ok(AttestationId::derive(&self.signing_bytes()?))
    }

    /// What a validator commits to before revealing this attestation: SHA-256(`salt` || the
    /// attestation's signed bytes). The validator and the hub both compute it here.
    pub fn commit_digest(&self, salt: &[u8]) -> Result<crate::Sha256Digest, SignError> {
        Ok(crate::Sha256Digest::of(&[salt, &self.signing_bytes()?].concat()))
    }
}

/// The body of a Telemetry report, signed by a guardian under `stacknet/telemetry/v1`: what its canary
/// probes of one node saw over a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    pub guardian: PublicKey,
    pub node_key: NodeKeyId,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub probes: u64,
    pub successes: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    pub created_at: Timestamp,
    pub nonce: Nonce,
    /// Probes answered, but not with what the prompt asked for (an echo left out, a wrong sum);
    /// counted in `probes` besides successes, errors and time-outs. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wrong: u64,
    /// Probes of a model the node named ready whose answer took longer than a warm model's would.
    /// Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warm_failures: u64,
    /// The answered probes' median time to their first token. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttft_p50_ms: u64,
    /// Their median output tokens per second after the first. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_per_s_p50: u64,
    /// In parts per million, the guardian's windows the node was connected in, of those since the
    /// guardian first saw it listed. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uptime_ppm: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SignedBody for Telemetry {
    const DOMAIN: Domain = Domain::Telemetry;
}
