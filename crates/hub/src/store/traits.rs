//! The store's seam: one trait per domain, and [`Store`], all of them together, which is what the
//! hub holds (`Arc<dyn Store>`). Every implementation gives the same results; the one test suite
//! (`tests/it/store.rs`) checks that on SQLite and PostgreSQL.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Timestamp};

use super::records::{
    ApiKeyRecord, CaseRecord, Changes, DocRecord, EvidenceRow, FileRecord, KeptTask, LoggedPaperwork,
    ModelPrice, PaperworkRecord, PayoutRecord, PayoutState, SlashRecord, StackRecord, UnbondingRecord,
    UsageRow, ValidatorRecord, WorkerStats,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("the store's connection lock was poisoned by a panic")]
    Poisoned,
    #[error("the store's worker stopped: {0}")]
    Worker(String),
    #[error("database url with scheme {0:?} is neither sqlite://PATH nor postgres://...")]
    BadUrl(String),
    #[error("schema name {0:?} must be 1 to 63 characters of a-z, 0-9 and `_`, not starting with a digit")]
    BadSchemaName(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The registry: Stacks, hashed API keys and model prices (served from memory, written through).
pub trait RegistryStore: Send + Sync + fmt::Debug + 'static {
    fn create_stack(&self, stack: StackRecord) -> StoreFuture<'_, ()>;
    fn stacks(&self) -> StoreFuture<'_, Vec<StackRecord>>;
    fn create_api_key(&self, key: ApiKeyRecord) -> StoreFuture<'_, ()>;
    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>>;
    /// Revokes the live keys shown as `prefix` at `at`, and returns them (none: no such live key).
    fn revoke_key(&self, prefix: String, at: Timestamp) -> StoreFuture<'_, Vec<ApiKeyRecord>>;
    /// Keys created or revoked at or after `version` (the version of an earlier answer), revoked
    /// ones included. Rows of the version asked from come again: two writers may share a version.
    fn api_keys_since(&self, version: u64) -> StoreFuture<'_, Changes<ApiKeyRecord>>;
    /// Sets (or replaces) the price of a model.
    fn set_price(&self, price: ModelPrice) -> StoreFuture<'_, ()>;
    fn prices(&self) -> StoreFuture<'_, Vec<ModelPrice>>;
    /// Prices set at or after `version`, as [`RegistryStore::api_keys_since`] for keys.
    fn prices_since(&self, version: u64) -> StoreFuture<'_, Changes<ModelPrice>>;
}

/// The paperwork log: accepted paperwork in log order, with its Merkle leaf and capture state.
pub trait LogStore: Send + Sync + fmt::Debug + 'static {
    /// Appends a batch to the log atomically, in order, and returns each record's log index; a
    /// paperwork already logged keeps its first index and is not appended again.
    fn append_paperwork(&self, batch: Vec<PaperworkRecord>) -> StoreFuture<'_, Vec<u64>>;
    fn paperwork(&self, id: PaperworkId) -> StoreFuture<'_, Option<LoggedPaperwork>>;
    /// The log's leaf hashes from index `from` on, in order (loading and catching up the tree).
    fn leaf_hashes(&self, from: u64) -> StoreFuture<'_, Vec<[u8; 32]>>;
    /// Logged paperwork whose capture is not recorded yet (after a crash), oldest first.
    fn uncaptured(&self) -> StoreFuture<'_, Vec<LoggedPaperwork>>;
    /// Records each paperwork's cost as captured: the amount the ledger really moved (zero where
    /// the capture was refused, e.g. its hold had expired), which is what filing shares out.
    fn mark_captured(&self, captured: Vec<(PaperworkId, Amount)>) -> StoreFuture<'_, ()>;
    /// The state of several paperwork at once, in the order asked (`None` for ids not in the log),
    /// without the documents themselves (`record.json` is empty): filing has them already.
    fn paperwork_many(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<LoggedPaperwork>>>;
    /// The paperwork logged for `node` at the indexes `from..to`, in log order, with their
    /// documents: what a node whose wallet lost its last writes recovers from the log.
    fn logged_of(&self, node: NodeKeyId, from: u64, to: u64) -> StoreFuture<'_, Vec<LoggedPaperwork>>;
}

/// Filing: settlements of logged paperwork, and the events already seen (webhook ids, signed-request
/// nonces) that keep a request from being acted on twice.
pub trait SettlementStore: Send + Sync + fmt::Debug + 'static {
    /// Write-ahead of a settlement: in one transaction, marks as filed at `at` under `settlement`
    /// those of `ids` not filed before, records the settlement as open, and returns the ids it
    /// claimed (in the order given). Two filings racing for one paperwork: exactly one claims it.
    fn begin_settlement(
        &self,
        settlement: String,
        ids: Vec<PaperworkId>,
        at: Timestamp,
    ) -> StoreFuture<'_, Vec<PaperworkId>>;
    /// The settlement's ledger transfers are written: it is closed.
    fn finish_settlement(&self, settlement: String) -> StoreFuture<'_, ()>;
    /// Settlements begun and not finished (a crash in between), with their paperwork.
    fn open_settlements(&self) -> StoreFuture<'_, Vec<(String, Vec<LoggedPaperwork>)>>;

    /// Records that an event (`kind`, `id`) was seen; false if it had been seen before.
    fn claim_event(&self, kind: &'static str, id: String, at: Timestamp) -> StoreFuture<'_, bool>;
    /// Records a signed request's nonce until `expires_at` (after which the request is refused as
    /// stale anyway); false if it is held already. Forgets the nonces of `kind` expired at `at`, so
    /// the nonces held are only those of the last few minutes' requests.
    fn claim_nonce(
        &self,
        kind: &'static str,
        nonce: String,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreFuture<'_, bool>;
    /// How many events and nonces of `kind` are held.
    fn events_held(&self, kind: &'static str) -> StoreFuture<'_, u64>;
}

/// Payouts of node earnings, and where each one is.
pub trait PayoutStore: Send + Sync + fmt::Debug + 'static {
    fn create_payout(&self, payout: PayoutRecord) -> StoreFuture<'_, ()>;
    /// Moves a payout to `state` only from one of `from`; false (and no change) otherwise, so two
    /// replicas or a retry and a callback never both act on one payout.
    fn update_payout(
        &self,
        id: String,
        from: &'static [PayoutState],
        state: PayoutState,
        attempts: u32,
        last_error: Option<String>,
        at: Timestamp,
    ) -> StoreFuture<'_, bool>;
    fn payout(&self, id: String) -> StoreFuture<'_, Option<PayoutRecord>>;
    /// Payouts in `state`, oldest first (resuming after a restart).
    fn payouts_in(&self, state: PayoutState) -> StoreFuture<'_, Vec<PayoutRecord>>;
    fn payouts_of(&self, node: NodeKeyId) -> StoreFuture<'_, Vec<PayoutRecord>>;
}

/// Validation (`crate::validate`): what is kept of tasks for validators, the cases (sampled tasks,
/// canaries) with their rounds, the validators heard from, workers' counts, slashes, suspensions.
pub trait ValidationStore: Send + Sync + fmt::Debug + 'static {
    fn keep_task(&self, task: KeptTask) -> StoreFuture<'_, ()>;
    fn kept_task(&self, paperwork: PaperworkId) -> StoreFuture<'_, Option<KeptTask>>;
    /// Forgets the tasks accepted before `before`, except those of an open case or a canary;
    /// returns how many.
    fn forget_kept(&self, before: Timestamp) -> StoreFuture<'_, u64>;
    /// Writes a case (replacing the one of its paperwork).
    fn put_case(&self, case: CaseRecord) -> StoreFuture<'_, ()>;
    fn case(&self, paperwork: PaperworkId) -> StoreFuture<'_, Option<CaseRecord>>;
    /// The cases of several paperwork, in the order asked (`None`: none).
    fn cases_of(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<CaseRecord>>>;
    /// The open cases, oldest paperwork first.
    fn open_cases(&self) -> StoreFuture<'_, Vec<CaseRecord>>;
    /// The cases about `node` (every node's when `None`), canaries left out.
    fn cases_about(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<CaseRecord>>;
    /// Adds `delta` (tasks, checks, convictions) to a worker's counts and returns them before it.
    fn bump_worker(&self, node: NodeKeyId, delta: WorkerStats) -> StoreFuture<'_, WorkerStats>;
    /// Records a validator the first time it is heard from (a known one is left as it is).
    fn see_validator(&self, key: stacknet_protocol::PublicKey) -> StoreFuture<'_, ()>;
    fn validators(&self) -> StoreFuture<'_, Vec<ValidatorRecord>>;
    fn set_validator_counts(&self, node: NodeKeyId, handed: u64, since_canary: u64) -> StoreFuture<'_, ()>;
    /// Records a slash under `id`; false (and nothing written) when `id` is recorded already.
    fn add_slash(&self, id: String, slash: SlashRecord) -> StoreFuture<'_, bool>;
    /// The slashes of `node` (every key's when `None`), oldest first.
    fn slashes(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<SlashRecord>>;
    /// Records that `node` was suspended at `at` (a later conviction moves the time on).
    fn suspend(&self, node: NodeKeyId, at: Timestamp) -> StoreFuture<'_, ()>;
    /// Every key ever suspended, with the time of its latest suspension.
    fn suspended(&self) -> StoreFuture<'_, Vec<(NodeKeyId, Timestamp)>>;
    /// The log size through which every logged paperwork's sampling was decided (`None`: never
    /// recorded, a store from before sampling was recoverable).
    fn sampled_through(&self) -> StoreFuture<'_, Option<u64>>;
    /// Records that sampling was decided through log size `size`; never lowers what is recorded.
    fn set_sampled_through(&self, size: u64) -> StoreFuture<'_, ()>;
    /// The paperwork logged at index `from` and after, with its worker, in log order.
    fn logged_since(&self, from: u64) -> StoreFuture<'_, Vec<(PaperworkId, NodeKeyId)>>;
}

/// Unbonding stake, and when each amount may be withdrawn (the money itself is in the ledger).
pub trait StakeStore: Send + Sync + fmt::Debug + 'static {
    /// Records an unbonding; one with the same id recorded before is kept as it is.
    fn add_unbonding(&self, unbonding: UnbondingRecord) -> StoreFuture<'_, ()>;
    /// The key's unbondings not withdrawn yet, earliest `withdrawable_at` first.
    fn unbondings_of(&self, node: NodeKeyId) -> StoreFuture<'_, Vec<UnbondingRecord>>;
    /// Removes an unbonding not withdrawn yet: one whose ledger move never happened.
    fn remove_unbonding(&self, id: String) -> StoreFuture<'_, ()>;
    /// Marks unbondings withdrawn at `at` (those withdrawn before keep their time).
    fn mark_withdrawn(&self, ids: Vec<String>, at: Timestamp) -> StoreFuture<'_, ()>;
    /// Takes `amount` off `node`'s open unbondings for the slash `id`, in one transaction: the
    /// latest withdrawable first, a row taken whole removed. False (and nothing changed) when `id`
    /// took its share before, so a retried slash reduces the rows once.
    fn slash_unbondings(
        &self,
        id: String,
        node: NodeKeyId,
        amount: Amount,
        at: Timestamp,
    ) -> StoreFuture<'_, bool>;
}

/// Reputation evidence (`crate::reputation`): per node, day and kind, counts that only grow, so
/// replicas add into the same rows.
pub trait ReputationStore: Send + Sync + fmt::Debug + 'static {
    /// Adds each row's count and milliseconds into the stored row of its node, day and kind (made
    /// when missing), in one transaction. The rows' (node, day, kind) are distinct.
    fn add_evidence(&self, rows: Vec<EvidenceRow>) -> StoreFuture<'_, ()>;
    /// The evidence about `node` (every node's when `None`), by node, day and kind.
    fn evidence(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<EvidenceRow>>;
    /// Keeps a guardian's signed telemetry report (`json`) about `node` under `id`; false (and
    /// nothing written) when `id` is kept already.
    fn add_telemetry(
        &self,
        id: String,
        node: NodeKeyId,
        at: Timestamp,
        json: String,
    ) -> StoreFuture<'_, bool>;
    /// The newest `limit` telemetry reports about `node`, newest first.
    fn telemetry(&self, node: NodeKeyId, limit: u32) -> StoreFuture<'_, Vec<String>>;
}

/// The dashboard's per-minute rollups (`crate::rollup`): counts that only grow, so replicas add
/// into the same rows.
pub trait UsageStore: Send + Sync + fmt::Debug + 'static {
    /// Adds each row's counts into the stored row of its minute, Stack, node, model and workload
    /// (made when missing), in one transaction. The rows' keys are distinct.
    fn add_usage(&self, rows: Vec<UsageRow>) -> StoreFuture<'_, ()>;
    /// The rows of minutes from `since` on, of one Stack's tasks when `stack` is given.
    fn usage_since(
        &self,
        since: i64,
        stack: Option<stacknet_protocol::StackId>,
    ) -> StoreFuture<'_, Vec<UsageRow>>;
}

/// The attribution registry's documents (`crate::attribution`), versioned and never changed once
/// written, and named counters (a skill's usage) that only grow, so replicas add into one row.
pub trait DocStore: Send + Sync + fmt::Debug + 'static {
    /// Writes a document's version; false (nothing written) when that kind, id and version exist.
    fn put_doc(&self, doc: DocRecord) -> StoreFuture<'_, bool>;
    /// Every version written at or after `version` (of an earlier answer), as
    /// [`RegistryStore::api_keys_since`] for keys; 0 gives them all.
    fn docs_since(&self, version: u64) -> StoreFuture<'_, Changes<DocRecord>>;
    /// Every version of one document, oldest first.
    fn doc_versions(&self, kind: String, id: String) -> StoreFuture<'_, Vec<DocRecord>>;
    /// Every document of a kind, every version, in write order (then id and version).
    fn docs_of_kind(&self, kind: String) -> StoreFuture<'_, Vec<DocRecord>>;
    /// Adds to named counters (made when missing), in one transaction.
    fn add_counts(&self, rows: Vec<(String, u64)>) -> StoreFuture<'_, ()>;
    /// The counters named, in the order asked (0 for one never counted).
    fn counts(&self, names: Vec<String>) -> StoreFuture<'_, Vec<u64>>;
}

/// Files served by URL for a limited time (see [`FileRecord`]).
pub trait FileStore: Send + Sync + fmt::Debug + 'static {
    /// Keeps `file` until its `expires_at`; a second put of the same id changes nothing.
    fn put_file(&self, file: FileRecord) -> StoreFuture<'_, ()>;
    /// The file `id` if it is kept and has not expired at `now`.
    fn file(&self, id: String, now: Timestamp) -> StoreFuture<'_, Option<FileRecord>>;
    /// Deletes the files expired at `now`; how many.
    fn forget_files(&self, now: Timestamp) -> StoreFuture<'_, u64>;
}

/// Everything the hub keeps outside the ledger: every store implements all its domains (one
/// database holds them), so the hub passes one `Arc<dyn Store>` around. The methods of a trait
/// object's supertraits need no import, so `store.stacks()` works on an `Arc<dyn Store>` as it is.
pub trait Store:
    RegistryStore
    + LogStore
    + SettlementStore
    + PayoutStore
    + StakeStore
    + ValidationStore
    + ReputationStore
    + UsageStore
    + DocStore
    + FileStore
{
}

impl<
        T: RegistryStore
            + LogStore
            + SettlementStore
            + PayoutStore
            + StakeStore
            + ValidationStore
            + ReputationStore
            + UsageStore
            + DocStore
            + FileStore
            + ?Sized,
    > Store for T
{
}
