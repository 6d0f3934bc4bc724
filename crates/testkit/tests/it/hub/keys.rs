//! Revoking API keys, and registry changes (keys, prices) reaching every hub on one database.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::{TestHub, TestNetwork};
use stacknet_testkit::wait_until;

use super::client;

/// How soon a change made through one hub must be in force on another sharing its database.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(1);

async fn models(hub: &TestHub, key: &str) -> reqwest::Response {
    client()
        .get(format!("{}/v1/models", hub.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// `DELETE /stacknet/v1/admin/keys/{prefix}` on `hub`.
async fn revoke(net: &TestNetwork, hub: &TestHub, prefix: &str) -> reqwest::Response {
    client()
        .delete(format!("{}/stacknet/v1/admin/keys/{prefix}", hub.url()))
        .bearer_auth(&net.admin_token)
        .send()
        .await
        .unwrap()
}

fn prefix(key: &str) -> String {
    key.chars()
        .take(stacknet_hub::auth::API_KEY_SHOWN_CHARS)
        .collect()
}

/// A second hub process on the first one's data directory (so the same SQLite database).
async fn second_hub(net: &TestNetwork) -> TestHub {
    let config = (*net.hub.hub.state.config).clone();
    TestHub::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn assert_invalid_key(resp: reqwest::Response) {
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
}

#[tokio::test]
async fn a_revoked_api_key_is_refused_at_once() {
    let net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    assert_eq!(models(&net.hub, &net.api_key).await.status(), 200);

    let resp = revoke(&net, &net.hub, &prefix(&net.api_key)).await;
    assert_eq!(resp.status(), 200);
    let revoked: Value = resp.json().await.unwrap();
    assert_eq!(revoked["prefix"], prefix(&net.api_key));
    assert_eq!(revoked["stack"], net.stack.to_string());
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    assert_invalid_key(models(&net.hub, &net.api_key).await).await;
    assert_eq!(
        revoke(&net, &net.hub, &prefix(&net.api_key)).await.status(),
        404,
        "a revoked key is revoked once"
    );
    assert_eq!(revoke(&net, &net.hub, "sk_0000000").await.status(), 404);
}

#[tokio::test]
async fn a_key_revoked_by_another_process_is_refused_within_a_second() {
    let net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let mut other = second_hub(&net).await;
    assert_eq!(models(&other, &net.api_key).await.status(), 200);

    assert_eq!(revoke(&net, &net.hub, &prefix(&net.api_key)).await.status(), 200);
    let keys = other.hub.state.api_keys.clone();
    wait_until(
        "the other hub forgets the revoked key",
        PROPAGATION_DEADLINE,
        || std::future::ready(keys.stack_of(&net.api_key).is_none().then_some(())),
    )
    .await;
    assert_invalid_key(models(&other, &net.api_key).await).await;
    other.stop().await;
}

#[tokio::test]
async fn a_price_set_by_another_process_is_used_within_a_second() {
    let net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let mut other = second_hub(&net).await;
    let model = "priced-elsewhere";
    let before = other.hub.state.prices.get(model);

    let resp = client()
        .post(format!("{}/stacknet/v1/admin/prices", net.hub.url()))
        .bearer_auth(&net.admin_token)
        .json(&json!({"model": model, "input_per_mtok": "7000000", "per_request": "3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let set = net.hub.hub.state.prices.get(model);
    assert_ne!(set, before, "the price set differs from the default");

    let prices = other.hub.state.prices.clone();
    wait_until("the other hub uses the new price", PROPAGATION_DEADLINE, || {
        std::future::ready((prices.get(model) == set).then_some(()))
    })
    .await;
    other.stop().await;
}
