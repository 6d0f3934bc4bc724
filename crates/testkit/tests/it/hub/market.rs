//! The Node Key market end to end: a key is listed, bought once, its new key runs and files for the
//! id (the paperwork signed before the sale included), the seller's key operates nothing any more,
//! the price and fee land where they should; and what must not sell does not.

use serde_json::{json, Value};
use stacknet_api::types::Listing;
use stacknet_ledger::AccountId;
use stacknet_node::settlement::{file_wallet, HubClient};
use stacknet_protocol::wire::ErrorCode;
use stacknet_protocol::{Amount, NodeKeyId, SecretKey, Signed, StackId};
use stacknet_sdk::verify::{self, Content};
use stacknet_sdk::Client;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::gateway::{connect, expect_error_and_close, hello};
use super::money::{admin, books_balance, on_both_stores, posted, priced, topup, Db};
use super::{chat_body, post_chat};

on_both_stores!(a_node_key_is_sold_once_and_its_new_key_runs_and_files_for_the_id);

/// No sampling: an open validation case would keep a key from being sold (a slash may be pending).
fn unsampled(c: &mut stacknet_hub::HubConfig) {
    c.challenge_window_ms = 0;
    c.rules.probation_tasks = 0;
    c.rules.new_sample_bps = 0;
    c.rules.established_sample_bps = 0;
}

async fn fund(net: &TestNetwork, stack: StackId, micros: i64) {
    let resp = admin(
        net,
        &format!("/stacks/{stack}/topup"),
        json!({"amount": micros.to_string()}),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

async fn answer(net: &TestNetwork) -> Value {
    let resp = post_chat(net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn a_node_key_is_sold_once_and_its_new_key_runs_and_files_for_the_id(db: Db) {
    let mut net = priced(&db, Script::text("sold work"), unsampled).await;
    topup(&net, 5_000_000).await;
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let id = net.nodes[0].node.node_key_id();
    let old_key = net.nodes[0].key.clone();

    // The Stack that brought the node originated the key: it gets half the transfer fee.
    let (originator, key_o) = net.new_stack("originator").await;
    let code = Client::new(&net.hub.url())
        .unwrap()
        .with_api_key(&key_o)
        .create_referral()
        .await
        .unwrap()
        .code;
    hub.refer(&old_key, &code).await.unwrap();
    // Work before the sale: its paperwork is signed by the old key and not filed yet.
    let before = answer(&net).await;
    net.hub.hub.state.writer.flush().await;

    let (seller, _) = net.new_stack("seller").await;
    let (buyer, key_b) = net.new_stack("buyer").await;
    let (rival, key_c) = net.new_stack("rival").await;
    fund(&net, buyer, 5_000_000).await;
    fund(&net, rival, 5_000_000).await;
    let bonded = posted(&net, AccountId::stake(id)).await;
    assert!(bonded > 0);

    let listing: Listing = hub
        .list(&old_key, None, Amount::from_micros(2_000_000), seller)
        .await
        .unwrap();
    assert_eq!((listing.seq, listing.state.as_str()), (1, "open"));
    let err = hub
        .list(&old_key, None, Amount::from_micros(1), seller)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("409") && err.contains("listed already"), "{err}");
    let buyer_sdk = Client::new(&net.hub.url()).unwrap().with_api_key(&key_b);
    assert_eq!(buyer_sdk.key_state(id).await.unwrap().status, "listed");
    assert_eq!(buyer_sdk.listings().await.unwrap().data, vec![listing.clone()]);

    let treasury = posted(&net, AccountId::treasury()).await;
    let new_key = SecretKey::generate();
    let sale = buyer_sdk.buy_key(&listing, &new_key).await.unwrap();
    // 5% fee: half to the originator, half to the protocol; the seller's Stack gets the rest.
    assert_eq!(
        (
            sale.proceeds.micros(),
            sale.originator_fee.micros(),
            sale.protocol_fee.micros()
        ),
        (1_900_000, 50_000, 50_000)
    );
    assert_eq!(posted(&net, AccountId::stack(seller)).await, 1_900_000);
    assert_eq!(posted(&net, AccountId::stack(originator)).await, 50_000);
    assert_eq!(posted(&net, AccountId::treasury()).await, treasury + 50_000);
    assert_eq!(posted(&net, AccountId::stack(buyer)).await, 3_000_000);
    assert_eq!(
        posted(&net, AccountId::stake(id)).await,
        bonded,
        "the bond stays with the id"
    );

    // Sold once: a rival's purchase of the same listing moves nothing.
    let rival_sdk = Client::new(&net.hub.url()).unwrap().with_api_key(&key_c);
    let err = rival_sdk
        .buy_key(&listing, &SecretKey::generate())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(posted(&net, AccountId::stack(rival)).await, 5_000_000);
    let state = buyer_sdk.key_state(id).await.unwrap();
    assert_eq!(
        (state.status.as_str(), state.operating_key),
        ("transferred", Some(new_key.public_key()))
    );
    assert_eq!(state.bindings.len(), 1);

    // The seller's key operates nothing: its filings, requests and hellos are refused.
    let err = file_wallet(&hub, &old_key, net.nodes[0].node.wallet())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("was sold"), "{err}");
    let err = hub
        .list(&old_key, None, Amount::from_micros(1), seller)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    let (mut ws, nonce, hub_key) = connect(&net).await;
    let signed = Signed::sign(hello(&old_key, hub_key, nonce), &old_key).unwrap();
    let frame =
        stacknet_protocol::wire::encode(&stacknet_protocol::wire::NodeMessage::Hello(Box::new(signed)))
            .unwrap();
    futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(frame))
        .await
        .unwrap();
    let (code, message) = expect_error_and_close(&mut ws).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(message.contains("was sold"), "{message}");

    // The new key runs the id: the hub routes its tasks to it, under the id.
    let old_node = net.nodes.remove(0);
    old_node.stop().await;
    net.add_node_with_key(new_key.clone()).await;
    let nodes = net.hub.hub.state.nodes.clone();
    let runs = || {
        std::future::ready(
            nodes
                .get(&id)
                .filter(|n| n.key == new_key.public_key())
                .map(|_| ()),
        )
    };
    wait_until("the new key runs the id", WAIT_DEADLINE, runs).await;
    let after = answer(&net).await;
    assert_eq!(after["attribution"]["node_key"], json!(id));
    net.hub.hub.state.writer.flush().await;

    // Light verification of the id's answers needs its bindings after the sale.
    let evidence = buyer_sdk
        .evidence(&stacknet_sdk::Answer(after.clone()))
        .await
        .unwrap();
    let info_key = hub.hub_key;
    assert!(verify::answer(&Content::Whole(after.clone()), &evidence.paperwork, &info_key).is_err());
    verify::answer_bound(
        &Content::Whole(after.clone()),
        &evidence.paperwork,
        &info_key,
        &evidence.chain,
    )
    .unwrap();
    let early = buyer_sdk
        .evidence(&stacknet_sdk::Answer(before.clone()))
        .await
        .unwrap();
    verify::answer_bound(&Content::Whole(before), &early.paperwork, &info_key, &early.chain).unwrap();

    // The buyer files the id's paperwork: the new key's, and the one the old key signed before the sale.
    let docs = vec![early.paperwork.clone(), evidence.paperwork.clone()];
    let verdicts = hub.file(&new_key, docs).await.unwrap();
    assert!(verdicts.iter().all(|v| v.status() == "settled"), "{verdicts:?}");
    assert!(
        posted(&net, AccountId::node(id)).await > 0,
        "the earnings went to the id"
    );

    // Sold on: the buyer's key lists the id (naming it: the offer is checked on its own), the
    // rival buys it, and the chain of two sales checks for any verifier.
    let err = hub
        .list(&new_key, None, Amount::from_micros(1_000_000), buyer)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("400") && err.contains("acts_for"), "{err}");
    let resale = hub
        .list(&new_key, Some(id), Amount::from_micros(1_000_000), buyer)
        .await
        .unwrap();
    assert_eq!(resale.seq, 2);
    let third = SecretKey::generate();
    rival_sdk.buy_key(&resale, &third).await.unwrap();
    let chain = rival_sdk.key_state(id).await.unwrap().bindings;
    assert_eq!(chain.len(), 2);
    let now = stacknet_protocol::Timestamp::now();
    assert_eq!(
        stacknet_protocol::binding::key_in_force(id, &chain, &info_key, now),
        Ok(Some(third.public_key()))
    );
    let err = hub.statement(&new_key).await.unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("sold on"), "{err}");
    books_balance(&net).await;
}

/// A listing from `key` for `price` paid to `proceeds`, through the signed request.
async fn list(net: &TestNetwork, key: &SecretKey, price: i64, proceeds: StackId) -> Result<Listing, String> {
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    hub.list(key, None, Amount::from_micros(price), proceeds)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_key_with_a_pending_slash_or_unbonding_stake_is_not_sold() {
    let net = TestNetwork::start_with(Script::text("x"), unsampled).await;
    let (seller, _) = net.new_stack("seller").await;
    let (buyer, key_b) = net.new_stack("buyer").await;
    fund(&net, buyer, 5_000_000).await;
    let node = &net.nodes[0];
    let id: NodeKeyId = node.node.node_key_id();
    let listing = list(&net, &node.key, 1_000_000, seller).await.unwrap();

    // A validation of its task is in committee: a slash may be pending. No sale, no new listing.
    let case = stacknet_hub::validate::Case {
        paperwork: stacknet_protocol::PaperworkId::random(),
        node_key: id,
        status: stacknet_hub::validate::Status::Pending,
        seed: stacknet_protocol::Sha256Digest::of(b"seed"),
        canary: None,
        rounds: vec![stacknet_hub::validate::RoundState {
            round: stacknet_api::types::Round::Committee,
            commit_by: stacknet_protocol::Timestamp::now().plus_ms(3_600_000),
            members: Vec::new(),
            decided: false,
        }],
        code: None,
        convictors: Vec::new(),
        settled: false,
        opened_at: stacknet_protocol::Timestamp::now(),
    };
    net.hub
        .hub
        .state
        .store
        .put_case(case.record().unwrap())
        .await
        .unwrap();
    let sdk = Client::new(&net.hub.url()).unwrap().with_api_key(&key_b);
    let err = sdk.buy_key(&listing, &SecretKey::generate()).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("may be slashed"), "{err}");
    assert_eq!(
        posted(&net, AccountId::stack(buyer)).await,
        5_000_000,
        "nothing moved"
    );
    // Decided (here: passed), the key sells.
    let passed = stacknet_hub::validate::Case {
        status: stacknet_hub::validate::Status::Passed,
        rounds: Vec::new(),
        ..case
    };
    net.hub
        .hub
        .state
        .store
        .put_case(passed.record().unwrap())
        .await
        .unwrap();

    // Unbonding: neither listed nor sold until withdrawn.
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    hub.stake(
        &node.key,
        stacknet_protocol::filing::NodeAction::Unbond {
            amount: Amount::from_micros(1),
        },
    )
    .await
    .unwrap();
    let err = sdk.buy_key(&listing, &SecretKey::generate()).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("unbonding"), "{err}");
    assert_eq!(
        posted(&net, AccountId::stack(buyer)).await,
        5_000_000,
        "nothing moved"
    );
}

#[tokio::test]
async fn a_purchase_the_buyer_cannot_pay_or_sign_is_refused_and_moves_nothing() {
    let net = TestNetwork::start_with(Script::text("x"), unsampled).await;
    let (seller, _) = net.new_stack("seller").await;
    let (buyer, key_b) = net.new_stack("buyer").await;
    let node = &net.nodes[0];
    let id = node.node.node_key_id();
    let listing = list(&net, &node.key, 1_000_000, seller).await.unwrap();
    let sdk = Client::new(&net.hub.url()).unwrap().with_api_key(&key_b);

    // No balance: 402, the listing stays open.
    let err = sdk.buy_key(&listing, &SecretKey::generate()).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(402), Some("insufficient_balance")),
        "{err}"
    );
    assert_eq!(sdk.key_state(id).await.unwrap().status, "listed");
    fund(&net, buyer, 5_000_000).await;

    // A binding that accepts another offer, another sequence number, or is signed by another key.
    let url = format!("{}{}", net.hub.url(), stacknet_api::paths::market_buy(&id));
    let new_key = SecretKey::generate();
    let body = |edit: &dyn Fn(&mut stacknet_protocol::binding::KeyBinding), signer: &SecretKey| {
        let mut b = stacknet_protocol::binding::KeyBinding {
            node: id,
            seq: listing.seq,
            from_key: listing.seller_key,
            to_key: new_key.public_key(),
            offer: listing.offer_sha256,
            hub: listing.offer.body.hub,
            created_at: stacknet_protocol::Timestamp::now(),
        };
        edit(&mut b);
        json!({"binding": Signed::sign(b, signer).unwrap()})
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "offer",
            body(
                &|b| b.offer = stacknet_protocol::Sha256Digest::of(b"other"),
                &new_key,
            ),
        ),
        ("seq", body(&|b| b.seq = 2, &new_key)),
        ("signature", body(&|_| {}, &SecretKey::generate())),
        (
            "seller's own key",
            body(&|b| b.to_key = listing.seller_key, &node.key),
        ),
    ];
    for (what, body) in cases {
        let resp = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&key_b)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{what}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["param"], "binding", "{what}: {v}");
    }
    // A client key cannot buy for its Stack.
    let client_key: Value = admin(&net, &format!("/stacks/{buyer}/keys"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    let as_client = Client::new(&net.hub.url())
        .unwrap()
        .with_api_key(client_key["api_key"].as_str().unwrap());
    assert_eq!(
        as_client
            .buy_key(&listing, &SecretKey::generate())
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        posted(&net, AccountId::stack(buyer)).await,
        5_000_000,
        "nothing moved"
    );
    // An id the hub never saw is cold; an unlisted key cannot be bought.
    assert_eq!(sdk.key_state(NodeKeyId::random()).await.unwrap().status, "cold");
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    hub.unlist(&node.key).await.unwrap();
    assert_eq!(
        sdk.buy_key(&listing, &SecretKey::generate())
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}
