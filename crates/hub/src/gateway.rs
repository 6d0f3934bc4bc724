//! The node gateway: `GET /stacknet/v1/nodes/connect` upgrades to a WebSocket on which a node proves
//! its key (challenge, signed hello), then receives tasks and streams results back.
//!
//! The loop is written over `Sink`/`Stream` of WebSocket messages so tests can drive it through
//! channels. Anything malformed (wrong version, bad JSON, binary frames, a bad signature) gets an
//! error frame and a closed connection; it never touches other nodes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use stacknet_protocol::wire::{self, ErrorCode, ErrorFrame, Hello, HubMessage, NodeMessage, WireError};
use stacknet_protocol::{Nonce, Signed, Timestamp};
use tokio::sync::mpsc;

use crate::nodes::{NodeHandle, TaskEvent};
use crate::AppState;

/// How long a node has to answer the challenge.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;
/// Messages queued for one node's writer.
pub const OUTBOX_LEN: usize = 1024;
/// Most models one node may advertise, and the longest model name.
pub const MAX_MODELS_PER_NODE: usize = 256;
pub const MAX_MODEL_NAME_BYTES: usize = 256;
/// Most tasks one node may take at once.
pub const MAX_NODE_CONCURRENCY: u32 = 4096;

pub async fn connect(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.max_message_size(wire::MAX_FRAME_BYTES)
        .max_frame_size(wire::MAX_FRAME_BYTES)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            serve_node(sink, stream, state).await;
        })
}

fn error_frame(code: ErrorCode, message: impl Into<String>) -> Message {
    let frame = HubMessage::Error(ErrorFrame {
        contract: None,
        code,
        message: message.into(),
    });
    Message::Text(wire::encode(&frame).unwrap_or_default().into())
}

fn wire_error(e: &WireError) -> Message {
    error_frame(e.code(), e.to_string())
}

/// Runs one node connection to its end.
pub async fn serve_node<S, R, E>(mut sink: S, mut stream: R, state: AppState)
where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
{
    let nonce = Nonce::random();
    let hub = state.hub_key.public_key();
    let challenge = HubMessage::Challenge { nonce, hub };
    let Ok(text) = wire::encode(&challenge) else {
        return;
    };
    if sink.send(Message::Text(text.into())).await.is_err() {
        return;
    }
    let hello =
        match tokio::time::timeout(Duration::from_millis(HELLO_TIMEOUT_MS), next_text(&mut stream)).await {
            Ok(Some(frame)) => frame,
            _ => return,
        };
    let hello = match check_hello(&hello, &nonce, &state) {
        Ok(h) => h,
        Err(reply) => {
            let _ = sink.send(reply).await;
            let _ = sink.close().await;
            return;
        }
    };
    let (outbox, inbox) = mpsc::channel(OUTBOX_LEN);
    let conn_id = state.nodes.next_conn_id();
    let node = Arc::new(NodeHandle::new(
        hello.node_key,
        hello.models,
        hello.max_concurrency,
        conn_id,
        outbox,
    ));
    let welcome = HubMessage::Welcome {
        node_key: node.id,
        heartbeat_interval_ms: state.config.heartbeat_interval_ms,
    };
    let Ok(text) = wire::encode(&welcome) else { return };
    if sink.send(Message::Text(text.into())).await.is_err() {
        return;
    }
    if let Some(old) = state.nodes.register(node.clone()) {
        old.fail_all();
    }
    tracing::info!(node = %node.id, models = node.models.len(), "node connected");
    let (close_tx, close_rx) = mpsc::channel(1);
    let writer = tokio::spawn(write_loop(
        sink,
        inbox,
        close_rx,
        state.config.heartbeat_interval_ms,
    ));
    read_loop(&mut stream, &node, &state, &close_tx).await;
    state.nodes.unregister(&node.id, conn_id);
    node.fail_all();
    drop(close_tx);
    let _ = writer.await;
    tracing::info!(node = %node.id, "node disconnected");
}

/// The next text frame; `None` when the stream ends or sends something that is not text.
async fn next_text<R, E>(stream: &mut R) -> Option<Result<String, Message>>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    loop {
        match stream.next().await? {
            Ok(Message::Text(t)) => return Some(Ok(t.to_string())),
            Ok(Message::Binary(_)) => {
                return Some(Err(error_frame(
                    ErrorCode::MalformedFrame,
                    "binary frames are not part of protocol v1",
                )))
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
}

fn check_hello(frame: &Result<String, Message>, nonce: &Nonce, state: &AppState) -> Result<Hello, Message> {
    let text = frame.as_ref().map_err(Clone::clone)?;
    let msg = wire::decode::<NodeMessage>(text.as_bytes()).map_err(|e| wire_error(&e))?;
    let NodeMessage::Hello(hello) = msg else {
        return Err(error_frame(ErrorCode::MalformedFrame, "expected a hello"));
    };
    let hello: Signed<Hello> = *hello;
    let unauthenticated = |m: &str| error_frame(ErrorCode::Unauthenticated, m);
    if hello.body.hub != state.hub_key.public_key() {
        return Err(unauthenticated("hello is addressed to another hub key"));
    }
    if hello.body.challenge != *nonce {
        return Err(unauthenticated(
            "hello does not answer this connection's challenge",
        ));
    }
    if hello.verify(&hello.body.node_key).is_err() {
        return Err(unauthenticated(
            "hello signature does not verify with its node_key",
        ));
    }
    let body = hello.body;
    if body.max_concurrency == 0 || body.max_concurrency > MAX_NODE_CONCURRENCY {
        return Err(error_frame(
            ErrorCode::MalformedFrame,
            "max_concurrency must be 1..=4096",
        ));
    }
    if body.models.is_empty()
        || body.models.len() > MAX_MODELS_PER_NODE
        || body
            .models
            .iter()
            .any(|m| m.name.is_empty() || m.name.len() > MAX_MODEL_NAME_BYTES)
    {
        return Err(error_frame(
            ErrorCode::MalformedFrame,
            "models: 1 to 256 names of 1 to 256 bytes",
        ));
    }
    Ok(body)
}

async fn read_loop<R, E>(
    stream: &mut R,
    node: &Arc<NodeHandle>,
    state: &AppState,
    close: &mpsc::Sender<Message>,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    // A node that says nothing for three heartbeats is gone, whatever TCP thinks.
    let silence = Duration::from_millis(state.config.heartbeat_interval_ms.saturating_mul(3).max(1));
    let mut shutting_down = state.shutting_down.clone();
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(silence, next_text(stream)) => n,
            _ = until_true(&mut shutting_down) => {
                let _ = close.send(Message::Close(None)).await;
                return;
            }
        };
        let frame = match next {
            Ok(Some(Ok(text))) => text,
            Ok(Some(Err(reply))) => {
                let _ = close.send(reply).await;
                return;
            }
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(node = %node.id, "node silent for three heartbeats; dropping it");
                return;
            }
        };
        let msg = match wire::decode::<NodeMessage>(frame.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(node = %node.id, error = %e, "malformed frame from node; closing");
                let _ = close.send(wire_error(&e)).await;
                return;
            }
        };
        let (contract, event) = match msg {
            NodeMessage::Chunk { contract, data, .. } => (contract, TaskEvent::Chunk(data)),
            NodeMessage::Done { contract, paperwork } => (contract, TaskEvent::Done(paperwork)),
            NodeMessage::Error(ErrorFrame {
                contract: Some(contract),
                code,
                message,
            }) => (contract, TaskEvent::Error(code, message)),
            NodeMessage::Error(ErrorFrame {
                contract: None,
                code,
                message,
            }) => {
                tracing::warn!(node = %node.id, ?code, %message, "node reported an error");
                continue;
            }
            NodeMessage::Heartbeat { .. } => continue,
            NodeMessage::Hello(_) => {
                let _ = close
                    .send(error_frame(ErrorCode::MalformedFrame, "hello after welcome"))
                    .await;
                return;
            }
        };
        // A task the hub no longer waits for (time-out, client gone) is dropped silently.
        if let Some(tx) = node.task(&contract) {
            let _ = tx.send(event).await;
        }
    }
}

/// Resolves once the flag is true (or its sender is gone), holding no borrow across an await.
async fn until_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await.map(|_| ());
}

async fn write_loop<S>(
    mut sink: S,
    mut inbox: mpsc::Receiver<HubMessage>,
    mut close: mpsc::Receiver<Message>,
    heartbeat_ms: u64,
) where
    S: Sink<Message> + Unpin,
{
    let mut beat = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(1)));
    beat.tick().await;
    loop {
        let msg = tokio::select! {
            m = inbox.recv() => match m {
                Some(m) => m,
                None => break,
            },
            last = close.recv() => {
                if let Some(frame) = last {
                    let _ = sink.send(frame).await;
                }
                break;
            }
            _ = beat.tick() => HubMessage::Heartbeat { at: Timestamp::now() },
        };
        let Ok(text) = wire::encode(&msg) else { continue };
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}
