//! How the books are laid out in tables, shared by both stores: the same columns and the same text
//! for every enum, so a database can move from one to the other row by row.
//!
//! Amounts are 64-bit integers of micro-credits and instants are milliseconds since the Unix epoch,
//! both plain integers in SQLite and `BIGINT` in PostgreSQL.

use stacknet_protocol::{Amount, Timestamp};

use crate::error::{corrupt, LedgerError};
use crate::model::{AccountId, Balance, TransferId, TransferRecord};

/// The columns of `ledger_transfers` that make a `TransferRecord`, in the order `RawRecord` reads them.
pub(crate) const TRANSFER_COLUMNS: &str =
    "id, kind, debit, credit, amount, released, reason, pending, expires_at, pending_id, state, created_at";

/// A transfer row as the database holds it, before it is checked.
#[derive(Debug)]
pub(crate) struct RawRecord {
    pub id: String,
    pub kind: String,
    pub debit: String,
    pub credit: String,
    pub amount: i64,
    pub released: i64,
    pub reason: String,
    pub pending: bool,
    pub expires_at: Option<i64>,
    pub pending_id: Option<String>,
    pub state: String,
    pub created_at: i64,
}

impl RawRecord {
    pub fn parse(self) -> Result<TransferRecord, LedgerError> {
        Ok(TransferRecord {
            id: transfer_id(&self.id)?,
            kind: self.kind.parse().map_err(|_| corrupt("entry kind", &self.kind))?,
            debit: account(&self.debit)?,
            credit: account(&self.credit)?,
            amount: Amount::from_micros(self.amount),
            released: Amount::from_micros(self.released),
            reason: self.reason.parse().map_err(|_| corrupt("reason", &self.reason))?,
            pending: self.pending,
            expires_at: self.expires_at.map(timestamp).transpose()?,
            pending_id: self.pending_id.as_deref().map(transfer_id).transpose()?,
            state: self.state.parse().map_err(|_| corrupt("state", &self.state))?,
            created_at: timestamp(self.created_at)?,
        })
    }

    pub fn encode(record: &TransferRecord) -> Self {
        Self {
            id: record.id.to_string(),
            kind: record.kind.as_str().to_owned(),
            debit: record.debit.to_string(),
            credit: record.credit.to_string(),
            amount: record.amount.micros(),
            released: record.released.micros(),
            reason: record.reason.as_str().to_owned(),
            pending: record.pending,
            expires_at: record.expires_at.map(|t| t.unix_ms()),
            pending_id: record.pending_id.as_ref().map(ToString::to_string),
            state: record.state.as_str().to_owned(),
            created_at: record.created_at.unix_ms(),
        }
    }
}

pub(crate) fn account(text: &str) -> Result<AccountId, LedgerError> {
    text.parse().map_err(|_| corrupt("account id", text))
}

pub(crate) fn transfer_id(text: &str) -> Result<TransferId, LedgerError> {
    TransferId::new(text).map_err(|_| corrupt("transfer id", text))
}

pub(crate) fn timestamp(ms: i64) -> Result<Timestamp, LedgerError> {
    Timestamp::from_unix_ms(ms).map_err(|_| corrupt("timestamp", ms))
}

pub(crate) fn balance(posted: i64, debits_pending: i64, credits_pending: i64) -> Balance {
    Balance {
        posted: Amount::from_micros(posted),
        debits_pending: Amount::from_micros(debits_pending),
        credits_pending: Amount::from_micros(credits_pending),
    }
}

/// `seq` as the API shows it; the databases only ever assign positive values.
pub(crate) fn seq(value: i64) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| corrupt("seq", value))
}

/// Prefix of external accounts' ids, the only ones without a floor (see `AccountKind::floor`): the
/// stores count accounts below their floor in SQL with it.
pub(crate) const EXTERNAL_PREFIX_LIKE: &str = "external:%";
