//! The validator loop: ask the hub for assignments, check each, commit to the signed attestation
//! (SHA-256 of a fresh salt and its signed bytes), and reveal it once the hub lists the task under
//! `reveal` (every committee member has committed, or the window closed). Commit then reveal means
//! no validator can copy another's verdict.
//!
//! What judges a task is a [`Judge`]: [`Checker`] (the real checks over the validator's models) in
//! `stacknet validator`; the test kit wraps it for faulty validators (always pass, always fail).
//! A verdict not yet revealed lives in memory only: a restarted validator misses that reveal, which
//! the hub counts as no verdict (it never counts toward a conviction).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stacknet_api::paths;
use stacknet_api::types::{Assignment, Assignments, ValidationAck};
use stacknet_protocol::attestation::{Attestation, CheckResult};
use stacknet_protocol::filing::NodeAction;
use stacknet_protocol::{Nonce, PaperworkId, PublicKey, SecretKey, Sha256Digest, Signed, Timestamp};
use tracing::{info, warn};

use super::checks::{self, Model};
use crate::settlement::{HubClient, SettlementError};

/// How often the validator asks for work when it has none.
pub const POLL_INTERVAL_MS: u64 = 1_000;

/// Decides the checks of one task. Blocking (a check may run a prefill).
pub trait Judge: Send + Sync + 'static {
    fn judge(&self, a: &Assignment, hub: &PublicKey) -> Vec<CheckResult>;
}

/// A model a validator holds, shareable with the blocking pool.
pub type SharedModel = Arc<dyn Model + Send + Sync>;

/// The real checks, with the validator's models (none: every replay check is INCONCLUSIVE).
#[derive(Clone, Default)]
pub struct Checker {
    pub models: Vec<SharedModel>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shas: Vec<String> = self.models.iter().map(|m| m.sha256().to_string()).collect();
        f.debug_struct("Checker").field("models", &shas).finish()
    }
}

impl Judge for Checker {
    fn judge(&self, a: &Assignment, hub: &PublicKey) -> Vec<CheckResult> {
        let claimed = a.paperwork.body.backend.model_sha256;
        let model = self.models.iter().find(|m| Some(m.sha256()) == claimed);
        checks::check(a, hub, model.map(|m| m.as_ref() as &dyn Model))
    }
}

#[derive(Debug, Clone)]
pub struct ValidatorOptions {
    pub poll_interval: Duration,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(POLL_INTERVAL_MS),
        }
    }
}

/// The commit digest of an attestation: SHA-256(`salt` || its signed bytes).
pub fn commit_digest(
    salt: &[u8; 32],
    attestation: &Signed<Attestation>,
) -> Result<Sha256Digest, SettlementError> {
    let bytes = attestation
        .signing_bytes()
        .map_err(|e| SettlementError::Sign(e.to_string()))?;
    Ok(Sha256Digest::of(&[salt.as_slice(), &bytes].concat()))
}

/// A fresh 32-byte salt.
pub fn salt() -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..16].copy_from_slice(&Nonce::random().0);
    s[16..].copy_from_slice(&Nonce::random().0);
    s
}

/// Signs the attestation of `checks` on `a` with `key`.
pub fn attest(
    key: &SecretKey,
    a: &Assignment,
    checks: Vec<CheckResult>,
) -> Result<Signed<Attestation>, SettlementError> {
    let body = Attestation {
        paperwork: a.paperwork_id,
        contract: a.paperwork.body.contract.body.id,
        node_key: a.paperwork.body.contract.body.node_key,
        validator: key.public_key(),
        verdict: checks::verdict(&checks),
        checks,
        created_at: Timestamp::now(),
    };
    Signed::sign(body, key).map_err(|e| SettlementError::Sign(e.to_string()))
}

/// The validation requests, signed with the validator's key.
impl HubClient {
    pub async fn assignments(&self, key: &SecretKey) -> Result<Assignments, SettlementError> {
        self.node_request(key, paths::VALIDATION, NodeAction::Assignments)
            .await
    }

    pub async fn commit(
        &self,
        key: &SecretKey,
        paperwork: PaperworkId,
        digest: Sha256Digest,
    ) -> Result<ValidationAck, SettlementError> {
        self.node_request(key, paths::VALIDATION, NodeAction::Commit { paperwork, digest })
            .await
    }

    pub async fn reveal(
        &self,
        key: &SecretKey,
        attestation: Signed<Attestation>,
        salt: &[u8; 32],
    ) -> Result<ValidationAck, SettlementError> {
        let action = NodeAction::Reveal {
            attestation: Box::new(attestation),
            salt: hex::encode(salt),
        };
        self.node_request(key, paths::VALIDATION, action).await
    }
}

/// One validator: its key, its hub, and what judges.
pub struct Validator<J: Judge> {
    key: SecretKey,
    hub: HubClient,
    judge: Arc<J>,
    options: ValidatorOptions,
    /// Committed, not yet revealed.
    pending: HashMap<PaperworkId, (Signed<Attestation>, [u8; 32])>,
}

impl<J: Judge> std::fmt::Debug for Validator<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("key", &self.key.public_key().node_key_id())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<J: Judge> Validator<J> {
    pub fn new(key: SecretKey, hub: HubClient, judge: J, options: ValidatorOptions) -> Self {
        Self {
            key,
            hub,
            judge: Arc::new(judge),
            options,
            pending: HashMap::new(),
        }
    }

    /// Polls, checks, commits and reveals until `shutdown` resolves. A failed round is logged and
    /// retried at the next poll: the hub may be restarting.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let worked = match self.round().await {
                Ok(n) => n > 0,
                Err(e) => {
                    warn!("validation round failed: {e}");
                    false
                }
            };
            if worked {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// One round: reveal what the hub asks for, then check and commit new assignments. Returns
    /// how many requests it made besides the poll (0: nothing to do).
    pub async fn round(&mut self) -> Result<usize, SettlementError> {
        let work = self.hub.assignments(&self.key).await?;
        let mut done = 0;
        for id in &work.reveal {
            if let Some((attestation, salt)) = self.pending.remove(id) {
                let ack = self.hub.reveal(&self.key, attestation, &salt).await?;
                info!(paperwork = %id, status = %ack.status, "revealed");
                done += 1;
            }
        }
        for a in work.assignments {
            if self.pending.contains_key(&a.paperwork_id) {
                continue;
            }
            let judge = self.judge.clone();
            let hub_key = self.hub.hub_key;
            let (a, checks) = tokio::task::spawn_blocking(move || {
                let checks = judge.judge(&a, &hub_key);
                (a, checks)
            })
            .await
            .map_err(|e| SettlementError::Sign(format!("the check panicked: {e}")))?;
            let attestation = attest(&self.key, &a, checks)?;
            let salt = salt();
            let digest = commit_digest(&salt, &attestation)?;
            let ack = self.hub.commit(&self.key, a.paperwork_id, digest).await?;
            info!(paperwork = %a.paperwork_id, verdict = ?attestation.body.verdict, status = %ack.status, "committed");
            self.pending.insert(a.paperwork_id, (attestation, salt));
            done += 1;
        }
        Ok(done)
    }
}
