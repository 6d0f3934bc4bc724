//! The OpenAI-style requests, one module per workload. [`validate`] is the one validator: the hub
//! runs it at the edge (a client gets a 400 naming the field) and the node runs it again before it
//! runs anything (a hub is a peer too), so both sides apply exactly the same rules.

pub mod chat;
pub mod completion;
pub mod embeddings;
mod fields;
pub mod image_edit;

use serde_json::Value;
use stacknet_protocol::contract::Workload;

pub use fields::MAX_MODEL_NAME_BYTES;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("We could not parse the JSON body of your request: {0}")]
    MalformedJson(String),
    /// A field is missing or wrong; `param` names it as OpenAI does (`messages[0].role`).
    #[error("{message}")]
    Invalid { param: String, message: String },
    /// The hub has no API for this workload yet.
    #[error("the workload {0:?} has no API on this hub")]
    Unsupported(Workload),
}

impl RequestError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        RequestError::Invalid {
            param: param.to_owned(),
            message: message.into(),
        }
    }
}

/// A validated request: the JSON that travels to the node and what hub and node need from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub workload: Workload,
    /// The request as the task carries it (for an upload: its fields, each file replaced by its
    /// attachment: `{"sha256", "size", "content_type", "filename"}`).
    pub body: Value,
    pub model: String,
    /// The client asked for server-sent events.
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
    /// Outputs asked for (`n`); 1 unless the request says otherwise.
    pub choices: u64,
    /// `max_completion_tokens` or `max_tokens`, when given.
    pub max_output_tokens: Option<u64>,
}

/// Parses and validates a JSON body for `workload`.
pub fn parse_json(workload: Workload, bytes: &[u8]) -> Result<ApiRequest, RequestError> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| RequestError::MalformedJson(e.to_string()))?;
    validate(workload, body)
}

/// Validates a request body for `workload`: one exhaustive match, so a new workload does not
/// compile until it says how its requests are checked.
pub fn validate(workload: Workload, body: Value) -> Result<ApiRequest, RequestError> {
    match workload {
        Workload::Chat => chat::validate(body),
        Workload::Completion => completion::validate(body),
        Workload::Embedding => embeddings::validate(body).map(|(request, _)| request),
        Workload::ImageEdit => image_edit::validate(body).map(|(request, _)| request),
        Workload::ImageGeneration
        | Workload::VideoGeneration
        | Workload::Speech
        | Workload::Transcription
        | Workload::CodeExecution
        | Workload::WebSearch
        | Workload::WebFetch => Err(RequestError::Unsupported(workload)),
    }
}
