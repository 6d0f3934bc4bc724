//! The hub's store on PostgreSQL, for several hub replicas sharing one database.
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
//!
//! The pool, the schema-name check, the migration lock and the retry loop are the ledger's
//! ([`stacknet_ledger::pg`]): the hub and the ledger may share a schema and take the same locks.
//! The paperwork log and filing are in `log`.

mod docs;
mod files;
mod log;
mod reputation;
mod usage;
mod validate;

use std::fmt;
use std::sync::Arc;

use stacknet_ledger::pg::{self, Pool};
use stacknet_protocol::{Amount, NodeKeyId, Timestamp};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, Row};

use crate::store::codec::unbonding_from;
use crate::store::codec::{hash32, parse, payout_from, price_from_json, price_json};
use crate::store::records::{
    ApiKeyRecord, Changes, ModelPrice, PayoutRecord, PayoutState, StackRecord, UnbondingRecord,
};
use crate::store::traits::{PayoutStore, RegistryStore, StakeStore, Store, StoreError, StoreFuture};

/// Most connections one store holds open at once.
pub const POOL_SIZE: usize = 8;

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
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS revoked_at TEXT;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE prices ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0;
-- A key's role; keys made before roles existed could do everything, so they are owners.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS role TEXT NOT NULL DEFAULT 'owner';
ALTER TABLE events ADD COLUMN IF NOT EXISTS expires_at TEXT COLLATE "C";
CREATE INDEX IF NOT EXISTS events_expiring ON events (kind, expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS api_keys_by_version ON api_keys (version);
CREATE INDEX IF NOT EXISTS prices_by_version ON prices (version);
CREATE TABLE IF NOT EXISTS unbondings (
    id TEXT COLLATE "C" PRIMARY KEY, node_key TEXT NOT NULL, amount BIGINT NOT NULL, created_at TEXT NOT NULL,
    withdrawable_at TEXT COLLATE "C" NOT NULL, withdrawn_at TEXT);
CREATE INDEX IF NOT EXISTS unbondings_open ON unbondings (node_key, withdrawable_at) WHERE withdrawn_at IS NULL;
CREATE TABLE IF NOT EXISTS unbonding_slashes (
    id TEXT COLLATE "C" PRIMARY KEY, node_key TEXT NOT NULL, amount BIGINT NOT NULL, at BIGINT NOT NULL);
"#;

fn key_of(row: &Row) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        hash: hash32("api_keys", row.try_get(0)?)?,
        prefix: row.try_get(1)?,
        stack: parse("api_keys", row.try_get(2)?)?,
        created_at: parse("api_keys", row.try_get(3)?)?,
        revoked_at: row
            .try_get::<_, Option<&str>>(4)?
            .map(|at| parse("api_keys", at))
            .transpose()?,
        role: parse("api_keys", row.try_get(5)?)?,
    })
}

/// The highest version among `rows` (read from column `at`), or `since` if none is higher.
fn version_of(rows: &[Row], at: usize, since: u64) -> Result<u64, StoreError> {
    let mut version = since;
    for row in rows {
        version = version.max(u64::try_from(row.try_get::<_, i64>(at)?).unwrap_or(0));
    }
    Ok(version)
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
        if !pg::is_valid_schema_name(schema) {
            let shown: String = schema.chars().take(64).collect();
            return Err(StoreError::BadSchemaName(shown));
        }
        let config: Config = url.parse()?;
        let pool = Pool::new(config, schema, POOL_SIZE);
        pool.migrate(SCHEMA).await?;
        pool.migrate(validate::SCHEMA).await?;
        pool.migrate(reputation::SCHEMA).await?;
        pool.migrate(usage::SCHEMA).await?;
        pool.migrate(docs::SCHEMA).await?;
        pool.migrate(files::SCHEMA).await?;
        Ok(Arc::new(Self {
            pool,
            schema: schema.to_owned(),
            append_lock: log::lock_key(schema),
        }))
    }

    async fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let mut lease = self.pool.get().await?;
        let statement = lease.prepare(sql).await?;
        Ok(lease.conn().client.query(&statement, params).await?)
    }

    /// One write statement (its own transaction), run again if it lost a deadlock.
    async fn execute(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        pg::retry(is_conflict, move || async move {
            let mut lease = self.pool.get().await?;
            let statement = lease.prepare(sql).await?;
            Ok(lease.conn().client.execute(&statement, params).await?)
        })
        .await
    }

    async fn payouts(&self, sql: &'static str, arg: &str) -> Result<Vec<PayoutRecord>, StoreError> {
        self.query(sql, &[&arg]).await?.iter().map(payout_of).collect()
    }
}

/// PostgreSQL aborted the statement or transaction to break a deadlock: run it again.
fn is_conflict(error: &StoreError) -> bool {
    matches!(error, StoreError::Pg(e) if pg::is_conflict(e))
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

impl RegistryStore for PgStore {
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
            let sql = "INSERT INTO api_keys (hash, prefix, stack, created_at, revoked_at, role, version)
                 VALUES ($1, $2, $3, $4, $5, $6, (SELECT COALESCE(MAX(version), 0) + 1 FROM api_keys))";
            let (hash, stack, at) = (
                key.hash.as_slice(),
                key.stack.to_string(),
                key.created_at.to_string(),
            );
            let revoked = key.revoked_at.map(|at| at.to_string());
            self.execute(
                sql,
                &[&hash, &key.prefix, &stack, &at, &revoked, &key.role.as_str()],
            )
            .await?;
            Ok(())
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT hash, prefix, stack, created_at, revoked_at, role FROM api_keys",
                    &[],
                )
                .await?;
            rows.iter().map(key_of).collect()
        })
    }

    fn revoke_key(&self, prefix: String, at: Timestamp) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let sql = "UPDATE api_keys SET revoked_at = $2,
                     version = (SELECT COALESCE(MAX(version), 0) + 1 FROM api_keys)
                 WHERE prefix = $1 AND revoked_at IS NULL
                 RETURNING hash, prefix, stack, created_at, revoked_at, role";
            let at = at.to_string();
            let rows = self.query(sql, &[&prefix, &at]).await?;
            rows.iter().map(key_of).collect()
        })
    }

    fn api_keys_since(&self, version: u64) -> StoreFuture<'_, Changes<ApiKeyRecord>> {
        Box::pin(async move {
            let sql = "SELECT hash, prefix, stack, created_at, revoked_at, role, version FROM api_keys
                 WHERE version >= $1 ORDER BY version";
            let since = i64::try_from(version).unwrap_or(i64::MAX);
            let rows = self.query(sql, &[&since]).await?;
            Ok(Changes {
                records: rows.iter().map(key_of).collect::<Result<_, _>>()?,
                version: version_of(&rows, 6, version)?,
            })
        })
    }

    fn set_price(&self, price: ModelPrice) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO prices (model, terms, updated_at, version)
                 VALUES ($1, $2, $3, (SELECT COALESCE(MAX(version), 0) + 1 FROM prices))
                 ON CONFLICT (model) DO UPDATE SET terms = excluded.terms, updated_at = excluded.updated_at,
                     version = excluded.version";
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

    fn prices_since(&self, version: u64) -> StoreFuture<'_, Changes<ModelPrice>> {
        Box::pin(async move {
            let sql =
                "SELECT model, terms, updated_at, version FROM prices WHERE version >= $1 ORDER BY version";
            let since = i64::try_from(version).unwrap_or(i64::MAX);
            let rows = self.query(sql, &[&since]).await?;
            Ok(Changes {
                records: rows
                    .iter()
                    .map(|row| price_from_json(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
                    .collect::<Result<_, _>>()?,
                version: version_of(&rows, 3, version)?,
            })
        })
    }
}

impl PayoutStore for PgStore {
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

impl StakeStore for PgStore {
    fn add_unbonding(&self, u: UnbondingRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql =
                "INSERT INTO unbondings (id, node_key, amount, created_at, withdrawable_at, withdrawn_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";
            let params: [&(dyn ToSql + Sync); 6] = [
                &u.id,
                &u.node_key.to_string(),
                &u.amount.micros(),
                &u.created_at.to_string(),
                &u.withdrawable_at.to_string(),
                &u.withdrawn_at.map(|t| t.to_string()),
            ];
            self.execute(sql, &params).await?;
            Ok(())
        })
    }

    fn unbondings_of(&self, node: NodeKeyId) -> StoreFuture<'_, Vec<UnbondingRecord>> {
        Box::pin(async move {
            let sql = "SELECT id, node_key, amount, created_at, withdrawable_at, withdrawn_at FROM unbondings
                 WHERE node_key = $1 AND withdrawn_at IS NULL ORDER BY withdrawable_at, id";
            let rows = self.query(sql, &[&node.to_string()]).await?;
            rows.iter()
                .map(|r| {
                    unbonding_from((
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        r.try_get(5)?,
                    ))
                })
                .collect()
        })
    }

    fn remove_unbonding(&self, id: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "DELETE FROM unbondings WHERE id = $1 AND withdrawn_at IS NULL";
            self.execute(sql, &[&id]).await?;
            Ok(())
        })
    }

    fn mark_withdrawn(&self, ids: Vec<String>, at: Timestamp) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "UPDATE unbondings SET withdrawn_at = $2 WHERE id = ANY($1) AND withdrawn_at IS NULL";
            self.execute(sql, &[&ids, &at.to_string()]).await?;
            Ok(())
        })
    }

    fn slash_unbondings(
        &self,
        id: String,
        node: NodeKeyId,
        amount: Amount,
        at: Timestamp,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            // One statement, so one transaction: the claim of `id` and the cuts commit together.
            // `before` is what the rows ahead of each (latest withdrawable first) hold.
            let sql = "WITH claim AS (
                    INSERT INTO unbonding_slashes (id, node_key, amount, at) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (id) DO NOTHING RETURNING amount),
                open AS (
                    SELECT id, amount, (SUM(amount) OVER (ORDER BY withdrawable_at DESC, id DESC))::BIGINT
                           - amount AS before
                    FROM unbondings WHERE node_key = $2 AND withdrawn_at IS NULL),
                cut AS (
                    SELECT o.id, o.amount, LEAST(o.amount, c.amount - o.before) AS take
                    FROM open o, claim c WHERE o.before < c.amount),
                gone AS (
                    DELETE FROM unbondings u USING cut WHERE u.id = cut.id AND cut.take >= cut.amount
                    RETURNING u.id),
                cutting AS (
                    UPDATE unbondings u SET amount = u.amount - cut.take FROM cut
                    WHERE u.id = cut.id AND cut.take < cut.amount RETURNING u.id)
                SELECT (SELECT COUNT(*) FROM claim), (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM cutting)";
            let params: [&(dyn ToSql + Sync); 4] = [&id, &node.to_string(), &amount.micros(), &at.unix_ms()];
            let rows = self.query(sql, &params).await?;
            let claimed: i64 = match rows.first() {
                Some(row) => row.try_get(0)?,
                None => 0,
            };
            Ok(claimed > 0)
        })
    }
}
