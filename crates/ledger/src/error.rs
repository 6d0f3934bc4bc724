//! The ledger's errors: what a caller did wrong (refusals that name the entry and the reason), and
//! what went wrong underneath (the database).

use stacknet_protocol::Amount;

use crate::model::{AccountId, TransferId, TransferState};

/// A value that did not parse at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("account id {0:?} is not `escrow`, `treasury` or `<kind>:<owner id>`")]
    BadAccountId(String),
    #[error("external account name {0:?} must be 1 to 32 characters of a-z, 0-9, `_` and `-`")]
    BadExternalName(String),
    #[error("transfer id {0:?} must be 1 to 128 characters of A-Z, a-z, 0-9, `_`, `-`, `.` and `:`")]
    BadTransferId(String),
    #[error("unknown transfer reason {0:?}")]
    BadReason(String),
    #[error("unknown entry kind {0:?}")]
    BadEntryKind(String),
    #[error("unknown transfer state {0:?}")]
    BadState(String),
}

/// Why a batch was refused or could not be applied. A refused batch changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("a batch holds {len} entries; at most {max} are allowed")]
    BatchTooLarge { len: usize, max: usize },
    #[error("transfer {id}: amount must be more than zero, got {amount}")]
    NotPositive { id: TransferId, amount: Amount },
    #[error("transfer {id}: debits and credits the same account {account}")]
    SameAccount { id: TransferId, account: AccountId },
    #[error("transfer {id}: only a hold (pending transfer) can expire")]
    ExpiryWithoutHold { id: TransferId },
    #[error("transfer id {id} was used before with a different {field}")]
    IdReused { id: TransferId, field: &'static str },
    #[error("transfer {id}: account {account} has {available} available, cannot take {amount}")]
    InsufficientFunds {
        id: TransferId,
        account: AccountId,
        available: Amount,
        amount: Amount,
    },
    #[error("transfer {id}: a balance of account {account} would overflow")]
    Overflow { id: TransferId, account: AccountId },
    #[error("{id}: no transfer {pending_id} to post or void")]
    PendingNotFound { id: TransferId, pending_id: TransferId },
    #[error("{id}: transfer {pending_id} is not a hold")]
    NotAHold { id: TransferId, pending_id: TransferId },
    #[error("{id}: hold {pending_id} is already {}", state.as_str())]
    AlreadyResolved {
        id: TransferId,
        pending_id: TransferId,
        state: TransferState,
    },
    #[error("{id}: cannot capture {amount} from hold {pending_id} of {held}")]
    ExceedsHold {
        id: TransferId,
        pending_id: TransferId,
        held: Amount,
        amount: Amount,
    },
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Only the scheme is kept: the rest of a database URL may hold a password.
    #[error("database url with scheme {scheme:?} is neither sqlite://PATH nor postgres://...")]
    BadDatabaseUrl { scheme: String },
    #[error("schema name {0:?} must be 1 to 63 characters of a-z, 0-9 and `_`, not starting with a digit")]
    BadSchemaName(String),
    #[error("stored {what} {value:?} is malformed")]
    Corrupt { what: &'static str, value: String },
    #[error("the ledger's writer has stopped")]
    WriterStopped,
    #[error("internal ledger error: {0}")]
    Internal(&'static str),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl LedgerError {
    /// Whether the batch was refused for what it asked (retrying it unchanged fails the same way),
    /// as opposed to a failure of the store underneath.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            LedgerError::Corrupt { .. }
                | LedgerError::WriterStopped
                | LedgerError::Internal(_)
                | LedgerError::Sqlite(_)
                | LedgerError::Postgres(_)
                | LedgerError::BadDatabaseUrl { .. }
                | LedgerError::BadSchemaName(_)
        )
    }
}

/// Reading a stored value back: anything unparseable is corruption, not a caller's mistake.
pub(crate) fn corrupt(what: &'static str, value: impl ToString) -> LedgerError {
    LedgerError::Corrupt {
        what,
        value: value.to_string(),
    }
}
