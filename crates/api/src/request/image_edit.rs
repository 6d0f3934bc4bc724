//! `POST /v1/images/edits`: an uploaded image and a prompt in (multipart), edited images out.
//!
//! The hub reads the multipart body; each file field becomes an attachment that travels to the node
//! in binary frames, and the request that the task carries (and that `request_sha256` hashes) holds
//! the text fields with each file replaced by its descriptor:
//! `{"sha256", "size", "content_type", "filename"}`.

use serde_json::{Map, Value};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::Sha256Digest;

use super::fields::{self, integer, object};
use super::{ApiRequest, RequestError};

/// Most images (`n`) per request.
pub const MAX_IMAGES: u64 = 10;
/// The longest prompt accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 32_000;
/// The multipart fields that carry files.
pub const FILE_FIELDS: [&str; 2] = ["image", "mask"];
/// The answer's encoding: the images inline, or by URL (the hub keeps them for an hour).
pub const RESPONSE_FORMATS: [&str; 2] = ["b64_json", "url"];

/// Whether an images request asks for its images by URL.
pub fn wants_urls(body: &Value) -> bool {
    body.get("response_format").and_then(Value::as_str) == Some("url")
}

/// A file as the task's request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub content_type: String,
}

/// What an image-edit backend needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEdit {
    pub prompt: String,
    pub image: FileRef,
    pub mask: Option<FileRef>,
    pub n: u64,
    pub size: Option<String>,
}

pub fn validate(body: Value) -> Result<(ApiRequest, ImageEdit), RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let prompt = prompt(obj)?;
    let image = file_ref(obj, "image")?
        .ok_or_else(|| RequestError::invalid("image", "you must provide an image file"))?;
    let mask = file_ref(obj, "mask")?;
    let n = integer(obj, "n", 1, MAX_IMAGES)?.unwrap_or(1);
    let size = match obj.get("size") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 32 => Some(s.clone()),
        Some(_) => {
            return Err(RequestError::invalid(
                "size",
                "size must be a string such as 1024x1024",
            ))
        }
    };
    fields::one_of(obj, "response_format", &RESPONSE_FORMATS)?;
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::ImageEdit, model, user, n, body);
    Ok((
        request,
        ImageEdit {
            prompt,
            image,
            mask,
            n,
            size,
        },
    ))
}

/// An image request's `prompt`: 1 to [`MAX_PROMPT_BYTES`] bytes.
pub(crate) fn prompt(obj: &Map<String, Value>) -> Result<String, RequestError> {
    match obj.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() && p.len() <= MAX_PROMPT_BYTES => Ok(p.clone()),
        Some(_) => Err(RequestError::invalid(
            "prompt",
            format!("prompt must be a string of 1 to {MAX_PROMPT_BYTES} bytes"),
        )),
        None => Err(RequestError::invalid(
            "prompt",
            "you must provide a prompt parameter",
        )),
    }
}

/// The descriptor of an uploaded file, as the hub writes it into the request.
pub fn file_descriptor(
    sha256: &Sha256Digest,
    size: u64,
    content_type: &str,
    filename: Option<&str>,
) -> Value {
    let mut d = Map::new();
    d.insert("sha256".into(), Value::String(sha256.to_string()));
    d.insert("size".into(), Value::from(size));
    d.insert("content_type".into(), Value::String(content_type.to_owned()));
    if let Some(f) = filename {
        d.insert("filename".into(), Value::String(f.to_owned()));
    }
    Value::Object(d)
}

fn file_ref(obj: &Map<String, Value>, field: &str) -> Result<Option<FileRef>, RequestError> {
    let bad = || RequestError::invalid(field, format!("{field} must be an uploaded file"));
    let Some(v) = obj.get(field) else { return Ok(None) };
    let d = v.as_object().ok_or_else(bad)?;
    let sha256 = d
        .get("sha256")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let size = d.get("size").and_then(Value::as_u64).ok_or_else(bad)?;
    let content_type = d.get("content_type").and_then(Value::as_str).ok_or_else(bad)?;
    Ok(Some(FileRef {
        sha256,
        size,
        content_type: content_type.to_owned(),
    }))
}
