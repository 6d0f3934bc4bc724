//! A backend that forwards tasks to an OpenAI-compatible server the operator already runs (Ollama,
//! vLLM, llama.cpp server, OpenAI itself).
//!
//! The node always streams from the upstream, whatever the client asked: the hub assembles a
//! non-streaming answer from the chunks itself, and streaming lets output reach the client as soon as
//! it exists. So every request goes out with `"stream": true` and
//! `"stream_options": {"include_usage": true}` (for exact token counts in paperwork), and each SSE
//! event is forwarded the moment it is parsed. A cancelled task drops its HTTP request (the
//! connection closes, so the upstream stops generating) and returns what was forwarded until then.
//!
//! Images in chat messages given by `http(s)` URL are fetched by the node, through the one SSRF-safe
//! fetcher (public addresses only, at most [`MAX_IMAGE_BYTES`](super::images::MAX_IMAGE_BYTES) each, within its time limit), and
//! forwarded inline as `data:` URLs: the upstream never fetches a stranger's URL from inside the
//! operator's network, and a URL that is not an image is the client's error, named.
//!
//! Speech (`/audio/speech`) and transcriptions (`/audio/transcriptions`) are forwarded as the
//! client sent them (a transcription's upload rebuilt as a multipart form from the task's fields and
//! file), with the contract's model; the upstream's body comes back unchanged as the task's one output
//! file, read up to the hub's file limit.
//!
//! Videos (`/videos`) are jobs at the upstream too: created, polled (progress passed on) and
//! downloaded (see `run_video`).
//!
//! Image generations (`/images/generations`) are forwarded with the contract's model, and image
//! edits (`/images/edits`) as a multipart form rebuilt from the task's fields and its uploads, as
//! transcriptions are; each `b64_json` image of the answer becomes an output file (typed by its
//! signature), one unit each.

use crate::chain::error_chain;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::paperwork::BackendInfo;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokio::sync::mpsc;

use stacknet_api::request::{image_edit, image_generation};

use super::form::{Upload, UploadForm};
use super::sse::SseParser;
use super::{Backend, BackendError, BackendOutcome, BackendTask, Cancellation, OutputFile};
use crate::config::UpstreamConfig;
use crate::fetch::Fetcher;
use crate::usage::reported_usage;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "openai-upstream";
/// How often a video job is polled at the upstream.
pub const VIDEO_POLL: Duration = Duration::from_millis(500);
/// The most of an upstream error body that is read.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The most of an upstream error message passed on to the hub.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 2_000;
/// How long opening a connection to the upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are kept this long, so back-to-back tasks skip the TCP handshake.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// An upstream model counts as loaded for this long after it last answered (Ollama's default
/// `keep_alive`; vLLM and llama.cpp server keep theirs loaded for good). The node cannot see inside
/// the upstream, so a model is warm only on this evidence: it answered, and recently.
pub const UPSTREAM_WARM_FOR: Duration = Duration::from_secs(300);

/// An OpenAI-compatible upstream: `/chat/completions` for chat, `/completions` for completion.
#[derive(Clone, Debug)]
pub struct OpenAiUpstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    chat_url: String,
    completions_url: String,
    speech_url: String,
    transcriptions_url: String,
    images_url: String,
    edits_url: String,
    videos_url: String,
    /// `Bearer <key>`, marked sensitive so it never shows in debug output.
    auth: Option<HeaderValue>,
    /// Each model with the workloads it is served for.
    offers: Vec<(String, Vec<Workload>)>,
    /// Fetches chat messages' images.
    images: Fetcher,
    timeout: Duration,
    /// Per model: when it first answered since it last went cold, and when it last answered.
    answered: Mutex<HashMap<String, (Timestamp, Instant)>>,
}

impl OpenAiUpstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, BackendError> {
        Self::with_image_fetcher(config, super::images::fetcher()?)
    }

    /// An upstream whose chat images are fetched by `images` (tests give one that reaches their
    /// local server).
    pub fn with_image_fetcher(config: &UpstreamConfig, images: Fetcher) -> Result<Self, BackendError> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| BackendError::Setup(error_chain(&e)))?;
        let auth = match &config.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    BackendError::Setup("the upstream API key is not a valid header value".to_owned())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let base = config.base_url.trim_end_matches('/');
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                chat_url: format!("{base}/chat/completions"),
                completions_url: format!("{base}/completions"),
                speech_url: format!("{base}/audio/speech"),
                transcriptions_url: format!("{base}/audio/transcriptions"),
                images_url: format!("{base}/images/generations"),
                edits_url: format!("{base}/images/edits"),
                videos_url: format!("{base}/videos"),
                auth,
                offers: offers(config),
                images,
                timeout: config.timeout(),
                answered: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Backend for OpenAiUpstream {
    fn models(&self) -> Vec<ModelOffer> {
        self.inner
            .offers
            .iter()
            .map(|(name, workloads)| ModelOffer {
                name: name.clone(),
                workloads: workloads.clone(),
                backend: BACKEND_ID.to_owned(),
                model_sha256: None,
                tool: None,
            })
            .collect()
    }

    fn ready(&self) -> Vec<ModelReady> {
        let Ok(answered) = self.inner.answered.lock() else {
            return Vec::new();
        };
        let mut ready: Vec<ModelReady> = answered
            .iter()
            .filter(|(_, (_, last))| last.elapsed() < UPSTREAM_WARM_FOR)
            .map(|(name, (since, _))| ModelReady {
                name: name.clone(),
                since: *since,
            })
            .collect();
        ready.sort_by(|a, b| a.name.cmp(&b.name));
        ready
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.run(task, chunks).await })
    }
}

impl Inner {
    async fn run(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> Result<BackendOutcome, BackendError> {
        let url = match task.workload {
            Workload::Chat => &self.chat_url,
            Workload::Completion => &self.completions_url,
            Workload::Speech | Workload::Transcription => return self.run_audio(task).await,
            Workload::ImageGeneration | Workload::ImageEdit => return self.run_images(task).await,
            Workload::VideoGeneration => return self.run_video(task, &chunks).await,
            workload => {
                return Err(BackendError::Unsupported {
                    model: task.model,
                    workload,
                })
            }
        };
        let inlined = super::images::inline(&self.images, &task.request, &task.cancel).await?;
        let body = streaming_body(inlined.as_ref().unwrap_or(task.request.as_ref()), &task.model)?;
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let cancel = task.cancel.clone();
        let response = self.send(request, &cancel).await?;
        let warm = self.is_warm(&task.model);
        let usage = self.forward_stream(response, &chunks, &cancel).await?;
        self.answered(&task.model);
        Ok(BackendOutcome {
            usage,
            info: BackendInfo {
                id: BACKEND_ID.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                model: task.model,
                model_sha256: None,
            },
            // Loaded, as far as the node can tell: it answered within `UPSTREAM_WARM_FOR`.
            warm,
            files: Vec::new(),
            committed: None,
        })
    }

    /// Sends `request` with the upstream's time limit and key; a successful answer's headers, or
    /// the upstream's refusal. Cancelling drops the request.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        cancel: &Cancellation,
    ) -> Result<reqwest::Response, BackendError> {
        let request = self.authorized(request.timeout(self.timeout));
        let response = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Abandoned),
            sent = request.send() => sent.map_err(|e| self.map_err(e))?,
        };
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        Ok(response)
    }

    /// Speech or a transcription: one request, its body the task's one output file.
    async fn run_audio(&self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        use stacknet_api::request::audio;
        let (request, units) = if task.workload == Workload::Speech {
            let (_, speech) = audio::validate_speech(Value::clone(&task.request))?;
            (self.post_json(&self.speech_url, &task, |_| {})?, speech.units())
        } else {
            let (_, transcription) = audio::validate_transcription(Value::clone(&task.request))?;
            let bytes = task.file(&transcription.file.sha256, "file")?;
            check_length(&transcription.file, bytes)?;
            let upload = Upload {
                field: "file",
                filename: transcription.file.filename.as_deref().unwrap_or("audio"),
                content_type: &transcription.file.content_type,
                bytes,
            };
            let form = UploadForm::new(&task.request, Some(&task.model), &[upload], |_| None);
            let request = self
                .client
                .post(&self.transcriptions_url)
                .header(CONTENT_TYPE, form.content_type())
                .body(form.body);
            (request, transcription.file.seconds())
        };
        let cancel = task.cancel.clone();
        let response = self.send(request, &cancel).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let limit = stacknet_protocol::wire::Limits::OURS.max_file_bytes;
        let bytes = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Abandoned),
            read = read_capped(response, limit) => read.map_err(|e| match e {
                Capped::Over => BackendError::Malformed(format!("the upstream's answer is over {limit} bytes")),
                Capped::Http(e) => self.map_err(e),
            })?,
        };
        if bytes.is_empty() {
            return Err(BackendError::Malformed(
                "the upstream's answer is empty".to_owned(),
            ));
        }
        let warm = self.is_warm(&task.model);
        self.answered(&task.model);
        let mut outcome = BackendOutcome::units(
            units,
            BACKEND_ID,
            env!("CARGO_PKG_VERSION").to_owned(),
            &task.model,
        );
        outcome.warm = warm;
        outcome.files = vec![OutputFile {
            content_type,
            bytes: bytes.into(),
        }];
        Ok(outcome)
    }

    /// A POST of the task's JSON request to `url`, with the contract's model (and `edit` made).
    fn post_json(
        &self,
        url: &str,
        task: &BackendTask,
        edit: impl FnOnce(&mut Value),
    ) -> Result<reqwest::RequestBuilder, BackendError> {
        let mut body = Value::clone(&task.request);
        body["model"] = Value::String(task.model.clone());
        edit(&mut body);
        let body = serde_json::to_vec(&body)
            .map_err(|e| BackendError::InvalidRequest(format!("cannot encode the request: {e}")))?;
        Ok(self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body))
    }

    /// Image generation: the request forwarded with the contract's model; each `b64_json` image of
    /// the answer is an output file (an answer by URL is refused: the node would have to fetch a
    /// stranger's URL, and the hub answers `b64_json`).
    async fn run_images(&self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        // The hub answers by URL from the images' bytes: the upstream is asked for the bytes.
        let by_bytes = |v: &Value| (v.as_str() == Some("url")).then(|| "b64_json".to_owned());
        let (request, n) = if task.workload == Workload::ImageEdit {
            let (_, edit) = image_edit::validate(Value::clone(&task.request))?;
            let mut uploads = vec![Upload {
                field: "image",
                filename: "image",
                content_type: &edit.image.content_type,
                bytes: task.file(&edit.image.sha256, "image")?,
            }];
            if let Some(mask) = &edit.mask {
                uploads.push(Upload {
                    field: "mask",
                    filename: "mask.png",
                    content_type: &mask.content_type,
                    bytes: task.file(&mask.sha256, "mask")?,
                });
            }
            let form = UploadForm::new(&task.request, Some(&task.model), &uploads, |(name, v)| {
                (name == "response_format").then(|| by_bytes(v)).flatten()
            });
            let request = self
                .client
                .post(&self.edits_url)
                .header(CONTENT_TYPE, form.content_type())
                .body(form.body);
            (request, edit.n)
        } else {
            let (_, image) = image_generation::validate(Value::clone(&task.request))?;
            let request = self.post_json(&self.images_url, &task, |body| {
                if let Some(bytes) = body.get("response_format").and_then(by_bytes) {
                    body["response_format"] = Value::String(bytes);
                }
            })?;
            (request, image.n)
        };
        let cancel = task.cancel.clone();
        let response = self.send(request, &cancel).await?;
        // n images, each within the file limit, as base64 (4/3), and the JSON around them.
        let limit = stacknet_protocol::wire::Limits::OURS
            .max_file_bytes
            .saturating_mul(n)
            .saturating_mul(4)
            / 3
            + 64 * 1024;
        let bytes = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Abandoned),
            read = read_capped(response, limit) => read.map_err(|e| match e {
                Capped::Over => BackendError::Malformed(format!("the upstream's answer is over {limit} bytes")),
                Capped::Http(e) => self.map_err(e),
            })?,
        };
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| BackendError::Malformed(format!("the upstream's images answer is not JSON: {e}")))?;
        let files = decode_images(&answer, n)?;
        let warm = self.is_warm(&task.model);
        self.answered(&task.model);
        let mut outcome = BackendOutcome::units(
            files.len() as u64,
            BACKEND_ID,
            env!("CARGO_PKG_VERSION").to_owned(),
            &task.model,
        );
        outcome.warm = warm;
        outcome.files = files;
        Ok(outcome)
    }

    /// A video: the job created at the upstream (`POST /videos`, multipart, with the input
    /// reference as a file), polled every [`VIDEO_POLL`] (its progress passed on as
    /// `{"progress": percent}` chunks) until completed, and its file downloaded (`GET
    /// /videos/{id}/content`, an MP4 up to the file limit); one unit a second. A failed job is
    /// the upstream's error, named. Cancelled, the upstream's job is deleted and the seconds its
    /// last progress covered are claimed.
    async fn run_video(
        &self,
        task: BackendTask,
        chunks: &mpsc::Sender<Value>,
    ) -> Result<BackendOutcome, BackendError> {
        let (_, video) = stacknet_api::request::video::validate(Value::clone(&task.request))?;
        let mut uploads = Vec::new();
        if let Some(reference) = &video.input_reference {
            uploads.push(Upload {
                field: "input_reference",
                filename: "reference",
                content_type: &reference.content_type,
                bytes: task.file(&reference.sha256, "input_reference")?,
            });
        }
        let mut fields = Value::clone(&task.request);
        if let Some(obj) = fields.as_object_mut() {
            // Ours, not the upstream's: the remixed job is a hub's, and OpenAI takes seconds as text.
            obj.remove("remix_of");
            obj.insert("seconds".into(), Value::String(video.seconds.to_string()));
        }
        let form = UploadForm::new(&fields, Some(&task.model), &uploads, |_| None);
        let request = self
            .client
            .post(&self.videos_url)
            .header(CONTENT_TYPE, form.content_type())
            .body(form.body);
        let cancel = task.cancel.clone();
        let created = self.send(request, &cancel).await?;
        let job: Value = created
            .json()
            .await
            .map_err(|e| BackendError::Malformed(format!("the upstream's video job is not JSON: {e}")))?;
        let id = job["id"]
            .as_str()
            .filter(|id| {
                !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .ok_or_else(|| BackendError::Malformed("the upstream's video job has no usable id".to_owned()))?
            .to_owned();
        let job_url = format!("{}/{id}", self.videos_url);
        let mut progress = 0u64;
        let outcome = |units: u64, files: Vec<OutputFile>| {
            let mut outcome = BackendOutcome::units(
                units,
                BACKEND_ID,
                env!("CARGO_PKG_VERSION").to_owned(),
                &task.model,
            );
            outcome.warm = false;
            outcome.files = files;
            outcome
        };
        loop {
            let status: Value = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    let _ = self.authorized(self.client.delete(&job_url)).send().await;
                    return Ok(outcome(video.seconds * progress / 100, Vec::new()));
                }
                polled = self.poll(&job_url) => polled?,
            };
            if let Some(p) = status["progress"].as_u64().map(|p| p.min(100)) {
                if p > progress {
                    progress = p;
                    let _ = chunks.send(serde_json::json!({"progress": p})).await;
                }
            }
            match status["status"].as_str() {
                Some("completed") => break,
                Some("failed") => {
                    return Err(BackendError::Status {
                        status: 500,
                        message: format!(
                            "the upstream's video job failed: {}",
                            status["error"]["message"].as_str().unwrap_or("no message")
                        ),
                    })
                }
                Some("queued" | "in_progress") => {}
                other => {
                    return Err(BackendError::Malformed(format!(
                        "the upstream's video job has status {other:?}"
                    )))
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(VIDEO_POLL) => {}
            }
        }
        let response = self
            .send(self.client.get(format!("{job_url}/content")), &cancel)
            .await?;
        let limit = stacknet_protocol::wire::Limits::OURS.max_file_bytes;
        let bytes = read_capped(response, limit).await.map_err(|e| match e {
            Capped::Over => BackendError::Malformed(format!("the upstream's video is over {limit} bytes")),
            Capped::Http(e) => self.map_err(e),
        })?;
        if bytes.get(4..8) != Some(b"ftyp".as_slice()) {
            return Err(BackendError::Malformed(
                "the upstream's video is not an MP4 file".to_owned(),
            ));
        }
        self.answered(&task.model);
        let file = OutputFile {
            content_type: "video/mp4".to_owned(),
            bytes: bytes.into(),
        };
        Ok(outcome(video.seconds, vec![file]))
    }

    /// A video job's status at the upstream.
    async fn poll(&self, url: &str) -> Result<Value, BackendError> {
        let response = self
            .authorized(self.client.get(url).timeout(self.timeout))
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        response
            .json()
            .await
            .map_err(|e| BackendError::Malformed(format!("the upstream's video job is not JSON: {e}")))
    }

    /// `request` with the upstream's key, if it has one.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        }
    }

    /// Whether `model` answered within [`UPSTREAM_WARM_FOR`].
    fn is_warm(&self, model: &str) -> bool {
        self.answered.lock().is_ok_and(|a| {
            a.get(model)
                .is_some_and(|(_, last)| last.elapsed() < UPSTREAM_WARM_FOR)
        })
    }

    /// Records that `model` answered now.
    fn answered(&self, model: &str) {
        if let Ok(mut answered) = self.answered.lock() {
            let now = Instant::now();
            let entry = answered
                .entry(model.to_owned())
                .or_insert((Timestamp::now(), now));
            if entry.1.elapsed() >= UPSTREAM_WARM_FOR {
                // It had gone cold: ready again from now.
                entry.0 = Timestamp::now();
            }
            entry.1 = now;
        }
    }

    /// Parses the SSE body and forwards each chunk; returns the usage the upstream reported. Once
    /// cancelled it stops reading and drops the body, which aborts the upstream request.
    async fn forward_stream(
        &self,
        response: reqwest::Response,
        chunks: &mpsc::Sender<Value>,
        cancel: &Cancellation,
    ) -> Result<Option<Usage>, BackendError> {
        let mut body = response.bytes_stream();
        let mut parser = SseParser::new();
        let mut state = StreamState::default();
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(state.usage),
                next = body.next() => next,
            };
            let Some(bytes) = next else { break };
            let bytes = bytes.map_err(|e| self.map_err(e))?;
            parser.push(&bytes);
            while let Some(data) = parser
                .next_event()
                .map_err(|e| BackendError::Malformed(e.to_string()))?
            {
                if state.event(&data, chunks).await? {
                    return Ok(state.usage);
                }
            }
        }
        if let Some(data) = parser
            .finish()
            .map_err(|e| BackendError::Malformed(e.to_string()))?
        {
            if state.event(&data, chunks).await? {
                return Ok(state.usage);
            }
        }
        // Some servers close without `[DONE]`; a stream that reached a finish reason is complete.
        if state.finished {
            Ok(state.usage)
        } else {
            Err(BackendError::Stream("the stream ended before [DONE]".to_owned()))
        }
    }

    fn map_err(&self, e: reqwest::Error) -> BackendError {
        // Without the URL: these messages travel to the hub, and an upstream URL is the operator's
        // business (it may even carry credentials).
        let e = e.without_url();
        if e.is_timeout() {
            BackendError::Timeout(self.timeout)
        } else if e.is_body() || e.is_decode() {
            BackendError::Stream(error_chain(&e))
        } else {
            BackendError::Connect(error_chain(&e))
        }
    }
}

/// Measures the task's audio as the hub did (the same code): a hub that understates its length
/// would have the node work for less than the seconds it is paid.
pub fn check_length(
    file: &stacknet_api::request::audio::AudioRef,
    bytes: &bytes::Bytes,
) -> Result<(), BackendError> {
    let hint = stacknet_api::audio::hint(file.filename.as_deref(), &file.content_type);
    let info = stacknet_api::audio::probe(bytes.clone(), Some(&hint))
        .map_err(|e| BackendError::InvalidRequest(format!("file: {e}")))?;
    if info.duration_ms != file.duration_ms {
        return Err(BackendError::InvalidRequest(format!(
            "file: the audio is {} ms long, not the {} ms the task says",
            info.duration_ms, file.duration_ms
        )));
    }
    Ok(())
}

/// Each configured model with the workloads it is served for (a name in several lists is one
/// offer), in the order first named.
fn offers(config: &UpstreamConfig) -> Vec<(String, Vec<Workload>)> {
    let mut offers: Vec<(String, Vec<Workload>)> = Vec::new();
    let lists: [(&[String], &[Workload]); 5] = [
        (&config.models, &[Workload::Chat, Workload::Completion]),
        (&config.speech_models, &[Workload::Speech]),
        (&config.transcription_models, &[Workload::Transcription]),
        (
            &config.image_models,
            &[Workload::ImageGeneration, Workload::ImageEdit],
        ),
        (&config.video_models, &[Workload::VideoGeneration]),
    ];
    for (names, workloads) in lists {
        for name in names {
            match offers.iter_mut().find(|(n, _)| n == name) {
                Some((_, w)) => w.extend_from_slice(workloads),
                None => offers.push((name.clone(), workloads.to_vec())),
            }
        }
    }
    offers
}

/// The images of an OpenAI images answer: each `data[i].b64_json` decoded, typed by its signature
/// (PNG, JPEG, WebP). At least one, at most the `n` asked for.
fn decode_images(answer: &Value, n: u64) -> Result<Vec<OutputFile>, BackendError> {
    let malformed = |why: String| BackendError::Malformed(format!("the upstream's images answer: {why}"));
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no data array".to_owned()))?;
    if data.is_empty() || data.len() as u64 > n {
        return Err(malformed(format!("{} images for the {n} asked", data.len())));
    }
    data.iter()
        .enumerate()
        .map(|(i, item)| {
            let b64 = item.get("b64_json").and_then(Value::as_str).ok_or_else(|| {
                malformed(format!(
                    "data[{i}] has no b64_json (an answer by url is not taken)"
                ))
            })?;
            super::images::output_image(b64, &format!("the upstream's images answer: data[{i}]"))
        })
        .collect()
}

enum Capped {
    Over,
    Http(reqwest::Error),
}

/// A whole response body, refused once it passes `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, Capped> {
    let mut body = Vec::new();
    while let Some(piece) = response.chunk().await.map_err(Capped::Http)? {
        if (body.len() + piece.len()) as u64 > limit {
            return Err(Capped::Over);
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

#[derive(Default)]
struct StreamState {
    usage: Option<Usage>,
    finished: bool,
}

impl StreamState {
    /// Handles one SSE event; true at `[DONE]`.
    async fn event(&mut self, data: &[u8], chunks: &mpsc::Sender<Value>) -> Result<bool, BackendError> {
        if data == b"[DONE]" {
            return Ok(true);
        }
        let chunk: Value = serde_json::from_slice(data)
            .map_err(|e| BackendError::Malformed(format!("an event is not JSON: {e}")))?;
        if !chunk.is_object() {
            return Err(BackendError::Malformed(
                "an event is not a JSON object".to_owned(),
            ));
        }
        // Servers report failures after the headers as an event `{"error": {...}}`.
        if let Some(error) = chunk.get("error") {
            return Err(BackendError::Stream(error_message(error)));
        }
        if let Some(usage) = reported_usage(&chunk) {
            self.usage = Some(usage);
        }
        if let Some(choices) = chunk.get("choices").and_then(Value::as_array) {
            self.finished |= choices
                .iter()
                .any(|c| c.get("finish_reason").is_some_and(|r| !r.is_null()));
        }
        chunks.send(chunk).await.map_err(|_| BackendError::Abandoned)?;
        Ok(false)
    }
}

/// The request as the upstream gets it: the client's fields, except that `model` is the contract's
/// and streaming with usage is forced. Written straight from the shared request, without copying it.
struct StreamingRequest<'a> {
    fields: &'a serde_json::Map<String, Value>,
    model: &'a str,
}

const OVERRIDDEN: [&str; 3] = ["model", "stream", "stream_options"];

impl Serialize for StreamingRequest<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (name, value) in self.fields {
            if !OVERRIDDEN.contains(&name.as_str()) {
                map.serialize_entry(name, value)?;
            }
        }
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("stream", &true)?;
        map.serialize_entry("stream_options", &StreamOptions)?;
        map.end()
    }
}

struct StreamOptions;

impl Serialize for StreamOptions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

fn streaming_body(request: &Value, model: &str) -> Result<Vec<u8>, BackendError> {
    let fields = request
        .as_object()
        .ok_or_else(|| BackendError::InvalidRequest("the request must be a JSON object".to_owned()))?;
    serde_json::to_vec(&StreamingRequest { fields, model })
        .map_err(|e| BackendError::InvalidRequest(format!("cannot encode the request: {e}")))
}

/// Turns a non-2xx answer into the error the hub will see, passing the upstream's message through.
async fn refusal(mut response: reqwest::Response) -> BackendError {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Ok(Some(piece)) = response.chunk().await {
        let room = MAX_ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&piece[..piece.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    let (message, code) = match serde_json::from_slice::<Value>(&body) {
        Ok(json) => match json.get("error") {
            Some(error) => (
                error_message(error),
                error.get("code").and_then(Value::as_str).map(str::to_owned),
            ),
            None => (String::from_utf8_lossy(&body).into_owned(), None),
        },
        Err(_) => (String::from_utf8_lossy(&body).trim().to_owned(), None),
    };
    let message: String = message.chars().take(MAX_ERROR_MESSAGE_CHARS).collect();
    // 400 is OpenAI's "your request is wrong"; some servers (FastAPI-based ones) say 422.
    if status == 400 || status == 422 {
        if code.as_deref() == Some("context_length_exceeded") || mentions_context_length(&message) {
            return BackendError::ContextLengthExceeded(message);
        }
        return BackendError::InvalidRequest(message);
    }
    BackendError::Status { status, message }
}

/// vLLM and llama.cpp do not set OpenAI's error code; their messages say it in words.
fn mentions_context_length(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("context length") || lower.contains("context window") || lower.contains("context_length")
}

/// The message of an OpenAI error object (`{"message": ...}`) or of a bare string (Ollama).
fn error_message(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn streaming_is_forced_and_the_model_is_the_contracts() {
        let request = json!({"model": "client-name", "stream": false, "stream_options": {"include_usage": false},
            "messages": [{"role": "user", "content": "Hi"}], "temperature": 0});
        let body: Value = serde_json::from_slice(&streaming_body(&request, "served").unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"model": "served", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hi"}], "temperature": 0})
        );
        assert!(streaming_body(&json!([1]), "m").is_err());
    }

    #[test]
    fn error_messages_of_several_servers() {
        assert_eq!(error_message(&json!({"message": "bad", "type": "x"})), "bad");
        assert_eq!(error_message(&json!("model not found")), "model not found");
        assert!(mentions_context_length(
            "This model's maximum context length is 2048 tokens"
        ));
    }
}
