//! Node Key bindings: how a Node Key id changes hands.
//!
//! A Node Key id is `nk_` + the first 16 bytes of SHA-256 of its **first** public key. When the id
//! is sold, the id stays and a new operating key is bound to it; the seller's secret key then
//! operates nothing. A rebinding is two signatures:
//! - the seller's **offer**: a node request `list` (price, proceeds) signed by the key in force;
//! - the buyer's **binding** ([`KeyBinding`], `stacknet/binding/v1`), signed by the new key: the id,
//!   its sequence number (1 for the first sale), the old and new keys, the hub, and the SHA-256 of
//!   the offer's signed bytes, so the new key accepts exactly that offer.
//!
//! The hub keeps every rebinding and answers them for any id. A verifier holds the id's chain,
//! checks it ([`key_in_force`]), and checks a paperwork against the key in force when the hub
//! signed its contract (its `created_at`): paperwork signed before a sale stays valid, and a seller
//! cannot sign for the id after it.

use serde::{Deserialize, Serialize};

use crate::filing::{NodeAction, NodeRequest};
use crate::ids::NodeKeyId;
use crate::keys::PublicKey;
use crate::signing::{Domain, SignError, Signed, SignedBody};
use crate::values::{Sha256Digest, Timestamp};

/// The body of a binding, signed by the new key under `stacknet/binding/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBinding {
    pub node: NodeKeyId,
    /// 1 for the id's first sale, one more for each later one.
    pub seq: u64,
    /// The key in force before: the seller's.
    pub from_key: PublicKey,
    /// The key in force from `created_at` on: the buyer's.
    pub to_key: PublicKey,
    /// SHA-256 of the offer's signed bytes.
    pub offer: Sha256Digest,
    pub hub: PublicKey,
    pub created_at: Timestamp,
}

impl SignedBody for KeyBinding {
    const DOMAIN: Domain = Domain::Binding;
}

/// One sale of an id: the seller's signed offer and the buyer's signed binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebinding {
    pub offer: Signed<NodeRequest>,
    pub binding: Signed<KeyBinding>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindingError {
    #[error("binding {seq} is for {got}, not {expected}")]
    OtherNode {
        expected: NodeKeyId,
        got: NodeKeyId,
        seq: u64,
    },
    #[error("binding {got} comes where binding {expected} should")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("binding {seq} moves the id from key {got}, but key {expected} was in force")]
    NotInForce { seq: u64, expected: String, got: String },
    #[error("the first binding moves the id from key {0}, whose id is another")]
    NotFirstKey(String),
    #[error("binding {seq} names the offer {binding}, but its offer is {offer}")]
    OfferMismatch {
        seq: u64,
        binding: Sha256Digest,
        offer: Sha256Digest,
    },
    #[error("binding {0}'s offer is not a `list` request for the id")]
    NotAnOffer(u64),
    #[error("binding {seq} is for hub {got}, not {expected}")]
    OtherHub { seq: u64, expected: String, got: String },
    #[error("binding {0} binds the key already in force")]
    SameKey(u64),
    #[error("binding {0} is dated before the binding it follows")]
    Backdated(u64),
    #[error("binding {seq}: {what} signature: {source}")]
    Signature {
        seq: u64,
        what: &'static str,
        source: SignError,
    },
}

impl Rebinding {
    /// Checks this rebinding as the `seq`-th of `node`, with `from` in force before it, at hub `hub`.
    pub fn check(
        &self,
        node: NodeKeyId,
        seq: u64,
        from: &PublicKey,
        hub: &PublicKey,
    ) -> Result<(), BindingError> {
        let b = &self.binding.body;
        if b.node != node {
            return Err(BindingError::OtherNode {
                expected: node,
                got: b.node,
                seq: b.seq,
            });
        }
        if b.seq != seq {
            return Err(BindingError::OutOfOrder {
                expected: seq,
                got: b.seq,
            });
        }
        if b.from_key != *from {
            return Err(BindingError::NotInForce {
                seq,
                expected: from.to_hex(),
                got: b.from_key.to_hex(),
            });
        }
        if b.to_key == b.from_key {
            return Err(BindingError::SameKey(seq));
        }
        if b.hub != *hub || self.offer.body.hub != *hub {
            return Err(BindingError::OtherHub {
                seq,
                expected: hub.to_hex(),
                got: b.hub.to_hex(),
            });
        }
        let o = &self.offer.body;
        let offers_node = o.acts_for.unwrap_or_else(|| o.node_key.node_key_id()) == node;
        if o.node_key != *from || !offers_node || !matches!(o.action, NodeAction::List { .. }) {
            return Err(BindingError::NotAnOffer(seq));
        }
        let sig = |what| move |source| BindingError::Signature { seq, what, source };
        self.offer.verify(from).map_err(sig("offer"))?;
        let offer = self.offer.digest().map_err(sig("offer"))?;
        if b.offer != offer {
            return Err(BindingError::OfferMismatch {
                seq,
                binding: b.offer,
                offer,
            });
        }
        self.binding.verify(&b.to_key).map_err(sig("binding"))
    }
}

/// Checks `node`'s chain of rebindings (in order, from the first sale) at hub `hub`, and returns
/// the key in force at `at`: `None` when no sale had happened by then (the key in force is the
/// id's first key, whose id is the id itself), else the key the last sale before `at` bound.
pub fn key_in_force(
    node: NodeKeyId,
    chain: &[Rebinding],
    hub: &PublicKey,
    at: Timestamp,
) -> Result<Option<PublicKey>, BindingError> {
    let Some(first) = chain.first() else {
        return Ok(None);
    };
    let first_key = first.binding.body.from_key;
    if first_key.node_key_id() != node {
        return Err(BindingError::NotFirstKey(first_key.to_hex()));
    }
    let mut in_force = first_key;
    let mut at_time = None;
    let mut last_time: Option<Timestamp> = None;
    for (i, r) in chain.iter().enumerate() {
        let seq = i as u64 + 1;
        r.check(node, seq, &in_force, hub)?;
        let created = r.binding.body.created_at;
        if last_time.is_some_and(|t| created < t) {
            return Err(BindingError::Backdated(seq));
        }
        last_time = Some(created);
        in_force = r.binding.body.to_key;
        if created <= at {
            at_time = Some(in_force);
        }
    }
    Ok(at_time)
}

/// The key that operates `node` now: the last binding's, or `None` (the id's first key).
pub fn operating_key(
    node: NodeKeyId,
    chain: &[Rebinding],
    hub: &PublicKey,
) -> Result<Option<PublicKey>, BindingError> {
    Ok(match chain.last() {
        None => None,
        Some(last) => {
            key_in_force(node, chain, hub, last.binding.body.created_at)?;
            Some(last.binding.body.to_key)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::BPS_TOTAL;
    use crate::ids::StackId;
    use crate::keys::SecretKey;
    use crate::values::{Amount, Nonce};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(1_790_000_000_000 + ms).expect("a time")
    }

    fn sale(
        node: NodeKeyId,
        seq: u64,
        seller: &SecretKey,
        buyer: &SecretKey,
        hub: &PublicKey,
        when: i64,
    ) -> Rebinding {
        let offer = Signed::sign(
            NodeRequest {
                node_key: seller.public_key(),
                acts_for: Some(node),
                hub: *hub,
                action: NodeAction::List {
                    price: Amount::from_micros(i64::from(BPS_TOTAL)),
                    proceeds: StackId::random(),
                },
                created_at: at(when - 1),
                nonce: Nonce::random(),
            },
            seller,
        )
        .expect("signs");
        let binding = Signed::sign(
            KeyBinding {
                node,
                seq,
                from_key: seller.public_key(),
                to_key: buyer.public_key(),
                offer: offer.digest().expect("digest"),
                hub: *hub,
                created_at: at(when),
            },
            buyer,
        )
        .expect("signs");
        Rebinding { offer, binding }
    }

    #[test]
    fn a_request_naming_the_id_it_acts_for_and_a_probe_naming_a_node_both_round_trip() {
        // `acts_for` sits beside the flattened action, whose `probe` has a `node` of its own.
        let key = SecretKey::generate();
        let hub = SecretKey::generate().public_key();
        for (acts_for, action) in [
            (
                None,
                NodeAction::Probe {
                    node: NodeKeyId::random(),
                    request: serde_json::json!({"model": "m"}),
                },
            ),
            (Some(NodeKeyId::random()), NodeAction::Unlist),
        ] {
            let req = Signed::sign(
                NodeRequest {
                    node_key: key.public_key(),
                    acts_for,
                    hub,
                    action,
                    created_at: at(0),
                    nonce: Nonce::random(),
                },
                &key,
            )
            .expect("signs");
            let back: Signed<NodeRequest> =
                serde_json::from_str(&serde_json::to_string(&req).expect("encodes")).expect("decodes");
            assert_eq!(back, req);
            back.verify(&key.public_key()).expect("verifies");
        }
    }

    #[test]
    fn the_key_in_force_follows_the_chain_in_time() {
        let hub = SecretKey::generate().public_key();
        let (a, b, c) = (
            SecretKey::generate(),
            SecretKey::generate(),
            SecretKey::generate(),
        );
        let node = a.public_key().node_key_id();
        let chain = vec![sale(node, 1, &a, &b, &hub, 100), sale(node, 2, &b, &c, &hub, 200)];
        assert_eq!(key_in_force(node, &chain, &hub, at(50)), Ok(None));
        assert_eq!(
            key_in_force(node, &chain, &hub, at(150)),
            Ok(Some(b.public_key()))
        );
        assert_eq!(
            key_in_force(node, &chain, &hub, at(250)),
            Ok(Some(c.public_key()))
        );
        assert_eq!(operating_key(node, &chain, &hub), Ok(Some(c.public_key())));
        assert_eq!(operating_key(node, &[], &hub), Ok(None));
    }

    #[test]
    fn a_chain_that_skips_a_key_forges_an_offer_or_names_another_hub_is_refused() {
        let hub = SecretKey::generate().public_key();
        let (a, b, c) = (
            SecretKey::generate(),
            SecretKey::generate(),
            SecretKey::generate(),
        );
        let node = a.public_key().node_key_id();
        // The seller of the second sale must be the first buyer.
        let chain = vec![sale(node, 1, &a, &b, &hub, 100), sale(node, 2, &a, &c, &hub, 200)];
        assert!(matches!(
            key_in_force(node, &chain, &hub, at(300)),
            Err(BindingError::NotInForce { seq: 2, .. })
        ));
        // Sold by a key that never held the id.
        let chain = vec![sale(node, 1, &b, &c, &hub, 100)];
        assert!(matches!(
            key_in_force(node, &chain, &hub, at(300)),
            Err(BindingError::NotFirstKey(_))
        ));
        // An offer whose price was changed after signing.
        let mut forged = sale(node, 1, &a, &b, &hub, 100);
        forged.offer.body.action = NodeAction::List {
            price: Amount::from_micros(1),
            proceeds: StackId::random(),
        };
        assert!(matches!(
            key_in_force(node, &[forged], &hub, at(300)),
            Err(BindingError::Signature { what: "offer", .. })
        ));
        // Another hub's binding.
        let other = SecretKey::generate().public_key();
        assert!(matches!(
            key_in_force(node, &[sale(node, 1, &a, &b, &other, 100)], &hub, at(300)),
            Err(BindingError::OtherHub { .. })
        ));
        // Out of order.
        let chain = vec![sale(node, 2, &a, &b, &hub, 100)];
        assert!(matches!(
            key_in_force(node, &chain, &hub, at(300)),
            Err(BindingError::OutOfOrder { .. })
        ));
    }
}
