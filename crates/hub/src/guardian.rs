//! Trust guardians: keys that probe nodes through the hub and hand in signed telemetry, which the
//! hub keeps and folds into reputation ([`crate::reputation`]).
//!
//! **Who may be a guardian:** a key with at least the network's validator bond that is not
//! suspended, the validators' own gate. Chosen over a list in the hub's configuration because a
//! guardian's reports move reputation, so traffic, so money: a bond makes running many fake
//! guardians costly, and no operator has to be trusted to keep a list. (A guardian is not slashed
//! for its reports yet; they only move reputation, and each is signed, so a false one stays on
//! record against its key.)
//!
//! **A probe** is an ordinary task: the hub signs an ordinary contract for the node the guardian
//! names, with the guardian's probes Stack ([`probes_stack`], an id like any other Stack's) as its
//! Stack, and bills it like any request, so a node cannot tell a probe from real traffic. The hub
//! records no evidence of its own about a probe; the guardian's telemetry is that evidence.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use stacknet_api::types::TelemetryReceipt;
use stacknet_protocol::attestation::Telemetry;
use stacknet_protocol::filing::{probes_stack, NodeAction, NodeRequest};
use stacknet_protocol::{NodeKeyId, PublicKey, Signed, Timestamp};

use crate::error::ApiError;
use crate::reputation::{day_of, Kind};
use crate::settle::check_node_request;
use crate::AppState;

/// Most probes one telemetry report may count.
pub const MAX_TELEMETRY_PROBES: u64 = 100_000;
/// A report whose window ended longer ago than this is refused.
pub const MAX_TELEMETRY_AGE_MS: i64 = 86_400_000;
/// How far past the hub's clock a report's window may end.
pub const TELEMETRY_SKEW_MS: i64 = 300_000;

/// `POST /stacknet/v1/guardian`: a guardian's signed `probe` or `telemetry` request.
pub async fn guardian(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: Signed<NodeRequest> =
        serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let id = check_node_request(&state, &req).await?;
    let key = req.body.node_key;
    match &req.body.action {
        NodeAction::Probe { node, request } => {
            require_guardian(&state, id).await?;
            if *node == id {
                return Err(ApiError::invalid("node", "a guardian does not probe its own key"));
            }
            crate::task::probe(state.clone(), probes_stack(&key), *node, request).await
        }
        NodeAction::Telemetry { report } => {
            require_guardian(&state, id).await?;
            Ok(Json(accept_telemetry(&state, &key, report).await?).into_response())
        }
        _ => Err(ApiError::invalid(
            "action",
            "this endpoint takes a `probe` or `telemetry` request",
        )),
    }
}

async fn require_guardian(state: &AppState, id: NodeKeyId) -> Result<(), ApiError> {
    if state.validation.eligible(id).await.map_err(ApiError::internal)? {
        return Ok(());
    }
    Err(ApiError::invalid(
        "node_key",
        format!(
            "{id} cannot act as a guardian: it needs at least {} bonded (the validator bond) and must not be suspended",
            state.validation.rules.min_validator_bond
        ),
    ))
}

/// Checks a report (the guardian's signature, its counts, its window), keeps it once, and adds its
/// counts to the node's evidence on the day its window ended.
async fn accept_telemetry(
    state: &AppState,
    guardian: &PublicKey,
    report: &Signed<Telemetry>,
) -> Result<TelemetryReceipt, ApiError> {
    let t = &report.body;
    let bad = |field: &str, why: String| ApiError::invalid(&format!("report.{field}"), why);
    if t.guardian != *guardian {
        return Err(bad(
            "guardian",
            "the report is not signed by the key that hands it in".into(),
        ));
    }
    report
        .verify(&t.guardian)
        .map_err(|e| ApiError::BadSignature(e.to_string()))?;
    if t.node_key == guardian.node_key_id() {
        return Err(bad(
            "node_key",
            "a guardian does not report on its own key".into(),
        ));
    }
    let counted = [t.errors, t.timeouts, t.wrong]
        .iter()
        .try_fold(t.successes, |sum, n| sum.checked_add(*n));
    if counted != Some(t.probes) || t.probes == 0 || t.probes > MAX_TELEMETRY_PROBES {
        return Err(bad(
            "probes",
            format!("must be successes + errors + timeouts + wrong, between 1 and {MAX_TELEMETRY_PROBES}"),
        ));
    }
    if t.warm_failures > t.successes.saturating_add(t.wrong) {
        return Err(bad(
            "warm_failures",
            "more than the probes that were answered".into(),
        ));
    }
    if t.latency_p50_ms > t.latency_p99_ms {
        return Err(bad("latency_p50_ms", "above latency_p99_ms".into()));
    }
    if t.uptime_ppm > 1_000_000 {
        return Err(bad("uptime_ppm", "above 1,000,000 (all of the time)".into()));
    }
    let now = Timestamp::now().unix_ms();
    let (start, end) = (t.window_start.unix_ms(), t.window_end.unix_ms());
    if start > end
        || end > now.saturating_add(TELEMETRY_SKEW_MS)
        || end < now.saturating_sub(MAX_TELEMETRY_AGE_MS)
    {
        return Err(bad(
            "window_end",
            "the window must start before it ends, and end within the last day".into(),
        ));
    }
    let id = hex::encode(report.digest().map_err(ApiError::internal)?.0);
    let json = serde_json::to_string(report).map_err(ApiError::internal)?;
    let new = state
        .store
        .add_telemetry(id.clone(), t.node_key, t.window_end, json)
        .await
        .map_err(ApiError::internal)?;
    if new {
        let counts = [
            (Kind::ProbePassed, t.successes, 0),
            (Kind::ProbeFailed, t.errors.saturating_add(t.timeouts), 0),
            (Kind::ProbeWrong, t.wrong, 0),
            (Kind::WarmClaimFailed, t.warm_failures, 0),
        ];
        state
            .nodes
            .reputation
            .record(&*state.store, t.node_key, day_of(t.window_end), &counts)
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(TelemetryReceipt { id, new })
}
