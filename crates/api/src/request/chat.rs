//! `POST /v1/chat/completions`: messages in, a message out (streamed as deltas or whole).

use serde_json::{Map, Value};
use stacknet_protocol::contract::Workload;

use super::fields::{self, integer, number, object, optional_bool};
use super::{ApiRequest, RequestError};

/// Most choices (`n`) per request.
pub const MAX_CHOICES: u64 = 8;
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

pub fn validate(body: Value) -> Result<ApiRequest, RequestError> {
    check_messages(object(&body)?)?;
    text_request(Workload::Chat, body)
}

/// The fields chat and legacy completions share: sampling, streaming, limits.
pub(crate) fn text_request(workload: Workload, body: Value) -> Result<ApiRequest, RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let stream = optional_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => optional_bool(o, "include_usage")
            .map_err(|_| RequestError::invalid("stream_options.include_usage", "must be a boolean"))?
            .unwrap_or(false),
        Some(_) => return Err(RequestError::invalid("stream_options", "must be an object")),
    };
    number(obj, "temperature", 0.0, 2.0)?;
    number(obj, "top_p", 0.0, 1.0)?;
    let max_tokens = integer(obj, "max_tokens", 1, u64::from(u32::MAX))?;
    let max_completion_tokens = integer(obj, "max_completion_tokens", 1, u64::from(u32::MAX))?;
    let choices = integer(obj, "n", 1, MAX_CHOICES)?.unwrap_or(1);
    let user = fields::user(obj)?;
    Ok(ApiRequest {
        workload,
        model,
        stream,
        include_usage,
        user,
        choices,
        max_output_tokens: max_completion_tokens.or(max_tokens),
        body,
    })
}

fn check_messages(obj: &Map<String, Value>) -> Result<(), RequestError> {
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(RequestError::invalid("messages", "messages must not be empty")),
        Some(_) => return Err(RequestError::invalid("messages", "messages must be an array")),
        None => {
            return Err(RequestError::invalid(
                "messages",
                "you must provide a messages parameter",
            ))
        }
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !role.is_some_and(|r| ROLES.contains(&r)) {
            return Err(RequestError::invalid(
                &format!("messages[{i}].role"),
                format!("messages[{i}].role must be one of {}", ROLES.join(", ")),
            ));
        }
        match m.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(RequestError::invalid(
                    &format!("messages[{i}].content"),
                    format!("messages[{i}].content must be a string or an array of content parts"),
                ))
            }
        }
    }
    Ok(())
}
