//! C0, the envelope check the hub runs itself on every paperwork at acceptance, and the model pins
//! of the catalog that it and the hello check enforce.

use serde_json::Value;
use stacknet_protocol::paperwork::{tokens_sha256, Paperwork, SAMPLER_V1};
use stacknet_protocol::Sha256Digest;

/// The backend id of the built-in llama.cpp text backend: its paperwork must commit to its tokens.
pub const LLAMA_BACKEND: &str = "llama.cpp";

/// The sha256 the catalog pins for `model`: only for a model of a single GGUF file.
pub fn pinned_sha256(model: &str) -> Option<Sha256Digest> {
    let spec = stacknet_api::catalog::find(model)?;
    let [file] = spec.files.as_slice() else {
        return None;
    };
    if !file.path.ends_with(".gguf") {
        return None;
    }
    let bytes = hex::decode(&file.sha256).ok()?;
    Some(Sha256Digest(bytes.try_into().ok()?))
}

/// Whether `claimed` contradicts the pin of `model` (a model without a pin contradicts nothing).
pub fn contradicts_pin(model: &str, claimed: Option<&Sha256Digest>) -> Option<String> {
    let pin = pinned_sha256(model)?;
    match claimed {
        Some(c) if *c == pin => None,
        Some(c) => Some(format!(
            "model {model} is pinned to sha256 {}, not {}",
            pin.to_hex(),
            c.to_hex()
        )),
        None => Some(format!(
            "model {model} is pinned to sha256 {}, and no sha256 was given",
            pin.to_hex()
        )),
    }
}

/// C0 on an accepted task's paperwork: `Err` says why it is refused.
pub fn check(pw: &Paperwork, request: &Value, tokens: Option<&[u32]>) -> Result<(), String> {
    let model = &pw.contract.body.model;
    if let Some(why) = contradicts_pin(model, pw.backend.model_sha256.as_ref()) {
        return Err(why);
    }
    if pw.backend.id != LLAMA_BACKEND {
        return Ok(());
    }
    let c = pw
        .commitment
        .as_ref()
        .ok_or("a llama.cpp paperwork without a commitment")?;
    let tokens = tokens.ok_or("the output token ids did not arrive with the paperwork")?;
    if tokens_sha256(tokens) != c.output_tokens_sha256 {
        return Err("the output token ids do not hash to the commitment".into());
    }
    if tokens.len() as u64 != c.output_token_count {
        return Err(format!(
            "the commitment counts {} tokens, {} arrived",
            c.output_token_count,
            tokens.len()
        ));
    }
    if !pw.cancelled && c.finish_reason != "stop" && c.finish_reason != "length" {
        return Err(format!(
            "finish_reason {:?} is neither stop nor length",
            c.finish_reason
        ));
    }
    let s = &c.sampling;
    if s.sampler != SAMPLER_V1 {
        return Err(format!("sampler {:?} is not {SAMPLER_V1}", s.sampler));
    }
    let milli = |field: &str| {
        request
            .get(field)
            .and_then(Value::as_f64)
            .map(|v| (v * 1000.0).round() as i64)
    };
    if let Some(t) = milli("temperature") {
        if t != i64::from(s.temperature_milli) {
            return Err(format!(
                "sampled at temperature {}‰, the request asked {t}‰",
                s.temperature_milli
            ));
        }
    }
    if let Some(p) = milli("top_p") {
        if p != i64::from(s.top_p_milli) {
            return Err(format!(
                "sampled with top_p {}‰, the request asked {p}‰",
                s.top_p_milli
            ));
        }
    }
    if let Some(seed) = request.get("seed").and_then(Value::as_i64) {
        if seed != i64::from(s.seed) {
            return Err(format!("sampled with seed {}, the request asked {seed}", s.seed));
        }
    }
    let asked = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| request.get(*f).and_then(Value::as_u64));
    if let Some(max) = asked {
        if u64::from(s.max_tokens) > max {
            return Err(format!(
                "max_tokens {} is above the request's {max}",
                s.max_tokens
            ));
        }
    }
    if !pw.cancelled && c.finish_reason == "length" && c.output_token_count != u64::from(s.max_tokens) {
        return Err(format!(
            "finish_reason length after {} tokens, not max_tokens {}",
            c.output_token_count, s.max_tokens
        ));
    }
    Ok(())
}
