//! The rules of the books, once, for every store: a working set of the accounts and transfers one
//! batch touches, to which the batch is applied in memory.
//!
//! A store loads (and on PostgreSQL locks) exactly what `ids_needed` and `accounts_needed` name,
//! builds `Books`, applies the batch, and writes back `changes()` in the same transaction. Because
//! both stores run this same code on the same inputs, they give the same results by construction;
//! the stores differ only in how they load, lock and persist.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use stacknet_protocol::{Amount, Timestamp};

use crate::error::LedgerError;
use crate::model::checks::{check_can_take, differing_field, validate};
use crate::model::{
    AccountId, Balance, Entry, EntryKind, Post, Transfer, TransferId, TransferOutcome, TransferRecord,
    TransferState, Void,
};

/// The accounts and transfers one batch touches, and what the batch did to them.
#[derive(Debug, Default)]
pub(crate) struct Books {
    accounts: BTreeMap<AccountId, Balance>,
    dirty: BTreeSet<AccountId>,
    records: HashMap<TransferId, TransferRecord>,
    /// New transfers, in the order the batch created them.
    inserted: Vec<TransferId>,
    /// Transfers that existed before the batch (loaded by the store).
    stored: HashSet<TransferId>,
    /// Holds that existed before the batch and changed state in it.
    resolved: BTreeSet<TransferId>,
}

/// What a batch changed, for the store to write back.
#[derive(Debug)]
pub(crate) struct Changes<'a> {
    pub accounts: Vec<(&'a AccountId, &'a Balance)>,
    pub inserted: Vec<&'a TransferRecord>,
    pub resolved: Vec<&'a TransferRecord>,
}

/// The transfer ids a batch must look up: its own (for idempotency) and the holds it resolves.
/// Sorted, so that stores lock them in one global order.
pub(crate) fn ids_needed(batch: &[Entry]) -> Vec<TransferId> {
    let ids: BTreeSet<&TransferId> = batch
        .iter()
        .flat_map(|e| std::iter::once(e.id()).chain(e.pending_id()))
        .collect();
    ids.into_iter().cloned().collect()
}

/// The accounts a batch touches, given the stored transfers `ids_needed` found: sorted by their text,
/// the order in which PostgreSQL locks rows, so that concurrent batches never wait on each other in a cycle.
pub(crate) fn accounts_needed(batch: &[Entry], found: &[TransferRecord]) -> Vec<AccountId> {
    let holds: BTreeSet<&TransferId> = batch.iter().filter_map(Entry::pending_id).collect();
    let mut accounts: Vec<AccountId> = batch
        .iter()
        .filter_map(|e| match e {
            Entry::Transfer(t) => Some([t.debit.clone(), t.credit.clone()]),
            Entry::Post(_) | Entry::Void(_) => None,
        })
        .chain(
            found
                .iter()
                .filter(|r| holds.contains(&r.id))
                .map(|r| [r.debit.clone(), r.credit.clone()]),
        )
        .flatten()
        .collect();
    sort_for_locking(&mut accounts);
    accounts
}

pub(crate) fn sort_for_locking(accounts: &mut Vec<AccountId>) {
    accounts.sort_by_cached_key(|a| a.to_string());
    accounts.dedup();
}

impl Books {
    /// Every account a batch may touch must be given, with a zero balance if it has none yet.
    pub fn new(
        accounts: impl IntoIterator<Item = (AccountId, Balance)>,
        records: impl IntoIterator<Item = TransferRecord>,
    ) -> Self {
        let records: HashMap<TransferId, TransferRecord> =
            records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Self {
            accounts: accounts.into_iter().collect(),
            stored: records.keys().cloned().collect(),
            records,
            ..Self::default()
        }
    }

    /// Applies a batch in order; on the first refusal returns it, and the caller discards these books.
    pub fn apply(&mut self, batch: &[Entry], now: Timestamp) -> Result<Vec<TransferOutcome>, LedgerError> {
        batch.iter().map(|entry| self.apply_one(entry, now)).collect()
    }

    fn apply_one(&mut self, entry: &Entry, now: Timestamp) -> Result<TransferOutcome, LedgerError> {
        validate(entry)?;
        if let Some(existing) = self.records.get(entry.id()) {
            return match differing_field(existing, entry) {
                None => Ok(existing.outcome(true)),
                Some(field) => Err(LedgerError::IdReused {
                    id: entry.id().clone(),
                    field,
                }),
            };
        }
        let record = match entry {
            Entry::Transfer(t) => self.transfer(t, now)?,
            Entry::Post(p) => self.resolve(&p.id, &p.pending_id, Resolution::Post(p), now)?,
            Entry::Void(v) => self.resolve(&v.id, &v.pending_id, Resolution::Void(v), now)?,
        };
        let outcome = record.outcome(false);
        self.inserted.push(record.id.clone());
        self.records.insert(record.id.clone(), record);
        Ok(outcome)
    }

    fn transfer(&mut self, t: &Transfer, now: Timestamp) -> Result<TransferRecord, LedgerError> {
        let mut debit = self.balance(&t.debit)?;
        let mut credit = self.balance(&t.credit)?;
        check_can_take(&t.id, &t.debit, &debit, t.amount)?;
        let overflow = |account: &AccountId| LedgerError::Overflow {
            id: t.id.clone(),
            account: account.clone(),
        };
        if t.pending {
            debit.debits_pending = debit
                .debits_pending
                .checked_add(t.amount)
                .ok_or_else(|| overflow(&t.debit))?;
            credit.credits_pending = credit
                .credits_pending
                .checked_add(t.amount)
                .ok_or_else(|| overflow(&t.credit))?;
        } else {
            debit.posted = debit
                .posted
                .checked_sub(t.amount)
                .ok_or_else(|| overflow(&t.debit))?;
            credit.posted = credit
                .posted
                .checked_add(t.amount)
                .ok_or_else(|| overflow(&t.credit))?;
        }
        self.store_balance(&t.debit, debit);
        self.store_balance(&t.credit, credit);
        Ok(TransferRecord {
            id: t.id.clone(),
            kind: EntryKind::Transfer,
            debit: t.debit.clone(),
            credit: t.credit.clone(),
            amount: t.amount,
            released: Amount::ZERO,
            reason: t.reason,
            pending: t.pending,
            expires_at: t.expires_at,
            pending_id: None,
            state: if t.pending {
                TransferState::Pending
            } else {
                TransferState::Posted
            },
            created_at: now,
        })
    }

    /// Posts or voids an open hold: the hold's reservation is lifted, and a post moves its amount.
    fn resolve(
        &mut self,
        id: &TransferId,
        pending_id: &TransferId,
        how: Resolution<'_>,
        now: Timestamp,
    ) -> Result<TransferRecord, LedgerError> {
        let hold = self.open_hold(id, pending_id)?;
        let (debit_id, credit_id, held) = (hold.debit.clone(), hold.credit.clone(), hold.amount);
        let (moved, reason, state) = match how {
            Resolution::Post(p) if p.amount > held => {
                return Err(LedgerError::ExceedsHold {
                    id: id.clone(),
                    pending_id: pending_id.clone(),
                    held,
                    amount: p.amount,
                })
            }
            Resolution::Post(p) => (p.amount, p.reason, TransferState::Posted),
            Resolution::Void(v) => (Amount::ZERO, v.reason, TransferState::Voided),
        };
        let (mut debit, mut credit) = self.lift_hold(&debit_id, &credit_id, held)?;
        let overflow = |account: &AccountId| LedgerError::Overflow {
            id: id.clone(),
            account: account.clone(),
        };
        debit.posted = debit
            .posted
            .checked_sub(moved)
            .ok_or_else(|| overflow(&debit_id))?;
        credit.posted = credit
            .posted
            .checked_add(moved)
            .ok_or_else(|| overflow(&credit_id))?;
        self.store_balance(&debit_id, debit);
        self.store_balance(&credit_id, credit);
        self.set_state(pending_id, state);
        let released = held
            .checked_sub(moved)
            .ok_or(LedgerError::Internal("capture above hold"))?;
        Ok(TransferRecord {
            id: id.clone(),
            kind: if state == TransferState::Posted {
                EntryKind::Post
            } else {
                EntryKind::Void
            },
            debit: debit_id,
            credit: credit_id,
            amount: if state == TransferState::Posted {
                moved
            } else {
                held
            },
            released,
            reason,
            pending: false,
            expires_at: None,
            pending_id: Some(pending_id.clone()),
            state,
            created_at: now,
        })
    }

    /// Releases holds whose deadline has passed. The store chose `ids` among open holds under its lock;
    /// any that is no longer open is skipped. Returns the ids it expired.
    pub fn expire(&mut self, ids: &[TransferId]) -> Result<Vec<TransferId>, LedgerError> {
        let mut expired = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(hold) = self.records.get(id) else {
                continue;
            };
            if !(hold.kind == EntryKind::Transfer && hold.pending && hold.state == TransferState::Pending) {
                continue;
            }
            let (debit_id, credit_id, held) = (hold.debit.clone(), hold.credit.clone(), hold.amount);
            let (debit, credit) = self.lift_hold(&debit_id, &credit_id, held)?;
            self.store_balance(&debit_id, debit);
            self.store_balance(&credit_id, credit);
            self.set_state(id, TransferState::Expired);
            expired.push(id.clone());
        }
        Ok(expired)
    }

    pub fn changes(&self) -> Changes<'_> {
        let accounts = self
            .dirty
            .iter()
            .filter_map(|a| self.accounts.get_key_value(a))
            .collect();
        let inserted = self
            .inserted
            .iter()
            .filter_map(|id| self.records.get(id))
            .collect();
        let resolved = self
            .resolved
            .iter()
            .filter_map(|id| self.records.get(id))
            .collect();
        Changes {
            accounts,
            inserted,
            resolved,
        }
    }

    fn open_hold(&self, id: &TransferId, pending_id: &TransferId) -> Result<&TransferRecord, LedgerError> {
        let hold = self
            .records
            .get(pending_id)
            .ok_or_else(|| LedgerError::PendingNotFound {
                id: id.clone(),
                pending_id: pending_id.clone(),
            })?;
        if !(hold.kind == EntryKind::Transfer && hold.pending) {
            return Err(LedgerError::NotAHold {
                id: id.clone(),
                pending_id: pending_id.clone(),
            });
        }
        if hold.state != TransferState::Pending {
            let state = hold.state;
            return Err(LedgerError::AlreadyResolved {
                id: id.clone(),
                pending_id: pending_id.clone(),
                state,
            });
        }
        Ok(hold)
    }

    /// Takes a hold's reservation off both accounts. Pending sums always include every open hold, so
    /// an underflow here means the stored books are corrupt.
    fn lift_hold(
        &self,
        debit: &AccountId,
        credit: &AccountId,
        held: Amount,
    ) -> Result<(Balance, Balance), LedgerError> {
        let corrupt = || LedgerError::Internal("an open hold exceeds its account's pending balance");
        let mut d = self.balance(debit)?;
        let mut c = self.balance(credit)?;
        d.debits_pending = d
            .debits_pending
            .checked_sub(held)
            .filter(|a| *a >= Amount::ZERO)
            .ok_or_else(corrupt)?;
        c.credits_pending = c
            .credits_pending
            .checked_sub(held)
            .filter(|a| *a >= Amount::ZERO)
            .ok_or_else(corrupt)?;
        Ok((d, c))
    }

    fn balance(&self, account: &AccountId) -> Result<Balance, LedgerError> {
        self.accounts.get(account).copied().ok_or(LedgerError::Internal(
            "an account the batch touches was not loaded",
        ))
    }

    fn store_balance(&mut self, account: &AccountId, balance: Balance) {
        self.accounts.insert(account.clone(), balance);
        self.dirty.insert(account.clone());
    }

    fn set_state(&mut self, id: &TransferId, state: TransferState) {
        if let Some(record) = self.records.get_mut(id) {
            record.state = state;
        }
        // A hold created earlier in this batch is written once, with its final state.
        if self.stored.contains(id) {
            self.resolved.insert(id.clone());
        }
    }
}

enum Resolution<'a> {
    Post(&'a Post),
    Void(&'a Void),
}

#[cfg(test)]
#[path = "books_tests.rs"]
mod tests;
