//! Redemption, as the hub pays a node out: its earnings move to payout-pending (`payout:<po>`), and
//! the payment system later confirms the payout, which leaves the books (`payout-confirm:<po>`, to
//! `external:payout`), or fails it, which returns the money to the earnings (`payout-return:<po>`).
//! The hub ends a payout once (a compare-and-set in its own store); what it may send twice is the
//! same ending, on a retry, which must replay.

use stacknet_ledger::{AccountId, Entry, Reason, Transfer};
use stacknet_protocol::NodeKeyId;

use crate::model::Model;
use crate::sequence::{batch, pick, Batch, Effect, Expect, World};
use crate::support::*;

/// A payout the hub started; `ended` holds the transfer that ended it.
#[derive(Clone, Debug)]
pub struct Payout {
    node: NodeKeyId,
    number: u64,
    amount: i64,
    ended: Option<Entry>,
}

impl World {
    /// What `node`'s payout-pending account must hold: its payouts not yet ended.
    pub fn open_payouts(&self, node: NodeKeyId) -> i128 {
        self.payouts
            .iter()
            .filter(|p| p.node == node && p.ended.is_none())
            .map(|p| i128::from(p.amount))
            .sum()
    }

    /// A redemption of `permille` of the available earnings of the first node, from `node` on, that
    /// has any; None when none has (the hub answers "nothing to redeem" without asking the ledger).
    pub fn payout(&mut self, node: usize, permille: u16, model: &Model) -> Option<Batch> {
        let (nk, available) = (0..self.nodes.len())
            .map(|i| self.nodes[(node + i) % self.nodes.len()])
            .map(|nk| (nk, model.available(&AccountId::node(nk))))
            .find(|(_, available)| *available > 0)?;
        let amount = i64::try_from((available * i128::from(permille) / 1_000).max(1)).unwrap_or(i64::MAX);
        let number = self.fresh_number();
        let reserve = Transfer::posted(
            id(&format!("payout:po{number}")),
            AccountId::node(nk),
            AccountId::payout_pending(nk),
            micros(amount),
            Reason::Payout,
        );
        let payout = Payout {
            node: nk,
            number,
            amount,
            ended: None,
        };
        Some(Batch {
            label: "payout",
            entries: vec![reserve.into()],
            expect: Expect::Any,
            effect: Effect::PayoutOpened(payout),
        })
    }

    /// An open payout's end: paid out of the books (`ok`), or failed and returned to the node's
    /// earnings. `retry`: the ending of a payout that ended before, sent again, which moves nothing.
    /// Either falls back on the other when there is nothing to act on.
    pub fn end_payout(&self, index: usize, ok: bool, retry: bool) -> Option<Batch> {
        let open: Vec<usize> = (0..self.payouts.len())
            .filter(|&i| self.payouts[i].ended.is_none())
            .collect();
        let ended: Vec<&Entry> = self.payouts.iter().filter_map(|p| p.ended.as_ref()).collect();
        if (retry && !ended.is_empty()) || open.is_empty() {
            let entry = (*pick(&ended, index)?).clone();
            return Some(batch("payout-retry", vec![entry], Expect::Replayed));
        }
        let &index = pick(&open, index)?;
        let p = &self.payouts[index];
        let pending = AccountId::payout_pending(p.node);
        let (label, kind, to, reason) = if ok {
            (
                "payout-confirm",
                "payout-confirm",
                AccountId::external("payout").unwrap(),
                Reason::Payout,
            )
        } else {
            (
                "payout-fail",
                "payout-return",
                AccountId::node(p.node),
                Reason::Refund,
            )
        };
        let entry: Entry = Transfer::posted(
            id(&format!("{kind}:po{}", p.number)),
            pending,
            to,
            micros(p.amount),
            reason,
        )
        .into();
        Some(Batch {
            label,
            entries: vec![entry.clone()],
            expect: Expect::Applied,
            effect: Effect::PayoutEnded(index, entry),
        })
    }
}

impl Payout {
    pub fn end(&mut self, entry: Entry) {
        self.ended = Some(entry);
    }
}
