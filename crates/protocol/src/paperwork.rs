//! Paperwork: the node's signed record of one finished task. It binds content, not only credit: the
//! hub-signed contract, hashes of request and output, usage, the exact backend and model, resources,
//! and the fingerprint that the response carried.
//!
//! [`check_paperwork`] is everything that can be checked from the paperwork and the hub's key alone;
//! settlement adds what needs state (the log, what was filed before, the challenge window).

use serde::{Deserialize, Serialize};

use crate::contract::{PromptContract, Usage};
use crate::fingerprint::{Attribution, FingerprintError};
use crate::ids::{FingerprintId, NodeKeyId, PaperworkId};
use crate::keys::PublicKey;
use crate::signing::{Domain, SignError, Signed, SignedBody};
use crate::values::{Sha256Digest, Timestamp};

/// The exact software and model that produced an output, so a validator can re-run the same thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendInfo {
    /// The backend kind, e.g. `openai-upstream`, `llama.cpp`, `candle`.
    pub id: String,
    pub version: String,
    /// The model name as served.
    pub model: String,
    /// SHA-256 of the model file where the node knows it (built-in models always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<Sha256Digest>,
}

/// What running the task took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub duration_ms: u64,
    /// The model was already loaded when the task arrived (the warm pool earns a bonus).
    pub warm: bool,
    /// A hardware class such as `cpu-x86_64-v3` or `gpu-nvidia-h100`.
    pub hardware: String,
}

/// The body of a Paperwork, signed by the node under `stacknet/paperwork/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paperwork {
    /// The whole contract with the hub's signature.
    pub contract: Signed<PromptContract>,
    /// The node's public key; its id must be the contract's `node_key`.
    pub node_key: PublicKey,
    /// SHA-256 of the canonical JSON (RFC 8785) of the request as the task carried it.
    pub request_sha256: Sha256Digest,
    /// SHA-256 of the output as defined for the workload (docs/PROTOCOL.md).
    pub output_sha256: Sha256Digest,
    pub usage: Usage,
    pub backend: BackendInfo,
    pub resources: Resources,
    pub fingerprint: Attribution,
    pub finished_at: Timestamp,
    /// The hub cancelled the task (its client went away) and the node stopped it: `usage` and
    /// `output_sha256` cover only what was produced and sent before it stopped. Absent when false,
    /// so paperwork of finished tasks signs the same bytes as before the field existed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancelled: bool,
    /// What a validator needs to re-check the output (built-in text backends): the token ids, how
    /// generation ended and how it sampled. Absent for backends that cannot commit to these (an
    /// upstream server), so their paperwork signs the same bytes as before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<Commitment>,
}

/// The sampler every built-in text backend runs (docs/PROTOCOL.md 4.1): a validator replays it
/// from the seed, position by position, without depending on any C++ standard library.
pub const SAMPLER_V1: &str = "stacknet/sampler/v1";

/// A built-in text backend's commitment to what it generated, so that it can be re-checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitment {
    /// SHA-256 of the generated token ids, each as 4 little-endian bytes, in order; a final end of
    /// generation token is included when generation ended on one ([`tokens_sha256`]).
    pub output_tokens_sha256: Sha256Digest,
    /// How many ids that is (the end token included).
    pub output_token_count: u64,
    /// `stop` (an end token or a requested stop sequence) or `length` (the token budget).
    pub finish_reason: String,
    pub sampling: Sampling,
}

/// The sampling parameters as the node applied them (its defaults filled in), integers only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// [`SAMPLER_V1`].
    pub sampler: String,
    /// Temperature in thousandths; 0 is greedy (the highest logit, the lowest id on a tie).
    pub temperature_milli: u32,
    /// Nucleus mass in thousandths (1000: off).
    pub top_p_milli: u32,
    /// The seed of the position-keyed draws (the request's, or one the node chose).
    pub seed: u32,
    /// The token budget the node applied (`length` means exactly this many tokens).
    pub max_tokens: u32,
}

/// [`Commitment::output_tokens_sha256`] of `ids`.
pub fn tokens_sha256(ids: &[u32]) -> Sha256Digest {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    Sha256Digest(h.finalize().into())
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SignedBody for Paperwork {
    const DOMAIN: Domain = Domain::Paperwork;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaperworkError {
    #[error("the contract was signed by hub key {got}, not by this hub ({expected})")]
    WrongHub { expected: String, got: String },
    #[error("contract signature invalid: {0}")]
    Contract(SignError),
    #[error("the contract is assigned to {assigned}, but the paperwork is from {signer}")]
    NotAssignedNode { assigned: NodeKeyId, signer: NodeKeyId },
    #[error("paperwork signature invalid: {0}")]
    Signature(SignError),
    #[error("fingerprint invalid: {0}")]
    Fingerprint(FingerprintError),
    #[error("the paperwork's contract is not the one this hub issued for the task")]
    NotIssuedContract,
    #[error("fingerprint field {field} does not match the contract")]
    FingerprintMismatch { field: &'static str },
}

impl Signed<Paperwork> {
    /// `pw_` + the first 16 bytes of the SHA-256 of the signed bytes.
    pub fn id(&self) -> Result<PaperworkId, SignError> {
        Ok(PaperworkId::from_digest(first_half(&self.digest()?)))
    }
}

fn first_half(d: &Sha256Digest) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.0[..16]);
    out
}

/// What a successful check proves: the paperwork's id and content hash, and the fingerprint id its
/// attribution proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub id: PaperworkId,
    pub digest: Sha256Digest,
    pub fingerprint: FingerprintId,
}

/// Checks every signature and binding of a paperwork against the hub's key.
pub fn check_paperwork(pw: &Signed<Paperwork>, hub: &PublicKey) -> Result<Checked, PaperworkError> {
    check(pw, hub, None, None)
}

/// As [`check_paperwork`], for an id that may have been sold: `key_in_force` is the key that
/// operated the contract's `node_key` when the hub signed the contract (`crate::binding::key_in_force`
/// at its `created_at`); `None` is the id's first key, the one whose id it is.
pub fn check_paperwork_bound(
    pw: &Signed<Paperwork>,
    hub: &PublicKey,
    key_in_force: Option<&PublicKey>,
) -> Result<Checked, PaperworkError> {
    check(pw, hub, None, key_in_force)
}

/// As [`check_paperwork`], for the hub that issued the contract and still holds it: when the
/// embedded contract is exactly `issued` (signature included), re-verifying the hub's own signature
/// proves nothing new and is skipped; any other contract is refused.
/// The hub names the key it sent the task to (the key the node proved at its hello), which must
/// have signed.
pub fn check_paperwork_for(
    pw: &Signed<Paperwork>,
    issued: &Signed<PromptContract>,
    sent_to: &PublicKey,
) -> Result<Checked, PaperworkError> {
    if pw.body.contract != *issued {
        return Err(PaperworkError::NotIssuedContract);
    }
    check(pw, &issued.body.hub, Some(issued), Some(sent_to))
}

fn check(
    pw: &Signed<Paperwork>,
    hub: &PublicKey,
    issued: Option<&Signed<PromptContract>>,
    key_in_force: Option<&PublicKey>,
) -> Result<Checked, PaperworkError> {
    let body = &pw.body;
    let contract = &body.contract.body;
    if contract.hub != *hub {
        return Err(PaperworkError::WrongHub {
            expected: hub.to_hex(),
            got: contract.hub.to_hex(),
        });
    }
    if issued.is_none() {
        body.contract.verify(hub).map_err(PaperworkError::Contract)?;
    }
    let signer = body.node_key.node_key_id();
    let assigned = match key_in_force {
        Some(key) => body.node_key == *key,
        None => signer == contract.node_key,
    };
    if !assigned {
        return Err(PaperworkError::NotAssignedNode {
            assigned: contract.node_key,
            signer,
        });
    }
    pw.verify(&body.node_key).map_err(PaperworkError::Signature)?;
    let f = &body.fingerprint;
    let fingerprint = f
        .verify_bound(Some(&body.node_key))
        .map_err(PaperworkError::Fingerprint)?;
    if f.fingerprint.node_key != contract.node_key {
        return Err(PaperworkError::FingerprintMismatch { field: "node_key" });
    }
    let fp = &f.fingerprint;
    let mismatch = |field| Err(PaperworkError::FingerprintMismatch { field });
    if f.signed_by.0 != body.node_key {
        return mismatch("signed_by");
    }
    if fp.contract != contract.id {
        return mismatch("contract");
    }
    if fp.stack != contract.stack {
        return mismatch("stack");
    }
    if fp.skills != contract.skills {
        return mismatch("skills");
    }
    if fp.injections != contract.injections {
        return mismatch("injections");
    }
    let digest = pw.digest().map_err(PaperworkError::Signature)?;
    Ok(Checked {
        id: PaperworkId::from_digest(first_half(&digest)),
        digest,
        fingerprint,
    })
}

/// `request_sha256`: SHA-256 of the RFC 8785 canonical JSON of the request as the task carried it.
pub fn request_digest(request: &serde_json::Value) -> Result<Sha256Digest, crate::jcs::JcsError> {
    Ok(Sha256Digest::of(crate::jcs::canonicalize(request)?.as_bytes()))
}
