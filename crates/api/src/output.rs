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

/// The width and height an image file declares in its header (PNG's IHDR, JPEG's start of frame,
/// WebP's VP8, VP8L or VP8X chunk); `None` when it is not one of those or its header is cut short.
/// Nothing is decoded: a file can still be corrupt past its header.
pub fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| Some(u16::from_be_bytes(bytes.get(i..i + 2)?.try_into().ok()?));
    let le = |i: usize, n: usize| {
        let b = bytes.get(i..i + n)?;
        Some(b.iter().rev().fold(0u32, |acc, v| (acc << 8) | u32::from(*v)))
    };
    match image_content_type(bytes)? {
        "image/png" => {
            if bytes.get(12..16)? != b"IHDR" {
                return None;
            }
            let w = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
            let h = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
            (w > 0 && h > 0).then_some((w, h))
        }
        "image/jpeg" => {
            // Segments from after SOI: FF, marker, then a big-endian length that counts itself.
            let mut i = 2;
            loop {
                while *bytes.get(i)? == 0xFF && *bytes.get(i + 1)? == 0xFF {
                    i += 1; // fill bytes
                }
                if *bytes.get(i)? != 0xFF {
                    return None;
                }
                let marker = *bytes.get(i + 1)?;
                if matches!(marker, 0xD0..=0xD9 | 0x01) {
                    i += 2;
                    continue;
                }
                let len = usize::from(be16(i + 2)?);
                // Start of frame, any coding (C4, C8 and CC are other segments).
                if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    let (h, w) = (be16(i + 5)?, be16(i + 7)?);
                    return (w > 0 && h > 0).then_some((u32::from(w), u32::from(h)));
                }
                if len < 2 {
                    return None;
                }
                i += 2 + len;
            }
        }
        _ => match bytes.get(12..16)? {
            b"VP8 " if bytes.get(23..26)? == [0x9D, 0x01, 0x2A] => {
                Some((le(26, 2)? & 0x3FFF, le(28, 2)? & 0x3FFF)).filter(|(w, h)| *w > 0 && *h > 0)
            }
            b"VP8L" if *bytes.get(20)? == 0x2F => {
                let bits = le(21, 4)?;
                Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
            }
            b"VP8X" => Some((le(24, 3)? + 1, le(27, 3)? + 1)),
            _ => None,
        },
    }
}

/// What an MP4 file says of itself: its (first) video track's width and height, its frame count and
/// its duration in milliseconds (from `tkhd`, `stsz` and `mvhd`); `None` when it is not an MP4 file
/// with them. Read from the boxes only: nothing is decoded.
pub fn mp4_description(file: &[u8]) -> Option<(u32, u32, u32, u32)> {
    fn find<'a>(mut data: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
        let (first, rest) = path.split_first()?;
        loop {
            let size = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
            if size < 8 || size > data.len() {
                return None;
            }
            if &data[4..8] == *first {
                let body = &data[8..size];
                return if rest.is_empty() {
                    Some(body)
                } else {
                    find(body, rest)
                };
            }
            data = &data[size..];
        }
    }
    let be = |b: &[u8], at: usize| Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let mvhd = find(file, &[b"moov", b"mvhd"])?;
    let tkhd = find(file, &[b"moov", b"trak", b"tkhd"])?;
    let stsz = find(file, &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsz"])?;
    let (timescale, duration) = (be(mvhd, 12)?, be(mvhd, 16)?);
    let ms = u64::from(duration) * 1000 / u64::from(timescale.max(1));
    Some((be(tkhd, 76)? >> 16, be(tkhd, 80)? >> 16, be(stsz, 8)?, ms as u32))
}

/// The members the hub adds to a [`OutputKind::Result`] answer, which its digest leaves out.
pub const HUB_MEMBERS: [&str; 4] = ["fingerprint", "attribution", "paperwork", "usage"];

/// The kind of output of `workload`; `None` for workloads without an API yet.
pub fn output_kind(workload: Workload) -> Option<OutputKind> {
    match workload {
        Workload::Chat | Workload::Completion => Some(OutputKind::Choices),
        Workload::Embedding => Some(OutputKind::Embeddings),
        // Speech and transcriptions answer with one file: the body, exactly as the node made it.
        Workload::ImageEdit
        | Workload::ImageGeneration
        | Workload::VideoGeneration
        | Workload::Speech
        | Workload::Transcription => Some(OutputKind::Files),
        Workload::CodeExecution | Workload::WebFetch | Workload::WebSearch | Workload::ToolCall => {
            Some(OutputKind::Result)
        }
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

    #[test]
    fn image_dimensions_are_read_from_every_header_kind() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../testkit/tests/it/fixtures/");
        let png = std::fs::read(format!("{fixtures}two-lines.png")).unwrap();
        let jpeg = std::fs::read(format!("{fixtures}two-lines.jpg")).unwrap();
        let (pw, ph) = image_dimensions(&png).unwrap();
        assert_eq!(image_dimensions(&jpeg), Some((pw, ph)), "the same picture");
        // A JPEG whose frame follows an APP0 segment and fill bytes.
        let mut j = vec![
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0, 0xFF, 0xFF, 0xC2, 0x00, 0x0B, 8,
        ];
        j.extend_from_slice(&[0x01, 0x2C, 0x02, 0x58, 1, 1, 0x11, 0]);
        assert_eq!(image_dimensions(&j), Some((600, 300)));
        let webp = |chunk: &[u8; 4], body: &[u8]| {
            let mut b = b"RIFF\0\0\0\0WEBP".to_vec();
            b.extend_from_slice(chunk);
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(body);
            b
        };
        let vp8x = webp(b"VP8X", &[0, 0, 0, 0, 0x3F, 0x01, 0, 0xC7, 0, 0]);
        assert_eq!(image_dimensions(&vp8x), Some((320, 200)));
        let vp8 = webp(b"VP8 ", &[0, 0, 0, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xC8, 0x00]);
        assert_eq!(image_dimensions(&vp8), Some((320, 200)));
        // VP8L: 14 bits of width - 1, then 14 of height - 1, little-endian.
        let bits: u32 = 319 | (199 << 14);
        let mut l = vec![0x2F];
        l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(image_dimensions(&webp(b"VP8L", &l)), Some((320, 200)));
        assert_eq!(image_dimensions(&png[..20]), None, "cut short");
        assert_eq!(image_dimensions(b"GIF89a"), None);
    }

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
