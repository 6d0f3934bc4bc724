//! `POST /v1/images/edits`: a multipart upload (`image`, optional `mask`, `prompt`, `model`, `n`,
//! `size`, `response_format`, `user`). The files travel to the node in binary frames; the node's
//! output images come back the same way and are answered as `b64_json`, as OpenAI does.

use axum::body::Bytes;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use stacknet_api::request::image_edit::{file_descriptor, FILE_FIELDS};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::wire::Attachment;
use stacknet_protocol::Sha256Digest;

use super::{
    input_bound, with_proof, Accepted, Collected, Files, Parsed, Stamp, WorkloadApi, OUTPUT_ALLOWANCE_BYTES,
};
use crate::error::ApiError;

/// Most text bytes in one multipart text field.
pub const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct ImageEdit;

impl WorkloadApi for ImageEdit {
    fn path(&self) -> &'static str {
        stacknet_api::paths::IMAGE_EDITS
    }

    fn parse(&self, content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        let (fields, files) = read_multipart(content_type, body)?;
        let request = stacknet_api::request::validate(Workload::ImageEdit, Value::Object(fields))?;
        Ok(Parsed { request, files })
    }

    fn max_usage(&self, request: &ApiRequest, _body_len: usize, _default_max_output: u64) -> Usage {
        // The text that travels is the request without the files: its bytes bound the prompt's tokens.
        let text_len = serde_json::to_vec(&request.body)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        Usage {
            input_tokens: input_bound(text_len),
            output_tokens: 0,
            units: request.choices,
        }
    }

    /// Every image asked for, each at most the largest file the hub takes, and the JSON around them.
    fn max_output_bytes(&self, request: &ApiRequest, _default_max_output: u64) -> u64 {
        request
            .choices
            .max(1)
            .saturating_mul(crate::gateway::HUB_LIMITS.max_file_bytes)
            .saturating_add(OUTPUT_ALLOWANCE_BYTES)
    }

    fn answer(
        &self,
        _request: &ApiRequest,
        out: &Collected,
        stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Value, ApiError> {
        if out.files.is_empty() {
            return Err(ApiError::NodeFailed("the node returned no image".into()));
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let data: Vec<Value> = out
            .files
            .iter()
            .map(|(_, bytes)| json!({"b64_json": engine.encode(bytes)}))
            .collect();
        Ok(with_proof(
            json!({"created": stamp.created, "data": data}),
            accepted,
        ))
    }
}

/// Splits a multipart body into its text fields and its files. Each file becomes an attachment
/// (its sha256, size and content type) and, in the fields, its descriptor.
fn read_multipart(content_type: Option<&str>, body: Bytes) -> Result<(Map<String, Value>, Files), ApiError> {
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            ApiError::MalformedJson("the body must be multipart/form-data with a boundary".into())
        })?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    let mut files = Vec::new();
    // The whole body is in memory already: every await below resolves at once.
    let mut next = || futures_util::FutureExt::now_or_never(multipart.next_field());
    loop {
        let field = match next() {
            Some(Ok(Some(field))) => field,
            Some(Ok(None)) => break,
            Some(Err(e)) => return Err(ApiError::MalformedJson(format!("multipart: {e}"))),
            None => return Err(ApiError::MalformedJson("multipart: the body ended early".into())),
        };
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field
            .content_type()
            .map_or_else(|| "application/octet-stream".to_owned(), ToString::to_string);
        let bytes = match futures_util::FutureExt::now_or_never(field.bytes()) {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(ApiError::MalformedJson(format!("multipart field {name}: {e}"))),
            None => return Err(ApiError::MalformedJson("multipart: the body ended early".into())),
        };
        if fields.contains_key(&name) {
            return Err(ApiError::invalid(
                &name,
                format!("{name} is given more than once"),
            ));
        }
        if FILE_FIELDS.contains(&name.as_str()) {
            let sha256 = Sha256Digest::of(&bytes);
            let size = bytes.len() as u64;
            fields.insert(
                name,
                file_descriptor(&sha256, size, &content_type, filename.as_deref()),
            );
            files.push((
                Attachment {
                    sha256,
                    size,
                    content_type,
                },
                bytes,
            ));
        } else {
            if bytes.len() > MAX_TEXT_FIELD_BYTES {
                return Err(ApiError::invalid(
                    &name,
                    format!("{name} is over {MAX_TEXT_FIELD_BYTES} bytes"),
                ));
            }
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| ApiError::invalid(&name, format!("{name} must be UTF-8 text")))?;
            let value = if name == "n" {
                // Multipart fields are text; `n` is read as a number so the shared validator sees
                // the same types as in a JSON body.
                text.parse::<u64>().map_or(Value::String(text), Value::from)
            } else {
                Value::String(text)
            };
            fields.insert(name, value);
        }
    }
    Ok((fields, files))
}
