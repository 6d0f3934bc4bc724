//! Built-in chat and text completion on llama.cpp (through `llama-cpp-2`), on CPU.
//!
//! One worker thread owns the model and runs one task at a time with every core's thread; further
//! tasks wait in a bounded queue, and a full queue answers `overloaded` so the hub tries another node.
//! Why not several tasks at once: llama.cpp's threads collapse (measured 73 to 3 tok/s) when they
//! fight for cores, so tasks in turn finish sooner than tasks side by side on a small machine.
//! Each task gets a fresh context (an empty KV cache), so answers never depend on earlier tasks:
//! at temperature 0 the same request gives the same bytes.

mod emit;
mod request;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

use futures_util::future::BoxFuture;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::Value;
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::paperwork::BackendInfo;
use stacknet_protocol::wire::ModelOffer;
use stacknet_protocol::Sha256Digest;
use tokio::sync::{mpsc, oneshot};

use self::emit::{Emitter, Flow};
use self::request::{Generation, Prompt};
use crate::backend::{Backend, BackendError, BackendOutcome, BackendTask};

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
    reply: oneshot::Sender<Result<Usage, BackendError>>,
}

/// A GGUF chat model served by llama.cpp.
#[derive(Debug)]
pub struct LlamaChat {
    config: LlamaConfig,
    queue: SyncSender<Job>,
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
        let backend = llama_backend()?;
        let (queue, jobs) = sync_channel(QUEUE_LEN);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker_config = config.clone();
        std::thread::Builder::new()
            .name(format!("llama-{}", config.model_name))
            .spawn(move || {
                let params = LlamaModelParams::default();
                let model = match LlamaModel::load_from_file(backend, &worker_config.path, &params) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(format!("cannot load {}: {e}", worker_config.path.display())));
                        return;
                    }
                };
                let template = model.chat_template(None).ok();
                let _ = ready_tx.send(Ok(()));
                work(backend, &model, template.as_ref(), &worker_config, jobs);
            })
            .map_err(|e| BackendError::Setup(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { config, queue }),
            Ok(Err(e)) => Err(BackendError::Setup(e)),
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
            let usage = answer
                .await
                .map_err(|_| BackendError::Setup("the model thread is gone".into()))??;
            // The model stays loaded between tasks: every task after load is warm.
            Ok(BackendOutcome {
                usage: Some(usage),
                info,
                warm: true,
            })
        })
    }
}

fn work(
    backend: &LlamaBackend,
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    config: &LlamaConfig,
    jobs: Receiver<Job>,
) {
    while let Ok(job) = jobs.recv() {
        if job.chunks.is_closed() {
            let _ = job.reply.send(Err(BackendError::Abandoned));
            continue;
        }
        let result = generate(backend, model, template, config, &job);
        let _ = job.reply.send(result);
    }
}

fn prompt_tokens(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    prompt: &Prompt,
) -> Result<Vec<llama_cpp_2::token::LlamaToken>, BackendError> {
    let vocab = model.vocab();
    match prompt {
        Prompt::Text(text) => Ok(vocab.tokenize(text.as_bytes(), true, false)),
        Prompt::Chat(messages) => {
            let template = template.ok_or_else(|| {
                BackendError::InvalidRequest("this model has no chat template; use /v1/completions".into())
            })?;
            let chat = messages
                .iter()
                .map(|(role, content)| LlamaChatMessage::new(role.clone(), content.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BackendError::InvalidRequest(format!("messages: {e}")))?;
            let text = model.apply_chat_template(template, &chat, true).map_err(|e| {
                BackendError::InvalidRequest(format!("messages: the chat template failed: {e}"))
            })?;
            // The template wrote the special tokens itself; let the tokenizer parse them as such.
            Ok(vocab.tokenize(text.as_bytes(), false, true))
        }
    }
}

fn sampler(g: &Generation) -> LlamaSampler {
    if g.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    LlamaSampler::chain_simple([
        LlamaSampler::top_p(g.top_p, 1),
        LlamaSampler::temp(g.temperature),
        LlamaSampler::dist(g.seed),
    ])
}

fn generate(
    backend: &LlamaBackend,
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    config: &LlamaConfig,
    job: &Job,
) -> Result<Usage, BackendError> {
    let g = &job.generation;
    let tokens = prompt_tokens(model, template, &g.prompt)?;
    let n_ctx = config.context_tokens.min(model.n_ctx_train().max(1));
    let prompt_len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    if prompt_len >= n_ctx {
        return Err(BackendError::ContextLengthExceeded(format!(
            "the prompt is {prompt_len} tokens; this model's context holds {n_ctx} tokens, with room for at least one more"
        )));
    }
    let budget = g
        .max_tokens
        .map_or(n_ctx - prompt_len, |m| m.min(n_ctx - prompt_len));
    let threads = i32::try_from(config.threads).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_ctx)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let setup = |e: &dyn std::fmt::Display| BackendError::Setup(format!("llama.cpp: {e}"));
    let mut ctx = model.new_context(backend, params).map_err(|e| setup(&e))?;
    let mut batch = LlamaBatch::new(n_ctx as usize, 1);
    let last = tokens.len().saturating_sub(1);
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last).map_err(|e| setup(&e))?;
    }
    ctx.decode(&mut batch).map_err(|e| setup(&e))?;

    let id = format!("local-{}", job.task.contract);
    let mut out = Emitter::new(
        job.chunks.clone(),
        job.task.workload,
        id,
        job.task.model.clone(),
        g.stop.clone(),
    );
    out.start()?;
    let mut sampler = sampler(g);
    let vocab = model.vocab();
    let (mut generated, mut pos, mut reason) = (0u32, prompt_len as i32, "length");
    while generated < budget {
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        sampler.accept(token);
        if vocab.is_eog(token) {
            reason = "stop";
            break;
        }
        generated += 1;
        if out.push(&vocab.token_to_piece(token, false, None))? == Flow::Stopped {
            reason = "stop";
            break;
        }
        if out.is_abandoned() {
            return Err(BackendError::Abandoned);
        }
        batch.clear();
        batch.add(token, pos, &[0], true).map_err(|e| setup(&e))?;
        pos += 1;
        ctx.decode(&mut batch).map_err(|e| setup(&e))?;
    }
    let usage = Usage {
        input_tokens: u64::from(prompt_len),
        output_tokens: u64::from(generated),
        units: 0,
    };
    out.finish(reason, &usage)?;
    Ok(usage)
}
