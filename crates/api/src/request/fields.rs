//! Field checks every workload shares; each error names the field as OpenAI does.

use serde_json::{Map, Value};

use super::RequestError;

/// The longest model name accepted.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

pub(crate) fn object(body: &Value) -> Result<&Map<String, Value>, RequestError> {
    body.as_object()
        .ok_or_else(|| RequestError::MalformedJson("the body must be a JSON object".into()))
}

pub(crate) fn model(obj: &Map<String, Value>) -> Result<String, RequestError> {
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() && m.len() <= MAX_MODEL_NAME_BYTES => Ok(m.clone()),
        Some(Value::String(_)) => Err(RequestError::invalid("model", "model must be 1 to 256 bytes")),
        Some(_) => Err(RequestError::invalid("model", "model must be a string")),
        None => Err(RequestError::invalid(
            "model",
            "you must provide a model parameter",
        )),
    }
}

pub(crate) fn user(obj: &Map<String, Value>) -> Result<Option<String>, RequestError> {
    match obj.get("user") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) => Ok(Some(u.clone())),
        Some(_) => Err(RequestError::invalid("user", "user must be a string")),
    }
}

pub(crate) fn optional_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RequestError::invalid(field, format!("{field} must be a boolean"))),
    }
}

pub(crate) fn number(obj: &Map<String, Value>, field: &str, min: f64, max: f64) -> Result<(), RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| (min..=max).contains(&f)) => Ok(()),
        Some(_) => Err(RequestError::invalid(
            field,
            format!("{field} must be a number from {min} to {max}"),
        )),
    }
}

pub(crate) fn integer(
    obj: &Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| (min..=max).contains(&v)) => Ok(n.as_u64()),
        Some(_) => Err(RequestError::invalid(
            field,
            format!("{field} must be an integer from {min} to {max}"),
        )),
    }
}

pub(crate) fn one_of(
    obj: &Map<String, Value>,
    field: &str,
    allowed: &[&str],
) -> Result<Option<String>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(_) => Err(RequestError::invalid(
            field,
            format!("{field} must be one of {}", allowed.join(", ")),
        )),
    }
}

/// A `model` that may be left out, and otherwise must be `only` (a workload with one model, whose
/// engine the node chooses).
pub(crate) fn fixed_model(obj: &Map<String, Value>, only: &str) -> Result<(), RequestError> {
    match obj.get("model") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) if m == only => Ok(()),
        Some(_) => Err(RequestError::invalid(
            "model",
            format!("model must be {only:?} (or left out)"),
        )),
    }
}
