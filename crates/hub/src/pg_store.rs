//! The hub's [`Store`] on PostgreSQL, for several hub replicas sharing one database.
//!
//! The tables are those of [`SqliteStore`](crate::store::SqliteStore), in a schema of their own
//! (`schema=NAME` in the URL, see [`crate::store::pg_schema`]): times as the same fixed-width text,
//! amounts as BIGINT micro-credits, hashes as BYTEA. Text that is sorted on is `COLLATE "C"`, so
//! that lists come back in the same (bytewise) order as from SQLite, whatever the database's locale.
//!
//! Concurrency: every call is one statement or one transaction on a pooled connection. Appends to
//! the paperwork log are the one read-then-write: each batch takes a transaction-scoped advisory lock
//! (one per schema) before it reads `MAX(idx)`, so replicas append one batch at a time and the log
//! stays contiguous; COMMIT or ROLLBACK releases it. Elsewhere a statement's own condition does the
//! work, re-checked by PostgreSQL after waiting for a row another transaction was changing:
//! `ON CONFLICT DO NOTHING` for events, `filed_at IS NULL` for claiming paperwork for a settlement
//! (rows locked in log order), `state = ANY(from)` for payout transitions (a compare-and-set). A
//! write that PostgreSQL aborts to break a deadlock runs again.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Timestamp};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use crate::store::{
    hash32, logged, parse, payout_from, price_from_json, price_json, to_i64, to_u64, ApiKeyRecord, LogRow,
    LoggedPaperwork, ModelPrice, PaperworkRecord, PayoutRecord, PayoutState, StackRecord, Store, StoreError,
    StoreFuture,
};

/// Most connections one store holds open at once.
pub const POOL_SIZE: usize = 8;

/// The ledger's migration lock key too: the hub and the ledger may share a schema, and two
/// `CREATE SCHEMA IF NOT EXISTS` of one name at once can fail, so their migrations take turns.
const MIGRATION_LOCK_KEY: i64 = 0x5354_4b4e_4c44_4752; // "STKNLDGR"
/// First half of the two-part advisory lock key that serialises appends; the second is the schema's.
const APPEND_LOCK_CLASS: i32 = 0x534b_4e50; // "SKNP"

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS stacks (
    id TEXT COLLATE "C" PRIMARY KEY, name TEXT NOT NULL, created_at TEXT COLLATE "C" NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    hash BYTEA PRIMARY KEY, prefix TEXT NOT NULL, stack TEXT COLLATE "C" NOT NULL REFERENCES stacks(id),
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prices (
    model TEXT COLLATE "C" PRIMARY KEY, terms TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paperwork_log (
    idx BIGINT PRIMARY KEY, id TEXT NOT NULL UNIQUE, contract TEXT NOT NULL UNIQUE, node_key TEXT NOT NULL,
    json TEXT NOT NULL, leaf_hash BYTEA NOT NULL, accepted_at TEXT NOT NULL, hold TEXT, cost BIGINT NOT NULL,
    captured BOOLEAN NOT NULL DEFAULT FALSE, filed_at TEXT, settlement TEXT);
CREATE INDEX IF NOT EXISTS paperwork_uncaptured ON paperwork_log (idx) WHERE NOT captured;
CREATE INDEX IF NOT EXISTS paperwork_by_settlement ON paperwork_log (settlement) WHERE settlement IS NOT NULL;
CREATE TABLE IF NOT EXISTS settlements (
    id TEXT COLLATE "C" PRIMARY KEY, created_at TEXT COLLATE "C" NOT NULL, done BOOLEAN NOT NULL);
CREATE INDEX IF NOT EXISTS settlements_open ON settlements (created_at, id) WHERE NOT done;
CREATE TABLE IF NOT EXISTS events (kind TEXT NOT NULL, id TEXT NOT NULL, seen_at TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS payouts (
    id TEXT COLLATE "C" PRIMARY KEY, node_key TEXT NOT NULL, amount BIGINT NOT NULL, destination TEXT NOT NULL,
    state TEXT NOT NULL, attempts BIGINT NOT NULL, last_error TEXT, created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS payouts_by_node ON payouts (node_key, created_at);
CREATE INDEX IF NOT EXISTS payouts_by_state ON payouts (state, created_at);
"#;

/// The columns of a whole `paperwork_log` row, in the order [`log_of`] reads them.
macro_rules! log_columns {
    () => {
        "idx, id, contract, node_key, json, leaf_hash, accepted_at, hold, cost, captured, filed_at"
    };
}

/// `SELECT` of whole `payouts` rows (as [`payout_of`] reads them), filtered by `$filter`, oldest first.
macro_rules! select_payouts {
    ($filter:literal) => {
        concat!(
            "SELECT id, node_key, amount, destination, state, attempts, last_error, created_at, updated_at \
             FROM payouts ",
            $filter,
            " ORDER BY created_at, id"
        )
    };
}

const APPEND_LOCK: &str = "SELECT pg_advisory_xact_lock($1, $2)";
const NEXT_INDEX: &str = "SELECT COALESCE(MAX(idx) + 1, 0) FROM paperwork_log";
const LOGGED_INDEXES: &str = "SELECT id, idx FROM paperwork_log WHERE id = ANY($1)";
const INSERT_LOG: &str = "INSERT INTO paperwork_log
    (idx, id, contract, node_key, json, leaf_hash, accepted_at, hold, cost)
    SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BYTEA[],
                         $7::TEXT[], $8::TEXT[], $9::BIGINT[])";
/// Claims the unfiled ones of `$1`. The rows are locked in log order, so that two settlements racing
/// for overlapping paperwork queue instead of deadlocking; the one that waited then re-reads
/// `filed_at`, finds it set and leaves the row to the first.
const CLAIM_FOR_SETTLEMENT: &str = "UPDATE paperwork_log SET filed_at = $2, settlement = $3
    WHERE filed_at IS NULL AND idx IN (
        SELECT idx FROM paperwork_log WHERE id = ANY($1) AND filed_at IS NULL ORDER BY idx FOR UPDATE)
    RETURNING id";
const INSERT_SETTLEMENT: &str = "INSERT INTO settlements (id, created_at, done) VALUES ($1, $2, FALSE)";

/// Times a write is run again after PostgreSQL aborted it to break a deadlock.
const MAX_RETRIES: u32 = 8;

/// The hub's store on PostgreSQL; see the module documentation.
pub struct PgStore {
    pool: Pool,
    schema: String,
    /// Second half of the append lock's key: replicas sharing a schema share it.
    append_lock: i32,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connection config: it may carry a password.
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (no TLS) and creates the hub's tables in `schema` if they are missing.
    pub async fn connect(url: &str, schema: &str) -> Result<Arc<dyn Store>, StoreError> {
        let valid = (1..=63).contains(&schema.len())
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && schema
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if !valid {
            let shown: String = schema.chars().take(64).collect();
            return Err(StoreError::BadSchemaName(shown));
        }
        let config: Config = url.parse()?;
        let pool = Pool::new(config, schema, POOL_SIZE);
        let client = pool.connect().await?;
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});
                 CREATE SCHEMA IF NOT EXISTS \"{schema}\"; {SCHEMA} COMMIT;"
            ))
            .await?;
        pool.put_back(Conn::new(client));
        Ok(Arc::new(Self {
            pool,
            schema: schema.to_owned(),
            append_lock: lock_key(schema),
        }))
    }

    async fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let mut lease = self.pool.get().await?;
        let statement = lease.prepare(sql).await?;
        Ok(lease.conn().client.query(&statement, params).await?)
    }

    /// One write statement (its own transaction), run again if it lost a deadlock.
    async fn execute(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let mut retries = 0;
        loop {
            let mut lease = self.pool.get().await?;
            let statement = lease.prepare(sql).await?;
            match lease.conn().client.execute(&statement, params).await {
                Err(e) if is_retryable(&e) && retries < MAX_RETRIES => retries += 1,
                result => return Ok(result?),
            }
        }
    }

    async fn append(&self, batch: Vec<PaperworkRecord>) -> Result<Vec<u64>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut lease = self.pool.get().await?;
        let result = append_once(&mut lease, self.append_lock, &batch).await;
        lease.end_transaction(result).await
    }

    async fn settle(
        &self,
        settlement: String,
        ids: Vec<PaperworkId>,
        at: Timestamp,
    ) -> Result<Vec<PaperworkId>, StoreError> {
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let at = at.to_string();
        let mut retries = 0;
        let mut claimed = loop {
            let mut lease = self.pool.get().await?;
            let result = settle_once(&mut lease, &settlement, &texts, &at).await;
            match lease.end_transaction(result).await {
                Err(StoreError::Pg(e)) if is_retryable(&e) && retries < MAX_RETRIES => retries += 1,
                result => break result?,
            }
        };
        // In the order given, each id once (as claiming them one by one would).
        Ok(ids
            .into_iter()
            .zip(texts)
            .filter_map(|(id, text)| claimed.remove(&text).then_some(id))
            .collect())
    }

    async fn payouts(&self, sql: &'static str, arg: &str) -> Result<Vec<PayoutRecord>, StoreError> {
        self.query(sql, &[&arg]).await?.iter().map(payout_of).collect()
    }
}

fn is_retryable(error: &tokio_postgres::Error) -> bool {
    let retryable = [
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::T_R_SERIALIZATION_FAILURE,
    ];
    error.code().is_some_and(|code| retryable.contains(code))
}

/// One append in one transaction, left open on error for [`Lease::end_transaction`] to roll back.
async fn append_once(
    lease: &mut Lease<'_>,
    lock: i32,
    batch: &[PaperworkRecord],
) -> Result<Vec<u64>, StoreError> {
    const T: &str = "paperwork_log";
    let ids: Vec<String> = batch.iter().map(|p| p.id.to_string()).collect();
    let lock_statement = lease.prepare(APPEND_LOCK).await?;
    let next_statement = lease.prepare(NEXT_INDEX).await?;
    let logged_statement = lease.prepare(LOGGED_INDEXES).await?;
    let insert = lease.prepare(INSERT_LOG).await?;
    let conn = lease.conn();
    conn.in_transaction = true;
    let client = &conn.client;
    // One round trip: the server runs these in order, so MAX(idx) is read after the lock is granted,
    // when every append that held it before has committed.
    let (_, _, next, found) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        async {
            client
                .execute(&lock_statement, &[&APPEND_LOCK_CLASS, &lock])
                .await
        },
        async { client.query_one(&next_statement, &[]).await },
        async { client.query(&logged_statement, &[&ids]).await },
    )?;
    let mut next: i64 = next.try_get(0)?;
    let mut known = found
        .iter()
        .map(|row| Ok((row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)?)))
        .collect::<Result<HashMap<_, _>, StoreError>>()?;
    let mut new = LogColumns::default();
    let mut indexes = Vec::with_capacity(batch.len());
    for (record, id) in batch.iter().zip(&ids) {
        // A repeat within the batch finds the index its first copy was given here.
        let idx = *known.entry(id.clone()).or_insert_with(|| {
            new.push(next, record, id);
            next += 1;
            next - 1
        });
        indexes.push(to_u64(T, idx)?);
    }
    if !new.idx.is_empty() {
        client.execute(&insert, &new.params()).await?;
    }
    client.batch_execute("COMMIT").await?;
    conn.in_transaction = false;
    Ok(indexes)
}

/// One `begin_settlement` in one transaction: the ids it claimed.
async fn settle_once(
    lease: &mut Lease<'_>,
    settlement: &str,
    ids: &[String],
    at: &str,
) -> Result<HashSet<String>, StoreError> {
    let claim = lease.prepare(CLAIM_FOR_SETTLEMENT).await?;
    let insert = lease.prepare(INSERT_SETTLEMENT).await?;
    let conn = lease.conn();
    conn.in_transaction = true;
    let client = &conn.client;
    let (_, rows) = tokio::try_join!(client.batch_execute("BEGIN"), async {
        client.query(&claim, &[&ids, &at, &settlement]).await
    })?;
    let claimed = rows
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<HashSet<String>, _>>()?;
    if !claimed.is_empty() {
        client.execute(&insert, &[&settlement, &at]).await?;
    }
    client.batch_execute("COMMIT").await?;
    conn.in_transaction = false;
    Ok(claimed)
}

/// New log rows as one array per column, for one `INSERT ... SELECT * FROM UNNEST(...)`.
#[derive(Default)]
struct LogColumns<'a> {
    idx: Vec<i64>,
    id: Vec<&'a str>,
    contract: Vec<&'a str>,
    node_key: Vec<String>,
    json: Vec<&'a str>,
    leaf_hash: Vec<&'a [u8]>,
    accepted_at: Vec<String>,
    hold: Vec<Option<&'a str>>,
    cost: Vec<i64>,
}

impl<'a> LogColumns<'a> {
    fn push(&mut self, idx: i64, p: &'a PaperworkRecord, id: &'a str) {
        self.idx.push(idx);
        self.id.push(id);
        self.contract.push(&p.contract);
        self.node_key.push(p.node_key.to_string());
        self.json.push(&p.json);
        self.leaf_hash.push(&p.leaf_hash);
        self.accepted_at.push(p.accepted_at.to_string());
        self.hold.push(p.hold.as_deref());
        self.cost.push(p.cost.micros());
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.idx,
            &self.id,
            &self.contract,
            &self.node_key,
            &self.json,
            &self.leaf_hash,
            &self.accepted_at,
            &self.hold,
            &self.cost,
        ]
    }
}

/// A row that starts with `log_columns!()`.
fn log_of(row: &Row) -> Result<LoggedPaperwork, StoreError> {
    logged(LogRow {
        idx: row.try_get(0)?,
        id: row.try_get(1)?,
        contract: row.try_get(2)?,
        node_key: row.try_get(3)?,
        json: row.try_get(4)?,
        leaf: row.try_get(5)?,
        accepted_at: row.try_get(6)?,
        hold: row.try_get(7)?,
        cost: row.try_get(8)?,
        captured: row.try_get(9)?,
        filed_at: row.try_get(10)?,
    })
}

fn payout_of(row: &Row) -> Result<PayoutRecord, StoreError> {
    payout_from((
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
        row.try_get(7)?,
        row.try_get(8)?,
    ))
}

/// A stable 32-bit key for `schema` (FNV-1a): the same on every replica, unlike Rust's hashers.
fn lock_key(schema: &str) -> i32 {
    let hash = schema.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::from_be_bytes(hash.to_be_bytes())
}

impl Store for PgStore {
    fn create_stack(&self, stack: StackRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO stacks (id, name, created_at) VALUES ($1, $2, $3)";
            let (id, at) = (stack.id.to_string(), stack.created_at.to_string());
            self.execute(sql, &[&id, &stack.name, &at]).await?;
            Ok(())
        })
    }

    fn stacks(&self) -> StoreFuture<'_, Vec<StackRecord>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT id, name, created_at FROM stacks ORDER BY created_at, id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(StackRecord {
                        id: parse("stacks", row.try_get(0)?)?,
                        name: row.try_get(1)?,
                        created_at: parse("stacks", row.try_get(2)?)?,
                    })
                })
                .collect()
        })
    }

    fn create_api_key(&self, key: ApiKeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO api_keys (hash, prefix, stack, created_at) VALUES ($1, $2, $3, $4)";
            let (hash, stack, at) = (
                key.hash.as_slice(),
                key.stack.to_string(),
                key.created_at.to_string(),
            );
            self.execute(sql, &[&hash, &key.prefix, &stack, &at]).await?;
            Ok(())
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let rows = self
                .query("SELECT hash, prefix, stack, created_at FROM api_keys", &[])
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(ApiKeyRecord {
                        hash: hash32("api_keys", row.try_get(0)?)?,
                        prefix: row.try_get(1)?,
                        stack: parse("api_keys", row.try_get(2)?)?,
                        created_at: parse("api_keys", row.try_get(3)?)?,
                    })
                })
                .collect()
        })
    }

    fn set_price(&self, price: ModelPrice) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO prices (model, terms, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (model) DO UPDATE SET terms = excluded.terms, updated_at = excluded.updated_at";
            let (terms, at) = (price_json(&price), price.updated_at.to_string());
            self.execute(sql, &[&price.model, &terms, &at]).await?;
            Ok(())
        })
    }

    fn prices(&self) -> StoreFuture<'_, Vec<ModelPrice>> {
        Box::pin(async move {
            let rows = self
                .query("SELECT model, terms, updated_at FROM prices ORDER BY model", &[])
                .await?;
            rows.iter()
                .map(|row| price_from_json(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
                .collect()
        })
    }

    fn append_paperwork(&self, batch: Vec<PaperworkRecord>) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(self.append(batch))
    }

    fn paperwork(&self, id: PaperworkId) -> StoreFuture<'_, Option<LoggedPaperwork>> {
        Box::pin(async move {
            let sql = concat!("SELECT ", log_columns!(), " FROM paperwork_log WHERE id = $1");
            let rows = self.query(sql, &[&id.to_string()]).await?;
            rows.first().map(log_of).transpose()
        })
    }

    fn leaf_hashes(&self, from: u64) -> StoreFuture<'_, Vec<[u8; 32]>> {
        Box::pin(async move {
            let sql = "SELECT leaf_hash FROM paperwork_log WHERE idx >= $1 ORDER BY idx";
            let rows = self.query(sql, &[&to_i64(from)]).await?;
            rows.iter()
                .map(|row| hash32("paperwork_log", row.try_get(0)?))
                .collect()
        })
    }

    fn uncaptured(&self) -> StoreFuture<'_, Vec<LoggedPaperwork>> {
        Box::pin(async move {
            let sql = concat!(
                "SELECT ",
                log_columns!(),
                " FROM paperwork_log WHERE NOT captured ORDER BY idx"
            );
            self.query(sql, &[]).await?.iter().map(log_of).collect()
        })
    }

    fn mark_captured(&self, captured: Vec<(PaperworkId, Amount)>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // An id given twice gets its last amount, as when the updates run one by one.
            let last: HashMap<PaperworkId, i64> =
                captured.iter().map(|(id, cost)| (*id, cost.micros())).collect();
            if last.is_empty() {
                return Ok(());
            }
            let (ids, costs): (Vec<String>, Vec<i64>) =
                last.iter().map(|(id, c)| (id.to_string(), *c)).unzip();
            let sql = "UPDATE paperwork_log SET captured = TRUE, cost = c.cost
                 FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS c(id, cost) WHERE paperwork_log.id = c.id";
            self.execute(sql, &[&ids, &costs]).await?;
            Ok(())
        })
    }

    fn paperwork_many(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<LoggedPaperwork>>> {
        Box::pin(async move {
            let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
            // The state only: the documents stay on disk (TOAST), as `Store::paperwork_many` says.
            let sql = "SELECT idx, id, contract, node_key, '' AS json, leaf_hash, accepted_at, hold, cost, \
                       captured, filed_at FROM paperwork_log WHERE id = ANY($1)";
            let found = self
                .query(sql, &[&texts])
                .await?
                .iter()
                .map(|row| log_of(row).map(|p| (p.record.id, p)))
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
        })
    }

    fn begin_settlement(
        &self,
        settlement: String,
        ids: Vec<PaperworkId>,
        at: Timestamp,
    ) -> StoreFuture<'_, Vec<PaperworkId>> {
        Box::pin(self.settle(settlement, ids, at))
    }

    fn finish_settlement(&self, settlement: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.execute("UPDATE settlements SET done = TRUE WHERE id = $1", &[&settlement])
                .await?;
            Ok(())
        })
    }

    fn open_settlements(&self) -> StoreFuture<'_, Vec<(String, Vec<LoggedPaperwork>)>> {
        Box::pin(async move {
            let sql = "SELECT id FROM settlements WHERE NOT done ORDER BY created_at, id";
            let open = self
                .query(sql, &[])
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<String>, _>>()?;
            if open.is_empty() {
                return Ok(Vec::new());
            }
            let sql = concat!(
                "SELECT ",
                log_columns!(),
                ", settlement FROM paperwork_log WHERE settlement = ANY($1) ORDER BY idx"
            );
            let mut filed: HashMap<String, Vec<LoggedPaperwork>> = HashMap::new();
            for row in self.query(sql, &[&open]).await? {
                let settlement: String = row.try_get(11)?;
                filed.entry(settlement).or_default().push(log_of(&row)?);
            }
            Ok(open
                .into_iter()
                .map(|id| {
                    let paperwork = filed.remove(&id).unwrap_or_default();
                    (id, paperwork)
                })
                .collect())
        })
    }

    fn claim_event(&self, kind: &'static str, id: String, at: Timestamp) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let sql = "INSERT INTO events (kind, id, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
            Ok(self.execute(sql, &[&kind, &id, &at.to_string()]).await? == 1)
        })
    }

    fn create_payout(&self, p: PayoutRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO payouts (id, node_key, amount, destination, state, attempts, last_error,
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
            let params: [&(dyn ToSql + Sync); 9] = [
                &p.id,
                &p.node_key.to_string(),
                &p.amount.micros(),
                &p.destination,
                &p.state.as_str(),
                &i64::from(p.attempts),
                &p.last_error,
                &p.created_at.to_string(),
                &p.updated_at.to_string(),
            ];
            self.execute(sql, &params).await?;
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
        Box::pin(async move {
            // The state test and the write are one statement: a concurrent update waits for the row
            // lock, then tests the state the other one committed.
            let sql = "UPDATE payouts SET state = $2, attempts = $3, last_error = $4, updated_at = $5
                 WHERE id = $1 AND state = ANY($6)";
            let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
            let params: [&(dyn ToSql + Sync); 6] = [
                &id,
                &state.as_str(),
                &i64::from(attempts),
                &last_error,
                &at.to_string(),
                &from,
            ];
            Ok(self.execute(sql, &params).await? == 1)
        })
    }

    fn payout(&self, id: String) -> StoreFuture<'_, Option<PayoutRecord>> {
        Box::pin(async move { Ok(self.payouts(select_payouts!("WHERE id = $1"), &id).await?.pop()) })
    }

    fn payouts_in(&self, state: PayoutState) -> StoreFuture<'_, Vec<PayoutRecord>> {
        Box::pin(self.payouts(select_payouts!("WHERE state = $1"), state.as_str()))
    }

    fn payouts_of(&self, node: NodeKeyId) -> StoreFuture<'_, Vec<PayoutRecord>> {
        Box::pin(async move {
            self.payouts(select_payouts!("WHERE node_key = $1"), &node.to_string())
                .await
        })
    }
}

/// At most `size` connections, opened on demand with the store's `search_path`, each preparing its
/// statements on first use. A connection goes back to the pool when its lease ends, unless it broke
/// or was left inside a transaction (its caller's future was dropped mid-way): that one is closed,
/// which makes the server roll back, and the next lease opens a fresh one.
struct Pool {
    config: Config,
    search_path: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// Set from BEGIN until COMMIT or ROLLBACK went through.
    in_transaction: bool,
}

impl Conn {
    fn new(client: Client) -> Self {
        Self {
            client,
            statements: HashMap::new(),
            in_transaction: false,
        }
    }
}

struct Lease<'a> {
    pool: &'a Pool,
    /// Always `Some` until `drop` takes it.
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    fn new(config: Config, schema: &str, size: usize) -> Self {
        Self {
            config,
            search_path: format!("SET search_path TO \"{schema}\""),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    async fn get(&self) -> Result<Lease<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Worker("the connection pool was closed".into()))?;
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match reused {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => Conn::new(self.connect().await?),
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        // The task ends when the client is dropped or the server goes away; a broken connection
        // shows up as errors on the client (and `is_closed`), which is where the pool looks.
        tokio::spawn(async move {
            let _closed = connection.await;
        });
        client.batch_execute(&self.search_path).await?;
        Ok(client)
    }

    fn put_back(&self, conn: Conn) {
        if !conn.client.is_closed() && !conn.in_transaction {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("only drop takes the connection")
    }

    /// `sql` prepared on this connection (once per connection).
    async fn prepare(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        let conn = self.conn();
        if let Some(statement) = conn.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = conn.client.prepare(sql).await?;
        conn.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// After a transaction: on failure roll back, so that the connection can be reused; if even the
    /// ROLLBACK fails the connection stays marked and is closed on drop.
    async fn end_transaction<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.conn();
        if conn.in_transaction && conn.client.batch_execute("ROLLBACK").await.is_ok() {
            conn.in_transaction = false;
        }
        result
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}
