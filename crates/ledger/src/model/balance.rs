//! Balances of one account and totals over the whole books.

use serde::{Deserialize, Serialize};
use stacknet_protocol::Amount;

/// One account's balance, credit-normal: money paid in is positive.
///
/// As in TigerBeetle, pending amounts are kept apart from posted ones: a hold raises the debit
/// account's `debits_pending` and the credit account's `credits_pending`, and leaves `posted` alone
/// until it is posted. Money on its way in is not yet spendable; money on its way out already is not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balance {
    /// Credits minus debits of everything posted.
    pub posted: Amount,
    /// Open holds on this account (money reserved to leave it).
    pub debits_pending: Amount,
    /// Open holds in favour of this account (money reserved to arrive).
    pub credits_pending: Amount,
}

impl Balance {
    /// What the account can still spend: `posted - debits_pending`. The books refuse any change that
    /// would make this overflow, so for a stored balance it is always exact.
    pub fn available(&self) -> Amount {
        let micros = i128::from(self.posted.micros()) - i128::from(self.debits_pending.micros());
        Amount::from_micros(i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX }))
    }

    /// `available` in 128 bits, where it cannot overflow.
    pub(crate) fn available_wide(&self) -> i128 {
        i128::from(self.posted.micros()) - i128::from(self.debits_pending.micros())
    }

    pub fn is_zero(&self) -> bool {
        *self == Balance::default()
    }
}

/// Sums over every account and every open hold, for invariant checks and audits.
///
/// Sums are 128-bit: each balance fits an i64, but a sum of many need not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Accounts that have ever moved money.
    pub accounts: u64,
    /// Sum of `posted` over all accounts: zero, because every transfer debits one and credits another.
    pub posted: i128,
    /// Sum of `debits_pending` over all accounts.
    pub debits_pending: i128,
    /// Sum of `credits_pending` over all accounts: equals `debits_pending`.
    pub credits_pending: i128,
    /// Open holds and the sum of their amounts: equals `debits_pending`.
    pub open_holds: u64,
    pub open_hold_amount: i128,
    /// Accounts whose available balance is below their kind's floor: zero.
    pub below_floor: u64,
}

impl Totals {
    /// Whether every invariant of the books holds.
    pub fn is_balanced(&self) -> bool {
        self.posted == 0
            && self.debits_pending == self.credits_pending
            && self.debits_pending == self.open_hold_amount
            && self.below_floor == 0
    }
}
