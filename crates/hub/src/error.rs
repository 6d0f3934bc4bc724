//! The hub's one HTTP error type: every failure a client can see maps here, with an exhaustive match,
//! to a status code and an OpenAI-style body `{"error": {"message", "type", "param", "code"}}`. The same
//! body is sent as an SSE event when a stream fails after its first chunk.
//!
//! A failure on the hub's side ([`Internal`]) keeps its source, is logged once with a fresh
//! request id (`req_...`) when it is made, and reaches the client as a generic message naming
//! that id: no database or ledger text leaves the hub.

use std::error::Error as StdError;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use stacknet_api::types::{ErrorBody, ErrorDetail};
use stacknet_protocol::wire::ErrorCode;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("You didn't provide an API key. Send it as 'Authorization: Bearer sk_...'.")]
    MissingKey,
    #[error("Incorrect API key provided.")]
    InvalidKey,
    #[error("Invalid admin token.")]
    InvalidAdminToken,
    #[error("We could not parse the JSON body of your request: {0}")]
    MalformedJson(String),
    #[error("{message}")]
    InvalidField { param: String, message: String },
    #[error("The model `{0}` does not exist or no node serves it.")]
    UnknownModel(String),
    #[error("Request body exceeds the limit of {limit} bytes.")]
    BodyTooLarge { limit: usize },
    #[error("The request's task is {len} bytes or more, over the {limit}-byte frame limit (max_frame_bytes) of the nodes that serve its model. Send a smaller request.")]
    TaskTooLarge { len: u64, limit: u64 },
    #[error("The task was cancelled: its answer was not read as fast as the node produced it.")]
    Abandoned,
    #[error("The hub is at capacity ({limit} requests in flight). Retry shortly.")]
    AtCapacity { limit: usize },
    #[error("No node is available to serve `{model}` right now. Retry in {retry_after_s} s.")]
    NoNode { model: String, retry_after_s: u64 },
    #[error("Every node serving `{model}` is busy and its queue is full ({waiting} requests waiting). Retry in {retry_after_s} s.")]
    QueueFull {
        model: String,
        waiting: usize,
        retry_after_s: u64,
    },
    #[error("Every node serving `{model}` stayed busy: the request waited {waited_ms} ms in the queue and its deadline passed. Retry in {retry_after_s} s.")]
    QueueTimeout {
        model: String,
        waited_ms: u64,
        retry_after_s: u64,
    },
    #[error("No bonded node serves `{model}`: the nodes that serve it have less than the network's minimum worker bond of {min} micro-credits.")]
    NoBondedNode {
        model: String,
        min: stacknet_protocol::Amount,
    },
    #[error("Insufficient earnings: {available} micro-credits available, {needed} needed. Earn or top up the node key's earnings first.")]
    InsufficientEarnings {
        available: stacknet_protocol::Amount,
        needed: stacknet_protocol::Amount,
    },
    #[error("The node's model server failed: {0}")]
    Upstream(String),
    #[error("The node failed: {0}")]
    NodeFailed(String),
    #[error("The request timed out after {0} ms.")]
    Timeout(u64),
    /// The node's own limit ended the task first (a tool's wall time, an upstream's time-out).
    #[error("The node did not finish in time: {0}")]
    NodeTimeout(String),
    #[error("Not found: {0}")]
    NotFound(String),
    #[error("Insufficient balance: {available} micro-credits available, this request may cost up to {needed}. Top up the Stack's balance.")]
    InsufficientBalance {
        available: stacknet_protocol::Amount,
        needed: stacknet_protocol::Amount,
    },
    #[error("Invalid signature: {0}")]
    BadSignature(String),
    #[error("Conflict: {0}")]
    Conflict(String),
    /// The caller is known but may not do this (a client key managing its Stack, a Stack
    /// changing another's skill).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(Internal),
    /// A request the router refused before any handler ran: a method the endpoint does not take,
    /// a query string that does not parse, a WebSocket upgrade that is not one. Its status kept.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// A failure on the hub's side: its cause, kept for the log, and the id the client is given.
#[derive(Clone)]
pub struct Internal {
    pub request_id: String,
    source: Arc<BoxError>,
}

impl Internal {
    /// Wraps `source`, giving it a fresh request id, and logs it with its whole chain of causes.
    pub fn new(source: impl Into<BoxError>) -> Self {
        let source: BoxError = source.into();
        let mut id = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let request_id = format!("req_{}", hex::encode(id));
        let mut chain = source.to_string();
        let mut cause = source.source();
        while let Some(c) = cause {
            chain.push_str(": ");
            chain.push_str(&c.to_string());
            cause = c.source();
        }
        tracing::error!(request_id = %request_id, error = %chain, "internal error");
        Self {
            request_id,
            source: Arc::new(source),
        }
    }

    /// The cause, for the log and for tests; never shown to clients.
    pub fn source(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.source.as_ref().as_ref()
    }
}

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "The hub failed to handle the request. It logged the cause under {}; quote it when you report this.",
            self.request_id
        )
    }
}

impl std::fmt::Debug for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Internal({}: {})", self.request_id, self.source)
    }
}

impl PartialEq for Internal {
    fn eq(&self, other: &Self) -> bool {
        self.request_id == other.request_id
    }
}

impl Eq for Internal {}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl ApiError {
    /// A failure on the hub's side (logged now; see [`Internal`]).
    pub fn internal(source: impl Into<BoxError>) -> Self {
        ApiError::Internal(Internal::new(source))
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            param: param.to_owned(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::InvalidKey | ApiError::InvalidAdminToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::MalformedJson(_) | ApiError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownModel(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InsufficientBalance { .. } | ApiError::InsufficientEarnings { .. } => {
                StatusCode::PAYMENT_REQUIRED
            }
            ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BodyTooLarge { .. } | ApiError::TaskTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Abandoned => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::AtCapacity { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoNode { .. }
            | ApiError::NoBondedNode { .. }
            | ApiError::QueueFull { .. }
            | ApiError::QueueTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) | ApiError::NodeFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::Timeout(_) | ApiError::NodeTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Rejected { status, .. } => *status,
        }
    }

    /// OpenAI's `type` and `code` fields.
    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::MissingKey => ("invalid_request_error", Some("missing_api_key")),
            ApiError::InvalidKey => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::InvalidAdminToken => ("invalid_request_error", Some("invalid_admin_token")),
            ApiError::MalformedJson(_) => ("invalid_request_error", Some("invalid_json")),
            ApiError::InvalidField { .. } => ("invalid_request_error", Some("invalid_value")),
            ApiError::UnknownModel(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::NotFound(_) => ("invalid_request_error", Some("not_found")),
            ApiError::InsufficientBalance { .. } => ("billing_error", Some("insufficient_balance")),
            ApiError::InsufficientEarnings { .. } => ("billing_error", Some("insufficient_earnings")),
            ApiError::BadSignature(_) => ("invalid_request_error", Some("invalid_signature")),
            ApiError::Conflict(_) => ("invalid_request_error", Some("conflict")),
            ApiError::Forbidden(_) => ("invalid_request_error", Some("insufficient_permissions")),
            ApiError::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            ApiError::TaskTooLarge { .. } => ("invalid_request_error", Some("max_frame_bytes_exceeded")),
            ApiError::Abandoned => ("api_error", Some("task_abandoned")),
            ApiError::AtCapacity { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            ApiError::NoNode { .. } => ("service_unavailable_error", Some("no_node_available")),
            ApiError::QueueFull { .. } => ("service_unavailable_error", Some("queue_full")),
            ApiError::QueueTimeout { .. } => ("service_unavailable_error", Some("queue_timeout")),
            ApiError::NoBondedNode { .. } => ("service_unavailable_error", Some("no_bonded_node")),
            ApiError::Upstream(_) => ("api_error", Some("upstream_error")),
            ApiError::NodeFailed(_) => ("api_error", Some("node_error")),
            ApiError::Timeout(_) | ApiError::NodeTimeout(_) => ("timeout_error", Some("timeout")),
            ApiError::Internal(_) => ("api_error", Some("internal_error")),
            ApiError::Rejected { status, .. } if status.is_server_error() => ("api_error", None),
            ApiError::Rejected { status, .. } if *status == StatusCode::METHOD_NOT_ALLOWED => {
                ("invalid_request_error", Some("method_not_allowed"))
            }
            ApiError::Rejected { .. } => ("invalid_request_error", Some("invalid_request")),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidField { param, .. } => Some(param),
            ApiError::UnknownModel(_) => Some("model"),
            _ => None,
        }
    }

    /// The OpenAI-style error body.
    pub fn error_body(&self) -> ErrorBody {
        let (kind, code) = self.kind();
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: kind.to_owned(),
                param: self.param().map(str::to_owned),
                code: code.map(str::to_owned),
            },
        }
    }

    /// [`Self::error_body`] as JSON, for the event streams.
    pub fn body(&self) -> Value {
        serde_json::to_value(self.error_body()).expect("an error body is strings only")
    }

    /// The error a node reported for a task, as the client sees it; `param` is the field a
    /// refusal of the request names (the workload's input).
    pub fn from_node(code: ErrorCode, message: String, model: &str, param: &str) -> Self {
        match code {
            ErrorCode::InvalidRequest => ApiError::invalid(param, message),
            ErrorCode::ContextLengthExceeded => ApiError::InvalidField {
                param: param.to_owned(),
                message: format!("context_length_exceeded: {message}"),
            },
            ErrorCode::UnknownModel => ApiError::UnknownModel(model.to_owned()),
            ErrorCode::UpstreamFailed => ApiError::Upstream(message),
            ErrorCode::Timeout => ApiError::NodeTimeout(message),
            ErrorCode::Overloaded => ApiError::NoNode {
                model: model.to_owned(),
                retry_after_s: 1,
            },
            ErrorCode::UnsupportedVersion
            | ErrorCode::MalformedFrame
            | ErrorCode::Unauthenticated
            | ErrorCode::BadContract
            | ErrorCode::Cancelled
            | ErrorCode::Internal => ApiError::NodeFailed(format!("{code:?}: {message}")),
        }
    }
}

impl From<stacknet_api::RequestError> for ApiError {
    fn from(e: stacknet_api::RequestError) -> Self {
        match e {
            stacknet_api::RequestError::MalformedJson(m) => ApiError::MalformedJson(m),
            stacknet_api::RequestError::Invalid { param, message } => {
                ApiError::InvalidField { param, message }
            }
            stacknet_api::RequestError::Unsupported(w) => {
                ApiError::NotFound(format!("no API for the workload {w:?}"))
            }
        }
    }
}

/// Most bytes of a refusal's text kept as its message.
const MAX_REJECTION_BYTES: usize = 4096;

/// Gives axum's own refusals, which come as plain text or empty (a method the route does not take,
/// a query string that does not parse, a body over the limit of a handler that reads bytes), the
/// same OpenAI-style body as every other error, keeping their status. Responses that are not
/// errors, or are JSON already, pass untouched.
pub async fn openai_errors(response: Response, max_body_bytes: usize) -> Response {
    let status = response.status();
    // JSON is already an OpenAI error; HTML is the dashboard's own error page.
    let is_final = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|ct| {
            ct.as_bytes().starts_with(b"application/json") || ct.as_bytes().starts_with(b"text/html")
        });
    if is_final || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge {
            limit: max_body_bytes,
        },
        StatusCode::METHOD_NOT_ALLOWED => ApiError::Rejected {
            status,
            message: "This endpoint does not take this method.".to_owned(),
        },
        _ if status.is_server_error() => ApiError::Rejected {
            status,
            message: "The hub could not serve this request.".to_owned(),
        },
        _ => {
            let text = axum::body::to_bytes(response.into_body(), MAX_REJECTION_BYTES)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .unwrap_or_default();
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("Bad request").to_owned()
            } else {
                text
            };
            ApiError::Rejected { status, message }
        }
    };
    error.into_response()
}

impl ApiError {
    /// Seconds for a `Retry-After` header: when trying again may succeed.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            ApiError::NoNode { retry_after_s, .. }
            | ApiError::QueueFull { retry_after_s, .. }
            | ApiError::QueueTimeout { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.error_body())).into_response();
        if let Some(s) = self.retry_after_s() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(s));
        }
        response
    }
}
