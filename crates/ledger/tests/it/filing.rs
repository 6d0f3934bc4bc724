//! Filing, as the hub settles paperwork: the captured cost, which waits in escrow, shared out per the
//! contract's attribution split in one batch of shares summed per account, then the warm bonus from
//! the treasury in a batch of its own, which a short treasury refuses without harm: the very
//! transfers the hub builds with `stacknet_ledger::settlement`. A
//! paperwork filed again (the hub's recovery after a crash) batches the very same batches, which must
//! replay and move nothing.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use stacknet_ledger::{settlement, shares, warm_bonus, AccountId, Amount, Due, Entry, SplitError};
use stacknet_protocol::contract::{AttributionSplit, Parties, PromptContract, BPS_TOTAL};
use stacknet_protocol::{examples, PaperworkId, StackId};

use crate::sequence::{batch, pick, Batch, Effect, Expect, World, NODES, SKILLS, STACKS};

/// Paperwork whose cost was captured into escrow; `filing` once it is settled.
#[derive(Clone, Debug)]
pub struct Captured {
    pub paperwork: PaperworkId,
    /// The stack that paid (the contract's `stack`).
    pub stack: StackId,
    pub amount: i64,
    pub filing: Option<Filing>,
}

/// What filing a paperwork sent: the settlement, and the warm bonus if it had one.
#[derive(Clone, Debug)]
pub struct Filing {
    settlement: Vec<Entry>,
    bonus: Option<Entry>,
}

/// The contract a paperwork is filed under: which node ran it, how many skills it used, which
/// parties it names (stacks, by index; `None`: the treasury takes that share), its split, whether
/// the node served warm.
#[derive(Clone, Debug)]
pub struct Terms {
    node: usize,
    skills: usize,
    parties: [Option<usize>; 3],
    split: Split,
    warm: bool,
    /// Each skill's royalty in basis points (the first `skills` of them are written into the
    /// contract); `None`: no royalties, the skills' share divided equally.
    royalties: Option<[u32; SKILLS]>,
}

#[derive(Clone, Debug)]
enum Split {
    /// The network's default (70% node, +10% warm bonus).
    Default,
    /// Shares in proportion to seven weights (node, stack, referrer, skills, model, data, protocol),
    /// rounded so that they add up to 10,000 basis points; and a warm bonus (above 10,000: capped).
    Weights([u8; 7], u32),
    /// The default with `n + 1` basis points missing from the node's share: refused, nothing moves.
    Incomplete(u8),
}

pub fn terms() -> impl Strategy<Value = Terms> {
    let party = proptest::option::of(0..STACKS);
    let split = prop_oneof![
        4 => Just(Split::Default),
        4 => (prop::array::uniform7(0..=20u8), 0..=12_000u32).prop_map(|(w, warm)| Split::Weights(w, warm)),
        1 => any::<u8>().prop_map(Split::Incomplete),
    ];
    (
        0..NODES,
        0..=SKILLS,
        prop::array::uniform3(party),
        split,
        any::<bool>(),
        // Up to 300 each: mostly within a skills' share of 500, sometimes past it (refused).
        proptest::option::of(prop::array::uniform3(0..=300u32)),
    )
        .prop_map(|(node, skills, parties, split, warm, royalties)| Terms {
            node,
            skills,
            parties,
            split,
            warm,
            royalties,
        })
}

/// The example contract, built once (it derives two keys from their seeds).
fn template() -> &'static PromptContract {
    static TEMPLATE: OnceLock<PromptContract> = OnceLock::new();
    TEMPLATE.get_or_init(examples::contract)
}

fn attribution_split(split: &Split) -> AttributionSplit {
    let default = examples::default_split();
    match *split {
        Split::Default => default,
        Split::Incomplete(n) => AttributionSplit {
            node_bps: default.node_bps - u32::from(n) - 1,
            ..default
        },
        Split::Weights(w, warm_bonus_bps) => {
            let total: u32 = w.iter().map(|&x| u32::from(x)).sum();
            let bps = w.map(|x| (u32::from(x) * BPS_TOTAL).checked_div(total).unwrap_or(0));
            let rest = BPS_TOTAL - bps.iter().sum::<u32>();
            AttributionSplit {
                node_bps: bps[0] + rest,
                stack_bps: bps[1],
                node_referrer_bps: bps[2],
                skills_bps: bps[3],
                model_provider_bps: bps[4],
                data_provider_bps: bps[5],
                protocol_bps: bps[6],
                warm_bonus_bps,
            }
        }
    }
}

impl World {
    /// Files paperwork: one waiting for it, or (`again`, or when none waits) one filed before, whose
    /// batches are sent again.
    pub fn file(&mut self, index: usize, again: bool, terms: &Terms) -> Result<Vec<Batch>, TestCaseError> {
        let (filed, waiting): (Vec<usize>, Vec<usize>) =
            (0..self.captures.len()).partition(|&i| self.captures[i].filing.is_some());
        let chosen = match (again, pick(&filed, index), pick(&waiting, index)) {
            (true, Some(&i), _) | (_, _, Some(&i)) => i,
            (false, Some(&i), None) => i,
            (_, None, None) => return Ok(vec![]),
        };
        if let Some(filing) = &self.captures[chosen].filing {
            let mut batches = vec![batch("refile", filing.settlement.clone(), Expect::Replayed)];
            // A bonus the treasury could not pay the first time may be paid now.
            batches.extend(
                filing
                    .bonus
                    .clone()
                    .map(|b| batch("bonus", vec![b], Expect::BonusOrShort)),
            );
            return Ok(batches);
        }
        self.settle(chosen, terms)
    }

    fn contract(&self, captured: &Captured, terms: &Terms) -> PromptContract {
        let party = |i: Option<usize>| i.map(|i| self.stacks[i]);
        PromptContract {
            stack: captured.stack,
            node_key: self.nodes[terms.node],
            split: attribution_split(&terms.split),
            parties: Parties {
                node_referrer: party(terms.parties[0]),
                model_provider: party(terms.parties[1]),
                data_provider: party(terms.parties[2]),
            },
            skills: self.skills[..terms.skills].to_vec(),
            skill_royalties_bps: terms
                .royalties
                .map(|r| r[..terms.skills].to_vec())
                .unwrap_or_default(),
            ..template().clone()
        }
    }

    /// The first filing of `captures[index]`: its shares, checked, as one batch out of escrow, then
    /// the warm bonus.
    fn settle(&mut self, index: usize, terms: &Terms) -> Result<Vec<Batch>, TestCaseError> {
        let captured = self.captures[index].clone();
        let contract = self.contract(&captured, terms);
        let cost = Amount::from_micros(captured.amount);
        let shares = match (shares(cost, &contract), &terms.split) {
            (Ok(shares), _) => shares,
            (Err(SplitError::Incomplete(total)), Split::Incomplete(n)) => {
                prop_assert_eq!(total, u64::from(BPS_TOTAL) - u64::from(*n) - 1);
                return Ok(vec![]);
            }
            (Err(SplitError::RoyaltiesOverShare(sum)), _) => {
                // Refused exactly when the royalties ask more than the skills' share.
                let asked: u64 = contract.skill_royalties_bps.iter().map(|&r| u64::from(r)).sum();
                prop_assert_eq!(sum, asked);
                prop_assert!(asked > u64::from(contract.split.skills_bps));
                return Ok(vec![]);
            }
            (Err(e), _) => return Err(TestCaseError::fail(format!("{terms:?}: {e}"))),
        };
        // The model of royalties: each skill gets floor(cost * royalty / 10,000), and the treasury
        // what they leave of the skills' share; without royalties, equal parts.
        let skills_share =
            i128::from(captured.amount) * i128::from(contract.split.skills_bps) / i128::from(BPS_TOTAL);
        let n = i128::try_from(contract.skills.len()).unwrap_or(1).max(1);
        for (i, skill) in contract.skills.iter().enumerate() {
            let want = match contract.skill_royalties_bps.get(i) {
                Some(&r) => i128::from(captured.amount) * i128::from(r) / i128::from(BPS_TOTAL),
                None => skills_share / n,
            };
            let got = shares
                .iter()
                .find(|s| s.role == format!("skill:{skill}"))
                .map_or(0, |s| i128::from(s.amount.micros()));
            prop_assert_eq!(got, want, "skill {} of {:?}", i, terms);
        }
        let sum: i128 = shares.iter().map(|s| i128::from(s.amount.micros())).sum();
        prop_assert_eq!(sum, i128::from(captured.amount), "shares of {:?}", terms);
        prop_assert!(shares.iter().all(|s| s.amount.micros() > 0), "{:?}", shares);
        // What the hub sends: the shares summed per account, and the warm bonus on its own.
        let due = [Due {
            cost,
            contract: &contract,
            warm: terms.warm,
        }];
        let paid = settlement(&format!("stl_{}", captured.paperwork), &due).unwrap();
        let mut expected: BTreeMap<&AccountId, i64> = BTreeMap::new();
        for share in &shares {
            *expected.entry(&share.account).or_default() += share.amount.micros();
        }
        let escrow = AccountId::escrow();
        let mut sent: BTreeMap<&AccountId, i64> = BTreeMap::new();
        for entry in &paid.shares {
            let Entry::Transfer(t) = entry else {
                return Err(TestCaseError::fail(format!("not a transfer: {entry:?}")));
            };
            prop_assert_eq!(&t.debit, &escrow);
            prop_assert!(!t.pending);
            prop_assert!(
                sent.insert(&t.credit, t.amount.micros()).is_none(),
                "one transfer per account"
            );
        }
        prop_assert_eq!(sent, expected);
        let node = shares
            .iter()
            .find(|s| s.role == "node")
            .map_or(Amount::ZERO, |s| s.amount);
        let owed = if terms.warm {
            warm_bonus(node, &contract.split)
        } else {
            Amount::ZERO
        };
        prop_assert!(paid.bonuses.len() <= 1, "{:?}", paid.bonuses);
        let bonus = paid.bonuses.first().cloned();
        match &bonus {
            Some(Entry::Transfer(t)) => {
                prop_assert_eq!(
                    (&t.debit, &t.credit, t.amount),
                    (&AccountId::treasury(), &AccountId::node(contract.node_key), owed)
                );
            }
            Some(other) => return Err(TestCaseError::fail(format!("not a transfer: {other:?}"))),
            None => prop_assert_eq!(owed, Amount::ZERO),
        }
        let settlement = paid.shares;
        let filing = Filing {
            settlement: settlement.clone(),
            bonus: bonus.clone(),
        };
        let mut batches = vec![Batch {
            label: "file",
            entries: settlement,
            expect: Expect::Applied,
            effect: Effect::Filed(index, filing),
        }];
        batches.extend(bonus.map(|b| batch("bonus", vec![b], Expect::BonusOrShort)));
        Ok(batches)
    }
}

#[test]
fn a_settlement_whose_shares_sum_past_i64_max_is_refused_not_overflowed() {
    // Each paperwork's cost fits; their shares summed per account do not.
    let due = [Due {
        cost: Amount::from_micros(i64::MAX),
        contract: template(),
        warm: true,
    }; 3];
    let node = AccountId::node(template().node_key);
    assert_eq!(settlement("stl_big", &due), Err(SplitError::Overflow(node)));
    // One of them settles.
    assert!(settlement("stl_one", &due[..1]).is_ok());
}
