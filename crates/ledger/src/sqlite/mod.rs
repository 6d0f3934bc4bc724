//! The embedded store: one SQLite file (WAL), written by one thread, read by a few blocking readers.
//!
//! Flow: `create_transfers` sends the batch over a bounded channel to the writer thread (`writer`),
//! which applies it with the books' rules inside a savepoint of a group transaction opened with
//! `BEGIN IMMEDIATE` and answers after the commit. Reads run on tokio's blocking pool with their own
//! read-only connections, so they never wait behind the writer (WAL gives them a snapshot) and never
//! block the async runtime. Several processes may share the file: `BEGIN IMMEDIATE` and a busy
//! timeout serialise their writers, and every batch re-reads the balances it checks under that lock.

mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use stacknet_protocol::Timestamp;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::LedgerError;
use crate::model::{
    AccountId, Balance, Entry, StatementLine, Totals, TransferId, TransferOutcome, TransferRecord,
};
use crate::store::{check_batch_len, page, LedgerStore, StoreFuture};
use writer::Command;

/// How long a connection waits for another process's write lock before it gives up.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// How SQLite commits. `Full` syncs the WAL on every commit (a committed batch survives power loss);
/// `Normal` syncs only at checkpoints (it survives a crash of the process, not of the machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

impl Synchronous {
    /// The value of SQLite's `synchronous` pragma.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Batches waiting for the writer; a caller beyond this waits to enqueue (back-pressure).
    pub queue_len: usize,
    /// Most batches committed in one transaction.
    pub max_group: usize,
    /// Most reads running at once, each on its own connection.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            queue_len: 1_024,
            max_group: 256,
            readers: 4,
        }
    }
}

/// The ledger on SQLite. Dropping the last clone stops the writer once its queue is done.
#[derive(Clone, Debug)]
pub struct SqliteLedger {
    commands: mpsc::Sender<Command>,
    readers: Arc<Readers>,
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger in the SQLite file at `path` and starts its writer.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", options.synchronous.pragma())?;
        sql::migrate(&conn)?;
        let (commands, queue) = mpsc::channel(options.queue_len.max(1));
        let max_group = options.max_group.max(1);
        std::thread::Builder::new()
            .name("ledger-sqlite-writer".into())
            .spawn(move || writer::run(conn, queue, max_group, options.synchronous))
            .map_err(|_| LedgerError::WriterStopped)?;
        let readers = Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(options.readers.max(1)),
        });
        Ok(Self { commands, readers })
    }

    async fn write<T>(&self, command: impl FnOnce(writer::Reply<T>) -> Command) -> Result<T, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| LedgerError::WriterStopped)?;
        answer.await.map_err(|_| LedgerError::WriterStopped)?
    }
}

impl LedgerStore for SqliteLedger {
    fn create_transfers(&self, batch: Vec<Entry>) -> StoreFuture<'_, Vec<TransferOutcome>> {
        Box::pin(async move {
            check_batch_len(&batch)?;
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            self.write(|reply| Command::Apply { batch, reply }).await
        })
    }

    fn expire_due(&self, now: Timestamp) -> StoreFuture<'_, Vec<TransferId>> {
        Box::pin(self.write(move |reply| Command::Expire { now, reply }))
    }

    fn balances(&self, accounts: Vec<AccountId>) -> StoreFuture<'_, Vec<Balance>> {
        Box::pin(self.readers.read(move |conn| {
            Ok(sql::load_balances(conn, accounts)?
                .into_iter()
                .map(|(_, balance)| balance)
                .collect())
        }))
    }

    fn transfer(&self, id: TransferId) -> StoreFuture<'_, Option<TransferRecord>> {
        Box::pin(self.readers.read(move |conn| sql::load_transfer(conn, &id)))
    }

    fn transfers_of(
        &self,
        account: AccountId,
        limit: u32,
        after: Option<u64>,
    ) -> StoreFuture<'_, Vec<StatementLine>> {
        let (limit, after) = page(limit, after);
        Box::pin(
            self.readers
                .read(move |conn| sql::statement(conn, &account, limit, after)),
        )
    }

    fn sum_check(&self) -> StoreFuture<'_, Totals> {
        Box::pin(self.readers.read(sql::totals))
    }
}

/// Read-only connections, opened on demand and kept for reuse.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    /// Runs `f` on the blocking pool inside one read transaction, so that a multi-statement read
    /// (totals) sees one snapshot.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LedgerError::Internal("reader permits closed"))?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let tx = conn.unchecked_transaction()?;
            let result = f(&tx);
            drop(tx);
            readers.put(conn);
            result
        })
        .await
        .map_err(|_| LedgerError::Internal("a blocking read panicked or was cancelled"))?
    }

    fn take(&self) -> Result<Connection, LedgerError> {
        if let Some(conn) = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
        {
            return Ok(conn);
        }
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(conn);
    }
}
