//! The mock upstream speaks OpenAI's formats: what a real client sees from it.

use serde_json::{json, Value};
use stacknet_testkit::mock_upstream::{MockUpstream, Script, MOCK_MODEL};

async fn post(mock: &MockUpstream, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The JSON payloads of an SSE body, `[DONE]` as a string.
fn sse_payloads(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("every event is a data line");
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn non_streaming_chat_is_a_whole_completion_with_usage() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let request = json!({"model": MOCK_MODEL, "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second one"}]});
    let response = post(&mock, "/chat/completions", request.clone()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MOCK_MODEL);
    assert_eq!(body["choices"][0]["message"]["content"], "You said: second one");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(mock.requests(), 1);
    assert_eq!(mock.last_request(), Some(request));
}

#[tokio::test]
async fn streaming_sends_chunks_then_usage_only_when_asked_then_done() {
    let mock = MockUpstream::start(Script::text("abcdef").chunks(3))
        .await
        .unwrap();
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true});
    let response = post(&mock, "/chat/completions", request.clone()).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_payloads(&response.text().await.unwrap());
    assert_eq!(events.len(), 5, "3 content chunks, finish, [DONE]: {events:?}");
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "ab"})
    );
    assert_eq!(events[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[4], "[DONE]");

    let mut with_usage = request;
    with_usage["stream_options"] = json!({"include_usage": true});
    let events = sse_payloads(
        &post(&mock, "/chat/completions", with_usage)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(events.len(), 6);
    assert_eq!(events[4]["choices"], json!([]));
    assert_eq!(events[4]["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn legacy_completions_and_the_model_list() {
    let mock = MockUpstream::start_serving(&["a", "b"], Script::echo())
        .await
        .unwrap();
    let body: Value = post(&mock, "/completions", json!({"model": "a", "prompt": "hey"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "You said: hey");
    let models: Value = reqwest::get(format!("{}/models", mock.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    // Listing models is not a completion request.
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn scripted_failures() {
    let mock = MockUpstream::start(Script::echo().fail_with_code(400, "too long", "context_length_exceeded"))
        .await
        .unwrap();
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true});
    let response = post(&mock, "/chat/completions", request.clone()).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "too long", "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}})
    );

    mock.set_script(Script::echo().chunks(5).drop_after(2));
    let mut response = post(&mock, "/chat/completions", request).await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let broke = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(broke, "the body should break off");
    let received = String::from_utf8(received).unwrap();
    assert_eq!(
        sse_payloads(&received).len(),
        2,
        "two events arrive first: {received}"
    );
    mock.shutdown().await;
}
