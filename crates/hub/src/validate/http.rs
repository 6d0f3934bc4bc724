//! The validation endpoints: `POST /stacknet/v1/validation` (a validator's signed requests),
//! `GET /stacknet/v1/attestations` (public outcomes and slashes), and
//! `POST /stacknet/v1/admin/canaries` (the admin commits a canary's truth in advance).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stacknet_api::types::{AttestationList, AttestationQuery, TaskOutcome};
use stacknet_protocol::attestation::Verdict;
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::{Nonce, PaperworkId, Sha256Digest, Signed, Timestamp};

use super::{rounds, Canary, Case, Status};
use crate::error::ApiError;
use crate::AppState;

/// `POST /stacknet/v1/validation`: a signed `assignments`, `commit` or `reveal` request.
pub async fn validation(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: Signed<NodeRequest> =
        serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    crate::settle::check_node_request(&state, &req).await?;
    let key = req.body.node_key;
    let v = &state.validation;
    Ok(match &req.body.action {
        NodeAction::Assignments => Json(rounds::assignments(v, key).await?).into_response(),
        NodeAction::Commit { paperwork, digest } => {
            Json(rounds::commit(v, key, &req, *paperwork, *digest).await?).into_response()
        }
        NodeAction::Reveal { attestation, salt } => {
            Json(rounds::reveal(v, key, &req, attestation, salt).await?).into_response()
        }
        _ => {
            return Err(ApiError::invalid(
                "action",
                "this endpoint takes an `assignments`, `commit` or `reveal` request",
            ))
        }
    })
}

/// `GET /stacknet/v1/attestations?node=&paperwork=`: decided and pending tasks with their revealed
/// attestations, and the slashes (canaries are never shown).
pub async fn attestations(
    State(state): State<AppState>,
    Query(q): Query<AttestationQuery>,
) -> Result<Json<AttestationList>, ApiError> {
    let store = &state.store;
    let records = match q.paperwork {
        Some(id) => store
            .cases_of(vec![id])
            .await
            .map_err(ApiError::internal)?
            .into_iter()
            .flatten()
            .filter(|c| !c.canary && q.node.is_none_or(|n| n == c.node_key))
            .collect(),
        None => store.cases_about(q.node).await.map_err(ApiError::internal)?,
    };
    let mut tasks = Vec::with_capacity(records.len());
    for r in &records {
        let case = Case::from_record(r).map_err(ApiError::internal)?;
        tasks.push(TaskOutcome {
            paperwork_id: case.paperwork,
            node_key: case.node_key,
            status: case.status.as_str().to_owned(),
            attestations: case
                .rounds
                .iter()
                .flat_map(|round| round.members.iter().filter_map(|m| m.attestation.clone()))
                .collect(),
        });
    }
    let slashes = store.slashes(q.node).await.map_err(ApiError::internal)?;
    Ok(Json(AttestationList { tasks, slashes }))
}

/// The admin's canary: a kept task and the verdict a correct validator must reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCanary {
    pub paperwork_id: PaperworkId,
    /// `pass` or `fail`.
    pub expected: Verdict,
}

/// The canary as created: its commitment, SHA-256(paperwork id || expected || salt), published
/// before any validator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryCreated {
    pub paperwork_id: PaperworkId,
    pub commitment: Sha256Digest,
}

/// SHA-256(paperwork id || expected || salt), each as its text.
pub fn canary_commitment(id: &PaperworkId, expected: Verdict, salt: &str) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(id.to_string().as_bytes());
    h.update(if expected == Verdict::Pass {
        b"pass".as_slice()
    } else {
        b"fail".as_slice()
    });
    h.update(salt.as_bytes());
    Sha256Digest(h.finalize().into())
}

/// `POST /stacknet/v1/admin/canaries`.
pub async fn create_canary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewCanary>,
) -> Result<Json<CanaryCreated>, ApiError> {
    crate::admin::check_admin(&state, &headers)?;
    if body.expected == Verdict::Inconclusive {
        return Err(ApiError::invalid(
            "expected",
            "a canary is expected to `pass` or to `fail`",
        ));
    }
    let id = body.paperwork_id;
    let store = &state.store;
    let kept = store.kept_task(id).await.map_err(ApiError::internal)?;
    let logged = store.paperwork(id).await.map_err(ApiError::internal)?;
    let (Some(kept), Some(_)) = (kept, logged) else {
        return Err(ApiError::NotFound(format!("{id} is not a kept task of this hub")));
    };
    let v = &state.validation;
    let _guard = v.lock().await;
    if store.case(id).await.map_err(ApiError::internal)?.is_some() {
        return Err(ApiError::Conflict(format!("{id} is under validation already")));
    }
    let salt = hex::encode(Nonce::random().0);
    let commitment = canary_commitment(&id, body.expected, &salt);
    let case = Case {
        paperwork: id,
        node_key: kept.node_key,
        status: Status::Pending,
        seed: commitment,
        canary: Some(Canary {
            expected: body.expected,
            salt,
            commitment,
        }),
        rounds: Vec::new(),
        code: None,
        convictors: Vec::new(),
        settled: false,
        opened_at: Timestamp::now(),
    };
    v.put(&case).await.map_err(ApiError::internal)?;
    tracing::info!(paperwork = %id, commitment = %commitment.to_hex(), "canary created");
    Ok(Json(CanaryCreated {
        paperwork_id: id,
        commitment,
    }))
}
