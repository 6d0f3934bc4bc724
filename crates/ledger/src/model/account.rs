//! Accounts: who holds money, and how low each kind of account may go.
//!
//! An account id is text (`stack:stk_...`, `node:nk_...`, `escrow`, `external:topup`) because both
//! stores key rows by it and statements print it, but it is only ever built through a typed
//! constructor or parsed once at the edge, so a malformed id never reaches a store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stacknet_protocol::{NodeKeyId, SkillId, StackId, UserId};

use crate::error::ParseError;

/// Longest name of an external account (`external:<name>`).
pub const MAX_EXTERNAL_NAME_CHARS: usize = 32;

/// What an account is for. The kind decides the floor and is written into the id, so a stored id
/// alone says which rule applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A Stack's prepaid balance.
    Stack,
    /// An end user's prepaid balance inside a Stack.
    User,
    /// What a Node Key has earned and not yet redeemed.
    NodeEarnings,
    /// A Node Key's bonded stake.
    Stake,
    /// Stake a Node Key is unbonding: still slashable until its unbonding period ends, then the
    /// key's to withdraw back to its earnings.
    Unbonding,
    /// Money held for prompt contracts between admission and settlement.
    Escrow,
    /// The protocol's own funds: fees in, warm bonuses and rewards out.
    Treasury,
    /// What a skill's creator has earned.
    Creator,
    /// Earnings on their way out through a payout rail.
    PayoutPending,
    /// The world outside the books: top-ups come from it, payouts go to it.
    External,
}

/// The lowest balance an account may reach. A type-level rule: every account of a kind shares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    /// Available balance (posted minus pending debits) may not go below zero.
    Zero,
    /// No lower limit. Only the outside world may owe the books without limit.
    Unbounded,
}

impl AccountKind {
    pub const fn floor(self) -> Floor {
        match self {
            AccountKind::External => Floor::Unbounded,
            AccountKind::Stack
            | AccountKind::User
            | AccountKind::NodeEarnings
            | AccountKind::Stake
            | AccountKind::Unbonding
            | AccountKind::Escrow
            | AccountKind::Treasury
            | AccountKind::Creator
            | AccountKind::PayoutPending => Floor::Zero,
        }
    }
}

/// One account of the books, named by its kind and its owner.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(Inner);

// Ordered by variant then owner; stores order locks by the id's text instead (see `as_str`), so this
// order only matters for deterministic maps.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Inner {
    Stack(StackId),
    User(UserId),
    Node(NodeKeyId),
    Stake(NodeKeyId),
    Unbonding(NodeKeyId),
    Escrow,
    Treasury,
    Creator(SkillId),
    PayoutPending(NodeKeyId),
    External(String),
}

impl AccountId {
    pub fn stack(stack: StackId) -> Self {
        Self(Inner::Stack(stack))
    }
    pub fn user(user: UserId) -> Self {
        Self(Inner::User(user))
    }
    /// A Node Key's earnings.
    pub fn node(node_key: NodeKeyId) -> Self {
        Self(Inner::Node(node_key))
    }
    pub fn stake(node_key: NodeKeyId) -> Self {
        Self(Inner::Stake(node_key))
    }
    pub fn unbonding(node_key: NodeKeyId) -> Self {
        Self(Inner::Unbonding(node_key))
    }
    pub fn escrow() -> Self {
        Self(Inner::Escrow)
    }
    pub fn treasury() -> Self {
        Self(Inner::Treasury)
    }
    /// A skill creator's earnings, keyed by the skill they are credited for.
    pub fn creator(skill: SkillId) -> Self {
        Self(Inner::Creator(skill))
    }
    pub fn payout_pending(node_key: NodeKeyId) -> Self {
        Self(Inner::PayoutPending(node_key))
    }
    /// The Stack whose balance this is, if it is a Stack's.
    pub fn stack_id(&self) -> Option<StackId> {
        match self.0 {
            Inner::Stack(s) => Some(s),
            _ => None,
        }
    }
    /// A named door to the outside world (`topup`, `payout`, `webhook`...): 1 to 32 characters of
    /// `a-z 0-9 _ -`, so names stay readable in statements and never need escaping.
    pub fn external(name: &str) -> Result<Self, ParseError> {
        let ok = (1..=MAX_EXTERNAL_NAME_CHARS).contains(&name.len())
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        if ok {
            Ok(Self(Inner::External(name.to_owned())))
        } else {
            Err(ParseError::BadExternalName(quote(name)))
        }
    }

    pub fn kind(&self) -> AccountKind {
        match &self.0 {
            Inner::Stack(_) => AccountKind::Stack,
            Inner::User(_) => AccountKind::User,
            Inner::Node(_) => AccountKind::NodeEarnings,
            Inner::Stake(_) => AccountKind::Stake,
            Inner::Unbonding(_) => AccountKind::Unbonding,
            Inner::Escrow => AccountKind::Escrow,
            Inner::Treasury => AccountKind::Treasury,
            Inner::Creator(_) => AccountKind::Creator,
            Inner::PayoutPending(_) => AccountKind::PayoutPending,
            Inner::External(_) => AccountKind::External,
        }
    }

    pub fn floor(&self) -> Floor {
        self.kind().floor()
    }
}

/// The text prefix of each kind that has an owner; `escrow` and `treasury` are bare words.
const STACK: &str = "stack:";
const USER: &str = "user:";
const NODE: &str = "node:";
const STAKE: &str = "stake:";
const UNBONDING: &str = "unbonding:";
const CREATOR: &str = "creator:";
const PAYOUT: &str = "payout:";
const EXTERNAL: &str = "external:";
const ESCROW: &str = "escrow";
const TREASURY: &str = "treasury";

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Stack(id) => write!(f, "{STACK}{id}"),
            Inner::User(id) => write!(f, "{USER}{id}"),
            Inner::Node(id) => write!(f, "{NODE}{id}"),
            Inner::Stake(id) => write!(f, "{STAKE}{id}"),
            Inner::Unbonding(id) => write!(f, "{UNBONDING}{id}"),
            Inner::Escrow => f.write_str(ESCROW),
            Inner::Treasury => f.write_str(TREASURY),
            Inner::Creator(id) => write!(f, "{CREATOR}{id}"),
            Inner::PayoutPending(id) => write!(f, "{PAYOUT}{id}"),
            Inner::External(name) => write!(f, "{EXTERNAL}{name}"),
        }
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for AccountId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::BadAccountId(quote(s));
        let owned = |prefix: &str| s.strip_prefix(prefix);
        let id = if s == ESCROW {
            Self::escrow()
        } else if s == TREASURY {
            Self::treasury()
        } else if let Some(rest) = owned(STACK) {
            Self::stack(rest.parse().map_err(|_| bad())?)
        } else if let Some(rest) = owned(USER) {
            Self::user(rest.parse().map_err(|_| bad())?)
        } else if let Some(rest) = owned(NODE) {
            Self::node(rest.parse().map_err(|_| bad())?)
        } else if let Some(rest) = owned(STAKE) {
            Self::stake(rest.parse().map_err(|_| bad())?)
        } else if let Some(rest) = owned(UNBONDING) {
            Self::unbonding(rest.parse().map_err(|_| bad())?)
        } else if let Some(rest) = owned(CREATOR) {
            Self::creator(rest.parse().map_err(|_| bad())?)
        } else if let Some(rest) = owned(PAYOUT) {
            Self::payout_pending(rest.parse().map_err(|_| bad())?)
        } else if let Some(rest) = owned(EXTERNAL) {
            Self::external(rest)?
        } else {
            return Err(bad());
        };
        Ok(id)
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Error messages quote what they were given, but never an unbounded amount of it.
pub(crate) fn quote(s: &str) -> String {
    const MAX_QUOTED_CHARS: usize = 80;
    s.chars().take(MAX_QUOTED_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_text() {
        let nk = NodeKeyId::random();
        let ids = [
            AccountId::stack(StackId::random()),
            AccountId::user(UserId::random()),
            AccountId::node(nk),
            AccountId::stake(nk),
            AccountId::unbonding(nk),
            AccountId::escrow(),
            AccountId::treasury(),
            AccountId::creator(SkillId::random()),
            AccountId::payout_pending(nk),
            AccountId::external("topup").unwrap(),
        ];
        for id in ids {
            assert_eq!(id.to_string().parse::<AccountId>().unwrap(), id);
        }
    }

    #[test]
    fn only_external_accounts_are_unbounded() {
        assert_eq!(AccountId::external("payout").unwrap().floor(), Floor::Unbounded);
        assert_eq!(AccountId::treasury().floor(), Floor::Zero);
        assert_eq!(AccountId::escrow().floor(), Floor::Zero);
        assert_eq!(AccountId::unbonding(NodeKeyId::random()).floor(), Floor::Zero);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "stack:",
            "stack:usr_00",
            "unbonding:",
            "unbonding:stk_00",
            "external:",
            "external:Top Up",
            "escrow:",
            "vault",
        ] {
            assert!(bad.parse::<AccountId>().is_err(), "{bad:?} parsed");
        }
        assert!(AccountId::external(&"a".repeat(33)).is_err());
    }
}
