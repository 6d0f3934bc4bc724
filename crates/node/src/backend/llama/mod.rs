//! Built-in chat and text completion on llama.cpp (through `llama-cpp-2`), on CPU.
//!
//! One worker thread owns the model and runs one task at a time with every core's thread; further
//! tasks wait in a bounded queue, and a full queue answers `overloaded` so the hub tries another node.
//! Why not several tasks at once: llama.cpp's threads collapse (measured 73 to 3 tok/s) when they
//! fight for cores, so tasks in turn finish sooner than tasks side by side on a small machine.
//! Each task gets a fresh context (an empty KV cache), so answers never depend on earlier tasks:
//! at temperature 0 the same request gives the same bytes.
//!
//! - `local`: [`LocalModel`], the generation loop itself (prompt, sampling, decoding); the worker
//!   runs it, and `stacknet-bench models` calls it directly as the baseline.
//! - `emit`: tokens to OpenAI streaming chunks (UTF-8 reassembly, stop sequences).
//! - `request`: what a request asks of the model, validated.
//! - `score`: teacher forcing, the primitive a validator re-checks a claimed output with.
//!
//! Every task commits to the ids it sampled (the network's seeded sampler, so a validator can
//! replay it): [`BackendOutcome::committed`] carries the commitment and the ids.

mod emit;
mod local;
mod request;
mod score;

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

use futures_util::future::BoxFuture;
use llama_cpp_2::llama_backend::LlamaBackend;
use serde_json::Value;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::paperwork::{tokens_sha256, BackendInfo, Commitment};
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::{Sha256Digest, Timestamp};
use tokio::sync::{mpsc, oneshot};

use self::emit::Emitter;
pub use self::emit::Flow;
pub use self::local::{Generated, LocalModel};
use self::request::Generation;
pub use self::score::{ScoreOptions, DEFAULT_SCORE_CHUNK};
use crate::backend::{Backend, BackendError, BackendOutcome, BackendTask, Committed};

/// The backend id in paperwork and hello.
pub const BACKEND_ID: &str = "llama.cpp";
/// The exact binding (and with it the llama.cpp build) this node runs; pinned with `=` in Cargo.toml.
pub const LLAMA_CPP_2_VERSION: &str = "0.1.160";
/// Context size unless the model's own is smaller.
pub const DEFAULT_CONTEXT_TOKENS: u32 = 2048;
/// Tasks waiting for the model before the node says `overloaded`.
pub const QUEUE_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// The name the node advertises.
    pub model_name: String,
    /// The GGUF file.
    pub path: PathBuf,
    pub model_sha256: Sha256Digest,
    /// Threads for llama.cpp; the machine's cores by default.
    pub threads: usize,
    pub context_tokens: u32,
}

impl LlamaConfig {
    pub fn new(model_name: impl Into<String>, path: impl Into<PathBuf>, model_sha256: Sha256Digest) -> Self {
        Self {
            model_name: model_name.into(),
            path: path.into(),
            model_sha256,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            context_tokens: DEFAULT_CONTEXT_TOKENS,
        }
    }
}

struct Job {
    task: BackendTask,
    generation: Generation,
    chunks: mpsc::Sender<Value>,
    reply: oneshot::Sender<Result<Generated, BackendError>>,
}

/// A GGUF chat model served by llama.cpp.
#[derive(Debug)]
pub struct LlamaChat {
    config: LlamaConfig,
    queue: SyncSender<Job>,
    /// When the model finished loading: it stays loaded for as long as this lives.
    loaded_at: Timestamp,
}

/// llama.cpp's global state may be initialised once per process; every model shares it.
fn llama_backend() -> Result<&'static LlamaBackend, BackendError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp logs every tensor it loads to stderr; the node logs what matters itself.
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| BackendError::Setup(format!("llama.cpp: {e}")))
}

impl LlamaChat {
    /// Loads the model on its worker thread; returns once it is ready (or failed to load).
    pub fn load(config: LlamaConfig) -> Result<Self, BackendError> {
        let (queue, jobs) = sync_channel(QUEUE_LEN);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker_config = config.clone();
        std::thread::Builder::new()
            .name(format!("llama-{}", config.model_name))
            .spawn(move || match LocalModel::load(worker_config) {
                Ok(model) => {
                    let _ = ready_tx.send(Ok(()));
                    work(&model, jobs);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| BackendError::Setup(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                config,
                queue,
                loaded_at: Timestamp::now(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BackendError::Setup("the model thread ended while loading".into())),
        }
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            id: BACKEND_ID.to_owned(),
            version: LLAMA_CPP_2_VERSION.to_owned(),
            model: self.config.model_name.clone(),
            model_sha256: Some(self.config.model_sha256),
        }
    }
}

impl Backend for LlamaChat {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: self.config.model_name.clone(),
            workloads: vec![Workload::Chat, Workload::Completion],
            backend: BACKEND_ID.to_owned(),
            model_sha256: Some(self.config.model_sha256),
            tool: None,
        }]
    }

    fn ready(&self) -> Vec<ModelReady> {
        vec![ModelReady {
            name: self.config.model_name.clone(),
            since: self.loaded_at,
        }]
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let queue = self.queue.clone();
        let info = self.info();
        Box::pin(async move {
            let generation = request::parse(&task.request, task.workload)?;
            let (reply, answer) = oneshot::channel();
            match queue.try_send(Job {
                task,
                generation,
                chunks,
                reply,
            }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(BackendError::Busy),
                Err(TrySendError::Disconnected(_)) => {
                    return Err(BackendError::Setup("the model thread is gone".into()))
                }
            }
            let done = answer
                .await
                .map_err(|_| BackendError::Setup("the model thread is gone".into()))??;
            // The model stays loaded between tasks: every task after load is warm.
            Ok(BackendOutcome {
                usage: Some(done.usage),
                info,
                warm: true,
                files: Vec::new(),
                committed: Some(commit(done.tokens, done.finish_reason, done.sampling)),
            })
        })
    }
}

/// The commitment to a generation (a cancelled one included: it commits to what it generated).
fn commit(
    tokens: Vec<u32>,
    finish_reason: &str,
    sampling: stacknet_protocol::paperwork::Sampling,
) -> Committed {
    Committed {
        commitment: Commitment {
            output_tokens_sha256: tokens_sha256(&tokens),
            output_token_count: tokens.len() as u64,
            finish_reason: finish_reason.to_owned(),
            sampling,
        },
        tokens,
    }
}

fn work(model: &LocalModel, jobs: Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        // Cancelled while it waited: nothing was produced, so nothing is signed for.
        if job.chunks.is_closed() || job.task.cancel.is_cancelled() {
            let _ = job.reply.send(Err(BackendError::Abandoned));
            continue;
        }
        let result = generate(model, &job);
        let _ = job.reply.send(result);
    }
}

/// One task: the model's tokens, as OpenAI streaming chunks. A cancelled task stops after the
/// token being decoded, as if at a stop sequence, and reports the tokens it generated.
fn generate(model: &LocalModel, job: &Job) -> Result<Generated, BackendError> {
    let id = format!("local-{}", job.task.contract);
    let mut out = Emitter::new(
        job.chunks.clone(),
        job.task.workload,
        id,
        job.task.model.clone(),
        job.generation.stop.clone(),
    );
    // The opening chunk waits for the first token, so that a prompt the model refuses (too long
    // for its context) fails the task before any output, when the hub can still answer 400.
    let mut started = false;
    let done = model.run(&job.generation, |piece| {
        if !started {
            out.start()?;
            started = true;
        }
        let flow = out.push(piece)?;
        if flow == Flow::Continue && out.is_abandoned() {
            return Err(BackendError::Abandoned);
        }
        if job.task.cancel.is_cancelled() {
            return Ok(Flow::Stopped);
        }
        Ok(flow)
    })?;
    if !started {
        out.start()?;
    }
    out.finish(done.finish_reason, &done.usage)?;
    Ok(done)
}
