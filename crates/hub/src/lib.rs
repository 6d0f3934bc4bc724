//! The Stacknet hub: an axum service.
//!
//! Layout and flow:
//! - [`openai`] validates requests and builds OpenAI-format responses; [`task`] runs one request:
//!   admission (API key, limits), a hub-signed Prompt Contract, a node from [`nodes`] (the registry
//!   and scheduler), the task's events from the node, verified paperwork, the answer.
//! - [`gateway`] is the node side: the WebSocket on which nodes prove their key and run tasks.
//! - [`store`] keeps Stacks, API keys and paperwork (SQLite now, one trait for PostgreSQL later);
//!   [`auth`] serves API-key checks from memory; [`admin`] creates Stacks and keys.
//! - [`error::ApiError`] is the one error type every client-visible failure maps to.
//!
//! [`Hub::open`] loads (or creates) the hub key and the store; [`Hub::router`] gives the axum app;
//! [`serve`] runs it on a listener until a shutdown future completes.

pub mod admin;
pub mod auth;
pub mod error;
pub mod gateway;
pub mod nodes;
pub mod openai;
pub mod store;
pub mod task;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stacknet_protocol::contract::{AttributionSplit, PriceTerms};
use stacknet_protocol::{Amount, PaperworkId, SecretKey};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::ApiKeys;
use crate::error::ApiError;
use crate::nodes::Nodes;
use crate::store::{PaperworkWriter, SqliteStore, Store};

/// Defaults for the configurable limits.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 5_000;

#[derive(Clone)]
pub struct HubConfig {
    /// Holds `hub.key` and `hub.db`.
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
    pub request_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Prices and split written into every contract (per-model prices come with the ledger).
    pub price: PriceTerms,
    pub max_cost: Amount,
    pub split: AttributionSplit,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("data_dir", &self.data_dir)
            .field("admin_token", &"<redacted>")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl HubConfig {
    pub fn new(data_dir: PathBuf, admin_token: String) -> Self {
        Self {
            data_dir,
            admin_token,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            price: PriceTerms {
                input_per_mtok: Amount::ZERO,
                output_per_mtok: Amount::ZERO,
                per_request: Amount::ZERO,
                per_unit: Amount::ZERO,
            },
            max_cost: Amount::ZERO,
            split: stacknet_protocol::examples::default_split(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Key(#[from] stacknet_protocol::keystore::KeyStoreError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
}

/// Shared state: a small `Clone` struct of handles.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<HubConfig>,
    pub hub_key: Arc<SecretKey>,
    pub store: Arc<dyn Store>,
    pub api_keys: Arc<ApiKeys>,
    pub nodes: Arc<Nodes>,
    pub writer: PaperworkWriter,
    pub inflight: Arc<Semaphore>,
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

impl Hub {
    /// Loads or creates `hub.key`, opens `hub.db`, loads API keys into memory.
    pub fn open(config: HubConfig) -> Result<Self, HubError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HubError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (hub_key, warning) =
            stacknet_protocol::keystore::load_or_create(&config.data_dir.join("hub.key"))?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.data_dir.join("hub.db"))?);
        let api_keys = Arc::new(ApiKeys::default());
        let (shutdown, shutting_down) = tokio::sync::watch::channel(false);
        for k in store.api_keys()? {
            api_keys.insert(k.hash, k.stack);
        }
        let state = AppState {
            inflight: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config: Arc::new(config),
            hub_key: Arc::new(hub_key),
            writer: PaperworkWriter::start(store.clone()),
            store,
            api_keys,
            nodes: Arc::new(Nodes::default()),
            shutting_down,
        };
        Ok(Self {
            state,
            shutdown: Arc::new(shutdown),
        })
    }

    pub fn router(&self) -> Router {
        let limit = self.state.config.max_body_bytes;
        Router::new()
            .route("/healthz", get(healthz))
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(task::chat_completions))
            .route("/v1/completions", post(task::completions))
            .route("/v1/embeddings", post(task::embeddings))
            .route("/stacknet/v1/hub", get(hub_info))
            .route("/stacknet/v1/nodes/connect", get(gateway::connect))
            .route("/stacknet/v1/paperwork/{id}", get(paperwork))
            .route(
                "/stacknet/v1/admin/stacks",
                post(admin::create_stack).get(admin::list_stacks),
            )
            .route("/stacknet/v1/admin/stacks/{id}/keys", post(admin::create_key))
            .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self.state.clone())
    }
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

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "nodes": state.nodes.connected().len()}))
}

async fn hub_info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "hub_key": state.hub_key.public_key().to_hex(),
        "protocol_version": stacknet_protocol::wire::PROTOCOL_VERSION,
        "software": format!("stacknet/{}", env!("CARGO_PKG_VERSION")),
    }))
}

/// `GET /v1/models`: the models connected nodes serve now.
async fn models(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.api_keys.authenticate(&headers)?;
    let data: Vec<Value> = state
        .nodes
        .served_models()
        .into_iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "stacknet"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn paperwork(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: PaperworkId = id
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("id", e.to_string()))?;
    let store = state.store.clone();
    let json = admin::blocking(move || store.paperwork(&id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("paperwork {id}")))?;
    serde_json::from_str(&json)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}
