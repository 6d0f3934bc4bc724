//! The checks `books` makes on one entry: its shape, a debit against its account's floor, and a
//! repeated id against what was stored under it.

use stacknet_protocol::Amount;

use crate::error::LedgerError;
use crate::model::{AccountId, Balance, Entry, EntryKind, Floor, TransferId, TransferRecord};

/// Checks that need nothing but the entry itself.
pub(crate) fn validate(entry: &Entry) -> Result<(), LedgerError> {
    match entry {
        Entry::Transfer(t) => {
            if t.amount <= Amount::ZERO {
                return Err(LedgerError::NotPositive {
                    id: t.id.clone(),
                    amount: t.amount,
                });
            }
            if t.debit == t.credit {
                return Err(LedgerError::SameAccount {
                    id: t.id.clone(),
                    account: t.debit.clone(),
                });
            }
            if t.expires_at.is_some() && !t.pending {
                return Err(LedgerError::ExpiryWithoutHold { id: t.id.clone() });
            }
        }
        Entry::Post(p) if p.amount <= Amount::ZERO => {
            return Err(LedgerError::NotPositive {
                id: p.id.clone(),
                amount: p.amount,
            });
        }
        Entry::Post(_) | Entry::Void(_) => {}
    }
    Ok(())
}

/// A debit (posted or held) may not take an account below its floor, nor its available balance
/// outside what an i64 can hold.
pub(crate) fn check_can_take(
    id: &TransferId,
    account: &AccountId,
    balance: &Balance,
    amount: Amount,
) -> Result<(), LedgerError> {
    let after = balance.available_wide() - i128::from(amount.micros());
    match account.floor() {
        Floor::Zero if after < 0 => Err(LedgerError::InsufficientFunds {
            id: id.clone(),
            account: account.clone(),
            available: balance.available(),
            amount,
        }),
        _ if after < i128::from(i64::MIN) => Err(LedgerError::Overflow {
            id: id.clone(),
            account: account.clone(),
        }),
        _ => Ok(()),
    }
}

/// The first field, in a fixed order, in which a repeated id's entry differs from what was stored.
pub(crate) fn differing_field(stored: &TransferRecord, entry: &Entry) -> Option<&'static str> {
    let expected_kind = match entry {
        Entry::Transfer(_) => EntryKind::Transfer,
        Entry::Post(_) => EntryKind::Post,
        Entry::Void(_) => EntryKind::Void,
    };
    if stored.kind != expected_kind {
        return Some("kind");
    }
    let checks: Vec<(&'static str, bool)> = match entry {
        Entry::Transfer(t) => vec![
            ("debit", stored.debit == t.debit),
            ("credit", stored.credit == t.credit),
            ("amount", stored.amount == t.amount),
            ("reason", stored.reason == t.reason),
            ("pending", stored.pending == t.pending),
            ("expires_at", stored.expires_at == t.expires_at),
        ],
        Entry::Post(p) => vec![
            ("pending_id", stored.pending_id.as_ref() == Some(&p.pending_id)),
            ("amount", stored.amount == p.amount),
            ("reason", stored.reason == p.reason),
        ],
        Entry::Void(v) => vec![
            ("pending_id", stored.pending_id.as_ref() == Some(&v.pending_id)),
            ("reason", stored.reason == v.reason),
        ],
    };
    checks.into_iter().find(|(_, same)| !same).map(|(field, _)| field)
}
