//! One connection to the hub, from handshake to its end.
//!
//! A single loop owns the socket: it reads hub frames, writes frames that running tasks queue on a
//! bounded channel (batched: everything queued goes out with one flush), reaps finished tasks, and
//! watches the hub's liveness and the shutdown signal. A task with input files waits (holding its
//! slot) until their binary frames have arrived whole and match their sha256. Tasks run on their own tokio tasks in a
//! `JoinSet`, so when the connection ends they are aborted together (their output could not be
//! delivered; a video task's work goes on, detached, for the task sent again to join: see
//! [`crate::detached`]), and on shutdown the loop stops taking tasks and waits for the running ones. A
//! `cancel` from the hub does not abort a task: it fires the task's [`Canceller`], the backend stops,
//! and the task signs for what it produced (see [`crate::task`]).
//! Written over `Sink`/`Stream` of WebSocket messages, so tests can drive it with channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use sha2::{Digest, Sha256};
use stacknet_protocol::wire::{
    self, ErrorCode, ErrorFrame, HubMessage, Limits, NodeMessage, Task, WireError,
};
use stacknet_protocol::{ContractId, PublicKey, Sha256Digest};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, error, info, warn};

use crate::backend::{Cancellation, Canceller, InputFile};
use crate::handshake::{handshake, kind};
use crate::shared::{shutdown_requested, Shared};
use crate::task::{self, Accepted, Refusal};

/// Frames tasks may queue ahead of the socket before they wait.
pub const OUTBOUND_QUEUE_LEN: usize = 1024;
/// Most input files one task may carry.
pub const MAX_TASK_FILES: usize = 16;
/// The most queued frames written before one flush.
pub const MAX_WRITE_BATCH: usize = 64;
/// Stands in for "never" in timers that are switched off.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// Shutdown was requested; in-flight tasks were drained.
    Shutdown,
    /// The connection failed or ended; `welcomed` says whether the handshake had succeeded.
    Lost { welcomed: bool },
}

/// Runs one connection: handshake, then serve until the connection ends or shutdown completes.
pub(crate) async fn run<S>(
    shared: &Arc<Shared>,
    mut ws: S,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let welcomed = tokio::select! {
        result = handshake(&mut ws, shared) => result,
        () = shutdown_requested(shutdown) => {
            let _ = ws.send(Message::Close(None)).await;
            return SessionEnd::Shutdown;
        }
    };
    let welcomed = match welcomed {
        Ok(w) => w,
        Err(e) if e.needs_operator() => {
            error!(error = %e, "the hub refused this node; retrying in case it changes (check the key, pin and version)");
            return SessionEnd::Lost { welcomed: false };
        }
        Err(e) => {
            warn!(error = %e, "handshake failed");
            return SessionEnd::Lost { welcomed: false };
        }
    };
    info!(hub = %welcomed.hub, node_key = %welcomed.node, "connected to the hub");
    // Saturating and capped: the interval comes from the hub and the count from the operator, and
    // the deadline is an `Instant` plus this.
    let liveness = (!welcomed.heartbeat_interval.is_zero()).then(|| {
        welcomed
            .heartbeat_interval
            .saturating_mul(shared.options.heartbeat_misses.max(1))
            .min(FAR_FUTURE)
    });
    shared.metrics.connected(true);
    let mut session = Session::new(Arc::clone(shared), welcomed, liveness);
    let end = session.serve(&mut ws, shutdown).await;
    shared.metrics.connected(false);
    session.stop().await;
    end
}

/// A task whose files have all arrived, with its slot: ready to start.
type Ready = (Task, Vec<InputFile>, OwnedSemaphorePermit);

/// A task whose input files are still arriving; it holds its slot meanwhile.
struct Pending {
    task: Task,
    permit: OwnedSemaphorePermit,
    /// The files received whole, in order.
    done: Vec<InputFile>,
    /// The file being received: its bytes so far and their running hash.
    current: Vec<u8>,
    sha: Sha256,
}

/// A task running on its own tokio task.
struct RunningTask {
    handle: AbortHandle,
    cancel: Canceller,
}

struct Session {
    shared: Arc<Shared>,
    hub: PublicKey,
    /// The Node Key id the hub runs this node as (see [`crate::handshake::Welcomed`]).
    me: stacknet_protocol::NodeKeyId,
    /// What the hub accepts from this node.
    hub_limits: Limits,
    pending: HashMap<ContractId, Pending>,
    /// Silence from the hub longer than this means the connection is dead.
    liveness: Option<Duration>,
    tasks: JoinSet<()>,
    running: HashMap<ContractId, RunningTask>,
    contracts: HashMap<tokio::task::Id, ContractId>,
    out_tx: mpsc::Sender<Message>,
    out_rx: mpsc::Receiver<Message>,
    draining: bool,
}

impl Session {
    fn new(shared: Arc<Shared>, welcomed: crate::handshake::Welcomed, liveness: Option<Duration>) -> Self {
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE_LEN);
        let (hub, hub_limits, me) = (welcomed.hub, welcomed.limits, welcomed.node);
        Self {
            me,
            shared,
            hub,
            hub_limits,
            pending: HashMap::new(),
            liveness,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            contracts: HashMap::new(),
            out_tx,
            out_rx,
            draining: false,
        }
    }

    async fn serve<S>(&mut self, ws: &mut S, shutdown: &mut watch::Receiver<bool>) -> SessionEnd
    where
        S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    {
        let lost = SessionEnd::Lost { welcomed: true };
        // The models ready now, before any task: the hub counts a task warm only once it heard so.
        if let Err(e) = send(ws, &self.shared.heartbeat()).await {
            warn!(error = %e, "cannot write to the hub");
            return lost;
        }
        let limit = self.liveness.unwrap_or(FAR_FUTURE);
        // Frames only note the time they arrived; the timer checks it when it fires, so the hot path
        // touches no timer.
        let mut last_heard = Instant::now();
        let liveness = sleep_until(last_heard + limit);
        let drain = sleep_until(last_heard + FAR_FUTURE);
        tokio::pin!(liveness, drain);
        loop {
            if self.draining && self.tasks.is_empty() {
                return self.finish_drain(ws).await;
            }
            tokio::select! {
                frame = ws.next() => {
                    last_heard = Instant::now();
                    if let Err(reason) = self.on_frame(frame, ws).await {
                        warn!(%reason, "hub connection ended");
                        return lost;
                    }
                }
                Some(frame) = self.out_rx.recv() => {
                    if let Err(e) = self.write_queued(ws, frame).await {
                        warn!(error = %e, "cannot write to the hub");
                        return lost;
                    }
                }
                Some(joined) = self.tasks.join_next_with_id() => self.reap(joined),
                () = &mut liveness, if self.liveness.is_some() => {
                    let due = last_heard + limit;
                    if Instant::now() >= due {
                        warn!(silent_for = ?limit, "the hub went silent; reconnecting");
                        return lost;
                    }
                    liveness.as_mut().reset(due);
                }
                () = shutdown_requested(shutdown), if !self.draining => {
                    info!(running = self.running.len(), "shutting down: finishing in-flight tasks");
                    self.draining = true;
                    drain.as_mut().reset(Instant::now() + self.shared.options.drain_timeout);
                }
                () = &mut drain, if self.draining => {
                    warn!(running = self.running.len(), "shutdown drain timed out; aborting the rest");
                    self.tasks.abort_all();
                    drain.as_mut().reset(Instant::now() + FAR_FUTURE);
                }
            }
        }
    }

    /// Handles what the socket gave; `Err` ends the connection.
    async fn on_frame<S>(&mut self, frame: Option<Result<Message, WsError>>, ws: &mut S) -> Result<(), String>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        match frame {
            Some(Ok(message)) => self.on_message(message, ws).await,
            Some(Err(e)) => Err(format!("the connection failed: {e}")),
            None => Err("the hub closed the connection".to_owned()),
        }
    }

    /// Handles one WebSocket message; `Err` ends the connection.
    async fn on_message<S>(&mut self, message: Message, ws: &mut S) -> Result<(), String>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        match message {
            Message::Text(text) => match wire::decode::<HubMessage>(text.as_bytes()) {
                Ok(message) => self.on_hub_message(message, ws).await,
                // The hub holds a slot for a task until it hears back: a task it cannot decode is
                // still answered, or the slot would stay taken until the hub's time-out.
                Err(e) => match wire::undecodable_task(text.as_bytes()) {
                    Some(contract) => {
                        warn!(%contract, error = %e, "refusing a task that cannot be decoded");
                        let why = format!("cannot decode the task: {e}");
                        // Too large is the request's size, not a broken hub.
                        let code = match e {
                            WireError::TooLarge { .. } => ErrorCode::InvalidRequest,
                            _ => ErrorCode::MalformedFrame,
                        };
                        refuse(&self.shared, ws, contract, Refusal::new(code, why)).await
                    }
                    None => {
                        warn!(error = %e, "ignoring a malformed frame from the hub");
                        Ok(())
                    }
                },
            },
            // tungstenite queued the pong while reading; flush so it leaves now.
            Message::Ping(_) => ws.flush().await.map_err(|e| e.to_string()),
            Message::Close(frame) => Err(format!("the hub closed the connection: {frame:?}")),
            Message::Binary(bytes) => {
                self.on_file_part(&bytes, ws).await;
                Ok(())
            }
            Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    async fn on_hub_message<S>(&mut self, message: HubMessage, ws: &mut S) -> Result<(), String>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        match message {
            HubMessage::Task(task) => self.on_task(*task, ws).await,
            HubMessage::Cancel { contract } => self.on_cancel(contract, ws).await,
            HubMessage::Heartbeat { .. } => send(ws, &self.shared.heartbeat()).await,
            HubMessage::Error(frame) => {
                warn!(code = ?frame.code, message = %frame.message, contract = ?frame.contract, "the hub reported an error");
                Ok(())
            }
            other @ (HubMessage::Challenge { .. } | HubMessage::Welcome { .. }) => {
                warn!(
                    kind = kind(&other),
                    "ignoring a handshake message after the handshake"
                );
                Ok(())
            }
        }
    }

    /// The hub no longer wants a task. One still receiving its files never started: it is
    /// answered `cancelled` at once. A running one is told, and ends with paperwork for what it
    /// produced (or an error); the hub waits for that answer.
    async fn on_cancel<S>(&mut self, contract: ContractId, ws: &mut S) -> Result<(), String>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        if self.pending.remove(&contract).is_some() {
            let why = Refusal::new(ErrorCode::Cancelled, "cancelled by the hub before it started");
            return refuse(&self.shared, ws, contract, why).await;
        }
        match self.running.get(&contract) {
            Some(task) => {
                debug!(%contract, "task cancelled by the hub");
                task.cancel.cancel();
            }
            None => debug!(%contract, "cancel for a task that is not running"),
        }
        Ok(())
    }

    async fn on_task<S>(&mut self, task: Task, ws: &mut S) -> Result<(), String>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        let contract = task.contract.body.id;
        match self.admit(&task) {
            Ok(permit) if task.attachments.is_empty() => {
                self.start(task, Vec::new(), permit);
                Ok(())
            }
            Ok(permit) => {
                self.pending.insert(
                    contract,
                    Pending {
                        task,
                        permit,
                        done: Vec::new(),
                        current: Vec::new(),
                        sha: Sha256::new(),
                    },
                );
                Ok(())
            }
            Err(refusal) => refuse(&self.shared, ws, contract, refusal).await,
        }
    }

    fn start(&mut self, task: Task, files: Vec<InputFile>, permit: OwnedSemaphorePermit) {
        let contract = task.contract.body.id;
        let (cancel, cancellation) = Cancellation::pair();
        let accepted = Accepted {
            task,
            files,
            cancel: cancellation,
        };
        let run = task::run(
            Arc::clone(&self.shared),
            accepted,
            self.out_tx.clone(),
            self.hub_limits,
        );
        let handle = self.tasks.spawn(async move {
            run.await;
            drop(permit);
        });
        self.contracts.insert(handle.id(), contract);
        self.running.insert(contract, RunningTask { handle, cancel });
    }

    /// A piece of a pending task's input file. A piece that does not fit (unknown task, out of
    /// order, too long, a hash that does not match) fails that task alone.
    async fn on_file_part<S>(&mut self, frame: &[u8], ws: &mut S)
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        let part = match wire::decode_file_part(frame) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "ignoring a malformed binary frame from the hub");
                return;
            }
        };
        let contract = part.contract;
        match self.take_part(&part) {
            Ok(None) => {}
            Ok(Some((task, files, permit))) => self.start(task, files, permit),
            Err(why) => {
                self.pending.remove(&contract);
                let _ = refuse(
                    &self.shared,
                    ws,
                    contract,
                    Refusal::new(ErrorCode::MalformedFrame, why),
                )
                .await;
            }
        }
    }

    /// Adds a piece; the task with all its files once the last piece arrived.
    fn take_part(&mut self, part: &wire::FilePart<'_>) -> Result<Option<Ready>, String> {
        let pending = self
            .pending
            .get_mut(&part.contract)
            .ok_or_else(|| "a file for a task that is not waiting for one".to_owned())?;
        let meta = pending
            .task
            .attachments
            .get(pending.done.len())
            .ok_or_else(|| "more files than the task lists".to_owned())?;
        if part.sha256 != meta.sha256 || part.offset != pending.current.len() as u64 {
            return Err("file pieces out of order".to_owned());
        }
        if pending.current.len() as u64 + part.data.len() as u64 > meta.size {
            return Err("a file longer than the task says".to_owned());
        }
        pending.current.extend_from_slice(part.data);
        pending.sha.update(part.data);
        if (pending.current.len() as u64) < meta.size {
            return Ok(None);
        }
        let sha = std::mem::take(&mut pending.sha);
        if Sha256Digest(sha.finalize().into()) != meta.sha256 {
            return Err("a file whose bytes do not match its sha256".to_owned());
        }
        let file = InputFile {
            meta: meta.clone(),
            bytes: Bytes::from(std::mem::take(&mut pending.current)),
        };
        pending.done.push(file);
        if pending.done.len() < pending.task.attachments.len() {
            return Ok(None);
        }
        Ok(self
            .pending
            .remove(&part.contract)
            .map(|p| (p.task, p.done, p.permit)))
    }

    /// The checks before a task runs; on success, the capacity slot it holds while it runs.
    fn admit(&self, task: &Task) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        if self.draining {
            return Err(Refusal::new(ErrorCode::Overloaded, "the node is shutting down"));
        }
        task::check(task, &self.hub, self.me, &self.shared.offers)?;
        let limit = Limits::OURS.max_file_bytes;
        if task.attachments.len() > MAX_TASK_FILES
            || task.attachments.iter().any(|a| a.size == 0 || a.size > limit)
        {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("a task carries at most {MAX_TASK_FILES} files of 1 to {limit} bytes"),
            ));
        }
        let id = task.contract.body.id;
        if self.running.contains_key(&id) || self.pending.contains_key(&id) {
            return Err(Refusal::new(
                ErrorCode::BadContract,
                "this contract is already running",
            ));
        }
        Arc::clone(&self.shared.permits).try_acquire_owned().map_err(|_| {
            Refusal::new(
                ErrorCode::Overloaded,
                format!("all {} task slots are busy", self.shared.options.max_concurrency),
            )
        })
    }

    fn reap(&mut self, joined: Result<(tokio::task::Id, ()), JoinError>) {
        let id = match joined {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    error!(error = %e, "a task panicked");
                }
                e.id()
            }
        };
        if let Some(contract) = self.contracts.remove(&id) {
            // Only forget the entry if it is this very task.
            if self.running.get(&contract).is_some_and(|t| t.handle.id() == id) {
                self.running.remove(&contract);
            }
        }
    }

    /// Writes `first` and whatever else is queued, then flushes once.
    async fn write_queued<S>(&mut self, ws: &mut S, first: Message) -> Result<(), WsError>
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        ws.feed(first).await?;
        for _ in 1..MAX_WRITE_BATCH {
            match self.out_rx.try_recv() {
                Ok(frame) => ws.feed(frame).await?,
                Err(_) => break,
            }
        }
        ws.flush().await
    }

    /// Every task has ended: deliver what they queued, then close.
    async fn finish_drain<S>(&mut self, ws: &mut S) -> SessionEnd
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        while let Ok(frame) = self.out_rx.try_recv() {
            if let Err(e) = self.write_queued(ws, frame).await {
                warn!(error = %e, "cannot deliver the last frames");
                return SessionEnd::Shutdown;
            }
        }
        let _ = ws.send(Message::Close(None)).await;
        info!("drained; disconnected from the hub");
        SessionEnd::Shutdown
    }

    /// Aborts whatever still runs and waits until it has stopped, so capacity is free again before
    /// the next connection.
    async fn stop(&mut self) {
        if !self.tasks.is_empty() {
            debug!(aborted = self.tasks.len(), "aborting tasks of a lost connection");
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.running.clear();
        self.contracts.clear();
        self.pending.clear();
    }
}

async fn refuse<S>(shared: &Shared, ws: &mut S, contract: ContractId, refusal: Refusal) -> Result<(), String>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    shared.metrics.refused(refusal.code);
    debug!(%contract, code = ?refusal.code, message = %refusal.message, "task refused");
    let frame = ErrorFrame {
        contract: Some(contract),
        code: refusal.code,
        message: refusal.message,
    };
    send(ws, &NodeMessage::Error(frame)).await
}

async fn send<S>(ws: &mut S, message: &NodeMessage) -> Result<(), String>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let frame = wire::encode(message).map_err(|e| e.to_string())?;
    ws.send(Message::text(frame)).await.map_err(|e| e.to_string())
}
