//! A deliberately naive ledger, written apart from the crate's `books`, that the property test holds
//! the stores against: 128-bit sums, a whole copy of the state per batch, no cleverness.

use std::collections::{BTreeMap, HashMap};

use stacknet_ledger::{
    AccountId, AccountKind, Amount, Entry, LedgerError, Timestamp, Transfer, TransferId, TransferOutcome,
    TransferState,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub posted: i128,
    pub debits_pending: i128,
    pub credits_pending: i128,
}

#[derive(Clone, Debug)]
struct Stored {
    entry: Entry,
    outcome: TransferOutcome,
    /// For holds: where the hold stands now.
    state: TransferState,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub accounts: BTreeMap<AccountId, Sums>,
    transfers: HashMap<TransferId, Stored>,
}

impl Model {
    /// All or nothing: works on a copy and keeps it only if every entry succeeds.
    pub fn apply(&mut self, batch: &[Entry]) -> Result<Vec<TransferOutcome>, LedgerError> {
        let mut next = self.clone();
        let outcomes = batch
            .iter()
            .map(|e| next.apply_one(e))
            .collect::<Result<Vec<_>, _>>()?;
        *self = next;
        Ok(outcomes)
    }

    /// Open holds due at `now`, earliest deadline first, then by id.
    pub fn expire_due(&mut self, now: Timestamp) -> Vec<TransferId> {
        let mut due: Vec<(Timestamp, TransferId)> = self
            .transfers
            .values()
            .filter(|s| s.state == TransferState::Pending)
            .filter_map(|s| match &s.entry {
                Entry::Transfer(t) => t.expires_at.filter(|at| *at <= now).map(|at| (at, t.id.clone())),
                _ => None,
            })
            .collect();
        due.sort();
        for (_, id) in &due {
            let (debit, credit, amount) = self.hold_parts(id);
            self.sums(&debit).debits_pending -= amount;
            self.sums(&credit).credits_pending -= amount;
            self.transfers.get_mut(id).unwrap().state = TransferState::Expired;
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    pub fn balance(&self, account: &AccountId) -> Sums {
        self.accounts.get(account).copied().unwrap_or_default()
    }

    pub fn open_holds(&self) -> (u64, i128) {
        let open: Vec<i128> = self
            .transfers
            .values()
            .filter(|s| s.state == TransferState::Pending)
            .map(|s| i128::from(s.outcome.amount.micros()))
            .collect();
        (open.len() as u64, open.iter().sum())
    }

    /// Whether a transfer with this id was applied.
    pub fn contains(&self, id: &TransferId) -> bool {
        self.transfers.contains_key(id)
    }

    /// Whether `id` is a hold still open.
    pub fn is_open(&self, id: &TransferId) -> bool {
        self.transfers
            .get(id)
            .is_some_and(|s| s.state == TransferState::Pending)
    }

    pub fn hold_amount(&self, id: &TransferId) -> Option<i64> {
        match self.transfers.get(id).map(|s| &s.entry) {
            Some(Entry::Transfer(t)) if t.pending => Some(t.amount.micros()),
            _ => None,
        }
    }

    fn apply_one(&mut self, entry: &Entry) -> Result<TransferOutcome, LedgerError> {
        check_shape(entry)?;
        if let Some(stored) = self.transfers.get(entry.id()) {
            if let Some(field) = first_difference(&stored.entry, entry) {
                return Err(LedgerError::IdReused {
                    id: entry.id().clone(),
                    field,
                });
            }
            return Ok(TransferOutcome {
                replayed: true,
                ..stored.outcome.clone()
            });
        }
        let outcome = match entry {
            Entry::Transfer(t) => self.transfer(t)?,
            Entry::Post(p) => self.resolve(&p.id, &p.pending_id, Some(p.amount.micros()))?,
            Entry::Void(v) => self.resolve(&v.id, &v.pending_id, None)?,
        };
        let state = outcome.state;
        self.transfers.insert(
            entry.id().clone(),
            Stored {
                entry: entry.clone(),
                outcome: outcome.clone(),
                state,
            },
        );
        Ok(outcome)
    }

    /// A transfer, posted at once or held: refused below the debit's floor or past 64 bits.
    fn transfer(&mut self, t: &Transfer) -> Result<TransferOutcome, LedgerError> {
        let available = self.available(&t.debit);
        let amount = i128::from(t.amount.micros());
        if t.debit.kind() != AccountKind::External && available < amount {
            return Err(LedgerError::InsufficientFunds {
                id: t.id.clone(),
                account: t.debit.clone(),
                available: Amount::from_micros(available as i64),
                amount: t.amount,
            });
        }
        let overflow = |account: &AccountId| LedgerError::Overflow {
            id: t.id.clone(),
            account: account.clone(),
        };
        if available - amount < i128::from(i64::MIN) {
            return Err(overflow(&t.debit));
        }
        let (d, c) = (self.balance(&t.debit), self.balance(&t.credit));
        let (d_new, c_new) = if t.pending {
            (d.debits_pending + amount, c.credits_pending + amount)
        } else {
            (d.posted - amount, c.posted + amount)
        };
        if !fits(d_new) {
            return Err(overflow(&t.debit));
        }
        if !fits(c_new) {
            return Err(overflow(&t.credit));
        }
        if t.pending {
            self.sums(&t.debit).debits_pending = d_new;
            self.sums(&t.credit).credits_pending = c_new;
        } else {
            self.sums(&t.debit).posted = d_new;
            self.sums(&t.credit).posted = c_new;
        }
        let state = if t.pending {
            TransferState::Pending
        } else {
            TransferState::Posted
        };
        Ok(outcome(&t.id, &t.debit, &t.credit, t.amount.micros(), 0, state))
    }

    /// A post (`capture` = Some) or a void (None) of an open hold.
    fn resolve(
        &mut self,
        id: &TransferId,
        pending_id: &TransferId,
        capture: Option<i64>,
    ) -> Result<TransferOutcome, LedgerError> {
        let (id, pid) = (id.clone(), pending_id.clone());
        let stored = self
            .transfers
            .get(pending_id)
            .ok_or(LedgerError::PendingNotFound {
                id: id.clone(),
                pending_id: pid.clone(),
            })?;
        if self.hold_amount(pending_id).is_none() {
            return Err(LedgerError::NotAHold { id, pending_id: pid });
        }
        if stored.state != TransferState::Pending {
            return Err(LedgerError::AlreadyResolved {
                id,
                pending_id: pid,
                state: stored.state,
            });
        }
        let (debit, credit, held) = self.hold_parts(pending_id);
        let moved = i128::from(capture.unwrap_or(0));
        if moved > held {
            return Err(LedgerError::ExceedsHold {
                id,
                pending_id: pid,
                held: Amount::from_micros(held as i64),
                amount: Amount::from_micros(moved as i64),
            });
        }
        if !fits(self.balance(&credit).posted + moved) {
            return Err(LedgerError::Overflow { id, account: credit });
        }
        let d = self.sums(&debit);
        d.debits_pending -= held;
        d.posted -= moved;
        let c = self.sums(&credit);
        c.credits_pending -= held;
        c.posted += moved;
        let state = if capture.is_some() {
            TransferState::Posted
        } else {
            TransferState::Voided
        };
        self.transfers.get_mut(pending_id).unwrap().state = state;
        let amount = if capture.is_some() { moved } else { held };
        Ok(outcome(
            &id,
            &debit,
            &credit,
            amount as i64,
            (held - moved) as i64,
            state,
        ))
    }

    fn hold_parts(&self, id: &TransferId) -> (AccountId, AccountId, i128) {
        let stored = &self.transfers[id];
        (
            stored.outcome.debit.clone(),
            stored.outcome.credit.clone(),
            i128::from(stored.outcome.amount.micros()),
        )
    }

    pub fn available(&self, account: &AccountId) -> i128 {
        let s = self.balance(account);
        s.posted - s.debits_pending
    }

    fn sums(&mut self, account: &AccountId) -> &mut Sums {
        self.accounts.entry(account.clone()).or_default()
    }
}

fn fits(value: i128) -> bool {
    i64::try_from(value).is_ok()
}

fn outcome(
    id: &TransferId,
    debit: &AccountId,
    credit: &AccountId,
    amount: i64,
    released: i64,
    state: TransferState,
) -> TransferOutcome {
    TransferOutcome {
        id: id.clone(),
        debit: debit.clone(),
        credit: credit.clone(),
        amount: Amount::from_micros(amount),
        released: Amount::from_micros(released),
        state,
        replayed: false,
    }
}

fn check_shape(entry: &Entry) -> Result<(), LedgerError> {
    match entry {
        Entry::Transfer(t) if t.amount.micros() <= 0 => Err(LedgerError::NotPositive {
            id: t.id.clone(),
            amount: t.amount,
        }),
        Entry::Transfer(t) if t.debit == t.credit => Err(LedgerError::SameAccount {
            id: t.id.clone(),
            account: t.debit.clone(),
        }),
        Entry::Transfer(t) if t.expires_at.is_some() && !t.pending => {
            Err(LedgerError::ExpiryWithoutHold { id: t.id.clone() })
        }
        Entry::Post(p) if p.amount.micros() <= 0 => Err(LedgerError::NotPositive {
            id: p.id.clone(),
            amount: p.amount,
        }),
        _ => Ok(()),
    }
}

/// The documented order: kind, then the entry's own fields in declaration order.
fn first_difference(stored: &Entry, new: &Entry) -> Option<&'static str> {
    match (stored, new) {
        (Entry::Transfer(a), Entry::Transfer(b)) => [
            ("debit", a.debit == b.debit),
            ("credit", a.credit == b.credit),
            ("amount", a.amount == b.amount),
            ("reason", a.reason == b.reason),
            ("pending", a.pending == b.pending),
            ("expires_at", a.expires_at == b.expires_at),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(f, _)| f),
        (Entry::Post(a), Entry::Post(b)) => [
            ("pending_id", a.pending_id == b.pending_id),
            ("amount", a.amount == b.amount),
            ("reason", a.reason == b.reason),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(f, _)| f),
        (Entry::Void(a), Entry::Void(b)) => [
            ("pending_id", a.pending_id == b.pending_id),
            ("reason", a.reason == b.reason),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(f, _)| f),
        _ => Some("kind"),
    }
}
