//! One task, from the hub's `task` frame to `done`: the checks before anything runs, then the backend
//! run with its chunks forwarded as they come, then paperwork, signed and durable in the wallet before
//! `done` goes out.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use stacknet_protocol::jcs::JcsError;
use stacknet_protocol::wire::{self, ErrorCode, ErrorFrame, ModelOffer, NodeMessage, Task, WireError};
use stacknet_protocol::{ContractId, NodeKeyId, PublicKey, SignError, Timestamp};
use tokio::sync::mpsc;
use tracing::{debug, error};

use crate::backend::{BackendError, BackendTask};
use crate::digest::{request_digest, OutputHasher};
use crate::node::Shared;
use crate::paperwork::{sign_paperwork, FinishedTask};
use crate::usage;
use crate::wallet::WalletError;

/// Chunks a backend may produce ahead of the socket before it waits.
pub const CHUNK_QUEUE_LEN: usize = 64;

/// Why a task is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Everything checkable from the task alone: the hub's signature, the assignment to this node, the
/// expiry, and that the model and workload are served. (Capacity is the session's to check.)
pub fn check(task: &Task, hub: &PublicKey, me: NodeKeyId, offers: &[ModelOffer]) -> Result<(), Refusal> {
    let c = &task.contract.body;
    if c.hub != *hub {
        return Err(Refusal::new(
            ErrorCode::BadContract,
            format!(
                "the contract names hub {}, but this connection is to hub {}",
                c.hub, hub
            ),
        ));
    }
    task.contract
        .verify(hub)
        .map_err(|e| Refusal::new(ErrorCode::BadContract, e.to_string()))?;
    if c.node_key != me {
        return Err(Refusal::new(
            ErrorCode::BadContract,
            format!(
                "the contract is assigned to {}, not to this node ({me})",
                c.node_key
            ),
        ));
    }
    if Timestamp::now() > c.expires_at {
        return Err(Refusal::new(
            ErrorCode::BadContract,
            format!("the contract expired at {}", c.expires_at),
        ));
    }
    match offers.iter().find(|o| o.name == c.model) {
        None => Err(Refusal::new(
            ErrorCode::UnknownModel,
            format!("this node does not serve model {:?}", c.model),
        )),
        Some(offer) if !offer.workloads.contains(&c.workload) => Err(Refusal::new(
            ErrorCode::UnknownModel,
            format!("this node serves {:?} but not for {:?}", c.model, c.workload),
        )),
        Some(_) => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot hash: {0}")]
    Hash(#[from] JcsError),
    #[error("cannot sign paperwork: {0}")]
    Sign(#[from] SignError),
    #[error("cannot store paperwork: {0}")]
    Wallet(#[from] WalletError),
    #[error("cannot encode a frame: {0}")]
    Encode(#[from] WireError),
    /// The session is gone; nothing can be delivered.
    #[error("the hub connection is gone")]
    Disconnected,
}

/// Runs an accepted task to its end and reports the result on `out` (the session's outgoing frames).
pub(crate) async fn run(shared: Arc<Shared>, task: Task, out: mpsc::Sender<String>) {
    let contract = task.contract.body.id;
    let started = Instant::now();
    debug!(%contract, model = %task.contract.body.model, "task started");
    match execute(&shared, task, &out, started).await {
        Ok(()) => debug!(%contract, elapsed_ms = started.elapsed().as_millis() as u64, "task done"),
        Err(TaskError::Disconnected) => debug!(%contract, "task output dropped: the hub connection is gone"),
        Err(e) => {
            let code = match &e {
                TaskError::Backend(b) => b.code(),
                _ => ErrorCode::Internal,
            };
            if code == ErrorCode::Internal {
                error!(%contract, error = %e, "task failed inside the node");
            } else {
                debug!(%contract, error = %e, "task failed");
            }
            let frame = ErrorFrame {
                contract: Some(contract),
                code,
                message: e.to_string(),
            };
            if send(&out, &NodeMessage::Error(frame)).await.is_err() {
                debug!(%contract, "could not report the failure: the hub connection is gone");
            }
        }
    }
}

async fn execute(
    shared: &Shared,
    task: Task,
    out: &mpsc::Sender<String>,
    started: Instant,
) -> Result<(), TaskError> {
    let Task { contract, request } = task;
    let id = contract.body.id;
    let request_sha256 = request_digest(&request)?;
    let request = Arc::new(request);
    let backend_task = BackendTask {
        contract: id,
        workload: contract.body.workload,
        model: contract.body.model.clone(),
        request: Arc::clone(&request),
    };
    let (chunk_tx, mut chunk_rx) = mpsc::channel(CHUNK_QUEUE_LEN);
    let mut running = shared.backend.execute(backend_task, chunk_tx);
    let mut output = Output::new(id);
    let outcome = loop {
        tokio::select! {
            biased;
            Some(chunk) = chunk_rx.recv() => output.forward(chunk, out).await?,
            result = &mut running => break result?,
        }
    };
    // The backend has returned: whatever it sent is already queued.
    drop(running);
    while let Ok(chunk) = chunk_rx.try_recv() {
        output.forward(chunk, out).await?;
    }
    let usage = outcome
        .usage
        .unwrap_or_else(|| usage::estimate(&request, output.content_chunks));
    let finished = FinishedTask {
        contract,
        request_sha256,
        output_sha256: output.hasher.finish(),
        usage,
        backend: outcome.info,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        warm: outcome.warm,
        hardware: shared.options.hardware.clone(),
    };
    let paperwork = sign_paperwork(&shared.key, finished)?;
    // Durable first: once `done` is out, the hub may pay for this, and the node must hold the proof.
    shared.wallet.store(&paperwork).await?;
    send(
        out,
        &NodeMessage::Done {
            contract: id,
            paperwork: Box::new(paperwork),
        },
    )
    .await
}

/// The output side of a running task: numbering, hashing and counting chunks on their way out.
struct Output {
    contract: ContractId,
    seq: u64,
    hasher: OutputHasher,
    content_chunks: u64,
}

impl Output {
    fn new(contract: ContractId) -> Self {
        Self {
            contract,
            seq: 0,
            hasher: OutputHasher::new(),
            content_chunks: 0,
        }
    }

    async fn forward(&mut self, data: Value, out: &mpsc::Sender<String>) -> Result<(), TaskError> {
        self.hasher.push(&data)?;
        if usage::is_content_chunk(&data) {
            self.content_chunks += 1;
        }
        let message = NodeMessage::Chunk {
            contract: self.contract,
            seq: self.seq,
            data,
        };
        self.seq += 1;
        send(out, &message).await
    }
}

async fn send(out: &mpsc::Sender<String>, message: &NodeMessage) -> Result<(), TaskError> {
    let frame = wire::encode(message)?;
    out.send(frame).await.map_err(|_| TaskError::Disconnected)
}
