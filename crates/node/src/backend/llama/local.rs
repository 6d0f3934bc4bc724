//! The generation loop itself: a GGUF model loaded on the calling thread, a prompt decoded into a
//! fresh context, then one token sampled and decoded at a time. The node's worker runs exactly this
//! and turns each token into chunks; a benchmark calls it directly to measure llama.cpp alone with
//! the node's own settings (threads, context, sampling).
//!
//! Tokens are sampled by the network's own sampler (`stacknet_protocol::sampler`), not llama.cpp's,
//! and every sampled id is recorded, so that the commitment in the paperwork can be re-checked: a
//! validator rebuilds the prompt with [`LocalModel::prompt_tokens_of`] and the sampling with
//! [`LocalModel::sampling_of`], then scores the claimed ids with `teacher_forced` (score.rs).

use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use serde_json::Value;
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::paperwork::Sampling;
use stacknet_protocol::sampler;

use super::emit::Flow;
use super::request::{self, Generation, Prompt};
use super::{llama_backend, LlamaConfig};
use crate::backend::BackendError;

/// A loaded model and its chat template, with the settings every generation runs under.
pub struct LocalModel {
    pub(super) backend: &'static LlamaBackend,
    pub(super) model: LlamaModel,
    template: Option<LlamaChatTemplate>,
    pub(super) config: LlamaConfig,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("config", &self.config)
            .field("chat_template", &self.template.is_some())
            .finish_non_exhaustive()
    }
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// `output_tokens` excludes a final end of generation token.
    pub usage: Usage,
    /// OpenAI's `finish_reason`: `stop` (end of generation or a stop sequence) or `length`.
    pub finish_reason: &'static str,
    /// Every sampled id in order, a final end of generation token included; after a stop sequence,
    /// up to the token that completed it.
    pub tokens: Vec<u32>,
    /// The sampling as it ran (seed and budget filled in).
    pub sampling: Sampling,
}

impl LocalModel {
    /// Loads the GGUF file of `config`. Blocking (reads the model).
    pub fn load(config: LlamaConfig) -> Result<Self, BackendError> {
        let backend = llama_backend()?;
        let model = LlamaModel::load_from_file(backend, &config.path, &LlamaModelParams::default())
            .map_err(|e| BackendError::Setup(format!("cannot load {}: {e}", config.path.display())))?;
        let template = model.chat_template(None).ok();
        Ok(Self {
            backend,
            model,
            template,
            config,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Runs one chat or completion request (OpenAI JSON, read as the node reads it), handing each
    /// generated token's bytes to `on_token` as soon as it is sampled. Blocking.
    pub fn generate(
        &self,
        body: &Value,
        workload: Workload,
        on_token: impl FnMut(&[u8]) -> Result<Flow, BackendError>,
    ) -> Result<Generated, BackendError> {
        self.run(&request::parse(body, workload)?, on_token)
    }

    /// The prompt's token ids exactly as `run` builds them (chat template or plain text).
    pub fn prompt_tokens_of(&self, request: &Value, workload: Workload) -> Result<Vec<u32>, BackendError> {
        let g = request::parse(request, workload)?;
        Ok(self
            .prompt_tokens(&g.prompt)?
            .iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    /// The sampling a request asks for, as `run` would apply it, and whether the request gave its
    /// seed (when it did not, the seed here is 0: the node chose one, and its commitment says which).
    pub fn sampling_of(&self, request: &Value, workload: Workload) -> Result<(Sampling, bool), BackendError> {
        let g = request::parse(request, workload)?;
        let prompt = self.prompt_tokens(&g.prompt)?;
        let budget = self.budget(&g, prompt.len())?;
        Ok((g.sampling(g.seed.unwrap_or(0), budget), g.seed.is_some()))
    }

    /// The bytes the ids stand for: each id's piece as `run` hands it out, concatenated. Ids outside
    /// the vocabulary stand for nothing (see [`Self::n_vocab`]).
    pub fn detokenize(&self, ids: &[u32]) -> Vec<u8> {
        let vocab = self.model.vocab();
        let mut out = Vec::new();
        for &id in ids.iter().filter(|&&id| id < self.n_vocab()) {
            out.extend_from_slice(&vocab.token_to_piece(LlamaToken::new(id as i32), false, None));
        }
        out
    }

    /// Whether `id` ends generation (false for an id outside the vocabulary).
    pub fn is_eog(&self, id: u32) -> bool {
        id < self.n_vocab() && self.model.vocab().is_eog(LlamaToken::new(id as i32))
    }

    /// The vocabulary size: valid ids are below it.
    pub fn n_vocab(&self) -> u32 {
        u32::try_from(self.model.n_vocab()).unwrap_or(0)
    }

    /// The context a generation runs in: the configured size unless the model's own is smaller.
    fn n_ctx(&self) -> u32 {
        self.config.context_tokens.min(self.model.n_ctx_train().max(1))
    }

    /// The token budget `g` gets after a prompt of `prompt_len` tokens: its `max_tokens`, at most
    /// what the context has left. A prompt that leaves no room is refused.
    fn budget(&self, g: &Generation, prompt_len: usize) -> Result<u32, BackendError> {
        let n_ctx = self.n_ctx();
        let prompt_len = u32::try_from(prompt_len).unwrap_or(u32::MAX);
        if prompt_len >= n_ctx {
            return Err(BackendError::ContextLengthExceeded(format!(
                "the prompt is {prompt_len} tokens; this model's context holds {n_ctx} tokens, with room for at least one more"
            )));
        }
        Ok(g.max_tokens
            .map_or(n_ctx - prompt_len, |m| m.min(n_ctx - prompt_len)))
    }

    /// Decodes the prompt into a fresh context (so no answer depends on an earlier one), then samples
    /// until end of generation, the token budget, or `on_token` answering [`Flow::Stopped`].
    pub(super) fn run(
        &self,
        g: &Generation,
        mut on_token: impl FnMut(&[u8]) -> Result<Flow, BackendError>,
    ) -> Result<Generated, BackendError> {
        let tokens = self.prompt_tokens(&g.prompt)?;
        let budget = self.budget(g, tokens.len())?;
        let prompt_len = tokens.len() as u32;
        let sampling = g.sampling(g.seed.unwrap_or_else(request::random_seed), budget);
        let n_ctx = self.n_ctx();
        let threads = i32::try_from(self.config.threads).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = self
            .model
            .new_context(self.backend, params)
            .map_err(|e| llama_error(&e))?;
        let mut batch = LlamaBatch::new(n_ctx as usize, 1);
        decode_prompt(&mut ctx, &mut batch, &tokens)?;

        let vocab = self.model.vocab();
        let mut ids = Vec::new();
        let (mut generated, mut pos, mut finish_reason) = (0u32, prompt_len as i32, "length");
        while generated < budget {
            let logits = ctx.get_logits_ith(batch.n_tokens() - 1);
            let id = sampler::sample(logits, &sampling, ids.len() as u32)
                .ok_or_else(|| BackendError::Setup("llama.cpp gave no logits to sample from".into()))?;
            ids.push(id);
            let token = LlamaToken::new(id as i32);
            if vocab.is_eog(token) {
                finish_reason = "stop";
                break;
            }
            generated += 1;
            let piece = vocab.token_to_piece(token, false, None);
            if on_token(piece.as_slice())? == Flow::Stopped {
                finish_reason = "stop";
                break;
            }
            batch.clear();
            batch.add(token, pos, &[0], true).map_err(|e| llama_error(&e))?;
            pos += 1;
            decode(&mut ctx, &mut batch)?;
        }
        Ok(Generated {
            usage: Usage {
                input_tokens: u64::from(prompt_len),
                output_tokens: u64::from(generated),
                units: 0,
            },
            finish_reason,
            tokens: ids,
            sampling,
        })
    }

    fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<LlamaToken>, BackendError> {
        let vocab = self.model.vocab();
        match prompt {
            Prompt::Text(text) => Ok(vocab.tokenize(text.as_bytes(), true, false)),
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    BackendError::InvalidRequest(
                        "this model has no chat template; use /v1/completions".into(),
                    )
                })?;
                let chat = messages
                    .iter()
                    .map(|(role, content)| LlamaChatMessage::new(role.clone(), content.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| BackendError::InvalidRequest(format!("messages: {e}")))?;
                let text = self
                    .model
                    .apply_chat_template(template, &chat, true)
                    .map_err(|e| {
                        BackendError::InvalidRequest(format!("messages: the chat template failed: {e}"))
                    })?;
                // The template wrote the special tokens itself; let the tokenizer parse them as such.
                Ok(vocab.tokenize(text.as_bytes(), false, true))
            }
        }
    }
}

/// A llama.cpp failure, as the backend reports it.
pub(super) fn llama_error(e: &dyn std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("llama.cpp: {e}"))
}

/// Decodes `prompt` from position 0 into a fresh `ctx`, with logits at its last token only: how
/// generation starts, and so how teacher forcing starts too, to see the same numbers.
pub(super) fn decode_prompt(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    prompt: &[LlamaToken],
) -> Result<(), BackendError> {
    let last = prompt.len().saturating_sub(1);
    for (i, t) in prompt.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i == last)
            .map_err(|e| llama_error(&e))?;
    }
    decode(ctx, batch)
}

/// The process's llama.cpp decodes, one at a time. ggml's worker threads spin at their barriers, so
/// two decodes side by side on the same cores (a node's worker and a validator's check in one
/// process, two built-in models, tests run in parallel) each wait out the other's time slices: on two
/// cores a stream fell from 73 to 3 tok/s. In turn, each decode has every core; two generations
/// interleave token by token. ggml's threads live for one graph, so none spin between turns.
static CORES: Mutex<()> = Mutex::new(());

/// `ctx.decode(batch)` in the process's turn (see [`CORES`]).
pub(super) fn decode(ctx: &mut LlamaContext<'_>, batch: &mut LlamaBatch) -> Result<(), BackendError> {
    let _turn = CORES.lock().unwrap_or_else(PoisonError::into_inner);
    ctx.decode(batch).map_err(|e| llama_error(&e))
}
