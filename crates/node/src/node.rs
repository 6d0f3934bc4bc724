//! The node itself: its identity, wallet and backend, and the loop that keeps it connected to the hub
//! (connect, serve a session, back off, reconnect) until shutdown.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stacknet_protocol::wire::{ModelOffer, MAX_FRAME_BYTES};
use stacknet_protocol::{NodeKeyId, PublicKey, SecretKey};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, warn};

use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::config::NodeOptions;
use crate::session::{self, SessionEnd};
use crate::shared::{shutdown_requested, Shared};
use crate::wallet::Wallet;
use crate::NodeError;

/// Where a hub's node gateway lives under its base URL.
pub const GATEWAY_PATH: &str = stacknet_api::paths::NODE_GATEWAY;
/// The largest message the node's socket reads. Above the node's own limit ([`MAX_FRAME_BYTES`],
/// stated in its hello): a task frame a little over it is read, refused with an error frame for its
/// contract, and costs nothing else, where a socket limit would drop the connection and every task
/// on it.
pub const MAX_READ_FRAME_BYTES: usize = 4 * MAX_FRAME_BYTES;
/// How long opening the WebSocket (TCP, TLS, upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node: cheap to clone (one shared inside), so tests and `stacknet up` can keep a handle while
/// [`Node::run`] runs on a task of its own.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("node_key", &self.shared.id)
            .field("gateway_url", &self.shared.gateway_url)
            .field("models", &self.shared.offers.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Checks the options and takes the backend's model list; connects only in [`Node::run`].
    pub fn new(
        key: SecretKey,
        wallet: Wallet,
        backend: Arc<dyn Backend>,
        options: NodeOptions,
    ) -> Result<Node, NodeError> {
        if options.max_concurrency == 0 {
            return Err(NodeError::Config("max_concurrency must be at least 1".to_owned()));
        }
        let gateway_url = gateway_url(&options.hub_url)?;
        let offers = backend.models();
        if offers.is_empty() {
            warn!("the backend serves no models; the hub will have nothing to send");
        }
        let permits = Arc::new(Semaphore::new(options.max_concurrency as usize));
        let metrics = crate::metrics::NodeMetrics::new(options.max_concurrency);
        Ok(Node {
            shared: Arc::new(Shared {
                id: key.public_key().node_key_id(),
                key,
                wallet,
                backend,
                offers,
                options,
                gateway_url,
                permits,
                announced: std::sync::Mutex::new(Vec::new()),
                detached: Arc::default(),
                metrics,
            }),
        })
    }

    pub fn node_key(&self) -> PublicKey {
        self.shared.key.public_key()
    }

    pub fn node_key_id(&self) -> NodeKeyId {
        self.shared.id
    }

    pub fn wallet(&self) -> &Wallet {
        &self.shared.wallet
    }

    /// The models advertised in every Hello.
    pub fn models(&self) -> &[ModelOffer] {
        &self.shared.offers
    }

    /// Tasks running right now.
    pub fn active_tasks(&self) -> u32 {
        self.shared.active_tasks()
    }

    /// What `GET /metrics` answers: this node's metrics in Prometheus text (OpenMetrics flavour,
    /// [`stacknet_api::metrics::CONTENT_TYPE`]).
    pub fn metrics(&self) -> String {
        self.shared.metrics.scrape(self.shared.active_tasks())
    }

    /// Stays connected to the hub, reconnecting with backoff, until `shutdown` completes; then stops
    /// taking tasks, lets running ones finish (up to the drain timeout) and returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) {
        let (stop, stopped) = watch::channel(false);
        let connected = self.connect_loop(stopped);
        tokio::pin!(connected, shutdown);
        tokio::select! {
            () = &mut connected => return,
            () = &mut shutdown => {
                let _ = stop.send(true);
            }
        }
        connected.await;
    }

    async fn connect_loop(&self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new();
        loop {
            // Shutdown while connecting or in the handshake ends at once; a serving session drains.
            let end = self.connect_once(&mut shutdown).await;
            match end {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost { welcomed } => {
                    if welcomed {
                        backoff.reset();
                    }
                }
            }
            let delay = backoff.next_delay();
            debug!(?delay, "reconnecting after a delay");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown_requested(&mut shutdown) => return,
            }
        }
    }

    async fn connect_once(&self, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
        let url = &self.shared.gateway_url;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_READ_FRAME_BYTES))
            .max_frame_size(Some(MAX_READ_FRAME_BYTES));
        // Nagle off: chunks are small and latency is the product.
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let ws = tokio::select! {
            result = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match result {
                Ok(Ok((ws, _response))) => ws,
                Ok(Err(e)) => {
                    warn!(%url, error = %e, "cannot connect to the hub");
                    return SessionEnd::Lost { welcomed: false };
                }
                Err(_) => {
                    warn!(%url, timeout = ?CONNECT_TIMEOUT, "connecting to the hub timed out");
                    return SessionEnd::Lost { welcomed: false };
                }
            },
            () = shutdown_requested(shutdown) => return SessionEnd::Shutdown,
        };
        debug!(%url, "WebSocket open");
        session::run(&self.shared, ws, shutdown).await
    }
}

/// The node gateway's WebSocket URL for a hub base URL: `http` becomes `ws`, `https` becomes `wss`.
pub fn gateway_url(hub: &str) -> Result<String, NodeError> {
    let bad = |reason: &str| NodeError::HubUrl {
        url: hub.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = hub.trim().trim_end_matches('/');
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or_else(|| bad("expected http://, https://, ws:// or wss://"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("expected http://, https://, ws:// or wss://")),
    };
    if rest.is_empty() {
        return Err(bad("no host"));
    }
    let url = format!("{scheme}://{rest}{GATEWAY_PATH}");
    url.as_str()
        .into_client_request()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        assert_eq!(
            gateway_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080/stacknet/v1/nodes/connect"
        );
        assert_eq!(
            gateway_url("https://hub.example/base").unwrap(),
            "wss://hub.example/base/stacknet/v1/nodes/connect"
        );
        assert_eq!(
            gateway_url("wss://h").unwrap(),
            "wss://h/stacknet/v1/nodes/connect"
        );
        assert!(gateway_url("ftp://h").is_err());
        assert!(gateway_url("127.0.0.1:8080").is_err());
        assert!(gateway_url("http://").is_err());
    }
}
