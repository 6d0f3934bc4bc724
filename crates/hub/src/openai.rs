//! The OpenAI wire format: validating requests (naming the offending field) and building responses
//! from the chunks a node streamed, for chat completions and legacy completions alike.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use stacknet_protocol::contract::{Usage, Workload};

use crate::error::ApiError;

/// The longest model name accepted.
pub const MAX_MODEL_NAME_BYTES: usize = 256;
/// Most choices (`n`) per request.
pub const MAX_CHOICES: u64 = 8;
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

/// A validated request: the JSON to forward and what the hub itself needs from it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub workload: Workload,
    pub body: Value,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
}

pub fn parse_request(bytes: &[u8], workload: Workload) -> Result<ApiRequest, ApiError> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::MalformedJson("the body must be a JSON object".into()))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() && m.len() <= MAX_MODEL_NAME_BYTES => m.clone(),
        Some(Value::String(_)) => return Err(ApiError::invalid("model", "model must be 1 to 256 bytes")),
        Some(_) => return Err(ApiError::invalid("model", "model must be a string")),
        None => return Err(ApiError::invalid("model", "you must provide a model parameter")),
    };
    match workload {
        Workload::Completion => check_prompt(obj)?,
        Workload::Embedding => check_input(obj)?,
        _ => check_messages(obj)?,
    }
    let stream = optional_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => optional_bool(o, "include_usage")
            .map_err(|_| ApiError::invalid("stream_options.include_usage", "must be a boolean"))?
            .unwrap_or(false),
        Some(_) => return Err(ApiError::invalid("stream_options", "must be an object")),
    };
    check_number(obj, "temperature", 0.0, 2.0)?;
    check_number(obj, "top_p", 0.0, 1.0)?;
    check_integer(obj, "max_tokens", 1, u64::from(u32::MAX))?;
    check_integer(obj, "max_completion_tokens", 1, u64::from(u32::MAX))?;
    check_integer(obj, "n", 1, MAX_CHOICES)?;
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(ApiError::invalid("user", "user must be a string")),
    };
    Ok(ApiRequest {
        workload,
        body,
        model,
        stream,
        include_usage,
        user,
    })
}

fn check_messages(obj: &Map<String, Value>) -> Result<(), ApiError> {
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages", "messages must not be empty")),
        Some(_) => return Err(ApiError::invalid("messages", "messages must be an array")),
        None => {
            return Err(ApiError::invalid(
                "messages",
                "you must provide a messages parameter",
            ))
        }
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !role.is_some_and(|r| ROLES.contains(&r)) {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("messages[{i}].role must be one of {}", ROLES.join(", ")),
            ));
        }
        match m.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].content"),
                    format!("messages[{i}].content must be a string or an array of content parts"),
                ))
            }
        }
    }
    Ok(())
}

fn check_prompt(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.get("prompt") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "prompt",
            "prompt must be a string or an array of strings",
        )),
        None => Err(ApiError::invalid("prompt", "you must provide a prompt parameter")),
    }
}

fn check_input(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.get("input") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(a)) if !a.is_empty() => Ok(()),
        Some(Value::Array(_)) => Err(ApiError::invalid("input", "input must not be empty")),
        Some(_) => Err(ApiError::invalid("input", "input must be a string or an array")),
        None => Err(ApiError::invalid("input", "you must provide an input parameter")),
    }
}

fn optional_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(field, format!("{field} must be a boolean"))),
    }
}

fn check_number(obj: &Map<String, Value>, field: &str, min: f64, max: f64) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| (min..=max).contains(&f)) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be a number from {min} to {max}"),
        )),
    }
}

fn check_integer(obj: &Map<String, Value>, field: &str, min: u64, max: u64) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| (min..=max).contains(&v)) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be an integer from {min} to {max}"),
        )),
    }
}

/// OpenAI's `usage` object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

/// The response's identity, stamped on every chunk whatever the node's upstream called it.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub workload: Workload,
}

impl Stamp {
    pub fn chunk_object(&self) -> &'static str {
        match self.workload {
            Workload::Completion => "text_completion",
            _ => "chat.completion.chunk",
        }
    }

    /// Rewrites a node's chunk for the client; `None` for a usage-only chunk, which the hub replaces
    /// by its own final chunk (usage from the signed paperwork, fingerprint, attribution).
    pub fn client_chunk(&self, mut chunk: Value) -> Option<Value> {
        let obj = chunk.as_object_mut()?;
        let choices_empty = obj
            .get("choices")
            .and_then(Value::as_array)
            .is_none_or(|c| c.is_empty());
        if choices_empty {
            return None;
        }
        obj.remove("usage");
        obj.insert("id".into(), Value::String(self.id.clone()));
        obj.insert("object".into(), Value::String(self.chunk_object().into()));
        obj.insert("created".into(), Value::from(self.created));
        obj.insert("model".into(), Value::String(self.model.clone()));
        Some(chunk)
    }

    /// The last chunk of a stream: no choices, the usage if asked for, fingerprint and attribution.
    pub fn final_chunk(&self, usage: Option<&Usage>, fingerprint: &str, attribution: &Value) -> Value {
        let mut v = json!({
            "id": self.id, "object": self.chunk_object(), "created": self.created, "model": self.model,
            "choices": [], "fingerprint": fingerprint, "attribution": attribution,
        });
        if let (Some(u), Some(obj)) = (usage, v.as_object_mut()) {
            obj.insert("usage".into(), usage_json(u));
        }
        v
    }
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: String,
    saw_content: bool,
    tool_calls: BTreeMap<u64, Value>,
    finish_reason: Value,
}

/// Folds streamed chunks into a non-streaming response.
#[derive(Debug, Default)]
pub struct Assembler {
    choices: BTreeMap<u64, ChoiceAcc>,
}

impl Assembler {
    pub fn add(&mut self, chunk: &Value) {
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return;
        };
        for c in choices {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let acc = self.choices.entry(index).or_default();
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                acc.finish_reason = f.clone();
            }
            if let Some(text) = c.get("text").and_then(Value::as_str) {
                acc.content.push_str(text);
                acc.saw_content = true;
            }
            let Some(delta) = c.get("delta") else { continue };
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                acc.role = Some(role.to_owned());
            }
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                acc.content.push_str(text);
                acc.saw_content = true;
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                merge_tool_call(&mut acc.tool_calls, call);
            }
        }
    }

    /// The `choices` of the whole response.
    pub fn choices(&self, workload: Workload) -> Value {
        let list: Vec<Value> = self
            .choices
            .iter()
            .map(|(index, c)| match workload {
                Workload::Completion => json!({
                    "index": index, "text": c.content, "finish_reason": c.finish_reason, "logprobs": null
                }),
                _ => {
                    let mut message = json!({
                        "role": c.role.as_deref().unwrap_or("assistant"),
                        "content": if c.saw_content || c.tool_calls.is_empty() { Value::String(c.content.clone()) } else { Value::Null },
                    });
                    if !c.tool_calls.is_empty() {
                        message["tool_calls"] = Value::Array(c.tool_calls.values().cloned().collect());
                    }
                    json!({"index": index, "message": message, "finish_reason": c.finish_reason, "logprobs": null})
                }
            })
            .collect();
        Value::Array(list)
    }
}

/// Tool-call deltas arrive in pieces keyed by `index`: the id, type and name once, the arguments
/// as fragments to concatenate.
fn merge_tool_call(calls: &mut BTreeMap<u64, Value>, delta: &Value) {
    let index = delta.get("index").and_then(Value::as_u64).unwrap_or(0);
    let call = calls
        .entry(index)
        .or_insert_with(|| json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}}));
    if let Some(id) = delta.get("id").and_then(Value::as_str) {
        call["id"] = Value::String(id.to_owned());
    }
    if let Some(t) = delta.get("type").and_then(Value::as_str) {
        call["type"] = Value::String(t.to_owned());
    }
    if let Some(f) = delta.get("function") {
        for key in ["name", "arguments"] {
            if let Some(part) = f.get(key).and_then(Value::as_str) {
                let old = call["function"][key].as_str().unwrap_or("").to_owned();
                call["function"][key] = Value::String(old + part);
            }
        }
    }
}
