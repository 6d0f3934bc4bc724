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
use super::image_generation::{MAX_SEED, OUTPUT_FORMATS, QUALITIES, SIZES};
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
    /// One of the generation sizes ([`SIZES`]); `None` when not given (the backend's default).
    pub size: Option<String>,
    /// An extra field, as for generations: a seeded backend gives the same bytes for the same seed.
    pub seed: Option<u64>,
    /// One of [`OUTPUT_FORMATS`]; `None` when not given (PNG).
    pub output_format: Option<String>,
}

impl ImageEdit {
    /// The size asked for as (width, height); `None` for `auto` or none.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        super::image_generation::dimensions(self.size.as_deref())
    }
}

/// Checks what the descriptors cannot say, from the uploads' bytes (which the hub has): the image
/// is a PNG, JPEG or WebP image whatever it was declared as, and a mask is a PNG (its alpha marks
/// what to edit) of the image's width and height.
pub fn check_uploads(image: &[u8], mask: Option<&[u8]>) -> Result<(), RequestError> {
    let size = crate::output::image_dimensions(image)
        .ok_or_else(|| RequestError::invalid("image", "the image must be a PNG, JPEG or WebP image"))?;
    let Some(mask) = mask else { return Ok(()) };
    let mask_size = crate::output::image_dimensions(mask)
        .filter(|_| crate::output::image_content_type(mask) == Some("image/png"))
        .ok_or_else(|| RequestError::invalid("mask", "the mask must be a PNG image"))?;
    if mask_size != size {
        return Err(RequestError::invalid(
            "mask",
            format!(
                "the mask is {}x{} and the image {}x{}: they must be the same size",
                mask_size.0, mask_size.1, size.0, size.1
            ),
        ));
    }
    Ok(())
}

pub fn validate(body: Value) -> Result<(ApiRequest, ImageEdit), RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let prompt = prompt(obj)?;
    let image = file_ref(obj, "image")?
        .ok_or_else(|| RequestError::invalid("image", "you must provide an image file"))?;
    let mask = file_ref(obj, "mask")?;
    let n = integer(obj, "n", 1, MAX_IMAGES)?.unwrap_or(1);
    let size = fields::one_of(obj, "size", &SIZES)?;
    let seed = integer(obj, "seed", 0, MAX_SEED)?;
    let output_format = fields::one_of(obj, "output_format", &OUTPUT_FORMATS)?;
    fields::one_of(obj, "quality", &QUALITIES)?;
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
            seed,
            output_format,
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

/// The descriptor of the file uploaded as `field`, if any.
pub(crate) fn file_ref(obj: &Map<String, Value>, field: &str) -> Result<Option<FileRef>, RequestError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn descriptor() -> Value {
        file_descriptor(&Sha256Digest::of(b"x"), 1, "image/png", Some("a.png"))
    }

    fn refused(body: Value) -> String {
        match validate(body).unwrap_err() {
            RequestError::Invalid { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    /// A PNG header declaring `w` x `h` (signature and IHDR; no pixels).
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0]);
        b
    }

    #[test]
    fn an_edit_is_read_with_the_generation_sizes_and_a_seed() {
        let (request, edit) = validate(json!({"model": "m", "prompt": "p", "image": descriptor(),
            "n": 2, "size": "256x256", "seed": 4}))
        .unwrap();
        assert_eq!(request.choices, 2);
        assert_eq!(
            (edit.dimensions(), edit.seed, edit.mask),
            (Some((256, 256)), Some(4), None)
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "p", "image": descriptor(), "size": "100x100"})),
            "size"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "p", "image": descriptor(), "n": 11})),
            "n"
        );
        assert_eq!(refused(json!({"model": "m", "prompt": "p"})), "image");
        let long = "x".repeat(MAX_PROMPT_BYTES + 1);
        assert_eq!(
            refused(json!({"model": "m", "prompt": long, "image": descriptor()})),
            "prompt"
        );
    }

    #[test]
    fn uploads_must_be_images_and_a_mask_the_images_size() {
        let param = |r: Result<(), RequestError>| match r.unwrap_err() {
            RequestError::Invalid { param, .. } => param,
            other => panic!("{other:?}"),
        };
        assert!(check_uploads(&png_header(64, 32), Some(&png_header(64, 32))).is_ok());
        assert_eq!(param(check_uploads(b"GIF89a not taken", None)), "image");
        assert_eq!(
            param(check_uploads(&png_header(64, 32), Some(&png_header(32, 64)))),
            "mask"
        );
        assert_eq!(
            param(check_uploads(
                &png_header(64, 32),
                Some(&[0xFF, 0xD8, 0xFF, 0xE0])
            )),
            "mask"
        );
    }
}
