//! What the hub keeps: Stacks, API keys (hashed), accepted paperwork. One `Store` trait, so the
//! PostgreSQL implementation of a later issue drops in; [`SqliteStore`] is the embedded default.
//!
//! Reads that gate requests (API keys) are served from memory (see `auth`); the store is read at
//! start and written through. Paperwork is appended off the request path by [`PaperworkWriter`],
//! which groups appends into one transaction per batch.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use stacknet_protocol::{PaperworkId, StackId, Timestamp};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("the store's connection lock was poisoned by a panic")]
    Poisoned,
}

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

/// An accepted paperwork: its id, its contract, the node, and the signed JSON as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperworkRecord {
    pub id: PaperworkId,
    pub contract: String,
    pub node_key: String,
    pub json: String,
    pub accepted_at: Timestamp,
}

pub trait Store: Send + Sync + 'static {
    fn create_stack(&self, stack: &StackRecord) -> Result<(), StoreError>;
    fn stacks(&self) -> Result<Vec<StackRecord>, StoreError>;
    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Appends a batch atomically; a paperwork already stored is skipped (idempotent by id).
    fn append_paperwork(&self, batch: &[PaperworkRecord]) -> Result<(), StoreError>;
    /// The signed JSON of a stored paperwork.
    fn paperwork(&self, id: &PaperworkId) -> Result<Option<String>, StoreError>;
    fn paperwork_count(&self) -> Result<u64, StoreError>;
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stacks (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    hash BLOB PRIMARY KEY, prefix TEXT NOT NULL, stack TEXT NOT NULL REFERENCES stacks(id),
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paperwork (
    id TEXT PRIMARY KEY, contract TEXT NOT NULL UNIQUE, node_key TEXT NOT NULL, json TEXT NOT NULL,
    accepted_at TEXT NOT NULL);
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
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

fn parse<T: std::str::FromStr>(table: &'static str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| StoreError::Corrupt {
        table,
        detail: format!("{s:?}: {e}"),
    })
}

impl Store for SqliteStore {
    fn create_stack(&self, stack: &StackRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO stacks (id, name, created_at) VALUES (?1, ?2, ?3)",
            params![stack.id.to_string(), stack.name, stack.created_at.to_string()],
        )?;
        Ok(())
    }

    fn stacks(&self) -> Result<Vec<StackRecord>, StoreError> {
        let conn = self.conn()?;
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
    }

    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO api_keys (hash, prefix, stack, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                key.hash.as_slice(),
                key.prefix,
                key.stack.to_string(),
                key.created_at.to_string()
            ],
        )?;
        Ok(())
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let conn = self.conn()?;
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
            let hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| StoreError::Corrupt {
                table: "api_keys",
                detail: "hash length".to_owned(),
            })?;
            Ok(ApiKeyRecord {
                hash,
                prefix,
                stack: parse("api_keys", &stack)?,
                created_at: parse("api_keys", &at)?,
            })
        })
        .collect()
    }

    fn append_paperwork(&self, batch: &[PaperworkRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO paperwork (id, contract, node_key, json, accepted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for p in batch {
                stmt.execute(params![
                    p.id.to_string(),
                    p.contract,
                    p.node_key,
                    p.json,
                    p.accepted_at.to_string()
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn paperwork(&self, id: &PaperworkId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT json FROM paperwork WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn paperwork_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()?
            .query_row("SELECT COUNT(*) FROM paperwork", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Most paperwork appended in one transaction.
pub const MAX_PAPERWORK_BATCH: usize = 512;
/// Paperwork waiting to be written before senders wait (back-pressure, never unbounded memory).
pub const PAPERWORK_QUEUE_LEN: usize = 8192;

enum WriterCommand {
    Append(PaperworkRecord),
    Flush(oneshot::Sender<()>),
}

/// The actor that appends paperwork in batches on its own thread, off the request path.
#[derive(Clone, Debug)]
pub struct PaperworkWriter {
    tx: mpsc::Sender<WriterCommand>,
}

impl PaperworkWriter {
    /// Starts the writer thread; it ends when every handle is dropped, after writing what it holds.
    pub fn start(store: std::sync::Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel(PAPERWORK_QUEUE_LEN);
        let spawned = std::thread::Builder::new()
            .name("paperwork-writer".to_owned())
            .spawn(move || {
                let mut batch = Vec::with_capacity(MAX_PAPERWORK_BATCH);
                let mut flushes = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    let mut next = Some(first);
                    while let Some(cmd) = next {
                        match cmd {
                            WriterCommand::Append(p) => batch.push(p),
                            WriterCommand::Flush(done) => flushes.push(done),
                        }
                        next = if batch.len() < MAX_PAPERWORK_BATCH {
                            rx.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    if !batch.is_empty() {
                        if let Err(e) = store.append_paperwork(&batch) {
                            // The node keeps its own copy in its wallet and files it later; nothing is lost.
                            tracing::error!(error = %e, count = batch.len(), "could not store paperwork");
                        }
                        batch.clear();
                    }
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the paperwork writer thread");
        }
        Self { tx }
    }

    pub async fn append(&self, record: PaperworkRecord) {
        let _ = self.tx.send(WriterCommand::Append(record)).await;
    }

    /// Waits until everything appended before this call is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(WriterCommand::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}
