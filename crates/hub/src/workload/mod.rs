//! One module per OpenAI-style API, each implementing [`WorkloadApi`]: read and validate the
//! request (with the validator of `stacknet_api::request`, which the node runs too), bound its
//! usage for the escrow hold, say whether it streams, and build the answer from the task's output.
//! [`api`] picks the module with one exhaustive `match` on [`Workload`], so a new workload does not
//! compile until it has a module (or is listed as having none).
//!
//! The request path itself (admission, contract, node, paperwork) is the same for every workload
//! and lives in `crate::task`.

mod audio;
mod chat;
mod completion;
mod embeddings;
mod images;
mod multipart;
mod result;
pub(crate) mod videos;

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stacknet_api::output::OutputDigester;
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::wire::Attachment;

use crate::error::ApiError;

/// Input tokens assumed beyond the body's bytes (chat template, special tokens) when bounding cost,
/// for each prompt.
pub const TEMPLATE_TOKENS_BOUND: u64 = 1024;
/// Input tokens allowed for each image in a chat request (an `image_url` content part), beyond the
/// body's bytes. Counted, not refused: images are a feature, and the hub cannot measure one (it does
/// not fetch or decode them, and what an image costs depends on the model's vision encoder and the
/// picture's size), so it holds a fixed allowance sized for common encoders at their default
/// resolution. The charge is capped at the hold, so an image that costs a node more is the node's
/// loss, never a Stack's overdraft.
pub const IMAGE_TOKENS_BOUND: u64 = 1_500;
/// Bytes of a node's output allowed for each output token of a text workload: the token's text (a
/// token is far shorter), the JSON chunk that carries it (one chunk per token when streamed), and its
/// logprobs with up to 20 `top_logprobs` alternatives, each with its bytes (about 3 KiB in all).
pub const OUTPUT_BYTES_PER_TOKEN: u64 = 8 * 1024;
/// Output tokens allowed beyond the request's limit, for the chunks that carry no token (the role,
/// the finish reason, the usage) and tool-call framing.
pub const OUTPUT_ALLOWANCE_TOKENS: u64 = 256;
/// Bytes of a node's output allowed beyond what a workload's outputs need: the JSON around them.
pub const OUTPUT_ALLOWANCE_BYTES: u64 = 64 * 1024;
/// Output tokens a generation may count beyond the bytes of text the hub relayed: tokens that decode
/// to no text the client sees (the end token, a matched stop sequence, the markers a server strips
/// around reasoning and tool calls).
pub const UNSEEN_OUTPUT_TOKENS_BOUND: u64 = 64;

/// Files with their attachment descriptors, in the order they travel.
pub type Files = Vec<(Attachment, Bytes)>;

/// A request as read at the edge: validated, with its uploaded files.
#[derive(Debug)]
pub struct Parsed {
    pub request: ApiRequest,
    /// Uploaded files, in the order they travel to the node.
    pub files: Files,
}

/// What a finished task produced, as the hub received it.
#[derive(Debug)]
pub struct Collected {
    /// The output digest's state (for chat, the assembled choices too).
    pub digester: OutputDigester,
    /// JSON chunks kept for the answer (workloads that answer with a chunk's content).
    pub chunks: Vec<Value>,
    pub files: Files,
    /// The most progress the node reported, in percent (`{"progress": n}` chunks of a video).
    pub progress: u64,
}

impl Collected {
    /// The output files' bytes, in order.
    pub fn file_bytes(&self) -> Vec<&[u8]> {
        self.files.iter().map(|(_, b)| b.as_ref()).collect()
    }
}

/// What the hub adds to every answer once the node's paperwork checked out.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub usage: Usage,
    pub fingerprint: String,
    pub attribution: Value,
    pub paperwork: String,
}

/// A whole answer.
#[derive(Debug)]
pub enum Answer {
    /// An OpenAI JSON object, the proof among its members.
    Json(Value),
    /// The node's one output file as the body, exactly as it made it (audio, a transcription); the
    /// proof in headers (PROTOCOL.md 7.7).
    Bytes {
        content_type: String,
        bytes: Bytes,
        accepted: Accepted,
    },
}

impl Answer {
    pub fn into_response(self) -> Result<Response, ApiError> {
        let (content_type, bytes, accepted) = match self {
            Answer::Json(body) => return Ok(axum::Json(body).into_response()),
            Answer::Bytes {
                content_type,
                bytes,
                accepted,
            } => (content_type, bytes, accepted),
        };
        use stacknet_api::output::{headers, json_header};
        let value = |v: String| HeaderValue::from_str(&v).map_err(ApiError::internal);
        let usage = json!({
            "input_tokens": accepted.usage.input_tokens,
            "output_tokens": accepted.usage.output_tokens,
            "units": accepted.usage.units,
        });
        let mut response = bytes.into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, value(content_type)?);
        h.insert(headers::FINGERPRINT, value(accepted.fingerprint)?);
        h.insert(headers::PAPERWORK, value(accepted.paperwork)?);
        h.insert(
            headers::ATTRIBUTION,
            value(json_header(&accepted.attribution).map_err(ApiError::internal)?)?,
        );
        h.insert(
            headers::USAGE,
            value(json_header(&usage).map_err(ApiError::internal)?)?,
        );
        Ok(response)
    }
}

/// The response's identity, stamped on every chunk whatever the node's upstream called it.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// The API of one workload.
pub trait WorkloadApi: Send + Sync + 'static {
    /// Where clients call it.
    fn path(&self) -> &'static str;

    /// Reads and validates the body (`content_type` is the request's header).
    fn parse(&self, content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError>;

    /// The most the request can consume: what the escrow holds and the charge is capped at.
    fn max_usage(&self, request: &ApiRequest, body_len: usize, default_max_output: u64) -> Usage;

    /// The most output a node may send for the request, in bytes (its chunks' JSON and its files);
    /// a node that sends more is cut off, answered with an error, and paid nothing.
    fn max_output_bytes(&self, request: &ApiRequest, default_max_output: u64) -> u64;

    /// The most usage the node's paperwork may claim, now that the hub has relayed its output:
    /// the input as held (the request's bytes plus the allowances: the hub cannot count tokens),
    /// output tokens at most the bytes of text relayed (a token is never shorter than a byte) plus
    /// [`UNSEEN_OUTPUT_TOKENS_BOUND`] per generation (and the held share of every `best_of`
    /// candidate the client never sees), units at most the files relayed; never more than `held`.
    /// Paperwork claiming more is refused: exact recounts are the validators' job.
    fn usage_bound(&self, request: &ApiRequest, held: &Usage, text_bytes: u64, files: usize) -> Usage {
        let generations = request.generations();
        let shown = request.choices.max(1).saturating_mul(request.prompts.max(1));
        let hidden =
            (held.output_tokens / generations.max(1)).saturating_mul(generations.saturating_sub(shown));
        let relayed = text_bytes
            .saturating_add(UNSEEN_OUTPUT_TOKENS_BOUND.saturating_mul(generations))
            .saturating_add(hidden);
        Usage {
            input_tokens: held.input_tokens,
            output_tokens: held.output_tokens.min(relayed),
            units: held.units.min(u64::try_from(files).unwrap_or(u64::MAX)),
        }
    }

    /// The units the output itself shows (a video's seconds: its file's duration, or, when it
    /// was cancelled before its file, its share of the seconds held by the progress reported), when
    /// the workload can tell; the paperwork may claim no more.
    fn units_shown(&self, _held: &Usage, _out: &Collected) -> Option<u64> {
        None
    }

    /// A multipart upload endpoint, which takes bodies up to the hub's `max_upload_bytes`.
    fn uploads(&self) -> bool {
        false
    }

    /// The field a node's refusal of the request names (`param` of the 400): the workload's input.
    fn input_param(&self) -> &'static str {
        "messages"
    }

    /// The answer is a stream of server-sent events (chunks relayed as they come).
    fn streams(&self, request: &ApiRequest) -> bool {
        let _ = request;
        false
    }

    /// Keep the JSON chunks for [`WorkloadApi::answer`] (not needed when the digester assembles).
    fn keeps_chunks(&self) -> bool {
        false
    }

    /// The whole answer of a non-streamed request.
    fn answer(
        &self,
        request: &ApiRequest,
        out: &Collected,
        stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Answer, ApiError>;
}

/// The API module of `workload`; `None` for workloads that have none yet.
pub fn api(workload: Workload) -> Option<&'static dyn WorkloadApi> {
    match workload {
        Workload::Chat => Some(&chat::CHAT),
        Workload::Completion => Some(&completion::COMPLETION),
        Workload::Embedding => Some(&embeddings::Embeddings),
        Workload::ImageEdit => Some(&images::ImageEdit),
        Workload::ImageGeneration => Some(&images::ImageGeneration),
        Workload::CodeExecution => Some(&result::EXECUTE),
        Workload::WebFetch => Some(&result::FETCH),
        Workload::WebSearch => Some(&result::SEARCH),
        Workload::ToolCall => Some(&result::TOOL_CALL),
        Workload::Speech => Some(&audio::SPEECH),
        Workload::Transcription => Some(&audio::TRANSCRIPTION),
        // Served as jobs (`crate::videos`), not by the router's request path.
        Workload::VideoGeneration => Some(&videos::Videos),
    }
}

/// Every workload that has an API, for the router.
pub const SERVED: [Workload; 11] = [
    Workload::Chat,
    Workload::Completion,
    Workload::Embedding,
    Workload::ImageEdit,
    Workload::ImageGeneration,
    Workload::CodeExecution,
    Workload::WebFetch,
    Workload::WebSearch,
    Workload::ToolCall,
    Workload::Speech,
    Workload::Transcription,
];

/// A JSON body, validated by the shared validator.
pub(crate) fn parse_json(workload: Workload, body: &[u8]) -> Result<Parsed, ApiError> {
    Ok(Parsed {
        request: stacknet_api::request::parse_json(workload, body)?,
        files: Vec::new(),
    })
}

/// Text workloads' bound: every body byte an input token (a token is never shorter than a byte)
/// plus the template's tokens for every prompt and an allowance for every image; `max_tokens` (or
/// the hub's default) of output for every completion generated: `n` choices, or `best_of`
/// candidates when more, for every prompt of a prompt array.
pub(crate) fn text_usage(request: &ApiRequest, body_len: usize, default_max_output: u64) -> Usage {
    let templates = TEMPLATE_TOKENS_BOUND.saturating_mul(request.prompts.max(1).saturating_sub(1));
    Usage {
        input_tokens: input_bound(body_len)
            .saturating_add(templates)
            .saturating_add(IMAGE_TOKENS_BOUND.saturating_mul(request.images)),
        output_tokens: request
            .max_output_tokens
            .unwrap_or(default_max_output)
            .saturating_mul(request.generations()),
        units: 0,
    }
}

/// Text workloads' output cap: `max_tokens` (or the hub's default) for every completion generated,
/// plus an allowance, each token given [`OUTPUT_BYTES_PER_TOKEN`].
pub(crate) fn text_output_bytes(request: &ApiRequest, default_max_output: u64) -> u64 {
    request
        .max_output_tokens
        .unwrap_or(default_max_output)
        .saturating_mul(request.generations())
        .saturating_add(OUTPUT_ALLOWANCE_TOKENS)
        .saturating_mul(OUTPUT_BYTES_PER_TOKEN)
}

pub(crate) fn input_bound(body_len: usize) -> u64 {
    u64::try_from(body_len)
        .unwrap_or(u64::MAX)
        .saturating_add(TEMPLATE_TOKENS_BOUND)
}

/// The bytes of text in a chunk's `choices` (content, reasoning, tool calls, completion text: every
/// string in them), which bound the output tokens the chunk can carry.
pub fn text_bytes(chunk: &Value) -> u64 {
    fn strings(v: &Value) -> u64 {
        match v {
            Value::String(s) => u64::try_from(s.len()).unwrap_or(u64::MAX),
            Value::Array(items) => items.iter().fold(0, |sum, i| sum.saturating_add(strings(i))),
            Value::Object(members) => members.values().fold(0, |sum, m| sum.saturating_add(strings(m))),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }
    chunk.get("choices").map_or(0, strings)
}

/// Why `claimed` usage is refused against `bound`, naming the first count over it; `None` if it fits.
pub fn overclaim(claimed: &Usage, bound: &Usage) -> Option<String> {
    [
        ("input_tokens", claimed.input_tokens, bound.input_tokens),
        ("output_tokens", claimed.output_tokens, bound.output_tokens),
        ("units", claimed.units, bound.units),
    ]
    .into_iter()
    .find(|(_, c, b)| c > b)
    .map(|(name, c, b)| format!("its usage claims {c} {name}, more than the {b} the hub can account for"))
}

/// OpenAI's `usage` object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

/// Adds the proof fields every answer carries.
pub(crate) fn with_proof(mut body: Value, accepted: Accepted) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("fingerprint".into(), Value::String(accepted.fingerprint));
        obj.insert("attribution".into(), accepted.attribution);
        obj.insert("paperwork".into(), Value::String(accepted.paperwork));
    }
    body
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bound_of(workload: Workload, body: Value, text_bytes: u64, files: usize) -> Usage {
        let api = api(workload).expect("served");
        let request = stacknet_api::request::validate(workload, body).expect("valid request");
        let held = api.max_usage(&request, 100, 4_096);
        api.usage_bound(&request, &held, text_bytes, files)
    }

    #[test]
    fn output_is_bounded_by_the_text_relayed_and_hidden_candidates_by_their_hold() {
        let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000});
        assert_eq!(bound_of(Workload::Chat, chat, 17, 0).output_tokens, 17 + 64);
        // Two of three candidates are never shown: each may have used its whole budget.
        let best_of = json!({"model": "m", "prompt": "hi", "max_tokens": 1000, "best_of": 3});
        assert_eq!(
            bound_of(Workload::Completion, best_of, 17, 0).output_tokens,
            17 + 3 * 64 + 2 * 1000
        );
        // Never more than held.
        let short = json!({"model": "m", "prompt": "hi", "max_tokens": 5});
        assert_eq!(bound_of(Workload::Completion, short, 1_000, 0).output_tokens, 5);
    }

    #[test]
    fn text_bytes_count_every_string_in_the_choices_only() {
        let chunk = json!({
            "id": "not counted", "model": "not counted",
            "choices": [{"index": 0, "delta": {"content": "abc", "reasoning_content": "de",
                "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, "finish_reason": null}],
            "usage": {"completion_tokens": 100000},
        });
        assert_eq!(text_bytes(&chunk), 7);
        assert_eq!(text_bytes(&json!({"choices": []})), 0);
    }

    #[test]
    fn overclaim_names_the_first_count_over_the_bound() {
        let bound = Usage {
            input_tokens: 10,
            output_tokens: 20,
            units: 0,
        };
        let fits = bound.clone();
        assert_eq!(overclaim(&fits, &bound), None);
        let over = Usage {
            output_tokens: 21,
            ..bound.clone()
        };
        assert_eq!(
            overclaim(&over, &bound).as_deref(),
            Some("its usage claims 21 output_tokens, more than the 20 the hub can account for")
        );
    }
}
