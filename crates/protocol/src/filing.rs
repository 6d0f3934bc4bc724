//! Filing: a node's signed claim for the paperwork in its wallet. It names the hub it is filed with
//! and carries a nonce and a time, so a filing cannot be replayed at another hub or passed off later;
//! settlement is idempotent by paperwork hash on top of that.

use serde::{Deserialize, Serialize};

use crate::ids::PaperworkId;
use crate::keys::PublicKey;
use crate::signing::{Domain, SignedBody};
use crate::values::{Nonce, Timestamp};

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
