//! The JSON of the hub's bodies, field by field, as the hub sent it before it was typed: each body
//! read from that JSON writes the same JSON back.

#![allow(clippy::unwrap_used)]

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use stacknet_protocol::{examples, StackId};

use super::*;

const AT: &str = "2026-11-30T05:00:00.000Z";

fn round_trip<T: DeserializeOwned + Serialize>(wire: Value) -> T {
    let typed: T = serde_json::from_value(wire.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), wire);
    typed
}

fn balance(posted: &str, held: &str, available: &str) -> Value {
    json!({"posted": posted, "held": held, "available": available})
}

#[test]
fn admin_bodies_keep_their_fields() {
    let stack = StackId::random().to_string();
    let one = json!({"id": stack, "name": "my app", "created_at": AT});
    round_trip::<Stack>(one.clone());
    round_trip::<StackList>(json!({"object": "list", "data": [one]}));
    round_trip::<NewKey>(
        json!({"stack": stack, "role": "client", "api_key": "sk_x", "prefix": "sk_x", "created_at": AT}),
    );
    round_trip::<NewKeyRequest>(json!({"role": "owner"}));
    assert_eq!(
        serde_json::from_value::<NewKeyRequest>(json!({})).unwrap().role,
        KeyRole::Client
    );
    round_trip::<Stack>(json!({"id": stack, "name": "brought", "created_at": AT, "referred_by": stack}));
    let topup: TopUp = round_trip(json!({"amount": "5000", "id": "inv-1"}));
    assert_eq!(topup.amount.micros(), 5000);
    round_trip::<TopUp>(json!({"amount": "5000"}));
    assert!(serde_json::from_value::<TopUp>(json!({"amount": "1", "extra": 1})).is_err());
    round_trip::<TopUpAnswer>(json!({
        "account": format!("stack:{stack}"), "transfer": "topup:admin:inv-1", "amount": "5000",
        "replayed": false, "balance": balance("5000", "0", "5000"),
    }));
    round_trip::<TopUpAnswer>(json!({
        "account": format!("stack:{stack}"), "transfer": "topup:admin:inv-2", "amount": "5000",
        "replayed": false, "balance": balance("5000", "0", "5000"),
        "referral": {"stack": stack, "amount": "250", "transfer": "referral:00", "paid": false},
    }));
    let terms = json!({"input_per_mtok": "1", "output_per_mtok": "2", "per_request": "3", "per_unit": "0"});
    round_trip::<SetPrice>(json!({"model": "m", "input_per_mtok": "1", "per_request": "3"}));
    let price = json!({"model": "m", "price": terms, "updated_at": AT});
    round_trip::<Price>(price.clone());
    round_trip::<Price>(json!({"model": "m", "price": terms, "updated_at": AT, "model_provider": stack}));
    round_trip::<PriceList>(json!({"object": "list", "data": [price], "default": terms}));
}

#[test]
fn statements_keep_their_fields() {
    let stack = StackId::random().to_string();
    let node = examples::node_key().public_key().node_key_id().to_string();
    let line = |seq: u64, direction: &str| {
        json!({
            "seq": seq, "id": format!("t{seq}"), "reason": "topup", "state": "posted", "debit": "external:topup",
            "credit": format!("stack:{stack}"), "amount": "5000", "released": "0", "direction": direction,
        })
    };
    let s: StackStatement = round_trip(json!({
        "stack": stack, "account": format!("stack:{stack}"), "balance": balance("5000", "10", "4990"),
        "transfers": [line(1, "+"), line(2, "-")], "next_after": 2,
    }));
    assert_eq!(s.statement.transfers[0].direction, Direction::In);
    assert_eq!(s.statement.transfers[1].direction, Direction::Out);
    round_trip::<StackStatement>(json!({
        "stack": stack, "account": format!("stack:{stack}"), "balance": balance("0", "0", "0"),
        "transfers": [], "next_after": null,
    }));
    let payout = json!({
        "id": "po_1", "node_key": node, "amount": "70", "destination": "acct_1", "state": "sent",
        "attempts": 1, "last_error": null, "created_at": AT, "updated_at": AT,
    });
    let n: NodeStatement = round_trip(json!({
        "node_key": node, "account": format!("node:{node}"), "balance": balance("0", "0", "0"),
        "transfers": [], "next_after": null, "payout_pending": balance("70", "0", "70"),
        "payouts": [payout.clone()],
    }));
    assert_eq!(n.payouts[0].state, PayoutState::Sent);
    round_trip::<Payout>(payout);
}

#[test]
fn payout_and_payment_webhooks_keep_their_fields() {
    let node = examples::node_key().public_key().node_key_id().to_string();
    round_trip::<PayoutRequest>(json!({
        "id": "po_1", "node_key": node, "amount": "70", "destination": "acct_1", "created_at": AT,
    }));
    assert!(round_trip::<PayoutAck>(json!({"status": "confirmed"})).is_confirmed());
    assert!(!serde_json::from_value::<PayoutAck>(json!({}))
        .unwrap()
        .is_confirmed());
    round_trip::<PayoutCallback>(json!({"id": "po_1", "status": "failed", "reason": "closed"}));
    round_trip::<PayoutCallbackAnswer>(json!({"id": "po_1", "state": "failed", "changed": true}));
    let stack = StackId::random().to_string();
    round_trip::<PaymentEvent>(json!({"id": "evt_1", "type": "topup", "stack": stack, "amount": "5000"}));
    let ignored: PaymentAnswer = round_trip(json!({"id": "evt_2", "ignored": true}));
    assert!(matches!(ignored, PaymentAnswer::Ignored { .. }));
    let credited: PaymentAnswer = round_trip(json!({
        "account": format!("stack:{stack}"), "transfer": "topup:webhook:evt_1", "amount": "5000",
        "replayed": true, "balance": balance("5000", "0", "5000"),
    }));
    assert!(matches!(credited, PaymentAnswer::Credited(_)));
}

#[test]
fn log_bodies_keep_their_fields() {
    let hash = "ab".repeat(32);
    round_trip::<LogCheckpoint>(json!({
        "origin": "stacknet.hub/8a88e3dd7409f195", "size": 8, "root": hash, "note": "n", "vkey": "v",
    }));
    round_trip::<InclusionProof>(
        json!({"leaf_index": 4, "tree_size": 6, "leaf_hash": hash, "proof": [hash]}),
    );
    round_trip::<ConsistencyProof>(json!({"from": 3, "to": 6, "proof": [hash, hash]}));
}

#[test]
fn error_bodies_keep_their_fields() {
    let wire = json!({"error": {"message": "Invalid admin token.", "type": "invalid_request_error",
                                "param": null, "code": "invalid_admin_token"}});
    round_trip::<ErrorBody>(wire.clone());
    assert_eq!(
        ErrorBody::message_of(&wire).as_deref(),
        Some("Invalid admin token.")
    );
    assert_eq!(ErrorBody::message_of(&json!({"detail": "nginx"})), None);
}
