//! The shared store: PostgreSQL, for several hub replicas on one database.
//!
//! Flow: every batch is one transaction on a pooled connection. It locks the holds it resolves
//! (`SELECT ... FOR UPDATE`), creates and locks the accounts it touches (in id order, so that
//! concurrent batches queue instead of deadlocking), applies the books' rules to what it read, and
//! writes the changes back. Row locks, not isolation level, are what make concurrent holds safe: a
//! second batch on the same account waits for the first to commit and then reads its balance.
//! A batch that loses a race PostgreSQL reports as retryable (a deadlock, or two batches inserting
//! the same new transfer id) runs again from the start, up to `MAX_RETRIES` times; the second run of
//! a duplicate id finds the first and replays it or refuses it.
//!
//! Why `tokio-postgres` and not the synchronous `postgres` crate: the hub is async, and `postgres` is
//! a wrapper that blocks a thread on its own runtime for every call; `tokio-postgres` runs on the
//! hub's runtime and lets one connection pipeline several statements (see `apply_once`).

pub mod pool;
mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use stacknet_protocol::Timestamp;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use crate::codec::{self, EXTERNAL_PREFIX_LIKE};
use crate::error::LedgerError;
use crate::model::books::{self, Books};
use crate::model::{
    AccountId, Balance, Entry, StatementLine, Totals, TransferId, TransferOutcome, TransferRecord,
};
use crate::store::{check_batch_len, page, LedgerStore, StoreFuture, MAX_EXPIRED_PER_CALL};
pub use pool::MAX_RETRIES;
use pool::{PgConn, Pool};
use sql::*;

#[derive(Clone, Debug)]
pub struct PgOptions {
    /// The schema the ledger's tables live in (created if missing): tests use one each; a hub can
    /// keep the ledger apart from its other stores.
    pub schema: String,
    /// Most connections open at once.
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: "public".into(),
            pool_size: 8,
        }
    }
}

/// The ledger on PostgreSQL. Clones share one pool.
#[derive(Clone, Debug)]
pub struct PgLedger {
    pool: Arc<Pool>,
}

impl PgLedger {
    /// Connects to `url` (`postgres://user@host:port/db`, TLS not supported yet) and creates the
    /// ledger's tables in `options.schema` if they are missing.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, LedgerError> {
        let schema = options.schema;
        if !pool::is_valid_schema_name(&schema) {
            return Err(LedgerError::BadSchemaName(schema));
        }
        let config: Config = url.parse()?;
        let pool = Pool::new(config, &schema, options.pool_size).with_statements(&STATEMENTS);
        pool.migrate(SCHEMA).await?;
        Ok(Self { pool: Arc::new(pool) })
    }

    async fn apply(&self, batch: &[Entry]) -> Result<Vec<TransferOutcome>, LedgerError> {
        let pool = &*self.pool;
        pool::retry(is_retryable, move || async move {
            let mut lease = pool.get().await?;
            let conn = lease.conn();
            let result = apply_once(conn, batch).await;
            conn.end_transaction(result).await
        })
        .await
    }

    async fn expire(&self, now: Timestamp) -> Result<Vec<TransferId>, LedgerError> {
        let pool = &*self.pool;
        pool::retry(is_retryable, move || async move {
            let mut lease = pool.get().await?;
            let conn = lease.conn();
            let result = expire_once(conn, now).await;
            conn.end_transaction(result).await
        })
        .await
    }

    async fn totals(&self) -> Result<Totals, LedgerError> {
        let mut lease = self.pool.get().await?;
        let PgConn {
            client, statements, ..
        } = lease.conn();
        let row = client
            .query_one(&statements[TOTALS], &[&EXTERNAL_PREFIX_LIKE])
            .await?;
        let count = |i| -> Result<u64, LedgerError> {
            let n: i64 = row.try_get(i)?;
            u64::try_from(n).map_err(|_| crate::error::corrupt("count", n))
        };
        Ok(Totals {
            accounts: count(0)?,
            posted: wide(&row, 1)?,
            debits_pending: wide(&row, 2)?,
            credits_pending: wide(&row, 3)?,
            below_floor: count(4)?,
            open_holds: count(5)?,
            open_hold_amount: wide(&row, 6)?,
        })
    }
}

/// One attempt at a batch, pipelined (tokio-postgres sends a request when its future is first polled,
/// and `try_join!` polls in order, so the statements reach the server in the order written): when the batch resolves no hold, every account it touches is
/// known up front, so BEGIN and all the locking go out in one round trip and the writes with the
/// COMMIT in a second. A batch that posts or voids must first read its holds to learn their accounts.
async fn apply_once(conn: &mut PgConn, batch: &[Entry]) -> Result<Vec<TransferOutcome>, LedgerError> {
    conn.in_transaction = true;
    let PgConn {
        client, statements, ..
    } = conn;
    let ids = books::ids_needed(batch);
    let ids = id_texts(&ids);
    // Holds do not wait for the disk (see `Entry::must_sync`), nor do expiries (a lost one is done
    // again by the next sweep): the next commit that does flushes the write-ahead log through them.
    let begin = if Entry::must_sync(batch) {
        "BEGIN"
    } else {
        "BEGIN; SET LOCAL synchronous_commit = off"
    };
    let (found, balances) = if batch.iter().all(|e| e.pending_id().is_none()) {
        let accounts = books::accounts_needed(batch, &[]);
        let texts = account_texts(&accounts);
        let (_, found, _, locked) = tokio::try_join!(
            client.batch_execute(begin),
            async { client.query(&statements[LOCK_TRANSFERS], &[&ids]).await },
            async { client.execute(&statements[CREATE_ACCOUNTS], &[&texts]).await },
            async { client.query(&statements[LOCK_ACCOUNTS], &[&texts]).await },
        )?;
        (records(&found)?, with_balances(accounts, &locked)?)
    } else {
        let (_, found) = tokio::try_join!(client.batch_execute(begin), async {
            client.query(&statements[LOCK_TRANSFERS], &[&ids]).await
        },)?;
        let found = records(&found)?;
        let accounts = books::accounts_needed(batch, &found);
        let balances = lock_accounts(client, statements, accounts).await?;
        (found, balances)
    };
    let mut books = Books::new(balances, found);
    let outcomes = books.apply(batch, Timestamp::now())?;
    persist_and_commit(client, statements, &books.changes()).await?;
    Ok(outcomes)
}

async fn expire_once(conn: &mut PgConn, now: Timestamp) -> Result<Vec<TransferId>, LedgerError> {
    conn.in_transaction = true;
    let PgConn {
        client, statements, ..
    } = conn;
    let limit = i64::try_from(MAX_EXPIRED_PER_CALL).unwrap_or(i64::MAX);
    let (_, due) = tokio::try_join!(
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit = off"),
        async {
            client
                .query(&statements[DUE_HOLDS], &[&now.unix_ms(), &limit])
                .await
        },
    )?;
    let due = records(&due)?;
    let ids: Vec<TransferId> = due.iter().map(|r| r.id.clone()).collect();
    let mut accounts: Vec<AccountId> = due
        .iter()
        .flat_map(|r| [r.debit.clone(), r.credit.clone()])
        .collect();
    books::sort_for_locking(&mut accounts);
    let balances = lock_accounts(client, statements, accounts).await?;
    let mut books = Books::new(balances, due);
    let expired = books.expire(&ids)?;
    persist_and_commit(client, statements, &books.changes()).await?;
    Ok(expired)
}

/// Creates the rows of new accounts, then locks every account, in lock order (one round trip).
async fn lock_accounts(
    client: &Client,
    statements: &[tokio_postgres::Statement],
    accounts: Vec<AccountId>,
) -> Result<Vec<(AccountId, Balance)>, LedgerError> {
    if accounts.is_empty() {
        return Ok(Vec::new());
    }
    let texts = account_texts(&accounts);
    let (_, locked) = tokio::try_join!(
        async { client.execute(&statements[CREATE_ACCOUNTS], &[&texts]).await },
        async { client.query(&statements[LOCK_ACCOUNTS], &[&texts]).await },
    )?;
    with_balances(accounts, &locked)
}

fn records(rows: &[tokio_postgres::Row]) -> Result<Vec<TransferRecord>, LedgerError> {
    rows.iter().map(|row| record(row, 0)).collect()
}

/// The locked balances in the order of `accounts` (every account has a row by now).
fn with_balances(
    accounts: Vec<AccountId>,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<(AccountId, Balance)>, LedgerError> {
    let locked = rows
        .iter()
        .map(balance_row)
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(accounts
        .into_iter()
        .map(|account| {
            let balance = locked.get(&account).copied().unwrap_or_default();
            (account, balance)
        })
        .collect())
}

/// A conflict, or two batches inserting the same new transfer id: the second run finds the first's
/// transfer and replays or refuses it.
fn is_retryable(error: &LedgerError) -> bool {
    let LedgerError::Postgres(e) = error else {
        return false;
    };
    pool::is_conflict(e) || e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl LedgerStore for PgLedger {
    fn create_transfers(&self, batch: Vec<Entry>) -> StoreFuture<'_, Vec<TransferOutcome>> {
        Box::pin(async move {
            check_batch_len(&batch)?;
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            self.apply(&batch).await
        })
    }

    fn expire_due(&self, now: Timestamp) -> StoreFuture<'_, Vec<TransferId>> {
        Box::pin(self.expire(now))
    }

    fn balances(&self, accounts: Vec<AccountId>) -> StoreFuture<'_, Vec<Balance>> {
        Box::pin(async move {
            let mut lease = self.pool.get().await?;
            let PgConn {
                client, statements, ..
            } = lease.conn();
            let rows = client
                .query(&statements[READ_BALANCES], &[&account_texts(&accounts)])
                .await?;
            let found = rows
                .iter()
                .map(balance_row)
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(accounts
                .iter()
                .map(|a| found.get(a).copied().unwrap_or_default())
                .collect())
        })
    }

    fn transfer(&self, id: TransferId) -> StoreFuture<'_, Option<TransferRecord>> {
        Box::pin(async move {
            let mut lease = self.pool.get().await?;
            let PgConn {
                client, statements, ..
            } = lease.conn();
            let row = client
                .query_opt(&statements[READ_TRANSFER], &[&id.as_str()])
                .await?;
            row.map(|row| record(&row, 0)).transpose()
        })
    }

    fn transfers_of(
        &self,
        account: AccountId,
        limit: u32,
        after: Option<u64>,
    ) -> StoreFuture<'_, Vec<StatementLine>> {
        let (limit, after) = page(limit, after);
        Box::pin(async move {
            let mut lease = self.pool.get().await?;
            let PgConn {
                client, statements, ..
            } = lease.conn();
            let rows = client
                .query(&statements[STATEMENT], &[&account.to_string(), &after, &limit])
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(StatementLine {
                        seq: codec::seq(row.try_get(0)?)?,
                        transfer: record(row, 1)?,
                    })
                })
                .collect()
        })
    }

    fn sum_check(&self) -> StoreFuture<'_, Totals> {
        Box::pin(self.totals())
    }
}
