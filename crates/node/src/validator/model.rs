//! [`Model`] for the built-in llama.cpp model: the validator loads the same GGUF the workers run
//! and checks with the primitives generation itself uses (the same chat template and tokenizer, the
//! same pieces), so an honest task's ids re-tokenize and re-spell exactly.

use serde_json::Value;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::Sha256Digest;

use super::checks::Model;
use crate::backend::llama::{LocalModel, ScoreOptions};
use crate::backend::BackendError;

impl Model for LocalModel {
    fn sha256(&self) -> Sha256Digest {
        self.config().model_sha256
    }

    fn prompt_tokens_of(&self, request: &Value, workload: Workload) -> Result<Vec<u32>, BackendError> {
        LocalModel::prompt_tokens_of(self, request, workload)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<Vec<u8>, BackendError> {
        // The model's own detokenize skips unknown ids; a claim that contains one is not this
        // model's output at all.
        if let Some(bad) = ids.iter().find(|&&id| id >= self.n_vocab()) {
            return Err(BackendError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.n_vocab()
            )));
        }
        Ok(LocalModel::detokenize(self, ids))
    }

    fn is_eog(&self, id: u32) -> bool {
        LocalModel::is_eog(self, id)
    }

    fn teacher_forced(
        &self,
        prompt: &[u32],
        claimed: &[u32],
        at: &mut dyn FnMut(u32, &[f32]),
    ) -> Result<(), BackendError> {
        LocalModel::teacher_forced(self, prompt, claimed, ScoreOptions::default(), at)
    }
}
