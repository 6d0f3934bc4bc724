//! The seam between the node runtime and whatever actually does the work.
//!
//! A [`Backend`] advertises the models it serves and runs one task at a time per call; the runtime
//! calls it concurrently. It streams output as OpenAI streaming chunks (JSON values) into a bounded
//! channel as soon as they exist, and returns what paperwork needs to know about the run. A task the
//! hub cancels is told through its [`Cancellation`]: the backend stops (llama.cpp between tokens, an
//! upstream by dropping its HTTP request) and returns what it produced until then, which the node
//! signs for like any finished task (one rule for every workload). One module
//! per implementation: [`upstream`] (an OpenAI-compatible server), [`llama`] (built-in chat on
//! llama.cpp), [`embed`] (built-in embeddings on candle), [`whisper`] (built-in speech to text on
//! candle), [`piper`] (built-in text to speech: a neural Piper voice on ONNX Runtime), [`voice`] (the
//! fallback voice: eSpeak NG), [`ocr`] (built-in OCR of chat images: PP-OCR on ONNX Runtime, the one
//! [`onnx`] runtime), [`comfyui`] (image generation and edits by the operator's ComfyUI server), [`automatic1111`]
//! (image generation and edits by an AUTOMATIC1111 server), [`terrain`] (built-in image generation: terrain, not text to image, on ONNX
//! Runtime), [`sandbox`] (code execution in
//! bubblewrap), [`web_fetch`] (pages through the SSRF-safe fetcher), [`web_search`] (the
//! operator's search engine), [`mcp`] (the tools of an operator's MCP server, run in the sandbox).
//! [`multi`] puts several behind one, and [`build`](mod@build) turns the node's `[[backend]]`
//! configuration into that one backend.

pub mod automatic1111;
pub mod build;
pub mod comfyui;
pub mod embed;
pub mod form;
pub mod image;
pub mod images;
pub mod llama;
pub mod mcp;
pub mod mp4;
pub mod multi;
pub mod ocr;
pub mod onnx;
pub mod piper;
pub mod sandbox;
pub mod sse;
pub mod terrain;
pub mod upstream;
pub mod voice;
pub mod web_fetch;
pub mod web_search;
pub mod whisper;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::Value;
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::paperwork::BackendInfo;
use stacknet_protocol::wire::{Attachment, ErrorCode, ModelOffer, ModelReady};
use stacknet_protocol::ContractId;
use tokio::sync::{mpsc, watch};

/// One task as a backend sees it: the contract has already been checked.
#[derive(Clone, Debug)]
pub struct BackendTask {
    pub contract: ContractId,
    pub workload: Workload,
    /// The model named by the contract (a served model: checked before the backend is called).
    pub model: String,
    /// The OpenAI request as the hub forwarded it, already checked by the workload's validator.
    /// Shared, because the runtime still needs it after the backend has finished (usage
    /// estimates); a backend that must change it copies what it needs.
    pub request: Arc<Value>,
    /// The task's input files (uploads), whole and checked against their sha256, in the order the
    /// task lists them; the request names each by its sha256.
    pub files: Arc<Vec<InputFile>>,
    /// Fires when the hub cancels the task (its client went away).
    pub cancel: Cancellation,
}

impl BackendTask {
    /// The input file the request names `field` by its digest.
    pub fn file(
        &self,
        sha256: &stacknet_protocol::Sha256Digest,
        field: &str,
    ) -> Result<&Bytes, BackendError> {
        self.files
            .iter()
            .find(|f| f.meta.sha256 == *sha256)
            .map(|f| &f.bytes)
            .ok_or_else(|| BackendError::InvalidRequest(format!("{field}: the task lacks the uploaded file")))
    }

    /// What a backend answers a task whose model or workload it does not serve.
    pub fn unsupported(&self) -> BackendError {
        BackendError::Unsupported {
            model: self.model.clone(),
            workload: self.workload,
        }
    }
}

/// A request the workload's validator refuses: the client's error, with the validator's message.
impl From<stacknet_api::request::RequestError> for BackendError {
    fn from(e: stacknet_api::request::RequestError) -> Self {
        BackendError::InvalidRequest(e.to_string())
    }
}

/// The receiving end of a task's cancellation: cheap to clone, checkable from any thread (the
/// llama.cpp worker checks it between tokens) and awaitable (an upstream request races it).
#[derive(Clone, Debug)]
pub struct Cancellation(watch::Receiver<bool>);

/// Cancels the tasks holding its [`Cancellation`]s; dropping it cancels nothing.
#[derive(Debug)]
pub struct Canceller(watch::Sender<bool>);

impl Canceller {
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

impl Cancellation {
    /// A new pair: the runtime keeps the [`Canceller`], the backend gets the [`Cancellation`].
    pub fn pair() -> (Canceller, Cancellation) {
        let (tx, rx) = watch::channel(false);
        (Canceller(tx), Cancellation(rx))
    }

    /// One that never fires (a task nobody can cancel: tests, benchmarks).
    pub fn never() -> Cancellation {
        Cancellation::pair().1
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the task is cancelled; never, if its canceller is dropped first.
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// An input file of a task.
#[derive(Clone, Debug)]
pub struct InputFile {
    pub meta: Attachment,
    pub bytes: Bytes,
}

/// An output file of a task (an image, audio): sent to the hub in binary frames, never as base64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    pub content_type: String,
    pub bytes: Bytes,
}

/// What a backend reports when a task has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendOutcome {
    /// Usage as the engine counted it; `None` when it did not say, and the runtime estimates
    /// (see [`crate::usage`]).
    pub usage: Option<Usage>,
    /// The exact software and model, for paperwork.
    pub info: BackendInfo,
    /// The model was already loaded when the task arrived.
    pub warm: bool,
    /// Output files, in order (empty for text workloads).
    pub files: Vec<OutputFile>,
    /// What a built-in text backend commits to, and the token ids it hashes (they travel to the hub
    /// with `done`, for validators). `None` for backends that cannot replay (upstreams).
    pub committed: Option<Committed>,
}

impl BackendOutcome {
    /// The outcome of a task counted in `units` only (sandbox seconds, a page, a query), answered
    /// by a backend with no model file, ready from start.
    pub fn units(units: u64, id: &str, version: String, model: &str) -> Self {
        Self {
            usage: Some(Usage {
                input_tokens: 0,
                output_tokens: 0,
                units,
            }),
            info: BackendInfo {
                id: id.to_owned(),
                version,
                model: model.to_owned(),
                model_sha256: None,
            },
            warm: true,
            files: Vec::new(),
            committed: None,
        }
    }
}

/// A commitment and the generated token ids it hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub commitment: stacknet_protocol::paperwork::Commitment,
    pub tokens: Vec<u32>,
}

/// Why a task failed in the backend. Each maps to the error code the hub sees ([`Self::code`]).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    #[error("cannot reach the upstream: {0}")]
    Connect(String),
    #[error("upstream answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the upstream stream broke off: {0}")]
    Stream(String),
    #[error("malformed upstream output: {0}")]
    Malformed(String),
    /// The upstream refused the request as invalid; its message passes through.
    #[error("{0}")]
    InvalidRequest(String),
    /// The prompt does not fit the model; the upstream's message passes through.
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("the upstream did not finish within {0:?}")]
    Timeout(Duration),
    #[error("this backend does not serve {workload:?} for model {model:?}")]
    Unsupported { model: String, workload: Workload },
    /// The runtime stopped reading the output (the task was cancelled or the hub went away).
    #[error("nobody is reading the output any more")]
    Abandoned,
    #[error("backend setup failed: {0}")]
    Setup(String),
    /// The backend's queue is full; the hub should try another node.
    #[error("the model is busy; its queue is full")]
    Busy,
}

impl BackendError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BackendError::Connect(_)
            | BackendError::Status { .. }
            | BackendError::Stream(_)
            | BackendError::Malformed(_) => ErrorCode::UpstreamFailed,
            BackendError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BackendError::ContextLengthExceeded(_) => ErrorCode::ContextLengthExceeded,
            BackendError::Timeout(_) => ErrorCode::Timeout,
            BackendError::Unsupported { .. } => ErrorCode::UnknownModel,
            BackendError::Abandoned => ErrorCode::Cancelled,
            BackendError::Setup(_) => ErrorCode::Internal,
            BackendError::Busy => ErrorCode::Overloaded,
        }
    }
}

/// A request for a built-in model's worker thread, and where its answer goes.
pub(crate) struct Job<I, T> {
    input: I,
    reply: tokio::sync::oneshot::Sender<Result<T, BackendError>>,
}

/// Hands `input` to a built-in model's worker queue and awaits the worker's answer. A full queue
/// means the node is already a queue's length behind: [`BackendError::Busy`] lets the hub place the
/// task on a node that can start it now. A worker that has stopped is a setup error naming it.
pub(crate) async fn ask_worker<I, T>(
    jobs: &mpsc::Sender<Job<I, T>>,
    input: I,
    worker: &str,
) -> Result<T, BackendError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopped = || BackendError::Setup(format!("the {worker} worker has stopped"));
    jobs.try_send(Job { input, reply }).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => BackendError::Busy,
        mpsc::error::TrySendError::Closed(_) => stopped(),
    })?;
    answer.await.map_err(|_| stopped())?
}

/// A built-in model's worker loop: one job at a time, on this (blocking) thread, until every sender
/// is gone. A job whose task was abandoned while it waited is skipped (spare the work); a panic
/// inside the model fails its job, not the worker and with it every later job.
pub(crate) fn serve_jobs<I, T>(
    mut queue: mpsc::Receiver<Job<I, T>>,
    model: &str,
    mut run: impl FnMut(&I) -> Result<T, BackendError>,
) {
    while let Some(job) = queue.blocking_recv() {
        if job.reply.is_closed() {
            continue;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&job.input)))
            .unwrap_or_else(|_| Err(BackendError::Setup(format!("the {model} model panicked"))));
        // The task may have gone away meanwhile; nobody is left to tell.
        let _ = job.reply.send(result);
    }
}

/// The pinned SHA-256 of the file `path` of a catalog model (what offers and paperwork name).
pub fn file_sha256(
    spec: &stacknet_api::catalog::ModelSpec,
    path: &str,
) -> Result<stacknet_protocol::Sha256Digest, BackendError> {
    let file = spec
        .files
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| BackendError::Setup(format!("model {} has no {path}", spec.name)))?;
    file.sha256
        .parse()
        .map_err(|_| BackendError::Setup(format!("model {}: bad pinned sha256", spec.name)))
}

/// The offer of a built-in model loaded on this machine: one model for its workloads, pinned by
/// the hash of its weights.
pub(crate) fn loaded_offer(
    name: &str,
    workloads: &[Workload],
    backend: &str,
    sha256: stacknet_protocol::Sha256Digest,
) -> Vec<ModelOffer> {
    vec![ModelOffer {
        name: name.to_owned(),
        workloads: workloads.to_vec(),
        backend: backend.to_owned(),
        model_sha256: Some(sha256),
        tool: None,
    }]
}

/// The offer of a model an operator's server runs (ComfyUI, AUTOMATIC1111): not pinned, since
/// the node cannot see its weights.
pub(crate) fn server_offer(name: &str, workloads: Vec<Workload>, backend: &str) -> Vec<ModelOffer> {
    vec![ModelOffer {
        name: name.to_owned(),
        workloads,
        backend: backend.to_owned(),
        model_sha256: None,
        tool: None,
    }]
}

/// A model loaded at start and kept loaded: ready since it loaded (every task is warm).
pub(crate) fn ready_since(name: &str, since: stacknet_protocol::Timestamp) -> Vec<ModelReady> {
    vec![ModelReady {
        name: name.to_owned(),
        since,
    }]
}

/// A way to run tasks. Implementations are cheap to share (`Arc<dyn Backend>`); `execute` returns a
/// `'static` future so the runtime can run many at once on its own tasks.
pub trait Backend: Send + Sync + 'static {
    /// The models and workloads this backend serves, as the node advertises them in its Hello.
    fn models(&self) -> Vec<ModelOffer>;

    /// The models loaded and ready to answer now, with when each became ready: the node names them
    /// in its heartbeats, and the hub pays the warm bonus only on tasks of a model it saw named
    /// before it assigned them. None by default (a backend that cannot tell is never warm).
    fn ready(&self) -> Vec<ModelReady> {
        Vec::new()
    }

    /// Runs one task, sending each output chunk into `chunks` as soon as it exists, in order.
    /// Returns when the output is complete. Dropping the future abandons the task.
    ///
    /// When `task.cancel` fires, the backend stops as soon as it can and returns `Ok` with the
    /// usage of what it produced so far (or `None`, and the runtime counts the chunks it sent);
    /// an error if it produced nothing worth paying for. A backend that cannot stop part-way may
    /// also finish the task: either way the paperwork covers exactly the output it sent.
    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>>;
}
