//! `POST /v1/completions`: a prompt in, text out (legacy completions).

use serde_json::Value;
use stacknet_protocol::contract::Workload;

use super::fields::object;
use super::{chat, ApiRequest, RequestError};

pub fn validate(body: Value) -> Result<ApiRequest, RequestError> {
    let obj = object(&body)?;
    // Each prompt of an array is its own completion, with `n` choices of its own.
    let prompts = match obj.get("prompt") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            u64::try_from(a.len()).unwrap_or(u64::MAX)
        }
        Some(_) => {
            return Err(RequestError::invalid(
                "prompt",
                "prompt must be a string or an array of strings",
            ))
        }
        None => {
            return Err(RequestError::invalid(
                "prompt",
                "you must provide a prompt parameter",
            ))
        }
    };
    Ok(ApiRequest {
        prompts,
        ..chat::text_request(Workload::Completion, body)?
    })
}
