//! The Stacknet node runtime.
//!
//! A node connects to a hub's node gateway over WebSocket, proves its Node Key, advertises the models
//! its backend serves, and runs the tasks the hub sends: it checks each contract, streams the
//! backend's output back chunk by chunk, signs paperwork, stores it in its wallet *before* it reports
//! the task done, and reconnects with backoff whenever the hub goes away.
//!
//! Layout and flow:
//! - [`run`] is the entry point of `stacknet node`: key from disk, wallet, upstream backend, then
//!   [`Node::run`] until shutdown. [`config`] holds [`NodeConfig`] (TOML) and [`NodeOptions`].
//! - [`node`]: [`Node`] and the connect loop (with [`backoff`]); each connection is a session:
//!   `handshake` (challenge, signed hello, welcome), then `session`, one loop that owns the socket.
//! - `task`: one task's life: the checks, the backend run with chunks forwarded as they come, then
//!   [`paperwork`] signed and stored in the [`wallet`] before `done` goes out.
//! - [`backend`]: the [`Backend`] trait, one module per implementation ([`backend::upstream`], an
//!   OpenAI-compatible server, with its SSE parser in [`backend::sse`]).
//! - [`digest`]: the request and output hashes in paperwork (the hub recomputes them the same way);
//!   [`usage`]: usage estimates for backends that report none.

pub mod backend;
pub mod backoff;
pub mod config;
pub mod digest;
mod handshake;
pub mod models;
pub mod node;
pub mod paperwork;
mod session;
pub mod settlement;
mod task;
pub mod usage;
pub mod wallet;

use std::future::Future;
use std::sync::Arc;

use stacknet_protocol::keystore::{self, KeyStoreError};
use tracing::{info, warn};

pub use backend::upstream::OpenAiUpstream;
pub use backend::{Backend, BackendError, BackendOutcome, BackendTask};
pub use config::{ApiKey, NodeConfig, NodeOptions, UpstreamConfig};
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
    #[error("node startup failed: {0}")]
    Startup(String),
}

/// Runs a node as configured until `shutdown` completes: loads the Node Key (creating it on first
/// start), opens the wallet, builds the upstream backend, then connects and serves, draining in-flight
/// tasks on shutdown.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
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
    let backend = OpenAiUpstream::new(&config.upstream)?;
    let node = Node::new(key, wallet, Arc::new(backend), config.node_options())?;
    info!(
        node_key = %node.node_key_id(),
        hub = %config.hub,
        upstream = %config.upstream.base_url,
        models = ?config.upstream.models,
        "node starting"
    );
    node.run(shutdown).await;
    info!("node stopped");
    Ok(())
}
