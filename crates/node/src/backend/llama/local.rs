//! The generation loop itself: a GGUF model loaded on the calling thread, a prompt decoded into a
//! fresh context, then one token sampled and decoded at a time. The node's worker runs exactly this
//! and turns each token into chunks; a benchmark calls it directly to measure llama.cpp alone with
//! the node's own settings (threads, context, sampling).

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use serde_json::Value;
use stacknet_protocol::contract::{Usage, Workload};

use super::emit::Flow;
use super::request::{self, Generation, Prompt};
use super::{llama_backend, LlamaConfig};
use crate::backend::BackendError;

/// A loaded model and its chat template, with the settings every generation runs under.
pub struct LocalModel {
    backend: &'static LlamaBackend,
    model: LlamaModel,
    template: Option<LlamaChatTemplate>,
    config: LlamaConfig,
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
    pub usage: Usage,
    /// OpenAI's `finish_reason`: `stop` (end of generation or a stop sequence) or `length`.
    pub finish_reason: &'static str,
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

    /// Decodes the prompt into a fresh context (so no answer depends on an earlier one), then samples
    /// until end of generation, the token budget, or `on_token` answering [`Flow::Stopped`].
    pub(super) fn run(
        &self,
        g: &Generation,
        mut on_token: impl FnMut(&[u8]) -> Result<Flow, BackendError>,
    ) -> Result<Generated, BackendError> {
        let tokens = self.prompt_tokens(&g.prompt)?;
        let n_ctx = self.config.context_tokens.min(self.model.n_ctx_train().max(1));
        let prompt_len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if prompt_len >= n_ctx {
            return Err(BackendError::ContextLengthExceeded(format!(
                "the prompt is {prompt_len} tokens; this model's context holds {n_ctx} tokens, with room for at least one more"
            )));
        }
        let budget = g
            .max_tokens
            .map_or(n_ctx - prompt_len, |m| m.min(n_ctx - prompt_len));
        let threads = i32::try_from(self.config.threads).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let setup = |e: &dyn std::fmt::Display| BackendError::Setup(format!("llama.cpp: {e}"));
        let mut ctx = self
            .model
            .new_context(self.backend, params)
            .map_err(|e| setup(&e))?;
        let mut batch = LlamaBatch::new(n_ctx as usize, 1);
        let last = tokens.len().saturating_sub(1);
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == last).map_err(|e| setup(&e))?;
        }
        ctx.decode(&mut batch).map_err(|e| setup(&e))?;

        let mut sampler = sampler(g);
        let vocab = self.model.vocab();
        let (mut generated, mut pos, mut finish_reason) = (0u32, prompt_len as i32, "length");
        while generated < budget {
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            sampler.accept(token);
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
            batch.add(token, pos, &[0], true).map_err(|e| setup(&e))?;
            pos += 1;
            ctx.decode(&mut batch).map_err(|e| setup(&e))?;
        }
        Ok(Generated {
            usage: Usage {
                input_tokens: u64::from(prompt_len),
                output_tokens: u64::from(generated),
                units: 0,
            },
            finish_reason,
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
