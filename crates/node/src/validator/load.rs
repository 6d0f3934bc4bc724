//! What `stacknet validator` starts from: its key, its copies of the built-in chat models (the same
//! pinned GGUF files the workers run, from the same models directory), and of the built-in media
//! models it can run a task again with (the terrain model).

use std::sync::Arc;

use stacknet_protocol::contract::Workload;

use crate::backend::build::{pinned_sha256, pulled_model, BuildError};
use crate::backend::llama::{LlamaConfig, LocalModel};
use crate::backend::onnx::Runtime;
use crate::backend::terrain::Terrain;
use crate::models::{self, Engine, ModelStore};
use crate::validator::SharedReplayer;

/// Loads `names` (every pulled chat model when empty) from `store`. Blocking (reads the models).
/// A validator checks with them; a guardian computes the exact greedy answers its probes expect.
pub fn load_models(
    store: &ModelStore,
    names: &[String],
    threads: Option<usize>,
) -> Result<Vec<Arc<LocalModel>>, BuildError> {
    let names: Vec<String> = if names.is_empty() {
        models::catalog()
            .iter()
            .filter(|spec| spec.serves(Workload::Chat) && store.path_of(spec).is_some())
            .map(|spec| spec.name.clone())
            .collect()
    } else {
        names.to_vec()
    };
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        let (spec, path) = pulled_model(store, name, "llama", Workload::Chat)?;
        let mut config = LlamaConfig::new(&spec.name, path, pinned_sha256(spec)?);
        if let Some(t) = threads {
            config.threads = t.max(1);
        }
        out.push(Arc::new(LocalModel::load(config).map_err(BuildError::from)?));
    }
    Ok(out)
}

/// The deterministic media models among those pulled to `store` (the built-in terrain model), each
/// loaded on ONNX Runtime for M1 replays; none when none is pulled, or when ONNX Runtime is not
/// (said once, as a warning: the validator still checks chat tasks). Blocking.
pub fn load_replayers(store: &ModelStore, threads: Option<usize>) -> Result<Vec<SharedReplayer>, BuildError> {
    let mut out: Vec<SharedReplayer> = Vec::new();
    for spec in models::catalog() {
        if !(spec.serves(Workload::ImageGeneration) && spec.engine == Engine::OnnxRuntime) {
            continue;
        }
        let Some(path) = store.path_of(spec) else {
            continue;
        };
        let runtime = match Runtime::from_store(store) {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::warn!(model = %spec.name, "not loaded to replay image tasks: {e} (stacknet models pull onnxruntime)");
                continue;
            }
        };
        let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        out.push(Arc::new(Terrain::load(runtime, &path, spec, threads)?));
    }
    Ok(out)
}
