//! BERT sentence embeddings with candle: tokenize, run the encoder over padded batches, mean-pool
//! over the attention mask, L2-normalise. The same recipe as sentence-transformers'
//! all-MiniLM-L6-v2 (`Pooling(mean)` then `Normalize`), so the vectors match the reference ones.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::backend::BackendError;

/// Inputs are cut to this many tokens (the `[CLS]` and `[SEP]` included) rather than refused:
/// sentence-transformers serves all-MiniLM-L6-v2 with `max_seq_length` 256, so longer text is
/// embedded from its first 256 tokens, exactly as the reference implementation does. (The
/// model's `tokenizer.json` says 128, the length it was trained at; its position table allows 512.)
pub const MAX_INPUT_TOKENS: usize = 256;

/// A forward pass takes at most this many padded token positions (rows times the longest row).
/// Attention scores take positions x length x 12 heads x 4 bytes: at most about 100 MB per pass,
/// even for inputs of full length, while any request of up to 32 rows of 256 tokens (or hundreds
/// of short sentences) still goes through in a single pass.
pub const MAX_BATCH_POSITIONS: usize = 8192;

/// The vectors of one request, in input order, and the tokens the model actually read.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Real tokens after truncation, special tokens included, padding excluded.
    pub tokens: u64,
}

/// A loaded model: weights, tokenizer and the thread pool every pass runs on.
pub struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
    /// Every parallel loop of candle (its gemm kernels, softmax) and of the tokenizer runs on the
    /// rayon pool current when it is called; running each request inside `pool.install` bounds the
    /// threads inference can take to this pool's size, whatever else in the process uses rayon.
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("dimensions", &self.dimensions)
            .field("threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

fn setup(what: &str, path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what} {}: {e}", path.display()))
}

impl Encoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`. Blocking: reads
    /// the whole model (90 MB) into memory.
    pub fn load(dir: &Path, threads: usize) -> Result<Self, BackendError> {
        if threads == 0 {
            return Err(BackendError::Setup(
                "the embeddings backend needs at least one thread".into(),
            ));
        }
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| setup("cannot read", &config_path, e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| setup("cannot parse", &config_path, e))?;
        let dimensions = config.hidden_size;
        let max_tokens = MAX_INPUT_TOKENS.min(config.max_position_embeddings);

        let weights_path = dir.join("model.safetensors");
        // `safetensors::load` reads the file into memory: no mmap, so no `unsafe` here, and a model
        // file replaced on disk while the node runs cannot change the weights under it.
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| setup("cannot load", &weights_path, e))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config).map_err(|e| setup("not a BERT model:", &weights_path, e))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = load_tokenizer(&tokenizer_path, max_tokens)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("stacknet-embed-{i}"))
            .build()
            .map_err(|e| BackendError::Setup(format!("cannot start the embedding threads: {e}")))?;
        Ok(Self {
            model,
            tokenizer,
            dimensions,
            pool,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Embeds `inputs` (in order) on this encoder's pool. Blocking: call it off the async runtime.
    pub fn embed(&self, inputs: &[String]) -> Result<Embedded, BackendError> {
        self.pool.install(|| self.embed_here(inputs))
    }

    fn embed_here(&self, inputs: &[String]) -> Result<Embedded, BackendError> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(inputs.iter().map(String::as_str).collect(), true)
            .map_err(|e| BackendError::InvalidRequest(format!("cannot tokenize the input: {e}")))?;
        let tokens = encodings.iter().map(|e| e.len() as u64).sum();
        let mut vectors = vec![Vec::new(); encodings.len()];
        for batch in batches(&encodings) {
            let rows: Vec<&Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
            let pooled = self.forward(&rows).map_err(inference_error)?;
            for (i, vector) in batch.into_iter().zip(pooled) {
                vectors[i] = vector;
            }
        }
        Ok(Embedded { vectors, tokens })
    }

    /// One forward pass over `rows`, padded to the longest; returns unit vectors in row order.
    fn forward(&self, rows: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let width = rows.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut mask = Vec::with_capacity(rows.len() * width);
        for row in rows {
            let pad = width - row.len();
            ids.extend(row.get_ids().iter().copied().chain(std::iter::repeat_n(0, pad)));
            mask.extend(std::iter::repeat_n(1u32, row.len()).chain(std::iter::repeat_n(0, pad)));
        }
        let shape = (rows.len(), width);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
        // Single sentences: every token is of segment 0.
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        // Mean over the real tokens only: padding positions get weight 0.
        let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&weights)?.sum(1)?;
        let mean = summed.broadcast_div(&weights.sum(1)?)?;
        // torch's F.normalize: divide by max(norm, 1e-12), so a zero vector stays finite.
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2()
    }
}

/// The tokenizer, truncating to `max_tokens` and never padding (each batch pads itself, to its own
/// longest row). The file's own settings pad every input to 128 tokens, which would waste most of
/// a forward pass on short sentences.
fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer, BackendError> {
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| setup("cannot load", path, e))?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..TruncationParams::default()
        }))
        .map_err(|e| setup("cannot configure", path, e))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Groups input indices into forward passes: sorted by length so rows of a pass pad little, and cut
/// so no pass exceeds [`MAX_BATCH_POSITIONS`]. Depends only on the token lengths, so the same
/// request always runs as the same passes (and gives bit-identical vectors).
fn batches(encodings: &[Encoding]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].len());
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending, so the row being added is the longest of the pass.
        let width = encodings[i].len().max(1);
        if !current.is_empty() && (current.len() + 1) * width > MAX_BATCH_POSITIONS {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

fn inference_error(e: candle_core::Error) -> BackendError {
    BackendError::Setup(format!("embedding inference failed: {e}"))
}
