//! A workload's output: how it is assembled from what a node sends (JSON chunks, files), and its
//! **output digest**, the `output_sha256` that paperwork signs. The digest covers what the client
//! receives, in a form the client can recompute from the response alone:
//!
//! - chat and completions: SHA-256 of the RFC 8785 canonical JSON of the `choices` array of the
//!   non-streamed response, without the `annotations` of its messages (the hub's citations of a
//!   web search, not the node's output). A streamed answer is folded into the same array by [`Assembler`] (the
//!   same code the hub uses to answer a non-streamed request), so both digests are equal.
//! - embeddings: SHA-256 of the canonical JSON of the response's `data` array. A response larger
//!   than a frame travels as several chunks ([`split_embeddings`]); the digest is over their `data`
//!   arrays joined, so it is the same however the response was split ([`join_embeddings`]).
//! - files (images; speech and transcriptions, whose answer is one file, the body): for one file,
//!   SHA-256 of its bytes; for several, SHA-256 of the canonical JSON array of their lowercase hex
//!   SHA-256s, in order.
//! - results (code execution, page fetch, web search, tool calls): the node sends the whole result object in
//!   one chunk; the digest is SHA-256 of the canonical JSON of the response without the members
//!   the hub adds ([`HUB_MEMBERS`]: the proof and the usage), which is the chunk exactly.
//!
//! [`output_kind`] decides per workload with one exhaustive match.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::jcs::{self, JcsError};
use stacknet_protocol::Sha256Digest;

/// How a workload's output travels and is digested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// Streamed OpenAI chunks folded into `choices` (chat: messages; completion: text).
    Choices,
    /// The whole response, in one chunk or split into several; its `data` is digested.
    Embeddings,
    /// Files in binary frames.
    Files,
    /// One JSON object, the whole result, in one chunk.
    Result,
}

/// The media type of an image file by its signature: PNG, JPEG or WebP; `None` for anything else.
pub fn image_content_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The members the hub adds to a [`OutputKind::Result`] answer, which its digest leaves out.
pub const HUB_MEMBERS: [&str; 4] = ["fingerprint", "attribution", "paperwork", "usage"];

/// The kind of output of `workload`; `None` for workloads without an API yet.
pub fn output_kind(workload: Workload) -> Option<OutputKind> {
    match workload {
        Workload::Chat | Workload::Completion => Some(OutputKind::Choices),
        Workload::Embedding => Some(OutputKind::Embeddings),
        // Speech and transcriptions answer with one file: the body, exactly as the node made it.
        Workload::ImageEdit | Workload::ImageGeneration | Workload::Speech | Workload::Transcription => {
            Some(OutputKind::Files)
        }
        Workload::CodeExecution | Workload::WebFetch | Workload::WebSearch | Workload::ToolCall => {
            Some(OutputKind::Result)
        }
        Workload::VideoGeneration => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("the workload {0:?} has no output definition yet")]
    Unsupported(Workload),
    #[error(transparent)]
    Jcs(#[from] JcsError),
    #[error("the response has no {0}")]
    Missing(&'static str),
    #[error("an image is not valid base64")]
    Base64,
    #[error("{0:?} is answered with bytes, not JSON: its digest is the SHA-256 of the body")]
    Bytes(Workload),
    #[error("the header {0} is not base64url of JSON")]
    Header(&'static str),
}

/// The response headers that carry a bytes answer's proof (PROTOCOL.md 7.7), as HTTP/2 spells them
/// (lowercase). `fingerprint` and `paperwork` as the JSON answers carry them; `attribution` and
/// `usage` are JSON values, sent as the base64url (no padding) of their canonical JSON.
pub mod headers {
    pub const FINGERPRINT: &str = "stacknet-fingerprint";
    pub const PAPERWORK: &str = "stacknet-paperwork";
    pub const ATTRIBUTION: &str = "stacknet-attribution";
    pub const USAGE: &str = "stacknet-usage";
}

/// A JSON value as a header carries it: base64url, no padding, of its canonical JSON.
pub fn json_header(value: &Value) -> Result<String, JcsError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jcs::canonicalize(value)?))
}

/// The proof members of a bytes answer, read back from its headers (`get` looks one up by its
/// lowercase name): `{"fingerprint", "paperwork", "attribution", "usage"}`, as a JSON answer
/// carries them, so the same checks apply.
pub fn proof_of_headers(get: impl Fn(&str) -> Option<String>) -> Result<Value, DigestError> {
    let text = |name: &'static str| get(name).ok_or(DigestError::Missing(name));
    let decoded = |name: &'static str| -> Result<Value, DigestError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text(name)?.trim())
            .map_err(|_| DigestError::Header(name))?;
        serde_json::from_slice(&raw).map_err(|_| DigestError::Header(name))
    };
    Ok(json!({
        "fingerprint": text(headers::FINGERPRINT)?,
        "paperwork": text(headers::PAPERWORK)?,
        "attribution": decoded(headers::ATTRIBUTION)?,
        "usage": decoded(headers::USAGE)?,
    }))
}

/// Workloads whose answer is the node's one output file itself (audio, a transcription), its proof
/// in the response's headers (PROTOCOL.md 7.7): their digest is the SHA-256 of the body.
pub fn answers_with_bytes(workload: Workload) -> bool {
    matches!(workload, Workload::Speech | Workload::Transcription)
}

/// Folds a task's output as it arrives and gives its digest; the node and the hub run the same one.
#[derive(Debug)]
pub struct OutputDigester {
    workload: Workload,
    kind: OutputKind,
    choices: Assembler,
    data: Vec<Value>,
    files: Vec<Sha256Digest>,
}

impl OutputDigester {
    pub fn new(workload: Workload) -> Result<Self, DigestError> {
        let kind = output_kind(workload).ok_or(DigestError::Unsupported(workload))?;
        Ok(Self {
            workload,
            kind,
            choices: Assembler::default(),
            data: Vec::new(),
            files: Vec::new(),
        })
    }

    pub fn chunk(&mut self, chunk: &Value) {
        match self.kind {
            OutputKind::Choices => self.choices.add(chunk),
            OutputKind::Embeddings => self.data.push(chunk.get("data").cloned().unwrap_or(Value::Null)),
            OutputKind::Result => self.data.push(chunk.clone()),
            OutputKind::Files => {}
        }
    }

    /// The assembled `choices` (chat and completions).
    pub fn choices(&self, workload: Workload) -> Value {
        self.choices.choices(workload)
    }

    pub fn file(&mut self, sha256: Sha256Digest) {
        self.files.push(sha256);
    }

    pub fn finish(&self) -> Result<Sha256Digest, DigestError> {
        Ok(match self.kind {
            OutputKind::Choices => canonical_digest(&self.choices.choices(self.workload))?,
            OutputKind::Embeddings => match self.data.as_slice() {
                [one] => canonical_digest(one)?,
                many => canonical_digest(&Value::Array(joined_data(many)))?,
            },
            OutputKind::Files => files_digest(&self.files)?,
            // One chunk is the result; several (which the hub refuses to answer with) are digested
            // as their array, so no two outputs share a digest.
            OutputKind::Result => match self.data.as_slice() {
                [one] => canonical_digest(one)?,
                many => canonical_digest(&Value::Array(many.to_vec()))?,
            },
        })
    }
}

/// The `data` arrays of an embeddings response's chunks, joined in order (a `data` that is not an
/// array counts as one item).
fn joined_data<'a>(pieces: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
    let mut all = Vec::new();
    for piece in pieces {
        match piece {
            Value::Array(items) => all.extend(items.iter().cloned()),
            other => all.push(other.clone()),
        }
    }
    all
}

/// Splits an embeddings response into chunks whose compact JSON is at most `max_bytes` each: the
/// first keeps every member with the first items of `data`, the others are `{"data": [...]}` with
/// the next items. [`join_embeddings`] gives the response back, and the digest of the pieces is the
/// response's. `None` when it cannot be split that small (one item is larger, or `data` is not an
/// array).
pub fn split_embeddings(response: Value, max_bytes: usize) -> Option<Vec<Value>> {
    let Value::Object(mut first) = response else {
        return None;
    };
    let Some(Value::Array(items)) = first.remove("data") else {
        return None;
    };
    first.insert("data".to_owned(), Value::Array(Vec::new()));
    let len = |v: &Value| serde_json::to_vec(v).ok().map(|b| b.len());
    // A later piece with an empty `data`: `{"data":[]}`.
    const EMPTY_PIECE_BYTES: usize = 11;
    let mut pieces = Vec::new();
    let mut current: Vec<Value> = Vec::new();
    let mut size = len(&Value::Object(first.clone()))?;
    for item in items {
        let item_len = len(&item)?;
        // Each item after the first of a piece adds a comma.
        let grown = size + item_len + usize::from(!current.is_empty());
        if grown > max_bytes {
            if current.is_empty() {
                return None;
            }
            pieces.push(std::mem::take(&mut current));
            size = EMPTY_PIECE_BYTES + item_len;
            if size > max_bytes {
                return None;
            }
        } else {
            size = grown;
        }
        current.push(item);
    }
    pieces.push(current);
    let mut out = Vec::with_capacity(pieces.len());
    for (i, data) in pieces.into_iter().enumerate() {
        let mut piece = if i == 0 {
            std::mem::take(&mut first)
        } else {
            serde_json::Map::new()
        };
        piece.insert("data".to_owned(), Value::Array(data));
        out.push(Value::Object(piece));
    }
    Some(out)
}

/// The embeddings response a node sent as `chunks` (one, or split by [`split_embeddings`]): the
/// first chunk's members, with `data` the chunks' `data` arrays joined. `None` without chunks or
/// when the first is not an object.
pub fn join_embeddings(chunks: &[Value]) -> Option<Value> {
    let (first, rest) = chunks.split_first()?;
    if rest.is_empty() {
        return first.is_object().then(|| first.clone());
    }
    let mut whole = first.as_object()?.clone();
    let data = joined_data(chunks.iter().map(|c| c.get("data").unwrap_or(&Value::Null)));
    whole.insert("data".to_owned(), Value::Array(data));
    Some(Value::Object(whole))
}

fn canonical_digest(v: &Value) -> Result<Sha256Digest, JcsError> {
    Ok(Sha256Digest::of(jcs::canonicalize(v)?.as_bytes()))
}

/// The digest of a task's output files, in order.
pub fn files_digest(files: &[Sha256Digest]) -> Result<Sha256Digest, JcsError> {
    match files {
        [one] => Ok(*one),
        many => canonical_digest(&Value::Array(
            many.iter().map(|d| Value::String(d.to_string())).collect(),
        )),
    }
}

/// The output digest recomputed from a whole (non-streamed) response, as a client can.
pub fn digest_of_response(workload: Workload, body: &Value) -> Result<Sha256Digest, DigestError> {
    match output_kind(workload).ok_or(DigestError::Unsupported(workload))? {
        OutputKind::Choices => {
            let mut choices = body
                .get("choices")
                .ok_or(DigestError::Missing("choices"))?
                .clone();
            // The hub's `url_citation` annotations (chat with `web_search_options`) are not the
            // node's output.
            if let Some(list) = choices.as_array_mut() {
                for choice in list {
                    if let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) {
                        message.remove("annotations");
                    }
                }
            }
            Ok(canonical_digest(&choices)?)
        }
        OutputKind::Embeddings => Ok(canonical_digest(
            body.get("data").ok_or(DigestError::Missing("data"))?,
        )?),
        OutputKind::Result => {
            let mut result = body
                .as_object()
                .ok_or(DigestError::Missing("result object"))?
                .clone();
            for member in HUB_MEMBERS {
                result.remove(member);
            }
            Ok(canonical_digest(&Value::Object(result))?)
        }
        OutputKind::Files if answers_with_bytes(workload) => Err(DigestError::Bytes(workload)),
        OutputKind::Files => {
            let items = body
                .get("data")
                .and_then(Value::as_array)
                .ok_or(DigestError::Missing("data"))?;
            let mut files = Vec::with_capacity(items.len());
            for item in items {
                let b64 = item
                    .get("b64_json")
                    .and_then(Value::as_str)
                    .ok_or(DigestError::Missing("b64_json"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| DigestError::Base64)?;
                files.push(Sha256Digest::of(&bytes));
            }
            Ok(files_digest(&files)?)
        }
    }
}

/// The output digest recomputed from the chunks of a streamed response (`data:` events in order).
pub fn digest_of_stream(workload: Workload, chunks: &[Value]) -> Result<Sha256Digest, DigestError> {
    let mut d = OutputDigester::new(workload)?;
    for c in chunks {
        d.chunk(c);
    }
    d.finish()
}

#[derive(Debug, Default)]
struct ToolCallAcc {
    id: String,
    kind: Option<String>,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: String,
    saw_content: bool,
    tool_calls: BTreeMap<u64, ToolCallAcc>,
    finish_reason: Value,
}

/// Folds streamed chunks into the `choices` of a non-streamed response. Tool-call fragments are
/// appended in place (linear in the output, whatever the number of fragments).
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
                        message["tool_calls"] = Value::Array(
                            c.tool_calls
                                .values()
                                .map(|t| json!({
                                    "id": t.id,
                                    "type": t.kind.as_deref().unwrap_or("function"),
                                    "function": {"name": t.name, "arguments": t.arguments},
                                }))
                                .collect(),
                        );
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
fn merge_tool_call(calls: &mut BTreeMap<u64, ToolCallAcc>, delta: &Value) {
    let index = delta.get("index").and_then(Value::as_u64).unwrap_or(0);
    let call = calls.entry(index).or_default();
    if let Some(id) = delta.get("id").and_then(Value::as_str) {
        id.clone_into(&mut call.id);
    }
    if let Some(t) = delta.get("type").and_then(Value::as_str) {
        call.kind = Some(t.to_owned());
    }
    if let Some(f) = delta.get("function") {
        if let Some(part) = f.get("name").and_then(Value::as_str) {
            call.name.push_str(part);
        }
        if let Some(part) = f.get("arguments").and_then(Value::as_str) {
            call.arguments.push_str(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(n: usize) -> Value {
        let data: Vec<Value> = (0..n)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.125, -1.5e-7, i]}))
            .collect();
        json!({"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 3}})
    }

    #[test]
    fn a_split_response_joins_back_and_keeps_its_digest() {
        let whole = response(100);
        let whole_len = serde_json::to_vec(&whole).unwrap().len();
        let max = whole_len / 7;
        let pieces = split_embeddings(whole.clone(), max).unwrap();
        assert!(pieces.len() >= 7, "{} pieces", pieces.len());
        for p in &pieces {
            assert!(serde_json::to_vec(p).unwrap().len() <= max);
        }
        assert_eq!(join_embeddings(&pieces).unwrap(), whole);
        let digest = |chunks: &[Value]| digest_of_stream(Workload::Embedding, chunks).unwrap();
        assert_eq!(digest(&pieces), digest(std::slice::from_ref(&whole)));
        assert_eq!(
            digest(&pieces),
            digest_of_response(Workload::Embedding, &whole).unwrap()
        );
    }

    #[test]
    fn an_item_larger_than_a_piece_cannot_be_split() {
        assert_eq!(split_embeddings(response(3), 60), None);
        assert_eq!(split_embeddings(json!({"data": "not an array"}), 1_000), None);
    }
}
