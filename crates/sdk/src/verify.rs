//! Light verification: pure functions over what a hub hands out, checked against a hub key the
//! caller trusts (pinned, or at least announced once and kept).
//!
//! - [`fingerprint`]: the answer's `attribution` is signed by the node key it names and proves the
//!   `fingerprint` it claims (stack, node, skills, injections, time, contract).
//! - [`answer`]: that, plus the answer's paperwork: every signature (the hub's contract, the node's
//!   paperwork and fingerprint), the same fingerprint, and the content itself: the output digest
//!   recomputed from the answer (whole or streamed) equals the `output_sha256` the node signed.
//! - [`inclusion`]: the paperwork is in the hub's log under a checkpoint the hub signed.
//! - [`consistency`]: a later checkpoint extends an earlier one (see also [`crate::follow`]).

use serde_json::Value;
use stacknet_api::output::{answers_with_bytes, digest_of_response, digest_of_stream, DigestError};
use stacknet_api::proof::{
    log_origin, paperwork_leaf, verify_consistency_response, verify_inclusion_response, LogError,
    VerifiedConsistency, VerifiedInclusion,
};
use stacknet_api::types::{ConsistencyProof, InclusionProof};
use stacknet_protocol::binding::{key_in_force, Rebinding};
use stacknet_protocol::fingerprint::{Attribution, Fingerprint};
use stacknet_protocol::paperwork::{check_paperwork_bound, Paperwork};
use stacknet_protocol::{FingerprintId, PaperworkId, PublicKey, Sha256Digest, Signed};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    #[error("the answer has no {0}")]
    Missing(&'static str),
    #[error("{field}: {message}")]
    Malformed { field: &'static str, message: String },
    /// The attribution's signature or claim fails (the protocol's own words).
    #[error("{0}")]
    Attribution(String),
    #[error("paperwork: {0}")]
    Paperwork(String),
    #[error("the paperwork is {paperwork}, but the answer names {named}")]
    OtherPaperwork { paperwork: PaperworkId, named: String },
    #[error("paperwork {paperwork} carries fingerprint {carried}, but the answer's is {answer}")]
    OtherFingerprint {
        paperwork: PaperworkId,
        carried: FingerprintId,
        answer: FingerprintId,
    },
    #[error("the content's output digest {content} differs from the output_sha256 {signed} of paperwork {paperwork}: the content is not what the node produced")]
    Content {
        content: Sha256Digest,
        signed: Sha256Digest,
        paperwork: PaperworkId,
    },
    #[error("cannot compute the output digest: {0}")]
    Digest(String),
    #[error("log proof: {0}")]
    Log(String),
    #[error("the Node Key's bindings: {0}")]
    Bindings(String),
}

impl From<LogError> for VerifyError {
    fn from(e: LogError) -> Self {
        VerifyError::Log(e.to_string())
    }
}

/// The content of an answer as the client received it.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Whole(Value),
    /// The `data:` chunks of a streamed answer, in order (the last carries the proof fields).
    Stream(Vec<Value>),
    /// An answer that is bytes (speech, a transcription): the body exactly as received, and the
    /// proof members its headers carry (`stacknet_api::output::proof_of_headers`).
    Bytes {
        body: Vec<u8>,
        proof: Value,
    },
}

impl Content {
    /// An answer as text: JSON, or an SSE transcript (`data:` lines).
    pub fn parse(text: &str) -> Result<Self, VerifyError> {
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            return Ok(Content::Whole(v));
        }
        let chunks: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .collect();
        if chunks.is_empty() {
            return Err(VerifyError::Malformed {
                field: "answer",
                message: "neither JSON nor an event stream".to_owned(),
            });
        }
        Ok(Content::Stream(chunks))
    }

    /// The object that carries the proof fields: the answer, or the last chunk with an attribution.
    pub fn proof_fields(&self) -> Option<&Value> {
        match self {
            Content::Whole(v) => Some(v),
            Content::Stream(chunks) => chunks.iter().rfind(|c| c.get("attribution").is_some()),
            Content::Bytes { proof, .. } => Some(proof),
        }
    }
}

/// An answer's fingerprint, checked on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedFingerprint {
    pub id: FingerprintId,
    /// Stack, node key, skills, injections, timestamp and contract, as the node signed them.
    pub fingerprint: Fingerprint,
    pub signed_by: PublicKey,
}

/// Checks an answer's `attribution` against the `fingerprint` it claims, signed by the id's first
/// key (see [`fingerprint_bound`] for an id sold since).
pub fn fingerprint(answer: &Content) -> Result<VerifiedFingerprint, VerifyError> {
    fingerprint_with(answer, None)
}

/// As [`fingerprint`], for an id that may have changed hands: `chain` is its rebindings (the hub's
/// `GET /stacknet/v1/market/keys/{id}`), checked against `hub_key`; the signer must be the key in
/// force at the fingerprint's time.
pub fn fingerprint_bound(
    answer: &Content,
    chain: &[Rebinding],
    hub_key: &PublicKey,
) -> Result<VerifiedFingerprint, VerifyError> {
    let attribution = attribution_of(answer)?;
    let f = &attribution.fingerprint;
    let key = key_in_force(f.node_key, chain, hub_key, f.timestamp)
        .map_err(|e| VerifyError::Bindings(e.to_string()))?;
    fingerprint_with(answer, key.as_ref())
}

/// The answer's `attribution`, decoded.
fn attribution_of(answer: &Content) -> Result<Attribution, VerifyError> {
    let fields = answer.proof_fields().ok_or(VerifyError::Missing("attribution"))?;
    let value = fields
        .get("attribution")
        .cloned()
        .ok_or(VerifyError::Missing("attribution"))?;
    serde_json::from_value(value).map_err(|e| VerifyError::Malformed {
        field: "attribution",
        message: e.to_string(),
    })
}

fn fingerprint_with(
    answer: &Content,
    key_in_force: Option<&PublicKey>,
) -> Result<VerifiedFingerprint, VerifyError> {
    let fields = answer.proof_fields().ok_or(VerifyError::Missing("attribution"))?;
    let claimed: FingerprintId = fields
        .get("fingerprint")
        .and_then(Value::as_str)
        .ok_or(VerifyError::Missing("fingerprint"))?
        .parse()
        .map_err(|e: stacknet_protocol::IdError| VerifyError::Malformed {
            field: "fingerprint",
            message: e.to_string(),
        })?;
    let attribution = attribution_of(answer)?;
    attribution
        .verify_claim_bound(claimed, key_in_force)
        .map_err(|e| VerifyError::Attribution(e.to_string()))?;
    Ok(VerifiedFingerprint {
        id: claimed,
        fingerprint: attribution.fingerprint,
        signed_by: attribution.signed_by.0,
    })
}

/// An answer whose content its paperwork binds.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedAnswer {
    pub fingerprint: VerifiedFingerprint,
    pub paperwork: PaperworkId,
    /// The output digest, recomputed from the content, that the node signed.
    pub output_sha256: Sha256Digest,
}

/// Checks an answer against its paperwork and the hub key: see the module documentation. The
/// node's id must never have been sold; otherwise use [`answer_bound`] with its rebindings.
pub fn answer(
    answer: &Content,
    paperwork: &Signed<Paperwork>,
    hub_key: &PublicKey,
) -> Result<VerifiedAnswer, VerifyError> {
    answer_bound(answer, paperwork, hub_key, &[])
}

/// As [`answer`], for an id that may have changed hands: `chain` is its rebindings; the signer must
/// be the key in force when the hub signed the task's contract.
pub fn answer_bound(
    answer: &Content,
    paperwork: &Signed<Paperwork>,
    hub_key: &PublicKey,
    chain: &[Rebinding],
) -> Result<VerifiedAnswer, VerifyError> {
    let contract = &paperwork.body.contract.body;
    let key = key_in_force(contract.node_key, chain, hub_key, contract.created_at)
        .map_err(|e| VerifyError::Bindings(e.to_string()))?;
    let verified = fingerprint_with(answer, Some(&paperwork.body.node_key))?;
    let named = answer
        .proof_fields()
        .and_then(|f| f.get("paperwork"))
        .and_then(Value::as_str)
        .ok_or(VerifyError::Missing("paperwork"))?;
    let checked = check_paperwork_bound(paperwork, hub_key, key.as_ref())
        .map_err(|e| VerifyError::Paperwork(e.to_string()))?;
    if checked.id.to_string() != named {
        return Err(VerifyError::OtherPaperwork {
            paperwork: checked.id,
            named: named.to_owned(),
        });
    }
    if checked.fingerprint != verified.id {
        return Err(VerifyError::OtherFingerprint {
            paperwork: checked.id,
            carried: checked.fingerprint,
            answer: verified.id,
        });
    }
    let workload = paperwork.body.contract.body.workload;
    let content = match answer {
        Content::Whole(body) => digest_of_response(workload, body),
        Content::Stream(chunks) => digest_of_stream(workload, chunks),
        Content::Bytes { body, .. } if answers_with_bytes(workload) => Ok(Sha256Digest::of(body)),
        Content::Bytes { .. } => Err(DigestError::Unsupported(workload)),
    }
    .map_err(|e| VerifyError::Digest(e.to_string()))?;
    let signed = paperwork.body.output_sha256;
    if content != signed {
        return Err(VerifyError::Content {
            content,
            signed,
            paperwork: checked.id,
        });
    }
    Ok(VerifiedAnswer {
        fingerprint: verified,
        paperwork: checked.id,
        output_sha256: signed,
    })
}

/// Checks a paperwork on its own against the hub key; returns its id. `chain`: the id's
/// rebindings (empty for an id never sold).
pub fn paperwork(
    pw: &Signed<Paperwork>,
    hub_key: &PublicKey,
    chain: &[Rebinding],
) -> Result<PaperworkId, VerifyError> {
    let contract = &pw.body.contract.body;
    let key = key_in_force(contract.node_key, chain, hub_key, contract.created_at)
        .map_err(|e| VerifyError::Bindings(e.to_string()))?;
    Ok(check_paperwork_bound(pw, hub_key, key.as_ref())
        .map_err(|e| VerifyError::Paperwork(e.to_string()))?
        .id)
}

/// Checks that `pw` is in the hub's log under the signed checkpoint `note`, given its inclusion
/// proof at exactly the checkpoint's size.
pub fn inclusion(
    pw: &Signed<Paperwork>,
    proof: &InclusionProof,
    note: &str,
    hub_key: &PublicKey,
) -> Result<VerifiedInclusion, VerifyError> {
    let leaf = paperwork_leaf(pw)?;
    let response = serde_json::to_value(proof).map_err(|e| VerifyError::Log(e.to_string()))?;
    Ok(verify_inclusion_response(
        &leaf,
        &response,
        note,
        &log_origin(hub_key),
        hub_key,
    )?)
}

/// Checks that the log under the signed checkpoint `new_note` extends the one under `old_note`.
pub fn consistency(
    proof: &ConsistencyProof,
    old_note: &str,
    new_note: &str,
    hub_key: &PublicKey,
) -> Result<VerifiedConsistency, VerifyError> {
    let response = serde_json::to_value(proof).map_err(|e| VerifyError::Log(e.to_string()))?;
    Ok(verify_consistency_response(
        &response,
        old_note,
        new_note,
        &log_origin(hub_key),
        hub_key,
    )?)
}
