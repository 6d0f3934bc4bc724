//! The hub's store on SQLite: one file beside the ledger's tables, the embedded default for a hub
//! that runs as one process. Calls run on tokio's blocking pool over one connection; the paperwork
//! log and filing are in `log`.

mod docs;
pub(crate) mod files;
mod log;
mod reputation;
mod usage;
mod validate;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};
use stacknet_protocol::{Amount, NodeKeyId, Timestamp};

use crate::store::codec::unbonding_from;
use crate::store::codec::{hash32, parse, payout_from, price_from_json, price_json, PayoutRow};
use crate::store::records::{
    ApiKeyRecord, Changes, ModelPrice, PayoutRecord, PayoutState, StackRecord, UnbondingRecord,
};
use crate::store::traits::{PayoutStore, RegistryStore, StakeStore, StoreError, StoreFuture};

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
CREATE TABLE IF NOT EXISTS unbondings (
    id TEXT PRIMARY KEY, node_key TEXT NOT NULL, amount INTEGER NOT NULL, created_at TEXT NOT NULL,
    withdrawable_at TEXT NOT NULL, withdrawn_at TEXT);
CREATE INDEX IF NOT EXISTS unbondings_open ON unbondings (node_key, withdrawable_at) WHERE withdrawn_at IS NULL;
-- Slashes that took from unbonding stake: each reduces the key's unbonding rows once.
CREATE TABLE IF NOT EXISTS unbonding_slashes (
    id TEXT PRIMARY KEY, node_key TEXT NOT NULL, amount INTEGER NOT NULL, at INTEGER NOT NULL);
";

/// Columns added after the first release: `(table, column, definition)`, added where missing.
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("api_keys", "revoked_at", "TEXT"),
    ("api_keys", "version", "INTEGER NOT NULL DEFAULT 0"),
    ("prices", "version", "INTEGER NOT NULL DEFAULT 0"),
    // When a signed request's nonce may be forgotten (NULL: an event kept for good).
    ("events", "expires_at", "TEXT"),
    // A key's role; keys made before roles existed could do everything, so they are owners.
    ("api_keys", "role", "TEXT NOT NULL DEFAULT 'owner'"),
];

/// Indexes on the added columns (created after them).
const ADDED_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS api_keys_by_version ON api_keys (version);
CREATE INDEX IF NOT EXISTS prices_by_version ON prices (version);
CREATE INDEX IF NOT EXISTS events_expiring ON events (kind, expires_at) WHERE expires_at IS NOT NULL;
";

/// Adds the columns of [`ADDED_COLUMNS`] a database made by an older hub lacks.
fn add_missing_columns(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, definition) in ADDED_COLUMNS {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut present = false;
        for name in names {
            present |= name? == column;
        }
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
        }
    }
    conn.execute_batch(ADDED_INDEXES)?;
    Ok(())
}

const KEY_COLUMNS: &str = "hash, prefix, stack, created_at, revoked_at, role";

/// An `api_keys` row as SQLite gives it: hash, prefix, stack, created_at, revoked_at, role.
type KeyRow = (Vec<u8>, String, String, String, Option<String>, String);

fn key_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn key_from((hash, prefix, stack, at, revoked, role): KeyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        hash: hash32("api_keys", &hash)?,
        prefix,
        stack: parse("api_keys", &stack)?,
        created_at: parse("api_keys", &at)?,
        revoked_at: revoked.map(|at| parse("api_keys", &at)).transpose()?,
        role: parse("api_keys", &role)?,
    })
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers never wait for the writer; NORMAL is durable across process crashes in WAL mode.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(validate::SCHEMA)?;
        conn.execute_batch(reputation::SCHEMA)?;
        conn.execute_batch(usage::SCHEMA)?;
        conn.execute_batch(docs::SCHEMA)?;
        conn.execute_batch(files::SCHEMA)?;
        add_missing_columns(&conn)?;
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

impl RegistryStore for SqliteStore {
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
                "INSERT INTO api_keys (hash, prefix, stack, created_at, revoked_at, role, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT COALESCE(MAX(version), 0) + 1 FROM api_keys))",
                params![
                    key.hash.as_slice(),
                    key.prefix,
                    key.stack.to_string(),
                    key.created_at.to_string(),
                    key.revoked_at.map(|at| at.to_string()),
                    key.role.as_str(),
                ],
            )?;
            Ok(())
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys"))?;
            let rows = stmt.query_map([], key_of)?;
            rows.map(|row| key_from(row?)).collect()
        })
    }

    fn revoke_key(&self, prefix: String, at: Timestamp) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        self.with(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "UPDATE api_keys SET revoked_at = ?2,
                     version = (SELECT COALESCE(MAX(version), 0) + 1 FROM api_keys)
                 WHERE prefix = ?1 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
            ))?;
            let rows = stmt.query_map(params![prefix, at.to_string()], key_of)?;
            rows.map(|row| key_from(row?)).collect()
        })
    }

    fn api_keys_since(&self, version: u64) -> StoreFuture<'_, Changes<ApiKeyRecord>> {
        self.with(move |conn| {
            let since = i64::try_from(version).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare(&format!(
                "SELECT {KEY_COLUMNS}, version FROM api_keys WHERE version >= ?1 ORDER BY version"
            ))?;
            let rows = stmt.query_map([since], |r| Ok((key_of(r)?, r.get::<_, i64>(6)?)))?;
            let mut changes = Changes {
                records: Vec::new(),
                version,
            };
            for row in rows {
                let (key, v) = row?;
                changes.records.push(key_from(key)?);
                changes.version = changes.version.max(u64::try_from(v).unwrap_or(0));
            }
            Ok(changes)
        })
    }

    fn set_price(&self, price: ModelPrice) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO prices (model, terms, updated_at, version)
                 VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(version), 0) + 1 FROM prices))
                 ON CONFLICT (model) DO UPDATE SET terms = excluded.terms, updated_at = excluded.updated_at,
                     version = excluded.version",
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

    fn prices_since(&self, version: u64) -> StoreFuture<'_, Changes<ModelPrice>> {
        self.with(move |conn| {
            let since = i64::try_from(version).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare(
                "SELECT model, terms, updated_at, version FROM prices WHERE version >= ?1 ORDER BY version",
            )?;
            let rows = stmt.query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut changes = Changes {
                records: Vec::new(),
                version,
            };
            for row in rows {
                let (model, terms, at, v) = row?;
                changes.records.push(price_from_json(model, &terms, &at)?);
                changes.version = changes.version.max(u64::try_from(v).unwrap_or(0));
            }
            Ok(changes)
        })
    }
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

impl PayoutStore for SqliteStore {
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

impl StakeStore for SqliteStore {
    fn add_unbonding(&self, u: UnbondingRecord) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO unbondings (id, node_key, amount, created_at, withdrawable_at, withdrawn_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                params![
                    u.id,
                    u.node_key.to_string(),
                    u.amount.micros(),
                    u.created_at.to_string(),
                    u.withdrawable_at.to_string(),
                    u.withdrawn_at.map(|t| t.to_string()),
                ],
            )?;
            Ok(())
        })
    }

    fn unbondings_of(&self, node: NodeKeyId) -> StoreFuture<'_, Vec<UnbondingRecord>> {
        self.with(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, node_key, amount, created_at, withdrawable_at, withdrawn_at FROM unbondings
                 WHERE node_key = ?1 AND withdrawn_at IS NULL ORDER BY withdrawable_at, id",
            )?;
            let rows = stmt.query_map([node.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            rows.map(|r| unbonding_from(r?)).collect()
        })
    }

    fn remove_unbonding(&self, id: String) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM unbondings WHERE id = ?1 AND withdrawn_at IS NULL",
                params![id],
            )?;
            Ok(())
        })
    }

    fn mark_withdrawn(&self, ids: Vec<String>, at: Timestamp) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for id in &ids {
                tx.execute(
                    "UPDATE unbondings SET withdrawn_at = ?2 WHERE id = ?1 AND withdrawn_at IS NULL",
                    params![id, at.to_string()],
                )?;
            }
            tx.commit()?;
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
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let claimed = tx.execute(
                "INSERT OR IGNORE INTO unbonding_slashes (id, node_key, amount, at) VALUES (?1, ?2, ?3, ?4)",
                params![id, node.to_string(), amount.micros(), at.unix_ms()],
            )?;
            if claimed == 0 {
                return Ok(false);
            }
            let rows: Vec<(String, i64)> = {
                let mut stmt = tx.prepare(
                    "SELECT id, amount FROM unbondings WHERE node_key = ?1 AND withdrawn_at IS NULL
                     ORDER BY withdrawable_at DESC, id DESC",
                )?;
                let rows = stmt.query_map([node.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut left = amount.micros();
            for (row, held) in rows {
                if left <= 0 {
                    break;
                }
                let take = held.min(left);
                if take == held {
                    tx.execute("DELETE FROM unbondings WHERE id = ?1", [&row])?;
                } else {
                    tx.execute(
                        "UPDATE unbondings SET amount = amount - ?2 WHERE id = ?1",
                        params![row, take],
                    )?;
                }
                left -= take;
            }
            tx.commit()?;
            Ok(true)
        })
    }
}
