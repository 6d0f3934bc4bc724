//! Images in chat messages: an image URL whose host is literally a non-public address is refused by
//! the hub, naming the part, before anything is held or any node asked; a node forwarding to an
//! upstream vision model fetches `http(s)` images itself, through the SSRF-safe fetcher, and sends
//! them inline (`data:` URLs), so the upstream never fetches a stranger's URL from inside the
//! operator's network; a URL that is not an image, or that resolves to a private address, is the
//! client's error, named.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_ledger::AccountId;
use stacknet_node::backend::images::MAX_IMAGE_BYTES;
use stacknet_node::backend::upstream::OpenAiUpstream;
use stacknet_node::config::UpstreamConfig;
use stacknet_node::fetch::{FetchPolicy, Fetcher};
use stacknet_node::{Backend, BackendError, BackendTask, Cancellation};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::ContractId;
use stacknet_testkit::mock_upstream::{MockUpstream, Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;

use crate::fetch::{site, CAT_PNG};
use crate::hub::client;

/// A chat asking about the image at `url`.
fn chat(url: &str) -> Value {
    json!({"model": MOCK_MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]})
}

#[tokio::test]
async fn image_urls_at_non_public_addresses_are_refused_at_the_hub_by_name() {
    let net = TestNetwork::start(Script::echo()).await;
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    for (url, says) in [
        ("http://127.0.0.1/cat.png", "loopback"),
        ("http://2130706433/cat.png", "loopback"),
        ("http://[::1]:8080/cat.png", "loopback"),
        ("http://[::ffff:10.0.0.1]/cat.png", "private"),
        ("http://10.1.2.3/cat.png", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://localhost:8080/cat.png", "localhost"),
        ("https://user:secret@example.com/cat.png", "credentials"),
        ("ftp://example.com/cat.png", "http or https"),
        ("data:text/plain;base64,aGk=", "data: URL of an image"),
    ] {
        let resp = client()
            .post(format!("{}/chat/completions", net.base_url()))
            .bearer_auth(&net.api_key)
            .json(&chat(url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{url}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(
            err["error"]["param"], "messages[0].content[1].image_url.url",
            "{url}: {err}"
        );
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{url}: {message}");
    }
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
}

fn task(request: Value) -> BackendTask {
    BackendTask {
        contract: ContractId::random(),
        workload: Workload::Chat,
        model: MOCK_MODEL.to_owned(),
        request: Arc::new(request),
        files: Arc::default(),
        cancel: Cancellation::never(),
    }
}

async fn run(upstream: &OpenAiUpstream, request: Value) -> Result<(), BackendError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let outcome = upstream.execute(task(request), tx).await.map(|_| ());
    drain.await.unwrap();
    outcome
}

#[tokio::test]
async fn a_node_fetches_images_itself_and_sends_them_to_its_upstream_inline() {
    let mock = MockUpstream::start(Script::text("A cat.")).await.unwrap();
    let config = UpstreamConfig::new(mock.base_url(), vec![MOCK_MODEL.to_owned()]);
    let site = site().await;
    let policy = FetchPolicy {
        max_bytes: MAX_IMAGE_BYTES,
        ..FetchPolicy::default()
    };
    let upstream = OpenAiUpstream::with_image_fetcher(
        &config,
        Fetcher::with_test_allowlist(policy.clone(), vec![site]).unwrap(),
    )
    .unwrap();

    let inline = "data:image/png;base64,iVBORw0KGgo=";
    let mut request = chat(&format!("http://{site}/cat.png"));
    request["messages"][0]["content"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "image_url", "image_url": {"url": inline}}));
    run(&upstream, request).await.unwrap();
    let sent = mock.last_request().unwrap();
    let parts = &sent["messages"][0]["content"];
    let b64 = base64::engine::general_purpose::STANDARD.encode(CAT_PNG);
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/png;base64,{b64}")
    );
    assert_eq!(
        parts[2]["image_url"]["url"], inline,
        "a data: URL is forwarded as it is"
    );
    assert_eq!(parts[0]["text"], "What is in this picture?");

    // Not an image: the client's error, naming the part; the upstream is not asked.
    let asked = mock.requests();
    let err = run(&upstream, chat(&format!("http://{site}/plain")))
        .await
        .unwrap_err();
    let BackendError::InvalidRequest(message) = err else {
        panic!("{err:?}");
    };
    assert!(
        message.starts_with("messages[0].content[1].image_url.url: ") && message.contains("not an image"),
        "{message}"
    );
    assert_eq!(mock.requests(), asked);

    // Without the tests' allow-list the same local address is refused, by class.
    let guarded = OpenAiUpstream::with_image_fetcher(&config, Fetcher::new(policy).unwrap()).unwrap();
    let err = run(&guarded, chat(&format!("http://{site}/cat.png")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidRequest(m) if m.contains("loopback")),
        "{err:?}"
    );
    assert_eq!(mock.requests(), asked);
}
