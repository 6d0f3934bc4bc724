//! Transfers and the batch entries that create, post and void them.
//!
//! The shape follows TigerBeetle's two-phase transfers: a pending transfer (a hold) reserves money,
//! and a later entry with its own id posts (captures) part or all of it or voids it. Every entry has
//! an id chosen by the caller, which is its idempotency key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stacknet_protocol::{Amount, Timestamp};

use crate::error::ParseError;
use crate::model::account::{quote, AccountId};

/// Longest transfer id, in bytes.
pub const MAX_TRANSFER_ID_BYTES: usize = 128;

/// The caller's idempotency key for one entry: 1 to 128 characters of `A-Z a-z 0-9 _ - . :`, so the
/// hub can derive it from what it settles (`hold:ct_...`, `capture:ct_...`, `share:pw_...:node`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(String);

impl TransferId {
    pub fn new(id: &str) -> Result<Self, ParseError> {
        let ok = (1..=MAX_TRANSFER_ID_BYTES).contains(&id.len())
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(ParseError::BadTransferId(quote(id)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TransferId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::new(s)
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for TransferId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TransferId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why money moved. Stored as its snake_case name; statements show it.
macro_rules! reasons {
    ($($variant:ident => $name:literal),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Reason { $($variant),* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];
            pub const fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $name),* }
            }
        }

        impl FromStr for Reason {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($name => Ok(Reason::$variant),)*
                    _ => Err(ParseError::BadReason(quote(s))),
                }
            }
        }
    };
}

reasons! {
    Hold => "hold",
    Capture => "capture",
    Release => "release",
    SplitShare => "split_share",
    WarmBonus => "warm_bonus",
    StakeBond => "stake_bond",
    Unbond => "unbond",
    Slash => "slash",
    Reward => "reward",
    Payout => "payout",
    Topup => "topup",
    Refund => "refund",
    Fee => "fee",
    // A Stack's share of the top-ups of a Stack it referred, paid by the treasury.
    Referral => "referral",
    // A Node Key's price, and its transfer fee, paid by the buying Stack.
    KeySale => "key_sale",
    // A skill's royalties, collected from its creator account into its Stack's balance.
    Royalty => "royalty",
}

/// A transfer between two accounts: posted at once, or pending (a hold) until posted, voided or expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    /// More than zero.
    pub amount: Amount,
    pub reason: Reason,
    /// A hold: reserves `amount` out of the debit account's available balance without moving it.
    pub pending: bool,
    /// Only for holds: from this instant on, `expire_due` releases the hold if it is still open.
    pub expires_at: Option<Timestamp>,
}

impl Transfer {
    /// A transfer that is posted at once.
    pub fn posted(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Amount,
        reason: Reason,
    ) -> Self {
        Self {
            id,
            debit,
            credit,
            amount,
            reason,
            pending: false,
            expires_at: None,
        }
    }

    /// A hold of `amount` on `debit` in favour of `credit`, released by `expire_due` from `expires_at`.
    pub fn hold(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Amount,
        expires_at: Option<Timestamp>,
    ) -> Self {
        Self {
            id,
            debit,
            credit,
            amount,
            reason: Reason::Hold,
            pending: true,
            expires_at,
        }
    }
}

/// Posts (captures) `amount` of an open hold; the rest of the hold goes back to the debit account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub id: TransferId,
    pub pending_id: TransferId,
    /// More than zero and at most the held amount (a capture of nothing is a void).
    pub amount: Amount,
    pub reason: Reason,
}

impl Post {
    pub fn new(id: TransferId, pending_id: TransferId, amount: Amount) -> Self {
        Self {
            id,
            pending_id,
            amount,
            reason: Reason::Capture,
        }
    }
}

/// Releases the whole of an open hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Void {
    pub id: TransferId,
    pub pending_id: TransferId,
    pub reason: Reason,
}

impl Void {
    pub fn new(id: TransferId, pending_id: TransferId) -> Self {
        Self {
            id,
            pending_id,
            reason: Reason::Release,
        }
    }
}

/// One line of a batch. A batch applies in order, atomically: every entry or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Transfer(Transfer),
    Post(Post),
    Void(Void),
}

impl Entry {
    pub fn id(&self) -> &TransferId {
        match self {
            Entry::Transfer(t) => &t.id,
            Entry::Post(p) => &p.id,
            Entry::Void(v) => &v.id,
        }
    }

    /// Whether a batch must be on disk before it is answered: all but a batch of holds. A hold lost
    /// to a power cut leaves the books as they were before it (its amount is free again), and
    /// whatever depends on it (its capture or release) is committed after it in the same write-ahead
    /// log and waits for the disk, which makes every earlier commit durable with it. So a request's
    /// hold costs no wait for the disk, and the capture (or release) that settles it shares one
    /// with the batch of paperwork logged before it (the hub's settle writer), which it makes
    /// durable too.
    pub fn must_sync(batch: &[Entry]) -> bool {
        batch
            .iter()
            .any(|e| !matches!(e, Entry::Transfer(t) if t.pending))
    }

    /// The hold this entry resolves, if it is a post or a void.
    pub fn pending_id(&self) -> Option<&TransferId> {
        match self {
            Entry::Transfer(_) => None,
            Entry::Post(p) => Some(&p.pending_id),
            Entry::Void(v) => Some(&v.pending_id),
        }
    }
}

impl From<Transfer> for Entry {
    fn from(t: Transfer) -> Self {
        Entry::Transfer(t)
    }
}
impl From<Post> for Entry {
    fn from(p: Post) -> Self {
        Entry::Post(p)
    }
}
impl From<Void> for Entry {
    fn from(v: Void) -> Self {
        Entry::Void(v)
    }
}

/// Which kind of entry created a stored transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Transfer,
    Post,
    Void,
}

/// Where a stored transfer stands. Only holds ever leave the state they were created in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Final: money moved (a posted transfer, a post, or a hold that was captured).
    Posted,
    /// An open hold.
    Pending,
    /// A hold released by a void; also the state of the void entry itself.
    Voided,
    /// A hold released by `expire_due`.
    Expired,
}

macro_rules! text_enum {
    ($ty:ident, $err:ident, $($variant:ident => $name:literal),*) => {
        impl $ty {
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
        }
        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(ParseError::$err(quote(s))),
                }
            }
        }
    };
}

text_enum!(EntryKind, BadEntryKind, Transfer => "transfer", Post => "post", Void => "void");
text_enum!(TransferState, BadState,
    Posted => "posted", Pending => "pending", Voided => "voided", Expired => "expired");

/// A transfer as the books keep it: the request that created it, what it did, and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    pub id: TransferId,
    pub kind: EntryKind,
    /// For a post or a void, the accounts of the hold it resolved.
    pub debit: AccountId,
    pub credit: AccountId,
    /// Held (pending), moved (posted, post) or released (void).
    pub amount: Amount,
    /// What a post or void gave back to the debit account's available balance.
    pub released: Amount,
    pub reason: Reason,
    pub pending: bool,
    pub expires_at: Option<Timestamp>,
    pub pending_id: Option<TransferId>,
    pub state: TransferState,
    /// When the store applied it (the store's clock; informational, not part of idempotency).
    pub created_at: Timestamp,
}

impl TransferRecord {
    /// The outcome the entry had when it was first applied, whatever happened to a hold since.
    pub fn outcome(&self, replayed: bool) -> TransferOutcome {
        let state = match self.kind {
            EntryKind::Transfer if self.pending => TransferState::Pending,
            EntryKind::Transfer | EntryKind::Post => TransferState::Posted,
            EntryKind::Void => TransferState::Voided,
        };
        TransferOutcome {
            id: self.id.clone(),
            debit: self.debit.clone(),
            credit: self.credit.clone(),
            amount: self.amount,
            released: self.released,
            state,
            replayed,
        }
    }
}

/// What one entry of a batch did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOutcome {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    /// Held by a hold, moved by a posted transfer or a post, released by a void.
    pub amount: Amount,
    /// Given back to the debit account by a post (the uncaptured rest) or a void (the whole hold).
    pub released: Amount,
    /// `Pending` for a hold, `Posted` for a transfer or a post, `Voided` for a void.
    pub state: TransferState,
    /// True when the id had already been applied with identical fields: nothing moved this time.
    pub replayed: bool,
}

/// One line of an account's statement: a transfer and its place in the books' order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Increases with every stored transfer; pass the last one seen as `after` for the next page.
    pub seq: u64,
    pub transfer: TransferRecord,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_a_batch_of_holds_skips_the_wait_for_the_disk() {
        let id = |s: &str| TransferId::new(s).unwrap();
        let amount = Amount::from_micros(5);
        let hold: Entry = Transfer::hold(
            id("hold:a"),
            AccountId::escrow(),
            AccountId::treasury(),
            amount,
            None,
        )
        .into();
        let posted: Entry = Transfer::posted(
            id("t"),
            AccountId::escrow(),
            AccountId::treasury(),
            amount,
            Reason::Topup,
        )
        .into();
        let capture: Entry = Post::new(id("capture:a"), id("hold:a"), amount).into();
        let release: Entry = Void::new(id("release:a"), id("hold:a")).into();
        assert!(!Entry::must_sync(&[hold.clone(), hold.clone()]));
        assert!(!Entry::must_sync(&[]));
        for durable in [posted, capture, release] {
            assert!(Entry::must_sync(std::slice::from_ref(&durable)));
            assert!(Entry::must_sync(&[hold.clone(), durable]));
        }
    }
}
