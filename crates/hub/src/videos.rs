//! Video jobs, as OpenAI's videos API defines them, so long work does not hold an HTTP request
//! open: `POST /v1/videos` creates a job and answers at once; `GET /v1/videos/{id}` gives its
//! status and progress; `GET /v1/videos/{id}/content` its MP4 file once completed; `GET
//! /v1/videos` lists a Stack's jobs; `DELETE /v1/videos/{id}` cancels a running job or deletes a
//! finished one; `POST /v1/videos/{id}/remix` makes a new job from a completed one with a new
//! prompt.
//!
//! A job runs its task as any request runs (`crate::task::execute`): held, contracted, placed on a
//! node, its paperwork checked, logged and billed when the node's file arrives, priced per second
//! of video (one unit a second), with [`HubConfig::video_timeout_ms`](crate::HubConfig) as its
//! time limit. Its progress is the node's: the `{"progress": percent}` chunks the node sends. A
//! cancel drops the task, which cancels it on the node; the node signs for the seconds it rendered
//! and they are billed, as for any task whose client went away.
//!
//! Jobs are documents in the database every hub process shares (kind [`JOB_KIND`], one version a
//! change, never rewritten: a second writer of the same version loses and reads again), and the
//! finished file (and the job's `input_reference` upload, which a remix starts from too) is kept in
//! the shared file store for [`VIDEO_RETENTION_MS`]; any replica answers
//! any job. The process running a job renews its lease (every third of
//! [`HubConfig::video_lease_ms`](crate::HubConfig)); a running job whose lease lapsed (the hub
//! running it stopped) is taken over by the next process that reads it and run again from its
//! request (and kept `input_reference`), at most [`MAX_RUNS`] times in all, unless the ledger shows
//! one of its contracts billed already: then it is failed rather than billed twice. The stopped
//! run's hold is released when it expires. Its node keeps the work going when it loses the hub and
//! joins it to the task sent again (`stacknet_node`'s detached runs), so the job resumes where it
//! got to; a node that went too means the work is done again, from the start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::Attachment;
use stacknet_protocol::{Sha256Digest, StackId, Timestamp};

use crate::attribution::Shaped;
use crate::error::ApiError;
use crate::store::{DocRecord, FileRecord, Store};
use crate::task::{execute, ContractHook, How};
use crate::workload::{self, Files, Parsed};
use crate::AppState;

/// The document kind of a job.
pub const JOB_KIND: &str = "video";
/// How long a finished video's file is kept: a day.
pub const VIDEO_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// A job's time limit unless configured otherwise: half an hour.
pub const DEFAULT_VIDEO_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// How long a running job's lease lasts unless configured otherwise
/// ([`HubConfig::video_lease_ms`](crate::HubConfig)); the process running it renews it every third.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// How many times a job runs at most: once, and again after each of two hubs that stopped while
/// running it.
pub const MAX_RUNS: u32 = 3;
/// Progress is written when it moved at least this many percent.
const PROGRESS_STEP: u64 = 5;
/// Most jobs one list answers.
pub const MAX_LIST: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl Status {
    fn running(self) -> bool {
        matches!(self, Status::Queued | Status::InProgress)
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }
}

/// One job, as its document holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub stack: StackId,
    pub model: String,
    pub prompt: String,
    pub seconds: u64,
    pub size: Option<String>,
    pub status: Status,
    pub progress: u64,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// `{"code", "message"}` of a failed job.
    pub error: Option<Value>,
    pub remixed_from_video_id: Option<String>,
    /// The task's request, its upload named by its descriptor (what a remix starts from).
    pub request: Value,
    pub file_id: Option<String>,
    /// The file store's copy of the job's `input_reference` upload, which a remix starts from too
    /// (kept for [`VIDEO_RETENTION_MS`]).
    #[serde(default)]
    pub reference_file: Option<String>,
    /// The paperwork of the finished task.
    pub paperwork: Option<String>,
    pub deleted: bool,
    /// While running: until when the process running it vouches for it.
    pub lease_until: Option<Timestamp>,
    /// The process running it ([`Running::owner`]); another's lease it never renews.
    #[serde(default)]
    pub owner: Option<String>,
    /// Every contract its task was sent to a node under, each written before the task was sent: a
    /// stopped hub's successor learns from them whether the work was already billed.
    #[serde(default)]
    pub contracts: Vec<String>,
    /// How many times it was started ([`MAX_RUNS`] at most).
    #[serde(default)]
    pub runs: u32,
    /// The document's version (not part of its JSON).
    #[serde(skip)]
    pub version: u64,
}

impl Job {
    /// The job as OpenAI's video object.
    pub fn object(&self) -> Value {
        let secs = |t: &Option<Timestamp>| t.map(|t| t.unix_ms() / 1000);
        json!({
            "id": self.id,
            "object": "video",
            "model": self.model,
            "status": self.status,
            "progress": self.progress,
            "created_at": self.created_at.unix_ms() / 1000,
            "completed_at": secs(&self.completed_at),
            "expires_at": secs(&self.expires_at),
            "seconds": self.seconds.to_string(),
            "size": self.size,
            "prompt": self.prompt,
            "remixed_from_video_id": self.remixed_from_video_id,
            "error": self.error,
            // The proof of the finished task, as every other answer carries it.
            "paperwork": self.paperwork,
        })
    }

    fn lapsed(&self, now: Timestamp) -> bool {
        self.status.running() && self.lease_until.is_none_or(|until| until < now)
    }
}

/// The jobs this process runs, by id: dropping one's task cancels it.
#[derive(Debug)]
pub struct Running {
    jobs: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// This process's name on the leases it holds (random per process).
    owner: String,
    /// [`Running::crash`] was called: no task of this hub does anything more.
    crashed: std::sync::atomic::AtomicBool,
}

impl Default for Running {
    fn default() -> Self {
        Self {
            jobs: Mutex::default(),
            owner: new_id(),
            crashed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops every job's task here without writing anything, as a crash would (a test hook: the
    /// jobs' leases lapse, and the next process reading them runs them again). A dropped task of a
    /// crashed hub does not cancel its node and wait for its paperwork (`crate::task`): a process
    /// that died could not.
    pub fn crash(&self) {
        self.crashed.store(true, std::sync::atomic::Ordering::SeqCst);
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }

    /// Whether [`Running::crash`] was called.
    pub fn crashed(&self) -> bool {
        self.crashed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn owns(&self, job: &Job) -> bool {
        job.owner.as_deref() == Some(self.owner.as_str())
    }

    /// Whether this process still runs `job`: its own, not deleted.
    fn runs(&self, job: &Job) -> bool {
        !job.deleted && self.owns(job)
    }

    fn has(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Cancels the job's task if it runs here; whether it did.
    fn cancel(&self, id: &str) -> bool {
        self.lock().remove(id).map(|h| h.abort()).is_some()
    }
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    format!("video_{}", hex::encode(bytes))
}

fn is_id(id: &str) -> bool {
    id.strip_prefix("video_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The newest version of job `id`, if any.
async fn load(store: &dyn Store, id: &str) -> Result<Option<Job>, ApiError> {
    let versions = store
        .doc_versions(JOB_KIND.to_owned(), id.to_owned())
        .await
        .map_err(ApiError::internal)?;
    versions.last().map(parse).transpose()
}

fn parse(doc: &DocRecord) -> Result<Job, ApiError> {
    let mut job: Job = serde_json::from_str(&doc.json).map_err(ApiError::internal)?;
    job.version = doc.version;
    Ok(job)
}

/// Writes `job` as the version after its own; false when another writer got there first.
async fn save(store: &dyn Store, job: &mut Job) -> Result<bool, ApiError> {
    let doc = DocRecord {
        kind: JOB_KIND.to_owned(),
        id: job.id.clone(),
        version: job.version + 1,
        stack: Some(job.stack),
        json: serde_json::to_string(job).map_err(ApiError::internal)?,
        created_at: Timestamp::now(),
    };
    let written = store.put_doc(doc).await.map_err(ApiError::internal)?;
    if written {
        job.version += 1;
    }
    Ok(written)
}

/// Applies `change` to the newest version of job `id` and writes it, reading again when another
/// writer got there first. The job as written; `None` when there is no such job, or `change`
/// declines (returns false).
async fn update(
    store: &dyn Store,
    id: &str,
    mut change: impl FnMut(&mut Job) -> bool,
) -> Result<Option<Job>, ApiError> {
    for _ in 0..8 {
        let Some(mut job) = load(store, id).await? else {
            return Ok(None);
        };
        if !change(&mut job) {
            return Ok(None);
        }
        if save(store, &mut job).await? {
            return Ok(Some(job));
        }
    }
    Err(ApiError::Conflict(format!(
        "the video job {id} is changing too fast; retry"
    )))
}

/// The caller's job `id`, with a lapsed running job failed first; 404 for another Stack's, a
/// deleted one or none.
async fn owned(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Job, ApiError> {
    let caller = state.api_keys.caller(headers)?;
    let not_found = || ApiError::NotFound(format!("no video {id:?}"));
    if !is_id(id) {
        return Err(not_found());
    }
    let job = load(&*state.store, id)
        .await?
        .filter(|j| j.stack == caller.stack && !j.deleted)
        .ok_or_else(not_found)?;
    let now = Timestamp::now();
    if job.lapsed(now) && !state.videos.has(id) {
        return adopt(state, job, now).await;
    }
    Ok(job)
}

/// A running job whose lease lapsed (the hub running it stopped), found by this process: run again
/// here, unless a contract of it was billed already (the work was paid for, then the hub stopped
/// before it stored the file: running it again would bill it twice), or it ran [`MAX_RUNS`] times.
/// One process takes it over (the document's version decides); the job as it stands after.
async fn adopt(state: &AppState, job: Job, now: Timestamp) -> Result<Job, ApiError> {
    let billed = billed_contract(state, &job.contracts).await?;
    let mine = state.videos.owner.clone();
    let lease = lease_ms(state);
    let taken = update(&*state.store, &job.id, |j| {
        if !j.lapsed(now) {
            return false;
        }
        match &billed {
            Some(contract) => fail(
                j,
                "hub_stopped",
                &format!("the hub running this job stopped after its work was billed (contract {contract}) and before it stored the video; it is not run again, so it is not billed twice"),
            ),
            None if j.runs >= MAX_RUNS => fail(
                j,
                "hub_stopped",
                &format!("the hubs running this job stopped {} times before it finished", j.runs),
            ),
            None => {
                j.status = Status::Queued;
                j.progress = 0;
                j.runs += 1;
                j.owner = Some(mine.clone());
                j.lease_until = Some(Timestamp::now().plus_ms(lease));
            }
        }
        true
    })
    .await?;
    let Some(taken) = taken else {
        // Another process got there first: as it left the job.
        return Ok(load(&*state.store, &job.id).await?.unwrap_or(job));
    };
    if taken.status == Status::Queued {
        tracing::info!(job = %taken.id, run = taken.runs, "running an orphaned video job again");
        let parsed = Parsed {
            request: stacknet_api::request::validate(Workload::VideoGeneration, taken.request.clone())?,
            files: kept_reference(state, &taken).await?,
        };
        let body_len = serde_json::to_vec(&taken.request)
            .map_err(ApiError::internal)?
            .len();
        spawn(state, taken.id.clone(), taken.stack, parsed, body_len);
    }
    Ok(taken)
}

/// A contract of `contracts` whose work was billed: its capture is in the ledger (the settle writer
/// captures in the same batch as it logs the paperwork, and a restarted hub finishes a batch it
/// logged before it serves).
async fn billed_contract(state: &AppState, contracts: &[String]) -> Result<Option<String>, ApiError> {
    for contract in contracts {
        let capture =
            stacknet_ledger::TransferId::new(&format!("capture:{contract}")).map_err(ApiError::internal)?;
        if state
            .ledger
            .transfer(capture)
            .await
            .map_err(ApiError::internal)?
            .is_some()
        {
            return Ok(Some(contract.clone()));
        }
    }
    Ok(None)
}

fn fail(job: &mut Job, code: &str, message: &str) {
    job.status = Status::Failed;
    job.error = Some(json!({"code": code, "message": message}));
    job.lease_until = None;
    job.completed_at = Some(Timestamp::now());
}

/// `POST /v1/videos`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let made = async {
        let caller = state.api_keys.caller(&headers)?;
        let api = workload::api(Workload::VideoGeneration)
            .ok_or_else(|| ApiError::internal("no video workload"))?;
        let limit = state.config.body_limit(api);
        let bytes = body.map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { limit },
            _ => ApiError::MalformedJson(rejection.body_text()),
        })?;
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let body_len = bytes.len();
        let parsed = api.parse(content_type, bytes)?;
        start(&state, caller.stack, parsed, body_len, None).await
    };
    match made.await {
        Ok(job) => axum::Json(job.object()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Writes a new job for `parsed` and starts it on a task of its own.
async fn start(
    state: &AppState,
    stack: StackId,
    parsed: Parsed,
    body_len: usize,
    remixed_from: Option<String>,
) -> Result<Job, ApiError> {
    let (_, video) = stacknet_api::request::video::validate(parsed.request.body.clone())?;
    if !state.nodes.knows_model(&parsed.request.model) {
        return Err(ApiError::UnknownModel(parsed.request.model.clone()));
    }
    let mut job = Job {
        id: new_id(),
        stack,
        model: parsed.request.model.clone(),
        prompt: video.prompt,
        seconds: video.seconds,
        size: video.size,
        status: Status::Queued,
        progress: 0,
        created_at: Timestamp::now(),
        completed_at: None,
        expires_at: None,
        error: None,
        remixed_from_video_id: remixed_from,
        request: parsed.request.body.clone(),
        file_id: None,
        reference_file: keep_reference(state, stack, &parsed).await?,
        paperwork: None,
        deleted: false,
        lease_until: Some(Timestamp::now().plus_ms(lease_ms(state))),
        owner: Some(state.videos.owner.clone()),
        contracts: Vec::new(),
        runs: 1,
        version: 0,
    };
    if !save(&*state.store, &mut job).await? {
        return Err(ApiError::internal("a new video id was taken"));
    }
    spawn(state, job.id.clone(), stack, parsed, body_len);
    Ok(job)
}

/// Runs job `id` here.
fn spawn(state: &AppState, id: String, stack: StackId, parsed: Parsed, body_len: usize) {
    // Held while the task starts, so a task that ends at once cannot remove itself first.
    let mut running = state.videos.lock();
    let task = tokio::spawn(run(state.clone(), id.clone(), stack, parsed, body_len));
    running.insert(id, task.abort_handle());
}

fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.video_lease_ms.max(1)).unwrap_or(i64::MAX)
}

/// Runs job `id`'s task to its end, writing its progress, lease and outcome.
async fn run(state: AppState, id: String, stack: StackId, parsed: Parsed, body_len: usize) {
    let outcome = drive(&state, &id, stack, parsed, body_len).await;
    let store = &*state.store;
    let written = match outcome {
        Ok(Some((file_id, paperwork))) => {
            update(store, &id, |j| {
                if !state.videos.owns(j) {
                    return false;
                }
                j.status = Status::Completed;
                j.progress = 100;
                j.completed_at = Some(Timestamp::now());
                j.expires_at = Some(Timestamp::now().plus_ms(VIDEO_RETENTION_MS));
                j.file_id = Some(file_id.clone());
                j.paperwork = paperwork.clone();
                j.lease_until = None;
                true
            })
            .await
        }
        // Deleted while it ran: nothing more to say.
        Ok(None) => Ok(None),
        Err(e) => {
            let body = e.body();
            let code = body["error"]["code"].as_str().unwrap_or("failed").to_owned();
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("the job failed")
                .to_owned();
            update(store, &id, |j| {
                if !state.videos.owns(j) {
                    return false;
                }
                fail(j, &code, &message);
                true
            })
            .await
        }
    };
    if let Err(e) = written {
        tracing::warn!(job = %id, error = %e, "could not write a video job's outcome");
    }
    state.videos.lock().remove(&id);
}

/// The task, with its progress and lease written as it runs: the stored file's id and the
/// paperwork when it finished, `None` when the job was deleted meanwhile (elsewhere).
async fn drive(
    state: &AppState,
    id: &str,
    stack: StackId,
    parsed: Parsed,
    body_len: usize,
) -> Result<Option<(String, Option<String>)>, ApiError> {
    let api =
        workload::api(Workload::VideoGeneration).ok_or_else(|| ApiError::internal("no video workload"))?;
    let (progress, mut seen) = tokio::sync::watch::channel(0u64);
    // Each contract is written to the job before its task goes to a node, so whoever finds the job
    // orphaned can tell whether its work was billed.
    let hook_state = state.clone();
    let job_id = id.to_owned();
    let before_send = ContractHook::new(move |contract| {
        let (state, id) = (hook_state.clone(), job_id.clone());
        Box::pin(async move {
            let written = update(&*state.store, &id, |j| {
                if !state.videos.runs(j) {
                    return false;
                }
                j.contracts.push(contract.to_string());
                true
            })
            .await?;
            match written {
                Some(_) => Ok(()),
                None => Err(ApiError::NotFound(format!(
                    "the video job {id} was deleted or taken over"
                ))),
            }
        })
    });
    let how = How {
        pinned: None,
        timeout_ms: Some(state.config.video_timeout_ms),
        progress: Some(progress),
        before_send: Some(before_send),
    };
    let work = execute(
        state.clone(),
        stack,
        api,
        parsed,
        body_len,
        how,
        Shaped::default(),
    );
    tokio::pin!(work);
    let lease = lease_ms(state);
    let mut renew = tokio::time::interval(Duration::from_millis(state.config.video_lease_ms.max(3) / 3));
    renew.tick().await;
    let mut written = 0u64;
    let store = &*state.store;
    let response = loop {
        tokio::select! {
            done = &mut work => break done?,
            Ok(()) = seen.changed() => {
                let percent = (*seen.borrow_and_update()).min(99);
                if percent >= written + PROGRESS_STEP || (written == 0 && percent > 0) {
                    written = percent;
                    let changed = update(store, id, |j| {
                        if !state.videos.runs(j) {
                            return false;
                        }
                        j.status = Status::InProgress;
                        j.progress = j.progress.max(percent);
                        j.lease_until = Some(Timestamp::now().plus_ms(lease));
                        true
                    })
                    .await?;
                    if changed.is_none() {
                        return Ok(None); // deleted or taken over: dropping the task cancels it
                    }
                }
            }
            _ = renew.tick() => {
                let renewed = update(store, id, |j| {
                    if !state.videos.runs(j) {
                        return false;
                    }
                    j.lease_until = Some(Timestamp::now().plus_ms(lease));
                    true
                })
                .await?;
                if renewed.is_none() {
                    return Ok(None);
                }
            }
        }
    };
    let paperwork = response
        .headers()
        .get(stacknet_api::output::headers::PAPERWORK)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("video/mp4")
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::internal(format!("the video could not be read: {e}")))?;
    let file_id = keep_file(store, stack, content_type, bytes.to_vec()).await?;
    Ok(Some((file_id, paperwork)))
}

/// Keeps `bytes` in the shared file store for [`VIDEO_RETENTION_MS`]; the file's id.
async fn keep_file(
    store: &dyn Store,
    stack: StackId,
    content_type: String,
    bytes: Vec<u8>,
) -> Result<String, ApiError> {
    let id = format!("file_{}", &new_id()["video_".len()..]);
    let now = Timestamp::now();
    store
        .put_file(FileRecord {
            id: id.clone(),
            content_type,
            bytes,
            stack,
            created_at: now,
            expires_at: now.plus_ms(VIDEO_RETENTION_MS),
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(id)
}

/// How soon OpenAI's SDKs should poll a running job again (`openai-poll-after-ms`).
pub const POLL_AFTER_MS: u64 = 500;

/// `GET /v1/videos/{id}`.
pub async fn get(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match owned(&state, &headers, &id).await {
        Ok(job) => {
            let mut response = axum::Json(job.object()).into_response();
            if job.status.running() {
                response
                    .headers_mut()
                    .insert("openai-poll-after-ms", HeaderValue::from(POLL_AFTER_MS));
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/videos/{id}`: a running job is cancelled (the node bills what it rendered), a
/// finished one deleted; either way it is gone from the API.
pub async fn delete(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let deleted = async {
        owned(&state, &headers, &id).await?;
        // Here, its task is dropped now; elsewhere, the process running it sees the mark.
        state.videos.cancel(&id);
        update(&*state.store, &id, |j| {
            j.deleted = true;
            j.lease_until = None;
            true
        })
        .await?;
        Ok::<_, ApiError>(json!({"id": id, "object": "video.deleted", "deleted": true}))
    };
    match deleted.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct ContentQuery {
    variant: Option<String>,
}

/// `GET /v1/videos/{id}/content`: the MP4 file of a completed job.
pub async fn content(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ContentQuery>,
) -> Response {
    let file = async {
        let job = owned(&state, &headers, &id).await?;
        if let Some(v) = query.variant.as_deref().filter(|v| *v != "video") {
            return Err(ApiError::invalid(
                "variant",
                format!("variant {v:?} is not kept; the video itself is (variant=video)"),
            ));
        }
        let status = job.status;
        let not_ready = || {
            ApiError::invalid(
                "id",
                format!(
                    "the video is {}, not completed: it has no content",
                    status.as_str()
                ),
            )
        };
        let file_id = job
            .file_id
            .filter(|_| status == Status::Completed)
            .ok_or_else(not_ready)?;
        state
            .store
            .file(file_id, Timestamp::now())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::NotFound(format!("the video {id:?} has expired")))
    };
    match file.await {
        Ok(file) => {
            let mut response = file.bytes.into_response();
            if let Ok(v) = HeaderValue::from_str(&file.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
}

/// `GET /v1/videos`: the caller's jobs, newest first (`order=asc` for oldest), `limit` at a time
/// after the job `after`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let listed = async {
        let caller = state.api_keys.caller(&headers)?;
        let limit = query.limit.unwrap_or(20);
        if limit == 0 || limit > MAX_LIST {
            return Err(ApiError::invalid(
                "limit",
                format!("limit must be 1 to {MAX_LIST}"),
            ));
        }
        let ascending = match query.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => return Err(ApiError::invalid("order", "order must be asc or desc")),
        };
        let docs = state
            .store
            .docs_of_kind(JOB_KIND.to_owned())
            .await
            .map_err(ApiError::internal)?;
        let mut newest: HashMap<String, &DocRecord> = HashMap::new();
        for doc in docs.iter().filter(|d| d.stack == Some(caller.stack)) {
            let slot = newest.entry(doc.id.clone()).or_insert(doc);
            if doc.version > slot.version {
                *slot = doc;
            }
        }
        let mut jobs: Vec<Job> = newest
            .values()
            .map(|d| parse(d))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|j| !j.deleted)
            .collect();
        jobs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        if !ascending {
            jobs.reverse();
        }
        if let Some(after) = &query.after {
            let at = jobs
                .iter()
                .position(|j| &j.id == after)
                .ok_or_else(|| ApiError::invalid("after", format!("no video {after:?}")))?;
            jobs.drain(..=at);
        }
        let has_more = jobs.len() > limit;
        jobs.truncate(limit);
        let data: Vec<Value> = jobs.iter().map(Job::object).collect();
        Ok::<_, ApiError>(json!({
            "object": "list",
            "data": data,
            "first_id": jobs.first().map(|j| j.id.clone()),
            "last_id": jobs.last().map(|j| j.id.clone()),
            "has_more": has_more,
        }))
    };
    match listed.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Keeps a job's `input_reference` upload in the shared file store, so a remix (on any replica)
/// starts from it too; its id, or `None` for a job without one.
async fn keep_reference(
    state: &AppState,
    stack: StackId,
    parsed: &Parsed,
) -> Result<Option<String>, ApiError> {
    let Some((attachment, bytes)) = parsed.files.first() else {
        return Ok(None);
    };
    let id = keep_file(
        &*state.store,
        stack,
        attachment.content_type.clone(),
        bytes.to_vec(),
    )
    .await?;
    Ok(Some(id))
}

/// The upload a remix of `original` starts from: its `input_reference`, as it travelled to the node;
/// none when it had none. A reference no longer in the store (expired) is a 400.
async fn kept_reference(state: &AppState, original: &Job) -> Result<Files, ApiError> {
    let Some(id) = &original.reference_file else {
        return Ok(Vec::new());
    };
    let file = state
        .store
        .file(id.clone(), Timestamp::now())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::invalid(
                "id",
                "the video's input_reference has expired; it cannot be remixed",
            )
        })?;
    let attachment = Attachment {
        sha256: Sha256Digest::of(&file.bytes),
        size: file.bytes.len() as u64,
        content_type: file.content_type,
    };
    Ok(vec![(attachment, Bytes::from(file.bytes))])
}

/// `POST /v1/videos/{id}/remix` (`{"prompt"}`): a new job with the completed job's model, length,
/// size, seed and input reference, and the new prompt.
pub async fn remix(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let made = async {
        let original = owned(&state, &headers, &id).await?;
        let bytes = body.map_err(|r| ApiError::MalformedJson(r.body_text()))?;
        let asked: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let prompt = asked
            .get("prompt")
            .cloned()
            .ok_or_else(|| ApiError::invalid("prompt", "you must provide a prompt parameter"))?;
        if original.status != Status::Completed {
            return Err(ApiError::invalid("id", "only a completed video can be remixed"));
        }
        let files = kept_reference(&state, &original).await?;
        let mut request = original.request.clone();
        if let Some(obj) = request.as_object_mut() {
            obj.insert("prompt".into(), prompt);
            obj.insert("remix_of".into(), Value::String(original.id.clone()));
        }
        let body_len = serde_json::to_vec(&request).map_err(ApiError::internal)?.len();
        let request = stacknet_api::request::validate(Workload::VideoGeneration, request)?;
        let parsed = Parsed { request, files };
        start(&state, original.stack, parsed, body_len, Some(original.id)).await
    };
    match made.await {
        Ok(job) => axum::Json(job.object()).into_response(),
        Err(e) => e.into_response(),
    }
}
