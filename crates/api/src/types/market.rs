//! The Node Key market (`/stacknet/v1/market/...`): listings, a key's state and chain of
//! rebindings, and a purchase.

use serde::{Deserialize, Serialize};
use stacknet_protocol::binding::{KeyBinding, Rebinding};
use stacknet_protocol::filing::NodeRequest;
use stacknet_protocol::{Amount, NodeKeyId, PublicKey, Sha256Digest, Signed, StackId, Timestamp};

/// A Node Key for sale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub node: NodeKeyId,
    pub price: Amount,
    /// The Stack the price (less the transfer fee) is paid to.
    pub proceeds: StackId,
    /// The sequence number the sale's binding must carry.
    pub seq: u64,
    /// The key that sells it (the key in force).
    pub seller_key: PublicKey,
    /// The seller's signed `list` request, and the SHA-256 of its signed bytes, which the buyer's
    /// binding names as its `offer`.
    pub offer: Signed<NodeRequest>,
    pub offer_sha256: Sha256Digest,
    /// `open`, `withdrawn` or `sold`.
    pub state: String,
    pub listed_at: Timestamp,
}

/// `GET /stacknet/v1/market/keys`: the open listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Listing>,
    /// The transfer fee, in basis points of the price: half to the Stack that originated the key
    /// (its referrer; the treasury when none), half to the protocol.
    pub fee_bps: u32,
}

/// `GET /stacknet/v1/market/keys/{id}`: a Node Key id's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub node: NodeKeyId,
    /// `listed` (for sale now), `connected` (serving now), `transferred` (sold, its new key not
    /// connected now), `active` (bonded enough to be routed tasks), or `cold` (none of these).
    pub status: String,
    /// The key that operates the id now; absent until it is first sold (its first key, whose id
    /// it is, operates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_key: Option<PublicKey>,
    /// Every sale, first first: what a verifier needs to check the id's paperwork.
    pub bindings: Vec<Rebinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
    pub bonded: Amount,
}

/// The body of `POST /stacknet/v1/market/keys/{id}/buy` (an owner API key of the buying Stack):
/// the binding, signed by the new key, accepting the listing's offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyKey {
    pub binding: Signed<KeyBinding>,
}

/// `GET /stacknet/v1/market/bindings`: every rebinding, in the order checkpoints commit to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Rebinding>,
}

/// A sale done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    pub node: NodeKeyId,
    pub seq: u64,
    pub buyer: StackId,
    pub new_key: PublicKey,
    pub price: Amount,
    /// What the seller's `proceeds` Stack received.
    pub proceeds: Amount,
    /// The fee's halves: to the Stack that originated the key (or the treasury) and to the protocol.
    pub originator_fee: Amount,
    pub protocol_fee: Amount,
    /// The ledger transfers, by id.
    pub transfers: Vec<String>,
}
