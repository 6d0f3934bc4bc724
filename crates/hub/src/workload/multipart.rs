//! Multipart uploads (`/v1/images/edits`, `/v1/audio/transcriptions`): the body read into the
//! request's text fields and its files. Each file becomes an attachment (its sha256, size and
//! content type) that travels to the node in binary frames and, in the fields, its descriptor
//! (`stacknet_api::request::image_edit::file_descriptor`).
//!
//! Multipart fields are text, so a form says which of its fields are numbers, to be read as JSON
//! numbers (the shared validator sees the same types as in a JSON body). `stream` is read as a
//! boolean, and a field named `name[]` (how OpenAI's SDKs send an array) is collected into the
//! array `name`.

use axum::body::Bytes;
use serde_json::{Map, Value};
use stacknet_api::request::image_edit::file_descriptor;
use stacknet_protocol::wire::Attachment;
use stacknet_protocol::Sha256Digest;

use super::Files;
use crate::error::ApiError;

/// Most text bytes in one multipart text field.
pub const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;
/// Most items collected into one array field (`name[]`).
pub const MAX_ARRAY_ITEMS: usize = 16;

/// The shape of one endpoint's form.
#[derive(Debug)]
pub struct Form {
    /// The fields that carry files.
    pub files: &'static [&'static str],
    /// The text fields read as numbers.
    pub numbers: &'static [&'static str],
}

/// Splits a multipart body into its text fields and its files.
pub fn read_multipart(
    content_type: Option<&str>,
    body: Bytes,
    form: &Form,
) -> Result<(Map<String, Value>, Files), ApiError> {
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
        if let Some(array) = name.strip_suffix("[]") {
            let item = Value::String(text(&name, &bytes)?);
            match fields
                .entry(array.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) if items.len() < MAX_ARRAY_ITEMS => items.push(item),
                Value::Array(_) => {
                    return Err(ApiError::invalid(
                        array,
                        format!("{array} lists more than {MAX_ARRAY_ITEMS} items"),
                    ))
                }
                _ => {
                    return Err(ApiError::invalid(
                        array,
                        format!("{array} is given more than once"),
                    ))
                }
            }
            continue;
        }
        if fields.contains_key(&name) {
            return Err(ApiError::invalid(
                &name,
                format!("{name} is given more than once"),
            ));
        }
        if form.files.contains(&name.as_str()) {
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
            let text = text(&name, &bytes)?;
            let value = if form.numbers.contains(&name.as_str()) {
                number(&text).unwrap_or(Value::String(text))
            } else if name == "stream" {
                match text.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::String(text),
                }
            } else {
                Value::String(text)
            };
            fields.insert(name, value);
        }
    }
    Ok((fields, files))
}

/// The upload a file field's descriptor names (by its sha256), among the request's files.
pub fn upload<'a>(descriptor: &Map<String, Value>, files: &'a Files) -> Option<&'a (Attachment, Bytes)> {
    let digest = descriptor.get("sha256")?.as_str()?;
    files.iter().find(|(meta, _)| meta.sha256.to_string() == digest)
}

/// A text field's value: UTF-8, at most [`MAX_TEXT_FIELD_BYTES`].
fn text(name: &str, bytes: &Bytes) -> Result<String, ApiError> {
    if bytes.len() > MAX_TEXT_FIELD_BYTES {
        return Err(ApiError::invalid(
            name,
            format!("{name} is over {MAX_TEXT_FIELD_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::invalid(name, format!("{name} must be UTF-8 text")))
}

/// The JSON number a text field spells (an integer when it is one), if it spells one.
fn number(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(u) = t.parse::<u64>() {
        return Some(Value::from(u));
    }
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const FORM: Form = Form {
        files: &["file"],
        numbers: &["temperature"],
    };

    fn body(parts: &[(&str, &str)]) -> Bytes {
        let mut out = String::new();
        for (name, value) in parts {
            out.push_str(&format!(
                "--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        out.push_str("--b--\r\n");
        Bytes::from(out)
    }

    #[test]
    fn numbers_booleans_and_arrays_are_read_as_json() {
        let (fields, files) = read_multipart(
            Some("multipart/form-data; boundary=b"),
            body(&[
                ("temperature", "0.2"),
                ("stream", "false"),
                ("timestamp_granularities[]", "word"),
                ("timestamp_granularities[]", "segment"),
                ("language", "en"),
            ]),
            &FORM,
        )
        .unwrap();
        assert!(files.is_empty());
        assert_eq!(
            Value::Object(fields),
            json!({"temperature": 0.2, "stream": false, "timestamp_granularities": ["word", "segment"], "language": "en"})
        );
        let twice = read_multipart(
            Some("multipart/form-data; boundary=b"),
            body(&[("language", "en"), ("language", "de")]),
            &FORM,
        );
        assert!(twice.is_err());
    }
}
