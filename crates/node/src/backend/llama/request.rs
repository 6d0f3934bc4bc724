//! What a chat or completion request asks of the local model, validated with the offending field
//! named (the hub already checked the OpenAI shape; these are the limits of this backend).

use serde_json::Value;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::paperwork::{Sampling, SAMPLER_V1};

use crate::backend::BackendError;

/// OpenAI allows at most four stop sequences.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// The longest stop sequence accepted, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

/// The prompt: chat messages for the model's template, or raw text.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<(String, String)>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
    /// 0 means greedy: the most likely token every time.
    pub temperature: f32,
    pub top_p: f32,
    /// The request's seed folded to 32 bits; `None` when it gave none (the node then picks one).
    pub seed: Option<u32>,
    pub stop: Vec<String>,
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest(message.into())
}

pub fn parse(request: &Value, workload: Workload) -> Result<Generation, BackendError> {
    let prompt = match workload {
        Workload::Chat => Prompt::Chat(messages(request)?),
        Workload::Completion => Prompt::Text(prompt_text(request)?),
        other => {
            return Err(invalid(format!(
                "the built-in text model does not serve {other:?}"
            )))
        }
    };
    if request.get("tools").is_some_and(|t| !t.is_null()) {
        return Err(invalid(
            "tools: the built-in models do not call tools; use an upstream that does",
        ));
    }
    if request.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(invalid("n: the built-in models give one choice per request"));
    }
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64))
        .map(|m| u32::try_from(m).unwrap_or(u32::MAX));
    let number = |k: &str, default: f64| request.get(k).and_then(Value::as_f64).unwrap_or(default) as f32;
    // The sampler takes a 32-bit seed; fold the 64-bit one the API allows, deterministically.
    let seed = request
        .get("seed")
        .and_then(Value::as_i64)
        .map(|s| (s as u64 ^ ((s as u64) >> 32)) as u32);
    Ok(Generation {
        prompt,
        max_tokens,
        temperature: number("temperature", 1.0),
        top_p: number("top_p", 1.0),
        seed,
        stop: stop_sequences(request)?,
    })
}

/// The highest temperature the sampler applies (OpenAI's limit), in thousandths.
pub const MAX_TEMPERATURE_MILLI: u32 = 2000;

impl Generation {
    /// The sampling this request asks for as integers, under `budget` tokens and with `seed`.
    /// Temperature and nucleus are rounded to thousandths and clamped (temperature to
    /// 0..=[`MAX_TEMPERATURE_MILLI`], top_p to 0..=1000); what the commitment records is what ran.
    pub fn sampling(&self, seed: u32, budget: u32) -> Sampling {
        let milli = |x: f32, max: u32| {
            let m = (f64::from(x) * 1000.0).round();
            // NaN and negatives become 0 (greedy, or the single most likely token).
            if m.is_nan() || m <= 0.0 {
                0
            } else {
                (m.min(f64::from(max))) as u32
            }
        };
        Sampling {
            sampler: SAMPLER_V1.to_owned(),
            temperature_milli: milli(self.temperature, MAX_TEMPERATURE_MILLI),
            top_p_milli: milli(self.top_p, 1000),
            seed,
            max_tokens: budget,
        }
    }
}

/// A seed for a request that gave none: it only has to differ between requests; the commitment
/// records it, so a validator replays it all the same.
pub fn random_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

fn messages(request: &Value) -> Result<Vec<(String, String)>, BackendError> {
    let list = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages: missing"))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            // The template knows system, user and assistant; "developer" is OpenAI's new name for system.
            let role = if role == "developer" { "system" } else { role };
            Ok((role.to_owned(), content_text(m.get("content"), i)?))
        })
        .collect()
}

fn content_text(content: Option<&Value>, i: usize) -> Result<String, BackendError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(part.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some(kind) => {
                        return Err(invalid(format!(
                            "messages[{i}].content: the built-in text model cannot read {kind} parts"
                        )))
                    }
                    None => return Err(invalid(format!("messages[{i}].content: a part without a type"))),
                }
            }
            Ok(text)
        }
        Some(_) => Err(invalid(format!(
            "messages[{i}].content must be a string or an array of parts"
        ))),
    }
}

fn prompt_text(request: &Value) -> Result<String, BackendError> {
    match request.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 => a[0]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid("prompt: must be a string")),
        Some(Value::Array(_)) => Err(invalid("prompt: the built-in models take one prompt per request")),
        _ => Err(invalid("prompt: missing")),
    }
}

fn stop_sequences(request: &Value) -> Result<Vec<String>, BackendError> {
    let stops: Vec<String> = match request.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("stop: must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("stop: must be a string or an array of strings")),
    };
    if stops.len() > MAX_STOP_SEQUENCES {
        return Err(invalid("stop: at most 4 sequences"));
    }
    if stops.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
        return Err(invalid("stop: each sequence must be 1 to 256 bytes"));
    }
    Ok(stops)
}
