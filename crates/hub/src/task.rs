//! One API request's life: admission, a signed contract, a node, the task's events, verified
//! paperwork, and the answer, streamed (SSE) or whole.
//!
//! A client that goes away (a streaming client's body dropped, a waiting client's handler future
//! dropped) cancels its task on the node at once; the hub keeps the task's slot, hold and channel
//! until the node answers with paperwork for what it produced, which is checked, logged and billed
//! like any other (see [`Running::abandon`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stacknet_api::output::OutputDigester;
use stacknet_api::types::{kept_files, KEEP_MEDIA_BYTES};
use stacknet_protocol::contract::{PriceTerms, PromptContract, Usage, Workload};
use stacknet_protocol::paperwork::{check_paperwork_for, request_digest, Paperwork};
use stacknet_protocol::wire::{self, Attachment, ErrorCode, ErrorFrame, HubMessage, Task};
use stacknet_protocol::{Amount, ContractId, NodeKeyId, Nonce, Signed, StackId, Timestamp, UserId};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::attribution::Shaped;
use crate::capped::{self, CappedSender, Offer};
use crate::error::ApiError;
use crate::log::paperwork_leaf;
use crate::money::{self, Escrow};
use crate::nodes::{Lease, Need, Outbound, PickError, TaskEvent, TaskEvents};
use crate::queue::retry_after_secs;
use crate::reputation::Kind;
use crate::store::PaperworkRecord;
use crate::workload::{self, usage_json, with_proof, Accepted, Collected, Parsed, Stamp, WorkloadApi};
use crate::AppState;
use stacknet_api::ApiRequest;

/// Every workload's endpoint: one handler, told which workload it serves.
pub async fn respond(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    workload: Workload,
) -> Response {
    let (metrics, nodes) = (state.metrics.clone(), state.nodes.clone());
    let mut model = None;
    let response = match run(state, headers, body, workload, &mut model).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let model = crate::metrics::label_model(&nodes, model.as_deref());
    metrics.request(workload, model, response.status().as_u16());
    response
}

/// Runs one API request; `model` gets the model it asks for once its body is read.
async fn run(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    workload: Workload,
    model: &mut Option<String>,
) -> Result<Response, ApiError> {
    let caller = state.api_keys.caller(&headers)?;
    let api = workload::api(workload).ok_or_else(|| ApiError::NotFound("no such endpoint".to_owned()))?;
    let limit = state.config.body_limit(api);
    let bytes = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { limit },
        _ => ApiError::MalformedJson(rejection.body_text()),
    })?;
    let mut body_len = bytes.len();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut parsed = api.parse(content_type.as_deref(), bytes)?;
    *model = Some(parsed.request.model.clone());
    let shaped = state.attribution.shape(
        &caller,
        workload,
        &mut parsed.request.body,
        state.config.split.skills_bps,
    )?;
    if shaped.changed {
        // The shaped body is what the node runs and what the hold must cover: validated again as
        // a whole (a skill's model, injected messages and tools), and measured again.
        let body = std::mem::take(&mut parsed.request.body);
        body_len = body_len.max(serde_json::to_vec(&body).map_err(ApiError::internal)?.len());
        parsed.request = stacknet_api::request::validate(workload, body)?;
    }
    let options = match workload {
        Workload::Chat => crate::grounding::take(&mut parsed.request.body)?,
        _ => None,
    };
    let Some(options) = options else {
        let by_url = matches!(workload, Workload::ImageGeneration | Workload::ImageEdit)
            && stacknet_api::request::image_edit::wants_urls(&parsed.request.body);
        let store = state.store.clone();
        let response = execute(state, caller.stack, api, parsed, body_len, How::default(), shaped).await?;
        if by_url {
            return crate::files::by_url(&*store, caller.stack, &headers, response).await;
        }
        return Ok(response);
    };
    // Chat with `web_search_options`: a search task first, then the chat with its results.
    let query = crate::grounding::search_request(&parsed.request.body, &options)?;
    let search_api =
        workload::api(Workload::WebSearch).ok_or_else(|| ApiError::internal("no search workload"))?;
    let query = Bytes::from(serde_json::to_vec(&query).map_err(ApiError::internal)?);
    let query_len = query.len();
    let search = search_api.parse(Some("application/json"), query)?;
    let searched = execute(
        state.clone(),
        caller.stack,
        search_api,
        search,
        query_len,
        How::default(),
        Shaped::default(),
    )
    .await
    .unwrap_or_else(IntoResponse::into_response);
    if !searched.status().is_success() {
        return Ok(crate::grounding::search_failed(searched).await);
    }
    let answer = axum::body::to_bytes(searched.into_body(), 2 * wire::MAX_FRAME_BYTES)
        .await
        .map_err(|e| ApiError::internal(format!("the search's answer could not be read: {e}")))?;
    let search_answer: Value = serde_json::from_slice(&answer).map_err(ApiError::internal)?;
    let mut body = std::mem::take(&mut parsed.request.body);
    crate::grounding::ground(&mut body, &crate::grounding::results(&search_answer));
    body_len = body_len.max(serde_json::to_vec(&body).map_err(ApiError::internal)?.len());
    parsed.request = stacknet_api::request::validate(workload, body)?;
    let stream = parsed.request.stream;
    let response = execute(state, caller.stack, api, parsed, body_len, How::default(), shaped).await?;
    Ok(crate::grounding::finish(response, search_answer, stream).await)
}

/// A guardian's probe (`crate::guardian`): `request`, an OpenAI chat request, run on `node` as an
/// ordinary task of `stack` (the guardian's probes Stack), or refused at once when that node cannot
/// take it now. The hub records no evidence of its own about a probe: the guardian's signed
/// telemetry is the evidence.
pub async fn probe(
    state: AppState,
    stack: StackId,
    node: NodeKeyId,
    request: &Value,
) -> Result<Response, ApiError> {
    let api = workload::api(Workload::Chat).ok_or_else(|| ApiError::internal("no chat workload"))?;
    let bytes = Bytes::from(serde_json::to_vec(request).map_err(ApiError::internal)?);
    let body_len = bytes.len();
    let parsed = api.parse(Some("application/json"), bytes)?;
    let how = How {
        pinned: Some(node),
        ..How::default()
    };
    execute(state, stack, api, parsed, body_len, how, Shaped::default()).await
}

/// How a request runs beyond its workload's defaults.
#[derive(Debug, Default)]
pub(crate) struct How {
    /// Only on this node (a guardian's probe).
    pub pinned: Option<NodeKeyId>,
    /// Its time limit, when not the hub's `request_timeout_ms` (a video job's).
    pub timeout_ms: Option<u64>,
    /// Where the node's progress goes (a video job's): the percent of its `{"progress": n}` chunks.
    pub progress: Option<tokio::sync::watch::Sender<u64>>,
    /// Called with each contract before its task is sent (a video job records it); its error ends
    /// the request before the node hears of it.
    pub before_send: Option<ContractHook>,
}

/// What [`How::before_send`] runs.
#[derive(Clone)]
pub(crate) struct ContractHook(
    Arc<dyn Fn(ContractId) -> futures_util::future::BoxFuture<'static, Result<(), ApiError>> + Send + Sync>,
);

impl ContractHook {
    pub fn new(
        hook: impl Fn(ContractId) -> futures_util::future::BoxFuture<'static, Result<(), ApiError>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self(Arc::new(hook))
    }
}

impl std::fmt::Debug for ContractHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContractHook")
    }
}

/// Runs a parsed request of `stack` on a node: any node that serves it, or only `how.pinned`.
pub(crate) async fn execute(
    state: AppState,
    stack: StackId,
    api: &'static dyn WorkloadApi,
    parsed: Parsed,
    body_len: usize,
    how: How,
    shaped: Shaped,
) -> Result<Response, ApiError> {
    let How {
        pinned,
        timeout_ms,
        progress,
        before_send,
    } = how;
    let began = Instant::now();
    let timeout_ms = timeout_ms.unwrap_or(state.config.request_timeout_ms);
    let workload = parsed.request.workload;
    let Parsed { request: req, files } = parsed;
    // Shared with the task, which may outlive this request (see [`Guarded`]).
    let req = Arc::new(req);
    let permit = state
        .inflight
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::AtCapacity {
            limit: state.config.max_concurrent_requests,
        })?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let price = state.prices.get(&req.model);
    let bound = api.max_usage(&req, body_len, state.config.default_max_output_tokens);
    let max_cost = money::max_cost(&price, &bound);
    // Held before any node is asked: a request the balance cannot cover costs nobody any work.
    let escrow = Escrow::hold(
        state.ledger.clone(),
        stack,
        max_cost,
        i64::try_from(timeout_ms.saturating_add(state.config.hold_grace_ms)).unwrap_or(i64::MAX),
        state.config.hold_grace_ms,
    )
    .await?;
    let attachments: Vec<Attachment> = files.iter().map(|(a, _)| a.clone()).collect();
    let need = Need {
        model: &req.model,
        workload,
        file_bytes: files.iter().map(|(a, _)| a.size).max().unwrap_or(0),
        frame_bytes: frame_bytes_without_contract(&req, &attachments)?,
    };
    let mut exclude = None;
    let mut held = (escrow, permit);
    // A node that drops (or is full) before its first event costs the client nothing: one retry elsewhere.
    for _attempt in 0..2 {
        let leased = match pinned {
            Some(node) => state.nodes.pick_on(&need, node),
            None => state.nodes.lease(&need, exclude, stack, deadline).await,
        };
        let mut lease = leased.map_err(|e| match e {
                PickError::UnknownModel => ApiError::UnknownModel(req.model.clone()),
                // No node serving it is connected now (one did, within the model memory).
                PickError::NoCapacity => ApiError::NoNode {
                    model: req.model.clone(),
                    retry_after_s: NODE_RETURN_RETRY_AFTER_S,
                },
                PickError::QueueFull { waiting, wait } => ApiError::QueueFull {
                    model: req.model.clone(),
                    waiting,
                    retry_after_s: retry_after_secs(wait),
                },
                PickError::QueueTimeout { waited, wait } => ApiError::QueueTimeout {
                    model: req.model.clone(),
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    retry_after_s: retry_after_secs(wait),
                },
                PickError::Unbonded { min } => ApiError::NoBondedNode {
                    model: req.model.clone(),
                    min,
                },
                PickError::FrameTooLarge { limit } => ApiError::TaskTooLarge {
                    len: need.frame_bytes,
                    limit,
                },
                PickError::NotOnNode(node) => ApiError::invalid(
                    "node",
                    format!("node {node} is not connected, may not be routed tasks, or does not serve {} for this request", req.model),
                ),
            })?;
        let terms = Terms {
            price: &price,
            max_cost: held.0.max_cost,
            timeout_ms,
        };
        let contract = sign_contract(&state, stack, &lease, &req, &terms, &shaped)?;
        if let Some(hook) = &before_send {
            (hook.0)(contract.body.id).await?;
        }
        let task = HubMessage::Task(Box::new(Task {
            contract: contract.clone(),
            request: req.body.clone(),
            attachments: attachments.clone(),
        }));
        // A frame over the node's limit would cost it its connection and every task on it: the
        // request is refused before anything is sent (the lease and the hold are released on return).
        let task = wire::encode(&task).map_err(ApiError::internal)?;
        let (len, limit) = (task.len() as u64, lease.node.limits.max_frame_bytes);
        if len > limit {
            return Err(ApiError::TaskTooLarge { len, limit });
        }
        let rx = lease.open_task(contract.body.id, state.config.max_queued_output_bytes);
        if lease
            .node
            .send_with_files(Outbound::Encoded(task), contract.body.id, &files)
            .await
            .is_err()
        {
            exclude = Some(lease.node.id);
            continue;
        }
        let digester = OutputDigester::new(workload)
            .map_err(|e| ApiError::internal(format!("no output digest for {workload:?}: {e}")))?;
        let max_output_bytes = api.max_output_bytes(&req, state.config.default_max_output_tokens);
        let (escrow, permit) = held;
        // From here, this request being dropped (the client gone) cancels the task on the node.
        let mut task = Guarded(Some(Running {
            state: state.clone(),
            api,
            lease,
            rx,
            contract,
            req: Arc::clone(&req),
            deadline,
            timeout_ms,
            progress: progress.clone(),
            stamp_time: Timestamp::now(),
            escrow: Some(escrow),
            out: Collected {
                digester,
                chunks: Vec::new(),
                files: Vec::new(),
                progress: 0,
            },
            output_bytes: 0,
            max_output_bytes,
            text_bytes: 0,
            bound: bound.clone(),
            tokens: None,
            began,
            sent: Instant::now(),
            first: None,
            usage: None,
            cost: Amount::ZERO,
            overhead: None,
            observed: AtomicBool::new(false),
            // A probe's evidence is the guardian's telemetry, not the hub's observation.
            evidence: pinned.is_none(),
            cancelled: false,
            _permit: permit,
        }));
        let first = match task.running().first().await {
            Ok(Some(event)) => event,
            // A probe is for its node alone: nowhere else to retry.
            Ok(None) if pinned.is_some() => {
                task.disarm();
                return Err(ApiError::NodeFailed(
                    "the node disconnected or was full before it answered".to_owned(),
                ));
            }
            Ok(None) => {
                let (node, escrow, permit) = task.retry()?;
                exclude = Some(node);
                held = (escrow, permit);
                continue;
            }
            Err(e) => {
                task.disarm();
                return Err(e);
            }
        };
        return if api.streams(&req) {
            Ok(task.disarm().stream(first))
        } else {
            let answer = task.running().collect(first).await;
            task.disarm();
            answer
        };
    }
    Err(ApiError::NoNode {
        model: req.model.clone(),
        retry_after_s: retry_after_secs(state.nodes.estimated_wait(&need, None)),
    })
}

/// `Retry-After` when no node serving the model is connected: there is no queue to estimate from,
/// and a node that restarts is usually back within seconds.
pub const NODE_RETURN_RETRY_AFTER_S: u64 = 5;

/// The size of the task frame for `req` without its contract: a lower bound the scheduler uses to
/// pass over nodes whose `max_frame_bytes` it exceeds before a contract is signed for one.
fn frame_bytes_without_contract(req: &ApiRequest, attachments: &[Attachment]) -> Result<u64, ApiError> {
    let size = |v: Result<Vec<u8>, serde_json::Error>| v.map(|b| b.len() as u64).map_err(ApiError::internal);
    Ok(size(serde_json::to_vec(&req.body))?.saturating_add(size(serde_json::to_vec(attachments))?))
}

/// The same end user of the same Stack always gets the same id.
fn user_id(stack: StackId, user: Option<&str>) -> UserId {
    let mut data = stack.as_bytes().to_vec();
    data.extend_from_slice(user.unwrap_or("").as_bytes());
    UserId::derive(&data)
}

/// A contract's money and time terms.
struct Terms<'a> {
    price: &'a PriceTerms,
    max_cost: Amount,
    timeout_ms: u64,
}

fn sign_contract(
    state: &AppState,
    stack: StackId,
    lease: &Lease,
    req: &ApiRequest,
    terms: &Terms<'_>,
    shaped: &Shaped,
) -> Result<Signed<PromptContract>, ApiError> {
    let now = Timestamp::now();
    // The warm bonus is a term of the contract the hub signs: kept only when a heartbeat of the
    // node named the model ready before this assignment. The paperwork's own `warm` flag alone
    // earns nothing (settlement pays the bonus only where both say warm).
    let mut split = state.config.split.clone();
    if !lease.node.is_ready(&req.model) {
        split.warm_bonus_bps = 0;
    }
    let body = PromptContract {
        id: ContractId::random(),
        hub: state.hub_key.public_key(),
        stack,
        user: user_id(stack, req.user.as_deref()),
        node_key: lease.node.id,
        workload: req.workload,
        model: req.model.clone(),
        price: terms.price.clone(),
        max_cost: terms.max_cost,
        split,
        parties: state.attribution.parties(&req.model, lease.node.id),
        skills: shaped.skills.clone(),
        skill_royalties_bps: shaped.royalties.clone(),
        injections: shaped.injections.clone(),
        created_at: now,
        expires_at: now.plus_ms(i64::try_from(terms.timeout_ms).unwrap_or(i64::MAX)),
        nonce: Nonce::random(),
    };
    Signed::sign(body, &state.hub_key).map_err(|e| ApiError::internal(format!("cannot sign contract: {e}")))
}

/// How long the hub waits, after cancelling a task whose client went away, for the node's
/// paperwork of what it produced (never past the request's deadline).
pub const CANCELLED_TASK_WAIT_MS: u64 = 15_000;

fn cancel(lease: &Lease, contract: ContractId) {
    let _ = lease.node.outbox.try_send(HubMessage::Cancel { contract }.into());
}

/// A task sent to a node, owned by its client's request: dropped before the task ended (the
/// client went away while it waited), it cancels the task and waits for the node's paperwork on a
/// tokio task of its own (see [`Running::abandon`]).
struct Guarded(Option<Running>);

impl Guarded {
    fn running(&mut self) -> &mut Running {
        self.0.as_mut().expect("a guarded task is present until disarmed")
    }

    /// The task, no longer cancelled when this is dropped.
    fn disarm(mut self) -> Running {
        self.0.take().expect("a guarded task is present until disarmed")
    }

    /// The task never started on its node: the node to avoid, and the hold and slot for the retry.
    fn retry(self) -> Result<(NodeKeyId, Escrow, OwnedSemaphorePermit), ApiError> {
        let Running {
            lease,
            escrow,
            _permit,
            ..
        } = self.disarm();
        let escrow =
            escrow.ok_or_else(|| ApiError::internal("the hold was taken before the task started"))?;
        Ok((lease.node.id, escrow, _permit))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let (Some(running), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            // A hub crashed by a test does nothing more, as a dead process could not.
            if !running.state.videos.crashed() {
                runtime.spawn(running.abandon());
            }
        }
    }
}

/// What an SSE client has yet to read: frames queue here as the node sends them, so the task never
/// waits on its client; at most the hub's `max_queued_output_bytes` may wait.
struct ClientQueue(CappedSender<Bytes>);

impl ClientQueue {
    /// Queues a frame. `Err(None)`: the client is gone; `Err(Some(_))`: more than the cap would
    /// wait for it (nothing is queued).
    fn push(&self, frame: Bytes) -> Result<(), Option<ApiError>> {
        let len = frame.len() as u64;
        match self.0.offer(frame, len) {
            Offer::Queued => Ok(()),
            Offer::Closed => Err(None),
            Offer::Full => Err(Some(ApiError::Abandoned)),
        }
    }

    /// Queues the last frame (an error) whatever waits already.
    fn push_last(&self, frame: Bytes) {
        let len = frame.len() as u64;
        self.0.push(frame, len);
    }

    async fn closed(&self) {
        self.0.closed().await;
    }
}

/// A task sent to a node.
struct Running {
    state: AppState,
    api: &'static dyn WorkloadApi,
    lease: Lease,
    rx: TaskEvents,
    contract: Signed<PromptContract>,
    req: Arc<ApiRequest>,
    deadline: Instant,
    /// The time the request was given (the hub's `request_timeout_ms`, or a video job's).
    timeout_ms: u64,
    /// Where the node's progress goes, for a job that reports it.
    progress: Option<tokio::sync::watch::Sender<u64>>,
    stamp_time: Timestamp,
    /// The request's hold; released when this is dropped before the writer took it over.
    escrow: Option<Escrow>,
    /// What the node sent so far.
    out: Collected,
    /// Bytes of output the node sent so far (its chunks' JSON, its files), and the most it may.
    output_bytes: u64,
    max_output_bytes: u64,
    /// Bytes of text in the choices the node sent so far: what bounds the output tokens it may claim.
    text_bytes: u64,
    /// The usage held for: the most the request can consume.
    bound: Usage,
    /// The output token ids that came with the node's paperwork (built-in text backends).
    tokens: Option<Vec<u32>>,
    /// When the request began (admission), when the task went to the node, and how long after
    /// that its first output came.
    began: Instant,
    sent: Instant,
    first: Option<Duration>,
    /// The usage of its accepted paperwork, and the hub's own share of its time (for `/metrics`).
    usage: Option<Usage>,
    /// What its accepted paperwork cost the Stack (for the dashboard's rollups).
    cost: Amount,
    overhead: Option<Duration>,
    /// What became of the task is recorded (once: see [`Running::observe`]).
    observed: AtomicBool,
    /// It counts as evidence about its node (not a guardian's probe).
    evidence: bool,
    /// The hub cancelled the task at the node (its client went away): fewer outputs than asked
    /// are within a media task's terms.
    cancelled: bool,
    /// Holds this request's slot of the hub's concurrency limit until the answer is done.
    _permit: OwnedSemaphorePermit,
}

impl Running {
    fn stamp(&self) -> Stamp {
        Stamp {
            id: format!("chatcmpl-{}", hex_id(&self.contract.body.id)),
            created: u64::try_from(self.stamp_time.unix_ms() / 1000).unwrap_or(0),
            model: self.req.model.clone(),
        }
    }

    /// Records what became of the task in `/metrics` and as evidence about its node
    /// ([`crate::reputation`]): the first call counts, later ones (a client gone, then the node's
    /// paperwork) do not. No evidence is recorded while the hub shuts down (tasks it ends then are
    /// its own doing) or for a guardian's probe.
    fn observe(&self, kind: Kind) {
        if self.observed.swap(true, Ordering::Relaxed) {
            return;
        }
        let queued = self.sent.saturating_duration_since(self.began);
        let op = stacknet_api::metrics::Operation {
            workload: self.req.workload,
            model: &self.req.model,
            error: (kind != Kind::Served).then(|| kind.as_str()),
            duration: self.began.elapsed(),
            first_output: self.first.map(|first| queued + first),
            usage: self.usage.as_ref(),
        };
        self.state.metrics.task(op, self.overhead);
        self.state.rollups.record(crate::rollup::Ended {
            stack: self.contract.body.stack,
            node: self.lease.node.id,
            model: &self.req.model,
            workload: self.req.workload,
            ok: kind == Kind::Served,
            duration: op.duration,
            usage: self.usage.as_ref(),
            cost: if kind == Kind::Served {
                self.cost
            } else {
                Amount::ZERO
            },
        });
        if !self.evidence || *self.state.shutting_down.borrow() {
            return;
        }
        let ms = match kind {
            Kind::Served => self
                .first
                .map_or(0, |first| u64::try_from(first.as_millis()).unwrap_or(u64::MAX)),
            _ => 0,
        };
        self.state.nodes.reputation.observe(self.lease.node.id, kind, ms);
    }

    /// The task's first event; `None` when the node dropped or was full before it (worth one
    /// retry elsewhere).
    async fn first(&mut self) -> Result<Option<TaskEvent>, ApiError> {
        match self.next().await? {
            TaskEvent::Gone => {
                self.observe(Kind::Dropped);
                Ok(None)
            }
            TaskEvent::Error(ErrorCode::Overloaded, _) => {
                self.observe(Kind::Overloaded);
                Ok(None)
            }
            error @ TaskEvent::Error(..) => Err(self.fail(error)),
            event => Ok(Some(event)),
        }
    }

    async fn next(&mut self) -> Result<TaskEvent, ApiError> {
        let event = tokio::select! {
            event = tokio::time::timeout_at(self.deadline, self.rx.recv()) => event,
            // The gateway has already cancelled it at the node: its client read too slowly.
            () = self.lease.abandoned() => {
                self.observe(Kind::ClientSlow);
                return Err(ApiError::Abandoned);
            }
        };
        match event {
            Ok(Some(e)) => {
                if self.first.is_none()
                    && matches!(e, TaskEvent::Chunk(_) | TaskEvent::File(..) | TaskEvent::Done(..))
                {
                    self.first = Some(self.sent.elapsed());
                }
                Ok(e)
            }
            Ok(None) => Ok(TaskEvent::Gone),
            Err(_) => {
                cancel(&self.lease, self.contract.body.id);
                // The node's fault only when it had at least half the time: the queue may have
                // used the rest.
                let timeout = Duration::from_millis(self.timeout_ms);
                self.observe(if self.sent.elapsed() >= timeout / 2 {
                    Kind::Timeout
                } else {
                    Kind::HubDeadline
                });
                Err(ApiError::Timeout(self.timeout_ms))
            }
        }
    }

    fn fail(&self, event: TaskEvent) -> ApiError {
        self.observe(match &event {
            TaskEvent::Error(ErrorCode::InvalidRequest | ErrorCode::ContextLengthExceeded, _) => {
                Kind::ClientError
            }
            TaskEvent::Error(ErrorCode::Timeout, _) => Kind::Timeout,
            TaskEvent::Error(ErrorCode::Overloaded, _) => Kind::Overloaded,
            TaskEvent::Error(..) => Kind::NodeError,
            _ => Kind::Dropped,
        });
        match event {
            TaskEvent::Error(code, message) => {
                ApiError::from_node(code, message, &self.req.model, self.api.input_param())
            }
            _ => ApiError::NodeFailed("the node disconnected before finishing the task".to_owned()),
        }
    }

    /// Counts `bytes` more of the node's output against the request's cap. Past it, the task is
    /// cancelled and failed: nothing more is relayed or kept, its paperwork is never accepted, and
    /// the hold is released when this is dropped.
    fn count(&mut self, bytes: u64) -> Result<(), ApiError> {
        self.output_bytes = self.output_bytes.saturating_add(bytes);
        if self.output_bytes > self.max_output_bytes {
            self.observe(Kind::OutputOverBound);
            cancel(&self.lease, self.contract.body.id);
            return Err(ApiError::NodeFailed(
                "the node's output exceeded the bound for this request".to_owned(),
            ));
        }
        Ok(())
    }

    /// Counts one chunk of the node's output: its JSON against the cap, its text for the usage bound.
    fn count_chunk(&mut self, data: &Value) -> Result<(), ApiError> {
        self.text_bytes = self.text_bytes.saturating_add(workload::text_bytes(data));
        self.count(json_len(data))
    }

    /// Takes one event of the node's output into what the answer and the digest are made of.
    fn take(&mut self, event: TaskEvent) -> Result<Option<Box<Signed<Paperwork>>>, ApiError> {
        match event {
            TaskEvent::Chunk(data) => {
                self.count_chunk(&data)?;
                if let Some(percent) = data.get("progress").and_then(Value::as_u64) {
                    self.out.progress = self.out.progress.max(percent.min(100));
                    if let Some(progress) = &self.progress {
                        progress.send_replace(self.out.progress);
                    }
                }
                self.out.digester.chunk(&data);
                if self.api.keeps_chunks() {
                    self.out.chunks.push(data);
                }
                Ok(None)
            }
            TaskEvent::File(meta, bytes) => {
                self.count(u64::try_from(bytes.len()).unwrap_or(u64::MAX))?;
                self.out.digester.file(meta.sha256);
                self.out.files.push((meta, bytes));
                Ok(None)
            }
            TaskEvent::Done(pw, tokens) => {
                self.tokens = tokens;
                Ok(Some(pw))
            }
            other => Err(self.fail(other)),
        }
    }

    async fn collect(&mut self, first: TaskEvent) -> Result<Response, ApiError> {
        let mut event = first;
        loop {
            if let Some(pw) = self.take(event)? {
                let accepted = self.accept(*pw).await?;
                return self
                    .api
                    .answer(&self.req, &self.out, &self.stamp(), accepted)?
                    .into_response();
            }
            event = self.next().await?;
        }
    }

    fn stream(self, first: TaskEvent) -> Response {
        let (client, rx) = capped::channel(self.state.config.max_queued_output_bytes);
        tokio::spawn(self.pump(first, ClientQueue(client)));
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (Ok::<_, Infallible>(frame), rx))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| ApiError::internal("cannot build the stream").into_response())
    }

    /// Feeds the SSE body. The node's events are taken as they come, never at the client's pace:
    /// the paperwork is accepted (and the node paid) as soon as it arrives, however slowly the
    /// client reads what is queued for it. A client that leaves, or lets more than its share of
    /// output wait, cancels the task (see [`Running::abandon`]).
    async fn pump(mut self, first: TaskEvent, tx: ClientQueue) {
        let stamp = self.stamp();
        let object = match self.req.workload {
            Workload::Completion => "text_completion",
            _ => "chat.completion.chunk",
        };
        let mut event = Ok(first);
        loop {
            let frame = match event {
                Ok(TaskEvent::Chunk(data)) => {
                    if let Err(e) = self.count_chunk(&data) {
                        tx.push_last(sse(&e.body()));
                        return;
                    }
                    self.out.digester.chunk(&data);
                    match client_chunk(&stamp, object, data) {
                        Some(c) => sse(&c),
                        None => {
                            let Some(next) = self.next_or_gone(&tx).await else {
                                return self.abandon().await;
                            };
                            event = next;
                            continue;
                        }
                    }
                }
                Ok(TaskEvent::Done(pw, tokens)) => {
                    self.tokens = tokens;
                    let last = match self.accept(*pw).await {
                        Ok(a) => {
                            let usage = self.req.include_usage.then(|| a.usage.clone());
                            let mut s = sse(&final_chunk(&stamp, object, usage.as_ref(), a)).to_vec();
                            s.extend_from_slice(b"data: [DONE]\n\n");
                            Bytes::from(s)
                        }
                        Err(e) => sse(&e.body()),
                    };
                    tx.push_last(last);
                    return;
                }
                Ok(other) => {
                    tx.push_last(sse(&self.fail(other).body()));
                    return;
                }
                Err(e) => {
                    tx.push_last(sse(&e.body()));
                    return;
                }
            };
            match tx.push(frame) {
                Ok(()) => {}
                // The client is gone, or reads so slowly that its share of output is waiting: the
                // task is cancelled, and the node's paperwork of what it produced awaited and billed.
                Err(why) => {
                    if let Some(e) = why {
                        self.observe(Kind::ClientSlow);
                        tracing::info!(contract = %self.contract.body.id, "{e}");
                        tx.push_last(sse(&e.body()));
                    }
                    return self.abandon().await;
                }
            }
            let Some(next) = self.next_or_gone(&tx).await else {
                return self.abandon().await;
            };
            event = next;
        }
    }

    /// The node's next event; `None` as soon as the streaming client is gone (its body dropped).
    async fn next_or_gone(&mut self, client: &ClientQueue) -> Option<Result<TaskEvent, ApiError>> {
        tokio::select! {
            biased;
            () = client.closed() => None,
            event = self.next() => Some(event),
        }
    }

    /// The client went away: the task is cancelled on the node, which stops and answers with
    /// paperwork for what it produced (or an error). That paperwork is checked against everything
    /// the node sent, relayed or not, accepted, logged and billed (capped by the hold) like any
    /// other, so the node is paid for work done and its filing settles. Meanwhile the task keeps
    /// its slot on the node; the wait is bounded by [`CANCELLED_TASK_WAIT_MS`] and the deadline.
    async fn abandon(mut self) {
        let contract = self.contract.body.id;
        if self.escrow.is_none() {
            // The paperwork is already with the writer: the task is over.
            return;
        }
        self.observe(Kind::ClientCancelled);
        self.cancelled = true;
        cancel(&self.lease, contract);
        let wait = Duration::from_millis(CANCELLED_TASK_WAIT_MS);
        let until = self.deadline.min(Instant::now() + wait);
        loop {
            let event = match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) => {
                    tracing::debug!(%contract, "a cancelled task's node did not answer in time");
                    return;
                }
            };
            let pw = match self.take(event) {
                Ok(None) => continue,
                Ok(Some(pw)) => pw,
                Err(e) => {
                    tracing::debug!(%contract, error = ?e, "a cancelled task ended without paperwork");
                    return;
                }
            };
            match self.accept(*pw).await {
                Ok(a) => {
                    tracing::debug!(%contract, paperwork = %a.paperwork, "a cancelled task's paperwork was accepted")
                }
                Err(e) => tracing::warn!(%contract, error = ?e, "a cancelled task's paperwork was refused"),
            }
            return;
        }
    }

    /// Checks the node's paperwork against what the hub issued and received, then stores it.
    async fn accept(&mut self, pw: Signed<Paperwork>) -> Result<Accepted, ApiError> {
        let checking = Instant::now();
        let accepted = self.accept_checked(pw).await;
        match &accepted {
            Ok(a) => {
                self.usage = Some(a.usage.clone());
                let before = self.sent.saturating_duration_since(self.began);
                self.overhead = Some(before + checking.elapsed());
                self.observe(Kind::Served)
            }
            Err(ApiError::NodeFailed(_)) => self.observe(Kind::PaperworkRefused),
            // The hub's own trouble (its store, its ledger) is not the node's.
            Err(_) => {}
        }
        accepted
    }

    /// [`Self::accept`] without its evidence: every refusal of the node's paperwork is `NodeFailed`.
    async fn accept_checked(&mut self, pw: Signed<Paperwork>) -> Result<Accepted, ApiError> {
        let invalid = |why: String| ApiError::NodeFailed(format!("the node's paperwork was refused: {why}"));
        let checked = check_paperwork_for(&pw, &self.contract, &self.lease.node.key)
            .map_err(|e| invalid(e.to_string()))?;
        let req_digest = request_digest(&self.req.body).map_err(|e| invalid(e.to_string()))?;
        if pw.body.request_sha256 != req_digest {
            return Err(invalid("request_sha256 does not match the request".into()));
        }
        let out_digest = self.out.digester.finish().map_err(|e| invalid(e.to_string()))?;
        if pw.body.output_sha256 != out_digest {
            return Err(invalid("output_sha256 does not match the output received".into()));
        }
        let files = self.out.file_bytes();
        if let Some(why) =
            stacknet_api::terms::broken(self.req.workload, &self.req.body, &files, self.cancelled)
        {
            tracing::warn!(node = %self.lease.node.id, contract = %self.contract.body.id, "paperwork refused, the output breaks the terms: {why}");
            return Err(invalid(format!("the output breaks the request's terms: {why}")));
        }
        if let Err(why) = crate::validate::envelope::check(&pw.body, &self.req.body, self.tokens.as_deref()) {
            tracing::warn!(node = %self.lease.node.id, contract = %self.contract.body.id, "paperwork refused by C0_envelope: {why}");
            return Err(invalid(format!("C0_envelope: {why}")));
        }
        let attribution = serde_json::to_value(&pw.body.fingerprint).map_err(|e| invalid(e.to_string()))?;
        let json = serde_json::to_string(&pw).map_err(|e| invalid(e.to_string()))?;
        let leaf_hash = paperwork_leaf(&pw).map_err(|e| invalid(e.to_string()))?;
        let mut bound = self
            .api
            .usage_bound(&self.req, &self.bound, self.text_bytes, self.out.files.len());
        if let Some(shown) = self.api.units_shown(&self.bound, &self.out) {
            bound.units = bound.units.min(shown);
        }
        if let Some(why) = workload::overclaim(&pw.body.usage, &bound) {
            self.refuse_usage(&why);
            return Err(invalid(why));
        }
        self.keep(checked.id).await?;
        let contract = &self.contract.body;
        let cost = contract
            .price
            .cost(&pw.body.usage, contract.max_cost)
            .ok_or_else(|| invalid("the usage overflows the price".into()))?;
        self.cost = cost;
        // From here the writer owns the hold: it captures it, or releases it if the log write
        // fails, even if this request is dropped (a client gone) while it waits.
        let hold = match self.escrow.take() {
            Some(escrow) => escrow.hand_over().await,
            None => None,
        };
        let record = PaperworkRecord {
            id: checked.id,
            contract: contract.id.to_string(),
            node_key: contract.node_key,
            json,
            leaf_hash,
            accepted_at: Timestamp::now(),
            hold: hold.map(|h| h.to_string()),
            cost,
        };
        // Answered only once the paperwork is logged and its cost captured.
        self.state
            .writer
            .accept(record)
            .await
            .map_err(ApiError::internal)?;
        self.state.attribution.used(&contract.skills);
        Ok(Accepted {
            usage: pw.body.usage,
            fingerprint: checked.fingerprint.to_string(),
            attribution,
            paperwork: checked.id.to_string(),
        })
    }

    /// Keeps what validators need of a text task (request, output choices, token ids) or a media
    /// task (request, its files' hashes and, up to `KEEP_MEDIA_BYTES` in all, the files) before its
    /// paperwork is logged, so a sampled task always has its material.
    async fn keep(&mut self, paperwork: stacknet_protocol::PaperworkId) -> Result<(), ApiError> {
        let workload = self.req.workload;
        let output = match workload {
            Workload::Chat | Workload::Completion => self.out.digester.choices(workload),
            Workload::ImageGeneration | Workload::ImageEdit | Workload::VideoGeneration => {
                let files = self.out.file_bytes();
                let with_bytes = files.iter().map(|f| f.len()).sum::<usize>() <= KEEP_MEDIA_BYTES;
                kept_files(&files, with_bytes)
            }
            _ => return Ok(()),
        };
        let task = crate::store::KeptTask {
            paperwork,
            node_key: self.contract.body.node_key,
            accepted_at: Timestamp::now(),
            request: self.req.body.clone(),
            output,
            tokens: self.tokens.take(),
        };
        self.state.store.keep_task(task).await.map_err(ApiError::internal)
    }

    /// Paperwork that claims more usage than the hub relayed is refused: the node hears why (an
    /// error frame about the task) and its key gets a mark.
    fn refuse_usage(&self, why: &str) {
        self.lease.node.mark_refused_usage();
        tracing::warn!(node = %self.lease.node.id, contract = %self.contract.body.id, "{why}");
        let frame = HubMessage::Error(ErrorFrame {
            contract: Some(self.contract.body.id),
            code: ErrorCode::InvalidRequest,
            message: format!("the paperwork was refused: {why}"),
        });
        let _ = self.lease.node.outbox.try_send(frame.into());
    }
}

/// Rewrites a node's chunk for the client; `None` for a usage-only chunk, which the hub replaces
/// by its own final chunk (usage from the signed paperwork, and the proof). The choices are relayed
/// untouched: the output digest is over them.
fn client_chunk(stamp: &Stamp, object: &str, mut chunk: Value) -> Option<Value> {
    let obj = chunk.as_object_mut()?;
    let choices_empty = obj
        .get("choices")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty());
    if choices_empty {
        return None;
    }
    obj.remove("usage");
    obj.insert("id".into(), Value::String(stamp.id.clone()));
    obj.insert("object".into(), Value::String(object.into()));
    obj.insert("created".into(), Value::from(stamp.created));
    obj.insert("model".into(), Value::String(stamp.model.clone()));
    Some(chunk)
}

/// The last chunk of a stream: no choices, the usage if asked for, and the proof.
fn final_chunk(stamp: &Stamp, object: &str, usage: Option<&Usage>, accepted: Accepted) -> Value {
    let mut v = json!({
        "id": stamp.id, "object": object, "created": stamp.created, "model": stamp.model, "choices": [],
    });
    if let (Some(u), Some(obj)) = (usage, v.as_object_mut()) {
        obj.insert("usage".into(), usage_json(u));
    }
    with_proof(v, accepted)
}

/// The length of `v` written as compact JSON, counted by walking it (string escapes aside, which
/// only lengthen it), so measuring a chunk costs no serialization.
fn json_len(v: &Value) -> u64 {
    let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    match v {
        Value::Null | Value::Bool(_) => 5,
        // An integer's digits and sign; a float as long as it can be written (full precision and
        // an exponent).
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u64::from(u.checked_ilog10().unwrap_or(0)) + 1,
            (None, Some(i)) => u64::from(i.unsigned_abs().checked_ilog10().unwrap_or(0)) + 2,
            (None, None) => 24,
        },
        Value::String(s) => len(s.len()).saturating_add(2),
        // Brackets and a comma after each item.
        Value::Array(items) => items.iter().fold(len(items.len()).saturating_add(2), |sum, i| {
            sum.saturating_add(json_len(i))
        }),
        // Braces, and for each member its quoted key, a colon and a comma.
        Value::Object(members) => members.iter().fold(2, |sum, (k, v)| {
            sum.saturating_add(len(k.len()).saturating_add(4))
                .saturating_add(json_len(v))
        }),
    }
}

fn hex_id(id: &ContractId) -> String {
    hex::encode(id.as_bytes())
}

fn sse(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
