//! Every client-visible error, with its exact OpenAI-style JSON pinned.

use serde_json::{json, Value};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::{wait_for, TestNetwork};

use super::{chat_body, client, post_chat, sse_events};

async fn call(net: &TestNetwork, key: Option<&str>, body: reqwest::Body) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/chat/completions", net.base_url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn error(message: &str, kind: &str, param: Option<&str>, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

fn body(v: &Value) -> reqwest::Body {
    reqwest::Body::from(v.to_string())
}

#[tokio::test]
async fn authentication_and_request_errors_are_precise() {
    let net = TestNetwork::start_with(Script::echo(), |c| c.max_body_bytes = 10_000).await;
    let key = Some(net.api_key.as_str());

    let (status, v) = call(&net, None, body(&chat_body(false))).await;
    assert_eq!(
        (status, v),
        (
            401,
            error(
                "You didn't provide an API key. Send it as 'Authorization: Bearer sk_...'.",
                "invalid_request_error",
                None,
                "missing_api_key"
            )
        )
    );

    let (status, v) = call(&net, Some("sk_000"), body(&chat_body(false))).await;
    assert_eq!(
        (status, v),
        (
            401,
            error(
                "Incorrect API key provided.",
                "invalid_request_error",
                None,
                "invalid_api_key"
            )
        )
    );

    let (status, v) = call(&net, key, reqwest::Body::from("{\"model\": ")).await;
    assert_eq!(
        (status, v),
        (400, error("We could not parse the JSON body of your request: EOF while parsing a value at line 1 column 10", "invalid_request_error", None, "invalid_json"))
    );

    let (status, v) = call(&net, key, body(&json!({"model": "mock-model", "messages": []}))).await;
    assert_eq!(
        (status, v),
        (
            400,
            error(
                "messages must not be empty",
                "invalid_request_error",
                Some("messages"),
                "invalid_value"
            )
        )
    );

    let bad_role = json!({"model": "mock-model", "messages": [{"role": "wizard", "content": "hi"}]});
    let (status, v) = call(&net, key, body(&bad_role)).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "messages[0].role");

    let hot =
        json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "temperature": 7});
    let (status, v) = call(&net, key, body(&hot)).await;
    assert_eq!(
        (status, v),
        (
            400,
            error(
                "temperature must be a number from 0 to 2",
                "invalid_request_error",
                Some("temperature"),
                "invalid_value"
            )
        )
    );

    let (status, v) = call(
        &net,
        key,
        body(&json!({"messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(
        (status, v),
        (
            400,
            error(
                "you must provide a model parameter",
                "invalid_request_error",
                Some("model"),
                "invalid_value"
            )
        )
    );

    let unknown = json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]});
    let (status, v) = call(&net, key, body(&unknown)).await;
    assert_eq!(
        (status, v),
        (
            404,
            error(
                "The model `no-such-model` does not exist or no node serves it.",
                "invalid_request_error",
                Some("model"),
                "model_not_found"
            )
        )
    );

    let huge = json!({"model": "mock-model", "messages": [{"role": "user", "content": "x".repeat(20_000)}]});
    let (status, v) = call(&net, key, body(&huge)).await;
    assert_eq!(
        (status, v),
        (
            413,
            error(
                "Request body exceeds the limit of 10000 bytes.",
                "invalid_request_error",
                None,
                "request_too_large"
            )
        )
    );

    // None of these reached the upstream.
    assert_eq!(net.upstream.requests(), 0);
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_at_the_edge_with_400() {
    // A short time-out: a deep body that slipped through would end in a 504, not hang the test.
    let net = TestNetwork::start_with(Script::echo(), |c| c.request_timeout_ms = 5_000).await;
    let key = Some(net.api_key.as_str());
    // 127 levels in all: serde_json (limit 128) parses it, the task frame around it would not.
    let nested = "[".repeat(126) + &"]".repeat(126);
    let deep = format!(
        r#"{{"model": "mock-model", "messages": [{{"role": "user", "content": "hi"}}], "metadata": {nested}}}"#
    );
    // More of them than the node has slots: none may take one.
    for _ in 0..5 {
        let (status, v) = call(&net, key, reqwest::Body::from(deep.clone())).await;
        assert_eq!(
            (status, v),
            (
                400,
                error(
                    "metadata is nested too deep: a request body may nest arrays and objects at most 32 levels deep",
                    "invalid_request_error",
                    Some("metadata"),
                    "invalid_value"
                )
            )
        );
    }
    assert_eq!(net.upstream.requests(), 0);
    let (status, v) = call(&net, key, body(&chat_body(false))).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn upstream_failure_is_502_with_the_upstreams_reason_and_no_paperwork() {
    let net = TestNetwork::start(Script::echo().fail(500, "the GPU caught fire")).await;
    let (status, v) = call(&net, Some(&net.api_key), body(&chat_body(false))).await;
    assert_eq!(status, 502);
    assert_eq!(v["error"]["type"], "api_error");
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the GPU caught fire"),
        "{v}"
    );
    net.hub.hub.state.writer.flush().await;
    assert_eq!(net.hub.hub.state.log.size(), 0);
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_504() {
    let net = TestNetwork::start_with(Script::echo().hang(), |c| c.request_timeout_ms = 300).await;
    let (status, v) = call(&net, Some(&net.api_key), body(&chat_body(false))).await;
    assert_eq!(
        (status, v),
        (
            504,
            error(
                "The request timed out after 300 ms.",
                "timeout_error",
                None,
                "timeout"
            )
        )
    );
}

#[tokio::test]
async fn at_capacity_the_hub_answers_429_at_once() {
    let net = TestNetwork::start_with(Script::echo().hang(), |c| c.max_concurrent_requests = 1).await;
    let url = format!("{}/chat/completions", net.base_url());
    let key = net.api_key.clone();
    let _hanging = tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(key)
            .json(&chat_body(false))
            .send()
            .await
    });
    let upstream = &net.upstream;
    assert!(wait_for(|| upstream.requests() == 1).await);
    let (status, v) = call(&net, Some(&net.api_key), body(&chat_body(false))).await;
    assert_eq!(
        (status, v),
        (
            429,
            error(
                "The hub is at capacity (1 requests in flight). Retry shortly.",
                "rate_limit_error",
                None,
                "rate_limit_exceeded"
            )
        )
    );
}

#[tokio::test]
async fn a_known_model_with_no_node_connected_gets_503() {
    let mut net = TestNetwork::start(Script::echo()).await;
    net.nodes.remove(0).kill().await;
    let nodes = net.hub.hub.state.nodes.clone();
    assert!(wait_for(|| nodes.connected().is_empty()).await);
    let (status, v) = call(&net, Some(&net.api_key), body(&chat_body(false))).await;
    assert_eq!(
        (status, v),
        (
            503,
            error(
                "No node is available to serve `mock-model` right now. Retry in 5 s.",
                "service_unavailable_error",
                None,
                "no_node_available"
            )
        )
    );
}

#[tokio::test]
async fn a_stream_that_fails_after_its_first_chunk_ends_with_an_error_event() {
    let net = TestNetwork::start(Script::text("a b c d e f").chunks(6).drop_after(2)).await;
    let resp = post_chat(&net, &chat_body(true)).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{events:?}");
    assert!(events.iter().all(|e| e != "[DONE]"));
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_issues_working_keys() {
    let net = TestNetwork::start(Script::text("ok")).await;
    let admin = format!("{}/stacknet/v1/admin/stacks", net.hub.url());
    let denied = client()
        .post(&admin)
        .bearer_auth("wrong")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_admin_token"
    );
    let stack: Value = client()
        .post(&admin)
        .bearer_auth(&net.admin_token)
        .json(&json!({"name": "my app"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = stack["id"].as_str().unwrap();
    assert!(id.starts_with("stk_"));
    let key: Value = client()
        .post(format!("{admin}/{id}/keys"))
        .bearer_auth(&net.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = key["api_key"].as_str().unwrap();
    assert!(api_key.starts_with("sk_"));
    let (status, v) = call(&net, Some(api_key), body(&chat_body(false))).await;
    assert_eq!(status, 200);
    assert_eq!(v["attribution"]["stack"], id);
    let missing = client()
        .post(format!("{admin}/stk_00000000000000000000000000000000/keys"))
        .bearer_auth(&net.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_wrong_method_or_an_unreadable_query_gets_an_openai_error_not_an_empty_body() {
    let net = TestNetwork::start(Script::echo()).await;
    let resp = client()
        .get(format!("{}/chat/completions", net.base_url()))
        .bearer_auth(&net.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        error(
            "This endpoint does not take this method.",
            "invalid_request_error",
            None,
            "method_not_allowed"
        )
    );

    let resp = client()
        .get(format!(
            "{}/stacknet/v1/log/proof/consistency?from=-1",
            net.hub.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (&v["error"]["type"], &v["error"]["code"], &v["error"]["param"]),
        (
            &json!("invalid_request_error"),
            &json!("invalid_request"),
            &Value::Null
        ),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("from"), "names what did not parse: {message}");
}
