//! Images answered by URL (`response_format: "url"`), as OpenAI's images API offers them: the node's
//! images travel and are signed for as with `b64_json` (the paperwork's `output_sha256` covers their
//! bytes), then the hub keeps each in the database every hub process shares ([`FileStore`]) for
//! [`FILE_RETENTION_MS`] and answers its URL, `GET /stacknet/v1/files/{id}`, in place of its bytes.
//!
//! The URL is the capability to read the file, as OpenAI's signed URLs are: its id is 128 random
//! bits, and the route needs no key (an `<img src>` works). A file past its retention is a 404 and
//! is deleted by a sweep every [`SWEEP_INTERVAL_MS`]. The URL's origin is the one the client called
//! (its `Host` header, `https` when `X-Forwarded-Proto` says so), so it works behind a proxy too.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand_core::RngCore;
use serde_json::Value;
use stacknet_protocol::{StackId, Timestamp};

use crate::error::ApiError;
use crate::store::{FileRecord, Store};
use crate::AppState;

/// How long a file answered by URL is served: an hour, as OpenAI serves its images.
pub const FILE_RETENTION_MS: i64 = 60 * 60 * 1000;
/// How often expired files are deleted.
pub const SWEEP_INTERVAL_MS: u64 = 5 * 60 * 1000;

/// The images answer `response` with each `b64_json` image kept as a file and answered by its URL
/// (and `expires_at`, in seconds). A refusal passes through unchanged.
pub async fn by_url(
    store: &dyn Store,
    stack: StackId,
    headers: &HeaderMap,
    response: Response,
) -> Result<Response, ApiError> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::internal(format!("the images answer could not be read: {e}")))?;
    let mut answer: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    let origin = origin(headers);
    let now = Timestamp::now();
    let expires_at = now.plus_ms(FILE_RETENTION_MS);
    let engine = base64::engine::general_purpose::STANDARD;
    let items = answer
        .get_mut("data")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| ApiError::internal("an images answer without data"))?;
    for item in items {
        let Some(obj) = item.as_object_mut() else { continue };
        let Some(b64) = obj.remove("b64_json") else {
            continue;
        };
        let image = engine
            .decode(b64.as_str().unwrap_or_default())
            .map_err(ApiError::internal)?;
        let id = new_id();
        store
            .put_file(FileRecord {
                id: id.clone(),
                content_type: stacknet_api::output::image_content_type(&image)
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                bytes: image,
                stack,
                created_at: now,
                expires_at,
            })
            .await
            .map_err(ApiError::internal)?;
        let path = stacknet_api::paths::file(&id);
        obj.insert("url".into(), Value::String(format!("{origin}{path}")));
    }
    answer["expires_at"] = Value::from(expires_at.unix_ms() / 1000);
    Ok(axum::Json(answer).into_response())
}

/// `GET /stacknet/v1/files/{id}`: the file's bytes, or a 404 once it has expired.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let not_found =
        || ApiError::NotFound(format!("no file {id:?}: it never existed or has expired")).into_response();
    if !is_id(&id) {
        return not_found();
    }
    let now = Timestamp::now();
    match state.store.file(id.clone(), now).await {
        Ok(Some(file)) => {
            let left = (file.expires_at.unix_ms() - now.unix_ms()).max(0) / 1000;
            let mut response = file.bytes.into_response();
            let h = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&file.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={left}")) {
                h.insert(header::CACHE_CONTROL, v);
            }
            response
        }
        Ok(None) => not_found(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Deletes expired files every [`SWEEP_INTERVAL_MS`] while the hub runs.
pub fn start_sweep(store: std::sync::Arc<dyn Store>, mut shutting_down: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = store.forget_files(Timestamp::now()).await {
                        tracing::warn!(error = %e, "could not delete expired files; trying again later");
                    }
                }
                _ = shutting_down.changed() => return,
            }
        }
    });
}

/// A new file id: `file_` and 32 hex digits of randomness.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    format!("file_{}", hex::encode(bytes))
}

fn is_id(id: &str) -> bool {
    id.strip_prefix("file_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// The origin the client called: `Host`, with `https` when a proxy says the client used it.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_checked_before_any_lookup() {
        let (a, b) = (new_id(), new_id());
        assert!(is_id(&a) && is_id(&b) && a != b);
        assert!(!is_id("file_../../etc/passwd"));
        assert!(!is_id(&a.to_uppercase()));
        assert!(!is_id("pw_0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn the_origin_is_the_one_the_client_called() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("hub.example:8080"));
        assert_eq!(origin(&h), "http://hub.example:8080");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(origin(&h), "https://hub.example:8080");
    }
}
