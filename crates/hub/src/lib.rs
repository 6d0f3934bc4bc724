//! The Stacknet hub: an axum service.
//!
//! Layout and flow:
//! - [`workload`]: one module per OpenAI-style API (chat, completions, embeddings, image edits), each
//!   a `WorkloadApi`: validate (with `stacknet_api`'s validators, which the node runs too), bound
//!   the usage, stream or not, build the answer. [`task`] runs one request of any workload:
//!   admission (API key, limits), a hub-signed Prompt Contract, a node from [`nodes`] (the registry
//!   and scheduler), the task's events from the node (chunks, and files in binary frames), verified
//!   paperwork whose output digest is recomputed from what the client gets, the answer.
//! - [`gateway`] is the node side: the WebSocket on which nodes prove their key and run tasks; a
//!   frame for a task that is not the node's gets an error frame and a mark in the key's record
//!   ([`nodes::NodeRecord`]).
//! - [`store`] keeps the registry (Stacks, API keys, prices), the paperwork log, settlements and seen
//!   events, and payouts: one trait per domain, [`store::Store`] all of them, implemented on SQLite
//!   ([`store::sqlite`]) and PostgreSQL ([`store::postgres`], on the ledger's `pg` pool); the ledger
//!   (`stacknet-ledger`) keeps balances.
//!   [`auth`] serves API-key checks from memory; [`admin`] creates Stacks and keys, sets prices, tops up.
//! - [`money`] is the request path's money: prices, the escrow hold, the writer that logs accepted
//!   paperwork and captures its cost; [`log`] is the paperwork Merkle log; [`settle`] is filing,
//!   statements and redemption; [`stake`] moves bonds (the scheduler in [`nodes`] routes only to
//!   bonded nodes); [`payout`] delivers payout webhooks; [`webhook`] checks HMAC-signed
//!   webhooks from the payment provider.
//! - [`error::ApiError`] is the one error type every client-visible failure maps to; a failure on the
//!   hub's side keeps its cause, is logged with a request id, and reaches the client as that id.
//!
//! [`Hub::open`] loads (or creates) the hub key and the store; [`Hub::router`] gives the axum app;
//! [`serve`] runs it on a listener until a shutdown future completes.

pub mod admin;
pub mod attribution;
pub mod auth;
pub mod capped;
pub mod dashboard;
pub mod error;
pub mod files;
pub mod gateway;
pub mod grounding;
pub mod guardian;
pub mod log;
pub mod market;
pub mod mcp;
pub mod metrics;
pub mod money;
pub mod nodes;
pub mod payout;
pub mod queue;
pub mod refresh;
pub mod reputation;
pub mod rollup;
pub mod rules;
pub mod settle;
pub mod stake;
pub mod store;
pub mod task;
pub mod validate;
pub mod videos;
pub mod webhook;
pub mod workload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::Value;
use stacknet_api::paths;
use stacknet_api::types::{Health, HubInfo, ModelList};
use stacknet_ledger::LedgerStore;
use stacknet_protocol::contract::{AttributionSplit, PriceTerms, Workload};
use stacknet_protocol::{Amount, PaperworkId, SecretKey};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::ApiKeys;
use crate::error::ApiError;
use crate::log::MerkleLog;
use crate::money::{Prices, SettleWriter};
use crate::nodes::Nodes;
use crate::store::Store;

/// Defaults for the configurable limits.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Uploads (image edits, transcriptions) take OpenAI's 25 MB audio limit and the form around it.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 32 * 1024 * 1024;
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// A node's output that may wait for one slow client before its task is abandoned.
pub const DEFAULT_MAX_QUEUED_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Output tokens assumed for a request without `max_tokens` when its maximum cost is held.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4_096;
/// How long after acceptance paperwork may be filed: validators can object first.
pub const DEFAULT_CHALLENGE_WINDOW_MS: u64 = 600_000;

/// Where payout requests go: the operator's payment system, called with an HMAC-signed webhook.
#[derive(Clone)]
pub struct PayoutRail {
    pub url: String,
    pub secret: String,
    /// Delivery attempts before a payout fails (and its money goes back to the node).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled each time.
    pub first_backoff_ms: u64,
}

impl PayoutRail {
    /// The rail's URL as it may be shown: its origin only (`scheme://host:port`), since userinfo,
    /// path and query can all carry credentials.
    pub fn shown_url(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => url.origin().ascii_serialization(),
            Err(_) => "<unparsable URL>".to_owned(),
        }
    }
}

impl std::fmt::Debug for PayoutRail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayoutRail")
            .field("url", &self.shown_url())
            .field("secret", &"<redacted>")
            .field("max_attempts", &self.max_attempts)
            .field("first_backoff_ms", &self.first_backoff_ms)
            .finish()
    }
}

#[derive(Clone)]
pub struct HubConfig {
    /// Holds `hub.key` and, by default, the SQLite database `hub.db`.
    pub data_dir: PathBuf,
    /// The hub key's file, when not `<data_dir>/hub.key`: replicas of one network share one.
    pub key_file: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://...`; `None`: `sqlite://<data_dir>/hub.db`. The registry, the
    /// paperwork log and the ledger all live there.
    pub database: Option<String>,
    pub admin_token: String,
    pub max_body_bytes: usize,
    /// The largest body of an upload endpoint (multipart: `/v1/images/edits`,
    /// `/v1/audio/transcriptions`); never less than `max_body_bytes`.
    pub max_upload_bytes: usize,
    pub max_concurrent_requests: usize,
    pub request_timeout_ms: u64,
    /// A video job's time limit (see `videos`).
    pub video_timeout_ms: u64,
    /// How long the process running a video job vouches for it between renewals (it renews every
    /// third of this); a job whose lease lapsed is run again by the next process that reads it.
    pub video_lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// The most output bytes of one task that may wait for its client (one that reads slower than
    /// its node writes); past it the task is abandoned, so the node's connection never waits.
    pub max_queued_output_bytes: u64,
    /// The most requests that wait per model for a busy node's slot (0: a busy model is 503 at
    /// once); each waits until a slot frees or its deadline passes.
    pub max_queued_per_model: usize,
    /// The price of a model the admin has not priced.
    pub default_price: PriceTerms,
    pub default_max_output_tokens: u64,
    /// The network's attribution split, written into every contract.
    pub split: AttributionSplit,
    pub challenge_window_ms: u64,
    /// How long after a request's deadline its escrow hold expires if nothing resolved it (a hub
    /// that crashed mid-request).
    pub hold_grace_ms: u64,
    /// The shared secret of the payment provider's top-up webhook; `None` turns the webhook off.
    pub payments_webhook_secret: Option<String>,
    pub payout_rail: Option<PayoutRail>,
    /// Stakes and validation (issue 11): minimum bonds, periods, sampling, quorum, slashing.
    pub rules: rules::NetworkRules,
    /// The share of a referred Stack's top-ups its referrer earns (from the treasury), in basis points.
    pub referral_topup_bps: u32,
    /// The Node Key market's transfer fee, in basis points of the price (half to the key's
    /// originator, half to the protocol).
    pub key_transfer_fee_bps: u32,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("data_dir", &self.data_dir)
            .field("admin_token", &"<redacted>")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("challenge_window_ms", &self.challenge_window_ms)
            .finish_non_exhaustive()
    }
}

impl HubConfig {
    /// The largest body `api` takes.
    pub fn body_limit(&self, api: &dyn workload::WorkloadApi) -> usize {
        if api.uploads() {
            self.max_upload_bytes.max(self.max_body_bytes)
        } else {
            self.max_body_bytes
        }
    }

    pub fn new(data_dir: PathBuf, admin_token: String) -> Self {
        Self {
            data_dir,
            key_file: None,
            database: None,
            admin_token,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            video_timeout_ms: videos::DEFAULT_VIDEO_TIMEOUT_MS,
            video_lease_ms: videos::DEFAULT_LEASE_MS,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            max_queued_output_bytes: DEFAULT_MAX_QUEUED_OUTPUT_BYTES,
            max_queued_per_model: queue::DEFAULT_MAX_QUEUED_PER_MODEL,
            default_price: PriceTerms {
                input_per_mtok: Amount::ZERO,
                output_per_mtok: Amount::ZERO,
                per_request: Amount::ZERO,
                per_unit: Amount::ZERO,
            },
            default_max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
            split: AttributionSplit::DEFAULT,
            challenge_window_ms: DEFAULT_CHALLENGE_WINDOW_MS,
            hold_grace_ms: money::DEFAULT_HOLD_GRACE_MS,
            payments_webhook_secret: None,
            payout_rail: None,
            rules: rules::NetworkRules::default(),
            referral_topup_bps: attribution::DEFAULT_REFERRAL_TOPUP_BPS,
            key_transfer_fee_bps: market::DEFAULT_KEY_TRANSFER_FEE_BPS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Key(#[from] stacknet_protocol::keystore::KeyStoreError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("ledger: {0}")]
    Ledger(#[from] stacknet_ledger::LedgerError),
    #[error("the attribution split's shares add up to more or less than 100%")]
    IncompleteSplit,
    #[error("recovery at start failed: {0}")]
    Recover(String),
    #[error(
        "this database belongs to the network of hub key {stored}, but {file} holds hub key {ours}: \
         every replica of a network loads the same hub key file (--hub-key-file)"
    )]
    OtherNetwork {
        stored: String,
        ours: String,
        file: PathBuf,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot make {path} readable by its owner only: {source}")]
    PrivateFile { path: PathBuf, source: std::io::Error },
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
}

/// Shared state: a small `Clone` struct of handles.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<HubConfig>,
    pub hub_key: Arc<SecretKey>,
    pub store: Arc<dyn Store>,
    pub ledger: Arc<dyn LedgerStore>,
    pub prices: Arc<Prices>,
    pub log: Arc<MerkleLog>,
    pub api_keys: Arc<ApiKeys>,
    /// Injections, skills, referral codes and bindings, model catalog parties.
    pub attribution: Arc<attribution::Registry>,
    pub nodes: Arc<Nodes>,
    pub writer: SettleWriter,
    pub validation: Arc<validate::Validation>,
    pub inflight: Arc<Semaphore>,
    /// The video jobs this process runs.
    pub videos: Arc<videos::Running>,
    /// What `GET /metrics` exports.
    pub metrics: Arc<metrics::HubMetrics>,
    /// The dashboard's per-minute rollups waiting to be stored.
    pub rollups: Arc<rollup::Rollups>,
    /// Turns true when the hub shuts down, so long-lived node connections close instead of
    /// holding the graceful shutdown open forever.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("hub_key", &self.hub_key.public_key())
            .finish_non_exhaustive()
    }
}

/// An opened hub: its state, ready to serve.
#[derive(Clone)]
pub struct Hub {
    pub state: AppState,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hub({})", self.state.hub_key.public_key())
    }
}

/// The document that records which hub key a database belongs to (see [`claim_identity`]).
pub const HUB_KEY_DOC: &str = "hub_key";

/// Records `key` as the hub key of the network `store` holds, on first start; later, refuses a hub
/// with another key ([`HubError::OtherNetwork`]): replicas on one database are one network, whose
/// contracts, checkpoints and pinned key are one identity's.
async fn claim_identity(
    store: &dyn Store,
    key: &stacknet_protocol::PublicKey,
    file: &std::path::Path,
) -> Result<(), HubError> {
    let ours = key.to_string();
    let doc = store::DocRecord {
        kind: HUB_KEY_DOC.to_owned(),
        id: "network".to_owned(),
        version: 1,
        stack: None,
        json: serde_json::Value::String(ours.clone()).to_string(),
        created_at: stacknet_protocol::Timestamp::now(),
    };
    if store.put_doc(doc).await? {
        return Ok(());
    }
    let stored = store
        .doc_versions(HUB_KEY_DOC.to_owned(), "network".to_owned())
        .await?
        .first()
        .and_then(|d| serde_json::from_str::<String>(&d.json).ok())
        .unwrap_or_default();
    if stored == ours {
        return Ok(());
    }
    Err(HubError::OtherNetwork {
        stored,
        ours,
        file: file.to_owned(),
    })
}

/// A wrapper put around the hub's ledger when it opens (one that meters calls, or in tests one that
/// fails some of them).
pub type LedgerLayer = Box<dyn FnOnce(Arc<dyn LedgerStore>) -> Arc<dyn LedgerStore> + Send>;

impl Hub {
    /// Loads or creates `hub.key`, opens the database, loads API keys, prices and the Merkle tree
    /// into memory, and mends what a crash left half-done (see [`money::recover`]). Must run inside
    /// a tokio runtime: it starts the writer, the hold-expiry sweeper and the repair loop.
    pub async fn open(config: HubConfig) -> Result<Self, HubError> {
        Self::open_layered(config, Box::new(|ledger| ledger)).await
    }

    /// As [`Hub::open`], with every use of the ledger going through `layer`.
    pub async fn open_layered(config: HubConfig, layer: LedgerLayer) -> Result<Self, HubError> {
        if !config.split.is_complete() {
            return Err(HubError::IncompleteSplit);
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HubError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let key_file = config
            .key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("hub.key"));
        let (hub_key, warning) = stacknet_protocol::keystore::load_or_create(&key_file)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        let database = config
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("hub.db").display()));
        if let Some(path) = database.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
            // The books and the API key hashes: private before SQLite first writes them.
            stacknet_protocol::keystore::restrict_database_to_owner(std::path::Path::new(path)).map_err(
                |source| HubError::PrivateFile {
                    path: PathBuf::from(path),
                    source,
                },
            )?;
        }
        let store = store::open(&database).await?;
        claim_identity(&*store, &hub_key.public_key(), &key_file).await?;
        let ledger: Arc<dyn LedgerStore> = if database.starts_with("sqlite://") {
            stacknet_ledger::open(&database).await?
        } else {
            let (url, schema) = store::pg_schema(&database);
            let options = stacknet_ledger::PgOptions {
                schema,
                ..Default::default()
            };
            Arc::new(stacknet_ledger::PgLedger::connect(&url, options).await?)
        };
        let metrics = Arc::new(metrics::HubMetrics::new());
        let ledger: Arc<dyn LedgerStore> = Arc::new(metrics::Metered::new(layer(ledger), metrics.clone()));
        let api_keys = Arc::new(ApiKeys::default());
        let prices = Arc::new(Prices::new(config.default_price.clone(), Vec::new()));
        let attribution = Arc::new(attribution::Registry::default());
        let registry = refresh::Registry {
            api_keys: api_keys.clone(),
            prices: prices.clone(),
            attribution: attribution.clone(),
        };
        let seen = refresh::catch_up(&*store, &registry, refresh::Seen::default()).await?;
        let log = Arc::new(MerkleLog::new());
        money::recover(&store, &ledger, &log)
            .await
            .map_err(HubError::Recover)?;
        settle::recover(&store, &ledger)
            .await
            .map_err(HubError::Recover)?;
        let (shutdown, shutting_down) = tokio::sync::watch::channel(false);
        money::start_expiry(ledger.clone(), shutting_down.clone());
        money::start_repair(store.clone(), ledger.clone(), shutting_down.clone());
        refresh::start(store.clone(), registry, seen, shutting_down.clone());
        let nodes = Arc::new(Nodes::default());
        nodes.reputation.reload(&*store).await?;
        reputation::start(store.clone(), nodes.clone(), shutting_down.clone());
        files::start_sweep(store.clone(), shutting_down.clone());
        let rollups = Arc::new(rollup::Rollups::default());
        rollup::start(store.clone(), rollups.clone(), shutting_down.clone());
        let validation = Arc::new(
            validate::Validation::open(
                store.clone(),
                ledger.clone(),
                config.rules.clone(),
                config.challenge_window_ms,
                nodes.clone(),
                metrics.clone(),
            )
            .await?,
        );
        // Before the writer starts: a batch logged and not sampled before a stop is sampled now.
        validate::sample::recover(&validation, log.head())
            .await
            .map_err(HubError::Recover)?;
        validate::start_deadlines(validation.clone(), shutting_down.clone());
        nodes.set_min_bond(config.rules.min_worker_bond);
        nodes.set_max_queued(config.max_queued_per_model);
        let state = AppState {
            inflight: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            videos: Arc::default(),
            config: Arc::new(config),
            hub_key: Arc::new(hub_key),
            writer: SettleWriter::start(
                store.clone(),
                ledger.clone(),
                log.clone(),
                Some(validation.clone()),
                metrics.clone(),
            ),
            metrics,
            rollups,
            validation,
            store,
            ledger,
            prices,
            log,
            api_keys,
            attribution,
            nodes,
            shutting_down,
        };
        payout::resume(&state);
        market::recover(&state).await.map_err(HubError::Recover)?;
        Ok(Self {
            state,
            shutdown: Arc::new(shutdown),
        })
    }

    pub fn router(&self) -> Router {
        let limit = self.state.config.max_body_bytes;
        let upload_limit = self.state.config.max_upload_bytes.max(limit);
        let mut router = Router::new();
        for w in workload::SERVED {
            if let Some(api) = workload::api(w) {
                let endpoint = by_workload(w).layer(DefaultBodyLimit::max(self.state.config.body_limit(api)));
                router = router.route(api.path(), endpoint);
            }
        }
        router
            .route(paths::HEALTHZ, get(healthz))
            .route(paths::METRICS, get(metrics::serve))
            .route(paths::DASHBOARD, get(dashboard::network))
            .route(paths::DASHBOARD_NODE, get(dashboard::node))
            .route(
                paths::DASHBOARD_STACK,
                get(dashboard::stack_form).post(dashboard::stack),
            )
            .route(paths::MODELS, get(models))
            .route(paths::HUB_INFO, get(hub_info))
            .route(paths::NODE_GATEWAY, get(gateway::connect))
            .route(paths::PAPERWORK, get(paperwork))
            .route(paths::FILE, get(files::get))
            .route(
                paths::VIDEOS,
                post(videos::create)
                    .get(videos::list)
                    .layer(DefaultBodyLimit::max(upload_limit)),
            )
            .route(paths::VIDEO, get(videos::get).delete(videos::delete))
            .route(paths::VIDEO_CONTENT, get(videos::content))
            .route(paths::VIDEO_REMIX, post(videos::remix))
            .route(
                paths::ADMIN_STACKS,
                post(admin::create_stack).get(admin::list_stacks),
            )
            .route(paths::ADMIN_STACK_KEYS, post(admin::create_key))
            .route(paths::ADMIN_KEY, delete(admin::revoke_key))
            .route(paths::ADMIN_STACK_TOPUP, post(admin::topup))
            .route(paths::ADMIN_TREASURY_TOPUP, post(admin::topup_treasury))
            .route(paths::ADMIN_NODE_TOPUP, post(admin::topup_node))
            .route(paths::STAKE, post(stake::stake))
            .route(
                paths::ADMIN_PRICES,
                get(admin::list_prices).post(admin::set_price),
            )
            .route(paths::WEBHOOK_PAYMENTS, post(webhook::payments))
            .route(paths::WEBHOOK_PAYOUTS, post(payout::callback))
            .route(paths::STACK_STATEMENT, get(settle::stack_statement))
            .route(paths::NODE_STATEMENT, post(settle::node_statement))
            .route(paths::NODE_FILE, post(settle::file))
            .route(paths::NODE_REDEEM, post(settle::redeem))
            .route(paths::NODE_LOGGED, post(settle::node_logged))
            .route(paths::LOG_CHECKPOINT, get(settle::checkpoint))
            .route(paths::LOG_INCLUSION, get(settle::inclusion))
            .route(paths::LOG_CONSISTENCY, get(settle::consistency))
            .route(paths::VALIDATION, post(validate::http::validation))
            .route(paths::ATTESTATIONS, get(validate::http::attestations))
            .route(paths::GUARDIAN, post(guardian::guardian))
            .route(paths::NODES, get(reputation::list))
            .route(paths::NODE, get(reputation::one))
            .route(paths::ADMIN_CANARIES, post(validate::http::create_canary))
            .route(
                paths::INJECTIONS,
                get(attribution::http::list_injections).post(attribution::http::create_injection),
            )
            .route(
                paths::INJECTION,
                get(attribution::http::get_injection)
                    .put(attribution::http::update_injection)
                    .delete(attribution::http::delete_injection),
            )
            .route(
                paths::SKILLS,
                get(attribution::http::list_skills).post(attribution::http::create_skill),
            )
            .route(
                paths::SKILL,
                get(attribution::http::get_skill)
                    .put(attribution::http::update_skill)
                    .delete(attribution::http::delete_skill),
            )
            .route(paths::SKILL_COLLECT, post(attribution::http::collect))
            .route(
                paths::REFERRALS,
                get(attribution::http::list_referrals).post(attribution::http::create_referral),
            )
            .route(paths::NODE_REFERRER, post(attribution::http::node_referrer))
            .route(paths::MARKET_KEYS, get(market::listings).post(market::offer))
            .route(paths::MARKET_KEY, get(market::key_state))
            .route(paths::MARKET_BUY, post(market::buy))
            .route(paths::MARKET_BINDINGS, get(market::bindings))
            .merge(mcp::router(self.state.clone()))
            .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
            .layer(DefaultBodyLimit::max(limit))
            .layer(axum::middleware::map_response(move |response| {
                error::openai_errors(response, limit)
            }))
            .with_state(self.state.clone())
    }
}

/// The body of an OpenAI endpoint, or why axum could not read it (too large, say).
type Body = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

/// The OpenAI endpoints share one handler, told which workload it serves.
fn by_workload(workload: Workload) -> axum::routing::MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>, headers: axum::http::HeaderMap, body: Body| {
            task::respond(state, headers, body, workload)
        },
    )
}

/// Serves the hub on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    use axum::serve::ListenerExt;
    // No Nagle: small SSE chunks and WebSocket frames must leave at once, not 40 ms later.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let closing = hub.shutdown.clone();
    let shutdown = async move {
        shutdown.await;
        // Node connections close first, so the graceful shutdown does not wait on them forever.
        let _ = closing.send(true);
    };
    axum::serve(listener, hub.router())
        .with_graceful_shutdown(shutdown)
        .await?;
    hub.state.writer.flush().await;
    Ok(())
}

async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        nodes: state.nodes.connected().len() as u64,
    })
}

async fn hub_info(State(state): State<AppState>) -> Json<HubInfo> {
    Json(HubInfo {
        hub_key: state.hub_key.public_key(),
        protocol_version: stacknet_protocol::wire::PROTOCOL_VERSION,
        software: format!("stacknet/{}", env!("CARGO_PKG_VERSION")),
    })
}

/// `GET /v1/models`: the models connected nodes serve now, each with how many nodes serve it and
/// how long a request would wait.
async fn models(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<ModelList>, ApiError> {
    state.api_keys.authenticate(&headers)?;
    let models = state.nodes.served_models().into_iter().map(|m| {
        let availability = state.nodes.availability(&m);
        (m, Some(availability))
    });
    Ok(Json(ModelList::new(models)))
}

async fn paperwork(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: PaperworkId = id
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("id", e.to_string()))?;
    let logged = state
        .store
        .paperwork(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("paperwork {id}")))?;
    serde_json::from_str(&logged.record.json)
        .map(Json)
        .map_err(ApiError::internal)
}
