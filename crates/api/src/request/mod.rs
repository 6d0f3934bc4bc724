//! The OpenAI-style requests, one module per workload. [`validate`] is the one validator: the hub
//! runs it at the edge (a client gets a 400 naming the field) and the node runs it again before it
//! runs anything (a hub is a peer too), so both sides apply exactly the same rules.

pub mod audio;
pub mod chat;
pub mod code;
pub mod completion;
pub mod embeddings;
pub mod fetch;
mod fields;
pub mod image_edit;
pub mod image_generation;
pub mod search;
pub mod tool;
pub mod video;

use serde_json::Value;
use stacknet_protocol::contract::Workload;

pub use fields::MAX_MODEL_NAME_BYTES;

/// The deepest a request body may nest arrays and objects (the body object itself is level 1).
/// serde_json refuses 128 levels, and the task frame wraps the body one level deeper, so without a
/// limit of its own the hub would take a body (127 levels) that the node's decoder then refuses:
/// the task would be lost and its node slot held until the time-out. Far below both parsers' limit,
/// far above any real request (a tool's JSON schema included).
pub const MAX_JSON_DEPTH: usize = 32;

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
    /// `best_of`, when given: candidates generated per prompt, of which the best `n` are returned
    /// (validated to be at least `n`).
    pub best_of: Option<u64>,
    /// Prompts, each answered with `n` choices: a legacy completion's prompt array counts its
    /// items; 1 otherwise.
    pub prompts: u64,
    /// Images in the messages (`image_url` content parts), each given an input allowance when the
    /// usage is bounded.
    pub images: u64,
    /// `max_completion_tokens` or `max_tokens`, when given.
    pub max_output_tokens: Option<u64>,
}

impl ApiRequest {
    /// Completions the backend generates, each up to the output limit: `best_of` candidates (or
    /// `n`) for every prompt. What bounds the output, so the escrow holds for all of them.
    pub fn generations(&self) -> u64 {
        self.choices
            .max(self.best_of.unwrap_or(1))
            .max(1)
            .saturating_mul(self.prompts.max(1))
    }

    /// A request answered whole (no stream, no token budget): embeddings, images. `choices` is the
    /// number of outputs asked for.
    pub(crate) fn whole(
        workload: Workload,
        model: String,
        user: Option<String>,
        choices: u64,
        body: Value,
    ) -> Self {
        Self {
            workload,
            model,
            stream: false,
            include_usage: false,
            user,
            choices,
            best_of: None,
            prompts: 1,
            images: 0,
            max_output_tokens: None,
            body,
        }
    }
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
    check_depth(&body)?;
    match workload {
        Workload::Chat => chat::validate(body),
        Workload::Completion => completion::validate(body),
        Workload::Embedding => embeddings::validate(body).map(|(request, _)| request),
        Workload::ImageEdit => image_edit::validate(body).map(|(request, _)| request),
        Workload::CodeExecution => code::validate(body).map(|(request, _)| request),
        Workload::WebFetch => fetch::validate(body).map(|(request, _)| request),
        Workload::WebSearch => search::validate(body).map(|(request, _)| request),
        Workload::ToolCall => tool::validate(body).map(|(request, _)| request),
        Workload::Speech => audio::validate_speech(body).map(|(request, _)| request),
        Workload::Transcription => audio::validate_transcription(body).map(|(request, _)| request),
        Workload::ImageGeneration => image_generation::validate(body).map(|(request, _)| request),
        Workload::VideoGeneration => video::validate(body).map(|(request, _)| request),
    }
}

/// Refuses a body nested deeper than [`MAX_JSON_DEPTH`], naming the top-level field that is. (A body
/// that is not an object is refused by the workload's validator.)
fn check_depth(body: &Value) -> Result<(), RequestError> {
    let Value::Object(obj) = body else {
        return Ok(());
    };
    match obj.iter().find(|(_, v)| deeper_than(v, MAX_JSON_DEPTH - 1)) {
        None => Ok(()),
        Some((field, _)) => Err(RequestError::invalid(
            field,
            format!(
                "{field} is nested too deep: a request body may nest arrays and objects at most \
                 {MAX_JSON_DEPTH} levels deep"
            ),
        )),
    }
}

/// Whether `value` nests arrays and objects more than `levels` deep. Looks no deeper than that, so
/// the recursion is bounded whatever the value.
fn deeper_than(value: &Value, levels: usize) -> bool {
    let below = levels.checked_sub(1);
    match value {
        Value::Array(items) => below.is_none_or(|l| items.iter().any(|v| deeper_than(v, l))),
        Value::Object(obj) => below.is_none_or(|l| obj.values().any(|v| deeper_than(v, l))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// `{"model": ..., "messages": [...], "metadata": [[...]]}` nested `depth` levels in all.
    fn chat_nested(depth: usize) -> String {
        let inner = "[".repeat(depth - 1) + &"]".repeat(depth - 1);
        format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}], "metadata": {inner}}}"#)
    }

    #[test]
    fn a_deeply_nested_body_is_refused_naming_the_depth() {
        assert!(parse_json(Workload::Chat, chat_nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        // 127 levels: serde_json takes it; the task frame around it would be 128.
        for depth in [MAX_JSON_DEPTH + 1, 127] {
            let err = parse_json(Workload::Chat, chat_nested(depth).as_bytes()).unwrap_err();
            let RequestError::Invalid { param, message } = err else {
                panic!("{err:?}");
            };
            assert_eq!(param, "metadata");
            assert!(message.contains(&MAX_JSON_DEPTH.to_string()), "{message}");
        }
        // The node validates the request it decoded from the task: the same rule.
        let deep: Value = serde_json::from_str(&chat_nested(40)).unwrap();
        assert!(validate(Workload::Chat, deep).is_err());
        assert!(validate(
            Workload::Chat,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        )
        .is_ok());
    }
}
