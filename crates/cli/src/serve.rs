//! `stacknet hub`, `stacknet node` and `stacknet up`: argument handling and wiring; the work is in
//! the hub and node libraries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use rand_core::RngCore;
use stacknet_hub::rules::NetworkRules;
use stacknet_hub::{Hub, HubConfig};
use stacknet_node::config::{
    ApiKey, BackendConfig, LlamaBackendConfig, ModelBackendConfig, NodeConfig, UpstreamConfig,
};
use stacknet_node::models::ModelStore;
use stacknet_protocol::keystore::restrict_to_owner;
use stacknet_protocol::{Amount, StackId, Timestamp};

use crate::keystore::default_data_dir;

#[derive(Args, Debug, Clone)]
pub struct HubArgs {
    /// Address to listen on.
    #[arg(long, env = "STACKNET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Holds hub.key, hub.db and admin.token [default: ~/.local/share/stacknet/hub]
    #[arg(long, env = "STACKNET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Token for the admin API [default: read from, or created in, <data-dir>/admin.token]
    #[arg(long, env = "STACKNET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "STACKNET_MAX_BODY_BYTES", default_value_t = stacknet_hub::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest upload accepted (image edits, transcriptions), in bytes.
    #[arg(long, env = "STACKNET_MAX_UPLOAD_BYTES", default_value_t = stacknet_hub::DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: usize,
    /// Requests in flight at once; more get 429.
    #[arg(long, env = "STACKNET_MAX_CONCURRENT_REQUESTS", default_value_t = stacknet_hub::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,
    /// Time a request may take in all, in milliseconds; then 504.
    #[arg(long, env = "STACKNET_REQUEST_TIMEOUT_MS", default_value_t = stacknet_hub::DEFAULT_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Time a video job may take, in milliseconds; then it fails (`timeout`).
    #[arg(long, env = "STACKNET_VIDEO_TIMEOUT_MS", default_value_t = stacknet_hub::videos::DEFAULT_VIDEO_TIMEOUT_MS)]
    pub video_timeout_ms: u64,
    /// How long the hub running a video job vouches for it between renewals, in milliseconds; a job
    /// whose lease lapsed (its hub stopped) is taken over by the next hub process that reads it.
    #[arg(long, env = "STACKNET_VIDEO_LEASE_MS", default_value_t = stacknet_hub::videos::DEFAULT_LEASE_MS)]
    pub video_lease_ms: u64,
    /// Most output bytes of one task that may wait for a client reading slower than its node
    /// writes; past it the task is cancelled (503 task_abandoned), so the node's other tasks go on.
    #[arg(long, env = "STACKNET_MAX_QUEUED_OUTPUT_BYTES", default_value_t = stacknet_hub::DEFAULT_MAX_QUEUED_OUTPUT_BYTES)]
    pub max_queued_output_bytes: u64,
    /// Requests that may wait per model while every node serving it is busy (each until a slot
    /// frees or its time-out); past it, 503 queue_full with Retry-After. 0: no queue.
    #[arg(long, env = "STACKNET_MAX_QUEUED_PER_MODEL", default_value_t = stacknet_hub::queue::DEFAULT_MAX_QUEUED_PER_MODEL)]
    pub max_queued_per_model: usize,
    /// The hub key file [default: <data-dir>/hub.key, created on first start]. Replicas of one
    /// network (several hubs on one PostgreSQL database) load the same one: the database keeps the
    /// key it was first opened with and refuses a hub with another.
    #[arg(long, env = "STACKNET_HUB_KEY_FILE")]
    pub hub_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub money: MoneyArgs,
}

/// The hub's database and money settings (shared by `stacknet hub` and `stacknet up`).
#[derive(Args, Debug, Clone)]
pub struct MoneyArgs {
    /// Where the registry, the paperwork log and the ledger live: sqlite://PATH or
    /// postgres://USER@HOST:PORT/DB[?schema=NAME] [default: sqlite://<data-dir>/hub.db]
    #[arg(long, env = "STACKNET_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Time after a task's acceptance before its paperwork may be filed, in milliseconds.
    #[arg(long, env = "STACKNET_CHALLENGE_WINDOW_MS", default_value_t = stacknet_hub::DEFAULT_CHALLENGE_WINDOW_MS)]
    pub challenge_window_ms: u64,
    /// How long after a request's time-out its escrow hold expires if nothing released it (after a
    /// crash), in milliseconds.
    #[arg(long, env = "STACKNET_HOLD_GRACE_MS", default_value_t = stacknet_hub::money::DEFAULT_HOLD_GRACE_MS)]
    pub hold_grace_ms: u64,
    /// The share of a referred Stack's top-ups its referrer earns (paid by the treasury), in basis points.
    #[arg(long, env = "STACKNET_REFERRAL_TOPUP_BPS", default_value_t = stacknet_hub::attribution::DEFAULT_REFERRAL_TOPUP_BPS,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub referral_topup_bps: u32,
    /// The Node Key market's transfer fee, in basis points of the price (half to the key's
    /// originator, half to the protocol).
    #[arg(long, env = "STACKNET_KEY_TRANSFER_FEE_BPS", default_value_t = stacknet_hub::market::DEFAULT_KEY_TRANSFER_FEE_BPS,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub key_transfer_fee_bps: u32,
    /// Output tokens assumed for a request without max_tokens when its maximum cost is held.
    #[arg(long, env = "STACKNET_DEFAULT_MAX_OUTPUT_TOKENS", default_value_t = stacknet_hub::DEFAULT_MAX_OUTPUT_TOKENS)]
    pub default_max_output_tokens: u64,
    /// HMAC secret of the payment provider's top-up webhook (POST /stacknet/v1/webhooks/payments).
    #[arg(long, env = "STACKNET_PAYMENTS_WEBHOOK_SECRET", hide_env_values = true)]
    pub payments_webhook_secret: Option<String>,
    /// The payout rail: URL that receives HMAC-signed payout requests.
    #[arg(long, env = "STACKNET_PAYOUT_WEBHOOK_URL")]
    pub payout_webhook_url: Option<String>,
    /// HMAC secret shared with the payout endpoint (signs requests and its confirmations).
    #[arg(long, env = "STACKNET_PAYOUT_WEBHOOK_SECRET", hide_env_values = true)]
    pub payout_webhook_secret: Option<String>,
    /// Delivery attempts of a payout webhook before the payout fails and its money returns.
    #[arg(long, env = "STACKNET_PAYOUT_MAX_ATTEMPTS", default_value_t = 6)]
    pub payout_max_attempts: u32,
    /// Wait before the second delivery attempt, in milliseconds; doubled each time.
    #[arg(long, env = "STACKNET_PAYOUT_BACKOFF_MS", default_value_t = 1_000)]
    pub payout_backoff_ms: u64,
    /// Micro-credits a node must have bonded to be routed tasks; 0 routes to every node (a private hub).
    #[arg(long, env = "STACKNET_MIN_WORKER_BOND", default_value_t = NetworkRules::default().min_worker_bond.micros())]
    pub min_worker_bond: i64,
    /// Micro-credits a validator must have bonded for its attestations to count.
    #[arg(long, env = "STACKNET_MIN_VALIDATOR_BOND", default_value_t = NetworkRules::default().min_validator_bond.micros())]
    pub min_validator_bond: i64,
    /// How long unbonded stake stays slashable before its key can withdraw it, in milliseconds.
    #[arg(long = "unbonding-period-ms", alias = "unbonding-period", env = "STACKNET_UNBONDING_PERIOD_MS",
          default_value_t = stacknet_hub::rules::DEFAULT_UNBONDING_PERIOD_MS)]
    pub unbonding_period_ms: u64,
    /// How long a conviction suspends a key (no tasks, attestations or probes), in milliseconds.
    #[arg(long = "suspension-ms", env = "STACKNET_SUSPENSION_MS",
          default_value_t = stacknet_hub::rules::DEFAULT_SUSPENSION_MS)]
    pub suspension_ms: u64,
}

impl HubArgs {
    fn config(&self, data_dir: PathBuf) -> Result<HubConfig> {
        let admin_token = match &self.admin_token {
            Some(t) => t.clone(),
            None => load_or_create_token(&data_dir.join("admin.token"))?,
        };
        let mut config = HubConfig::new(data_dir, admin_token);
        config.key_file = self.hub_key_file.clone();
        config.max_body_bytes = self.max_body_bytes;
        config.max_upload_bytes = self.max_upload_bytes;
        config.max_concurrent_requests = self.max_concurrent_requests;
        config.request_timeout_ms = self.request_timeout_ms;
        config.video_timeout_ms = self.video_timeout_ms;
        config.video_lease_ms = self.video_lease_ms;
        config.max_queued_output_bytes = self.max_queued_output_bytes;
        config.max_queued_per_model = self.max_queued_per_model;
        config.database = self.money.database.clone();
        config.challenge_window_ms = self.money.challenge_window_ms;
        config.hold_grace_ms = self.money.hold_grace_ms;
        config.referral_topup_bps = self.money.referral_topup_bps;
        config.key_transfer_fee_bps = self.money.key_transfer_fee_bps;
        config.default_max_output_tokens = self.money.default_max_output_tokens;
        config.payments_webhook_secret = self.money.payments_webhook_secret.clone();
        anyhow::ensure!(
            self.money.min_worker_bond >= 0 && self.money.min_validator_bond >= 0,
            "--min-worker-bond and --min-validator-bond must not be negative"
        );
        config.rules.min_worker_bond = Amount::from_micros(self.money.min_worker_bond);
        config.rules.min_validator_bond = Amount::from_micros(self.money.min_validator_bond);
        config.rules.unbonding_period_ms = self.money.unbonding_period_ms;
        config.rules.suspension_ms = self.money.suspension_ms;
        config.payout_rail = match (&self.money.payout_webhook_url, &self.money.payout_webhook_secret) {
            (Some(url), Some(secret)) => Some(stacknet_hub::PayoutRail {
                url: url.clone(),
                secret: secret.clone(),
                max_attempts: self.money.payout_max_attempts.max(1),
                first_backoff_ms: self.money.payout_backoff_ms,
            }),
            (None, None) => None,
            _ => anyhow::bail!("--payout-webhook-url and --payout-webhook-secret go together"),
        };
        Ok(config)
    }
}

/// A random admin token kept in a 0600 file, so the operator's CLI on the same machine finds it.
pub fn load_or_create_token(path: &Path) -> Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        // An existing token keeps working, but no longer readable by others.
        restrict_to_owner(path).with_context(|| format!("cannot make {} private", path.display()))?;
        return Ok(t.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    match opts.open(path) {
        Ok(mut f) => f.write_all(format!("{token}\n").as_bytes())?,
        // Created by a concurrent start: theirs wins.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(std::fs::read_to_string(path)?.trim().to_owned())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
    Ok(token)
}

#[derive(Args, Debug, Clone)]
pub struct UpstreamArgs {
    /// OpenAI-compatible server to forward tasks to, e.g. http://127.0.0.1:11434/v1 (Ollama).
    #[arg(long, env = "STACKNET_UPSTREAM")]
    pub upstream: Option<String>,
    /// API key for the upstream, if it needs one.
    #[arg(long, env = "STACKNET_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,
    /// Model names the upstream serves (repeat, or comma-separate).
    #[arg(long = "model", env = "STACKNET_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Text-to-speech models the upstream serves at /audio/speech (repeat, or comma-separate).
    #[arg(long = "speech-model", env = "STACKNET_SPEECH_MODELS", value_delimiter = ',')]
    pub speech_models: Vec<String>,
    /// Speech-to-text models the upstream serves at /audio/transcriptions (repeat, or comma-separate).
    #[arg(
        long = "transcription-model",
        env = "STACKNET_TRANSCRIPTION_MODELS",
        value_delimiter = ','
    )]
    pub transcription_models: Vec<String>,
    /// Image models the upstream serves at /images/generations (repeat, or comma-separate).
    #[arg(long = "image-model", env = "STACKNET_IMAGE_MODELS", value_delimiter = ',')]
    pub image_models: Vec<String>,
    /// Video models the upstream serves at /videos, OpenAI's videos API (repeat, or comma-separate).
    #[arg(long = "video-model", env = "STACKNET_VIDEO_MODELS", value_delimiter = ',')]
    pub video_models: Vec<String>,
    /// Tasks run at once.
    #[arg(long, env = "STACKNET_MAX_CONCURRENCY")]
    pub max_concurrency: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// A TOML file with the node's settings; flags and environment override it.
    #[arg(long, env = "STACKNET_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The hub's URL, e.g. https://hub.example or http://127.0.0.1:8080.
    #[arg(long, env = "STACKNET_HUB")]
    pub hub: Option<String>,
    /// The Node Key file [default: <data-dir>/node.key, created on first start]
    #[arg(long, env = "STACKNET_KEY")]
    pub key: Option<PathBuf>,
    /// Holds the wallet (and the key by default) [default: ~/.local/share/stacknet/node]
    #[arg(long, env = "STACKNET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Refuse any hub whose key is not this (hex).
    #[arg(long, env = "STACKNET_HUB_KEY")]
    pub hub_key: Option<String>,
    /// Where built-in models are loaded from [default: the config's models_dir, else
    /// <data_dir>/models of the config; without --config, where `stacknet models` pulls them:
    /// ~/.local/share/stacknet/models]
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Register the Node Key with this Stack referral code (ref_...) before connecting: that Stack
    /// is the node's referrer, credited in every later contract. Once per key; the same code
    /// again is harmless.
    #[arg(long, env = "STACKNET_REFERRAL_CODE")]
    pub referral_code: Option<String>,
    /// Serve the node's Prometheus metrics at http://ADDR/metrics (off by default: a node needs no
    /// open port otherwise; bind a loopback or private address).
    #[arg(long, env = "STACKNET_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

impl NodeArgs {
    /// The config file (or, without one, defaults), with flags and environment over it. With no
    /// backend anywhere, the node serves the built-in models already pulled.
    pub fn config(&self) -> Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                NodeConfig::from_toml(&text)
                    .with_context(|| format!("{} is not a valid node config", path.display()))?
            }
            None => {
                let hub = self
                    .hub
                    .clone()
                    .context("--hub is required (or a --config file with `hub`)")?;
                let data_dir = self
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| default_data_dir().join("node"));
                let mut config = NodeConfig::new(hub, data_dir, Vec::new());
                // The node's data directory is a subdirectory by default; its models are where
                // `stacknet models pull` puts them.
                config.models_dir = Some(default_data_dir().join("models"));
                config
            }
        };
        if let Some(h) = &self.hub {
            config.hub = h.clone();
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if self.key.is_some() {
            config.key_file = self.key.clone();
        }
        if let Some(d) = &self.models_dir {
            config.models_dir = Some(d.clone());
        }
        if let Some(k) = &self.hub_key {
            config.hub_key = Some(
                stacknet_protocol::PublicKey::from_hex(k).map_err(|e| anyhow::anyhow!("--hub-key: {e}"))?,
            );
        }
        if let Some(c) = self.upstream.max_concurrency {
            config.max_concurrency = Some(c);
        }
        self.upstream.apply(&mut config.backends)?;
        Ok(config)
    }
}

impl UpstreamArgs {
    /// The upstream flags over `backends`: they change the first upstream backend, or add one
    /// when there is none and `--upstream` names a server.
    fn apply(&self, backends: &mut Vec<BackendConfig>) -> Result<()> {
        let is_upstream = |b: &BackendConfig| matches!(b, BackendConfig::Upstream(_));
        if !backends.iter().any(is_upstream) {
            let Some(url) = &self.upstream else {
                anyhow::ensure!(
                    self.models.is_empty()
                        && self.speech_models.is_empty()
                        && self.transcription_models.is_empty()
                        && self.image_models.is_empty()
                        && self.video_models.is_empty()
                        && self.upstream_api_key.is_none(),
                    "--model, --speech-model, --transcription-model, --image-model, --video-model and --upstream-api-key go with \
                     --upstream URL (built-in models are named in [[backend]] tables of --config, or \
                     served as pulled)"
                );
                return Ok(());
            };
            backends.push(BackendConfig::Upstream(UpstreamConfig::new(
                url.clone(),
                Vec::new(),
            )));
        }
        let Some(BackendConfig::Upstream(upstream)) = backends.iter_mut().find(|b| is_upstream(b)) else {
            return Ok(());
        };
        if let Some(u) = &self.upstream {
            upstream.base_url = u.clone();
        }
        if let Some(k) = &self.upstream_api_key {
            upstream.api_key = Some(ApiKey::new(k.clone()));
        }
        if !self.models.is_empty() {
            upstream.models = self.models.clone();
        }
        if !self.speech_models.is_empty() {
            upstream.speech_models = self.speech_models.clone();
        }
        if !self.transcription_models.is_empty() {
            upstream.transcription_models = self.transcription_models.clone();
        }
        if !self.image_models.is_empty() {
            upstream.image_models = self.image_models.clone();
        }
        if !self.video_models.is_empty() {
            upstream.video_models = self.video_models.clone();
        }
        for backend in backends.iter() {
            if let BackendConfig::Upstream(u) = backend {
                anyhow::ensure!(
                    u.all_models().next().is_some(),
                    "name at least one --model (or --speech-model, --transcription-model, --image-model, --video-model) the upstream serves"
                );
            }
        }
        Ok(())
    }
}

/// Prints a line for the operator. A server keeps running when nobody reads its stdout any more
/// (a closed pipe makes `println!` panic), so write errors are ignored here.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

pub async fn hub(args: HubArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir().join("hub"));
    let hub = Hub::open(args.config(data_dir.clone())?).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "hub listening on http://{addr}  (hub key {})",
        hub.state.hub_key.public_key()
    );
    println!("admin token in {}", data_dir.join("admin.token").display());
    stacknet_hub::serve(listener, hub, shutdown_signal()).await?;
    Ok(())
}

pub async fn node(args: NodeArgs) -> Result<()> {
    let config = args.config()?;
    if config.backends.is_empty() {
        // Say it where the operator looks: which pulled models this node will serve.
        let store = stacknet_node::models::ModelStore::new(config.models_dir());
        let pulled = stacknet_node::backend::build::pulled_or_explain(&store)?;
        say(&format!(
            "serving the built-in models in {}: {}",
            store.dir().display(),
            stacknet_node::backend::build::model_names(&pulled).join(", ")
        ));
    }
    if let Some(code) = &args.referral_code {
        let (key, warning) = stacknet_protocol::keystore::load_or_create(&config.key_path())?;
        if let Some(w) = warning {
            say(&w);
        }
        let hub = stacknet_node::settlement::HubClient::connect(&config.hub).await?;
        let referral = hub.refer(&key, code).await?;
        say(&format!(
            "Node Key {} is referred by Stack {} (since {})",
            referral.node, referral.referrer, referral.since
        ));
    }
    let node = stacknet_node::open(&config).await?;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        say(&format!(
            "node metrics on http://{}/metrics",
            listener.local_addr()?
        ));
        tokio::spawn(serve_node_metrics(listener, node.clone()));
    }
    node.run(shutdown_signal()).await;
    Ok(())
}

/// `GET /metrics` of `node` on `listener` (nothing else is served there).
async fn serve_node_metrics(listener: tokio::net::TcpListener, node: stacknet_node::Node) {
    let app = axum::Router::new().route(
        stacknet_api::paths::METRICS,
        axum::routing::get(move || {
            let text = node.metrics();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        stacknet_api::metrics::CONTENT_TYPE,
                    )],
                    text,
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Address the hub listens on.
    #[arg(long, env = "STACKNET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Holds everything: hub/, node/, models/, up.env [default: ~/.local/share/stacknet]
    #[arg(long, env = "STACKNET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the built-in models are pulled to and loaded from [default: <data-dir>/models]
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Serve no code execution, even where this machine can sandbox it.
    #[arg(long)]
    pub no_sandbox: bool,
    /// Serve web search through this engine: searxng (with --search-url), brave or tavily (with
    /// --search-api-key).
    #[arg(long, value_parser = ["searxng", "brave", "tavily"])]
    pub search_engine: Option<String>,
    /// The search engine's address (a SearXNG instance with its JSON format on).
    #[arg(long, requires = "search_engine")]
    pub search_url: Option<String>,
    /// The search engine's API key (Brave, Tavily).
    #[arg(
        long,
        env = "STACKNET_SEARCH_API_KEY",
        requires = "search_engine",
        hide_env_values = true
    )]
    pub search_api_key: Option<String>,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    #[command(flatten)]
    pub money: MoneyArgs,
}

/// A whole network in one process: a hub and one node on SQLite, with a Stack and an API key. The
/// node serves the built-in models (pulled on first run) unless `--upstream` names a model server.
pub async fn up(args: UpArgs) -> Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let hub_args = HubArgs {
        listen: args.listen,
        data_dir: Some(data_dir.join("hub")),
        admin_token: None,
        max_body_bytes: stacknet_hub::DEFAULT_MAX_BODY_BYTES,
        max_upload_bytes: stacknet_hub::DEFAULT_MAX_UPLOAD_BYTES,
        max_concurrent_requests: stacknet_hub::DEFAULT_MAX_CONCURRENT_REQUESTS,
        request_timeout_ms: stacknet_hub::DEFAULT_REQUEST_TIMEOUT_MS,
        video_timeout_ms: stacknet_hub::videos::DEFAULT_VIDEO_TIMEOUT_MS,
        video_lease_ms: stacknet_hub::videos::DEFAULT_LEASE_MS,
        max_queued_output_bytes: stacknet_hub::DEFAULT_MAX_QUEUED_OUTPUT_BYTES,
        max_queued_per_model: stacknet_hub::queue::DEFAULT_MAX_QUEUED_PER_MODEL,
        hub_key_file: None,
        money: args.money.clone(),
    };
    let (backend, max_concurrency) = up_backend(&args, &data_dir).await?;
    let hub = Hub::open(hub_args.config(data_dir.join("hub"))?).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let api_key = first_start_key(&hub, &data_dir).await?;

    let node_dir = data_dir.join("node");
    let (key, warning) = stacknet_protocol::keystore::load_or_create(&node_dir.join("node.key"))?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let wallet = stacknet_node::Wallet::open(stacknet_node::config::wallet_path(&node_dir))?;
    let mut options = stacknet_node::NodeOptions::new(format!("http://{addr}"));
    options.hub_key = Some(hub.state.hub_key.public_key());
    options.max_concurrency = max_concurrency;
    // `up`'s node is the hub operator's own: it is granted and bonds the minimum worker bond, so
    // the hub routes to it as to any bonded node.
    stacknet_hub::stake::auto_bond(&hub.state, key.public_key().node_key_id())
        .await
        .map_err(|e| anyhow::anyhow!("cannot bond the node: {e}"))?;
    let node = stacknet_node::Node::new(key, wallet, backend, options)?;

    let base_url = format!("OPENAI_BASE_URL=http://{addr}/v1");
    let env_path = data_dir.join("up.env");
    write_private(&env_path, &format!("{base_url}\nOPENAI_API_KEY={api_key}\n"))?;
    // The key stays in the 0600 file: stdout ends up in terminals' scrollback, logs and CI output.
    say(&format!(
        "{base_url}\n# OPENAI_API_KEY is in {} (source it)\n# dashboard: http://{addr}/  metrics: http://{addr}/metrics",
        env_path.display()
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut node_stop = stop_rx.clone();
    let node_task = tokio::spawn(async move {
        node.run(async move {
            let _ = node_stop.wait_for(|s| *s).await;
        })
        .await
    });
    let mut hub_stop = stop_rx;
    let hub_task = tokio::spawn(stacknet_hub::serve(listener, hub, async move {
        let _ = hub_stop.wait_for(|s| *s).await;
    }));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    node_task.await?;
    hub_task.await??;
    Ok(())
}

/// The model server `up`'s node forwards to, or the built-in models, pulled on first run: SmolLM2
/// for chat and completions on llama.cpp, all-MiniLM-L6-v2 for embeddings and Whisper tiny.en for
/// speech to text on candle, the Piper voice and PP-OCR on ONNX Runtime.
/// `up`'s backend, and the tasks its node runs at once (`--max-concurrency`, else the default for it).
async fn up_backend(
    args: &UpArgs,
    data_dir: &Path,
) -> Result<(std::sync::Arc<dyn stacknet_node::Backend>, u32)> {
    let store = ModelStore::new(args.models_dir.clone().unwrap_or_else(|| data_dir.join("models")));
    let mut backends = Vec::new();
    args.upstream.apply(&mut backends)?;
    // The voices need eSpeak NG (scripts/setup.sh installs it): the fallback voice is it, and the
    // Piper voice's phonemes come from it.
    let espeak = stacknet_node::backend::voice::EspeakVoice::start(None).await;
    let built_in = backends.is_empty();
    if built_in {
        let options = stacknet_node::models::PullOptions::from_env();
        for name in UP_MODELS {
            let spec =
                stacknet_node::models::find(name).with_context(|| format!("{name} is not in the catalog"))?;
            crate::models::pull(&store, spec, &options).await?;
        }
        backends = vec![
            BackendConfig::Llama(LlamaBackendConfig::new(UP_CHAT_MODEL)),
            BackendConfig::Embeddings(ModelBackendConfig::new(UP_EMBEDDING_MODEL)),
            BackendConfig::Transcription(ModelBackendConfig::new(UP_TRANSCRIPTION_MODEL)),
            BackendConfig::Ocr(ModelBackendConfig::new(UP_OCR_MODEL)),
            BackendConfig::Terrain(ModelBackendConfig::new(UP_IMAGE_MODEL)),
        ];
        if espeak.is_ok() {
            backends.push(BackendConfig::Piper(
                stacknet_node::config::PiperBackendConfig::new(UP_SPEECH_MODEL),
            ));
        }
    }
    let max_concurrency = args
        .upstream
        .max_concurrency
        .unwrap_or_else(|| stacknet_node::config::default_max_concurrency(&backends));
    let models = stacknet_node::backend::build::build(&backends, &store).await?;
    // Page fetch everywhere (it needs nothing but the network), code execution where this machine
    // can sandbox it; `up` serves the models either way.
    let fetch = stacknet_node::backend::web_fetch::WebFetch::with_defaults()?;
    let mut all: Vec<std::sync::Arc<dyn stacknet_node::Backend>> = vec![models, std::sync::Arc::new(fetch)];
    say("page fetch: web-fetch (public addresses only, robots.txt honoured)");
    match espeak {
        Ok(voice) => {
            say(&format!(
                "text to speech: {}espeak-ng {} (model \"espeak-ng\", the fallback voice; OpenAI's voice names)",
                if built_in {
                    format!("{UP_SPEECH_MODEL} (neural, on ONNX Runtime) and ")
                } else {
                    String::new()
                },
                voice.version()
            ));
            all.push(std::sync::Arc::new(voice));
        }
        Err(e) => say(&format!("text to speech: not served ({e})")),
    }
    if let Some(engine) = &args.search_engine {
        let config = stacknet_node::config::SearchBackendConfig {
            engine: match engine.as_str() {
                "brave" => stacknet_node::config::SearchEngine::Brave,
                "tavily" => stacknet_node::config::SearchEngine::Tavily,
                _ => stacknet_node::config::SearchEngine::Searxng,
            },
            base_url: args.search_url.clone(),
            api_key: args.search_api_key.clone().map(stacknet_node::ApiKey::new),
            timeout_ms: None,
        };
        all.push(std::sync::Arc::new(
            stacknet_node::backend::web_search::WebSearch::new(config)?,
        ));
        say(&format!("web search: web-search ({engine})"));
    }
    if !args.no_sandbox {
        let config = stacknet_node::config::SandboxBackendConfig {
            // Beside node/, whose files are all the node's secrets (0600): the runs' uids must be
            // able to pass through this one (0711) to their own files.
            state_dir: Some(data_dir.join("sandbox")),
            ..Default::default()
        };
        match stacknet_node::backend::sandbox::Sandbox::start(&config).await {
            Ok(sandbox) => {
                say(&format!(
                    "code execution: {} (bubblewrap, {})",
                    sandbox.languages().join(", "),
                    sandbox.hierarchy()
                ));
                all.push(std::sync::Arc::new(sandbox));
            }
            Err(e) => say(&format!("code execution is off: {e}")),
        }
    }
    let all = stacknet_node::backend::multi::MultiBackend::new(all)?;
    Ok((std::sync::Arc::new(all), max_concurrency))
}

/// The built-in models `stacknet up` serves when no upstream is given.
pub const UP_CHAT_MODEL: &str = "smollm2-135m-instruct";
pub const UP_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
pub const UP_TRANSCRIPTION_MODEL: &str = "whisper-tiny-en";
pub const UP_SPEECH_MODEL: &str = "piper-en-us-joe-medium";
pub const UP_OCR_MODEL: &str = "pp-ocrv6-tiny";
/// Terrain, not text to image: the prompt only seeds it.
pub const UP_IMAGE_MODEL: &str = "terrain-diffusion-128";
/// Everything `up` pulls on first run: its models and the runtime of the ONNX ones.
pub const UP_MODELS: [&str; 7] = [
    UP_CHAT_MODEL,
    UP_EMBEDDING_MODEL,
    UP_TRANSCRIPTION_MODEL,
    stacknet_node::models::ONNX_RUNTIME,
    UP_SPEECH_MODEL,
    UP_OCR_MODEL,
    UP_IMAGE_MODEL,
];

/// On first start: a Stack named "default" and an API key; later starts reuse the key in up.env.
async fn first_start_key(hub: &Hub, data_dir: &Path) -> Result<String> {
    if let Ok(env) = std::fs::read_to_string(data_dir.join("up.env")) {
        if let Some(key) = env.lines().find_map(|l| l.strip_prefix("OPENAI_API_KEY=")) {
            if hub.state.api_keys.stack_of(key).is_some() {
                return Ok(key.to_owned());
            }
        }
    }
    let stack = stacknet_hub::store::StackRecord {
        id: StackId::random(),
        name: "default".to_owned(),
        created_at: Timestamp::now(),
    };
    hub.state.store.create_stack(stack.clone()).await?;
    let (key, _) = stacknet_hub::admin::issue_key(&hub.state, stack.id, stacknet_hub::store::KeyRole::Owner)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut file = opts.open(&tmp)?;
    // `mode` applies only to a file it creates: one left over keeps its own, so set it here,
    // before the secret is written.
    restrict_to_owner(&tmp)?;
    file.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        hub: HubArgs,
    }

    #[test]
    fn the_video_flags_reach_the_hub_config_and_default_to_the_hubs_own() {
        let dir = std::path::PathBuf::from("/nonexistent/stacknet-test");
        let given = [
            "hub",
            "--admin-token",
            "t",
            "--video-timeout-ms",
            "1234",
            "--video-lease-ms",
            "567",
        ];
        let config = Cli::try_parse_from(given)
            .unwrap()
            .hub
            .config(dir.clone())
            .unwrap();
        assert_eq!((config.video_timeout_ms, config.video_lease_ms), (1234, 567));
        let config = Cli::try_parse_from(["hub", "--admin-token", "t"])
            .unwrap()
            .hub
            .config(dir)
            .unwrap();
        assert_eq!(
            (config.video_timeout_ms, config.video_lease_ms),
            (
                stacknet_hub::videos::DEFAULT_VIDEO_TIMEOUT_MS,
                stacknet_hub::videos::DEFAULT_LEASE_MS
            )
        );
    }
}
