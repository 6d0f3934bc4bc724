//! Filing: a node's signed claim for the paperwork in its wallet. It names the hub it is filed with
//! and carries a nonce and a time, so a filing cannot be replayed at another hub or passed off later;
//! settlement is idempotent by paperwork hash on top of that.

use serde::{Deserialize, Serialize};

use crate::attestation::{Attestation, Telemetry};
use crate::ids::{NodeKeyId, PaperworkId, StackId};
use crate::keys::PublicKey;
use crate::signing::{Domain, Signed, SignedBody};
use crate::values::{Amount, Nonce, Sha256Digest, Timestamp};

/// Most paperwork ids in one filing.
pub const MAX_FILING_PAPERWORK: usize = 10_000;

/// The body of a Filing, signed by the Node Key under `stacknet/filing/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filing {
    pub node_key: PublicKey,
    /// The hub key this filing is addressed to.
    pub hub: PublicKey,
    /// Sorted, without duplicates.
    pub paperwork: Vec<PaperworkId>,
    pub created_at: Timestamp,
    pub nonce: Nonce,
}

impl SignedBody for Filing {
    const DOMAIN: Domain = Domain::Filing;
}

/// What a Node Key asks of the hub it is addressed to, besides filing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum NodeAction {
    /// The key's balance, its transfers and its payouts.
    Statement,
    /// Move earnings (all of them when `amount` is absent) to payout and send them to `destination`,
    /// the operator's account at their payment provider.
    Redeem {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<Amount>,
        destination: String,
    },
    /// The key's stake: bonded, unbonding (and when it can be withdrawn), its slashes.
    Stake,
    /// Move `amount` from the key's earnings to its stake.
    Bond { amount: Amount },
    /// Start unbonding `amount` of the stake; it stays slashable until the unbonding period ends.
    Unbond { amount: Amount },
    /// Move every unbonding amount whose period has ended back to the key's earnings.
    Withdraw,
    /// A validator asks for the tasks it is to check.
    Assignments,
    /// A validator commits to its verdict on one task before anyone reveals:
    /// `digest` = SHA-256(`salt` || the attestation's signed bytes).
    Commit {
        paperwork: PaperworkId,
        digest: Sha256Digest,
    },
    /// A validator reveals the attestation it committed to.
    Reveal {
        attestation: Box<Signed<Attestation>>,
        /// 32 bytes, lowercase hex.
        salt: String,
    },
    /// A guardian asks the hub to run `request` (an OpenAI chat request) on `node`, as an ordinary
    /// task of the guardian's probes Stack.
    Probe {
        node: NodeKeyId,
        request: serde_json::Value,
    },
    /// A guardian hands in what its probes of one node saw over a window.
    Telemetry { report: Box<Signed<Telemetry>> },
    /// The key registers with a Stack's referral code: that Stack becomes its referrer, named in
    /// every later contract for it. Only once: a key's referrer never changes.
    Refer { code: String },
    /// The key's owner offers its Node Key id for sale at `price`, paid to the Stack `proceeds`
    /// (less the transfer fee). This signed request is the seller's half of the rebinding: whoever
    /// buys at this price binds a new key to the id with it.
    List { price: Amount, proceeds: StackId },
    /// Withdraws the key's listing.
    Unlist,
    /// The key's paperwork in the hub's log from index `from` on, a page at a time: what a node
    /// recovers when its wallet lost its last writes (a power cut), so it can still file them.
    Logged { from: u64 },
}

/// The Stack a guardian's probes run as: derived from its key, so a node sees an id like any other
/// Stack's, and the guardian can fund it (`stacknet admin topup stk_...`) before it probes priced
/// models.
pub fn probes_stack(guardian: &PublicKey) -> StackId {
    StackId::derive(&[b"stacknet/probes/v1\n".as_slice(), guardian.as_bytes()].concat())
}

/// A request made with a Node Key, signed under `stacknet/node-request/v1`. Like a filing it names
/// the hub and carries a time and a nonce: the hub refuses it at another hub, outside a few minutes
/// of its clock, or a second time.
/// (No `deny_unknown_fields`: serde cannot combine it with `flatten`. An unknown field still fails,
/// at the signature: the body is verified as re-encoded from these fields.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    pub node_key: PublicKey,
    /// The Node Key id acted for, when `node_key` operates an id bound to it by a sale (absent: the
    /// id `node_key` operates: its own, or the one a sale bound it to, which the hub knows).
    /// (Not `node`: the `probe` action has a field of that name, flattened into the same object.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acts_for: Option<NodeKeyId>,
    pub hub: PublicKey,
    #[serde(flatten)]
    pub action: NodeAction,
    pub created_at: Timestamp,
    pub nonce: Nonce,
}

impl SignedBody for NodeRequest {
    const DOMAIN: Domain = Domain::NodeRequest;
}

/// What the hub decided about one filed paperwork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// Settled now: the shares were paid.
    Settled { amount: Amount },
    /// Filed before: nothing was paid this time.
    AlreadyFiled,
    /// Refused, for `reason`; nothing was paid. With `retry`, filing it again later may succeed (its
    /// challenge window has not passed, its cost is not captured yet); without, it never will.
    Refused {
        reason: String,
        #[serde(default, skip_serializing_if = "is_false")]
        retry: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Verdict {
    /// The hub holds the paperwork as filed: it is never filed again.
    pub fn is_filed(&self) -> bool {
        matches!(self, Verdict::Settled { .. } | Verdict::AlreadyFiled)
    }

    /// Refused for good: filing it again cannot succeed.
    pub fn is_final_refusal(&self) -> bool {
        matches!(self, Verdict::Refused { retry: false, .. })
    }
}

/// The hub's verdict on one paperwork of one filing, signed by the hub key under
/// `stacknet/filing-verdict/v1`: a node acts on it (stops filing the paperwork) only when the hub it
/// pinned signed it, for this paperwork, this Node Key and the very filing it sent.
/// (No `deny_unknown_fields`, as for [`NodeRequest`]: an unknown field fails at the signature.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilingVerdict {
    /// The hub key that decided.
    pub hub: PublicKey,
    /// The filing key.
    pub node_key: PublicKey,
    /// The digest of the signed filing answered (SHA-256 of its signed bytes), so a verdict cannot
    /// be replayed as the answer to another filing.
    pub filing: Sha256Digest,
    pub paperwork: PaperworkId,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl SignedBody for FilingVerdict {
    const DOMAIN: Domain = Domain::FilingVerdict;
}

impl FilingVerdict {
    /// `settled`, `already_filed` or `refused`, as on the wire.
    pub fn status(&self) -> &'static str {
        match self.verdict {
            Verdict::Settled { .. } => "settled",
            Verdict::AlreadyFiled => "already_filed",
            Verdict::Refused { .. } => "refused",
        }
    }

    /// What this filing paid for it.
    pub fn amount(&self) -> Option<Amount> {
        match self.verdict {
            Verdict::Settled { amount } => Some(amount),
            _ => None,
        }
    }

    /// Why it was refused.
    pub fn reason(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The hub holds it as filed: never file it again.
    pub fn is_filed(&self) -> bool {
        self.verdict.is_filed()
    }
}
