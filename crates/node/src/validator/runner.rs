//! The validator loop: ask the hub for assignments, check each, commit to the signed attestation
//! (SHA-256 of a fresh salt and its signed bytes), and reveal it once the hub lists the task under
//! `reveal` (every committee member has committed, or the window closed). Commit then reveal means
//! no validator can copy another's verdict.
//!
//! What judges a task is a [`Judge`]: [`Checker`] (the real checks over the validator's models) in
//! `stacknet validator`; the test kit wraps it for faulty validators (always pass, always fail).
//! A verdict not yet revealed (the signed attestation and its salt) is written to the validator's
//! pending file ([`ValidatorOptions::pending_file`], JSON) before its commit is sent, and dropped
//! from it once revealed, so a restarted validator still reveals what it committed to, and re-sends
//! a commit it may not have sent (the hub takes the same digest twice as once). Entries older than
//! [`PENDING_KEEP_MS`] are dropped at start: their rounds were decided long ago. Without a pending
//! file, a restarted validator misses those reveals, which the hub counts as no verdict.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use stacknet_api::output::{output_kind, OutputKind};
use stacknet_api::paths;
use stacknet_api::types::{Assignment, Assignments, ValidationAck};
use stacknet_protocol::attestation::{Attestation, CheckResult};
use stacknet_protocol::filing::NodeAction;
use stacknet_protocol::{Nonce, PaperworkId, PublicKey, SecretKey, Sha256Digest, Signed, Timestamp};
use tracing::{info, warn};

use super::checks::{self, Model};
use super::media::{self, SharedReplayer};
use crate::settlement::{HubClient, SettlementError};

/// How often the validator asks for work when it has none.
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// How long an unrevealed commit is kept in the pending file.
pub const PENDING_KEEP_MS: i64 = 24 * 3_600_000;

/// Decides the checks of one task. Blocking (a check may run a prefill).
pub trait Judge: Send + Sync + 'static {
    fn judge(&self, a: &Assignment, hub: &PublicKey) -> Vec<CheckResult>;
}

/// A model a validator holds, shareable with the blocking pool.
pub type SharedModel = Arc<dyn Model + Send + Sync>;

/// The real checks, with the validator's models (none: every replay check is INCONCLUSIVE).
#[derive(Clone, Default)]
pub struct Checker {
    /// Chat models, for C1 to C3.
    pub models: Vec<SharedModel>,
    /// Deterministic media backends, for M1.
    pub media: Vec<SharedReplayer>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shas: Vec<String> = self.models.iter().map(|m| m.sha256().to_string()).collect();
        let media: Vec<String> = self.media.iter().map(|m| m.backend_id().to_owned()).collect();
        f.debug_struct("Checker")
            .field("models", &shas)
            .field("media", &media)
            .finish()
    }
}

impl Judge for Checker {
    fn judge(&self, a: &Assignment, hub: &PublicKey) -> Vec<CheckResult> {
        let workload = a.paperwork.body.contract.body.workload;
        if output_kind(workload) == Some(OutputKind::Files) {
            return media::check(a, hub, &self.media);
        }
        let claimed = a.paperwork.body.backend.model_sha256;
        let model = self.models.iter().find(|m| Some(m.sha256()) == claimed);
        checks::check(a, hub, model.map(|m| m.as_ref() as &dyn Model))
    }
}

#[derive(Debug, Clone)]
pub struct ValidatorOptions {
    pub poll_interval: Duration,
    /// Where committed, unrevealed verdicts are kept across restarts (none: in memory only).
    pub pending_file: Option<PathBuf>,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(POLL_INTERVAL_MS),
            pending_file: None,
        }
    }
}

/// One committed, unrevealed verdict as the pending file keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingReveal {
    attestation: Signed<Attestation>,
    /// The commit's salt, lowercase hex.
    salt: String,
}

/// The pending file: whose verdicts, and which.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PendingFile {
    validator: Option<PublicKey>,
    pending: Vec<PendingReveal>,
}

type Pending = HashMap<PaperworkId, (Signed<Attestation>, [u8; 32])>;

/// Reads `path`'s verdicts signed by `key` and younger than [`PENDING_KEEP_MS`] (none when there is
/// no file; a file that cannot be read is logged and left for the next write to replace).
fn load_pending(path: &Path, key: &PublicKey) -> Pending {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Pending::new(),
        Err(e) => {
            warn!(path = %path.display(), "cannot read the pending reveals: {e}");
            return Pending::new();
        }
    };
    let file: PendingFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            warn!(path = %path.display(), "the pending reveals are not readable JSON: {e}");
            return Pending::new();
        }
    };
    if file.validator.is_some_and(|v| v != *key) {
        warn!(path = %path.display(), "the pending reveals are another validator key's; ignored");
        return Pending::new();
    }
    let oldest = Timestamp::now().plus_ms(-PENDING_KEEP_MS).unix_ms();
    file.pending
        .into_iter()
        .filter(|p| p.attestation.body.created_at.unix_ms() >= oldest && p.attestation.body.validator == *key)
        .filter_map(|p| {
            let salt: [u8; 32] = hex::decode(&p.salt).ok()?.try_into().ok()?;
            Some((p.attestation.body.paperwork, (p.attestation, salt)))
        })
        .collect()
}

/// Writes the pending verdicts to `path` whole (a temporary file renamed over it).
fn save_pending(path: &Path, key: &PublicKey, pending: &Pending) -> Result<(), SettlementError> {
    let mut entries: Vec<PendingReveal> = pending
        .values()
        .map(|(attestation, salt)| PendingReveal {
            attestation: attestation.clone(),
            salt: hex::encode(salt),
        })
        .collect();
    entries.sort_by_key(|p| p.attestation.body.paperwork.to_string());
    let file = PendingFile {
        validator: Some(*key),
        pending: entries,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| SettlementError::Pending(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| SettlementError::Pending(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The commit digest of an attestation: SHA-256(`salt` || its signed bytes).
pub fn commit_digest(
    salt: &[u8; 32],
    attestation: &Signed<Attestation>,
) -> Result<Sha256Digest, SettlementError> {
    attestation
        .commit_digest(salt)
        .map_err(|e| SettlementError::Sign(e.to_string()))
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
    /// Committed (or about to be), not yet revealed; mirrored in `options.pending_file`.
    pending: Pending,
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
    /// A validator; with a pending file, it resumes the reveals a previous run committed to.
    pub fn new(key: SecretKey, hub: HubClient, judge: J, options: ValidatorOptions) -> Self {
        let pending = match &options.pending_file {
            Some(path) => load_pending(path, &key.public_key()),
            None => Pending::new(),
        };
        if !pending.is_empty() {
            info!(count = pending.len(), "resuming committed, unrevealed verdicts");
        }
        Self {
            key,
            hub,
            judge: Arc::new(judge),
            options,
            pending,
        }
    }

    /// How many verdicts are committed (or about to be) and not revealed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn save(&self) -> Result<(), SettlementError> {
        match &self.options.pending_file {
            Some(path) => save_pending(path, &self.key.public_key(), &self.pending),
            None => Ok(()),
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
            if let Some((attestation, salt)) = self.pending.get(id).cloned() {
                let ack = self.hub.reveal(&self.key, attestation, &salt).await?;
                info!(paperwork = %id, status = %ack.status, "revealed");
                self.pending.remove(id);
                self.save()?;
                done += 1;
            }
        }
        for a in work.assignments {
            if let Some((attestation, salt)) = self.pending.get(&a.paperwork_id) {
                // Kept from before a restart whose commit may not have reached the hub: the same
                // digest again (the hub takes it twice as once), never a second verdict.
                let digest = commit_digest(salt, attestation)?;
                let ack = self.hub.commit(&self.key, a.paperwork_id, digest).await?;
                info!(paperwork = %a.paperwork_id, status = %ack.status, "committed again after a restart");
                done += 1;
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
            let verdict = attestation.body.verdict;
            // Kept before the commit is sent: a restart in between can still reveal it.
            self.pending.insert(a.paperwork_id, (attestation, salt));
            self.save()?;
            let ack = self.hub.commit(&self.key, a.paperwork_id, digest).await?;
            info!(paperwork = %a.paperwork_id, ?verdict, status = %ack.status, "committed");
            done += 1;
        }
        Ok(done)
    }
}
