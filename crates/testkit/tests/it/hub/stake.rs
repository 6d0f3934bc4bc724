//! Stakes end to end: a node is routed tasks only with the minimum worker bond; its key alone moves
//! its bond, by signed requests (bond, unbond, withdraw after the unbonding period); a replayed
//! request moves nothing twice; the books balance and every move carries its reason.

use serde_json::{json, Value};
use stacknet_hub::rules::credits;
use stacknet_hub::store::UnbondingRecord;
use stacknet_ledger::{AccountId, Reason, TransferId};
use stacknet_node::NodeOptions;
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::{Amount, NodeKeyId, Nonce, SecretKey, Signed, Timestamp};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::{TestNetwork, TestNode};
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::money::{admin, books_balance, ledger, on_both_stores, posted, Db};
use super::{chat_body, client, post_chat};

on_both_stores!(
    a_node_is_routed_only_while_its_bond_reaches_the_minimum,
    a_withdrawal_waits_for_the_unbonding_period_then_returns_the_stake_once,
    an_unbonding_recorded_without_its_ledger_move_is_never_paid,
    a_request_signed_by_another_key_cannot_move_the_stake,
    a_replayed_stake_request_moves_nothing_twice,
    a_node_top_up_is_applied_once_per_reference_and_needs_the_admin_token,
);

/// A network whose one node is connected but has bonded nothing.
async fn unbonded(db: &Db, adjust: impl FnOnce(&mut stacknet_hub::HubConfig)) -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(Script::text("hi"), |c| {
        db.apply(c);
        adjust(c);
    })
    .await;
    let options = NodeOptions::new(net.hub.url());
    let base = net.upstream.base_url().to_owned();
    let node = TestNode::start_with(options, &base, &[MOCK_MODEL], net.dir.path()).await;
    net.wait_connected(&node).await;
    net.nodes.push(node);
    net
}

fn node_id(net: &TestNetwork) -> NodeKeyId {
    net.nodes[0].key.public_key().node_key_id()
}

/// `action` signed by `signer` in the name of `key`'s public key, as the body the hub gets.
fn signed(net: &TestNetwork, key: &SecretKey, signer: &SecretKey, action: NodeAction) -> Vec<u8> {
    let req = NodeRequest {
        acts_for: None,
        node_key: key.public_key(),
        hub: net.hub.hub.state.hub_key.public_key(),
        action,
        created_at: Timestamp::now(),
        nonce: Nonce::random(),
    };
    serde_json::to_vec(&Signed::sign(req, signer).unwrap()).unwrap()
}

async fn post_stake(net: &TestNetwork, body: Vec<u8>) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{}", net.hub.url(), stacknet_api::paths::STAKE))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// `action` by the network's node, signed with its own key.
async fn stake(net: &TestNetwork, action: NodeAction) -> (u16, Value) {
    let key = &net.nodes[0].key;
    post_stake(net, signed(net, key, key, action)).await
}

fn micros(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an amount: {v}"))
}

/// Withdraws, once the unbonding period has ended, the 10 credits unbonded of a 1,000-credit bond:
/// they are back in the earnings, 990 stay bonded, nothing is left unbonding.
async fn withdraw_the_10_unbonded(net: &TestNetwork) {
    let withdrawn = wait_until("the unbonding period ends", WAIT_DEADLINE, || async {
        let (status, body) = stake(net, NodeAction::Withdraw).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(micros(&withdrawn["earnings"]), credits(10).micros());
    assert_eq!(micros(&withdrawn["bonded"]), credits(990).micros());
    assert_eq!(withdrawn["unbonding"], json!([]));
}

async fn topup_node(
    net: &TestNetwork,
    node: NodeKeyId,
    amount: Amount,
    reference: &str,
) -> reqwest::Response {
    admin(
        net,
        &format!("/nodes/{node}/topup"),
        json!({"amount": amount.micros().to_string(), "reference": reference}),
    )
    .await
}

/// The reasons of every transfer into or out of `account`.
async fn reasons(net: &TestNetwork, account: AccountId) -> Vec<Reason> {
    let lines = ledger(net).transfers_of(account, 100, None).await.unwrap();
    lines.iter().map(|l| l.transfer.reason).collect()
}

async fn a_node_is_routed_only_while_its_bond_reaches_the_minimum(db: Db) {
    let net = unbonded(&db, |_| {}).await;
    let nk = node_id(&net);
    let refused = post_chat(&net, &chat_body(false)).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_bonded_node", "{body}");
    assert_eq!(body["error"]["type"], "service_unavailable_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(MOCK_MODEL) && message.contains("1000000000"),
        "{message}"
    );

    // Bonding more than the earnings hold is refused, clearly, and moves nothing.
    let (status, body) = stake(&net, NodeAction::Bond { amount: credits(1) }).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_earnings", "{body}");

    let resp = topup_node(&net, nk, credits(1_000), "wire-1").await;
    assert_eq!(resp.status(), 200);
    let (status, body) = stake(
        &net,
        NodeAction::Bond {
            amount: credits(1_000),
        },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(micros(&body["bonded"]), credits(1_000).micros());
    assert_eq!(micros(&body["earnings"]), 0);
    assert_eq!(body["suspended"], false);
    let served = post_chat(&net, &chat_body(false)).await;
    assert_eq!(served.status(), 200, "{}", served.text().await.unwrap());

    // One micro-credit unbonding puts the node below the minimum: no more tasks.
    let (status, body) = stake(
        &net,
        NodeAction::Unbond {
            amount: Amount::from_micros(1),
        },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(micros(&body["bonded"]), credits(1_000).micros() - 1);
    assert_eq!(body["unbonding"].as_array().unwrap().len(), 1, "{body}");
    let refused = post_chat(&net, &chat_body(false)).await;
    assert_eq!(refused.status(), 503);
    // Unbonding more than is bonded is refused.
    let (status, body) = stake(
        &net,
        NodeAction::Unbond {
            amount: credits(1_000),
        },
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "amount", "{body}");
    // The node still holds its connection: it just gets no task.
    assert_eq!(net.hub.hub.state.nodes.connected().len(), 1);

    // The books balance, and each account moved only for its reasons.
    books_balance(&net).await;
    for r in reasons(&net, AccountId::stake(nk)).await {
        assert!(matches!(r, Reason::StakeBond | Reason::Unbond), "{r:?}");
    }
    assert_eq!(reasons(&net, AccountId::unbonding(nk)).await, [Reason::Unbond]);
    assert_eq!(posted(&net, AccountId::unbonding(nk)).await, 1);
}

async fn a_withdrawal_waits_for_the_unbonding_period_then_returns_the_stake_once(db: Db) {
    // Long enough that the first withdrawal comes before it ends, short enough to wait for.
    let net = unbonded(&db, |c| c.rules.unbonding_period_ms = 1_500).await;
    let nk = node_id(&net);
    assert_eq!(topup_node(&net, nk, credits(1_000), "w").await.status(), 200);
    assert_eq!(
        stake(
            &net,
            NodeAction::Bond {
                amount: credits(1_000)
            }
        )
        .await
        .0,
        200
    );
    let (status, body) = stake(&net, NodeAction::Withdraw).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing is unbonding"),
        "{body}"
    );
    let (status, _) = stake(&net, NodeAction::Unbond { amount: credits(10) }).await;
    assert_eq!(status, 200);
    let (status, body) = stake(&net, NodeAction::Withdraw).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("can be withdrawn from"),
        "{body}"
    );
    assert_eq!(posted(&net, AccountId::node(nk)).await, 0);

    withdraw_the_10_unbonded(&net).await;
    // Nothing is left to withdraw: a second withdrawal moves nothing.
    let (status, _) = stake(&net, NodeAction::Withdraw).await;
    assert_eq!(status, 400);
    assert_eq!(posted(&net, AccountId::node(nk)).await, credits(10).micros());
    assert_eq!(posted(&net, AccountId::unbonding(nk)).await, 0);
    assert_eq!(
        reasons(&net, AccountId::unbonding(nk)).await,
        [Reason::Unbond, Reason::Unbond]
    );
    books_balance(&net).await;
}

/// An unbond writes its record, then its ledger move. A crash between them leaves a record whose
/// money never moved: it is never shown, never withdrawn (the withdrawal would ask the unbonding
/// account for more than it holds), and goes at the next withdrawal. A refused unbond leaves none.
async fn an_unbonding_recorded_without_its_ledger_move_is_never_paid(db: Db) {
    let net = unbonded(&db, |c| c.rules.unbonding_period_ms = 1_000).await;
    let nk = node_id(&net);
    let store = net.hub.hub.state.store.clone();
    assert_eq!(topup_node(&net, nk, credits(1_000), "c").await.status(), 200);
    let (status, _) = stake(
        &net,
        NodeAction::Bond {
            amount: credits(1_000),
        },
    )
    .await;
    assert_eq!(status, 200);
    // What the crash left: a matured record of 500 credits, nothing in the ledger under its id.
    let long_ago = Timestamp::from_unix_ms(1_000).unwrap();
    let orphan = UnbondingRecord {
        id: format!("unbond:{}", "0".repeat(32)),
        node_key: nk,
        amount: credits(500),
        created_at: long_ago,
        withdrawable_at: long_ago,
        withdrawn_at: None,
    };
    store.add_unbonding(orphan).await.unwrap();
    let (status, body) = stake(&net, NodeAction::Stake).await;
    assert_eq!(status, 200);
    assert_eq!(body["unbonding"], json!([]), "{body}");
    // A refused unbond (more than is bonded) leaves no record of its own.
    let (status, body) = stake(
        &net,
        NodeAction::Unbond {
            amount: credits(5_000),
        },
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(store.unbondings_of(nk).await.unwrap().len(), 1);

    let (status, _) = stake(&net, NodeAction::Unbond { amount: credits(10) }).await;
    assert_eq!(status, 200);
    withdraw_the_10_unbonded(&net).await;
    assert!(
        store.unbondings_of(nk).await.unwrap().is_empty(),
        "the orphan is removed"
    );
    assert_eq!(posted(&net, AccountId::unbonding(nk)).await, 0);
    books_balance(&net).await;
}

async fn a_request_signed_by_another_key_cannot_move_the_stake(db: Db) {
    let net = TestNetwork::start_with(Script::text("hi"), |c| db.apply(c)).await;
    let victim = &net.nodes[0].key;
    let nk = node_id(&net);
    let thief = SecretKey::generate();
    let bonded = posted(&net, AccountId::stake(nk)).await;
    assert_eq!(bonded, credits(1_000).micros(), "the test kit bonds its node");
    for action in [
        NodeAction::Unbond {
            amount: credits(1_000),
        },
        NodeAction::Withdraw,
        NodeAction::Bond { amount: credits(1) },
    ] {
        let (status, body) = post_stake(&net, signed(&net, victim, &thief, action)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "invalid_signature", "{body}");
    }
    // Addressed to another hub, or outside the clock tolerance: refused too.
    let mut req = NodeRequest {
        acts_for: None,
        node_key: victim.public_key(),
        hub: thief.public_key(),
        action: NodeAction::Unbond { amount: credits(1) },
        created_at: Timestamp::now(),
        nonce: Nonce::random(),
    };
    let body = serde_json::to_vec(&Signed::sign(req.clone(), victim).unwrap()).unwrap();
    assert_eq!(post_stake(&net, body).await.0, 400);
    req.hub = net.hub.hub.state.hub_key.public_key();
    req.created_at = Timestamp::from_unix_ms(Timestamp::now().unix_ms() - 3_600_000).unwrap();
    let body = serde_json::to_vec(&Signed::sign(req, victim).unwrap()).unwrap();
    assert_eq!(post_stake(&net, body).await.0, 400);
    assert_eq!(posted(&net, AccountId::stake(nk)).await, bonded);
    assert_eq!(posted(&net, AccountId::unbonding(nk)).await, 0);
    let served = post_chat(&net, &chat_body(false)).await;
    assert_eq!(served.status(), 200);
}

async fn a_replayed_stake_request_moves_nothing_twice(db: Db) {
    let net = TestNetwork::start_with(Script::text("hi"), |c| db.apply(c)).await;
    let key = &net.nodes[0].key;
    let nk = node_id(&net);
    assert_eq!(topup_node(&net, nk, credits(5), "r").await.status(), 200);
    for action in [
        NodeAction::Bond { amount: credits(2) },
        NodeAction::Unbond { amount: credits(3) },
    ] {
        let body = signed(&net, key, key, action);
        let (first, _) = post_stake(&net, body.clone()).await;
        assert_eq!(first, 200);
        let (again, answer) = post_stake(&net, body).await;
        assert_eq!(again, 409, "{answer}");
        assert_eq!(answer["error"]["code"], "conflict", "{answer}");
    }
    assert_eq!(posted(&net, AccountId::node(nk)).await, credits(3).micros());
    assert_eq!(posted(&net, AccountId::stake(nk)).await, credits(999).micros());
    assert_eq!(posted(&net, AccountId::unbonding(nk)).await, credits(3).micros());

    // Below the nonce check, the transfer id alone keeps one request from moving money twice.
    let state = &net.hub.hub.state;
    let id = TransferId::new("bond:same-request").unwrap();
    for _ in 0..2 {
        stacknet_hub::stake::bond(state, nk, credits(1), id.clone())
            .await
            .unwrap();
    }
    assert_eq!(posted(&net, AccountId::stake(nk)).await, credits(1_000).micros());
    books_balance(&net).await;
}

async fn a_node_top_up_is_applied_once_per_reference_and_needs_the_admin_token(db: Db) {
    let net = TestNetwork::start_with(Script::text("hi"), |c| db.apply(c)).await;
    let nk = node_id(&net);
    let first = topup_node(&net, nk, credits(7), "pay-1").await;
    assert_eq!(first.status(), 200);
    let again: Value = topup_node(&net, nk, credits(7), "pay-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["replayed"], true, "{again}");
    let other = topup_node(&net, nk, credits(8), "pay-1").await;
    assert_eq!(other.status(), 409);
    assert_eq!(posted(&net, AccountId::node(nk)).await, credits(7).micros());
    let anonymous = client()
        .post(format!("{}/stacknet/v1/admin/nodes/{nk}/topup", net.hub.url()))
        .json(&json!({"amount": "1", "reference": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad = admin(
        &net,
        "/nodes/stk_nope/topup",
        json!({"amount": "1", "reference": "x"}),
    )
    .await;
    assert_eq!(bad.status(), 400);
    books_balance(&net).await;
}
