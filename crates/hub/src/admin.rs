//! The admin API (`/stacknet/v1/admin/...`, admin token as bearer): Stacks and their API keys.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use stacknet_protocol::{StackId, Timestamp};

use crate::auth::{self, bearer, hash_key};
use crate::error::ApiError;
use crate::store::{ApiKeyRecord, StackRecord};
use crate::AppState;

/// The longest Stack name.
pub const MAX_STACK_NAME_CHARS: usize = 200;

fn check_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = bearer(headers).ok_or(ApiError::InvalidAdminToken)?;
    // Compare hashes, so the time taken says nothing about how much of the token matched.
    if hash_key(given) == hash_key(&state.config.admin_token) {
        Ok(())
    } else {
        Err(ApiError::InvalidAdminToken)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStack {
    pub name: String,
}

pub async fn create_stack(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    check_admin(&state, &headers)?;
    let req: NewStack = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_STACK_NAME_CHARS {
        return Err(ApiError::invalid("name", "name must be 1 to 200 characters"));
    }
    let stack = StackRecord {
        id: StackId::random(),
        name,
        created_at: Timestamp::now(),
    };
    let store = state.store.clone();
    let rec = stack.clone();
    blocking(move || store.create_stack(&rec)).await?;
    Ok(Json(
        json!({"id": stack.id, "name": stack.name, "created_at": stack.created_at}),
    ))
}

pub async fn list_stacks(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_admin(&state, &headers)?;
    let store = state.store.clone();
    let stacks = blocking(move || store.stacks()).await?;
    let data: Vec<Value> = stacks
        .iter()
        .map(|s| json!({"id": s.id, "name": s.name, "created_at": s.created_at}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Creates an API key for a Stack; the key is in this response and nowhere else, ever.
pub async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stack): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&state, &headers)?;
    let stack: StackId = stack
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("stack", e.to_string()))?;
    let (key, record) = issue_key(&state, stack).await?;
    Ok(Json(
        json!({"stack": stack, "api_key": key, "prefix": record.prefix, "created_at": record.created_at}),
    ))
}

/// Creates and stores a key, and makes it usable at once.
pub async fn issue_key(state: &AppState, stack: StackId) -> Result<(String, ApiKeyRecord), ApiError> {
    let store = state.store.clone();
    let known = blocking(move || store.stacks())
        .await?
        .iter()
        .any(|s| s.id == stack);
    if !known {
        return Err(ApiError::NotFound(format!("stack {stack}")));
    }
    let key = auth::new_api_key();
    let record = ApiKeyRecord {
        hash: hash_key(&key),
        prefix: key.chars().take(auth::API_KEY_SHOWN_CHARS).collect(),
        stack,
        created_at: Timestamp::now(),
    };
    let store = state.store.clone();
    let rec = record.clone();
    blocking(move || store.create_api_key(&rec)).await?;
    state.api_keys.insert(record.hash, stack);
    Ok((key, record))
}

/// Runs a store call off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}
