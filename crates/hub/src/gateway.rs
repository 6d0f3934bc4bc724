//! The node gateway: `GET /stacknet/v1/nodes/connect` upgrades to a WebSocket on which a node proves
//! its key (challenge, signed hello), then receives tasks and streams results back.
//!
//! The loop is written over `Sink`/`Stream` of WebSocket messages so tests can drive it through
//! channels. Anything malformed (wrong version, bad JSON, a bad signature) gets an error frame and
//! a closed connection; it never touches other nodes. Binary frames carry output files: a node
//! announces each with an `output` message, sends its pieces in order, and the gateway hands the
//! task the whole file once its size and sha256 check out (see `Incoming`).
//!
//! The reader never waits for a task: it hands each event over without blocking, and a task with
//! more output waiting for its client than the hub allows is abandoned (`NodeHandle::deliver`), so
//! one client that stops reading never stops this node's socket and its other tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use sha2::{Digest, Sha256};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::{
    self, Attachment, ErrorCode, ErrorFrame, Hello, HubMessage, Limits, ModelOffer, NodeMessage, WireError,
};
use stacknet_protocol::{ContractId, Nonce, Sha256Digest, Signed, Timestamp};
use tokio::sync::mpsc;

use crate::nodes::{Delivery, NodeHandle, Outbound, TaskEvent};
use crate::AppState;

/// How long a node has to answer the challenge.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;
/// Messages queued for one node's writer.
pub const OUTBOX_LEN: usize = 1024;
/// Most models one node may advertise, and the longest model name.
pub const MAX_MODELS_PER_NODE: usize = 256;
pub use stacknet_api::request::MAX_MODEL_NAME_BYTES;
/// Most tasks one node may take at once.
pub const MAX_NODE_CONCURRENCY: u32 = 4096;
/// Output files being received at once on one connection.
pub const MAX_INCOMING_FILES: usize = 64;
/// What the hub accepts from nodes, announced in every Welcome.
pub const HUB_LIMITS: Limits = Limits::OURS;

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
    // The id the key runs as: its own, or the one a sale bound it to; a key a sale replaced runs
    // as nothing.
    let id = match state.attribution.acting_id(&hello.node_key) {
        Ok(id) => id,
        Err(why) => {
            let _ = sink.send(error_frame(ErrorCode::Unauthenticated, &why)).await;
            let _ = sink.close().await;
            return;
        }
    };
    let (outbox, inbox) = mpsc::channel(OUTBOX_LEN);
    let conn_id = state.nodes.next_conn_id();
    let record = state.nodes.record_for(id);
    let node = Arc::new(
        NodeHandle::new(
            hello.node_key,
            hello.models,
            hello.max_concurrency,
            hello.limits.unwrap_or(Limits::LEGACY),
            conn_id,
            outbox,
        )
        .with_id(id)
        .with_record(record),
    );
    let welcome = HubMessage::Welcome {
        node_key: node.id,
        heartbeat_interval_ms: state.config.heartbeat_interval_ms,
        limits: Some(HUB_LIMITS),
    };
    let Ok(text) = wire::encode(&welcome) else { return };
    if sink.send(Message::Text(text.into())).await.is_err() {
        return;
    }
    // The scheduler routes to the node only with its bond known: read it from the ledger first.
    if let Err(e) = crate::stake::refresh_bond(&state, node.id).await {
        tracing::warn!(node = %node.id, error = %e, "cannot read the node's bond; it gets no task until it moves");
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

/// A frame from a node: a message, or a piece of a file.
enum Frame {
    Text(String),
    Binary(axum::body::Bytes),
}

/// The next data frame; `None` when the stream ends.
async fn next_frame<R, E>(stream: &mut R) -> Option<Frame>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    loop {
        match stream.next().await? {
            Ok(Message::Text(t)) => return Some(Frame::Text(t.to_string())),
            Ok(Message::Binary(b)) => return Some(Frame::Binary(b)),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
}

/// The hello: the first frame, which must be text.
async fn next_text<R, E>(stream: &mut R) -> Option<Result<String, Message>>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    match next_frame(stream).await? {
        Frame::Text(t) => Some(Ok(t)),
        Frame::Binary(_) => Some(Err(error_frame(
            ErrorCode::MalformedFrame,
            "expected a hello, got a binary frame",
        ))),
    }
}

/// An output file being received: announced by an `output` message, filled by binary frames.
struct Incoming {
    meta: Attachment,
    bytes: Vec<u8>,
    sha: Sha256,
}

/// An output file received whole, its bytes checked against its sha256.
type WholeFile = (Attachment, axum::body::Bytes);

/// A binary frame that does not fit: the task it names (if it could be read) and why.
type BadPiece = (Option<ContractId>, String);

/// The output files of one connection's tasks that are still arriving.
#[derive(Default)]
struct IncomingFiles {
    files: HashMap<(ContractId, Sha256Digest), Incoming>,
}

impl IncomingFiles {
    fn announce(&mut self, contract: ContractId, meta: Attachment) -> Result<(), String> {
        if meta.size == 0 || meta.size > HUB_LIMITS.max_file_bytes {
            return Err(format!(
                "an output file must be 1 to {} bytes, not {}",
                HUB_LIMITS.max_file_bytes, meta.size
            ));
        }
        if self.files.len() >= MAX_INCOMING_FILES {
            return Err(format!("more than {MAX_INCOMING_FILES} output files in flight"));
        }
        let capacity = usize::try_from(meta.size).map_err(|e| e.to_string())?;
        self.files.insert(
            (contract, meta.sha256),
            Incoming {
                meta,
                bytes: Vec::with_capacity(capacity),
                sha: Sha256::new(),
            },
        );
        Ok(())
    }

    /// Adds a piece; the whole file once it is complete and its hash checks out. An error names
    /// the task it fails, when the frame said which.
    fn piece(&mut self, frame: &[u8]) -> Result<Option<(ContractId, WholeFile)>, BadPiece> {
        let part = wire::decode_file_part(frame).map_err(|e| (None, e.to_string()))?;
        let key = (part.contract, part.sha256);
        let fail = |why: &str| (Some(part.contract), why.to_owned());
        let file = self
            .files
            .get_mut(&key)
            .ok_or_else(|| fail("a binary frame for a file that was not announced"))?;
        if part.offset != file.bytes.len() as u64 {
            self.files.remove(&key);
            return Err(fail("a binary frame out of order"));
        }
        if file.bytes.len() as u64 + part.data.len() as u64 > file.meta.size {
            self.files.remove(&key);
            return Err(fail("a file longer than announced"));
        }
        file.bytes.extend_from_slice(part.data);
        file.sha.update(part.data);
        if (file.bytes.len() as u64) < file.meta.size {
            return Ok(None);
        }
        let Some(done) = self.files.remove(&key) else {
            return Ok(None);
        };
        if Sha256Digest(done.sha.finalize().into()) != done.meta.sha256 {
            return Err(fail("a file whose bytes do not match its sha256"));
        }
        Ok(Some((
            part.contract,
            (done.meta, axum::body::Bytes::from(done.bytes)),
        )))
    }

    fn forget(&mut self, contract: &ContractId) {
        self.files.retain(|(c, _), _| c != contract);
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
    // A model offered with a file other than the one the catalog pins is refused outright: its tasks
    // would all fail C0 at acceptance.
    for offer in &body.models {
        if let Some(why) = tool_refusal(offer) {
            return Err(error_frame(
                ErrorCode::InvalidRequest,
                format!("model offer {:?} refused: {why}", offer.name),
            ));
        }
        if offer.model_sha256.is_some() {
            if let Some(why) =
                crate::validate::envelope::contradicts_pin(&offer.name, offer.model_sha256.as_ref())
            {
                return Err(error_frame(
                    ErrorCode::InvalidRequest,
                    format!("model offer refused: {why}"),
                ));
            }
        }
    }
    Ok(body)
}

/// Why an offer is refused as a tool: a `tool_call` model carries its spec (within its limits), under
/// a tool name that is not one of the network's own; no other model carries one.
fn tool_refusal(offer: &ModelOffer) -> Option<String> {
    let is_tool = offer.workloads.contains(&Workload::ToolCall);
    match &offer.tool {
        None if is_tool => Some("a tool_call model must carry its tool spec".to_owned()),
        None => None,
        Some(_) if !is_tool => Some("only a tool_call model carries a tool spec".to_owned()),
        Some(_) if !stacknet_api::request::tool::is_tool_name(&offer.name) => {
            Some("a tool's name is 1 to 128 letters, digits, '_', '-' or '.'".to_owned())
        }
        Some(_) if crate::mcp::NETWORK_TOOLS.contains(&offer.name.as_str()) => {
            Some("that name is one of the network's own tools".to_owned())
        }
        Some(spec) => spec.refusal(),
    }
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
    let mut incoming = IncomingFiles::default();
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(silence, next_frame(stream)) => n,
            _ = until_true(&mut shutting_down) => {
                let _ = close.send(Message::Close(None)).await;
                return;
            }
        };
        let frame = match next {
            Ok(Some(Frame::Text(text))) => text,
            Ok(Some(Frame::Binary(bytes))) => {
                match incoming.piece(&bytes) {
                    Ok(None) => {}
                    Ok(Some((contract, (meta, file)))) => {
                        let size = meta.size;
                        deliver(node, contract, TaskEvent::File(meta, file), size, "output file");
                    }
                    Err((None, why)) => tracing::warn!(node = %node.id, %why, "bad file from node"),
                    Err((Some(contract), why)) => {
                        incoming.forget(&contract);
                        if node.is_running(&contract) {
                            tracing::warn!(node = %node.id, %why, "bad file from node");
                            let error = TaskEvent::Error(ErrorCode::MalformedFrame, why);
                            deliver(node, contract, error, 0, "binary");
                        } else {
                            stray(node, contract, "binary");
                        }
                    }
                }
                continue;
            }
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(node = %node.id, "node silent for three heartbeats; dropping it");
                return;
            }
        };
        let size = frame.len() as u64;
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
            NodeMessage::Output { contract, file } => {
                if !node.is_running(&contract) {
                    stray(node, contract, "output");
                } else if let Err(why) = incoming.announce(contract, file) {
                    deliver(
                        node,
                        contract,
                        TaskEvent::Error(ErrorCode::MalformedFrame, why),
                        0,
                        "output",
                    );
                }
                continue;
            }
            NodeMessage::Done {
                contract,
                paperwork,
                output_tokens,
            } => {
                incoming.forget(&contract);
                finish(
                    node,
                    contract,
                    TaskEvent::Done(paperwork, output_tokens),
                    size,
                    "done",
                );
                continue;
            }
            NodeMessage::Error(ErrorFrame {
                contract: Some(contract),
                code,
                message,
            }) => {
                incoming.forget(&contract);
                finish(node, contract, TaskEvent::Error(code, message), size, "error");
                continue;
            }
            NodeMessage::Error(ErrorFrame {
                contract: None,
                code,
                message,
            }) => {
                tracing::warn!(node = %node.id, ?code, %message, "node reported an error");
                continue;
            }
            NodeMessage::Heartbeat { ready, .. } => {
                node.set_ready(&ready);
                continue;
            }
            NodeMessage::Hello(_) => {
                let _ = close
                    .send(error_frame(ErrorCode::MalformedFrame, "hello after welcome"))
                    .await;
                return;
            }
        };
        deliver(node, contract, event, size, "chunk");
    }
}

/// Hands an event to its task without waiting; a frame for a task that is not running on this node
/// is refused (see [`stray`]).
fn deliver(node: &NodeHandle, contract: ContractId, event: TaskEvent, bytes: u64, kind: &'static str) {
    let delivery = node.deliver(&contract, event, bytes);
    settle(node, contract, delivery, kind);
}

/// Hands the task its last event from the node and ends it there: any later frame for it is stray.
fn finish(node: &NodeHandle, contract: ContractId, event: TaskEvent, bytes: u64, kind: &'static str) {
    let delivery = node.finish(&contract, event, bytes);
    settle(node, contract, delivery, kind);
}

fn settle(node: &NodeHandle, contract: ContractId, delivery: Delivery, kind: &'static str) {
    match delivery {
        Delivery::Queued => {}
        Delivery::Abandoned => tracing::warn!(
            node = %node.id,
            %contract,
            "task abandoned: its output waits for a client that reads slower than the node writes"
        ),
        Delivery::NotRunning => stray(node, contract, kind),
    }
}

/// A frame for a task that is not running on this node: another node's, one it already finished,
/// or one that never was. It is dropped with an error frame to the node, a log line and a mark
/// against its key. Tasks of this key that the hub ended itself (its earlier connection closed, the
/// client went away) may still get late frames; those are dropped without a mark.
fn stray(node: &NodeHandle, contract: ContractId, kind: &'static str) {
    if node.record.ended_recently(&contract) {
        tracing::debug!(node = %node.id, %contract, kind, "late frame for a task the hub ended");
        return;
    }
    node.mark_stray();
    tracing::warn!(
        node = %node.id,
        %contract,
        kind,
        marks = node.stray_frames(),
        "frame for a task that is not running on this node; dropped"
    );
    let frame = HubMessage::Error(ErrorFrame {
        contract: Some(contract),
        code: ErrorCode::BadContract,
        message: format!("{contract} is not a running task of this node; its {kind} frame was dropped"),
    });
    // Never wait on a node that does not read: the mark and the log line are what count.
    let _ = node.outbox.try_send(Outbound::Message(frame));
}

/// Resolves once the flag is true (or its sender is gone), holding no borrow across an await.
async fn until_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await.map(|_| ());
}

async fn write_loop<S>(
    mut sink: S,
    mut inbox: mpsc::Receiver<Outbound>,
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
            _ = beat.tick() => Outbound::Message(HubMessage::Heartbeat { at: Timestamp::now() }),
        };
        let frame = match msg {
            Outbound::Message(m) => {
                let Ok(text) = wire::encode(&m) else { continue };
                Message::Text(text.into())
            }
            Outbound::Encoded(text) => Message::Text(text.into()),
            Outbound::FilePart(bytes) => Message::Binary(bytes.into()),
        };
        if sink.send(frame).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}
