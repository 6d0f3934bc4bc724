//! Writing the node's side of a finished task: the fingerprint (attribution) and the signed paperwork.

use stacknet_protocol::contract::{PromptContract, Usage};
use stacknet_protocol::fingerprint::Fingerprint;
use stacknet_protocol::paperwork::{BackendInfo, Commitment, Paperwork, Resources};
use stacknet_protocol::{SecretKey, Sha256Digest, SignError, Signed, Timestamp};

/// What the runtime knows once a task's output is complete.
#[derive(Clone, Debug)]
pub struct FinishedTask {
    pub contract: Signed<PromptContract>,
    pub request_sha256: Sha256Digest,
    pub output_sha256: Sha256Digest,
    pub usage: Usage,
    pub backend: BackendInfo,
    pub duration_ms: u64,
    pub warm: bool,
    pub hardware: String,
    /// The hub cancelled the task and the output stopped short (see [`Paperwork::cancelled`]).
    pub cancelled: bool,
    /// What a built-in text backend commits to (see [`Paperwork::commitment`]).
    pub commitment: Option<Commitment>,
}

/// Signs the fingerprint and the paperwork with the Node Key, both stamped now.
pub fn sign_paperwork(key: &SecretKey, task: FinishedTask) -> Result<Signed<Paperwork>, SignError> {
    let now = Timestamp::now();
    let node_key = key.public_key();
    let c = &task.contract.body;
    // The contract's id: the key's own, or the id a sale bound it to (the task checked it is ours).
    let fingerprint = Fingerprint::new(
        c.stack,
        c.node_key,
        c.skills.clone(),
        c.injections.clone(),
        now,
        c.id,
    )
    .sign(key)?;
    let body = Paperwork {
        contract: task.contract,
        node_key,
        request_sha256: task.request_sha256,
        output_sha256: task.output_sha256,
        usage: task.usage,
        backend: task.backend,
        resources: Resources {
            duration_ms: task.duration_ms,
            warm: task.warm,
            hardware: task.hardware,
        },
        fingerprint,
        finished_at: now,
        cancelled: task.cancelled,
        commitment: task.commitment,
    };
    Signed::sign(body, key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use stacknet_protocol::examples;
    use stacknet_protocol::paperwork::check_paperwork;

    use super::*;

    #[test]
    fn signed_paperwork_passes_the_hubs_checks() {
        let task = FinishedTask {
            contract: examples::signed_contract().unwrap(),
            request_sha256: Sha256Digest::of(b"request"),
            output_sha256: Sha256Digest::of(b"output"),
            usage: Usage {
                input_tokens: 3,
                output_tokens: 5,
                units: 0,
            },
            backend: BackendInfo {
                id: "openai-upstream".to_owned(),
                version: "0.1.0".to_owned(),
                model: "m".to_owned(),
                model_sha256: None,
            },
            duration_ms: 12,
            warm: true,
            hardware: "upstream".to_owned(),
            cancelled: false,
            commitment: None,
        };
        let pw = sign_paperwork(&examples::node_key(), task).unwrap();
        let id = check_paperwork(&pw, &examples::hub_key().public_key())
            .unwrap()
            .id;
        assert_eq!(id, pw.id().unwrap());
        // Signed by another key, the same paperwork is not the assigned node's.
        let other = SecretKey::from_seed(&[9; 32]);
        let forged = Signed::sign(pw.body.clone(), &other).unwrap();
        assert!(check_paperwork(&forged, &examples::hub_key().public_key()).is_err());
    }
}
