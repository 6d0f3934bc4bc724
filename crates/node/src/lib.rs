//! The Stacknet node runtime.
//!
//! A node connects to a hub's node gateway over WebSocket, proves its Node Key, advertises the models
//! its backend serves, and runs the tasks the hub sends: it checks each contract, streams the
//! backend's output back chunk by chunk, signs paperwork, stores it in its wallet *before* it reports
//! the task done, and reconnects with backoff whenever the hub goes away.
//!
//! Layout and flow:
//! - [`run`] is the entry point of `stacknet node`: key from disk, wallet, the configured backends
//!   (or, with none, the built-in models already pulled), then [`Node::run`] until shutdown.
//!   [`config`] holds [`NodeConfig`] (TOML, with its `[[backend]]` list) and [`NodeOptions`].
//! - [`node`]: [`Node`] and the connect loop (with [`backoff`]); each connection is a session:
//!   `handshake` (challenge, signed hello with the node's limits, welcome with the hub's), then
//!   `session`, one loop that owns the socket (and gathers a task's input files from binary frames).
//!   `shared` is what sessions and tasks share (key, wallet, backend, slots).
//! - `task`: one task's life: the checks (the contract, and the request with the workload's shared
//!   validator from `stacknet_api`), the backend run with chunks forwarded as they come and output
//!   files sent in binary frames, then [`paperwork`] signed and stored in the [`wallet`] before
//!   `done` goes out.
//! - [`backend`]: the [`Backend`] trait, one module per implementation ([`backend::upstream`], an
//!   OpenAI-compatible server, with its SSE parser in [`backend::sse`]; [`backend::llama`], built-in
//!   chat on llama.cpp; [`backend::embed`], built-in embeddings on candle), [`backend::multi`] to
//!   serve several as one, and [`backend::build`](mod@backend::build) from configuration to backend.
//! - [`models`]: the catalog of pinned built-in models and the store they are pulled into.
//! - [`digest`]: the request and output hashes in paperwork (the hub recomputes them the same way);
//!   [`usage`]: usage estimates for backends that report none; `chain`: error messages with their
//!   causes.
//!
//! Dependencies between these files point one way: `node` -> `session` -> `handshake`, `task` ->
//! `shared`; `backend` -> `models`.

pub mod backend;
pub mod backoff;
mod chain;
pub mod config;
mod detached;
pub mod digest;
pub mod fetch;
pub mod guardian;
mod handshake;
pub mod metrics;
pub mod models;
pub mod node;
pub mod paperwork;
mod session;
pub mod settlement;
mod shared;
mod task;
pub mod usage;
pub mod validator;
pub mod wallet;

use std::future::Future;

use stacknet_protocol::keystore::{self, KeyStoreError};
use tracing::{info, warn};

pub use backend::build::BuildError;
pub use backend::upstream::OpenAiUpstream;
pub use backend::{Backend, BackendError, BackendOutcome, BackendTask, Cancellation, Canceller};
pub use config::{
    ApiKey, BackendConfig, LlamaBackendConfig, ModelBackendConfig, NodeConfig, NodeOptions, UpstreamConfig,
};
pub use digest::{digest_of_response, digest_of_stream, request_digest, OutputDigester};
pub use handshake::SOFTWARE;
pub use node::Node;
pub use wallet::{Wallet, WalletEntry, WalletError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid hub URL {url:?}: {reason}")]
    HubUrl { url: String, reason: String },
    #[error("invalid node configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Key(#[from] KeyStoreError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("node startup failed: {0}")]
    Startup(String),
}

/// Runs a node as configured until `shutdown` completes: loads the Node Key (creating it on first
/// start), opens the wallet, builds the backends (with none configured, the built-in models already
/// pulled into the models directory), then connects and serves, draining in-flight tasks on
/// shutdown.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
    let node = open(&config).await?;
    node.run(shutdown).await;
    info!("node stopped");
    Ok(())
}

/// The node [`run`] runs, ready to connect: its key (created on first start), its wallet, its
/// backends built. The caller keeps a handle (its metrics, its wallet) while [`Node::run`] runs.
pub async fn open(config: &NodeConfig) -> Result<Node, NodeError> {
    let key_path = config.key_path();
    let wallet_path = config.wallet_path();
    // Key files and SQLite are blocking I/O: keep them off the runtime's worker threads.
    let (key, wallet) = tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
        let (key, warning) = keystore::load_or_create(&key_path)?;
        if let Some(warning) = warning {
            warn!("{warning}");
        }
        Ok((key, Wallet::open(&wallet_path)?))
    })
    .await
    .map_err(|e| NodeError::Startup(e.to_string()))??;
    let models = models::ModelStore::new(config.models_dir());
    let configs = if config.backends.is_empty() {
        let pulled = backend::build::pulled_or_explain(&models)?;
        info!(
            models_dir = %models.dir().display(),
            models = ?backend::build::model_names(&pulled),
            "no backend configured: serving the built-in models pulled here"
        );
        pulled
    } else {
        config.backends.clone()
    };
    let backend = backend::build::build(&configs, &models).await?;
    let offers: Vec<String> = backend
        .models()
        .into_iter()
        .map(|o| format!("{} ({})", o.name, o.backend))
        .collect();
    let node = Node::new(key, wallet, backend, config.node_options())?;
    info!(
        node_key = %node.node_key_id(),
        hub = %config.hub,
        models = ?offers,
        "node starting"
    );
    Ok(node)
}
