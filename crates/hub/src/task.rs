//! One API request's life: admission, a signed contract, a node, the task's events, verified
//! paperwork, and the answer, streamed (SSE) or whole.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stacknet_protocol::contract::{Parties, PriceTerms, PromptContract, Usage, Workload};
use stacknet_protocol::paperwork::{check_paperwork_for, output_digest, request_digest, Paperwork};
use stacknet_protocol::wire::{ErrorCode, HubMessage, Task};
use stacknet_protocol::{Amount, ContractId, Nonce, Signed, StackId, Timestamp, UserId};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::log::paperwork_leaf;
use crate::money::{self, Escrow};
use crate::nodes::{Lease, PickError, TaskEvent};
use crate::openai::{parse_request, usage_json, ApiRequest, Assembler, Stamp};
use crate::store::PaperworkRecord;
use crate::AppState;

/// `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`: one handler, by workload.
pub async fn respond(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    workload: Workload,
) -> Response {
    match run(state, headers, body, workload).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    workload: Workload,
) -> Result<Response, ApiError> {
    let stack = state.api_keys.authenticate(&headers)?;
    let limit = state.config.max_body_bytes;
    let bytes = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { limit },
        _ => ApiError::MalformedJson(rejection.body_text()),
    })?;
    let req = parse_request(&bytes, workload)?;
    let permit = state
        .inflight
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::AtCapacity {
            limit: state.config.max_concurrent_requests,
        })?;
    let deadline = Instant::now() + Duration::from_millis(state.config.request_timeout_ms);
    let price = state.prices.get(&req.model);
    let max_cost = money::max_cost(&price, &req, bytes.len(), state.config.default_max_output_tokens);
    // Held before any node is asked: a request the balance cannot cover costs nobody any work.
    let escrow = Escrow::hold(
        state.ledger.clone(),
        stack,
        max_cost,
        i64::try_from(
            state
                .config
                .request_timeout_ms
                .saturating_add(state.config.hold_grace_ms),
        )
        .unwrap_or(i64::MAX),
    )
    .await?;
    let user = user_id(stack, req.user.as_deref());
    let mut exclude = None;
    // A node that drops (or is full) before its first chunk costs the client nothing: one retry elsewhere.
    for _attempt in 0..2 {
        let mut lease = state.nodes.pick(&req.model, exclude).map_err(|e| match e {
            PickError::UnknownModel => ApiError::UnknownModel(req.model.clone()),
            PickError::NoCapacity => ApiError::NoNode(req.model.clone()),
        })?;
        let contract = sign_contract(&state, stack, user, &lease, &req, &price, escrow.max_cost)?;
        let mut rx = lease.open_task(contract.body.id);
        let task = HubMessage::Task(Box::new(Task {
            contract: contract.clone(),
            request: req.body.clone(),
        }));
        if lease.node.outbox.send(task).await.is_err() {
            exclude = Some(lease.node.id);
            continue;
        }
        let first = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => {
                cancel(&lease, contract.body.id);
                return Err(ApiError::Timeout(state.config.request_timeout_ms));
            }
            Ok(None | Some(TaskEvent::Gone)) | Ok(Some(TaskEvent::Error(ErrorCode::Overloaded, _))) => {
                exclude = Some(lease.node.id);
                continue;
            }
            Ok(Some(TaskEvent::Error(code, message))) => {
                return Err(ApiError::from_node(
                    code,
                    message,
                    &req.model,
                    state.config.request_timeout_ms,
                ));
            }
            Ok(Some(event)) => event,
        };
        let running = Running {
            state,
            lease,
            rx,
            contract,
            req,
            deadline,
            stamp_time: Timestamp::now(),
            escrow: Some(escrow),
            _permit: permit,
        };
        return if running.req.stream && running.req.workload != Workload::Embedding {
            Ok(running.stream(first))
        } else {
            running.collect(first).await
        };
    }
    Err(ApiError::NoNode(req.model))
}

/// The same end user of the same Stack always gets the same id.
fn user_id(stack: StackId, user: Option<&str>) -> UserId {
    let mut data = stack.as_bytes().to_vec();
    data.extend_from_slice(user.unwrap_or("").as_bytes());
    UserId::derive(&data)
}

fn sign_contract(
    state: &AppState,
    stack: StackId,
    user: UserId,
    lease: &Lease,
    req: &ApiRequest,
    price: &PriceTerms,
    max_cost: Amount,
) -> Result<Signed<PromptContract>, ApiError> {
    let now = Timestamp::now();
    let body = PromptContract {
        id: ContractId::random(),
        hub: state.hub_key.public_key(),
        stack,
        user,
        node_key: lease.node.id,
        workload: req.workload,
        model: req.model.clone(),
        price: price.clone(),
        max_cost,
        split: state.config.split.clone(),
        parties: Parties::default(),
        skills: Vec::new(),
        injections: Vec::new(),
        created_at: now,
        expires_at: now.plus_ms(i64::try_from(state.config.request_timeout_ms).unwrap_or(i64::MAX)),
        nonce: Nonce::random(),
    };
    Signed::sign(body, &state.hub_key).map_err(|e| ApiError::Internal(format!("cannot sign contract: {e}")))
}

fn cancel(lease: &Lease, contract: ContractId) {
    let _ = lease.node.outbox.try_send(HubMessage::Cancel { contract });
}

/// A task that has produced its first event.
struct Running {
    state: AppState,
    lease: Lease,
    rx: mpsc::Receiver<TaskEvent>,
    contract: Signed<PromptContract>,
    req: ApiRequest,
    deadline: Instant,
    stamp_time: Timestamp,
    /// The request's hold; released when this is dropped before the writer took it over.
    escrow: Option<Escrow>,
    /// Holds this request's slot of the hub's concurrency limit until the answer is done.
    _permit: OwnedSemaphorePermit,
}

/// What the hub answers with once the paperwork checks out.
struct Accepted {
    usage: Usage,
    fingerprint: String,
    attribution: Value,
}

impl Running {
    fn stamp(&self) -> Stamp {
        Stamp {
            id: format!("chatcmpl-{}", hex_id(&self.contract.body.id)),
            created: u64::try_from(self.stamp_time.unix_ms() / 1000).unwrap_or(0),
            model: self.req.model.clone(),
            workload: self.req.workload,
        }
    }

    async fn next(&mut self) -> Result<TaskEvent, ApiError> {
        match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Ok(TaskEvent::Gone),
            Err(_) => {
                cancel(&self.lease, self.contract.body.id);
                Err(ApiError::Timeout(self.state.config.request_timeout_ms))
            }
        }
    }

    fn fail(&self, event: TaskEvent) -> ApiError {
        match event {
            TaskEvent::Error(code, message) => ApiError::from_node(
                code,
                message,
                &self.req.model,
                self.state.config.request_timeout_ms,
            ),
            _ => ApiError::NodeFailed("the node disconnected before finishing the task".to_owned()),
        }
    }

    async fn collect(mut self, first: TaskEvent) -> Result<Response, ApiError> {
        let mut chunks = Vec::new();
        let mut assembler = Assembler::default();
        let mut event = first;
        loop {
            match event {
                TaskEvent::Chunk(data) => {
                    assembler.add(&data);
                    chunks.push(data);
                }
                TaskEvent::Done(pw) => {
                    let accepted = self.accept(&chunks, *pw).await?;
                    if self.req.workload == Workload::Embedding {
                        return Ok(axum::Json(self.embeddings_body(&chunks, accepted)?).into_response());
                    }
                    let stamp = self.stamp();
                    let object = if self.req.workload == Workload::Completion {
                        "text_completion"
                    } else {
                        "chat.completion"
                    };
                    let body = json!({
                        "id": stamp.id, "object": object, "created": stamp.created, "model": stamp.model,
                        "choices": assembler.choices(self.req.workload),
                        "usage": usage_json(&accepted.usage),
                        "fingerprint": accepted.fingerprint, "attribution": accepted.attribution,
                    });
                    return Ok(axum::Json(body).into_response());
                }
                other => return Err(self.fail(other)),
            }
            event = self.next().await?;
        }
    }

    /// Embeddings come whole, in one chunk: the OpenAI response, which the hub stamps with the
    /// requested model, the usage from the signed paperwork, and the fingerprint.
    fn embeddings_body(&self, chunks: &[Value], accepted: Accepted) -> Result<Value, ApiError> {
        let [data] = chunks else {
            return Err(ApiError::NodeFailed(format!(
                "expected one embeddings chunk, got {}",
                chunks.len()
            )));
        };
        let mut body = data.clone();
        let obj = body
            .as_object_mut()
            .ok_or_else(|| ApiError::NodeFailed("embeddings are not an object".into()))?;
        obj.insert("object".into(), Value::String("list".into()));
        obj.insert("model".into(), Value::String(self.req.model.clone()));
        let u = &accepted.usage;
        obj.insert(
            "usage".into(),
            json!({"prompt_tokens": u.input_tokens, "total_tokens": u.input_tokens}),
        );
        obj.insert("fingerprint".into(), Value::String(accepted.fingerprint));
        obj.insert("attribution".into(), accepted.attribution);
        Ok(body)
    }

    fn stream(self, first: TaskEvent) -> Response {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(self.pump(first, tx));
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| ApiError::Internal("cannot build the stream".into()).into_response())
    }

    /// Feeds the SSE body; stops (and cancels the task) when the client goes away.
    async fn pump(mut self, first: TaskEvent, tx: mpsc::Sender<Bytes>) {
        let stamp = self.stamp();
        let mut chunks = Vec::new();
        let mut event = Ok(first);
        loop {
            let frame = match event {
                Ok(TaskEvent::Chunk(data)) => {
                    let out = stamp.client_chunk(data.clone());
                    chunks.push(data);
                    match out {
                        Some(c) => sse(&c),
                        None => {
                            event = self.next().await;
                            continue;
                        }
                    }
                }
                Ok(TaskEvent::Done(pw)) => {
                    let last = match self.accept(&chunks, *pw).await {
                        Ok(a) => {
                            let usage = self.req.include_usage.then_some(&a.usage);
                            let mut s =
                                sse(&stamp.final_chunk(usage, &a.fingerprint, &a.attribution)).to_vec();
                            s.extend_from_slice(b"data: [DONE]\n\n");
                            Bytes::from(s)
                        }
                        Err(e) => sse(&e.body()),
                    };
                    let _ = tx.send(last).await;
                    return;
                }
                Ok(other) => {
                    let _ = tx.send(sse(&self.fail(other).body())).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(sse(&e.body())).await;
                    return;
                }
            };
            if tx.send(frame).await.is_err() {
                cancel(&self.lease, self.contract.body.id);
                return;
            }
            event = self.next().await;
        }
    }

    /// Checks the node's paperwork against what the hub issued and received, then stores it.
    async fn accept(&mut self, chunks: &[Value], pw: Signed<Paperwork>) -> Result<Accepted, ApiError> {
        let invalid = |why: String| ApiError::NodeFailed(format!("the node's paperwork was refused: {why}"));
        let checked = check_paperwork_for(&pw, &self.contract).map_err(|e| invalid(e.to_string()))?;
        let req_digest = request_digest(&self.req.body).map_err(|e| invalid(e.to_string()))?;
        if pw.body.request_sha256 != req_digest {
            return Err(invalid("request_sha256 does not match the request".into()));
        }
        let out_digest = output_digest(chunks).map_err(|e| invalid(e.to_string()))?;
        if pw.body.output_sha256 != out_digest {
            return Err(invalid("output_sha256 does not match the output received".into()));
        }
        let attribution = serde_json::to_value(&pw.body.fingerprint).map_err(|e| invalid(e.to_string()))?;
        let json = serde_json::to_string(&pw).map_err(|e| invalid(e.to_string()))?;
        let leaf_hash = paperwork_leaf(&pw).map_err(|e| invalid(e.to_string()))?;
        let contract = &self.contract.body;
        let cost = contract
            .price
            .cost(&pw.body.usage, contract.max_cost)
            .ok_or_else(|| invalid("the usage overflows the price".into()))?;
        let escrow = self.escrow.take();
        let record = PaperworkRecord {
            id: checked.id,
            contract: contract.id.to_string(),
            node_key: contract.node_key,
            json,
            leaf_hash,
            accepted_at: Timestamp::now(),
            hold: escrow.as_ref().and_then(|e| e.hold_id()).map(ToString::to_string),
            cost,
        };
        // From here the writer owns the hold: it captures it, or releases it if the log write
        // fails, even if this request is dropped (a client gone) while it waits.
        if let Some(escrow) = escrow {
            escrow.handed_over();
        }
        // Answered only once the paperwork is logged and its cost captured.
        self.state
            .writer
            .accept(record)
            .await
            .map_err(ApiError::Internal)?;
        Ok(Accepted {
            usage: pw.body.usage,
            fingerprint: checked.fingerprint.to_string(),
            attribution,
        })
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
