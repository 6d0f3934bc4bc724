//! A scripted OpenAI-compatible server on `127.0.0.1:0`: what a node's upstream backend talks to in
//! tests, and the "upstream direct" baseline in benchmarks (so it is lean: Nagle off, bodies written
//! straight into strings, no logging on the request path).
//!
//! It serves `POST /v1/chat/completions` and `POST /v1/completions`, streaming (SSE, with a final
//! usage chunk when `stream_options.include_usage` asks) or not, `GET /v1/models`, and the audio
//! endpoints `POST /v1/audio/speech` and `POST /v1/audio/transcriptions` ([`audio`]). What it answers
//! is a [`Script`], changeable between requests: the reply (by default `You said: <last user
//! message>`), how many chunks, a delay per chunk, or a failure: an HTTP error with an OpenAI error
//! body, a connection dropped after some chunks, a request that never answers. It counts requests and
//! keeps the last request body so tests can see what the node sent, and counts paced streams that the
//! client closed before their end, so tests can see that a request was aborted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use format::{events, full_response, Endpoint, Reply};

pub mod audio;
mod format;
pub mod images;
pub mod videos;

/// The model the mock lists unless told otherwise.
pub const MOCK_MODEL: &str = "mock-model";
/// How long [`MockUpstream::shutdown`] waits for open requests before it stops the server anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the mock does with the next requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// The reply text; `None` echoes: `You said: <last user message or prompt>`.
    pub reply: Option<String>,
    /// The reply is split into this many content chunks (fewer if it has fewer characters).
    pub chunks: usize,
    /// Whether usage is reported (the streaming usage chunk also needs `include_usage` in the request).
    pub usage: bool,
    /// Pause before each streamed chunk.
    pub chunk_delay: Duration,
    pub failure: Option<Failure>,
}

/// Ways the mock misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this HTTP status and an OpenAI error body.
    Status {
        status: u16,
        message: String,
        code: Option<String>,
    },
    /// Stream this many events, then break the connection (no `[DONE]`).
    DropAfter(usize),
    /// Never answer (until the mock shuts down).
    Hang,
    /// Answer normally, but each request only once [`MockUpstream::release`] lets one through
    /// (in the order they arrived), so a test decides when each task finishes.
    Held,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            reply: None,
            chunks: 4,
            usage: true,
            chunk_delay: Duration::ZERO,
            failure: None,
        }
    }
}

impl Script {
    /// The default: an echo in 4 chunks with usage.
    pub fn echo() -> Self {
        Self::default()
    }

    pub fn text(reply: impl Into<String>) -> Self {
        Self {
            reply: Some(reply.into()),
            ..Self::default()
        }
    }

    pub fn chunks(mut self, n: usize) -> Self {
        self.chunks = n.max(1);
        self
    }

    pub fn usage(mut self, report: bool) -> Self {
        self.usage = report;
        self
    }

    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    pub fn fail(mut self, status: u16, message: impl Into<String>) -> Self {
        self.failure = Some(Failure::Status {
            status,
            message: message.into(),
            code: None,
        });
        self
    }

    pub fn fail_with_code(
        mut self,
        status: u16,
        message: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        self.failure = Some(Failure::Status {
            status,
            message: message.into(),
            code: Some(code.into()),
        });
        self
    }

    pub fn drop_after(mut self, events: usize) -> Self {
        self.failure = Some(Failure::DropAfter(events));
        self
    }

    pub fn hang(mut self) -> Self {
        self.failure = Some(Failure::Hang);
        self
    }

    /// See [`Failure::Held`].
    pub fn held(mut self) -> Self {
        self.failure = Some(Failure::Held);
        self
    }
}

struct Shared {
    script: Mutex<Arc<Script>>,
    models: Vec<String>,
    requests: AtomicU64,
    last_request: Mutex<Option<Value>>,
    /// Paced streams whose client went away before their last event.
    aborted: AtomicU64,
    /// Flips to true at shutdown, releasing hanging and delayed requests.
    closed: watch::Receiver<bool>,
    /// Permits for held requests ([`Failure::Held`]); a fair semaphore, so in arrival order.
    gate: tokio::sync::Semaphore,
    videos: videos::Jobs,
}

/// A running mock; shuts down on [`MockUpstream::shutdown`] or when dropped.
#[derive(Debug)]
pub struct MockUpstream {
    base_url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    close: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Starts a mock serving [`MOCK_MODEL`] with `script`.
    pub async fn start(script: Script) -> std::io::Result<Self> {
        Self::start_serving(&[MOCK_MODEL], script).await
    }

    /// Starts a mock that lists `models` (it answers for any model name).
    pub async fn start_serving(models: &[&str], script: Script) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (close, closed) = watch::channel(false);
        let shared = Arc::new(Shared {
            script: Mutex::new(Arc::new(script)),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            requests: AtomicU64::new(0),
            last_request: Mutex::new(None),
            aborted: AtomicU64::new(0),
            closed: closed.clone(),
            gate: tokio::sync::Semaphore::new(0),
            videos: videos::Jobs::default(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models_list))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/audio/transcriptions", post(transcription))
            .route("/v1/images/generations", post(image_generations))
            .route("/v1/images/edits", post(image_edits))
            .route("/v1/videos", post(video_create))
            .route("/v1/videos/{id}", get(video_poll).delete(video_delete))
            .route("/v1/videos/{id}/content", get(video_content))
            .with_state(Arc::clone(&shared));
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let mut stop = closed;
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|c| *c).await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}/v1"),
            addr,
            shared,
            close,
            server: Some(server),
        })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the script for the requests that arrive from now on.
    pub fn set_script(&self, script: Script) {
        *lock(&self.shared.script) = Arc::new(script);
    }

    /// Completion requests received (chat and legacy), including failed ones.
    /// Lets `n` held requests ([`Script::held`]) answer, the earliest first; a permit not used yet
    /// waits for the next request.
    pub fn release(&self, n: usize) {
        self.shared.gate.add_permits(n);
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Streamed answers (with a chunk delay or a scripted drop) that the client closed before their
    /// end: requests the node aborted.
    pub fn aborted(&self) -> u64 {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    /// How many video jobs were created.
    pub fn videos_created(&self) -> u64 {
        *lock(&self.shared.videos.next)
    }

    /// The video jobs deleted (cancelled), by id.
    pub fn deleted_videos(&self) -> Vec<String> {
        lock(&self.shared.videos.deleted).clone()
    }

    /// The body of the last completion request, as JSON.
    pub fn last_request(&self) -> Option<Value> {
        lock(&self.shared.last_request).clone()
    }

    /// Stops accepting, releases hanging requests and waits (a little) for open ones to finish.
    pub async fn shutdown(mut self) {
        let _ = self.close.send(true);
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let _ = self.close.send(true);
    }
}

/// A poisoned lock only means a test panicked elsewhere; the data is still fine to read.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    answer(&shared, Endpoint::Chat, &body).await
}

async fn completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    answer(&shared, Endpoint::Completion, &body).await
}

/// The scripted failure of an audio request, if any (an HTTP error; the other failures are for
/// streams).
fn audio_failure(shared: &Shared) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    match &lock(&shared.script).failure {
        Some(Failure::Status {
            status,
            message,
            code,
        }) => Some(error_response(*status, message, code.as_deref())),
        _ => None,
    }
}

async fn speech(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error_response(400, "the request body must be a JSON object", None),
    };
    *lock(&shared.last_request) = Some(request.clone());
    audio_failure(&shared).unwrap_or_else(|| audio::speech(&request))
}

async fn image_generations(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error_response(400, "the request body must be a JSON object", None),
    };
    *lock(&shared.last_request) = Some(request.clone());
    audio_failure(&shared).unwrap_or_else(|| images::generations(&request))
}

/// A multipart request read and recorded as the last request: its fields, with each file as
/// `{"sha256", "size"}`.
pub(crate) use audio::read_form;

fn read_upload(
    shared: &Shared,
    headers: &axum::http::HeaderMap,
    body: Bytes,
) -> Result<audio::Form, Box<Response>> {
    let (fields, files) =
        audio::read_form(headers, body).map_err(|why| Box::new(error_response(400, why, None)))?;
    let mut seen = fields.clone();
    for (name, file) in &files {
        seen.insert(
            name.clone(),
            json!({"sha256": stacknet_protocol::Sha256Digest::of(file).to_string(), "size": file.len()}),
        );
    }
    *lock(&shared.last_request) = Some(Value::Object(seen));
    Ok((fields, files))
}

async fn transcription(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let (fields, files) = match read_upload(&shared, &headers, body) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let Some(file) = files.get("file") else {
        return error_response(400, "file is required", None);
    };
    audio_failure(&shared).unwrap_or_else(|| audio::transcription(&fields, file))
}

async fn image_edits(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let (fields, files) = match read_upload(&shared, &headers, body) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    audio_failure(&shared).unwrap_or_else(|| images::edits(&fields, &files))
}

async fn video_create(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let (fields, files) = match read_upload(&shared, &headers, body) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    audio_failure(&shared).unwrap_or_else(|| shared.videos.create(&fields, &files))
}

async fn video_poll(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    shared.videos.poll(&id)
}

async fn video_content(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    shared.videos.content(&id)
}

async fn video_delete(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    shared.videos.delete(&id)
}

async fn models_list(State(shared): State<Arc<Shared>>) -> Response {
    let data: Vec<Value> = shared
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "stacknet-mock"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn answer(shared: &Arc<Shared>, endpoint: Endpoint, body: &[u8]) -> Response {
    let n = shared.requests.fetch_add(1, Ordering::SeqCst);
    let script = Arc::clone(&lock(&shared.script));
    let request: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error_response(400, "the request body must be a JSON object", None),
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let reply = Reply::new(endpoint, &request, &script, n);
    *lock(&shared.last_request) = Some(request);
    match &script.failure {
        Some(Failure::Status {
            status,
            message,
            code,
        }) => {
            return error_response(*status, message, code.as_deref());
        }
        Some(Failure::Hang) => {
            let mut closed = shared.closed.clone();
            let _ = closed.wait_for(|c| *c).await;
            return error_response(503, "the mock upstream shut down", None);
        }
        Some(Failure::Held) => {
            let mut closed = shared.closed.clone();
            tokio::select! {
                permit = shared.gate.acquire() => {
                    if let Ok(p) = permit {
                        p.forget();
                    }
                }
                _ = closed.wait_for(|c| *c) => {
                    return error_response(503, "the mock upstream shut down", None);
                }
            }
        }
        _ => {}
    }
    if !stream {
        let body = full_response(&reply, script.usage);
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let events = events(&reply, script.usage && include_usage);
    let drop_after = match script.failure {
        Some(Failure::DropAfter(k)) => Some(k),
        _ => None,
    };
    let body = if script.chunk_delay.is_zero() && drop_after.is_none() {
        // The fast path: the whole stream in one write.
        Body::from(events.concat())
    } else {
        paced_body(events, script.chunk_delay, drop_after, Arc::clone(shared))
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Streams events one by one with `delay` before each, breaking the connection after `drop_after`.
fn paced_body(events: Vec<String>, delay: Duration, drop_after: Option<usize>, shared: Arc<Shared>) -> Body {
    let closed = shared.closed.clone();
    let watch = Unfinished { shared, ended: false };
    let state = (events.into_iter().enumerate(), closed, watch);
    let stream = futures_util::stream::unfold(state, move |(mut events, mut closed, mut watch)| async move {
        let Some((i, event)) = events.next() else {
            watch.end();
            return None;
        };
        if drop_after.is_some_and(|k| i >= k) {
            watch.end();
            // Not ready once: hyper flushes what it holds (headers, the first k events) whenever the
            // body is pending, so the client sees them before the connection breaks.
            tokio::task::yield_now().await;
            let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted drop");
            return Some((Err(broken), (events, closed, watch)));
        }
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = closed.wait_for(|c| *c) => {
                    watch.end();
                    return None;
                }
            }
        }
        Some((Ok(Bytes::from(event)), (events, closed, watch)))
    });
    Body::from_stream(stream)
}

/// A paced stream in progress: dropped before it ended, the server is dropping the body because
/// the client went away, and the stream counts as aborted.
struct Unfinished {
    shared: Arc<Shared>,
    ended: bool,
}

impl Unfinished {
    fn end(&mut self) {
        self.ended = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An OpenAI error answer: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_response(status: u16, message: &str, code: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
}
