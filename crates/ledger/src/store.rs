//! The seam between the ledger's rules and where they are kept: one trait, one implementation per
//! database, one test suite for all of them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use stacknet_protocol::{Amount, Timestamp};

use crate::error::LedgerError;
use crate::model::{
    AccountId, Balance, Entry, Post, StatementLine, Totals, TransferId, TransferOutcome, TransferRecord, Void,
};

/// Most entries in one batch (one transaction).
pub const MAX_BATCH_ENTRIES: usize = 10_000;
/// Most lines one `transfers_of` call returns.
pub const MAX_STATEMENT_LINES: u32 = 1_000;
/// Most holds one `expire_due` call releases; call again while it returns this many.
pub const MAX_EXPIRED_PER_CALL: usize = 10_000;

/// What every store method returns: boxed so that the trait stays object-safe and a hub can choose
/// its store at run time (`Arc<dyn LedgerStore>`); one allocation per call is noise next to a
/// database round trip.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// A double-entry ledger. Every implementation gives the same results for the same calls.
///
/// Writes are atomic per batch and safe under any concurrency: two callers (tasks, or hubs sharing
/// one database) holding against the same balance never overdraw it.
pub trait LedgerStore: Send + Sync + fmt::Debug {
    /// Applies a batch in order, all of it or none of it. On success, one outcome per entry, in order;
    /// an entry whose id was applied before with identical fields gets that first outcome again with
    /// `replayed: true` and moves nothing. On a refusal, the error names the entry and the reason, and
    /// nothing in the batch was applied.
    fn create_transfers(&self, batch: Vec<Entry>) -> StoreFuture<'_, Vec<TransferOutcome>>;

    /// Captures `amount` of the open hold `pending_id` (at most what it holds) and releases the rest.
    fn post(
        &self,
        id: TransferId,
        pending_id: TransferId,
        amount: Amount,
    ) -> StoreFuture<'_, TransferOutcome> {
        single(self.create_transfers(vec![Post::new(id, pending_id, amount).into()]))
    }

    /// Releases the whole of the open hold `pending_id`.
    fn void(&self, id: TransferId, pending_id: TransferId) -> StoreFuture<'_, TransferOutcome> {
        single(self.create_transfers(vec![Void::new(id, pending_id).into()]))
    }

    /// Releases every open hold whose `expires_at` is at or before `now` (at most
    /// `MAX_EXPIRED_PER_CALL` per call, earliest deadline first) and returns their ids in that order.
    /// A hold posted or voided first is not touched: whichever reaches the store first resolves it.
    fn expire_due(&self, now: Timestamp) -> StoreFuture<'_, Vec<TransferId>>;

    /// The balance of one account; zero for an account that never moved money.
    fn balance(&self, account: AccountId) -> StoreFuture<'_, Balance> {
        let balances = self.balances(vec![account]);
        Box::pin(async move {
            balances
                .await?
                .pop()
                .ok_or(LedgerError::Internal("balances returned nothing for one account"))
        })
    }

    /// The balances of several accounts, in the order asked, read together.
    fn balances(&self, accounts: Vec<AccountId>) -> StoreFuture<'_, Vec<Balance>>;

    /// One stored transfer, with the current state of a hold.
    fn transfer(&self, id: TransferId) -> StoreFuture<'_, Option<TransferRecord>>;

    /// An account's statement: the transfers that debit or credit it, oldest first, after `after`
    /// (a `seq` from an earlier page), at most `limit` (and never more than `MAX_STATEMENT_LINES`).
    /// On PostgreSQL `seq` is drawn when a transfer is inserted, not when it commits, so a reader
    /// paging while other replicas write may see seq 7 before a concurrent seq 6 commits: page
    /// statements of settled history, or re-read the last page.
    fn transfers_of(
        &self,
        account: AccountId,
        limit: u32,
        after: Option<u64>,
    ) -> StoreFuture<'_, Vec<StatementLine>>;

    /// Totals over the whole books, read in one snapshot, for invariant checks (`Totals::is_balanced`).
    fn sum_check(&self) -> StoreFuture<'_, Totals>;
}

fn single(outcomes: StoreFuture<'_, Vec<TransferOutcome>>) -> StoreFuture<'_, TransferOutcome> {
    Box::pin(async move {
        outcomes
            .await?
            .pop()
            .ok_or(LedgerError::Internal("a batch of one returned no outcome"))
    })
}

pub(crate) fn check_batch_len(batch: &[Entry]) -> Result<(), LedgerError> {
    if batch.len() > MAX_BATCH_ENTRIES {
        return Err(LedgerError::BatchTooLarge {
            len: batch.len(),
            max: MAX_BATCH_ENTRIES,
        });
    }
    Ok(())
}

/// `limit` bounded to `MAX_STATEMENT_LINES`, `after` as the stores compare it.
pub(crate) fn page(limit: u32, after: Option<u64>) -> (i64, i64) {
    let limit = i64::from(limit.min(MAX_STATEMENT_LINES));
    let after = after.map_or(0, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
    (limit, after)
}
