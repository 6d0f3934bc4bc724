//! The PostgreSQL statements. Each batch is a handful of round trips whatever its size: arrays go in
//! through `unnest`, so a batch of 1,000 transfers is one INSERT, not 1,000.

use tokio_postgres::{Client, Row, Statement};

use crate::codec::{self, RawRecord};
use crate::error::LedgerError;
use crate::model::books::Changes;
use crate::model::{AccountId, Balance, TransferId, TransferRecord};

/// Schema migration, run once per `connect` by `Pool::migrate` (under its advisory lock, so that hub
/// replicas starting together do not race on `CREATE ... IF NOT EXISTS`).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_accounts (
    id TEXT PRIMARY KEY,
    posted BIGINT NOT NULL,
    debits_pending BIGINT NOT NULL,
    credits_pending BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_transfers (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    amount BIGINT NOT NULL,
    released BIGINT NOT NULL,
    reason TEXT NOT NULL,
    pending BOOLEAN NOT NULL,
    expires_at BIGINT,
    pending_id TEXT,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_transfers_debit ON ledger_transfers (debit, seq);
CREATE INDEX IF NOT EXISTS ledger_transfers_credit ON ledger_transfers (credit, seq);
CREATE INDEX IF NOT EXISTS ledger_transfers_open ON ledger_transfers (expires_at) WHERE state = 'pending';
";

// Indexes into `STATEMENTS`, prepared once per connection.
pub(crate) const LOCK_TRANSFERS: usize = 0;
pub(crate) const CREATE_ACCOUNTS: usize = 1;
pub(crate) const LOCK_ACCOUNTS: usize = 2;
pub(crate) const UPDATE_ACCOUNTS: usize = 3;
pub(crate) const INSERT_TRANSFERS: usize = 4;
pub(crate) const UPDATE_STATES: usize = 5;
pub(crate) const DUE_HOLDS: usize = 6;
pub(crate) const READ_BALANCES: usize = 7;
pub(crate) const READ_TRANSFER: usize = 8;
pub(crate) const STATEMENT: usize = 9;
pub(crate) const TOTALS: usize = 10;

/// Rows are locked in one global order (transfers, then accounts, each by id in byte order) so that
/// concurrent batches cannot deadlock on each other's rows.
pub(crate) const STATEMENTS: [&str; 11] = [
    "SELECT id, kind, debit, credit, amount, released, reason, pending, expires_at, pending_id, state, created_at
     FROM ledger_transfers WHERE id = ANY($1) ORDER BY id COLLATE \"C\" FOR UPDATE",
    // New accounts are inserted first (in lock order) so that the next statement can lock them:
    // a row that does not exist cannot be locked, and two batches creating one account must queue.
    "INSERT INTO ledger_accounts (id, posted, debits_pending, credits_pending)
     SELECT a, 0, 0, 0 FROM unnest($1::text[]) WITH ORDINALITY AS u(a, n) ORDER BY n
     ON CONFLICT (id) DO NOTHING",
    "SELECT id, posted, debits_pending, credits_pending FROM ledger_accounts
     WHERE id = ANY($1) ORDER BY id COLLATE \"C\" FOR UPDATE",
    "UPDATE ledger_accounts AS a SET posted = v.posted, debits_pending = v.dp, credits_pending = v.cp
     FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS v(id, posted, dp, cp) WHERE a.id = v.id",
    "INSERT INTO ledger_transfers
         (id, kind, debit, credit, amount, released, reason, pending, expires_at, pending_id, state, created_at)
     SELECT id, kind, debit, credit, amount, released, reason, pending, expires_at, pending_id, state, created_at
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::text[],
                 $8::bool[], $9::int8[], $10::text[], $11::text[], $12::int8[])
          WITH ORDINALITY AS v(id, kind, debit, credit, amount, released, reason, pending, expires_at,
                               pending_id, state, created_at, n)
     ORDER BY n",
    "UPDATE ledger_transfers AS t SET state = v.state FROM unnest($1::text[], $2::text[]) AS v(id, state)
     WHERE t.id = v.id",
    // SKIP LOCKED: a hold that a batch is resolving right now is that batch's to resolve; and since
    // this never waits on a transfer row, it may take them in deadline order rather than lock order.
    "SELECT id, kind, debit, credit, amount, released, reason, pending, expires_at, pending_id, state, created_at
     FROM ledger_transfers WHERE state = 'pending' AND expires_at <= $1
     ORDER BY expires_at, id COLLATE \"C\" LIMIT $2 FOR UPDATE SKIP LOCKED",
    "SELECT id, posted, debits_pending, credits_pending FROM ledger_accounts WHERE id = ANY($1)",
    "SELECT id, kind, debit, credit, amount, released, reason, pending, expires_at, pending_id, state, created_at
     FROM ledger_transfers WHERE id = $1",
    "SELECT seq, id, kind, debit, credit, amount, released, reason, pending, expires_at, pending_id, state,
            created_at FROM (
         (SELECT * FROM ledger_transfers WHERE debit = $1 AND seq > $2 ORDER BY seq LIMIT $3)
         UNION ALL
         (SELECT * FROM ledger_transfers WHERE credit = $1 AND seq > $2 ORDER BY seq LIMIT $3)
     ) AS lines ORDER BY seq LIMIT $3",
    // One statement, so one snapshot for both sums. SUM over BIGINT is NUMERIC (exact, no overflow),
    // read back as text into i128.
    "SELECT a.n, a.posted, a.dp, a.cp, a.below, h.n, h.amount FROM
         (SELECT count(*) AS n, coalesce(sum(posted), 0)::text AS posted,
                 coalesce(sum(debits_pending), 0)::text AS dp, coalesce(sum(credits_pending), 0)::text AS cp,
                 count(*) FILTER (WHERE id NOT LIKE $1 AND posted::numeric - debits_pending < 0) AS below
          FROM ledger_accounts) AS a,
         (SELECT count(*) AS n, coalesce(sum(amount), 0)::text AS amount
          FROM ledger_transfers WHERE state = 'pending') AS h",
];

pub(crate) fn record(row: &Row, first: usize) -> Result<TransferRecord, LedgerError> {
    RawRecord {
        id: row.try_get(first)?,
        kind: row.try_get(first + 1)?,
        debit: row.try_get(first + 2)?,
        credit: row.try_get(first + 3)?,
        amount: row.try_get(first + 4)?,
        released: row.try_get(first + 5)?,
        reason: row.try_get(first + 6)?,
        pending: row.try_get(first + 7)?,
        expires_at: row.try_get(first + 8)?,
        pending_id: row.try_get(first + 9)?,
        state: row.try_get(first + 10)?,
        created_at: row.try_get(first + 11)?,
    }
    .parse()
}

pub(crate) fn balance_row(row: &Row) -> Result<(AccountId, Balance), LedgerError> {
    let id: String = row.try_get(0)?;
    Ok((
        codec::account(&id)?,
        codec::balance(row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
    ))
}

/// Transfers to lock or look up, as the text array the statements take.
pub(crate) fn id_texts(ids: &[TransferId]) -> Vec<&str> {
    ids.iter().map(TransferId::as_str).collect()
}

pub(crate) fn account_texts(accounts: &[AccountId]) -> Vec<String> {
    accounts.iter().map(ToString::to_string).collect()
}

/// Writes a batch's changes and commits, pipelined: the (at most three) writes and the COMMIT go out
/// together, one round trip. If a write fails, PostgreSQL turns the COMMIT into a rollback and the
/// write's error is what this returns.
pub(crate) async fn persist_and_commit(
    client: &Client,
    statements: &[Statement],
    changes: &Changes<'_>,
) -> Result<(), LedgerError> {
    let accounts = async {
        if changes.accounts.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = changes.accounts.iter().map(|(a, _)| a.to_string()).collect();
        let posted: Vec<i64> = changes.accounts.iter().map(|(_, b)| b.posted.micros()).collect();
        let dp: Vec<i64> = changes
            .accounts
            .iter()
            .map(|(_, b)| b.debits_pending.micros())
            .collect();
        let cp: Vec<i64> = changes
            .accounts
            .iter()
            .map(|(_, b)| b.credits_pending.micros())
            .collect();
        client
            .execute(&statements[UPDATE_ACCOUNTS], &[&ids, &posted, &dp, &cp])
            .await
    };
    let inserted = async {
        if changes.inserted.is_empty() {
            return Ok(0);
        }
        insert_transfers(client, &statements[INSERT_TRANSFERS], &changes.inserted).await
    };
    let resolved = async {
        if changes.resolved.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = changes.resolved.iter().map(|r| r.id.as_str()).collect();
        let states: Vec<&str> = changes.resolved.iter().map(|r| r.state.as_str()).collect();
        client.execute(&statements[UPDATE_STATES], &[&ids, &states]).await
    };
    tokio::try_join!(accounts, inserted, resolved, client.batch_execute("COMMIT"))?;
    Ok(())
}

async fn insert_transfers(
    client: &Client,
    insert: &Statement,
    records: &[&TransferRecord],
) -> Result<u64, tokio_postgres::Error> {
    let raw: Vec<RawRecord> = records.iter().map(|r| RawRecord::encode(r)).collect();
    let column = |f: fn(&RawRecord) -> &str| raw.iter().map(f).collect::<Vec<&str>>();
    let ids = column(|r| r.id.as_str());
    let kinds = column(|r| r.kind.as_str());
    let debits = column(|r| r.debit.as_str());
    let credits = column(|r| r.credit.as_str());
    let reasons = column(|r| r.reason.as_str());
    let states = column(|r| r.state.as_str());
    let amounts: Vec<i64> = raw.iter().map(|r| r.amount).collect();
    let released: Vec<i64> = raw.iter().map(|r| r.released).collect();
    let pending: Vec<bool> = raw.iter().map(|r| r.pending).collect();
    let expires_at: Vec<Option<i64>> = raw.iter().map(|r| r.expires_at).collect();
    let pending_ids: Vec<Option<&str>> = raw.iter().map(|r| r.pending_id.as_deref()).collect();
    let created_at: Vec<i64> = raw.iter().map(|r| r.created_at).collect();
    client
        .execute(
            insert,
            &[
                &ids,
                &kinds,
                &debits,
                &credits,
                &amounts,
                &released,
                &reasons,
                &pending,
                &expires_at,
                &pending_ids,
                &states,
                &created_at,
            ],
        )
        .await
}

/// A NUMERIC sum read back as text.
pub(crate) fn wide(row: &Row, index: usize) -> Result<i128, LedgerError> {
    let text: String = row.try_get(index)?;
    text.parse().map_err(|_| crate::error::corrupt("sum", text))
}
