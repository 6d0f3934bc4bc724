//! A built-in embeddings backend: all-MiniLM-L6-v2 (BERT) on the CPU with candle.
//!
//! The model loads once, at construction, and stays loaded (every task is warm). Inference runs on
//! one dedicated thread fed by a bounded queue: a task parses its request on the async side, queues
//! a job and awaits the reply, so the runtime's workers never run a forward pass. The worker runs
//! one request at a time on a rayon pool of `threads` threads (see [`model`]): requests queue rather
//! than fight for cores, which on a CPU gives every request a shorter wait than running them side by
//! side. All inputs of a request go through together, padded per pass, as one (or, for large
//! requests, a few) forward passes.
//!
//! Inputs longer than [`MAX_INPUT_TOKENS`] are truncated, not refused; the response's usage counts
//! the tokens the model actually read. The output is one chunk: the whole OpenAI embeddings
//! response.
//!
//! - `request`: the OpenAI request (`input`, `encoding_format`, `dimensions`) and the response.
//! - `model`: tokenizer, BERT forward pass, mean pooling and L2 normalisation.

mod model;
mod request;

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::paperwork::BackendInfo;
use stacknet_protocol::values::Sha256Digest;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokio::sync::mpsc;

pub use model::{Embedded, MAX_BATCH_POSITIONS, MAX_INPUT_TOKENS};
pub use request::{response_body, EmbeddingRequest, EncodingFormat, MAX_INPUTS};

use super::{ask_worker, serve_jobs, Backend, BackendError, BackendOutcome, BackendTask, Job};
use crate::models::{ModelSpec, ModelStore};
use model::Encoder;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "candle";
/// The candle release this backend runs, as paperwork records it. The workspace pins candle to
/// exactly this version (a unit test checks `Cargo.lock` agrees), because a validator re-running a
/// task must run the same numerics.
pub const CANDLE_VERSION: &str = "0.11.1";
/// The file whose SHA-256 identifies the model in offers and paperwork.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Requests that may wait for the worker; a task beyond this is refused as [`BackendError::Busy`].
pub const QUEUE_CAPACITY: usize = 64;

/// An embeddings model served from this machine's CPU. Cheap to clone; the worker thread stops
/// once every clone has been dropped and the queue has drained.
#[derive(Clone, Debug)]
pub struct CandleEmbeddings {
    inner: Arc<Inner>,
    /// When the model finished loading: it stays loaded for as long as this lives.
    loaded_at: Timestamp,
}

#[derive(Debug)]
struct Inner {
    model_name: String,
    model_sha256: Sha256Digest,
    dimensions: usize,
    threads: usize,
    /// The worker's queue: the texts of one request each.
    jobs: mpsc::Sender<Job<Vec<String>, Embedded>>,
}

impl CandleEmbeddings {
    /// Loads the model in `dir` (`config.json`, `model.safetensors`, `tokenizer.json`) to serve as
    /// `model_name`, and starts its worker. `model_sha256` is the pinned hash of the weights (the
    /// store verified the file against it). Inference uses at most `threads` threads (at least 1);
    /// give it the cores left over by other backends. Blocking (reads 90 MB): call it from
    /// `spawn_blocking` in async code.
    pub fn load(
        dir: &Path,
        model_name: &str,
        model_sha256: Sha256Digest,
        threads: usize,
    ) -> Result<Self, BackendError> {
        let encoder = Encoder::load(dir, threads)?;
        let dimensions = encoder.dimensions();
        let threads = encoder.threads();
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("stacknet-embed".to_owned())
            .spawn(move || serve_jobs(queue, "embedding", |inputs: &Vec<String>| encoder.embed(inputs)))
            .map_err(|e| BackendError::Setup(format!("cannot start the embeddings worker: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model_name: model_name.to_owned(),
                model_sha256,
                dimensions,
                threads,
                jobs,
            }),
            loaded_at: Timestamp::now(),
        })
    }

    /// Loads a catalog model that `store` holds, verified, named and pinned as the catalog says.
    pub fn from_store(store: &ModelStore, spec: &ModelSpec, threads: usize) -> Result<Self, BackendError> {
        let dir = store.path_of(spec).ok_or_else(|| {
            BackendError::Setup(format!(
                "model {} is not in {} (run `stacknet models pull {}`)",
                spec.name,
                store.dir().display(),
                spec.name
            ))
        })?;
        Self::load(&dir, &spec.name, weights_sha256(spec)?, threads)
    }

    /// The length of every vector (384 for all-MiniLM-L6-v2).
    pub fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    /// The most threads inference runs on.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Embeds `inputs` as one request, on the same worker and queue that tasks use, without the
    /// OpenAI request and response around it (the baseline of `stacknet-bench models`).
    pub async fn embed(&self, inputs: Vec<String>) -> Result<Embedded, BackendError> {
        self.inner.embed(inputs).await
    }
}

/// The pinned SHA-256 of a model's [`WEIGHTS_FILE`], from its catalog entry.
pub fn weights_sha256(spec: &ModelSpec) -> Result<Sha256Digest, BackendError> {
    super::file_sha256(spec, WEIGHTS_FILE)
}

impl Backend for CandleEmbeddings {
    fn models(&self) -> Vec<ModelOffer> {
        super::loaded_offer(
            &self.inner.model_name,
            &[Workload::Embedding],
            BACKEND_ID,
            self.inner.model_sha256,
        )
    }

    fn ready(&self) -> Vec<ModelReady> {
        super::ready_since(&self.inner.model_name, self.loaded_at)
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
    async fn embed(&self, inputs: Vec<String>) -> Result<Embedded, BackendError> {
        ask_worker(&self.jobs, inputs, "embeddings").await
    }

    async fn run(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> Result<BackendOutcome, BackendError> {
        if task.workload != Workload::Embedding || task.model != self.model_name {
            return Err(task.unsupported());
        }
        let request = EmbeddingRequest::parse(&task.request, self.dimensions)?;
        let embedded = self.embed(request.inputs).await?;
        let body = response_body(&task.model, &embedded.vectors, request.encoding, embedded.tokens);
        chunks.send(body).await.map_err(|_| BackendError::Abandoned)?;
        Ok(BackendOutcome {
            usage: Some(Usage {
                input_tokens: embedded.tokens,
                output_tokens: 0,
                units: 0,
            }),
            info: BackendInfo {
                id: BACKEND_ID.to_owned(),
                version: CANDLE_VERSION.to_owned(),
                model: task.model,
                model_sha256: Some(self.model_sha256),
            },
            warm: true,
            files: Vec::new(),
            committed: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paperwork names [`CANDLE_VERSION`]; it must be the candle that is actually linked.
    #[test]
    fn candle_version_matches_the_lock_file() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
        let entry = format!("name = \"candle-core\"\nversion = \"{CANDLE_VERSION}\"\n");
        assert!(
            lock.contains(&entry),
            "Cargo.lock does not lock candle-core {CANDLE_VERSION}"
        );
    }

    #[test]
    fn the_catalog_pins_the_weights() {
        let spec = crate::models::find("all-minilm-l6-v2").unwrap();
        assert_eq!(
            weights_sha256(spec).unwrap().to_hex(),
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        );
    }

    #[test]
    fn a_missing_model_is_a_setup_error_that_says_what_to_do() {
        let dir = std::env::temp_dir().join("stacknet-embed-no-such-store");
        let spec = crate::models::find("all-minilm-l6-v2").unwrap();
        let err = CandleEmbeddings::from_store(&ModelStore::new(&dir), spec, 1).unwrap_err();
        assert!(
            matches!(&err, BackendError::Setup(m) if m.contains("stacknet models pull all-minilm-l6-v2"))
        );
    }
}
