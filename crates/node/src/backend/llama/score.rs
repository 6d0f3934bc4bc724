//! Teacher forcing: what a validator runs to re-check a claimed output. The prompt and the claimed
//! ids go through the model in a few large decodes instead of one decode per token, with logits
//! kept at every position that predicts a claimed id, so checking costs about one prefill of the
//! prompt and the output rather than a generation.
//!
//! Position `P - 1 + i` (P prompt tokens) predicts `claimed[i]`; the last claimed id is never fed
//! in, as in generation, where the final token is sampled and not decoded.
//!
//! Exact replay: llama.cpp's CPU matrix kernels change above a few dozen rows per micro-batch, and
//! logits computed in large micro-batches differ from the one-row decodes of generation by up to
//! 0.08 in a logit (SmolLM2-135M), enough to move a sampled token's slice of the distribution. So by
//! default the prompt is decoded in one call exactly as the worker decoded it, and the claimed ids
//! in calls of at most [`EXACT_UBATCH_ROWS`] tokens: measured, the logits are then bit-identical to
//! the worker's (1 and 2 threads), greedy gap 0 and sampled distance 0.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::local::{decode, decode_prompt, llama_error, LocalModel};
use crate::backend::BackendError;

/// Tokens per decode call unless the caller says otherwise.
pub const DEFAULT_SCORE_CHUNK: u32 = 256;
/// Micro-batches of at most this many rows give the same logits as generation's one-row decodes
/// (measured with llama.cpp of llama-cpp-2 0.1.160: 33 rows still do, 64 do not).
pub const EXACT_UBATCH_ROWS: u32 = 32;
/// The KV cache is sized to the check, rounded up to this many tokens.
const CONTEXT_ROUND_TOKENS: u32 = 256;

/// How a check runs. Calibration varies threads and micro-batch to measure honest noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// llama.cpp threads; the model's configured threads when `None`.
    pub threads: Option<usize>,
    /// llama.cpp's micro-batch (`n_ubatch`) for the whole check. `None`: the prompt as the worker
    /// decoded it (llama.cpp's default), the claimed ids in calls of at most [`EXACT_UBATCH_ROWS`].
    pub ubatch: Option<u32>,
    /// At most this many claimed ids per decode call (at least 1).
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
    /// Teacher forcing: one fresh context, `prompt` decoded in one call (as generation does), then
    /// `claimed` in chunks of at most `opts.chunk` tokens (see [`ScoreOptions::ubatch`]), calling
    /// `at(i, logits)` with the logits that predict `claimed[i]`, for every `i` in order. The context
    /// is sized to the check (up to the model's trained context), whatever context the model was
    /// configured with for generation.
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
        let step = match opts.ubatch {
            Some(_) => opts.chunk.max(1),
            None => opts.chunk.clamp(1, EXACT_UBATCH_ROWS),
        } as usize;
        let threads = i32::try_from(opts.threads.unwrap_or(self.config.threads)).unwrap_or(1);
        let n_batch = (prompt.len() as u32).max(step as u32);
        let defaults = LlamaContextParams::default();
        let ubatch = opts.ubatch.unwrap_or(defaults.n_ubatch()).clamp(1, n_batch);
        let params = defaults
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(ubatch)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = self
            .model
            .new_context(self.backend, params)
            .map_err(|e| llama_error(&e))?;
        let mut batch = LlamaBatch::new(n_batch as usize, 1);
        // The prompt, with logits at its last token only, exactly as generation decodes it.
        let (prompt, output) = fed.split_at(prompt.len());
        decode_prompt(&mut ctx, &mut batch, prompt)?;
        at(0, ctx.get_logits_ith(batch.n_tokens() - 1));
        // Then the claimed ids but the last, each position's logits predicting the next claimed id.
        for (n, part) in output.chunks(step).enumerate() {
            let first = n * step;
            batch.clear();
            for (j, &t) in part.iter().enumerate() {
                batch
                    .add(t, (prompt.len() + first + j) as i32, &[0], true)
                    .map_err(|e| llama_error(&e))?;
            }
            decode(&mut ctx, &mut batch)?;
            for j in 0..part.len() {
                at((first + j + 1) as u32, ctx.get_logits_ith(j as i32));
            }
        }
        Ok(())
    }
}
