//! Image generation through hub and node to an upstream that serves OpenAI's images API (a scripted
//! mock drawing one-colour PNGs of the size asked): the answer's images are the upstream's bytes,
//! the paperwork signs their digest and counts one unit per image, and bad input is refused before
//! anything is held; the upstream's own refusal passes through as a 400.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_ledger::AccountId;
use stacknet_node::backend::image::Rgb;
use stacknet_node::backend::upstream::OpenAiUpstream;
use stacknet_node::config::UpstreamConfig;
use stacknet_protocol::contract::Workload;
use stacknet_testkit::mock_upstream::images::{colour, png};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use super::{client, paperwork_of};

const IMAGES: &str = "mock-images";

async fn network() -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let mut config = UpstreamConfig::new(net.upstream.base_url(), Vec::new());
    config.image_models = vec![IMAGES.to_owned()];
    net.add_backend_node(Arc::new(OpenAiUpstream::new(&config).unwrap()))
        .await;
    net
}

async fn generate(net: &TestNetwork, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/images/generations", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn generations_are_forwarded_and_their_images_signed_for() {
    let net = network().await;
    let resp = generate(
        &net,
        &json!({"model": IMAGES, "prompt": "a red fox", "n": 2, "size": "512x512", "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["b64_json"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            bytes,
            png("a red fox", i as u64, 512, 512),
            "the upstream's bytes, unchanged"
        );
        let img = Rgb::decode(&bytes).unwrap();
        assert_eq!(
            (img.width, img.height, img.pixel(7, 7)),
            (512, 512, colour("a red fox", i as u64))
        );
    }
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(
        (sent["model"].as_str(), sent["n"].as_u64()),
        (Some(IMAGES), Some(2))
    );
    let pw = paperwork_of(&net, &answer).await;
    assert_eq!(
        pw.body.output_sha256,
        digest_of_response(Workload::ImageGeneration, &answer).unwrap()
    );
    assert_eq!(pw.body.usage.units, 2);
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_held_and_upstream_refusals_pass_through() {
    let net = network().await;
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    for (body, param) in [
        (
            json!({"model": IMAGES, "prompt": "a fox", "size": "100x100"}),
            "size",
        ),
        (json!({"model": IMAGES, "prompt": "a fox", "n": 11}), "n"),
        (json!({"model": IMAGES, "prompt": ""}), "prompt"),
        (json!({"model": IMAGES, "prompt": "x".repeat(32_001)}), "prompt"),
        (
            json!({"model": IMAGES, "prompt": "a fox", "response_format": "url"}),
            "response_format",
        ),
        (
            json!({"model": IMAGES, "prompt": "a fox", "seed": "seven"}),
            "seed",
        ),
    ] {
        let resp = generate(&net, &body).await;
        assert_eq!(resp.status(), 400, "{param}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    // A size the hub takes and this upstream does not: its 400, named, and nothing charged.
    let resp = generate(
        &net,
        &json!({"model": IMAGES, "prompt": "a fox", "size": "1792x1024"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("Invalid size"),
        "{err}"
    );
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
}
