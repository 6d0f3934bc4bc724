//! Validators for the end-to-end tests: the real loop ([`Validator`]) on keys bonded through the
//! hub's public endpoints, in process, and faulty validators at the seams the loop has.
//!
//! - [`TestValidator`]: a key topped up by the admin, bonded by its own signed request, registered
//!   with the hub (its first ask) and running [`Validator::run`] with any [`Judge`].
//! - [`AlwaysPass`] and [`AlwaysFail`]: judges that never look at the task (a lazy and a hostile
//!   validator); the hub's canaries catch both.
//! - [`Checker::default`] (no models) is the validator without the model: INCONCLUSIVE.
//! - [`equivocate`]: a validator that commits twice, differently, for one task.

use std::time::Duration;

use stacknet_api::types::{Assignment, StakeStatus, ValidationAck};
use stacknet_node::settlement::{HubClient, SettlementError};
use stacknet_node::validator::checks::C3;
use stacknet_node::validator::runner::{attest, commit_digest, salt};
use stacknet_node::validator::{Judge, Validator, ValidatorOptions};
use stacknet_protocol::attestation::CheckResult;
use stacknet_protocol::filing::NodeAction;
use stacknet_protocol::{Amount, NodeKeyId, PublicKey, SecretKey};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use stacknet_node::validator::Checker;

/// How often a test validator asks for work: short, so a committee decides within a second or two.
pub const TEST_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Passes every task without checking it (a lazy validator).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysPass;

impl Judge for AlwaysPass {
    fn judge(&self, _: &Assignment, _: &PublicKey) -> Vec<CheckResult> {
        vec![CheckResult {
            name: "lazy".into(),
            passed: true,
            score_ppm: None,
            detail: "not checked".into(),
            inconclusive: false,
            code: None,
            evidence: Vec::new(),
        }]
    }
}

/// Fails every task, citing teacher-forced scoring it never ran (a hostile validator).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysFail;

impl Judge for AlwaysFail {
    fn judge(&self, _: &Assignment, _: &PublicKey) -> Vec<CheckResult> {
        vec![CheckResult {
            name: C3.into(),
            passed: false,
            score_ppm: None,
            detail: "not checked".into(),
            inconclusive: false,
            code: Some(C3.into()),
            evidence: Vec::new(),
        }]
    }
}

/// Tops up `key`'s earnings with `amount` through the admin API, then bonds it by the key's own
/// signed request, as an operator does with `stacknet admin` and `stacknet stake bond`.
pub async fn top_up_and_bond(
    hub: &HubClient,
    hub_url: &str,
    admin_token: &str,
    key: &SecretKey,
    amount: Amount,
) -> Result<StakeStatus, SettlementError> {
    let id = key.public_key().node_key_id();
    let url = format!(
        "{}{}",
        hub_url.trim_end_matches('/'),
        stacknet_api::paths::admin_node_topup(&id)
    );
    let body = serde_json::json!({"amount": amount.micros().to_string(), "reference": format!("bond-{id}")});
    let unreachable = |e: reqwest::Error| SettlementError::Unreachable {
        url: url.clone(),
        message: e.to_string(),
    };
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(admin_token)
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    if !resp.status().is_success() {
        return Err(SettlementError::Refused {
            status: resp.status().as_u16(),
            message: resp.text().await.unwrap_or_default(),
        });
    }
    hub.stake(key, NodeAction::Bond { amount }).await
}

/// A bonded validator running the real loop in this process.
#[derive(Debug)]
pub struct TestValidator {
    pub key: SecretKey,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestValidator {
    /// A fresh key, bonded with `bond`, registered with the hub at `hub_url` and checking with
    /// `judge` until stopped.
    pub async fn start<J: Judge>(
        hub_url: &str,
        admin_token: &str,
        bond: Amount,
        judge: J,
    ) -> Result<Self, SettlementError> {
        let key = SecretKey::generate();
        let hub = HubClient::connect(hub_url).await?;
        top_up_and_bond(&hub, hub_url, admin_token, &key, bond).await?;
        // The hub draws only validators it has seen ask.
        hub.assignments(&key).await?;
        // In memory only: a test validator never restarts.
        let options = ValidatorOptions {
            poll_interval: TEST_POLL_INTERVAL,
            pending_file: None,
        };
        let validator = Validator::new(key.clone(), hub, judge, options);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(validator.run(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            key,
            stop: Some(stop),
            task,
        })
    }

    pub fn id(&self) -> NodeKeyId {
        self.key.public_key().node_key_id()
    }

    /// Stops the loop after its current round.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// An equivocating validator's round: for each task assigned to `key`, commits to `judge`'s
/// attestation, then commits again to a second one (another salt, another digest). Returns the
/// hub's answer to each second commit (a refusal naming equivocation, from an honest hub).
pub async fn equivocate<J: Judge>(
    hub: &HubClient,
    key: &SecretKey,
    judge: &J,
) -> Result<Vec<Result<ValidationAck, SettlementError>>, SettlementError> {
    let work = hub.assignments(key).await?;
    let mut second = Vec::with_capacity(work.assignments.len());
    for a in &work.assignments {
        let attestation = attest(key, a, judge.judge(a, &hub.hub_key))?;
        let digest = commit_digest(&salt(), &attestation)?;
        hub.commit(key, a.paperwork_id, digest).await?;
        let other = commit_digest(&salt(), &attestation)?;
        second.push(hub.commit(key, a.paperwork_id, other).await);
    }
    Ok(second)
}
