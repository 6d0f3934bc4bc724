//! One task, from the hub's `task` frame to `done`: the checks before anything runs (the contract,
//! and the request with the workload's shared validator), then the backend run with its chunks
//! forwarded as they come, its output files sent in binary frames, then paperwork, signed and
//! committed to the wallet before `done` goes out (not waiting for the disk: the hub's log is the
//! copy a power cut cannot take, and `settlement::recover_wallet` reads it back). The output digest is the workload's
//! (`stacknet_api::output`): over what the client receives, so the hub recomputes the same.
//!
//! A task the hub cancels is told through its [`Cancellation`]; the backend stops and returns what it
//! produced, and the task ends like any other: every chunk the backend sent is forwarded, and the
//! paperwork, marked `cancelled`, covers exactly those (their digest, their usage), so the node is
//! paid for the work it did. A backend that does not stop within [`CANCEL_GRACE`] is dropped and the
//! task fails with `cancelled`.
//!
//! No frame goes out larger than the hub's `max_frame_bytes`: an embeddings response that would be is
//! split into several chunks (the digest does not change), and any other chunk that large fails the
//! task rather than cost the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stacknet_api::metrics::Operation;
use stacknet_api::output::{output_kind, split_embeddings, DigestError, OutputDigester, OutputKind};
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::jcs::JcsError;
use stacknet_protocol::wire::{
    self, Attachment, ErrorCode, ErrorFrame, FilePart, Limits, ModelOffer, NodeMessage, Task, WireError,
};
use stacknet_protocol::{ContractId, NodeKeyId, PublicKey, Sha256Digest, SignError, Timestamp};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error};

use crate::backend::{BackendError, BackendTask, Cancellation, InputFile, OutputFile};
use crate::digest::request_digest;
use crate::metrics::DISCONNECTED;
use crate::paperwork::{sign_paperwork, FinishedTask};
use crate::shared::Shared;
use crate::usage;
use crate::wallet::WalletError;

/// Chunks a backend may produce ahead of the socket before it waits.
pub const CHUNK_QUEUE_LEN: usize = 64;
/// How long a cancelled task's backend has to stop and report what it produced.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

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
        // The hub is a peer too: the request gets the same validator the hub ran at its edge.
        Some(_) => stacknet_api::request::validate(c.workload, task.request.clone())
            .map(|_| ())
            .map_err(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string())),
    }
}

#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot hash: {0}")]
    Hash(#[from] JcsError),
    #[error("cannot digest the output: {0}")]
    Digest(#[from] DigestError),
    #[error("an output file of {size} bytes is over the hub's limit of {limit}")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("an output chunk of {size} bytes is over the hub's frame limit of {limit} and cannot be split")]
    ChunkTooLarge { size: usize, limit: u64 },
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

impl TaskError {
    /// The code of the error frame that reports it.
    fn code(&self) -> ErrorCode {
        match self {
            TaskError::Backend(b) => b.code(),
            _ => ErrorCode::Internal,
        }
    }
}

/// What a task's run tells `/metrics` beyond its outcome.
#[derive(Debug, Default)]
struct Report {
    /// When its first output went to the hub, from its start.
    first_output: Option<Duration>,
    /// The usage its paperwork states.
    usage: Option<Usage>,
}

/// A task as the session starts it: what the hub sent, and how the hub may cancel it.
pub(crate) struct Accepted {
    pub task: Task,
    pub files: Vec<InputFile>,
    pub cancel: Cancellation,
}

/// Runs an accepted task (its input files whole) to its end and reports the result on `out` (the
/// session's outgoing frames); `hub` is what the hub accepts.
pub(crate) async fn run(shared: Arc<Shared>, accepted: Accepted, out: mpsc::Sender<Message>, hub: Limits) {
    let contract = accepted.task.contract.body.id;
    let (workload, model) = (
        accepted.task.contract.body.workload,
        accepted.task.contract.body.model.clone(),
    );
    let started = Instant::now();
    debug!(%contract, %model, "task started");
    let mut report = Report::default();
    let result = execute(&shared, accepted, &out, hub, started, &mut report).await;
    shared.metrics.task(Operation {
        workload,
        model: &model,
        error: match &result {
            Ok(()) => None,
            Err(TaskError::Disconnected) => Some(DISCONNECTED),
            Err(e) => Some(e.code().as_str()),
        },
        duration: started.elapsed(),
        first_output: report.first_output,
        usage: report.usage.as_ref(),
    });
    match result {
        Ok(()) => debug!(%contract, elapsed_ms = started.elapsed().as_millis() as u64, "task done"),
        Err(TaskError::Disconnected) => debug!(%contract, "task output dropped: the hub connection is gone"),
        Err(e) => {
            let code = e.code();
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
    accepted: Accepted,
    out: &mpsc::Sender<Message>,
    hub: Limits,
    started: Instant,
    report: &mut Report,
) -> Result<(), TaskError> {
    let Accepted { task, files, cancel } = accepted;
    let Task {
        contract, request, ..
    } = task;
    let id = contract.body.id;
    let request_sha256 = request_digest(&request)?;
    let request = Arc::new(request);
    let backend_task = BackendTask {
        contract: id,
        workload: contract.body.workload,
        model: contract.body.model.clone(),
        request: Arc::clone(&request),
        files: Arc::new(files),
        cancel: cancel.clone(),
    };
    let mut output = Output::new(
        id,
        OutputDigester::new(contract.body.workload)?,
        output_kind(contract.body.workload),
    );
    let (chunk_tx, mut chunk_rx) = mpsc::channel(CHUNK_QUEUE_LEN);
    let mut running = if contract.body.workload == Workload::VideoGeneration {
        // A job's work outlives this connection: a hub that lost the job and runs it again joins it.
        let key = (contract.body.stack, contract.body.model.clone(), request_sha256);
        let backend = Arc::clone(&shared.backend);
        shared
            .detached
            .run(key, cancel.clone(), chunk_tx, move |run_cancel, run_chunks| {
                backend.execute(
                    BackendTask {
                        cancel: run_cancel,
                        ..backend_task
                    },
                    run_chunks,
                )
            })
    } else {
        shared.backend.execute(backend_task, chunk_tx)
    };
    let give_up = async {
        cancel.cancelled().await;
        tokio::time::sleep(CANCEL_GRACE).await;
    };
    tokio::pin!(give_up);
    let outcome = loop {
        tokio::select! {
            biased;
            Some(chunk) = chunk_rx.recv() => {
                report.first_output.get_or_insert_with(|| started.elapsed());
                output.forward(chunk, out, hub).await?
            }
            result = &mut running => break result?,
            () = &mut give_up => return Err(BackendError::Abandoned.into()),
        }
    };
    let cancelled = cancel.is_cancelled();
    // The backend has returned: whatever it sent is already queued.
    drop(running);
    while let Ok(chunk) = chunk_rx.try_recv() {
        output.forward(chunk, out, hub).await?;
    }
    for file in &outcome.files {
        output.send_file(file, out, hub).await?;
    }
    let usage = outcome
        .usage
        .unwrap_or_else(|| usage::estimate(&request, output.content_chunks));
    report.usage = Some(usage.clone());
    let finished = FinishedTask {
        contract,
        request_sha256,
        output_sha256: output.digester.finish()?,
        usage,
        backend: outcome.info,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        warm: outcome.warm,
        hardware: shared.options.hardware.clone(),
        cancelled,
        commitment: outcome.committed.as_ref().map(|c| c.commitment.clone()),
    };
    let paperwork = sign_paperwork(&shared.key, finished)?;
    // Kept first: once `done` is out, the hub may pay for this, and the node must hold the proof. The
    // commit survives the process being killed; after a power cut the hub's log has it.
    shared.wallet.store(&paperwork).await?;
    // A model that became ready with this task (an upstream's first answer) is named before
    // `done`, so the hub sees it warm for the next task.
    if shared.ready_changed() {
        send(out, &shared.heartbeat()).await?;
    }
    send(
        out,
        &NodeMessage::Done {
            contract: id,
            paperwork: Box::new(paperwork),
            output_tokens: outcome.committed.map(|c| c.tokens),
        },
    )
    .await
}

/// The output side of a running task: numbering, digesting and counting chunks on their way out.
struct Output {
    contract: ContractId,
    seq: u64,
    digester: OutputDigester,
    kind: Option<OutputKind>,
    content_chunks: u64,
}

impl Output {
    fn new(contract: ContractId, digester: OutputDigester, kind: Option<OutputKind>) -> Self {
        Self {
            contract,
            seq: 0,
            digester,
            kind,
            content_chunks: 0,
        }
    }

    /// Sends a chunk of the backend's output in frames the hub accepts: as it is, or split.
    async fn forward(
        &mut self,
        data: Value,
        out: &mpsc::Sender<Message>,
        hub: Limits,
    ) -> Result<(), TaskError> {
        self.digester.chunk(&data);
        if usage::is_content_chunk(&data) {
            self.content_chunks += 1;
        }
        let limit = usize::try_from(hub.max_frame_bytes).unwrap_or(usize::MAX);
        let message = NodeMessage::Chunk {
            contract: self.contract,
            seq: self.seq,
            data,
        };
        let frame = wire::encode(&message)?;
        if frame.len() <= limit {
            self.seq += 1;
            return out
                .send(Message::text(frame))
                .await
                .map_err(|_| TaskError::Disconnected);
        }
        let too_large = TaskError::ChunkTooLarge {
            size: frame.len(),
            limit: hub.max_frame_bytes,
        };
        drop(frame);
        let NodeMessage::Chunk { data, .. } = message else {
            return Err(too_large);
        };
        if self.kind != Some(OutputKind::Embeddings) {
            return Err(too_large);
        }
        // The frame around a piece: the message with `null` for its data, at the largest `seq`.
        let envelope = wire::encode(&NodeMessage::Chunk {
            contract: self.contract,
            seq: u64::MAX,
            data: Value::Null,
        })?
        .len()
            - "null".len();
        let pieces = limit
            .checked_sub(envelope)
            .and_then(|room| split_embeddings(data, room))
            .ok_or(too_large)?;
        for data in pieces {
            let message = NodeMessage::Chunk {
                contract: self.contract,
                seq: self.seq,
                data,
            };
            self.seq += 1;
            send(out, &message).await?;
        }
        Ok(())
    }

    /// Announces an output file, then sends its bytes in binary frames the hub accepts.
    async fn send_file(
        &mut self,
        file: &OutputFile,
        out: &mpsc::Sender<Message>,
        hub: Limits,
    ) -> Result<(), TaskError> {
        let size = file.bytes.len() as u64;
        if size > hub.max_file_bytes {
            return Err(TaskError::FileTooLarge {
                size,
                limit: hub.max_file_bytes,
            });
        }
        let sha256 = Sha256Digest::of(&file.bytes);
        self.digester.file(sha256);
        let announce = NodeMessage::Output {
            contract: self.contract,
            file: Attachment {
                sha256,
                size,
                content_type: file.content_type.clone(),
            },
        };
        send(out, &announce).await?;
        let mut offset = 0u64;
        for data in file.bytes.chunks(hub.part_bytes()) {
            let part = FilePart {
                contract: self.contract,
                sha256,
                offset,
                data,
            };
            out.send(Message::binary(part.encode()))
                .await
                .map_err(|_| TaskError::Disconnected)?;
            offset += data.len() as u64;
        }
        Ok(())
    }
}

async fn send(out: &mpsc::Sender<Message>, message: &NodeMessage) -> Result<(), TaskError> {
    let frame = wire::encode(message)?;
    out.send(Message::text(frame))
        .await
        .map_err(|_| TaskError::Disconnected)
}
