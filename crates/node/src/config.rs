//! Node configuration: what an operator writes in TOML (or the CLI fills in from flags), and the
//! runtime options a [`crate::Node`] needs, which tests and an in-process `stacknet up` build directly.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use stacknet_protocol::PublicKey;

/// Tasks a node with a built-in backend runs at once unless configured otherwise: a model on the
/// node's own CPU or GPU gains little from more sequences at once.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 4;
/// Tasks a node whose backends are all upstream servers runs at once unless configured otherwise.
/// Those servers batch and queue themselves (vLLM runs up to 256 sequences, Ollama and llama.cpp's
/// server queue what their slots cannot take), so the node passes on what the hub assigns rather
/// than refusing it at 4; the hub queues beyond this.
pub const DEFAULT_UPSTREAM_MAX_CONCURRENCY: u32 = 64;
/// The hardware class reported in paperwork for an upstream server whose hardware the node cannot see.
pub const DEFAULT_HARDWARE: &str = "upstream";
/// How long one upstream request (including its whole stream) may take.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 300;
/// Heartbeat intervals of silence from the hub after which the connection counts as dead.
pub const DEFAULT_HEARTBEAT_MISSES: u32 = 3;
/// How long shutdown waits for in-flight tasks to finish and deliver their paperwork.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;
/// File names inside the data directory.
pub const KEY_FILE_NAME: &str = "node.key";
pub const WALLET_FILE_NAME: &str = "wallet.sqlite";
pub const MODELS_DIR_NAME: &str = "models";

/// An upstream API key. Never printed: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that sends it (the `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(ApiKey)
    }
}

/// The OpenAI-compatible server the node forwards tasks to (Ollama, vLLM, llama.cpp server, OpenAI...).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// The chat (and legacy completion) models the node advertises; the upstream must serve them
    /// under the same names.
    #[serde(default)]
    pub models: Vec<String>,
    /// Text-to-speech models it serves at `/audio/speech` (OpenAI's API: speaches, LocalAI,
    /// OpenAI itself).
    #[serde(default)]
    pub speech_models: Vec<String>,
    /// Speech-to-text models it serves at `/audio/transcriptions`.
    #[serde(default)]
    pub transcription_models: Vec<String>,
    /// Image models it serves at `/images/generations` (OpenAI's images API, answering `b64_json`).
    #[serde(default)]
    pub image_models: Vec<String>,
    /// Video models it serves at `/videos` (OpenAI's videos API: a job created, polled, and its
    /// file downloaded).
    #[serde(default)]
    pub video_models: Vec<String>,
    #[serde(default = "default_upstream_timeout_secs")]
    pub timeout_secs: u64,
}

impl UpstreamConfig {
    pub fn new(base_url: impl Into<String>, models: Vec<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            models,
            speech_models: Vec::new(),
            transcription_models: Vec::new(),
            image_models: Vec::new(),
            video_models: Vec::new(),
            timeout_secs: DEFAULT_UPSTREAM_TIMEOUT_SECS,
        }
    }

    /// Every model name it serves, whatever the workload.
    pub fn all_models(&self) -> impl Iterator<Item = &String> {
        self.models
            .iter()
            .chain(&self.speech_models)
            .chain(&self.transcription_models)
            .chain(&self.image_models)
            .chain(&self.video_models)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// One thing that runs the node's tasks, as a `[[backend]]` table: `kind` says which.
///
/// ```toml
/// [[backend]]
/// kind = "llama"                      # a built-in GGUF chat model on llama.cpp (CPU)
/// model = "smollm2-135m-instruct"     # a catalog name (`stacknet models list`)
/// # threads = 4
/// # context_tokens = 2048
///
/// [[backend]]
/// kind = "embeddings"                 # a built-in embeddings model on candle (CPU)
/// model = "all-minilm-l6-v2"
///
/// [[backend]]
/// kind = "transcription"              # built-in speech to text on candle (CPU)
/// model = "whisper-tiny-en"
///
/// [[backend]]
/// kind = "piper"                      # built-in neural text to speech on ONNX Runtime
/// model = "piper-en-us-joe-medium"    # (needs `onnxruntime` pulled too)
///
/// [[backend]]
/// kind = "ocr"                        # built-in OCR: reads the images of chat requests
/// model = "pp-ocrv6-tiny"
///
/// [[backend]]
/// kind = "terrain"                    # built-in image generation: terrain, NOT text to image
/// model = "terrain-diffusion-128"
///
/// [[backend]]
/// kind = "comfyui"                    # image generation by a ComfyUI server
/// base_url = "http://127.0.0.1:8188"
/// model = "sdxl-turbo"                # the name the node offers it under
/// workflow = "/etc/stacknet/sdxl.json"  # API format, with "{{prompt}}", "{{seed}}", ...
/// # edit_workflow = "/etc/stacknet/sdxl-img2img.json"  # edits: LoadImage of "{{image}}"
///
/// [[backend]]
/// kind = "automatic1111"              # txt2img and img2img of an AUTOMATIC1111 server (--api)
/// base_url = "http://127.0.0.1:7860"
/// model = "sd15"                      # the name the node offers it under
/// # checkpoint = "v1-5-pruned-emaonly.safetensors"
///
/// [[backend]]
/// kind = "espeak"                     # built-in text to speech: eSpeak NG, model "espeak-ng"
///
/// [[backend]]
/// kind = "upstream"                   # an OpenAI-compatible server
/// base_url = "http://127.0.0.1:11434/v1"
/// models = ["llama3.2"]               # chat and completions
/// # speech_models = ["tts-1"]         # /audio/speech
/// # transcription_models = ["whisper-1"]  # /audio/transcriptions
/// # image_models = ["dall-e-2"]       # /images/generations and /images/edits
/// # video_models = ["sora-2"]         # /videos (jobs, polled)
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendConfig {
    Upstream(UpstreamConfig),
    Llama(LlamaBackendConfig),
    Embeddings(ModelBackendConfig),
    Transcription(ModelBackendConfig),
    /// The fallback voice: text to speech with eSpeak NG.
    Espeak(EspeakBackendConfig),
    /// A neural Piper voice on ONNX Runtime.
    Piper(PiperBackendConfig),
    /// Built-in OCR on ONNX Runtime, answering chat requests with images.
    Ocr(ModelBackendConfig),
    /// The built-in terrain image model on ONNX Runtime (not text to image).
    Terrain(ModelBackendConfig),
    /// Image generation by a ComfyUI server, with the operator's workflow.
    Comfyui(ComfyUiConfig),
    /// Image generation and edits by an AUTOMATIC1111 server (its API).
    Automatic1111(Automatic1111Config),
    Sandbox(SandboxBackendConfig),
    Fetch(FetchBackendConfig),
    Search(SearchBackendConfig),
    Mcp(McpBackendConfig),
}

impl BackendConfig {
    /// The `kind` it is written with in TOML, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Upstream(_) => "upstream",
            BackendConfig::Llama(_) => "llama",
            BackendConfig::Embeddings(_) => "embeddings",
            BackendConfig::Transcription(_) => "transcription",
            BackendConfig::Espeak(_) => "espeak",
            BackendConfig::Piper(_) => "piper",
            BackendConfig::Ocr(_) => "ocr",
            BackendConfig::Terrain(_) => "terrain",
            BackendConfig::Comfyui(_) => "comfyui",
            BackendConfig::Automatic1111(_) => "automatic1111",
            BackendConfig::Sandbox(_) => "sandbox",
            BackendConfig::Fetch(_) => "fetch",
            BackendConfig::Search(_) => "search",
            BackendConfig::Mcp(_) => "mcp",
        }
    }
}

/// A built-in chat and completion model, served by llama.cpp from the models directory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaBackendConfig {
    /// A catalog name that serves chat (`smollm2-135m-instruct`); pulled with `stacknet models pull`.
    pub model: String,
    /// llama.cpp's threads [default: every core].
    #[serde(default)]
    pub threads: Option<usize>,
    /// The context size [default: `llama::DEFAULT_CONTEXT_TOKENS`].
    #[serde(default)]
    pub context_tokens: Option<u32>,
}

impl LlamaBackendConfig {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            threads: None,
            context_tokens: None,
        }
    }
}

/// Sandboxed code execution (bubblewrap and cgroups; see `backend::sandbox`). Every field is
/// optional; limits are the most a request may ask for (requests ask for less, or get the API's
/// defaults).
///
/// ```toml
/// [[backend]]
/// kind = "sandbox"
/// languages = ["python", "bash"]   # default: each of python, bash, javascript installed
/// max_run_timeout_ms = 60000
/// max_memory_bytes = 1073741824
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxBackendConfig {
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// The longest wall time a run may ask for [default: 60000].
    #[serde(default)]
    pub max_run_timeout_ms: Option<u64>,
    /// The most memory a run may ask for [default: 1 GiB].
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// Processes and threads in one run [default: 64].
    #[serde(default)]
    pub max_processes: Option<u64>,
    /// Bytes of stdout, and of stderr, kept [default: 65536; at most 131072].
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// The largest file a run may write [default: 16 MiB].
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// The size of each of `/work` and `/tmp` in a run [default: 64 MiB].
    #[serde(default)]
    pub work_dir_bytes: Option<u64>,
    /// CPU share of one run, in thousandths of a core [default: 1000].
    #[serde(default)]
    pub millicpus: Option<u64>,
    /// Runs at once [default: 4]; a node running as root gives each its own uid.
    #[serde(default)]
    pub slots: Option<usize>,
    /// The uid of the first slot when the node runs as root [default: 61000].
    #[serde(default)]
    pub first_uid: Option<u32>,
    /// Sandboxes made ahead of runs, each holding a slot while it waits [default: 1; at most
    /// `slots`; 0: every run makes its own, and no language is reported warm].
    #[serde(default)]
    pub warm: Option<usize>,
    /// The bwrap program [default: found in /usr/bin].
    #[serde(default)]
    pub bwrap: Option<PathBuf>,
    /// Where the programs' files wait for their runs [default: a directory under the system's
    /// temporary directory].
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

/// Page fetch through the SSRF-safe fetcher (see `fetch`): public addresses only, robots.txt
/// honoured. Every field is optional.
///
/// ```toml
/// [[backend]]
/// kind = "fetch"
/// max_bytes = 5242880
/// timeout_ms = 15000
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchBackendConfig {
    /// Bytes of a page read, at most [default: 5 MiB].
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// The whole fetch, redirects included [default: 15000].
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Redirects followed [default: 5].
    #[serde(default)]
    pub max_redirects: Option<usize>,
}

/// Web search through the operator's engine.
///
/// ```toml
/// [[backend]]
/// kind = "search"
/// engine = "searxng"                  # or "brave", "tavily" (with api_key)
/// base_url = "http://127.0.0.1:8888"  # searxng: the instance, with `json` among its formats
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBackendConfig {
    pub engine: SearchEngine,
    /// The engine's address: required for SearXNG; Brave's and Tavily's public APIs by default.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// One query at most [default: 10000].
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// An MCP server the operator installed (stdio transport), run in the sandbox: a fresh sandbox for
/// each call (no state survives between callers), none of the node's files in it but what `binds`
/// names, no network. Its tools are offered as `<name>__<tool>`.
///
/// ```toml
/// [[backend]]
/// kind = "mcp"
/// name = "notes"
/// command = ["/usr/bin/python3", "/opt/mcp/notes/server.py"]
/// binds = ["/opt/mcp/notes"]          # read-only, at the same place; readable by the sandbox's uids
/// env = { NOTES_LIMIT = "10" }
/// # timeout_ms = 30000
/// # [backend.sandbox]                 # the sandbox's limits, as for kind = "sandbox"
/// # first_uid = 61100
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpBackendConfig {
    /// The server's name on the network: 1 to 32 of lowercase letters, digits and `-`.
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Host paths the server sees, read-only, at the same place.
    #[serde(default)]
    pub binds: Vec<PathBuf>,
    /// Environment variables of the server (the sandbox sets `PATH`, `HOME`, `TMPDIR`, `LANG`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// One call at most, the server's start included [default: 30000].
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The sandbox's limits [default: as for `kind = "sandbox"`; `languages` is not used].
    #[serde(default)]
    pub sandbox: SandboxBackendConfig,
}

/// The `[[backend]] kind = "comfyui"` settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComfyUiConfig {
    /// The server, e.g. `http://127.0.0.1:8188`.
    pub base_url: String,
    /// The model name the node offers for image generation.
    pub model: String,
    /// The workflow in ComfyUI's API format, with placeholders.
    pub workflow: std::path::PathBuf,
    /// A workflow for image edits (`/v1/images/edits`), with `"{{image}}"` (and, for a mask,
    /// `"{{mask}}"`) where a `LoadImage` node names its file [default: none; edits not offered].
    #[serde(default)]
    pub edit_workflow: Option<std::path::PathBuf>,
    /// Seconds one job may take [default: 600].
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The `[[backend]] kind = "automatic1111"` settings: an AUTOMATIC1111 web UI (or Forge, SD.Next)
/// started with `--api`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Automatic1111Config {
    /// The server, e.g. `http://127.0.0.1:7860`.
    pub base_url: String,
    /// The model name the node offers for image generation and edits.
    pub model: String,
    /// The checkpoint to render with (`sd_model_checkpoint`) [default: the one loaded].
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Sampling steps [default: the server's].
    #[serde(default)]
    pub steps: Option<u32>,
    /// The sampler's name [default: the server's].
    #[serde(default)]
    pub sampler: Option<String>,
    /// How much of an edit's input is redrawn, 0 to 1 [default: 0.75].
    #[serde(default)]
    pub denoising_strength: Option<f64>,
    /// Seconds one job may take [default: 600].
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// A search engine a node can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchEngine {
    Searxng,
    Brave,
    Tavily,
}

/// The built-in fallback voice (`kind = "espeak"`): eSpeak NG, run as a program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspeakBackendConfig {
    /// The program [default: `espeak-ng` on the PATH].
    #[serde(default)]
    pub program: Option<std::path::PathBuf>,
}

/// A neural Piper voice (`kind = "piper"`) on ONNX Runtime, phonemized by eSpeak NG.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiperBackendConfig {
    /// A catalog name that serves speech (`piper-en-us-joe-medium`).
    pub model: String,
    /// Inference threads [default: every core].
    #[serde(default)]
    pub threads: Option<usize>,
    /// The phonemizer program [default: `espeak-ng` on the PATH].
    #[serde(default)]
    pub espeak: Option<std::path::PathBuf>,
    /// Use the voice's trained noise (livelier; the same request no longer gives the same bytes, so
    /// validators cannot re-run it) [default: false, deterministic].
    #[serde(default)]
    pub natural: bool,
}

impl PiperBackendConfig {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            threads: None,
            espeak: None,
            natural: false,
        }
    }
}

/// A built-in model served from the models directory: embeddings (`kind = "embeddings"`) or speech
/// to text (`kind = "transcription"`) on candle, OCR (`kind = "ocr"`) and terrain images (`kind =
/// "terrain"`) on ONNX Runtime.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBackendConfig {
    /// A catalog name that serves the kind's workload (`all-minilm-l6-v2`, `whisper-tiny-en`,
    /// `pp-ocrv6-tiny`).
    pub model: String,
    /// Inference threads [default: every core].
    #[serde(default)]
    pub threads: Option<usize>,
}

impl ModelBackendConfig {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            threads: None,
        }
    }
}

/// Everything `stacknet node` needs, as read from TOML:
///
/// ```toml
/// hub = "https://hub.example"
/// data_dir = "/var/lib/stacknet"
/// # hub_key = "8a88e3dd..."   # refuse any other hub
/// # models_dir = "/var/lib/stacknet/models"
/// # max_concurrency = 4   # default: 64 when every backend is an upstream server, else 4
///
/// [[backend]]
/// kind = "llama"
/// model = "smollm2-135m-instruct"
///
/// [[backend]]
/// kind = "upstream"
/// base_url = "http://127.0.0.1:11434/v1"
/// models = ["llama3.2"]
/// ```
///
/// An `[upstream]` table (the older form) is shorthand for one `kind = "upstream"` backend, put
/// before any `[[backend]]`. With no backend at all, the node serves the built-in models already
/// pulled into the models directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "NodeConfigToml")]
pub struct NodeConfig {
    /// The hub's base URL (`http(s)://` or `ws(s)://`); the node connects to its node gateway.
    pub hub: String,
    /// Holds the wallet and, unless `key_file` says otherwise, the Node Key.
    pub data_dir: PathBuf,
    /// Defaults to `<data_dir>/node.key`; created on first start.
    pub key_file: Option<PathBuf>,
    /// When set, the node talks only to the hub holding this key.
    pub hub_key: Option<PublicKey>,
    /// Tasks run at once; `None`: [`DEFAULT_UPSTREAM_MAX_CONCURRENCY`] when every backend is an
    /// upstream server, else [`DEFAULT_MAX_CONCURRENCY`] (see [`Self::max_concurrency`]).
    pub max_concurrency: Option<u32>,
    /// Hardware class written into paperwork.
    pub hardware: String,
    pub heartbeat_misses: u32,
    pub drain_timeout_secs: u64,
    /// Where built-in models are pulled to and loaded from; defaults to `<data_dir>/models`.
    pub models_dir: Option<PathBuf>,
    /// What runs the tasks, combined into one backend; empty: the built-in models already pulled.
    pub backends: Vec<BackendConfig>,
}

/// The TOML as written; [`NodeConfig`] is what it means (the `[upstream]` shorthand folded in).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeConfigToml {
    hub: String,
    data_dir: PathBuf,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    hub_key: Option<PublicKey>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default = "default_hardware")]
    hardware: String,
    #[serde(default = "default_heartbeat_misses")]
    heartbeat_misses: u32,
    #[serde(default = "default_drain_timeout_secs")]
    drain_timeout_secs: u64,
    #[serde(default)]
    models_dir: Option<PathBuf>,
    #[serde(default)]
    upstream: Option<UpstreamConfig>,
    #[serde(default)]
    backend: Vec<BackendConfig>,
}

impl From<NodeConfigToml> for NodeConfig {
    fn from(t: NodeConfigToml) -> Self {
        let backends = t
            .upstream
            .map(BackendConfig::Upstream)
            .into_iter()
            .chain(t.backend)
            .collect();
        Self {
            hub: t.hub,
            data_dir: t.data_dir,
            key_file: t.key_file,
            hub_key: t.hub_key,
            max_concurrency: t.max_concurrency,
            hardware: t.hardware,
            heartbeat_misses: t.heartbeat_misses,
            drain_timeout_secs: t.drain_timeout_secs,
            models_dir: t.models_dir,
            backends,
        }
    }
}

impl NodeConfig {
    /// Defaults for everything but the hub, the data directory and the backends.
    pub fn new(hub: impl Into<String>, data_dir: impl Into<PathBuf>, backends: Vec<BackendConfig>) -> Self {
        Self {
            hub: hub.into(),
            data_dir: data_dir.into(),
            key_file: None,
            hub_key: None,
            max_concurrency: None,
            hardware: DEFAULT_HARDWARE.to_owned(),
            heartbeat_misses: DEFAULT_HEARTBEAT_MISSES,
            drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
            models_dir: None,
            backends,
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(KEY_FILE_NAME))
    }

    pub fn wallet_path(&self) -> PathBuf {
        wallet_path(&self.data_dir)
    }

    /// Where built-in models live: `models_dir`, else `<data_dir>/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join(MODELS_DIR_NAME))
    }

    /// Tasks run at once: as configured, else the default for the backends.
    pub fn max_concurrency(&self) -> u32 {
        self.max_concurrency
            .unwrap_or_else(|| default_max_concurrency(&self.backends))
    }

    /// The runtime options of the node itself (everything but files and the backend).
    pub fn node_options(&self) -> NodeOptions {
        NodeOptions {
            hub_url: self.hub.clone(),
            hub_key: self.hub_key,
            max_concurrency: self.max_concurrency(),
            hardware: self.hardware.clone(),
            heartbeat_misses: self.heartbeat_misses,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
        }
    }
}

/// Tasks run at once by default with `backends`: [`DEFAULT_UPSTREAM_MAX_CONCURRENCY`] when every
/// one is an upstream server, else [`DEFAULT_MAX_CONCURRENCY`].
pub fn default_max_concurrency(backends: &[BackendConfig]) -> u32 {
    let all_upstream =
        !backends.is_empty() && backends.iter().all(|b| matches!(b, BackendConfig::Upstream(_)));
    if all_upstream {
        DEFAULT_UPSTREAM_MAX_CONCURRENCY
    } else {
        DEFAULT_MAX_CONCURRENCY
    }
}

/// Where the wallet lives in a data directory.
pub fn wallet_path(data_dir: &Path) -> PathBuf {
    data_dir.join(WALLET_FILE_NAME)
}

/// What a running [`crate::Node`] needs besides its key, wallet and backend.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The hub's base URL, as in [`NodeConfig::hub`].
    pub hub_url: String,
    pub hub_key: Option<PublicKey>,
    pub max_concurrency: u32,
    pub hardware: String,
    pub heartbeat_misses: u32,
    pub drain_timeout: Duration,
}

impl NodeOptions {
    /// Defaults for everything but the hub.
    pub fn new(hub_url: impl Into<String>) -> Self {
        Self {
            hub_url: hub_url.into(),
            hub_key: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            hardware: DEFAULT_HARDWARE.to_owned(),
            heartbeat_misses: DEFAULT_HEARTBEAT_MISSES,
            drain_timeout: Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS),
        }
    }
}

fn default_hardware() -> String {
    DEFAULT_HARDWARE.to_owned()
}

fn default_heartbeat_misses() -> u32 {
    DEFAULT_HEARTBEAT_MISSES
}

fn default_drain_timeout_secs() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_SECS
}

fn default_upstream_timeout_secs() -> u64 {
    DEFAULT_UPSTREAM_TIMEOUT_SECS
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn upstream(config: &NodeConfig, i: usize) -> &UpstreamConfig {
        match &config.backends[i] {
            BackendConfig::Upstream(u) => u,
            other => panic!("backend {i} is {other:?}"),
        }
    }

    #[test]
    fn the_upstream_table_is_one_upstream_backend_with_defaults_and_a_redacted_key() {
        let config = NodeConfig::from_toml(
            r#"
            hub = "http://127.0.0.1:8080"
            data_dir = "/tmp/node"
            [upstream]
            base_url = "http://127.0.0.1:11434/v1"
            api_key = "sk-very-secret"
            models = ["llama3.2"]
            "#,
        )
        .unwrap();
        assert_eq!(
            config.max_concurrency(),
            DEFAULT_UPSTREAM_MAX_CONCURRENCY,
            "upstream only"
        );
        assert_eq!(config.hardware, "upstream");
        assert_eq!(config.backends.len(), 1);
        assert_eq!(upstream(&config, 0).timeout_secs, 300);
        assert_eq!(upstream(&config, 0).models, ["llama3.2"]);
        assert_eq!(config.key_path(), PathBuf::from("/tmp/node/node.key"));
        assert_eq!(config.models_dir(), PathBuf::from("/tmp/node/models"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert_eq!(
            upstream(&config, 0).api_key.as_ref().unwrap().expose(),
            "sk-very-secret"
        );
    }

    #[test]
    fn a_backend_list_in_order_after_the_upstream_shorthand() {
        let config = NodeConfig::from_toml(
            r#"
            hub = "http://127.0.0.1:8080"
            data_dir = "/tmp/node"
            models_dir = "/srv/models"
            [upstream]
            base_url = "http://a/v1"
            models = ["a"]
            [[backend]]
            kind = "llama"
            model = "smollm2-135m-instruct"
            threads = 2
            context_tokens = 1024
            [[backend]]
            kind = "embeddings"
            model = "all-minilm-l6-v2"
            [[backend]]
            kind = "upstream"
            base_url = "http://b/v1"
            models = ["b"]
            timeout_secs = 5
            "#,
        )
        .unwrap();
        assert_eq!(config.models_dir(), PathBuf::from("/srv/models"));
        let kinds: Vec<_> = config.backends.iter().map(BackendConfig::kind).collect();
        assert_eq!(kinds, ["upstream", "llama", "embeddings", "upstream"]);
        assert_eq!(upstream(&config, 0).base_url, "http://a/v1");
        let BackendConfig::Llama(llama) = &config.backends[1] else {
            unreachable!()
        };
        assert_eq!(
            *llama,
            LlamaBackendConfig {
                model: "smollm2-135m-instruct".to_owned(),
                threads: Some(2),
                context_tokens: Some(1024)
            }
        );
        let BackendConfig::Embeddings(embed) = &config.backends[2] else {
            unreachable!()
        };
        assert_eq!(*embed, ModelBackendConfig::new("all-minilm-l6-v2"));
        assert_eq!(upstream(&config, 3).timeout_secs, 5);
    }

    #[test]
    fn no_backend_at_all_is_a_valid_config() {
        let config = NodeConfig::from_toml("hub = \"x\"\ndata_dir = \"y\"\n").unwrap();
        assert!(config.backends.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let refused = |toml: &str| NodeConfig::from_toml(toml).unwrap_err().to_string();
        let top = "hub = \"x\"\ndata_dir = \"y\"\n";
        let err = refused(&format!(
            "{top}hubb = 1\n[upstream]\nbase_url = \"u\"\nmodels = []\n"
        ));
        assert!(err.contains("unknown field `hubb`"), "{err}");
        let err = refused(&format!(
            "{top}[upstream]\nbase_url = \"u\"\nmodels = []\nmodel = \"m\"\n"
        ));
        assert!(err.contains("unknown field `model`"), "{err}");
        for backend in [
            "kind = \"llama\"\nmodel = \"m\"\ngpu_layers = 3",
            "kind = \"embeddings\"\nmodel = \"m\"\ncontext_tokens = 3",
            "kind = \"upstream\"\nbase_url = \"u\"\nmodels = []\nthreads = 3",
        ] {
            let err = refused(&format!("{top}[[backend]]\n{backend}\n"));
            assert!(err.contains("unknown field"), "{backend}: {err}");
        }
    }

    #[test]
    fn an_unknown_or_missing_kind_is_refused() {
        let top = "hub = \"x\"\ndata_dir = \"y\"\n[[backend]]\n";
        let err = NodeConfig::from_toml(&format!("{top}kind = \"whisper\"\nmodel = \"m\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown variant `whisper`, expected one of `upstream`, `llama`, `embeddings`"),
            "{err}"
        );
        let err = NodeConfig::from_toml(&format!("{top}model = \"m\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `kind`"), "{err}");
    }
}
