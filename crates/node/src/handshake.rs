//! The first exchange on a new connection: the hub's `challenge`, the node's signed `hello` (binding
//! the hub's key and the nonce, so it cannot be replayed elsewhere or later), then `welcome` or `error`.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use stacknet_protocol::wire::{
    self, ErrorCode, ErrorFrame, Hello, HubMessage, Limits, NodeMessage, WireError,
};
use stacknet_protocol::{PublicKey, SignError, Signed, Timestamp};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{info, warn};

use crate::shared::Shared;

/// How long the hub may take to send its challenge, and then its welcome.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest heartbeat interval taken from a hub's welcome; a longer one (up to `u64::MAX` ms can
/// arrive) is clamped to this, so the liveness arithmetic built on it stays in range.
pub const MAX_HEARTBEAT_INTERVAL_MS: u64 = 3_600_000;
/// The software string in the Hello.
pub const SOFTWARE: &str = concat!("stacknet/", env!("CARGO_PKG_VERSION"));

/// A hub that accepted this node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Welcomed {
    pub hub: PublicKey,
    /// The Node Key id the hub runs this node as: its key's own, or the id a sale bound the key to.
    pub node: stacknet_protocol::NodeKeyId,
    pub heartbeat_interval: Duration,
    /// What the hub accepts from this node (frame size, output files).
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("the hub sent nothing for {timeout:?} while the node waited for {waiting_for}")]
    Timeout {
        timeout: Duration,
        waiting_for: &'static str,
    },
    #[error("the hub closed the connection during the handshake")]
    Closed,
    #[error("WebSocket error during the handshake: {0}")]
    Socket(String),
    #[error("the hub refused this node ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the hub presented key {offered}, but this node is pinned to hub key {pinned}")]
    WrongHub { pinned: String, offered: String },
    #[error("the node waited for {expected}, but the hub sent {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("cannot sign the hello: {0}")]
    Sign(#[from] SignError),
    #[error("cannot encode the hello: {0}")]
    Encode(#[from] WireError),
}

impl HandshakeError {
    /// Errors an operator must act on (wrong key, outdated software), as opposed to a flaky network.
    pub fn needs_operator(&self) -> bool {
        match self {
            HandshakeError::Refused { code, .. } => {
                matches!(code, ErrorCode::Unauthenticated | ErrorCode::UnsupportedVersion)
            }
            HandshakeError::WrongHub { .. } => true,
            _ => false,
        }
    }
}

pub(crate) async fn handshake<S>(ws: &mut S, shared: &Shared) -> Result<Welcomed, HandshakeError>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let (nonce, hub) = match next_message(ws, "a challenge").await? {
        HubMessage::Challenge { nonce, hub } => (nonce, hub),
        HubMessage::Error(frame) => return Err(refused(frame)),
        other => return Err(unexpected("a challenge", &other)),
    };
    if let Some(pinned) = shared.options.hub_key {
        if pinned != hub {
            return Err(HandshakeError::WrongHub {
                pinned: pinned.to_hex(),
                offered: hub.to_hex(),
            });
        }
    }
    let hello = Hello {
        node_key: shared.key.public_key(),
        hub,
        challenge: nonce,
        models: shared.offers.clone(),
        max_concurrency: shared.options.max_concurrency,
        software: SOFTWARE.to_owned(),
        created_at: Timestamp::now(),
        limits: Some(Limits::OURS),
    };
    let frame = wire::encode(&NodeMessage::Hello(Box::new(Signed::sign(hello, &shared.key)?)))?;
    ws.send(Message::text(frame))
        .await
        .map_err(|e| HandshakeError::Socket(e.to_string()))?;
    match next_message(ws, "a welcome").await? {
        HubMessage::Welcome {
            node_key,
            heartbeat_interval_ms,
            limits,
        } => {
            if node_key != shared.id {
                info!(runs_as = %node_key, own_id = %shared.id, "the hub runs this key as the Node Key id a sale bound it to");
            }
            if heartbeat_interval_ms > MAX_HEARTBEAT_INTERVAL_MS {
                warn!(
                    heartbeat_interval_ms,
                    used_ms = MAX_HEARTBEAT_INTERVAL_MS,
                    "the hub asked for a heartbeat interval beyond the node's limit; using the limit"
                );
            }
            let heartbeat_interval_ms = heartbeat_interval_ms.min(MAX_HEARTBEAT_INTERVAL_MS);
            Ok(Welcomed {
                hub,
                node: node_key,
                heartbeat_interval: Duration::from_millis(heartbeat_interval_ms),
                limits: limits.unwrap_or(Limits::LEGACY),
            })
        }
        HubMessage::Error(frame) => Err(refused(frame)),
        other => Err(unexpected("a welcome", &other)),
    }
}

/// The next decodable hub message. Malformed frames are logged and skipped; pings are answered by
/// tungstenite itself as frames are read.
async fn next_message<S>(ws: &mut S, waiting_for: &'static str) -> Result<HubMessage, HandshakeError>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let message = match timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(HandshakeError::Timeout {
                    timeout: HANDSHAKE_TIMEOUT,
                    waiting_for,
                })
            }
            Ok(None) => return Err(HandshakeError::Closed),
            Ok(Some(message)) => message.map_err(|e| HandshakeError::Socket(e.to_string()))?,
        };
        match message {
            Message::Text(text) => match wire::decode::<HubMessage>(text.as_bytes()) {
                Ok(message) => return Ok(message),
                Err(e) => warn!(error = %e, "ignoring a malformed frame from the hub"),
            },
            Message::Close(_) => return Err(HandshakeError::Closed),
            _ => {}
        }
    }
}

fn refused(frame: ErrorFrame) -> HandshakeError {
    HandshakeError::Refused {
        code: frame.code,
        message: frame.message,
    }
}

fn unexpected(expected: &'static str, got: &HubMessage) -> HandshakeError {
    HandshakeError::Unexpected {
        expected,
        got: kind(got),
    }
}

/// The `type` of a hub message, for logs.
pub(crate) fn kind(message: &HubMessage) -> &'static str {
    match message {
        HubMessage::Challenge { .. } => "challenge",
        HubMessage::Welcome { .. } => "welcome",
        HubMessage::Task(_) => "task",
        HubMessage::Cancel { .. } => "cancel",
        HubMessage::Heartbeat { .. } => "heartbeat",
        HubMessage::Error(_) => "error",
    }
}
