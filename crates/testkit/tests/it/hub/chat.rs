//! Answers arrive intact, streamed or not, with a fingerprint, and the paperwork agrees everywhere.

use serde_json::Value;
use stacknet_protocol::fingerprint::Attribution;
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{FingerprintId, PaperworkId, Signed};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::{wait_for, TestNetwork};

use super::{chat_body, client, post_chat, sse_events};

#[tokio::test]
async fn a_chat_completion_arrives_intact_with_a_verifiable_fingerprint() {
    let net = TestNetwork::start(Script::text("The capital of France is Paris.").chunks(5)).await;
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "mock-model");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let claimed: FingerprintId = v["fingerprint"].as_str().unwrap().parse().unwrap();
    let attribution: Attribution = serde_json::from_value(v["attribution"].clone()).unwrap();
    attribution.verify_claim(claimed).unwrap();
    assert_eq!(attribution.fingerprint.stack, net.stack);
    assert_eq!(attribution.fingerprint.node_key, net.nodes[0].node.node_key_id());
    assert!(v["attribution"]["signed_by"]
        .as_str()
        .unwrap()
        .starts_with("ed25519:"));
}

#[tokio::test]
async fn streaming_gives_the_same_text_and_ends_with_fingerprint_usage_and_done() {
    let net = TestNetwork::start(Script::text("one two three four five six").chunks(6)).await;
    let whole: Value = post_chat(&net, &chat_body(false)).await.json().await.unwrap();

    let mut body = chat_body(true);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let resp = post_chat(&net, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(&resp.text().await.unwrap());
    assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));
    let chunks = &events[..events.len() - 1];
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], serde_json::json!([]));
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let attribution: Attribution = serde_json::from_value(last["attribution"].clone()).unwrap();
    attribution
        .verify_claim(last["fingerprint"].as_str().unwrap().parse().unwrap())
        .unwrap();
    // Without include_usage no chunk carries usage.
    let plain = sse_events(&post_chat(&net, &chat_body(true)).await.text().await.unwrap());
    assert!(plain.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn the_paperwork_in_the_node_wallet_and_in_the_hub_store_agree() {
    let net = TestNetwork::start(Script::echo()).await;
    let v: Value = post_chat(&net, &chat_body(false)).await.json().await.unwrap();
    net.hub.hub.state.writer.flush().await;
    let wallet = net.nodes[0].node.wallet().list().await.unwrap();
    assert_eq!(wallet.len(), 1);
    let pw: &Signed<Paperwork> = &wallet[0];
    let id: PaperworkId = pw.id().unwrap();
    let stored = net
        .hub
        .hub
        .state
        .store
        .paperwork(id)
        .await
        .unwrap()
        .expect("the hub stored it");
    let stored: Signed<Paperwork> = serde_json::from_str(&stored.record.json).unwrap();
    assert_eq!(&stored, pw);
    assert_eq!(
        pw.body.fingerprint.fingerprint.contract.to_string(),
        v["attribution"]["contract"].as_str().unwrap()
    );
    // Anyone can fetch it by id.
    let fetched: Value = client()
        .get(format!("{}/stacknet/v1/paperwork/{id}", net.hub.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, serde_json::to_value(pw).unwrap());
}

#[tokio::test]
async fn a_node_killed_mid_stream_gives_an_error_event_and_no_paperwork() {
    let mut net = TestNetwork::start(
        Script::text("a b c d e f g h")
            .chunks(8)
            .chunk_delay(std::time::Duration::from_millis(300)),
    )
    .await;
    let resp = post_chat(&net, &chat_body(true)).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp;
    // Wait for the first content chunk, then kill the node.
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let node = net.nodes.remove(0);
    let wallet = node.node.wallet().clone();
    node.kill().await;
    let mut rest = String::new();
    while let Some(bytes) = stream.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&bytes));
    }
    let events = sse_events(&rest);
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "node_error", "{rest}");
    assert!(!rest.contains("[DONE]"));
    net.hub.hub.state.writer.flush().await;
    assert_eq!(net.hub.hub.state.log.size(), 0);
    assert!(wallet.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn after_a_hub_restart_the_node_reconnects_and_serves_again() {
    let mut net = TestNetwork::start(Script::echo()).await;
    assert_eq!(post_chat(&net, &chat_body(false)).await.status(), 200);
    net.restart_hub().await;
    let nodes = net.hub.hub.state.nodes.clone();
    assert!(
        wait_for(|| !nodes.connected().is_empty()).await,
        "the node came back"
    );
    // The API key survived the restart (stored hashed, loaded at start).
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    net.hub.hub.state.writer.flush().await;
    assert_eq!(net.hub.hub.state.log.size(), 2);
}

#[tokio::test]
async fn a_node_that_drops_before_the_first_token_is_retried_on_another() {
    let mut net = TestNetwork::start(Script::echo().hang()).await;
    let request = tokio::spawn({
        let url = format!("{}/chat/completions", net.base_url());
        let key = net.api_key.clone();
        async move {
            client()
                .post(url)
                .bearer_auth(key)
                .json(&chat_body(false))
                .send()
                .await
                .unwrap()
        }
    });
    // The only node has the task and its upstream hangs; a second node joins, then the first dies.
    let upstream = &net.upstream;
    assert!(wait_for(|| upstream.requests() == 1).await);
    net.upstream.set_script(Script::text("rescued"));
    net.add_node().await;
    let first = net.nodes.remove(0);
    first.kill().await;
    let resp = request.await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "rescued");
    assert_eq!(
        v["attribution"]["node_key"],
        net.nodes[0].node.node_key_id().to_string()
    );
}

#[tokio::test]
async fn completions_and_models_work_too() {
    let net = TestNetwork::start(Script::text("Paris")).await;
    let resp = client()
        .post(format!("{}/completions", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(&serde_json::json!({"model": "mock-model", "prompt": "The capital of France is"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Paris");
    let models = super::models(&net).await;
    assert_eq!(models["data"][0]["id"], "mock-model");
    assert_eq!(models["object"], "list");
}
