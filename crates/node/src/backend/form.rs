//! Multipart forms the node sends (an upstream's transcriptions and image edits, a ComfyUI
//! upload), written out whole: the boundary is chosen to appear in no file.

use serde_json::Value;

/// A file of an [`UploadForm`].
pub(crate) struct Upload<'a> {
    pub field: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// An upload request as the upstream gets it (a transcription, an image edit): OpenAI's multipart
/// form, rebuilt from the task's fields (each as text, or as `replace` rewrites it; arrays as
/// repeated `name[]` fields, as OpenAI's SDKs send them; the files' descriptors left out) and its
/// files, with the contract's model (if given).
pub(crate) struct UploadForm {
    boundary: String,
    pub body: Vec<u8>,
}

impl UploadForm {
    pub fn new(
        request: &Value,
        model: Option<&str>,
        files: &[Upload<'_>],
        replace: impl Fn((&str, &Value)) -> Option<String>,
    ) -> Self {
        // In no file: a boundary inside one would end its part early.
        let seed: Vec<u8> = files
            .iter()
            .flat_map(|f| f.bytes.iter().take(64).copied())
            .collect();
        let mut boundary = format!(
            "stacknet-{}",
            &stacknet_protocol::Sha256Digest::of(&seed).to_string()[..32]
        );
        while files
            .iter()
            .any(|f| f.bytes.windows(boundary.len()).any(|w| w == boundary.as_bytes()))
        {
            boundary.push('x');
        }
        let total: usize = files.iter().map(|f| f.bytes.len()).sum();
        let mut body = Vec::with_capacity(total + 1024);
        let mut text = |name: &str, value: &str| {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                    quoted(name)
                )
                .as_bytes(),
            );
        };
        if let Some(model) = model {
            text("model", model);
        }
        if let Some(fields) = request.as_object() {
            for (name, value) in fields {
                let is_file = files.iter().any(|f| f.field == name);
                match (name.as_str(), value) {
                    ("model", _) | (_, Value::Null) => {}
                    _ if is_file => {}
                    (_, Value::Array(items)) => {
                        for item in items {
                            text(&format!("{name}[]"), &plain(item));
                        }
                    }
                    (_, other) => text(name, &replace((name, other)).unwrap_or_else(|| plain(other))),
                }
            }
        }
        for file in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                    quoted(file.field),
                    quoted(file.filename),
                    file.content_type.replace(['\r', '\n'], "")
                )
                .as_bytes(),
            );
            body.extend_from_slice(file.bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        Self { boundary, body }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }
}

/// A JSON value as a form field's text: strings as they are, the rest as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A name or file name inside a quoted header parameter: quotes and line breaks escaped as
/// browsers do (WHATWG's multipart encoding).
fn quoted(name: &str) -> String {
    name.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}
