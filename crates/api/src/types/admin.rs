//! The admin API (`/stacknet/v1/admin/...`, the admin token as bearer): Stacks and their API keys,
//! top-ups, model prices.

use serde::{Deserialize, Serialize};
use stacknet_protocol::contract::PriceTerms;
use stacknet_protocol::{Amount, StackId, Timestamp};

use super::Balance;

/// `POST /stacknet/v1/admin/stacks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStack {
    pub name: String,
    /// A referral code (`ref_...`) of the Stack that brought this one: that Stack earns a share of
    /// this one's top-ups for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_code: Option<String>,
}

/// A Stack, as the admin API shows it (`POST` and `GET /stacknet/v1/admin/stacks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    pub id: StackId,
    pub name: String,
    pub created_at: Timestamp,
    /// The Stack that referred this one, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referred_by: Option<StackId>,
}

/// `GET /stacknet/v1/admin/stacks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Stack>,
}

impl StackList {
    pub fn new(data: Vec<Stack>) -> Self {
        Self {
            object: "list".to_owned(),
            data,
        }
    }
}

/// What an API key may do. An `owner` key manages its Stack (injections, skills, referral codes,
/// buying Node Keys) and makes requests; a `client` key only makes requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    Owner,
    #[default]
    Client,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Owner => "owner",
            KeyRole::Client => "client",
        }
    }
}

impl std::str::FromStr for KeyRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owner" => Ok(KeyRole::Owner),
            "client" => Ok(KeyRole::Client),
            other => Err(format!("role {other:?} is neither owner nor client")),
        }
    }
}

/// The body of `POST /stacknet/v1/admin/stacks/{id}/keys` (optional: a `client` key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    #[serde(default)]
    pub role: KeyRole,
}

/// `POST /stacknet/v1/admin/stacks/{id}/keys`: the new key, shown in this answer and nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    pub stack: StackId,
    pub role: KeyRole,
    /// The secret (`sk_...`).
    pub api_key: String,
    /// The first characters of the key, kept by the hub to recognise it by.
    pub prefix: String,
    pub created_at: Timestamp,
}

/// `DELETE /stacknet/v1/admin/keys/{prefix}`: the key revoked, which authenticates nothing from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedKey {
    pub stack: StackId,
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Timestamp,
}

/// A top-up (`POST /stacknet/v1/admin/stacks/{id}/topup` and `.../treasury/topup`). `id` makes it
/// idempotent: the same id with the same amount is applied once; with another amount it is
/// refused. Without one, each call is a new top-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The answer to a top-up (from the admin API or the payments webhook).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpAnswer {
    /// The ledger account credited (`stack:stk_...`, `treasury`).
    pub account: String,
    /// The ledger transfer's id.
    pub transfer: String,
    pub amount: Amount,
    /// The id was applied before: nothing moved this time.
    pub replayed: bool,
    /// The account's balance after the top-up.
    pub balance: Balance,
    /// The share of a Stack's top-up its referrer earns, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<ReferralShare>,
}

/// A referrer's share of a top-up, paid by the protocol treasury under its own transfer id (the
/// top-up's id with `referral:` before it), so a top-up sent again pays it once. `paid` is false
/// when the treasury could not cover it: sending the same top-up again retries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralShare {
    pub stack: StackId,
    pub amount: Amount,
    pub transfer: String,
    pub paid: bool,
}

/// `POST /stacknet/v1/admin/prices`: a model's price; fields left out are zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPrice {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_per_mtok: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_per_mtok: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_unit: Option<Amount>,
    /// The Stack credited as the model's provider in every contract for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<StackId>,
    /// The Stack credited as the provider of the model's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_provider: Option<StackId>,
}

/// A model's price as set (the answer to `POST /stacknet/v1/admin/prices`, and each entry of the
/// list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub model: String,
    pub price: PriceTerms,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<StackId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_provider: Option<StackId>,
}

/// `GET /stacknet/v1/admin/prices`: every priced model, and the default for the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Price>,
    pub default: PriceTerms,
}

impl PriceList {
    pub fn new(data: Vec<Price>, default: PriceTerms) -> Self {
        Self {
            object: "list".to_owned(),
            data,
            default,
        }
    }
}
