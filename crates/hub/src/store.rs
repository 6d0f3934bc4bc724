//! What the hub keeps besides the ledger: the registry (Stacks, hashed API keys, model prices), the
//! paperwork log (accepted paperwork in log order, with its Merkle leaf and settlement state), events
//! already seen (webhook ids, signed-request nonces: replay protection) and payouts.
//!
//! One async `Store` trait with two implementations, [`SqliteStore`] (the embedded default) and
//! [`crate::pg_store::PgStore`] (several replicas); one test suite runs against both. Reads that gate
//! requests (API keys, prices) are served from memory, loaded at start and written through.
//! Paperwork is appended by [`PaperworkWriter`], which groups appends into one transaction per batch.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use stacknet_protocol::contract::PriceTerms;
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, StackId, Timestamp};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRecord {
    pub id: StackId,
    pub name: String,
    pub created_at: Timestamp,
}

/// An API key as stored: only the SHA-256 of the secret, plus a short prefix to recognise it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub hash: [u8; 32],
    pub prefix: String,
    pub stack: StackId,
    pub created_at: Timestamp,
}

/// The price of one model, set by the admin; written into every contract for that model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub model: String,
    pub price: PriceTerms,
    pub updated_at: Timestamp,
}

/// An accepted paperwork, as appended to the log: the signed JSON as received and its Merkle leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperworkRecord {
    pub id: PaperworkId,
    pub contract: String,
    pub node_key: NodeKeyId,
    pub json: String,
    pub leaf_hash: [u8; 32],
    pub accepted_at: Timestamp,
    /// The escrow hold this task's cost is captured from (`None` for a free task).
    pub hold: Option<String>,
    /// The actual cost under the contract's price, captured from the hold.
    pub cost: Amount,
}

/// A paperwork in the log, with its place and settlement state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPaperwork {
    pub index: u64,
    pub record: PaperworkRecord,
    /// The actual cost was captured from escrow (set after the ledger write).
    pub captured: bool,
    pub filed_at: Option<Timestamp>,
}

/// Where a payout is. `Pending` and `Sent` are open; `Confirmed` and `Failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// Earnings moved to payout-pending; the webhook has not been delivered yet.
    Pending,
    /// The payment endpoint accepted the request; waiting for its confirmation.
    Sent,
    /// Paid out: the money left the books.
    Confirmed,
    /// Not paid: the money went back to the node's earnings.
    Failed,
}

impl PayoutState {
    pub const fn as_str(self) -> &'static str {
        match self {
            PayoutState::Pending => "pending",
            PayoutState::Sent => "sent",
            PayoutState::Confirmed => "confirmed",
            PayoutState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => PayoutState::Pending,
            "sent" => PayoutState::Sent,
            "confirmed" => PayoutState::Confirmed,
            "failed" => PayoutState::Failed,
            _ => return None,
        })
    }

    pub const fn is_final(self) -> bool {
        matches!(self, PayoutState::Confirmed | PayoutState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecord {
    /// `po_` + 32 hex characters.
    pub id: String,
    pub node_key: NodeKeyId,
    pub amount: Amount,
    /// The operator's account at the payment provider, passed through as given.
    pub destination: String,
    pub state: PayoutState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Everything the hub keeps outside the ledger. Every implementation gives the same results.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    fn create_stack(&self, stack: StackRecord) -> StoreFuture<'_, ()>;
    fn stacks(&self) -> StoreFuture<'_, Vec<StackRecord>>;
    fn create_api_key(&self, key: ApiKeyRecord) -> StoreFuture<'_, ()>;
    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>>;
    /// Sets (or replaces) the price of a model.
    fn set_price(&self, price: ModelPrice) -> StoreFuture<'_, ()>;
    fn prices(&self) -> StoreFuture<'_, Vec<ModelPrice>>;

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

/// Opens the store a `--database` URL names: `sqlite://PATH` or `postgres://...`.
pub async fn open(database: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = database.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteStore::open(Path::new(path))?));
    }
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let (url, schema) = pg_schema(database);
        return crate::pg_store::PgStore::connect(&url, &schema).await;
    }
    let scheme = database.split_once("://").map_or("", |(s, _)| s);
    Err(StoreError::BadUrl(scheme.chars().take(16).collect()))
}

/// Splits our own `schema=NAME` query parameter off a PostgreSQL URL (default `public`): the
/// schema the hub's tables and the ledger's live in, so that several hubs (or tests) can share one
/// database. Everything else in the URL goes to the driver as given.
pub fn pg_schema(url: &str) -> (String, String) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), "public".to_owned());
    };
    let mut schema = "public".to_owned();
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(name) => {
                schema = name.to_owned();
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SqliteStore")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stacks (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    hash BLOB PRIMARY KEY, prefix TEXT NOT NULL, stack TEXT NOT NULL REFERENCES stacks(id),
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prices (model TEXT PRIMARY KEY, terms TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paperwork_log (
    idx INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, contract TEXT NOT NULL UNIQUE, node_key TEXT NOT NULL,
    leaf_hash BLOB NOT NULL, accepted_at TEXT NOT NULL, hold TEXT, cost INTEGER NOT NULL,
    captured INTEGER NOT NULL DEFAULT 0, filed_at TEXT, settlement TEXT);
-- The documents apart from their small, often-updated state: SQLite rewrites a whole row (a
-- paperwork is ~3 KB) on every update, so capture and filing would otherwise rewrite them all.
CREATE TABLE IF NOT EXISTS paperwork_json (idx INTEGER PRIMARY KEY, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS paperwork_by_settlement ON paperwork_log (settlement) WHERE settlement IS NOT NULL;
CREATE TABLE IF NOT EXISTS settlements (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, done INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS paperwork_uncaptured ON paperwork_log (captured) WHERE captured = 0;
CREATE TABLE IF NOT EXISTS events (kind TEXT NOT NULL, id TEXT NOT NULL, seen_at TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS payouts (
    id TEXT PRIMARY KEY, node_key TEXT NOT NULL, amount INTEGER NOT NULL, destination TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS payouts_by_node ON payouts (node_key, created_at);
";

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers never wait for the writer; NORMAL is durable across process crashes in WAL mode.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on tokio's blocking pool. Write transactions begin IMMEDIATE:
    /// the ledger writes to the same file, and a deferred transaction that read before the ledger
    /// committed could not upgrade to a write (SQLite answers BUSY at once, without waiting).
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
                f(&mut guard)
            })
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
        })
    }
}

pub(crate) fn parse<T: std::str::FromStr>(table: &'static str, s: &str) -> Result<T, StoreError>
where
    T::Err: fmt::Display,
{
    s.parse().map_err(|e: T::Err| StoreError::Corrupt {
        table,
        detail: format!("{s:?}: {e}"),
    })
}

pub(crate) fn hash32(table: &'static str, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("hash of {} bytes", bytes.len()),
    })
}

pub(crate) fn to_u64(table: &'static str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("negative count {n}"),
    })
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn price_from_json(model: String, terms: &str, at: &str) -> Result<ModelPrice, StoreError> {
    Ok(ModelPrice {
        model,
        price: serde_json::from_str(terms).map_err(|e| StoreError::Corrupt {
            table: "prices",
            detail: e.to_string(),
        })?,
        updated_at: parse("prices", at)?,
    })
}

pub(crate) fn price_json(price: &ModelPrice) -> String {
    // PriceTerms holds only amounts (strings): serialising it cannot fail.
    serde_json::to_string(&price.price).unwrap_or_default()
}

const LOG_COLUMNS: &str = "l.idx, l.id, l.contract, l.node_key, j.json, l.leaf_hash, l.accepted_at, \
    l.hold, l.cost, l.captured, l.filed_at";
const LOG_FROM: &str = "paperwork_log l JOIN paperwork_json j ON j.idx = l.idx";
/// The columns of `LOG_COLUMNS` without the document (`json` comes back empty).
const LOG_STATE_COLUMNS: &str = "l.idx, l.id, l.contract, l.node_key, '' AS json, l.leaf_hash, \
    l.accepted_at, l.hold, l.cost, l.captured, l.filed_at";

/// A `paperwork_log` row in `LOG_COLUMNS` order, as both stores read it.
pub(crate) struct LogRow {
    pub idx: i64,
    pub id: String,
    pub contract: String,
    pub node_key: String,
    pub json: String,
    pub leaf: Vec<u8>,
    pub accepted_at: String,
    pub hold: Option<String>,
    pub cost: i64,
    pub captured: bool,
    pub filed_at: Option<String>,
}

fn log_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogRow> {
    Ok(LogRow {
        idx: r.get(0)?,
        id: r.get(1)?,
        contract: r.get(2)?,
        node_key: r.get(3)?,
        json: r.get(4)?,
        leaf: r.get(5)?,
        accepted_at: r.get(6)?,
        hold: r.get(7)?,
        cost: r.get(8)?,
        captured: r.get::<_, i64>(9)? != 0,
        filed_at: r.get(10)?,
    })
}

pub(crate) fn logged(row: LogRow) -> Result<LoggedPaperwork, StoreError> {
    let LogRow {
        idx,
        id,
        contract,
        node_key,
        json,
        leaf,
        accepted_at: at,
        hold,
        cost,
        captured,
        filed_at: filed,
    } = row;
    const T: &str = "paperwork_log";
    Ok(LoggedPaperwork {
        index: to_u64(T, idx)?,
        record: PaperworkRecord {
            id: parse(T, &id)?,
            contract,
            node_key: parse(T, &node_key)?,
            json,
            leaf_hash: hash32(T, &leaf)?,
            accepted_at: parse(T, &at)?,
            hold,
            cost: Amount::from_micros(cost),
        },
        captured,
        filed_at: filed.map(|f| parse(T, &f)).transpose()?,
    })
}

type PayoutRow = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<String>,
    String,
    String,
);

pub(crate) fn payout_from(
    (id, node, amount, destination, state, attempts, last_error, created, updated): PayoutRow,
) -> Result<PayoutRecord, StoreError> {
    const T: &str = "payouts";
    Ok(PayoutRecord {
        id,
        node_key: parse(T, &node)?,
        amount: Amount::from_micros(amount),
        destination,
        state: PayoutState::parse(&state).ok_or_else(|| StoreError::Corrupt {
            table: T,
            detail: format!("state {state:?}"),
        })?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error,
        created_at: parse(T, &created)?,
        updated_at: parse(T, &updated)?,
    })
}

const PAYOUT_COLUMNS: &str =
    "id, node_key, amount, destination, state, attempts, last_error, created_at, updated_at";

fn payout_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PayoutRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn payouts_where(conn: &Connection, filter: &str, arg: &str) -> Result<Vec<PayoutRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE {filter} ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([arg], payout_row)?;
    rows.map(|r| payout_from(r?)).collect()
}

impl Store for SqliteStore {
    fn create_stack(&self, stack: StackRecord) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO stacks (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![stack.id.to_string(), stack.name, stack.created_at.to_string()],
            )?;
            Ok(())
        })
    }

    fn stacks(&self) -> StoreFuture<'_, Vec<StackRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT id, name, created_at FROM stacks ORDER BY created_at, id")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?))
            })?;
            rows.map(|row| {
                let (id, name, at) = row?;
                Ok(StackRecord {
                    id: parse("stacks", &id)?,
                    name,
                    created_at: parse("stacks", &at)?,
                })
            })
            .collect()
        })
    }

    fn create_api_key(&self, key: ApiKeyRecord) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO api_keys (hash, prefix, stack, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    key.hash.as_slice(),
                    key.prefix,
                    key.stack.to_string(),
                    key.created_at.to_string()
                ],
            )?;
            Ok(())
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT hash, prefix, stack, created_at FROM api_keys")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            rows.map(|row| {
                let (hash, prefix, stack, at) = row?;
                Ok(ApiKeyRecord {
                    hash: hash32("api_keys", &hash)?,
                    prefix,
                    stack: parse("api_keys", &stack)?,
                    created_at: parse("api_keys", &at)?,
                })
            })
            .collect()
        })
    }

    fn set_price(&self, price: ModelPrice) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO prices (model, terms, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (model) DO UPDATE SET terms = excluded.terms, updated_at = excluded.updated_at",
                params![price.model, price_json(&price), price.updated_at.to_string()],
            )?;
            Ok(())
        })
    }

    fn prices(&self) -> StoreFuture<'_, Vec<ModelPrice>> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT model, terms, updated_at FROM prices ORDER BY model")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            rows.map(|row| {
                let (model, terms, at) = row?;
                price_from_json(model, &terms, &at)
            })
            .collect()
        })
    }

    fn append_paperwork(&self, batch: Vec<PaperworkRecord>) -> StoreFuture<'_, Vec<u64>> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut indexes = Vec::with_capacity(batch.len());
            {
                let mut next: i64 =
                    tx.query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM paperwork_log", [], |r| {
                        r.get(0)
                    })?;
                let mut existing = tx.prepare_cached("SELECT idx FROM paperwork_log WHERE id = ?1")?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO paperwork_log
                     (idx, id, contract, node_key, leaf_hash, accepted_at, hold, cost)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                let mut insert_json =
                    tx.prepare_cached("INSERT INTO paperwork_json (idx, json) VALUES (?1, ?2)")?;
                for p in &batch {
                    let id = p.id.to_string();
                    let found: Option<i64> = existing.query_row([&id], |r| r.get(0)).optional()?;
                    let idx = match found {
                        Some(idx) => idx,
                        None => {
                            insert.execute(params![
                                next,
                                id,
                                p.contract,
                                p.node_key.to_string(),
                                p.leaf_hash.as_slice(),
                                p.accepted_at.to_string(),
                                p.hold,
                                p.cost.micros()
                            ])?;
                            insert_json.execute(params![next, p.json])?;
                            next += 1;
                            next - 1
                        }
                    };
                    indexes.push(to_u64("paperwork_log", idx)?);
                }
            }
            tx.commit()?;
            Ok(indexes)
        })
    }

    fn paperwork(&self, id: PaperworkId) -> StoreFuture<'_, Option<LoggedPaperwork>> {
        self.with(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {LOG_COLUMNS} FROM {LOG_FROM} WHERE l.id = ?1"),
                    [id.to_string()],
                    log_row,
                )
                .optional()?;
            row.map(logged).transpose()
        })
    }

    fn leaf_hashes(&self, from: u64) -> StoreFuture<'_, Vec<[u8; 32]>> {
        self.with(move |conn| {
            let mut stmt =
                conn.prepare("SELECT leaf_hash FROM paperwork_log WHERE idx >= ?1 ORDER BY idx")?;
            let rows = stmt.query_map([to_i64(from)], |r| r.get::<_, Vec<u8>>(0))?;
            rows.map(|r| hash32("paperwork_log", &r?)).collect()
        })
    }

    fn uncaptured(&self) -> StoreFuture<'_, Vec<LoggedPaperwork>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {LOG_COLUMNS} FROM {LOG_FROM} WHERE l.captured = 0 ORDER BY l.idx"
            ))?;
            let rows = stmt.query_map([], log_row)?;
            rows.map(|r| logged(r?)).collect()
        })
    }

    fn mark_captured(&self, captured: Vec<(PaperworkId, Amount)>) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE paperwork_log SET captured = 1, cost = ?2 WHERE id = ?1")?;
                for (id, cost) in &captured {
                    stmt.execute(params![id.to_string(), cost.micros()])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn paperwork_many(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<LoggedPaperwork>>> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {LOG_STATE_COLUMNS} FROM paperwork_log l WHERE l.id = ?1"
            ))?;
            ids.iter()
                .map(|id| {
                    stmt.query_row([id.to_string()], log_row)
                        .optional()?
                        .map(logged)
                        .transpose()
                })
                .collect()
        })
    }

    fn begin_settlement(
        &self,
        settlement: String,
        ids: Vec<PaperworkId>,
        at: Timestamp,
    ) -> StoreFuture<'_, Vec<PaperworkId>> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut claimed = Vec::with_capacity(ids.len());
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE paperwork_log SET filed_at = ?2, settlement = ?3 WHERE id = ?1 AND filed_at IS NULL",
                )?;
                for id in ids {
                    if stmt.execute(params![id.to_string(), at.to_string(), settlement])? == 1 {
                        claimed.push(id);
                    }
                }
            }
            if !claimed.is_empty() {
                tx.execute(
                    "INSERT INTO settlements (id, created_at, done) VALUES (?1, ?2, 0)",
                    params![settlement, at.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    fn finish_settlement(&self, settlement: String) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute("UPDATE settlements SET done = 1 WHERE id = ?1", [settlement])?;
            Ok(())
        })
    }

    fn open_settlements(&self) -> StoreFuture<'_, Vec<(String, Vec<LoggedPaperwork>)>> {
        self.with(|conn| {
            let open: Vec<String> = {
                let mut stmt =
                    conn.prepare("SELECT id FROM settlements WHERE done = 0 ORDER BY created_at, id")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut stmt = conn.prepare(&format!(
                "SELECT {LOG_COLUMNS} FROM {LOG_FROM} WHERE l.settlement = ?1 ORDER BY l.idx"
            ))?;
            open.into_iter()
                .map(|id| {
                    let rows = stmt.query_map([&id], log_row)?;
                    let logged = rows.map(|r| logged(r?)).collect::<Result<Vec<_>, StoreError>>()?;
                    Ok((id, logged))
                })
                .collect()
        })
    }

    fn claim_event(&self, kind: &'static str, id: String, at: Timestamp) -> StoreFuture<'_, bool> {
        self.with(move |conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO events (kind, id, seen_at) VALUES (?1, ?2, ?3)",
                params![kind, id, at.to_string()],
            )?;
            Ok(n == 1)
        })
    }

    fn create_payout(&self, p: PayoutRecord) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO payouts ({PAYOUT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    p.id,
                    p.node_key.to_string(),
                    p.amount.micros(),
                    p.destination,
                    p.state.as_str(),
                    p.attempts,
                    p.last_error,
                    p.created_at.to_string(),
                    p.updated_at.to_string()
                ],
            )?;
            Ok(())
        })
    }

    fn update_payout(
        &self,
        id: String,
        from: &'static [PayoutState],
        state: PayoutState,
        attempts: u32,
        last_error: Option<String>,
        at: Timestamp,
    ) -> StoreFuture<'_, bool> {
        // The state test and the write are one statement, as on PostgreSQL. The states come from
        // the enum's own names, so they are inlined safely.
        let allowed: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "UPDATE payouts SET state = ?2, attempts = ?3, last_error = ?4, updated_at = ?5
             WHERE id = ?1 AND state IN ({})",
            allowed.join(", ")
        );
        self.with(move |conn| {
            let changed = conn.execute(
                &sql,
                params![id, state.as_str(), attempts, last_error, at.to_string()],
            )?;
            Ok(changed == 1)
        })
    }

    fn payout(&self, id: String) -> StoreFuture<'_, Option<PayoutRecord>> {
        self.with(move |conn| Ok(payouts_where(conn, "id = ?1", &id)?.pop()))
    }

    fn payouts_in(&self, state: PayoutState) -> StoreFuture<'_, Vec<PayoutRecord>> {
        self.with(move |conn| payouts_where(conn, "state = ?1", state.as_str()))
    }

    fn payouts_of(&self, node: NodeKeyId) -> StoreFuture<'_, Vec<PayoutRecord>> {
        self.with(move |conn| payouts_where(conn, "node_key = ?1", &node.to_string()))
    }
}
