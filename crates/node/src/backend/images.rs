//! Images in chat messages, for every backend that takes them (an upstream vision model, the
//! built-in OCR): `http(s)` URLs are fetched by the node through the one SSRF-safe fetcher (public
//! addresses only, at most [`MAX_IMAGE_BYTES`] each, within its time limit) and inlined as `data:`
//! URLs, so a model never fetches a stranger's URL from inside the operator's network; a URL that is
//! not an image is the client's error, named. `data:` URLs are decoded here too.

use base64::Engine as _;
use serde_json::Value;

use super::{BackendError, Cancellation};
use crate::fetch::{FetchPolicy, Fetcher};

/// The largest image fetched for a chat message (OpenAI's own limit).
pub const MAX_IMAGE_BYTES: u64 = 20 * 1024 * 1024;
/// The most images fetched for one request.
pub const MAX_FETCHED_IMAGES: usize = 16;

/// The fetcher for chat images: the default policy, with the image size limit.
pub fn fetcher() -> Result<Fetcher, BackendError> {
    let policy = FetchPolicy {
        max_bytes: MAX_IMAGE_BYTES,
        ..FetchPolicy::default()
    };
    Fetcher::new(policy).map_err(|e| BackendError::Setup(e.to_string()))
}

/// The request with its `http(s)` images fetched by `fetcher` and inlined as `data:` URLs; `None`
/// when it has none (nothing is copied).
pub async fn inline(
    fetcher: &Fetcher,
    request: &Value,
    cancel: &Cancellation,
) -> Result<Option<Value>, BackendError> {
    let wanted: Vec<(usize, usize, String)> = stacknet_api::request::chat::fetched_images(request)
        .into_iter()
        .map(|(i, j, url)| (i, j, url.to_owned()))
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    if wanted.len() > MAX_FETCHED_IMAGES {
        return Err(BackendError::InvalidRequest(format!(
            "messages: {} images by URL, more than the {MAX_FETCHED_IMAGES} a node fetches for one request",
            wanted.len()
        )));
    }
    let mut copy = request.clone();
    for (i, j, url) in wanted {
        let param = format!("messages[{i}].content[{j}].image_url.url");
        let fetched = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Abandoned),
            fetched = fetcher.get(&url) => fetched,
        }
        .map_err(|e| BackendError::InvalidRequest(format!("{param}: {e}")))?;
        let content_type = fetched
            .content_type
            .as_deref()
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if fetched.status != 200 || !content_type.starts_with("image/") {
            return Err(BackendError::InvalidRequest(format!(
                "{param}: {url} is not an image (HTTP {}, content type {content_type:?})",
                fetched.status
            )));
        }
        let data = base64::engine::general_purpose::STANDARD.encode(&fetched.body);
        if let Some(slot) = copy.pointer_mut(&format!("/messages/{i}/content/{j}/image_url/url")) {
            *slot = Value::String(format!("data:{content_type};base64,{data}"));
        }
    }
    Ok(Some(copy))
}

/// An image of a request, decoded from its `data:` URL, with where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineImage {
    /// `messages[i].content[j].image_url.url`
    pub param: String,
    pub bytes: Vec<u8>,
}

/// Every image of a chat request's messages, in order, decoded from its `data:` URL (after
/// [`inline`], every image is one). An image that is not valid base64 is the client's error.
pub fn decoded(request: &Value) -> Result<Vec<InlineImage>, BackendError> {
    let mut out = Vec::new();
    for (i, j, url) in stacknet_api::request::chat::image_urls(request) {
        let param = format!("messages[{i}].content[{j}].image_url.url");
        let data = url
            .split_once(',')
            .filter(|(head, _)| head.to_ascii_lowercase().ends_with(";base64"))
            .map(|(_, data)| data)
            .ok_or_else(|| BackendError::InvalidRequest(format!("{param}: not a base64 data: URL")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| BackendError::InvalidRequest(format!("{param}: its base64 is invalid ({e})")))?;
        out.push(InlineImage { param, bytes });
    }
    Ok(out)
}

/// An image a server answered in base64 (`what` names it in errors): decoded and typed by its
/// signature (PNG, JPEG, WebP); anything else is the server's fault.
pub fn output_image(b64: &str, what: &str) -> Result<super::OutputFile, BackendError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| BackendError::Malformed(format!("{what}: {e}")))?;
    let content_type = stacknet_api::output::image_content_type(&bytes)
        .ok_or_else(|| BackendError::Malformed(format!("{what} is not a PNG, JPEG or WebP image")))?;
    Ok(super::OutputFile {
        content_type: content_type.to_owned(),
        bytes: bytes.into(),
    })
}

/// Refuses an `output_format` other than PNG for `model`, which answers with PNG images only.
pub fn png_only(format: Option<&str>, model: &str) -> Result<(), BackendError> {
    match format {
        Some(f) if f != "png" => Err(BackendError::InvalidRequest(format!(
            "output_format: {model} answers with PNG images only"
        ))),
        _ => Ok(()),
    }
}

/// An image server's `job` (ComfyUI, AUTOMATIC1111) run within `timeout`; cancelled, the server is
/// told to stop the GPU work with a POST to `interrupt` (its answer does not matter).
pub(crate) async fn server_job(
    client: &reqwest::Client,
    interrupt: String,
    timeout: std::time::Duration,
    cancel: &Cancellation,
    job: impl std::future::Future<Output = Result<Vec<super::OutputFile>, BackendError>>,
) -> Result<Vec<super::OutputFile>, BackendError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => {
            let _ = client.post(interrupt).send().await;
            Err(BackendError::Abandoned)
        }
        done = tokio::time::timeout(timeout, job) => done.map_err(|_| BackendError::Timeout(timeout))?,
    }
}

/// The outcome of an image server's task: one unit an image. Never warm: the node cannot see what
/// the server has loaded.
pub(crate) fn server_outcome(
    backend: &str,
    model: &str,
    files: Vec<super::OutputFile>,
) -> super::BackendOutcome {
    let mut outcome = super::BackendOutcome::units(
        files.len() as u64,
        backend,
        env!("CARGO_PKG_VERSION").to_owned(),
        model,
    );
    outcome.warm = false;
    outcome.files = files;
    outcome
}
