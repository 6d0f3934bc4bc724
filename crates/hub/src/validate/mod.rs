//! Validation, the hub's side: keep what validators need, check every paperwork's envelope (C0),
//! sample logged tasks, assign them to bonded validators, take their commits and reveals, decide,
//! and move the money a decision moves (fees, slashes, rewards, refunds).
//!
//! Layout and flow:
//! - [`envelope`]: C0 at acceptance (`task.rs`) and the catalog's model pins (also checked at hello).
//! - [`sample`]: when the settle writer logs a batch, each paperwork is sampled iff
//!   SHA-256(new root || paperwork id) is below the worker's rate; a sampled task becomes a [`Case`]
//!   whose first round (Check) goes to one validator drawn by stake from the same hash.
//! - [`rounds`]: a validator's `Assignments`, `Commit` and `Reveal` (commit first, reveal once every
//!   member committed or the commit deadline passed; a second, different commit or attestation is
//!   equivocation), and the decision of a round: pass, escalate to a committee, reassign, convict.
//!   Deadlines act on their own: [`start_deadlines`] decides rounds whose windows closed.
//! - [`money`]: the ledger moves of a decision, each with an id derived from the task and the key,
//!   so a retry moves money once.
//! - [`http`]: `POST /stacknet/v1/validation`, `GET /stacknet/v1/attestations`, and the admin's
//!   canaries.
//!
//! A case is one row per paperwork ([`crate::store::CaseRecord`]) holding this module's [`Case`] as
//! JSON; every change to cases goes through [`Validation::lock`], so one hub never interleaves two.

pub mod envelope;
pub mod http;
pub mod money;
pub mod rounds;
pub mod sample;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stacknet_api::types::Round;
use stacknet_ledger::{AccountId, LedgerStore};
use stacknet_protocol::attestation::{Attestation, Verdict};
use stacknet_protocol::filing::{NodeRequest, Verdict as FilingVerdict};
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, PublicKey, Sha256Digest, Signed, Timestamp};

use crate::nodes::Nodes;
use crate::rules::NetworkRules;
use crate::store::{CaseRecord, Store, StoreError};

/// The longest wait between two looks of the deadline ticker ([`start_deadlines`]).
pub const DEADLINE_TICK_MS: u64 = 1_000;

/// Runs [`rounds::decide_due`] until the hub shuts down, every quarter of the commit window (at
/// least 50 ms, at most [`DEADLINE_TICK_MS`]), so a round past its deadline is decided and its task
/// reassigned without waiting for some validator to poll.
pub fn start_deadlines(v: Arc<Validation>, mut shutting_down: tokio::sync::watch::Receiver<bool>) {
    let every = (v.rules.commit_window_ms / 4).clamp(50, DEADLINE_TICK_MS);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = rounds::decide_due(&v).await {
                        tracing::warn!(error = %e, "cannot decide due validation rounds yet; trying again");
                    }
                }
                _ = shutting_down.changed() => return,
            }
        }
    });
}

/// Where a case stands; the API shows it as its snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Passed,
    Convicted,
    Disputed,
    Inconclusive,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Passed => "passed",
            Status::Convicted => "convicted",
            Status::Disputed => "disputed",
            Status::Inconclusive => "inconclusive",
        }
    }
}

/// A canary's truth, committed at creation: SHA-256(paperwork id || expected || salt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub expected: Verdict,
    pub salt: String,
    pub commitment: Sha256Digest,
}

/// One validator in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub validator: PublicKey,
    /// It was handed this assignment (counted toward its canaries).
    #[serde(default)]
    pub shown: bool,
    #[serde(default)]
    pub digest: Option<Sha256Digest>,
    /// The signed commit request, kept as evidence.
    #[serde(default)]
    pub commit: Option<Signed<NodeRequest>>,
    #[serde(default)]
    pub attestation: Option<Signed<Attestation>>,
    /// The signed reveal request, kept as evidence.
    #[serde(default)]
    pub reveal: Option<Signed<NodeRequest>>,
    /// Two signed, different commits or attestations for this task: the evidence of equivocation.
    #[serde(default)]
    pub equivocation: Vec<Signed<NodeRequest>>,
}

impl Member {
    pub fn new(validator: PublicKey) -> Self {
        Self {
            validator,
            shown: false,
            digest: None,
            commit: None,
            attestation: None,
            reveal: None,
            equivocation: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundState {
    pub round: Round,
    pub commit_by: Timestamp,
    pub members: Vec<Member>,
    #[serde(default)]
    pub decided: bool,
}

/// One task under validation (a sampled task, or a canary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub paperwork: PaperworkId,
    pub node_key: NodeKeyId,
    pub status: Status,
    /// The sampling hash: every draw for this case derives from it.
    pub seed: Sha256Digest,
    #[serde(default)]
    pub canary: Option<Canary>,
    pub rounds: Vec<RoundState>,
    /// The objective check a conviction cites.
    #[serde(default)]
    pub code: Option<String>,
    /// The validators whose FAILs convicted (they share the reward).
    #[serde(default)]
    pub convictors: Vec<NodeKeyId>,
    /// A conviction's money has all moved (slash, rewards, refund) and the worker is suspended.
    /// Until then the case stays open, and the deadline ticker finishes it (the ids make every move
    /// happen once), so a ledger that failed mid-way loses nothing.
    #[serde(default)]
    pub settled: bool,
    pub opened_at: Timestamp,
}

impl Case {
    pub fn record(&self) -> Result<CaseRecord, String> {
        Ok(CaseRecord {
            paperwork: self.paperwork,
            node_key: self.node_key,
            open: self.status == Status::Pending || self.unsettled(),
            canary: self.canary.is_some(),
            json: serde_json::to_string(self).map_err(|e| e.to_string())?,
        })
    }

    /// Convicted, but the conviction's money has not all moved yet.
    pub fn unsettled(&self) -> bool {
        self.status == Status::Convicted && !self.settled
    }

    pub fn from_record(r: &CaseRecord) -> Result<Self, String> {
        serde_json::from_str(&r.json).map_err(|e| format!("case of {}: {e}", r.paperwork))
    }
}

/// The hub's validation: its store, its ledger, the rules, and the suspended keys (in memory,
/// loaded at start and written through).
pub struct Validation {
    pub store: Arc<dyn Store>,
    pub ledger: Arc<dyn LedgerStore>,
    pub rules: NetworkRules,
    pub challenge_window_ms: u64,
    nodes: Arc<Nodes>,
    /// Counts decisions and slashes for `/metrics`.
    pub metrics: Arc<crate::metrics::HubMetrics>,
    lock: tokio::sync::Mutex<()>,
    /// When kept material was last swept (unix ms).
    last_forget: std::sync::atomic::AtomicI64,
    /// Test hook: logged batches are left unsampled, as a crash between logging and sampling would.
    crash_before_sampling: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validation").finish_non_exhaustive()
    }
}

/// When a suspension that began at `at` ends.
fn suspension_end(at: Timestamp, rules: &NetworkRules) -> Timestamp {
    at.plus_ms(i64::try_from(rules.suspension_ms).unwrap_or(i64::MAX))
}

impl Validation {
    pub async fn open(
        store: Arc<dyn Store>,
        ledger: Arc<dyn LedgerStore>,
        rules: NetworkRules,
        challenge_window_ms: u64,
        nodes: Arc<Nodes>,
        metrics: Arc<crate::metrics::HubMetrics>,
    ) -> Result<Self, StoreError> {
        for (node, at) in store.suspended().await? {
            nodes.suspend(node, suspension_end(at, &rules));
        }
        Ok(Self {
            store,
            ledger,
            rules,
            challenge_window_ms,
            nodes,
            metrics,
            lock: tokio::sync::Mutex::new(()),
            last_forget: std::sync::atomic::AtomicI64::new(0),
            crash_before_sampling: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Test hook: from now on (while `on`), logged batches are not sampled and the log is not marked
    /// sampled through them, as when the hub stops between logging a batch and sampling it; a
    /// restarted hub samples them ([`sample::recover`]).
    #[doc(hidden)]
    pub fn crash_before_sampling(&self, on: bool) {
        self.crash_before_sampling
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Serialises changes to cases.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    pub fn is_suspended(&self, node: &NodeKeyId) -> bool {
        self.nodes.is_suspended(node)
    }

    /// Suspends `node` for the network's suspension period from now.
    pub async fn suspend(&self, node: NodeKeyId) -> Result<(), StoreError> {
        let now = Timestamp::now();
        self.store.suspend(node, now).await?;
        let until = suspension_end(now, &self.rules);
        self.nodes.suspend(node, until);
        tracing::warn!(%node, %until, "node suspended after a conviction");
        Ok(())
    }

    /// What the key has bonded (its stake account's available balance).
    pub async fn bonded(&self, node: NodeKeyId) -> Result<Amount, String> {
        let b = self
            .ledger
            .balance(AccountId::stake(node))
            .await
            .map_err(|e| e.to_string())?;
        Ok(b.available())
    }

    /// What a slash may take from: the key's bond and what it is unbonding (available balances).
    pub async fn slashable(&self, node: NodeKeyId) -> Result<(Amount, Amount), String> {
        let balances = self
            .ledger
            .balances(vec![AccountId::stake(node), AccountId::unbonding(node)])
            .await
            .map_err(|e| e.to_string())?;
        match balances.as_slice() {
            [stake, unbonding] => Ok((stake.available(), unbonding.available())),
            _ => Err("the ledger answered the wrong number of balances".to_owned()),
        }
    }

    /// Reads `node`'s bond from the ledger into the routing map (as `stake::refresh_bond` does), so
    /// a slashed worker below the minimum bond is not routed tasks whatever its suspension.
    pub async fn refresh_bond(&self, node: NodeKeyId) -> Result<Amount, String> {
        let bonded = self
            .ledger
            .balance(AccountId::stake(node))
            .await
            .map_err(|e| e.to_string())?
            .posted;
        self.nodes.set_bond(node, bonded);
        Ok(bonded)
    }

    /// A validator whose attestations count: bonded enough and not suspended.
    pub async fn eligible(&self, node: NodeKeyId) -> Result<bool, String> {
        Ok(!self.is_suspended(&node) && self.bonded(node).await? >= self.rules.min_validator_bond)
    }

    pub async fn put(&self, case: &Case) -> Result<(), String> {
        self.store
            .put_case(case.record()?)
            .await
            .map_err(|e| e.to_string())
    }

    /// Filing's question: which of `ids` may not be settled now. A paperwork under validation is
    /// refused for now (`retry`); one convicted is void, refused for good.
    pub async fn filing_holds(
        &self,
        ids: &[PaperworkId],
    ) -> Result<Vec<(PaperworkId, FilingVerdict)>, String> {
        let cases = self
            .store
            .cases_of(ids.to_vec())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (id, case) in ids.iter().zip(cases) {
            let Some(record) = case.filter(|c| !c.canary) else {
                continue;
            };
            let case = Case::from_record(&record)?;
            match case.status {
                Status::Pending => out.push((
                    *id,
                    FilingVerdict::Refused {
                        reason: "under validation: file it again once its check is decided".into(),
                        retry: true,
                    },
                )),
                Status::Convicted => out.push((
                    *id,
                    FilingVerdict::Refused {
                        reason: format!(
                            "void: validators convicted this task ({})",
                            case.code.as_deref().unwrap_or("objective check")
                        ),
                        retry: false,
                    },
                )),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// A paperwork of `node` whose validation may still slash it: a case in committee (a first check
/// failed it), or a conviction whose money has not all moved. `None`: no slash is pending.
pub async fn slash_pending(
    state: &crate::AppState,
    node: NodeKeyId,
) -> Result<Option<stacknet_protocol::PaperworkId>, crate::error::ApiError> {
    for record in state.store.cases_about(Some(node)).await? {
        if !record.open || record.canary {
            continue;
        }
        let case: Case = serde_json::from_str(&record.json).map_err(crate::error::ApiError::internal)?;
        let in_committee = case.rounds.iter().any(|r| r.round == Round::Committee);
        if in_committee || case.status == Status::Convicted {
            return Ok(Some(case.paperwork));
        }
    }
    Ok(None)
}
