//! Filing: a node's signed claim for the paperwork in its wallet. It names the hub it is filed with
//! and carries a nonce and a time, so a filing cannot be replayed at another hub or passed off later;
//! settlement is idempotent by paperwork hash on top of that.

use serde::{Deserialize, Serialize};

use crate::ids::PaperworkId;
use crate::keys::PublicKey;
use crate::signing::{Domain, SignedBody};
use crate::values::{Amount, Nonce, Timestamp};

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
}

/// A request made with a Node Key, signed under `stacknet/node-request/v1`. Like a filing it names
/// the hub and carries a time and a nonce: the hub refuses it at another hub, outside a few minutes
/// of its clock, or a second time.
/// (No `deny_unknown_fields`: serde cannot combine it with `flatten`. An unknown field still fails,
/// at the signature: the body is verified as re-encoded from these fields.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    pub node_key: PublicKey,
    pub hub: PublicKey,
    #[serde(flatten)]
    pub action: NodeAction,
    pub created_at: Timestamp,
    pub nonce: Nonce,
}

impl SignedBody for NodeRequest {
    const DOMAIN: Domain = Domain::NodeRequest;
}
