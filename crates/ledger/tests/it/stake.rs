//! Bonds, as the hub moves them for a node's signed stake requests: `bond` moves earnings to the
//! stake (`stake_bond`), `unbond` moves stake to unbonding (`unbond`), and `withdraw` moves what is
//! unbonding back to the earnings (`unbond`). The hub refuses a withdrawal of nothing before the
//! ledger, as it does here; everything else goes to the ledger, which refuses what a balance
//! cannot cover. Each node's stake and unbonding balances are held against what the applied
//! transfers moved.

use stacknet_ledger::{AccountId, Entry, Reason, Transfer};
use stacknet_protocol::NodeKeyId;

use crate::model::Model;
use crate::sequence::{batch, Batch, Expect, World};
use crate::support::*;

/// Which way a stake transfer moves money.
#[derive(Clone, Copy, Debug)]
pub enum Move {
    Bond,
    Unbond,
    Withdraw,
}

impl World {
    /// `permille` of a node's available balance in the account a `kind` move debits (at least 1, so
    /// an empty account is asked for something and refuses); a withdrawal takes all of it, and none
    /// when there is nothing to withdraw.
    pub fn stake_move(&mut self, kind: Move, node: usize, permille: u16, model: &Model) -> Option<Batch> {
        // The first node from `node` on with something to move (as the hub's callers mostly have),
        // else `node` itself, whose empty account refuses.
        let debit_of = |nk: NodeKeyId| match kind {
            Move::Bond => AccountId::node(nk),
            Move::Unbond => AccountId::stake(nk),
            Move::Withdraw => AccountId::unbonding(nk),
        };
        let count = self.nodes.len();
        let nk = (0..count)
            .map(|i| self.nodes[(node + i) % count])
            .find(|nk| model.available(&debit_of(*nk)) > 0)
            .unwrap_or(self.nodes[node % count]);
        let (debit, credit, reason, label) = match kind {
            Move::Bond => (
                AccountId::node(nk),
                AccountId::stake(nk),
                Reason::StakeBond,
                "bond",
            ),
            Move::Unbond => (
                AccountId::stake(nk),
                AccountId::unbonding(nk),
                Reason::Unbond,
                "unbond",
            ),
            Move::Withdraw => (
                AccountId::unbonding(nk),
                AccountId::node(nk),
                Reason::Unbond,
                "withdraw",
            ),
        };
        let available = model.available(&debit);
        let amount = match kind {
            Move::Withdraw if available <= 0 => return None,
            Move::Withdraw => available,
            _ => (available * i128::from(permille) / 1_000).max(1),
        };
        let number = self.fresh_number();
        let transfer = Transfer::posted(
            id(&format!("{label}:{number}")),
            debit,
            credit,
            micros(i64::try_from(amount).unwrap_or(i64::MAX)),
            reason,
        );
        Some(batch(label, vec![transfer.into()], Expect::Any))
    }

    /// Follows an applied stake transfer, so the runner can hold the books against it.
    pub fn record_stake(&mut self, entry: &Entry) {
        let Entry::Transfer(t) = entry else { return };
        for (i, nk) in self.nodes.iter().enumerate() {
            let amount = i128::from(t.amount.micros());
            if t.credit == AccountId::stake(*nk) {
                self.staked[i] += amount;
            }
            if t.debit == AccountId::stake(*nk) {
                self.staked[i] -= amount;
            }
            if t.credit == AccountId::unbonding(*nk) {
                self.unbonding[i] += amount;
            }
            if t.debit == AccountId::unbonding(*nk) {
                self.unbonding[i] -= amount;
            }
        }
    }

    /// What `node`'s stake and unbonding accounts must hold.
    pub fn stake_of(&self, node: NodeKeyId) -> (i128, i128) {
        let i = self.nodes.iter().position(|n| *n == node).unwrap_or(0);
        (self.staked[i], self.unbonding[i])
    }
}
