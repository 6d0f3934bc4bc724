//! The SQLite statements: schema, the loads and writes of one batch, and the reads. All blocking;
//! callers run them on the writer thread or on a blocking reader.

use rusqlite::{params, Connection, OptionalExtension, Row};
use stacknet_protocol::Timestamp;

use crate::codec::{self, RawRecord, EXTERNAL_PREFIX_LIKE, TRANSFER_COLUMNS};
use crate::error::LedgerError;
use crate::model::books::{self, Books, Changes};
use crate::model::{
    AccountId, Balance, Entry, StatementLine, Totals, TransferId, TransferOutcome, TransferRecord,
};
use crate::store::MAX_EXPIRED_PER_CALL;

/// Table names carry the `ledger_` prefix so the ledger can share one SQLite file with the hub's other stores.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_accounts (
    id TEXT PRIMARY KEY NOT NULL,
    posted INTEGER NOT NULL,
    debits_pending INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_transfers (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    amount INTEGER NOT NULL,
    released INTEGER NOT NULL,
    reason TEXT NOT NULL,
    pending INTEGER NOT NULL,
    expires_at INTEGER,
    pending_id TEXT,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_transfers_debit ON ledger_transfers (debit, seq);
CREATE INDEX IF NOT EXISTS ledger_transfers_credit ON ledger_transfers (credit, seq);
CREATE INDEX IF NOT EXISTS ledger_transfers_open ON ledger_transfers (expires_at) WHERE state = 'pending';
";

pub(crate) fn migrate(conn: &Connection) -> Result<(), LedgerError> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// Applies one batch inside the caller's transaction (or savepoint).
pub(crate) fn apply(
    conn: &Connection,
    batch: &[Entry],
    now: Timestamp,
) -> Result<Vec<TransferOutcome>, LedgerError> {
    let ids = books::ids_needed(batch);
    let found = ids
        .iter()
        .filter_map(|id| load_transfer(conn, id).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let accounts = books::accounts_needed(batch, &found);
    let mut books = Books::new(load_balances(conn, accounts)?, found);
    let outcomes = books.apply(batch, now)?;
    persist(conn, &books.changes())?;
    Ok(outcomes)
}

/// Expires due holds inside the caller's transaction.
pub(crate) fn expire(conn: &Connection, now: Timestamp) -> Result<Vec<TransferId>, LedgerError> {
    let sql = format!(
        "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE state = 'pending' AND expires_at <= ?1
         ORDER BY expires_at, id LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let limit = i64::try_from(MAX_EXPIRED_PER_CALL).unwrap_or(i64::MAX);
    let due = stmt
        .query_map(params![now.unix_ms(), limit], raw_record)?
        .map(|raw| raw?.parse())
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<TransferId> = due.iter().map(|r| r.id.clone()).collect();
    let mut accounts: Vec<AccountId> = due
        .iter()
        .flat_map(|r| [r.debit.clone(), r.credit.clone()])
        .collect();
    books::sort_for_locking(&mut accounts);
    let mut books = Books::new(load_balances(conn, accounts)?, due);
    let expired = books.expire(&ids)?;
    persist(conn, &books.changes())?;
    Ok(expired)
}

fn persist(conn: &Connection, changes: &Changes<'_>) -> Result<(), LedgerError> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO ledger_accounts (id, posted, debits_pending, credits_pending) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET posted = excluded.posted,
             debits_pending = excluded.debits_pending, credits_pending = excluded.credits_pending",
    )?;
    for (account, b) in &changes.accounts {
        upsert.execute(params![
            account.to_string(),
            b.posted.micros(),
            b.debits_pending.micros(),
            b.credits_pending.micros()
        ])?;
    }
    let mut insert = conn.prepare_cached(&format!(
        "INSERT INTO ledger_transfers ({TRANSFER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?;
    for record in &changes.inserted {
        let r = RawRecord::encode(record);
        insert.execute(params![
            r.id,
            r.kind,
            r.debit,
            r.credit,
            r.amount,
            r.released,
            r.reason,
            r.pending,
            r.expires_at,
            r.pending_id,
            r.state,
            r.created_at
        ])?;
    }
    let mut update = conn.prepare_cached("UPDATE ledger_transfers SET state = ?2 WHERE id = ?1")?;
    for record in &changes.resolved {
        update.execute(params![record.id.as_str(), record.state.as_str()])?;
    }
    Ok(())
}

pub(crate) fn load_transfer(
    conn: &Connection,
    id: &TransferId,
) -> Result<Option<TransferRecord>, LedgerError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ?1"
    ))?;
    stmt.query_row([id.as_str()], raw_record)
        .optional()?
        .map(RawRecord::parse)
        .transpose()
}

/// Balances in the order given; an account without a row has a zero balance.
pub(crate) fn load_balances(
    conn: &Connection,
    accounts: Vec<AccountId>,
) -> Result<Vec<(AccountId, Balance)>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT posted, debits_pending, credits_pending FROM ledger_accounts WHERE id = ?1",
    )?;
    accounts
        .into_iter()
        .map(|account| {
            let balance = stmt
                .query_row([account.to_string()], |row| {
                    Ok(codec::balance(row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?
                .unwrap_or_default();
            Ok((account, balance))
        })
        .collect()
}

pub(crate) fn statement(
    conn: &Connection,
    account: &AccountId,
    limit: i64,
    after: i64,
) -> Result<Vec<StatementLine>, LedgerError> {
    // Two index range scans (debit side, credit side) merged, rather than one OR that scans the table.
    let sql = format!(
        "SELECT seq, {TRANSFER_COLUMNS} FROM (
             SELECT * FROM (SELECT * FROM ledger_transfers WHERE debit = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)
             UNION ALL
             SELECT * FROM (SELECT * FROM ledger_transfers WHERE credit = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)
         ) ORDER BY seq LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![account.to_string(), after, limit], |row| {
        Ok((row.get::<_, i64>(0)?, raw_record_at(row, 1)?))
    })?;
    rows.map(|row| {
        let (seq, raw) = row?;
        Ok(StatementLine {
            seq: codec::seq(seq)?,
            transfer: raw.parse()?,
        })
    })
    .collect()
}

/// Totals in Rust, 128-bit: SQLite's SUM() fails on a 64-bit overflow, which a large book can reach
/// part-way through a sum that ends at zero.
pub(crate) fn totals(conn: &Connection) -> Result<Totals, LedgerError> {
    let mut totals = Totals::default();
    let mut stmt = conn.prepare_cached(
        "SELECT posted, debits_pending, credits_pending, id NOT LIKE ?1 AND posted - debits_pending < 0
         FROM ledger_accounts",
    )?;
    let mut rows = stmt.query([EXTERNAL_PREFIX_LIKE])?;
    while let Some(row) = rows.next()? {
        totals.accounts += 1;
        totals.posted += i128::from(row.get::<_, i64>(0)?);
        totals.debits_pending += i128::from(row.get::<_, i64>(1)?);
        totals.credits_pending += i128::from(row.get::<_, i64>(2)?);
        totals.below_floor += u64::from(row.get::<_, bool>(3)?);
    }
    let mut stmt = conn.prepare_cached("SELECT amount FROM ledger_transfers WHERE state = 'pending'")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        totals.open_holds += 1;
        totals.open_hold_amount += i128::from(row.get::<_, i64>(0)?);
    }
    Ok(totals)
}

fn raw_record(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
    raw_record_at(row, 0)
}

fn raw_record_at(row: &Row<'_>, first: usize) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(first)?,
        kind: row.get(first + 1)?,
        debit: row.get(first + 2)?,
        credit: row.get(first + 3)?,
        amount: row.get(first + 4)?,
        released: row.get(first + 5)?,
        reason: row.get(first + 6)?,
        pending: row.get(first + 7)?,
        expires_at: row.get(first + 8)?,
        pending_id: row.get(first + 9)?,
        state: row.get(first + 10)?,
        created_at: row.get(first + 11)?,
    })
}
