//! Money after the task: balances and statements (a Stack's with its API key, a node's with a
//! signed request), redemption and the payout rail's webhooks, and the payments webhook.

use serde::{Deserialize, Serialize};
use stacknet_protocol::{Amount, NodeKeyId, StackId, Timestamp};

/// A ledger account's balance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Credits minus debits of everything posted.
    pub posted: Amount,
    /// Open holds on the account (money reserved to leave it).
    pub held: Amount,
    /// What the account can still spend: `posted - held`.
    pub available: Amount,
}

/// Which way a statement line moved money, seen from the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Into the account (it is the transfer's credit side).
    #[serde(rename = "+")]
    In,
    /// Out of the account.
    #[serde(rename = "-")]
    Out,
}

/// One transfer of an account's statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Increases with every stored transfer; pass the last one seen as `after` for the next page.
    pub seq: u64,
    /// The transfer's id.
    pub id: String,
    /// `topup`, `hold`, `capture`, `share`, ... as the ledger names it.
    pub reason: String,
    /// `pending`, `posted` or `voided`.
    pub state: String,
    pub debit: String,
    pub credit: String,
    pub amount: Amount,
    /// What a post or void gave back to the debit account.
    pub released: Amount,
    pub direction: Direction,
}

/// The part every statement shares: an account's balance and a page of its transfers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub account: String,
    pub balance: Balance,
    pub transfers: Vec<StatementLine>,
    /// The `after` that reads the next page; `null` when this page is empty.
    pub next_after: Option<u64>,
}

/// Query of `GET /stacknet/v1/statement`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// One of the Stack's skills: the statement of its royalties account (`creator:skill_...`)
    /// instead of the Stack's balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<stacknet_protocol::SkillId>,
}

/// `GET /stacknet/v1/statement`: the Stack whose API key is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackStatement {
    pub stack: StackId,
    /// The skill whose royalties account this is, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<stacknet_protocol::SkillId>,
    #[serde(flatten)]
    pub statement: Statement,
}

/// `POST /stacknet/v1/nodes/statement`: a Node Key's earnings, payout-pending balance, transfers
/// and payouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatement {
    pub node_key: NodeKeyId,
    #[serde(flatten)]
    pub statement: Statement,
    /// Money on its way to the operator's payment account.
    pub payout_pending: Balance,
    pub payouts: Vec<Payout>,
    /// The key's stake account: its bond, and every move of it (bond, unbond, slash) with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stake: Option<Statement>,
    /// Why the key's stake was slashed, each with the task and the check it cites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slashes: Vec<super::Slash>,
}

/// `POST /stacknet/v1/nodes/logged`: one page of a Node Key's paperwork in the log, as logged.
/// The hub reads at most [`LOGGED_PAGE_LEAVES`] leaves a page; ask again from `next` until it is
/// `size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedPage {
    pub node_key: NodeKeyId,
    /// The key's paperwork among the leaves `from..next`, in log order.
    pub paperwork: Vec<stacknet_protocol::Signed<stacknet_protocol::paperwork::Paperwork>>,
    /// Where the next page starts.
    pub next: u64,
    /// The log's size when the page was read.
    pub size: u64,
}

/// Most log leaves one `logged` page reads.
pub const LOGGED_PAGE_LEAVES: u64 = 4_096;

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

/// A payout: the answer to `POST /stacknet/v1/nodes/redeem`, and each of a node statement's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
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

/// What the hub posts to the payout rail (HMAC-signed) to ask for a payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRequest {
    /// The payout's id, which the payment system's callback names.
    pub id: String,
    pub node_key: NodeKeyId,
    pub amount: Amount,
    pub destination: String,
    pub created_at: Timestamp,
}

/// The payout rail's answer to a [`PayoutRequest`]: `{"status": "confirmed"}` when it paid at once;
/// anything else leaves the payout `sent` until the callback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutAck {
    #[serde(default)]
    pub status: Option<String>,
}

impl PayoutAck {
    pub fn is_confirmed(&self) -> bool {
        self.status.as_deref() == Some("confirmed")
    }
}

/// `POST /stacknet/v1/webhooks/payouts`: the payment system confirms or fails a payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutCallback {
    pub id: String,
    /// `confirmed` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to a [`PayoutCallback`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutCallbackAnswer {
    pub id: String,
    /// The payout's state now.
    pub state: PayoutState,
    /// False when the payout was already final: the callback changed nothing.
    pub changed: bool,
}

/// `POST /stacknet/v1/webhooks/payments`: a payment provider's event. Only `topup` moves money;
/// other types are acknowledged and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
}

/// The answer to a [`PaymentEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PaymentAnswer {
    /// A `topup`, credited (or replayed).
    Credited(super::TopUpAnswer),
    /// Another type of event: `ignored` is always true.
    Ignored { id: String, ignored: bool },
}
