//! The records the hub's store keeps, as every implementation reads and writes them.

use serde::{Deserialize, Serialize};
use stacknet_protocol::contract::PriceTerms;
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, StackId, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRecord {
    pub id: StackId,
    pub name: String,
    pub created_at: Timestamp,
}

/// An API key as stored: only the SHA-256 of the secret, plus a short prefix to recognise it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub hash: [u8; 32],
    pub prefix: String,
    pub stack: StackId,
    pub created_at: Timestamp,
}

/// The price of one model, set by the admin; written into every contract for that model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub model: String,
    pub price: PriceTerms,
    pub updated_at: Timestamp,
}

/// An accepted paperwork, as appended to the log: the signed JSON as received and its Merkle leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperworkRecord {
    pub id: PaperworkId,
    pub contract: String,
    pub node_key: NodeKeyId,
    pub json: String,
    pub leaf_hash: [u8; 32],
    pub accepted_at: Timestamp,
    /// The escrow hold this task's cost is captured from (`None` for a free task).
    pub hold: Option<String>,
    /// The actual cost under the contract's price, captured from the hold.
    pub cost: Amount,
}

/// A paperwork in the log, with its place and settlement state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPaperwork {
    pub index: u64,
    pub record: PaperworkRecord,
    /// The actual cost was captured from escrow (set after the ledger write).
    pub captured: bool,
    pub filed_at: Option<Timestamp>,
}

/// Where a payout is. `Pending` and `Sent` are open; `Confirmed` and `Failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// Earnings moved to payout-pending; the webhook has not been delivered yet.
    Pending,
    /// The payment endpoint accepted the request; waiting for its confirmation.
    Sent,
    /// Paid out: the money left the books.
    Confirmed,
    /// Not paid: the money went back to the node's earnings.
    Failed,
}

impl PayoutState {
    pub const fn as_str(self) -> &'static str {
        match self {
            PayoutState::Pending => "pending",
            PayoutState::Sent => "sent",
            PayoutState::Confirmed => "confirmed",
            PayoutState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => PayoutState::Pending,
            "sent" => PayoutState::Sent,
            "confirmed" => PayoutState::Confirmed,
            "failed" => PayoutState::Failed,
            _ => return None,
        })
    }

    pub const fn is_final(self) -> bool {
        matches!(self, PayoutState::Confirmed | PayoutState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecord {
    /// `po_` + 32 hex characters.
    pub id: String,
    pub node_key: NodeKeyId,
    pub amount: Amount,
    /// The operator's account at the payment provider, passed through as given.
    pub destination: String,
    pub state: PayoutState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
