//! The operations a random sequence is made of, and the batches they become: what the hub does with
//! money, with amounts drawn relative to the balances the model holds so that most steps can succeed
//! and some, on purpose, cannot. `World` also keeps what the hub itself would remember (top-up
//! events, captured paperwork waiting to be filed, open payouts), which the runner checks the escrow
//! and the payout-pending accounts against. Filing is planned in `filing.rs`.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use stacknet_ledger::{
    AccountId, Entry, LedgerError, Post, Reason, Transfer, TransferId, TransferOutcome, Void,
};
use stacknet_protocol::{NodeKeyId, PaperworkId, SkillId, StackId};

use crate::filing::{terms, Captured, Terms};
use crate::model::Model;
use crate::payout::Payout;
use crate::support::*;

/// Stacks that pay for requests and are named as parties of splits; top-up target `STACKS` is the treasury.
pub const STACKS: usize = 3;
pub const NODES: usize = 2;
/// Skills a contract may credit (to their creators' accounts).
pub const SKILLS: usize = 3;

#[derive(Clone, Debug)]
pub enum Op {
    /// Money in from outside, to a stack, the treasury (`STACKS`) or a node's earnings (beyond),
    /// under a new event id; or an earlier top-up's
    /// event sent again (`again`: which one, and whether with the same amount or another).
    Topup {
        to: usize,
        amount: i64,
        again: Option<(usize, bool)>,
    },
    /// Admission: a stack's balance held in favour of the escrow.
    Hold {
        stack: usize,
        amount: i64,
        ttl: Option<u8>,
    },
    /// A task from admission to acceptance: a hold, then the capture of `permille` of it.
    Task {
        stack: usize,
        amount: i64,
        ttl: Option<u8>,
        permille: u16,
    },
    /// Captures `permille` of an open hold's amount; above 1,000 asks for more than it holds.
    /// `stale`: of any hold taken so far, open or not (a late capture, after an expiry, say).
    Capture {
        hold: usize,
        permille: u16,
        stale: bool,
    },
    Void {
        hold: usize,
        stale: bool,
    },
    Expire {
        advance: u8,
    },
    /// Files captured paperwork under a contract (`again`: paperwork filed before, as the hub's
    /// recovery sends a settlement again).
    File {
        paperwork: usize,
        again: bool,
        terms: Terms,
    },
    /// A node redeems `permille` of its earnings (above 1,000: more than it has); the first node
    /// from `node` on that has any, as the hub refuses a redemption of nothing before the ledger.
    Payout {
        node: usize,
        permille: u16,
    },
    /// The payment system confirms (`ok`) or fails an open payout; `retry`: the hub sends the end of
    /// a payout that ended before again.
    PayoutSettled {
        payout: usize,
        ok: bool,
        retry: bool,
    },
    /// A node's stake: bond or unbond `permille` of what it can (above 1,000: more than it has), or
    /// withdraw everything unbonding.
    Stake {
        kind: crate::stake::Move,
        node: usize,
        permille: u16,
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

fn ttl() -> impl Strategy<Value = Option<u8>> {
    proptest::option::of(0..20u8)
}

/// Now and then, act on something already resolved.
fn stale() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.2)
}

pub fn op() -> impl Strategy<Value = Op> {
    let again = prop_oneof![2 => Just(None), 1 => (0..8usize, any::<bool>()).prop_map(Some)];
    prop_oneof![
        2 => (0..=STACKS + NODES, amount(100..=2_000), again)
            .prop_map(|(to, amount, again)| Op::Topup { to, amount, again }),
        2 => (0..STACKS, amount(1..=400), ttl())
            .prop_map(|(stack, amount, ttl)| Op::Hold { stack, amount, ttl }),
        3 => (0..STACKS, amount(1..=400), ttl(), 0..=1_050u16)
            .prop_map(|(stack, amount, ttl, permille)| Op::Task { stack, amount, ttl, permille }),
        2 => (0..8usize, 0..=1_050u16, stale())
            .prop_map(|(hold, permille, stale)| Op::Capture { hold, permille, stale }),
        1 => (0..8usize, stale()).prop_map(|(hold, stale)| Op::Void { hold, stale }),
        1 => (0..15u8).prop_map(|advance| Op::Expire { advance }),
        4 => (0..8usize, prop::bool::weighted(0.25), terms())
            .prop_map(|(paperwork, again, terms)| Op::File { paperwork, again, terms }),
        3 => (0..NODES, 0..=1_050u16).prop_map(|(node, permille)| Op::Payout { node, permille }),
        3 => (0..8usize, any::<bool>(), stale())
            .prop_map(|(payout, ok, retry)| Op::PayoutSettled { payout, ok, retry }),
        3 => (stake_move(), 0..NODES, 0..=1_050u16)
            .prop_map(|(kind, node, permille)| Op::Stake { kind, node, permille }),
        1 => (0..8usize).prop_map(|batch| Op::Replay { batch }),
        1 => (0..8usize).prop_map(|batch| Op::Reuse { batch }),
    ]
}

fn stake_move() -> impl Strategy<Value = crate::stake::Move> {
    use crate::stake::Move;
    prop_oneof![Just(Move::Bond), Just(Move::Unbond), Just(Move::Withdraw)]
}

/// One batch an operation sends: what it is called in the tally, what the hub expects of it beyond
/// agreeing with the model, and what the hub records when it is applied.
#[derive(Debug)]
pub struct Batch {
    pub label: &'static str,
    pub entries: Vec<Entry>,
    pub expect: Expect,
    pub effect: Effect,
}

#[derive(Clone, Copy, Debug)]
pub enum Expect {
    Any,
    /// Applied, every entry for the first time (refused only if a balance would overflow).
    Applied,
    /// Every entry seen before with the same fields: nothing moves.
    Replayed,
    /// Refused: the id was used before with a different `field`.
    Reused(&'static str),
    /// A warm bonus: paid, or refused because the treasury is short.
    BonusOrShort,
}

impl Expect {
    pub fn met_by(self, got: &Result<Vec<TransferOutcome>, LedgerError>) -> bool {
        match (self, got) {
            (Expect::Any, _) => true,
            (Expect::Applied, Ok(outcomes)) => outcomes.iter().all(|o| !o.replayed),
            (Expect::Applied | Expect::BonusOrShort, Err(LedgerError::Overflow { .. })) => true,
            (Expect::Replayed, Ok(outcomes)) => outcomes.iter().all(|o| o.replayed),
            (Expect::Reused(want), Err(LedgerError::IdReused { field, .. })) => want == *field,
            (Expect::BonusOrShort, Ok(_)) => true,
            (Expect::BonusOrShort, Err(LedgerError::InsufficientFunds { account, .. })) => {
                *account == AccountId::treasury()
            }
            _ => false,
        }
    }
}

/// What the hub records once a batch is applied.
#[derive(Debug)]
pub enum Effect {
    None,
    /// Paperwork `captures[index]` is filed: its cost has left the escrow.
    Filed(usize, crate::filing::Filing),
    /// Earnings moved to payout-pending, waiting for the payment system.
    PayoutOpened(Payout),
    /// `payouts[index]` ended with this transfer (confirmed or returned).
    PayoutEnded(usize, Entry),
}

/// The accounts one sequence plays with, and what the hub has done so far.
pub struct World {
    pub stacks: Vec<StackId>,
    pub nodes: Vec<NodeKeyId>,
    /// Sorted, as a contract lists them.
    pub skills: Vec<SkillId>,
    pub clock: i64,
    next: u64,
    holds: Vec<TransferId>,
    applied: Vec<Vec<Entry>>,
    /// Every top-up sent, applied or not: the hub's events.
    topups: Vec<Entry>,
    pub captures: Vec<Captured>,
    pub payouts: Vec<Payout>,
    /// Per node: what its applied stake transfers put in its stake and unbonding accounts.
    pub staked: Vec<i128>,
    pub unbonding: Vec<i128>,
}

impl World {
    pub fn new() -> Self {
        let mut skills: Vec<SkillId> = (0..SKILLS).map(|_| SkillId::random()).collect();
        skills.sort();
        Self {
            stacks: (0..STACKS).map(|_| StackId::random()).collect(),
            nodes: (0..NODES).map(|_| NodeKeyId::random()).collect(),
            skills,
            clock: 1_000,
            next: 0,
            holds: Vec::new(),
            applied: Vec::new(),
            topups: Vec::new(),
            captures: Vec::new(),
            payouts: Vec::new(),
            staked: vec![0; NODES],
            unbonding: vec![0; NODES],
        }
    }

    pub fn accounts(&self) -> Vec<AccountId> {
        let mut all: Vec<AccountId> = self.stacks.iter().map(|s| AccountId::stack(*s)).collect();
        for nk in &self.nodes {
            all.extend([
                AccountId::node(*nk),
                AccountId::payout_pending(*nk),
                AccountId::stake(*nk),
                AccountId::unbonding(*nk),
            ]);
        }
        all.extend(self.skills.iter().map(|s| AccountId::creator(*s)));
        all.extend([
            AccountId::escrow(),
            AccountId::treasury(),
            world(),
            AccountId::external("payout").unwrap(),
        ]);
        all
    }

    /// What the escrow must hold: the cost of every capture not yet filed.
    pub fn awaiting_filing(&self) -> i128 {
        self.captures
            .iter()
            .filter(|c| c.filing.is_none())
            .map(|c| i128::from(c.amount))
            .sum()
    }

    /// A number not used before in this sequence, for ids.
    pub fn fresh_number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn fresh_id(&mut self, kind: &str) -> TransferId {
        let n = self.fresh_number();
        id(&format!("{kind}:{n}"))
    }

    /// Every sequence starts with its stacks and nodes funded, so that most of what follows can succeed.
    pub fn funding(&mut self) -> Batch {
        // Nodes' earnings too, so that bonds can move from the start.
        let nodes = (STACKS + 1..=STACKS + NODES).map(|n| (n, 300));
        let entries = (0..STACKS)
            .map(|s| (s, 1_000))
            .chain(nodes)
            .map(|(to, amount)| self.topup(to, amount))
            .collect();
        batch("fund", entries, Expect::Applied)
    }

    /// The batches an operation sends, in order; the runner stops at the first refused. None for
    /// `Expire` (not a batch) nor for an operation with nothing to act on yet.
    pub fn plan(&mut self, op: &Op, model: &Model) -> Result<Vec<Batch>, TestCaseError> {
        let one = |b: Batch| -> Result<Vec<Batch>, TestCaseError> { Ok(vec![b]) };
        match *op {
            Op::Topup { to, amount, again } => one(self.topup_again(to, amount, again, model)),
            Op::Hold { stack, amount, ttl } => {
                let hold = self.hold(stack, amount, ttl);
                one(batch("hold", vec![hold], Expect::Any))
            }
            Op::Task {
                stack,
                amount,
                ttl,
                permille,
            } => {
                let hold = self.hold(stack, amount, ttl);
                let capture = self.capture(hold.id().clone(), amount, permille);
                Ok(vec![
                    batch("hold", vec![hold], Expect::Any),
                    batch("capture", vec![capture], Expect::Any),
                ])
            }
            Op::Capture {
                hold,
                permille,
                stale,
            } => {
                let Some(pending_id) = self.hold_id(hold, stale, model) else {
                    return Ok(vec![]);
                };
                let held = model.hold_amount(&pending_id).unwrap_or(1);
                let capture = self.capture(pending_id, held, permille);
                one(batch("capture", vec![capture], Expect::Any))
            }
            Op::Void { hold, stale } => {
                let Some(pending_id) = self.hold_id(hold, stale, model) else {
                    return Ok(vec![]);
                };
                let void = Void::new(self.fresh_id("release"), pending_id);
                one(batch("void", vec![void.into()], Expect::Any))
            }
            Op::Expire { .. } => Ok(vec![]),
            Op::File {
                paperwork,
                again,
                ref terms,
            } => self.file(paperwork, again, terms),
            Op::Payout { node, permille } => Ok(self.payout(node, permille, model).into_iter().collect()),
            Op::PayoutSettled { payout, ok, retry } => {
                Ok(self.end_payout(payout, ok, retry).into_iter().collect())
            }
            Op::Stake { kind, node, permille } => {
                Ok(self.stake_move(kind, node, permille, model).into_iter().collect())
            }
            Op::Replay { batch: n } => Ok(pick(&self.applied, n)
                .map(|b| batch("replay", b.clone(), Expect::Replayed))
                .into_iter()
                .collect()),
            Op::Reuse { batch: n } => Ok(pick(&self.applied, n)
                .and_then(|b| b.first())
                .map(|e| {
                    let (entry, field) = tweak(e.clone());
                    batch("reuse", vec![entry], Expect::Reused(field))
                })
                .into_iter()
                .collect()),
        }
    }

    /// Records what an applied batch did, as the hub would.
    pub fn record(&mut self, sent: Batch, outcomes: &[TransferOutcome]) {
        if outcomes.iter().all(|o| o.replayed) {
            return;
        }
        for (entry, outcome) in sent.entries.iter().zip(outcomes).filter(|(_, o)| !o.replayed) {
            match entry {
                Entry::Transfer(t) if t.pending => self.holds.push(t.id.clone()),
                Entry::Transfer(t) if matches!(t.reason, Reason::StakeBond | Reason::Unbond) => {
                    self.record_stake(entry)
                }
                Entry::Post(p) => self.captures.push(Captured {
                    paperwork: PaperworkId::derive(p.id.as_str().as_bytes()),
                    stack: self.stack_of(&outcome.debit),
                    amount: outcome.amount.micros(),
                    filing: None,
                }),
                _ => {}
            }
        }
        match sent.effect {
            Effect::None => {}
            Effect::Filed(index, filing) => self.captures[index].filing = Some(filing),
            Effect::PayoutOpened(payout) => self.payouts.push(payout),
            Effect::PayoutEnded(index, entry) => self.payouts[index].end(entry),
        }
        self.applied.push(sent.entries);
    }

    fn stack_of(&self, account: &AccountId) -> StackId {
        *self
            .stacks
            .iter()
            .find(|s| AccountId::stack(**s) == *account)
            .expect("every hold is on one of the world's stacks")
    }

    /// Admission: `amount` of a stack's balance held for the escrow, until `ttl` from now if given.
    fn hold(&mut self, stack: usize, amount: i64, ttl: Option<u8>) -> Entry {
        let expires = ttl.map(|t| at(self.clock + i64::from(t)));
        let debit = AccountId::stack(self.stacks[stack]);
        Transfer::hold(
            self.fresh_id("hold"),
            debit,
            AccountId::escrow(),
            micros(amount),
            expires,
        )
        .into()
    }

    /// Acceptance: captures `permille` of what a hold of `held` holds (at least 1).
    fn capture(&mut self, pending_id: TransferId, held: i64, permille: u16) -> Entry {
        let amount = i64::try_from((i128::from(held) * i128::from(permille) / 1_000).max(1));
        Post::new(
            self.fresh_id("capture"),
            pending_id,
            micros(amount.unwrap_or(i64::MAX)),
        )
        .into()
    }

    /// An open hold; `stale`: any hold taken so far, or one never taken. None: no open hold.
    fn hold_id(&self, index: usize, stale: bool, model: &Model) -> Option<TransferId> {
        if stale {
            return Some(
                pick(&self.holds, index)
                    .cloned()
                    .unwrap_or_else(|| id("no-such-hold")),
            );
        }
        let open: Vec<&TransferId> = self.holds.iter().filter(|h| model.is_open(h)).collect();
        pick(&open, index).map(|h| (*h).clone())
    }

    fn topup(&mut self, to: usize, amount: i64) -> Entry {
        let account = match (self.stacks.get(to), to.checked_sub(STACKS + 1)) {
            (Some(stack), _) => AccountId::stack(*stack),
            (None, Some(node)) if node < self.nodes.len() => AccountId::node(self.nodes[node]),
            _ => AccountId::treasury(),
        };
        let id = self.fresh_id("topup:admin");
        let entry: Entry = Transfer::posted(id, world(), account, micros(amount), Reason::Topup).into();
        self.topups.push(entry.clone());
        entry
    }

    /// A new top-up event, or an earlier one again: the same fields replay it, another amount is
    /// refused naming the amount (when the first was applied; otherwise it is simply a new transfer).
    fn topup_again(&mut self, to: usize, amount: i64, again: Option<(usize, bool)>, model: &Model) -> Batch {
        let Some((Entry::Transfer(first), same)) =
            again.and_then(|(i, same)| Some((pick(&self.topups, i)?.clone(), same)))
        else {
            let entry = self.topup(to, amount);
            return batch("topup", vec![entry], Expect::Any);
        };
        let seen = model.contains(&first.id);
        if same {
            let expect = if seen { Expect::Replayed } else { Expect::Any };
            return batch("topup-again", vec![first.into()], expect);
        }
        let was = first.amount.micros();
        let other = if amount > 0 && amount != was {
            amount
        } else if was > 1 {
            was - 1
        } else {
            2
        };
        let expect = if seen {
            Expect::Reused("amount")
        } else {
            Expect::Any
        };
        let changed = Transfer {
            amount: micros(other),
            ..first
        };
        if !seen {
            // Applied now as a new transfer: from here on the id stands for these fields, so a
            // later "other amount" must differ from them, not from the first draft.
            if let Some((i, _)) = again {
                let slot = i % self.topups.len().max(1);
                if let Some(known) = self.topups.get_mut(slot) {
                    *known = changed.clone().into();
                }
            }
        }
        batch("topup-other", vec![changed.into()], expect)
    }
}

pub fn batch(label: &'static str, entries: Vec<Entry>, expect: Expect) -> Batch {
    Batch {
        label,
        entries,
        expect,
        effect: Effect::None,
    }
}

/// The item `index` points at, wrapping around; None when there are none.
pub fn pick<T>(items: &[T], index: usize) -> Option<&T> {
    items.get(index % items.len().max(1))
}

/// The same id with one field changed, and the name of that field.
fn tweak(entry: Entry) -> (Entry, &'static str) {
    let other = |amount: stacknet_ledger::Amount| {
        let a = amount.micros();
        micros(if a > 1 { a - 1 } else { 2 })
    };
    match entry {
        Entry::Transfer(t) if t.pending => (
            Transfer {
                amount: other(t.amount),
                ..t
            }
            .into(),
            "amount",
        ),
        Entry::Transfer(t) => (
            Transfer {
                reason: Reason::Reward,
                ..t
            }
            .into(),
            "reason",
        ),
        Entry::Post(p) => (
            Post {
                amount: other(p.amount),
                ..p
            }
            .into(),
            "amount",
        ),
        Entry::Void(v) => (
            Void {
                reason: Reason::Refund,
                ..v
            }
            .into(),
            "reason",
        ),
    }
}
