//! The hub end to end: hub + node + mock upstream on loopback ports, called as an OpenAI client would.

mod attribution;
mod audio;
mod cancel;
mod chat;
mod dashboard;
mod errors;
pub(crate) mod files;
mod gateway;
mod images;
mod keys;
mod limits;
mod log;
mod malformed;
mod market;
mod metrics;
mod money;
mod money_faults;
mod queue;
mod replicas;
pub mod reputation;
mod stake;
mod validate;
mod videos;

use serde_json::Value;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().tcp_nodelay(true).build().unwrap()
}

/// `POST /v1/chat/completions` with the network's API key.
pub async fn post_chat(net: &stacknet_testkit::network::TestNetwork, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub fn chat_body(stream: bool) -> Value {
    serde_json::json!({
        "model": stacknet_testkit::mock_upstream::MOCK_MODEL,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
    })
}

/// The `data:` payloads of an SSE body, in order (`[DONE]` included as a string).
pub fn sse_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned())))
        .collect()
}

/// The paperwork an answer names, fetched from the hub.
pub async fn paperwork_of(
    net: &stacknet_testkit::network::TestNetwork,
    answer: &Value,
) -> stacknet_protocol::Signed<stacknet_protocol::paperwork::Paperwork> {
    let id = answer["paperwork"]
        .as_str()
        .expect("the answer names its paperwork");
    client()
        .get(format!(
            "{}{}",
            net.hub.url(),
            stacknet_api::paths::paperwork(&id)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET /v1/models` with the network's API key.
pub async fn models(net: &stacknet_testkit::network::TestNetwork) -> Value {
    client()
        .get(format!("{}/models", net.base_url()))
        .bearer_auth(&net.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET` a hub path without credentials (a public read), which must answer 200 with JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    net: &stacknet_testkit::network::TestNetwork,
    path: &str,
) -> T {
    let resp = client()
        .get(format!("{}{path}", net.hub.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}
