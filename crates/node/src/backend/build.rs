//! From configuration to a running backend: each [`BackendConfig`] becomes its backend, and
//! several are combined into one [`MultiBackend`], the single `Arc<dyn Backend>` a node holds.
//! `stacknet node` and `stacknet up` both come through here.
//!
//! Built-in models are named by their catalog name and loaded from a [`ModelStore`], verified as
//! pulled; building never downloads (pulling is `stacknet models pull`'s job, or `up`'s on first
//! run), so a node starts fast and offline, or fails at once saying what to pull.

use std::path::PathBuf;
use std::sync::Arc;

use stacknet_protocol::contract::Workload;
use stacknet_protocol::Sha256Digest;

use super::automatic1111::Automatic1111;
use super::comfyui::ComfyUi;
use super::embed::CandleEmbeddings;
use super::llama::{LlamaChat, LlamaConfig};
use super::mcp::McpTools;
use super::multi::MultiBackend;
use super::ocr::Ocr;
use super::onnx::Runtime;
use super::piper::PiperVoice;
use super::sandbox::Sandbox;
use super::terrain::Terrain;
use super::upstream::OpenAiUpstream;
use super::voice::EspeakVoice;
use super::web_fetch::WebFetch;
use super::web_search::WebSearch;
use super::whisper::Whisper;
use super::{Backend, BackendError};
use crate::config::{BackendConfig, LlamaBackendConfig, ModelBackendConfig, PiperBackendConfig};
use crate::fetch::{FetchPolicy, Fetcher};
use crate::models::{self, Engine, ModelSpec, ModelStore};

/// Why the configured backends could not be built. The messages are for an operator: each says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no backend is configured")]
    Empty,
    #[error("no model {name:?} in the catalog; known: {}", known.join(", "))]
    UnknownModel { name: String, known: Vec<String> },
    #[error("{name} does not serve {workload:?}, which a `kind = \"{kind}\"` backend needs")]
    WrongWorkload {
        name: String,
        kind: &'static str,
        workload: Workload,
    },
    #[error("{name} runs on {engine:?}, not on a `kind = \"{kind}\"` backend")]
    WrongEngine {
        name: String,
        kind: &'static str,
        engine: Engine,
    },
    #[error(
        "model {name} is not in {} (run `stacknet models pull {name} --models-dir {}`)",
        models_dir.display(),
        models_dir.display()
    )]
    NotPulled { name: String, models_dir: PathBuf },
    #[error(
        "no backend: no --upstream, no [[backend]] in the config, and no built-in model pulled into {}; \
         pull one with `stacknet models pull <name> --models-dir {}` (the catalog: {}), \
         or name an OpenAI-compatible server with --upstream URL --model NAME",
        models_dir.display(),
        models_dir.display(),
        available.join(", ")
    )]
    NothingPulled {
        models_dir: PathBuf,
        available: Vec<String>,
    },
    #[error("upstream {base_url} names no model; list the models it serves")]
    UpstreamWithoutModels { base_url: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Builds every backend in `configs`, in order, and combines them: one backend is returned as
/// itself, several as a [`MultiBackend`] (which refuses a model name offered twice). Built-in
/// models are loaded from `models`, on blocking threads.
pub async fn build(configs: &[BackendConfig], models: &ModelStore) -> Result<Arc<dyn Backend>, BuildError> {
    let mut backends: Vec<Arc<dyn Backend>> = Vec::with_capacity(configs.len());
    for config in configs {
        backends.push(build_one(config, models).await?);
    }
    match backends.len() {
        0 => Err(BuildError::Empty),
        1 => Ok(backends.remove(0)),
        _ => Ok(Arc::new(MultiBackend::new(backends)?)),
    }
}

/// A backend for each built-in catalog model already pulled into `models`: llama.cpp for those
/// that chat, candle for those that embed or transcribe, ONNX Runtime for the voice and OCR (when
/// the runtime is pulled too). Cheap (file metadata and markers, no hashing).
pub fn pulled(models: &ModelStore) -> Vec<BackendConfig> {
    let onnx = models::find(models::ONNX_RUNTIME).is_some_and(|spec| models.path_of(spec).is_some());
    models::catalog()
        .iter()
        .filter(|spec| models.path_of(spec).is_some())
        .filter_map(|spec| {
            let name = spec.name.as_str();
            match spec.engine {
                Engine::LlamaCpp => Some(BackendConfig::Llama(LlamaBackendConfig::new(name))),
                Engine::Candle if spec.serves(Workload::Embedding) => {
                    Some(BackendConfig::Embeddings(ModelBackendConfig::new(name)))
                }
                Engine::Candle if spec.serves(Workload::Transcription) => {
                    Some(BackendConfig::Transcription(ModelBackendConfig::new(name)))
                }
                Engine::OnnxRuntime if onnx && spec.serves(Workload::Speech) => {
                    Some(BackendConfig::Piper(PiperBackendConfig::new(name)))
                }
                Engine::OnnxRuntime if onnx && spec.serves(Workload::Chat) => {
                    Some(BackendConfig::Ocr(ModelBackendConfig::new(name)))
                }
                Engine::OnnxRuntime if onnx && spec.serves(Workload::ImageGeneration) => {
                    Some(BackendConfig::Terrain(ModelBackendConfig::new(name)))
                }
                _ => None,
            }
        })
        .collect()
}

/// [`pulled`], or what to do when nothing is.
pub fn pulled_or_explain(models: &ModelStore) -> Result<Vec<BackendConfig>, BuildError> {
    let found = pulled(models);
    if found.is_empty() {
        return Err(BuildError::NothingPulled {
            models_dir: models.dir().to_owned(),
            available: catalog_names(),
        });
    }
    Ok(found)
}

/// The model names a backend list serves, for logs and messages.
pub fn model_names(configs: &[BackendConfig]) -> Vec<String> {
    configs
        .iter()
        .flat_map(|c| match c {
            BackendConfig::Upstream(u) => u.all_models().cloned().collect(),
            BackendConfig::Llama(l) => vec![l.model.clone()],
            BackendConfig::Embeddings(e)
            | BackendConfig::Transcription(e)
            | BackendConfig::Ocr(e)
            | BackendConfig::Terrain(e) => {
                vec![e.model.clone()]
            }
            BackendConfig::Piper(p) => vec![p.model.clone()],
            BackendConfig::Comfyui(c) => vec![c.model.clone()],
            BackendConfig::Automatic1111(a) => vec![a.model.clone()],
            BackendConfig::Espeak(_) => vec![super::voice::MODEL.to_owned()],
            BackendConfig::Fetch(_) => vec![stacknet_api::request::fetch::MODEL.to_owned()],
            BackendConfig::Search(_) => vec![stacknet_api::request::search::MODEL.to_owned()],
            BackendConfig::Mcp(m) => vec![stacknet_api::request::tool::offered_name(&m.name, "*")],
            BackendConfig::Sandbox(s) => s.languages.clone().unwrap_or_else(|| {
                stacknet_api::request::code::LANGUAGES
                    .iter()
                    .map(|(l, _)| (*l).to_owned())
                    .collect()
            }),
        })
        .collect()
}

async fn build_one(config: &BackendConfig, models: &ModelStore) -> Result<Arc<dyn Backend>, BuildError> {
    match config {
        BackendConfig::Upstream(upstream) => {
            if upstream.all_models().next().is_none() {
                return Err(BuildError::UpstreamWithoutModels {
                    base_url: upstream.base_url.clone(),
                });
            }
            Ok(Arc::new(OpenAiUpstream::new(upstream)?))
        }
        BackendConfig::Llama(llama) => {
            let (spec, path) = pulled_model(models, &llama.model, config.kind(), Workload::Chat)?;
            let mut load = LlamaConfig::new(&spec.name, path, pinned_sha256(spec)?);
            if let Some(threads) = llama.threads {
                load.threads = threads.max(1);
            }
            if let Some(context) = llama.context_tokens {
                load.context_tokens = context;
            }
            let chat = blocking(move || LlamaChat::load(load)).await?;
            Ok(Arc::new(chat))
        }
        BackendConfig::Embeddings(embed) => {
            let (spec, _) = pulled_model(models, &embed.model, config.kind(), Workload::Embedding)?;
            let threads = embed.threads.unwrap_or_else(every_core);
            let store = models.clone();
            let loaded = blocking(move || CandleEmbeddings::from_store(&store, spec, threads)).await?;
            Ok(Arc::new(loaded))
        }
        BackendConfig::Transcription(stt) => {
            let (spec, dir) = pulled_model(models, &stt.model, config.kind(), Workload::Transcription)?;
            let threads = stt.threads.unwrap_or_else(every_core);
            let loaded = blocking(move || Whisper::load(&dir, spec, threads)).await?;
            Ok(Arc::new(loaded))
        }
        BackendConfig::Piper(piper) => {
            let (spec, dir) = pulled_model(models, &piper.model, config.kind(), Workload::Speech)?;
            let runtime = Runtime::from_store(models)?;
            let threads = piper.threads.unwrap_or_else(every_core);
            let (espeak, natural) = (piper.espeak.clone(), piper.natural);
            let loaded =
                blocking(move || PiperVoice::load(runtime, &dir, spec, threads, espeak, natural)).await?;
            Ok(Arc::new(loaded))
        }
        BackendConfig::Ocr(ocr) => {
            let (spec, dir) = pulled_model(models, &ocr.model, config.kind(), Workload::Chat)?;
            let runtime = Runtime::from_store(models)?;
            let threads = ocr.threads.unwrap_or_else(every_core);
            let images = super::images::fetcher()?;
            let loaded = blocking(move || Ocr::load(runtime, &dir, spec, threads, images)).await?;
            Ok(Arc::new(loaded))
        }
        BackendConfig::Terrain(terrain) => {
            let (spec, path) =
                pulled_model(models, &terrain.model, config.kind(), Workload::ImageGeneration)?;
            let runtime = Runtime::from_store(models)?;
            let threads = terrain.threads.unwrap_or_else(every_core);
            let loaded = blocking(move || Terrain::load(runtime, &path, spec, threads)).await?;
            Ok(Arc::new(loaded))
        }
        BackendConfig::Comfyui(comfy) => Ok(Arc::new(ComfyUi::new(comfy)?)),
        BackendConfig::Automatic1111(a1111) => Ok(Arc::new(Automatic1111::new(a1111)?)),
        BackendConfig::Espeak(espeak) => Ok(Arc::new(EspeakVoice::start(espeak.program.clone()).await?)),
        BackendConfig::Sandbox(sandbox) => Ok(Arc::new(Sandbox::start(sandbox).await?)),
        BackendConfig::Fetch(fetch) => {
            let defaults = FetchPolicy::default();
            let policy = FetchPolicy {
                max_bytes: fetch.max_bytes.unwrap_or(defaults.max_bytes),
                timeout: fetch
                    .timeout_ms
                    .map_or(defaults.timeout, std::time::Duration::from_millis),
                max_redirects: fetch.max_redirects.unwrap_or(defaults.max_redirects),
                user_agent: defaults.user_agent,
            };
            let fetcher = Fetcher::new(policy).map_err(|e| BackendError::Setup(e.to_string()))?;
            Ok(Arc::new(WebFetch::new(fetcher)))
        }
        BackendConfig::Search(search) => Ok(Arc::new(WebSearch::new(search.clone())?)),
        BackendConfig::Mcp(mcp) => Ok(Arc::new(McpTools::start(mcp).await?)),
    }
}

/// The catalog entry called `name`, checked to serve `workload` and to be pulled, with the path
/// a backend loads.
pub(crate) fn pulled_model(
    models: &ModelStore,
    name: &str,
    kind: &'static str,
    workload: Workload,
) -> Result<(&'static ModelSpec, PathBuf), BuildError> {
    let spec = models::find(name).ok_or_else(|| BuildError::UnknownModel {
        name: name.to_owned(),
        known: catalog_names(),
    })?;
    if !spec.serves(workload) {
        return Err(BuildError::WrongWorkload {
            name: name.to_owned(),
            kind,
            workload,
        });
    }
    let runs_on = match kind {
        "llama" => Engine::LlamaCpp,
        "piper" | "ocr" | "terrain" => Engine::OnnxRuntime,
        _ => Engine::Candle,
    };
    if spec.engine != runs_on {
        return Err(BuildError::WrongEngine {
            name: name.to_owned(),
            kind,
            engine: spec.engine,
        });
    }
    let path = models.path_of(spec).ok_or_else(|| BuildError::NotPulled {
        name: name.to_owned(),
        models_dir: models.dir().to_owned(),
    })?;
    Ok((spec, path))
}

/// The pinned hash of a one-file model (a GGUF), which offers and paperwork carry.
pub(crate) fn pinned_sha256(spec: &ModelSpec) -> Result<Sha256Digest, BuildError> {
    let setup = |why: &str| BuildError::Backend(BackendError::Setup(format!("model {}: {why}", spec.name)));
    match spec.files.as_slice() {
        [only] => only.sha256.parse().map_err(|_| setup("bad pinned sha256")),
        _ => Err(setup("a llama.cpp model is one GGUF file")),
    }
}

/// The models of the catalog (not the runtime library).
fn catalog_names() -> Vec<String> {
    models::catalog()
        .iter()
        .filter(|m| m.engine != Engine::Library)
        .map(|m| m.name.clone())
        .collect()
}

fn every_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs a model load (which reads hundreds of megabytes) off the async workers.
async fn blocking<T: Send + 'static>(
    load: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BuildError> {
    let loaded = tokio::task::spawn_blocking(load)
        .await
        .map_err(|e| BackendError::Setup(format!("the model load did not finish: {e}")))?;
    Ok(loaded?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    fn llama(model: &str) -> BackendConfig {
        BackendConfig::Llama(LlamaBackendConfig::new(model))
    }

    async fn refused(configs: &[BackendConfig], models: &ModelStore) -> String {
        build(configs, models).await.err().unwrap().to_string()
    }

    #[tokio::test]
    async fn one_upstream_is_served_as_itself() {
        let models = ModelStore::new("/nonexistent");
        let upstream = UpstreamConfig::new("http://127.0.0.1:9/v1", vec!["m".to_owned()]);
        let backend = build(&[BackendConfig::Upstream(upstream)], &models)
            .await
            .unwrap();
        let offers = backend.models();
        assert_eq!(offers.len(), 1);
        assert_eq!(
            (offers[0].name.as_str(), offers[0].backend.as_str()),
            ("m", "openai-upstream")
        );
    }

    #[tokio::test]
    async fn refusals_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelStore::new(dir.path());
        let shown = dir.path().display();
        assert_eq!(refused(&[], &models).await, "no backend is configured");
        assert!(refused(&[llama("gpt-5")], &models).await.starts_with(
            "no model \"gpt-5\" in the catalog; known: smollm2-135m-instruct, all-minilm-l6-v2"
        ));
        assert_eq!(
            refused(&[llama("all-minilm-l6-v2")], &models).await,
            "all-minilm-l6-v2 does not serve Chat, which a `kind = \"llama\"` backend needs"
        );
        assert_eq!(
            refused(&[llama("smollm2-135m-instruct")], &models).await,
            format!(
                "model smollm2-135m-instruct is not in {shown} \
                 (run `stacknet models pull smollm2-135m-instruct --models-dir {shown}`)"
            )
        );
        let upstream = UpstreamConfig::new("http://u/v1", Vec::new());
        assert_eq!(
            refused(&[BackendConfig::Upstream(upstream)], &models).await,
            "upstream http://u/v1 names no model; list the models it serves"
        );
        let two = |name: &str| {
            BackendConfig::Upstream(UpstreamConfig::new(
                format!("http://{name}/v1"),
                vec!["m".to_owned()],
            ))
        };
        assert!(refused(&[two("a"), two("b")], &models)
            .await
            .contains("model \"m\" is offered by two backends"));
    }

    #[test]
    fn nothing_pulled_names_the_pull_command_and_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelStore::new(dir.path());
        assert!(pulled(&models).is_empty());
        let err = pulled_or_explain(&models).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "`stacknet models pull <name> --models-dir {}`",
                dir.path().display()
            )),
            "{err}"
        );
        assert!(
            err.contains(
                "(the catalog: smollm2-135m-instruct, all-minilm-l6-v2, whisper-tiny-en, gemma-3-270m, \
                 piper-en-us-joe-medium, pp-ocrv6-tiny, terrain-diffusion-128)"
            ),
            "{err}"
        );
    }
}
