//! The ledger's domain, pure (no I/O): accounts and their floors, transfers and the entries that
//! create, post and void them, balances, and `books`, the rules that apply a batch.

mod account;
mod balance;
pub(crate) mod books;
mod checks;
pub mod split;
mod transfer;

pub use account::{AccountId, AccountKind, Floor, MAX_EXTERNAL_NAME_CHARS};
pub use balance::{Balance, Totals};
pub use split::{settlement, shares, warm_bonus, Due, Settlement, Share, SplitError};
pub use transfer::{
    Entry, EntryKind, Post, Reason, StatementLine, Transfer, TransferId, TransferOutcome, TransferRecord,
    TransferState, Void, MAX_TRANSFER_ID_BYTES,
};
