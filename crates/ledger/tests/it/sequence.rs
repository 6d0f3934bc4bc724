//! The operations a random sequence is made of, and the batches they become: what the hub does with
//! money, with amounts drawn relative to the balances the model holds so that most steps can succeed
//! and some, on purpose, cannot.

use proptest::prelude::*;
use stacknet_ledger::{AccountId, Entry, Post, Reason, Transfer, TransferId, Void};
use stacknet_protocol::{NodeKeyId, SkillId, StackId, UserId};

use crate::model::Model;
use crate::support::*;

#[derive(Clone, Debug)]
pub enum Op {
    Topup {
        user: usize,
        amount: i64,
    },
    Hold {
        user: usize,
        amount: i64,
        ttl: Option<u8>,
    },
    /// Captures `permille` of a hold's amount; above 1,000 asks for more than it holds.
    Capture {
        hold: usize,
        permille: u16,
    },
    Void {
        hold: usize,
    },
    Expire {
        advance: u8,
    },
    /// Escrow pays the parties of a split in one batch (plus the treasury's warm bonus to the node);
    /// each share is `permille / 4` of what the escrow has, so above 1,000 the batch may overdraw it.
    Split {
        node: usize,
        permille: [u16; 4],
        warm: bool,
    },
    /// A node redeems `permille` of its earnings (above 1,000: more than it has).
    Payout {
        node: usize,
        permille: u16,
    },
    /// `permille` of a node's payouts leave the books (`ok`), or fail and return to its earnings.
    PayoutSettled {
        node: usize,
        permille: u16,
        ok: bool,
    },
    Replay {
        batch: usize,
    },
    Reuse {
        batch: usize,
    },
}

/// Mostly amounts in `usual`; now and then zero, negative or near `i64::MAX`, which must be refused.
fn amount(usual: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = i64> {
    prop_oneof![
        20 => usual,
        1 => Just(0i64),
        1 => -3..0i64,
        1 => (i64::MAX - 2)..=i64::MAX,
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, amount(100..=2_000)).prop_map(|(user, amount)| Op::Topup { user, amount }),
        4 => (0..3usize, amount(1..=400), proptest::option::of(0..20u8))
            .prop_map(|(user, amount, ttl)| Op::Hold { user, amount, ttl }),
        3 => (0..8usize, 0..=1_050u16).prop_map(|(hold, permille)| Op::Capture { hold, permille }),
        1 => (0..8usize).prop_map(|hold| Op::Void { hold }),
        1 => (0..15u8).prop_map(|advance| Op::Expire { advance }),
        2 => (0..2usize, [0..=1_050u16, 0..=1_050u16, 0..=1_050u16, 0..=1_050u16], any::<bool>())
            .prop_map(|(node, permille, warm)| Op::Split { node, permille, warm }),
        1 => (0..2usize, 0..=1_050u16).prop_map(|(node, permille)| Op::Payout { node, permille }),
        1 => (0..2usize, 0..=1_050u16, any::<bool>())
            .prop_map(|(node, permille, ok)| Op::PayoutSettled { node, permille, ok }),
        1 => (0..8usize).prop_map(|batch| Op::Replay { batch }),
        1 => (0..8usize).prop_map(|batch| Op::Reuse { batch }),
    ]
}

/// The accounts one sequence plays with, and what it has done so far.
pub struct World {
    pub users: Vec<AccountId>,
    nodes: Vec<NodeKeyId>,
    stack: AccountId,
    creator: AccountId,
    pub clock: i64,
    next: u64,
    pub holds: Vec<TransferId>,
    pub applied: Vec<Vec<Entry>>,
}

impl World {
    pub fn new() -> Self {
        Self {
            users: (0..3).map(|_| AccountId::user(UserId::random())).collect(),
            nodes: (0..2).map(|_| NodeKeyId::random()).collect(),
            stack: AccountId::stack(StackId::random()),
            creator: AccountId::creator(SkillId::random()),
            clock: 1_000,
            next: 0,
            holds: Vec::new(),
            applied: Vec::new(),
        }
    }

    pub fn accounts(&self) -> Vec<AccountId> {
        let mut all = self.users.clone();
        for nk in &self.nodes {
            all.extend([AccountId::node(*nk), AccountId::payout_pending(*nk)]);
        }
        let outside = [world(), AccountId::external("payout").unwrap()];
        all.extend([
            self.stack.clone(),
            self.creator.clone(),
            AccountId::escrow(),
            AccountId::treasury(),
        ]);
        all.extend(outside);
        all
    }

    fn fresh_id(&mut self) -> TransferId {
        self.next += 1;
        id(&format!("op{}", self.next))
    }

    pub fn posted(&mut self, debit: AccountId, credit: AccountId, amount: i64, reason: Reason) -> Entry {
        Transfer::posted(self.fresh_id(), debit, credit, micros(amount), reason).into()
    }

    fn hold_id(&self, index: usize) -> TransferId {
        self.holds
            .get(index % self.holds.len().max(1))
            .cloned()
            .unwrap_or_else(|| id("no-such-hold"))
    }

    /// The batch an operation sends (None for `Expire`, which is not a batch).
    pub fn batch(&mut self, op: &Op, model: &Model) -> Option<Vec<Entry>> {
        let escrow = AccountId::escrow();
        Some(match *op {
            Op::Topup { user, amount } => {
                vec![self.posted(world(), self.users[user].clone(), amount, Reason::Topup)]
            }
            Op::Hold { user, amount, ttl } => {
                let expires = ttl.map(|t| at(self.clock + i64::from(t)));
                vec![Transfer::hold(
                    self.fresh_id(),
                    self.users[user].clone(),
                    escrow,
                    micros(amount),
                    expires,
                )
                .into()]
            }
            Op::Capture { hold, permille } => {
                let pending_id = self.hold_id(hold);
                let held = model.hold_amount(&pending_id).unwrap_or(1);
                let amount = (i128::from(held) * i128::from(permille) / 1_000).max(1);
                vec![Post::new(
                    self.fresh_id(),
                    pending_id,
                    micros(i64::try_from(amount).unwrap_or(i64::MAX)),
                )
                .into()]
            }
            Op::Void { hold } => vec![Void::new(self.fresh_id(), self.hold_id(hold)).into()],
            Op::Expire { .. } => return None,
            Op::Split { node, permille, warm } => self.split(node, permille, warm, model),
            Op::Payout { node, permille } => self.payout(node, permille, None, model),
            Op::PayoutSettled { node, permille, ok } => self.payout(node, permille, Some(ok), model),
            Op::Replay { batch } => self.applied.get(batch)?.clone(),
            Op::Reuse { batch } => vec![tweak(self.applied.get(batch)?.first()?.clone())],
        })
    }

    /// The escrow pays a split's parties in one batch, plus the treasury's warm bonus to the node.
    fn split(&mut self, node: usize, permille: [u16; 4], warm: bool, model: &Model) -> Vec<Entry> {
        let escrow = AccountId::escrow();
        let node = AccountId::node(self.nodes[node]);
        let pot = model.available(&escrow);
        let shares = permille.map(|p| share(pot, p, 4_000));
        let parties = [
            node.clone(),
            self.stack.clone(),
            self.creator.clone(),
            AccountId::treasury(),
        ];
        let mut batch: Vec<Entry> = parties
            .into_iter()
            .zip(shares)
            .filter(|(_, share)| *share > 0)
            .map(|(party, share)| self.posted(escrow.clone(), party, share, Reason::SplitShare))
            .collect();
        if warm && shares[0] > 0 {
            let bonus = share(i128::from(shares[0]), 100, 1_000);
            batch.push(self.posted(AccountId::treasury(), node, bonus, Reason::WarmBonus));
        }
        batch
    }

    /// A redemption (`settled` None: earnings to payout-pending), or its end: paid out of the books
    /// (`Some(true)`) or failed and refunded to the earnings (`Some(false)`).
    fn payout(&mut self, node: usize, permille: u16, settled: Option<bool>, model: &Model) -> Vec<Entry> {
        let nk = self.nodes[node];
        let (earnings, pending) = (AccountId::node(nk), AccountId::payout_pending(nk));
        let (from, to, reason) = match settled {
            None => (earnings, pending, Reason::Payout),
            Some(true) => (pending, AccountId::external("payout").unwrap(), Reason::Payout),
            Some(false) => (pending, earnings, Reason::Refund),
        };
        let amount = share(model.available(&from), permille, 1_000);
        vec![self.posted(from, to, amount, reason)]
    }
}

/// `permille / per` of `pot`, at least 1 (so an empty pot still yields a transfer, which is refused).
fn share(pot: i128, permille: u16, per: i128) -> i64 {
    i64::try_from((pot * i128::from(permille) / per).max(1)).unwrap_or(i64::MAX)
}

/// The same id with one field changed.
fn tweak(entry: Entry) -> Entry {
    match entry {
        Entry::Transfer(t) if t.pending => Transfer {
            expires_at: None,
            amount: micros(t.amount.micros() ^ 1),
            ..t
        }
        .into(),
        Entry::Transfer(t) => Transfer {
            reason: Reason::Reward,
            ..t
        }
        .into(),
        Entry::Post(p) => Post {
            amount: micros(p.amount.micros() + 1),
            ..p
        }
        .into(),
        Entry::Void(v) => Void {
            reason: Reason::Refund,
            ..v
        }
        .into(),
    }
}
