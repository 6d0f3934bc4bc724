//! A validator's requests and the decisions they lead to.
//!
//! Commit then reveal: a member commits to SHA-256(salt || its attestation's signed bytes); reveals
//! are taken once every member of the round committed, or its commit deadline passed, so nobody can
//! copy another's verdict. A second, different commit or attestation from one validator for one
//! task is equivocation, and is slashed. A round is decided once everyone who committed revealed
//! (and everyone committed, or the commit deadline passed), or once its reveal window closed (as
//! long again after the commit deadline: a member that committed and never revealed counts as no
//! verdict). Deadlines act without anyone polling: [`super::start_deadlines`] runs [`decide_due`]
//! every few hundred milliseconds.
//! - Check: PASS passes; FAIL citing an objective code escalates to a committee; INCONCLUSIVE (or
//!   no answer) is reassigned once, then the task is inconclusive; a FAIL without one is disputed.
//! - Committee: `convict_threshold` FAILs citing an objective code convict; else passed (all PASS)
//!   or disputed. No money moves but for a conviction.
//! - A canary's every reveal is judged against the truth committed at its creation.

use stacknet_api::types::{Assignment, Assignments, Round, ValidationAck};
use stacknet_protocol::attestation::{Attestation, Verdict};
use stacknet_protocol::filing::NodeRequest;
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{NodeKeyId, PaperworkId, PublicKey, Sha256Digest, Signed, Timestamp};

use super::envelope::pinned_sha256;
use super::sample::{draw, open_round};
use super::{money, Case, Status, Validation};
use crate::error::ApiError;
use crate::store::WorkerStats;

/// The codes a conviction may cite: the text checks, and the media checks (`M0_terms`, the files
/// against the request's terms; `M1_replay`, a seeded built-in model run again).
pub const OBJECTIVE_CODES: [&str; 6] = [
    "C0_envelope",
    "C1_tokens",
    "C2_termination",
    "C3_teacher_forced",
    "M0_terms",
    "M1_replay",
];

/// The objective code a FAIL cites, if it cites one.
pub fn objective_code(a: &Attestation) -> Option<String> {
    if a.verdict != Verdict::Fail {
        return None;
    }
    a.checks
        .iter()
        .filter(|c| !c.passed && !c.inconclusive)
        .find_map(|c| {
            c.code
                .clone()
                .filter(|code| OBJECTIVE_CODES.contains(&code.as_str()))
        })
}

fn internal(e: String) -> ApiError {
    ApiError::internal(e)
}

async fn load(v: &Validation, paperwork: PaperworkId) -> Result<Case, ApiError> {
    let record = v
        .store
        .case(paperwork)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no validation of {paperwork}")))?;
    Case::from_record(&record).map_err(internal)
}

/// The validator must be bonded and not suspended for its requests to count.
async fn require_eligible(v: &Validation, key: &PublicKey) -> Result<(), ApiError> {
    let id = key.node_key_id();
    if !v.eligible(id).await.map_err(internal)? {
        return Err(ApiError::invalid(
            "node_key",
            format!(
                "{id} cannot validate: it needs at least {} bonded and must not be suspended",
                v.rules.min_validator_bond
            ),
        ));
    }
    Ok(())
}

/// Every member of the round has committed, or its deadline passed.
fn reveals_open(round: &super::RoundState, now: Timestamp) -> bool {
    now.unix_ms() > round.commit_by.unix_ms() || round.members.iter().all(|m| m.digest.is_some())
}

/// When a round's reveals close: a commit window after its commit deadline.
fn reveal_by(v: &Validation, round: &super::RoundState) -> Timestamp {
    round
        .commit_by
        .plus_ms(i64::try_from(v.rules.commit_window_ms).unwrap_or(i64::MAX))
}

/// Decides every open case whose round is due (deadlines passed, or everyone revealed) and opens
/// the next round where the decision calls for one: what the deadline ticker runs.
pub async fn decide_due(v: &Validation) -> Result<usize, String> {
    let _guard = v.lock().await;
    let mut decided = 0;
    for record in v.store.open_cases().await.map_err(|e| e.to_string())? {
        if record.canary {
            continue;
        }
        let mut case = Case::from_record(&record)?;
        if case.unsettled() {
            // A conviction whose money a failing ledger left half-moved: finish it.
            match finish_conviction(v, &mut case).await {
                Ok(()) => v.put(&case).await?,
                Err(e) => {
                    tracing::warn!(paperwork = %case.paperwork, error = %e, "a conviction's money could not move yet; retried on the next tick")
                }
            }
            continue;
        }
        if advance(v, &mut case).await? {
            v.put(&case).await?;
            decided += 1;
        }
    }
    Ok(decided)
}

/// `Assignments`: hands the validator its tasks (a canary among them when one is due) and lists
/// those it may reveal now. Registers the validator the first time it asks.
pub async fn assignments(v: &Validation, key: PublicKey) -> Result<Assignments, ApiError> {
    v.store.see_validator(key).await.map_err(ApiError::internal)?;
    require_eligible(v, &key).await?;
    let _guard = v.lock().await;
    let now = Timestamp::now();
    let mut handed: Vec<(PaperworkId, Round, Timestamp)> = Vec::new();
    let mut reveal = Vec::new();
    let mut newly_shown = 0u64;
    let mut canaries = Vec::new();
    for record in v.store.open_cases().await.map_err(ApiError::internal)? {
        let mut case = Case::from_record(&record).map_err(internal)?;
        let mut changed = false;
        if case.canary.is_some()
            && !case
                .rounds
                .iter()
                .any(|r| r.members.iter().any(|m| m.validator == key))
        {
            canaries.push(case.paperwork);
        }
        changed |= advance(v, &mut case).await.map_err(internal)?;
        for round in case.rounds.iter_mut().filter(|r| !r.decided) {
            let open = reveals_open(round, now);
            let (commit_by, kind) = (round.commit_by, round.round);
            for m in round.members.iter_mut().filter(|m| m.validator == key) {
                if m.digest.is_none() && now.unix_ms() <= commit_by.unix_ms() {
                    handed.push((case.paperwork, kind, commit_by));
                    if !m.shown {
                        m.shown = true;
                        newly_shown += 1;
                        changed = true;
                    }
                } else if m.digest.is_some() && m.attestation.is_none() && open {
                    reveal.push(case.paperwork);
                }
            }
        }
        if changed {
            v.put(&case).await.map_err(internal)?;
        }
    }
    let me = v
        .store
        .validators()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|r| r.key == key);
    let (mut total, mut since) = me.map_or((0, 0), |r| (r.handed, r.since_canary));
    total += newly_shown;
    since += newly_shown;
    if since >= v.rules.canary_every.saturating_sub(1) {
        if let Some(paperwork) = canaries.first() {
            let mut case = load(v, *paperwork).await?;
            let commit_by = now.plus_ms(i64::try_from(v.rules.commit_window_ms).unwrap_or(i64::MAX));
            let mut member = super::Member::new(key);
            member.shown = true;
            case.rounds.push(super::RoundState {
                round: Round::Check,
                commit_by,
                members: vec![member],
                decided: false,
            });
            v.put(&case).await.map_err(internal)?;
            handed.push((case.paperwork, Round::Check, commit_by));
            total += 1;
            since = 0;
        }
    }
    v.store
        .set_validator_counts(key.node_key_id(), total, since)
        .await
        .map_err(ApiError::internal)?;
    drop(_guard);
    let mut assignments = Vec::with_capacity(handed.len());
    for (paperwork, round, commit_by) in handed {
        if let Some(a) = assignment(v, paperwork, round, commit_by).await? {
            assignments.push(a);
        }
    }
    Ok(Assignments { assignments, reveal })
}

/// What a validator is handed for one task: the paperwork and what the hub kept of it.
async fn assignment(
    v: &Validation,
    paperwork_id: PaperworkId,
    round: Round,
    commit_by: Timestamp,
) -> Result<Option<Assignment>, ApiError> {
    let Some(kept) = v
        .store
        .kept_task(paperwork_id)
        .await
        .map_err(ApiError::internal)?
    else {
        tracing::warn!(paperwork = %paperwork_id, "assigned, but its material is no longer kept");
        return Ok(None);
    };
    let Some(logged) = v
        .store
        .paperwork(paperwork_id)
        .await
        .map_err(ApiError::internal)?
    else {
        return Ok(None);
    };
    let paperwork: Signed<Paperwork> =
        serde_json::from_str(&logged.record.json).map_err(ApiError::internal)?;
    let required_model_sha256 = pinned_sha256(&paperwork.body.contract.body.model);
    Ok(Some(Assignment {
        paperwork_id,
        paperwork,
        round,
        request: kept.request,
        output: kept.output,
        output_tokens: kept.tokens,
        required_model_sha256,
        commit_by,
    }))
}

/// The round (index) in which `key` is a member, latest first, that `pick` accepts.
fn seat(case: &Case, key: &PublicKey, pick: impl Fn(&super::Member) -> bool) -> Option<(usize, usize)> {
    case.rounds.iter().enumerate().rev().find_map(|(r, round)| {
        round
            .members
            .iter()
            .position(|m| m.validator == *key && pick(m))
            .map(|m| (r, m))
    })
}

/// `Commit{paperwork, digest}`.
pub async fn commit(
    v: &Validation,
    key: PublicKey,
    req: &Signed<NodeRequest>,
    paperwork: PaperworkId,
    digest: Sha256Digest,
) -> Result<ValidationAck, ApiError> {
    require_eligible(v, &key).await?;
    let _guard = v.lock().await;
    let mut case = load(v, paperwork).await?;
    let Some((r, m)) = seat(&case, &key, |_| true) else {
        return Err(ApiError::NotFound(format!(
            "{paperwork} is not assigned to {}",
            key.node_key_id()
        )));
    };
    let round = &mut case.rounds[r];
    let member = &mut round.members[m];
    match (&member.digest, &member.commit) {
        (Some(d), _) if *d == digest => return Ok(ack(paperwork, "committed")),
        (Some(_), first) => {
            member.equivocation = first.iter().cloned().chain([req.clone()]).collect();
            v.put(&case).await.map_err(internal)?;
            money::slash(v, key.node_key_id(), paperwork, "equivocation", None, &[])
                .await
                .map_err(internal)?;
            return Err(ApiError::Conflict(format!(
                "a second, different commit for {paperwork}: equivocation; the validator was slashed"
            )));
        }
        (None, _) => {}
    }
    if Timestamp::now().unix_ms() > round.commit_by.unix_ms() {
        return Err(ApiError::invalid(
            "paperwork",
            format!("the commit deadline {} has passed", round.commit_by),
        ));
    }
    member.digest = Some(digest);
    member.commit = Some(req.clone());
    v.put(&case).await.map_err(internal)?;
    Ok(ack(paperwork, "committed"))
}

fn ack(paperwork_id: PaperworkId, status: &str) -> ValidationAck {
    ValidationAck {
        paperwork_id,
        status: status.to_owned(),
    }
}

/// SHA-256(salt bytes || the attestation's signed bytes): what a commit's digest must be.
pub fn commit_digest(salt: &[u8], attestation: &Signed<Attestation>) -> Result<Sha256Digest, String> {
    attestation.commit_digest(salt).map_err(|e| e.to_string())
}

/// `Reveal{attestation, salt}`.
pub async fn reveal(
    v: &Validation,
    key: PublicKey,
    req: &Signed<NodeRequest>,
    attestation: &Signed<Attestation>,
    salt: &str,
) -> Result<ValidationAck, ApiError> {
    require_eligible(v, &key).await?;
    let body = &attestation.body;
    if body.validator != key {
        return Err(ApiError::invalid(
            "attestation",
            "the attestation is not the requester's",
        ));
    }
    attestation
        .verify(&key)
        .map_err(|e| ApiError::BadSignature(format!("attestation: {e}")))?;
    let salt = hex::decode(salt)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| ApiError::invalid("salt", "the salt is 32 bytes in lowercase hex"))?;
    let paperwork = body.paperwork;
    let _guard = v.lock().await;
    let mut case = load(v, paperwork).await?;
    if body.node_key != case.node_key {
        return Err(ApiError::invalid(
            "attestation",
            "the attestation is about another node",
        ));
    }
    let Some((r, m)) = seat(&case, &key, |m| m.digest.is_some()) else {
        return Err(ApiError::Conflict(format!(
            "no commit of {} for {paperwork}",
            key.node_key_id()
        )));
    };
    let now = Timestamp::now();
    let open = reveals_open(&case.rounds[r], now);
    let member = &mut case.rounds[r].members[m];
    if let Some(first) = &member.attestation {
        if first == attestation {
            return Ok(ack(paperwork, "revealed"));
        }
        member.equivocation = member.reveal.iter().cloned().chain([req.clone()]).collect();
        v.put(&case).await.map_err(internal)?;
        money::slash(v, key.node_key_id(), paperwork, "equivocation", None, &[])
            .await
            .map_err(internal)?;
        return Err(ApiError::Conflict(format!(
            "a second, different attestation for {paperwork}: equivocation; the validator was slashed"
        )));
    }
    if case.rounds[r].decided && case.canary.is_none() {
        return Err(ApiError::Conflict(format!(
            "the round of {paperwork} was decided without this reveal: its reveal window closed at {}",
            reveal_by(v, &case.rounds[r])
        )));
    }
    let member = &mut case.rounds[r].members[m];
    if member.digest != Some(commit_digest(&salt, attestation).map_err(internal)?) {
        return Err(ApiError::invalid(
            "attestation",
            "the attestation and salt do not match the commit",
        ));
    }
    if !open {
        return Err(ApiError::Conflict(format!(
            "reveals of {paperwork} open once every member committed, or at {}",
            case.rounds[r].commit_by
        )));
    }
    member.attestation = Some(attestation.clone());
    member.reveal = Some(req.clone());
    v.put(&case).await.map_err(internal)?;
    if let Err(e) = money::fee(v, paperwork, r, key.node_key_id()).await {
        tracing::error!(%paperwork, error = %e, "cannot pay a verification fee");
    }
    if case.canary.is_some() {
        judge_canary(v, &mut case, r, key.node_key_id(), body.verdict)
            .await
            .map_err(internal)?;
    } else {
        advance(v, &mut case).await.map_err(internal)?;
    }
    v.put(&case).await.map_err(internal)?;
    let status = if case.status == Status::Pending || case.canary.is_some() {
        "revealed"
    } else {
        case.status.as_str()
    };
    Ok(ack(paperwork, status))
}

/// A canary's verdict against the truth committed at its creation: passing a known-bad task or
/// failing a known-good one slashes the validator; INCONCLUSIVE does not.
async fn judge_canary(
    v: &Validation,
    case: &mut Case,
    round: usize,
    validator: NodeKeyId,
    verdict: Verdict,
) -> Result<(), String> {
    case.rounds[round].decided = true;
    let expected = case.canary.as_ref().map(|c| c.expected);
    let reason = match (expected, verdict) {
        (Some(Verdict::Fail), Verdict::Pass) => "canary_pass",
        (Some(Verdict::Pass), Verdict::Fail) => "canary_fail",
        _ => return Ok(()),
    };
    money::slash(v, validator, case.paperwork, reason, None, &[]).await?;
    Ok(())
}

/// Decides the latest round of a (non-canary) case if it is ready; true if the case changed.
pub async fn advance(v: &Validation, case: &mut Case) -> Result<bool, String> {
    if case.canary.is_some() || case.status != Status::Pending {
        return Ok(false);
    }
    let now = Timestamp::now();
    let Some(round) = case.rounds.last_mut() else {
        return Ok(false);
    };
    let committed: Vec<_> = round.members.iter().filter(|m| m.digest.is_some()).collect();
    let reveals_closed = now.unix_ms() > reveal_by(v, round).unix_ms();
    let ready = !round.decided
        && reveals_open(round, now)
        && (reveals_closed || committed.iter().all(|m| m.attestation.is_some()))
        && (now.unix_ms() > round.commit_by.unix_ms() || !committed.is_empty());
    if !ready {
        return Ok(false);
    }
    round.decided = true;
    let kind = round.round;
    let votes: Vec<Attestation> = round
        .members
        .iter()
        .filter_map(|m| m.attestation.as_ref().map(|a| a.body.clone()))
        .collect();
    match kind {
        Round::Check => decide_check(v, case, votes).await?,
        Round::Committee => decide_committee(v, case, votes).await?,
    }
    Ok(true)
}

async fn decide_check(v: &Validation, case: &mut Case, votes: Vec<Attestation>) -> Result<(), String> {
    let vote = votes.first();
    // Every validator that sat on this case, and the worker: none of them checks it again.
    let exclude: Vec<NodeKeyId> = case
        .rounds
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.validator.node_key_id()))
        .chain([case.node_key])
        .collect();
    // A PASS of an earlier check round: this round is its second opinion.
    let passed_before = case.rounds[..case.rounds.len().saturating_sub(1)]
        .iter()
        .filter(|r| r.round == Round::Check)
        .flat_map(|r| &r.members)
        .any(|m| {
            m.attestation
                .as_ref()
                .is_some_and(|a| a.body.verdict == Verdict::Pass)
        });
    match vote.map(|a| a.verdict) {
        Some(Verdict::Pass) if !passed_before && second_opinion(v) => {
            if open_round(v, case, Round::Check, &exclude).await? > 0 {
                tracing::info!(paperwork = %case.paperwork, "a check passed: a second opinion is asked");
                return Ok(());
            }
            finish(v, case, Status::Passed).await
        }
        Some(Verdict::Pass) => finish(v, case, Status::Passed).await,
        Some(Verdict::Fail) if vote.and_then(objective_code).is_some() => {
            let seed = case.seed;
            let enough = draw(v, &seed, u32::MAX, v.rules.committee_size, &exclude)
                .await?
                .len()
                >= v.rules.committee_size;
            let exclude = if enough { exclude } else { vec![case.node_key] };
            if open_round(v, case, Round::Committee, &exclude).await? == 0 {
                return finish(v, case, Status::Disputed).await;
            }
            tracing::info!(paperwork = %case.paperwork, "a check failed: escalated to a committee");
            Ok(())
        }
        Some(Verdict::Fail) => finish(v, case, Status::Disputed).await,
        // A second opinion that could not decide leaves the first PASS standing.
        Some(Verdict::Inconclusive) | None if passed_before => finish(v, case, Status::Passed).await,
        Some(Verdict::Inconclusive) | None => {
            let checks = case.rounds.iter().filter(|r| r.round == Round::Check).count();
            if checks < 2 && open_round(v, case, Round::Check, &exclude).await? > 0 {
                return Ok(());
            }
            finish(v, case, Status::Inconclusive).await
        }
    }
}

/// Whether a PASS gets a second opinion: `second_opinion_bps` of them, drawn from the hub's own
/// randomness when the PASS is decided, so neither the worker nor the first validator (which could
/// compute anything derived from the public log, or grind its own salt) can know in advance.
fn second_opinion(v: &Validation) -> bool {
    let mut draw = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut draw);
    super::sample::is_sampled(&Sha256Digest(draw), u64::from(v.rules.second_opinion_bps))
}

async fn decide_committee(v: &Validation, case: &mut Case, votes: Vec<Attestation>) -> Result<(), String> {
    let convicting: Vec<(&Attestation, String)> = votes
        .iter()
        .filter_map(|a| objective_code(a).map(|c| (a, c)))
        .collect();
    if convicting.len() >= v.rules.convict_threshold.max(1) {
        let mut codes: Vec<&str> = convicting.iter().map(|(_, c)| c.as_str()).collect();
        codes.sort_unstable();
        let code = codes
            .iter()
            .max_by_key(|c| codes.iter().filter(|d| d == c).count())
            .map(|c| (*c).to_owned());
        let rewarded: Vec<NodeKeyId> = convicting
            .iter()
            .map(|(a, _)| a.validator.node_key_id())
            .collect();
        return convict(v, case, code, &rewarded).await;
    }
    let all_pass = !votes.is_empty() && votes.iter().all(|a| a.verdict == Verdict::Pass);
    finish(
        v,
        case,
        if all_pass {
            Status::Passed
        } else {
            Status::Disputed
        },
    )
    .await
}

async fn finish(v: &Validation, case: &mut Case, status: Status) -> Result<(), String> {
    case.status = status;
    v.metrics.validation(status.as_str());
    if status == Status::Passed {
        v.nodes
            .reputation
            .observe(case.node_key, crate::reputation::Kind::ValidationPassed, 0);
        let delta = WorkerStats {
            checks: 1,
            ..WorkerStats::default()
        };
        v.store
            .bump_worker(case.node_key, delta)
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(paperwork = %case.paperwork, status = status.as_str(), "validation decided");
    Ok(())
}

/// A conviction: the worker's stake slashed (the convicting validators rewarded from it), the
/// paperwork void, the client refunded, the worker suspended.
async fn convict(
    v: &Validation,
    case: &mut Case,
    code: Option<String>,
    rewarded: &[NodeKeyId],
) -> Result<(), String> {
    case.status = Status::Convicted;
    v.metrics.validation(Status::Convicted.as_str());
    case.code = code;
    case.convictors = rewarded.to_vec();
    // Written first: from here filing refuses the paperwork for good, and until the money below
    // has all moved the case stays open for the deadline ticker to finish.
    v.put(case).await?;
    tracing::warn!(paperwork = %case.paperwork, node = %case.node_key, "convicted by a committee");
    // The decision stands whatever the ledger does now: what could not move is moved by the
    // deadline ticker (the case stays open until it is), so the validator's reveal succeeds.
    if let Err(e) = finish_conviction(v, case).await {
        tracing::warn!(paperwork = %case.paperwork, error = %e, "a conviction's money could not move yet; the deadline ticker retries it");
    }
    Ok(())
}

/// A conviction's consequences, each once however often it runs: the slash and the rewards, the
/// refund, the suspension, the worker's count. Marks the case settled (the caller stores it).
async fn finish_conviction(v: &Validation, case: &mut Case) -> Result<(), String> {
    money::slash(
        v,
        case.node_key,
        case.paperwork,
        "convicted",
        case.code.clone(),
        &case.convictors,
    )
    .await?;
    money::refund(v, case.paperwork).await?;
    v.suspend(case.node_key).await.map_err(|e| e.to_string())?;
    v.nodes
        .reputation
        .observe(case.node_key, crate::reputation::Kind::Convicted, 0);
    let delta = WorkerStats {
        convictions: 1,
        ..WorkerStats::default()
    };
    v.store
        .bump_worker(case.node_key, delta)
        .await
        .map_err(|e| e.to_string())?;
    case.settled = true;
    Ok(())
}
