//! Settlement of one paperwork: the captured cost of its contract, held in escrow, shared among the
//! parties of the contract's attribution split, plus the warm-pool bonus from the treasury.
//!
//! Rounding rule (never creates or loses a micro-credit): every share is `floor(cost * bps / 10_000)`;
//! a skill with a royalty in the contract (`skill_royalties_bps`) gets `floor(cost * royalty /
//! 10_000)` and what the royalties leave of the skills' share goes to the treasury; without
//! royalties the skills' share is divided equally among the contract's skills, each part rounded
//! down; a share
//! whose party the contract does not name (no referrer, no skills, no provider) goes to the treasury;
//! whatever the rounding left over (less than one micro-credit per share) goes to the executing node.
//! So the shares always add up to exactly the captured cost. The warm bonus is
//! `floor(node share * warm_bonus_bps / 10_000)`, paid by the treasury in its own transfer.
//! [`settlement`] turns the shares of any number of paperwork into the transfers that pay them.

use stacknet_protocol::contract::{AttributionSplit, PromptContract, BPS_TOTAL};
use std::collections::BTreeMap;

use stacknet_protocol::Amount;

use crate::error::ParseError;
use crate::model::account::AccountId;
use crate::model::transfer::{Entry, Reason, Transfer, TransferId};

/// One party's part of a settlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// Who the share is for: `node`, `stack`, `node_referrer`, `skill:<id>`, `model_provider`,
    /// `data_provider`, `protocol` (a share of an unnamed party is listed under its role, credited
    /// to the treasury).
    pub role: String,
    pub account: AccountId,
    pub amount: Amount,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("the split's shares add up to {0} basis points, not 10000")]
    Incomplete(u64),
    #[error("the captured amount {0} is negative")]
    Negative(Amount),
    #[error("the contract's skills are not sorted and unique")]
    Skills,
    #[error("the contract names {royalties} skill royalties for {skills} skills")]
    RoyaltyCount { royalties: usize, skills: usize },
    #[error("the contract's skill royalties add up to {0} basis points, more than the skills' share")]
    RoyaltiesOverShare(u64),
    #[error("the settlement's amounts for {0} add up to more than the largest amount")]
    Overflow(AccountId),
    #[error(transparent)]
    Id(#[from] ParseError),
}

fn part(amount: i64, bps: u32) -> i64 {
    // amount <= i64::MAX and bps <= 10_000 (checked): the product fits in i128 and the result in i64.
    let v = i128::from(amount) * i128::from(bps) / i128::from(BPS_TOTAL);
    i64::try_from(v).unwrap_or(0)
}

fn total_bps(split: &AttributionSplit) -> u64 {
    [
        split.node_bps,
        split.stack_bps,
        split.node_referrer_bps,
        split.skills_bps,
        split.model_provider_bps,
        split.data_provider_bps,
        split.protocol_bps,
    ]
    .iter()
    .map(|&b| u64::from(b))
    .sum()
}

/// The shares of `captured` under `contract`'s split, node first. Zero shares are left out.
pub fn shares(captured: Amount, contract: &PromptContract) -> Result<Vec<Share>, SplitError> {
    let split = &contract.split;
    let total = total_bps(split);
    if total != u64::from(BPS_TOTAL) {
        return Err(SplitError::Incomplete(total));
    }
    let amount = captured.micros();
    if amount < 0 {
        return Err(SplitError::Negative(captured));
    }
    // A repeated skill would get two shares under one transfer id: the second would replay the
    // first and its money would stay in escrow.
    if !stacknet_protocol::contract::is_sorted_unique(&contract.skills) {
        return Err(SplitError::Skills);
    }
    let named =
        |party: Option<stacknet_protocol::StackId>| party.map_or_else(AccountId::treasury, AccountId::stack);
    let mut out = vec![
        Share {
            role: "node".into(),
            account: AccountId::node(contract.node_key),
            amount: Amount::from_micros(part(amount, split.node_bps)),
        },
        Share {
            role: "stack".into(),
            account: AccountId::stack(contract.stack),
            amount: Amount::from_micros(part(amount, split.stack_bps)),
        },
        Share {
            role: "node_referrer".into(),
            account: named(contract.parties.node_referrer),
            amount: Amount::from_micros(part(amount, split.node_referrer_bps)),
        },
    ];
    let skills_total = part(amount, split.skills_bps);
    let royalties = &contract.skill_royalties_bps;
    if !royalties.is_empty() {
        if royalties.len() != contract.skills.len() {
            return Err(SplitError::RoyaltyCount {
                royalties: royalties.len(),
                skills: contract.skills.len(),
            });
        }
        let sum: u64 = royalties.iter().map(|&r| u64::from(r)).sum();
        if sum > u64::from(split.skills_bps) {
            return Err(SplitError::RoyaltiesOverShare(sum));
        }
        let mut paid = 0;
        for (skill, &royalty) in contract.skills.iter().zip(royalties) {
            let share = part(amount, royalty);
            paid += share;
            out.push(Share {
                role: format!("skill:{skill}"),
                account: AccountId::creator(*skill),
                amount: Amount::from_micros(share),
            });
        }
        // Each royalty rounds down, as the whole share does: paid <= skills_total.
        out.push(Share {
            role: "skills".into(),
            account: AccountId::treasury(),
            amount: Amount::from_micros((skills_total - paid).max(0)),
        });
    } else if contract.skills.is_empty() {
        out.push(Share {
            role: "skills".into(),
            account: AccountId::treasury(),
            amount: Amount::from_micros(skills_total),
        });
    } else {
        let n = i64::try_from(contract.skills.len()).unwrap_or(i64::MAX);
        for skill in &contract.skills {
            out.push(Share {
                role: format!("skill:{skill}"),
                account: AccountId::creator(*skill),
                amount: Amount::from_micros(skills_total / n),
            });
        }
    }
    out.push(Share {
        role: "model_provider".into(),
        account: named(contract.parties.model_provider),
        amount: Amount::from_micros(part(amount, split.model_provider_bps)),
    });
    out.push(Share {
        role: "data_provider".into(),
        account: named(contract.parties.data_provider),
        amount: Amount::from_micros(part(amount, split.data_provider_bps)),
    });
    out.push(Share {
        role: "protocol".into(),
        account: AccountId::treasury(),
        amount: Amount::from_micros(part(amount, split.protocol_bps)),
    });
    let given: i64 = out.iter().map(|s| s.amount.micros()).sum();
    // The remainder rule: what rounding down left over goes to the executing node.
    if let Some(node) = out.first_mut() {
        node.amount = Amount::from_micros(node.amount.micros() + (amount - given));
    }
    out.retain(|s| s.amount.micros() > 0);
    Ok(out)
}

/// The warm-pool bonus on a node share: `floor(node_share * warm_bonus_bps / 10_000)`.
pub fn warm_bonus(node_share: Amount, split: &AttributionSplit) -> Amount {
    Amount::from_micros(part(node_share.micros(), split.warm_bonus_bps.min(BPS_TOTAL)))
}

/// One paperwork to settle: its captured cost, its contract, and whether the node served warm.
#[derive(Clone, Copy, Debug)]
pub struct Due<'a> {
    pub cost: Amount,
    pub contract: &'a PromptContract,
    pub warm: bool,
}

/// The transfers of one settlement (any number of paperwork settled together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Every party's shares, summed per account, out of escrow: ids `<id>:share<n>`, in account
    /// order. Apply them as one batch.
    pub shares: Vec<Entry>,
    /// The warm bonuses, summed per node, from the treasury: ids `<id>:bonus<n>`. Each is its own
    /// batch, which a short treasury may refuse without touching the shares.
    pub bonuses: Vec<Entry>,
}

/// The transfers that settle `due` under the settlement id `id`. The ids derive from `id` alone, so
/// building them again after a crash gives the same transfers (replays, never double payments).
pub fn settlement(id: &str, due: &[Due<'_>]) -> Result<Settlement, SplitError> {
    let mut per_account: BTreeMap<AccountId, i64> = BTreeMap::new();
    let mut bonus: BTreeMap<AccountId, i64> = BTreeMap::new();
    // Each cost fits in an amount, but many of them summed for one account need not.
    let add = |sums: &mut BTreeMap<AccountId, i64>, account: &AccountId, amount: i64| {
        let sum = sums.entry(account.clone()).or_default();
        *sum = sum
            .checked_add(amount)
            .ok_or_else(|| SplitError::Overflow(account.clone()))?;
        Ok::<(), SplitError>(())
    };
    for d in due {
        let parts = shares(d.cost, d.contract)?;
        for s in &parts {
            add(&mut per_account, &s.account, s.amount.micros())?;
        }
        if d.warm {
            let node_share = parts
                .iter()
                .find(|s| s.role == "node")
                .map_or(Amount::ZERO, |s| s.amount);
            let b = warm_bonus(node_share, &d.contract.split).micros();
            if b > 0 {
                add(&mut bonus, &AccountId::node(d.contract.node_key), b)?;
            }
        }
    }
    let entries = |sums: BTreeMap<AccountId, i64>, kind: &str, from: AccountId, reason: Reason| {
        sums.into_iter()
            .enumerate()
            .map(|(n, (account, amount))| {
                Ok(Transfer::posted(
                    TransferId::new(&format!("{id}:{kind}{n}"))?,
                    from.clone(),
                    account,
                    Amount::from_micros(amount),
                    reason,
                )
                .into())
            })
            .collect::<Result<Vec<Entry>, SplitError>>()
    };
    Ok(Settlement {
        shares: entries(per_account, "share", AccountId::escrow(), Reason::SplitShare)?,
        bonuses: entries(bonus, "bonus", AccountId::treasury(), Reason::WarmBonus)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use stacknet_protocol::examples;
    use stacknet_protocol::SkillId;

    fn contract_with(skills: usize, named: bool) -> PromptContract {
        let mut c = examples::contract();
        c.skills = (0..skills)
            .map(|i| SkillId::from_digest([u8::try_from(i + 1).unwrap(); 16]))
            .collect();
        c.skills.sort();
        if !named {
            c.parties = Default::default();
        }
        c
    }

    #[test]
    fn royalties_pay_each_skill_its_own_part_and_the_rest_of_the_share_to_the_treasury() {
        let mut c = contract_with(2, true);
        // 5% skills share: 3% and 1.5% royalties, 0.5% left to the treasury.
        c.skill_royalties_bps = vec![300, 150];
        let s = shares(Amount::from_micros(1_000_000), &c).unwrap();
        let of = |role: &str| s.iter().find(|s| s.role == role).map(|s| s.amount.micros());
        assert_eq!(of(&format!("skill:{}", c.skills[0])), Some(30_000));
        assert_eq!(of(&format!("skill:{}", c.skills[1])), Some(15_000));
        assert_eq!(of("skills"), Some(5_000));
        assert_eq!(s.iter().map(|s| s.amount.micros()).sum::<i64>(), 1_000_000);
        c.skill_royalties_bps = vec![300, 201];
        assert_eq!(
            shares(Amount::from_micros(1), &c),
            Err(SplitError::RoyaltiesOverShare(501))
        );
        c.skill_royalties_bps = vec![300];
        assert_eq!(
            shares(Amount::from_micros(1), &c),
            Err(SplitError::RoyaltyCount {
                royalties: 1,
                skills: 2
            })
        );
    }

    #[test]
    fn shares_follow_the_split_and_the_remainder_goes_to_the_node() {
        let c = contract_with(0, false);
        let s = shares(Amount::from_micros(1_000_003), &c).unwrap();
        let node = s.iter().find(|s| s.role == "node").unwrap();
        // 70% of 1_000_003 is 700_002.1 -> 700_002, plus the remainder of all the roundings.
        let sum: i64 = s.iter().map(|s| s.amount.micros()).sum();
        assert_eq!(sum, 1_000_003);
        assert!(node.amount.micros() >= 700_002);
        let to_treasury: i64 = s
            .iter()
            .filter(|s| s.account == AccountId::treasury())
            .map(|s| s.amount.micros())
            .sum();
        // referrer 5% + skills 5% + model 4% + data 1% + protocol 5% = 20%, unnamed, to the treasury.
        assert_eq!(to_treasury, 200_000);
    }

    #[test]
    fn an_incomplete_split_is_refused() {
        let mut c = contract_with(0, true);
        c.split.node_bps -= 1;
        assert_eq!(
            shares(Amount::from_micros(10), &c),
            Err(SplitError::Incomplete(9_999))
        );
    }

    #[test]
    fn repeated_skills_are_refused() {
        let mut c = contract_with(1, true);
        c.skills.push(c.skills[0]);
        assert_eq!(shares(Amount::from_micros(1_000), &c), Err(SplitError::Skills));
    }

    proptest! {
        #[test]
        fn shares_always_sum_to_the_captured_cost(amount in 0i64..=i64::MAX / 2, skills in 0usize..7, named: bool) {
            let c = contract_with(skills, named);
            let s = shares(Amount::from_micros(amount), &c).unwrap();
            let sum: i128 = s.iter().map(|s| i128::from(s.amount.micros())).sum();
            prop_assert_eq!(sum, i128::from(amount));
            prop_assert!(s.iter().all(|s| s.amount.micros() > 0));
            let due = [Due { cost: Amount::from_micros(amount), contract: &c, warm: true }];
            let paid = settlement("stl_x", &due).unwrap();
            let moved: i128 = paid.shares.iter().map(|e| match e {
                Entry::Transfer(t) => i128::from(t.amount.micros()),
                _ => 0,
            }).sum();
            prop_assert_eq!(moved, i128::from(amount));
        }
    }
}
