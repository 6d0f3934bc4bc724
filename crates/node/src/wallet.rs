//! The node's paperwork wallet: every signed paperwork, durable on disk before the hub hears the task
//! is done, so a node never loses proof of work it may be paid for.
//!
//! One SQLite file (WAL, `synchronous=NORMAL`: a committed paperwork survives a crash or kill of the
//! node's process without waiting for the disk; a power cut can lose the last commits, and those are
//! recovered from the hub's paperwork log, the copy made durable on the request path: see
//! [`crate::settlement::recover_wallet`]). A dedicated
//! writer thread owns the connection and serves commands from a bounded channel, so the async runtime
//! never blocks on disk; it commits every store waiting in the queue in one transaction (group
//! commit).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{PaperworkId, PublicKey, Signed, Timestamp};
use tokio::sync::{mpsc, oneshot};

/// The `meta` setting of how far the wallet recovered from the hub's log.
const RECOVERED_TO: &str = "recovered_to";

/// Commands waiting for the writer thread.
pub const WALLET_QUEUE_LEN: usize = 256;
/// The most stores committed in one transaction.
pub const MAX_BATCH: usize = 128;
/// How long SQLite waits for a lock held by another process (e.g. `stacknet paperwork list`).
const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS paperwork (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    filed INTEGER NOT NULL DEFAULT 0,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS paperwork_unfiled ON paperwork (filed, created_at_ms);
-- Settings the wallet keeps: `hub_key`, the hub key pinned at first filing; `recovered_to`, the
-- log index up to which the wallet holds every paperwork of its key the hub logged.
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Columns added after the first release: `(column, definition)` of `paperwork`, added where missing.
/// `refused`: why the pinned hub refused the paperwork for good (it is not filed again).
const ADDED_COLUMNS: [(&str, &str); 1] = [("refused", "TEXT")];

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("cannot open the wallet at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("wallet database error: {0}")]
    Sqlite(String),
    #[error("cannot encode paperwork: {0}")]
    Encode(String),
    #[error("stored paperwork {id} is unreadable: {message}")]
    Corrupt { id: String, message: String },
    #[error("the wallet writer has stopped")]
    Closed,
    #[error("the wallet is pinned to hub key {pinned}, not {offered}")]
    OtherHub { pinned: String, offered: String },
}

impl From<rusqlite::Error> for WalletError {
    fn from(e: rusqlite::Error) -> Self {
        WalletError::Sqlite(e.to_string())
    }
}

struct StoreRow {
    id: String,
    contract: String,
    created_at_ms: i64,
    json: String,
}

enum Command {
    Store(StoreRow, oneshot::Sender<Result<(), WalletError>>),
    Get(String, oneshot::Sender<Result<Option<String>, WalletError>>),
    List(oneshot::Sender<Result<Vec<String>, WalletError>>),
    Entries(oneshot::Sender<Result<Vec<EntryRow>, WalletError>>),
    MarkFiled(Vec<String>, oneshot::Sender<Result<(), WalletError>>),
    MarkRefused(Vec<(String, String)>, oneshot::Sender<Result<(), WalletError>>),
    PinHubKey(String, oneshot::Sender<Result<String, WalletError>>),
    Meta(
        String,
        Option<String>,
        oneshot::Sender<Result<Option<String>, WalletError>>,
    ),
}

/// A stored paperwork's JSON, filed flag and refusal.
type EntryRow = (String, bool, Option<String>);

/// A paperwork in the wallet and what the hub made of it.
#[derive(Clone, Debug)]
pub struct WalletEntry {
    pub paperwork: Signed<Paperwork>,
    /// The hub answered `settled` or `already_filed` for it.
    pub filed: bool,
    /// Why the hub refused it for good (a signed verdict): it is not filed again.
    pub refused: Option<String>,
}

impl WalletEntry {
    /// Still to be filed: neither filed nor refused for good.
    pub fn is_due(&self) -> bool {
        !self.filed && self.refused.is_none()
    }
}

/// A handle to the wallet; clones share the writer thread, which stops when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Wallet {
    commands: mpsc::Sender<Command>,
    path: PathBuf,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Store(..) => "Store",
            Command::Get(..) => "Get",
            Command::List(..) => "List",
            Command::Entries(..) => "Entries",
            Command::MarkFiled(..) => "MarkFiled",
            Command::MarkRefused(..) => "MarkRefused",
            Command::PinHubKey(..) => "PinHubKey",
            Command::Meta(..) => "Meta",
        })
    }
}

impl Wallet {
    /// Opens (creating when needed) the wallet file and starts its writer thread. Blocking: call it at
    /// startup, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Wallet, WalletError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |message: String| WalletError::Open {
            path: path.clone(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        // The node's earnings record: private before SQLite first writes it.
        stacknet_protocol::keystore::restrict_database_to_owner(&path)
            .map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(|e| open_err(e.to_string()))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .and_then(|()| conn.execute_batch(SCHEMA))
            .and_then(|()| add_missing_columns(&conn))
            .map_err(|e| open_err(e.to_string()))?;
        let (commands, rx) = mpsc::channel(WALLET_QUEUE_LEN);
        std::thread::Builder::new()
            .name("stacknet-wallet".to_owned())
            .spawn(move || writer(conn, rx))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok(Wallet { commands, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a paperwork (committed: it survives the process; see the module for a power cut) and
    /// returns its id. Storing the
    /// same paperwork twice is harmless: the id is its content hash.
    pub async fn store(&self, paperwork: &Signed<Paperwork>) -> Result<PaperworkId, WalletError> {
        let id = paperwork.id().map_err(|e| WalletError::Encode(e.to_string()))?;
        let row = StoreRow {
            id: id.to_string(),
            contract: paperwork.body.contract.body.id.to_string(),
            created_at_ms: Timestamp::now().unix_ms(),
            json: serde_json::to_string(paperwork).map_err(|e| WalletError::Encode(e.to_string()))?,
        };
        self.ask(|reply| Command::Store(row, reply)).await?;
        Ok(id)
    }

    pub async fn get(&self, id: &PaperworkId) -> Result<Option<Signed<Paperwork>>, WalletError> {
        let id = id.to_string();
        match self.ask(|reply| Command::Get(id.clone(), reply)).await? {
            Some(json) => decode(&id, &json).map(Some),
            None => Ok(None),
        }
    }

    /// Every stored paperwork, oldest first.
    pub async fn list(&self) -> Result<Vec<Signed<Paperwork>>, WalletError> {
        let rows = self.ask(Command::List).await?;
        rows.iter().map(|json| decode("?", json)).collect()
    }

    /// Every stored paperwork with its filed flag, oldest first.
    pub async fn entries(&self) -> Result<Vec<WalletEntry>, WalletError> {
        let rows = self.ask(Command::Entries).await?;
        rows.into_iter()
            .map(|(json, filed, refused)| {
                Ok(WalletEntry {
                    paperwork: decode("?", &json)?,
                    filed,
                    refused,
                })
            })
            .collect()
    }

    /// Records that the hub refused these paperwork for good, with why: they are not filed again.
    pub async fn mark_refused(&self, refused: &[(PaperworkId, String)]) -> Result<(), WalletError> {
        let rows = refused
            .iter()
            .map(|(id, why)| (id.to_string(), why.clone()))
            .collect();
        self.ask(|reply| Command::MarkRefused(rows, reply)).await
    }

    /// Pins `key` as the hub this wallet files with, unless one is pinned already (first use);
    /// [`WalletError::OtherHub`] when another key is pinned.
    pub async fn pin_hub_key(&self, key: &PublicKey) -> Result<(), WalletError> {
        let offered = key.to_hex();
        let pinned = self
            .ask(|reply| Command::PinHubKey(offered.clone(), reply))
            .await?;
        if pinned != offered {
            return Err(WalletError::OtherHub { pinned, offered });
        }
        Ok(())
    }

    /// How far into the hub's log the wallet has recovered its paperwork (0 before the first time).
    pub async fn recovered_to(&self) -> Result<u64, WalletError> {
        let value = self
            .ask(|reply| Command::Meta(RECOVERED_TO.to_owned(), None, reply))
            .await?;
        value.map_or(Ok(0), |v| {
            v.parse().map_err(|_| WalletError::Corrupt {
                id: RECOVERED_TO.to_owned(),
                message: format!("not a log index: {v}"),
            })
        })
    }

    /// Records that the wallet holds every paperwork of its key logged before `index`.
    pub async fn set_recovered_to(&self, index: u64) -> Result<(), WalletError> {
        self.ask(|reply| Command::Meta(RECOVERED_TO.to_owned(), Some(index.to_string()), reply))
            .await
            .map(drop)
    }

    /// Records that the hub settled these paperwork (or had before), so they are not filed again.
    pub async fn mark_filed(&self, ids: &[PaperworkId]) -> Result<(), WalletError> {
        let ids = ids.iter().map(ToString::to_string).collect();
        self.ask(|reply| Command::MarkFiled(ids, reply)).await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, WalletError>>) -> Command,
    ) -> Result<T, WalletError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| WalletError::Closed)?;
        answer.await.map_err(|_| WalletError::Closed)?
    }
}

fn decode(id: &str, json: &str) -> Result<Signed<Paperwork>, WalletError> {
    serde_json::from_str(json).map_err(|e| WalletError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

/// The writer thread: takes whatever is queued, commits all stores in one transaction, then replies.
fn writer(mut conn: Connection, mut rx: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let mut stores = Vec::new();
        for cmd in batch.drain(..) {
            match cmd {
                Command::Store(row, reply) => stores.push((row, reply)),
                Command::Get(id, reply) => {
                    let _ = reply.send(get_row(&conn, &id));
                }
                Command::List(reply) => {
                    let _ = reply.send(list_rows(&conn));
                }
                Command::Entries(reply) => {
                    let _ = reply.send(entry_rows(&conn));
                }
                Command::MarkFiled(ids, reply) => {
                    let _ = reply.send(mark_filed(&mut conn, &ids));
                }
                Command::MarkRefused(rows, reply) => {
                    let _ = reply.send(mark_refused(&mut conn, &rows));
                }
                Command::PinHubKey(key, reply) => {
                    let _ = reply.send(pin_hub_key(&conn, &key));
                }
                Command::Meta(name, value, reply) => {
                    let _ = reply.send(meta(&conn, &name, value.as_deref()));
                }
            }
        }
        if stores.is_empty() {
            continue;
        }
        let result = commit(&mut conn, stores.iter().map(|(row, _)| row));
        for (_, reply) in stores {
            let _ = reply.send(result.clone().map_err(WalletError::Sqlite));
        }
    }
}

fn commit<'a>(conn: &mut Connection, rows: impl Iterator<Item = &'a StoreRow>) -> Result<(), String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO paperwork (id, contract, created_at_ms, json) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(|e| e.to_string())?;
        for row in rows {
            insert
                .execute(params![row.id, row.contract, row.created_at_ms, row.json])
                .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

fn get_row(conn: &Connection, id: &str) -> Result<Option<String>, WalletError> {
    Ok(conn
        .prepare_cached("SELECT json FROM paperwork WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?)
}

fn list_rows(conn: &Connection) -> Result<Vec<String>, WalletError> {
    let mut stmt = conn.prepare_cached("SELECT json FROM paperwork ORDER BY rowid")?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<Result<Vec<String>, _>>()?)
}

fn entry_rows(conn: &Connection) -> Result<Vec<EntryRow>, WalletError> {
    let mut stmt = conn.prepare_cached("SELECT json, filed, refused FROM paperwork ORDER BY rowid")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get(0)?, row.get::<_, i64>(1)? != 0, row.get(2)?))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn mark_refused(conn: &mut Connection, rows: &[(String, String)]) -> Result<(), WalletError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("UPDATE paperwork SET refused = ?2 WHERE id = ?1 AND filed = 0")?;
        for (id, why) in rows {
            stmt.execute([id, why])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The pinned hub key, pinning `key` when none is.
fn pin_hub_key(conn: &Connection, key: &str) -> Result<String, WalletError> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (name, value) VALUES ('hub_key', ?1)",
        [key],
    )?;
    Ok(conn.query_row("SELECT value FROM meta WHERE name = 'hub_key'", [], |r| r.get(0))?)
}

/// The setting `name`, after writing `value` when one is given.
fn meta(conn: &Connection, name: &str, value: Option<&str>) -> Result<Option<String>, WalletError> {
    if let Some(value) = value {
        conn.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            [name, value],
        )?;
    }
    Ok(conn
        .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0))
        .optional()?)
}

/// Adds the columns of [`ADDED_COLUMNS`] a wallet made by an older node lacks.
fn add_missing_columns(conn: &Connection) -> Result<(), rusqlite::Error> {
    for (column, definition) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('paperwork') WHERE name = ?1",
            [column],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE paperwork ADD COLUMN {column} {definition}"))?;
        }
    }
    Ok(())
}

fn mark_filed(conn: &mut Connection, ids: &[String]) -> Result<(), WalletError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("UPDATE paperwork SET filed = 1 WHERE id = ?1")?;
        for id in ids {
            stmt.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use stacknet_protocol::examples;

    use super::*;

    #[tokio::test]
    async fn stores_survive_reopening_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("wallet.sqlite");
        let pw = examples::paperwork().unwrap();
        {
            let wallet = Wallet::open(&path).unwrap();
            let id = wallet.store(&pw).await.unwrap();
            assert_eq!(wallet.store(&pw).await.unwrap(), id);
            assert_eq!(wallet.get(&id).await.unwrap(), Some(pw.clone()));
        }
        let wallet = Wallet::open(&path).unwrap();
        assert_eq!(wallet.list().await.unwrap(), vec![pw.clone()]);
        let missing = PaperworkId::from_digest([0; 16]);
        assert_eq!(wallet.get(&missing).await.unwrap(), None);
    }

    #[tokio::test]
    async fn how_far_it_recovered_is_kept_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sqlite");
        {
            let wallet = Wallet::open(&path).unwrap();
            assert_eq!(wallet.recovered_to().await.unwrap(), 0);
            wallet.set_recovered_to(4_096).await.unwrap();
            wallet.set_recovered_to(5_000).await.unwrap();
        }
        assert_eq!(Wallet::open(&path).unwrap().recovered_to().await.unwrap(), 5_000);
    }

    #[tokio::test]
    async fn concurrent_stores_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let wallet = Wallet::open(dir.path().join("w.sqlite")).unwrap();
        let papers: Vec<_> = (0..20)
            .map(|i| {
                let mut body = examples::paperwork().unwrap().body;
                body.finished_at = Timestamp::from_unix_ms(i).unwrap();
                Signed::sign(body, &examples::node_key()).unwrap()
            })
            .collect();
        let stores: Vec<_> = papers
            .iter()
            .map(|pw| {
                let (wallet, pw) = (wallet.clone(), pw.clone());
                tokio::spawn(async move { wallet.store(&pw).await })
            })
            .collect();
        for store in stores {
            store.await.unwrap().unwrap();
        }
        let mut listed = wallet.list().await.unwrap();
        listed.sort_by_key(|pw| pw.body.finished_at);
        assert_eq!(listed, papers);
    }
}
