//! Teacher forcing: what a validator runs to re-check a claimed output. The prompt and the claimed
//! ids go through the model in a few large decodes instead of one decode per token, with logits
//! kept at every position that predicts a claimed id, so checking costs about one prefill of the
//! prompt and the output rather than a generation.
//!
//! Position `P - 1 + i` (P prompt tokens) predicts `claimed[i]`; the last claimed id is never fed
//! in, as in generation, where the final token is sampled and not decoded.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::local::LocalModel;
use crate::backend::BackendError;

/// Tokens per decode call unless the caller says otherwise.
pub const DEFAULT_SCORE_CHUNK: u32 = 256;
/// The KV cache is sized to the check, rounded up to this many tokens.
const CONTEXT_ROUND_TOKENS: u32 = 256;

/// How a check runs. Calibration varies threads and micro-batch to measure honest noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// llama.cpp threads; the model's configured threads when `None`.
    pub threads: Option<usize>,
    /// llama.cpp's micro-batch (`n_ubatch`); its default (512, at most `chunk`) when `None`.
    pub ubatch: Option<u32>,
    /// At most this many tokens per decode call (at least 1).
    pub chunk: u32,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            threads: None,
            ubatch: None,
            chunk: DEFAULT_SCORE_CHUNK,
        }
    }
}

impl LocalModel {
    /// Teacher forcing: one fresh context, `prompt` then `claimed` decoded in chunks of at most
    /// `opts.chunk` tokens, calling `at(i, logits)` with the logits that predict `claimed[i]`, for
    /// every `i` in order. The context is sized to the check (up to the model's trained context),
    /// whatever context the model was configured with for generation.
    pub fn teacher_forced(
        &self,
        prompt: &[u32],
        claimed: &[u32],
        opts: ScoreOptions,
        mut at: impl FnMut(u32, &[f32]),
    ) -> Result<(), BackendError> {
        if claimed.is_empty() {
            return Ok(());
        }
        if prompt.is_empty() {
            return Err(BackendError::InvalidRequest(
                "teacher forcing needs at least one prompt token".into(),
            ));
        }
        let n_vocab = self.n_vocab();
        if let Some(bad) = prompt.iter().chain(claimed).find(|&&id| id >= n_vocab) {
            return Err(BackendError::InvalidRequest(format!(
                "token id {bad} is outside this model's vocabulary of {n_vocab}"
            )));
        }
        // Everything but the last claimed id is fed in.
        let fed: Vec<LlamaToken> = prompt
            .iter()
            .chain(&claimed[..claimed.len() - 1])
            .map(|&id| LlamaToken::new(id as i32))
            .collect();
        let trained = self.model.n_ctx_train().max(1);
        let needed = u32::try_from(fed.len()).unwrap_or(u32::MAX);
        if needed > trained {
            return Err(BackendError::ContextLengthExceeded(format!(
                "prompt and output are {needed} tokens to score; this model's context holds {trained}"
            )));
        }
        let n_ctx = needed
            .div_ceil(CONTEXT_ROUND_TOKENS)
            .saturating_mul(CONTEXT_ROUND_TOKENS)
            .min(trained);
        let chunk = opts.chunk.max(1);
        let threads = i32::try_from(opts.threads.unwrap_or(self.config.threads)).unwrap_or(1);
        let defaults = LlamaContextParams::default();
        let ubatch = opts.ubatch.unwrap_or(defaults.n_ubatch()).clamp(1, chunk);
        let params = defaults
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(chunk)
            .with_n_ubatch(ubatch)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let setup = |e: &dyn std::fmt::Display| BackendError::Setup(format!("llama.cpp: {e}"));
        let mut ctx = self
            .model
            .new_context(self.backend, params)
            .map_err(|e| setup(&e))?;
        let mut batch = LlamaBatch::new(chunk as usize, 1);
        let first_scored = prompt.len() - 1;
        for (n, part) in fed.chunks(chunk as usize).enumerate() {
            let start = n * chunk as usize;
            batch.clear();
            for (j, &t) in part.iter().enumerate() {
                let pos = start + j;
                batch
                    .add(t, pos as i32, &[0], pos >= first_scored)
                    .map_err(|e| setup(&e))?;
            }
            ctx.decode(&mut batch).map_err(|e| setup(&e))?;
            for j in 0..part.len() {
                let pos = start + j;
                if pos >= first_scored {
                    at((pos - first_scored) as u32, ctx.get_logits_ith(j as i32));
                }
            }
        }
        Ok(())
    }
}
