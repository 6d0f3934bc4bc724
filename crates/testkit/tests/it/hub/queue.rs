//! The queue in front of busy nodes: requests wait for a slot instead of being refused, Stacks take
//! turns, and a full queue is a 503 that says when to come back.

use std::sync::Arc;

use serde_json::{json, Value};
use stacknet_node::NodeOptions;
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::{chat_body, client, money, sse_events};

/// A network whose one node runs `slots` tasks at once.
async fn network(
    script: Script,
    slots: u32,
    adjust: impl FnOnce(&mut stacknet_hub::HubConfig),
) -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(script, adjust).await;
    let mut options = NodeOptions::new(net.hub.url());
    options.max_concurrency = slots;
    net.add_node_with(options).await;
    net
}

/// Sends a chat request that says `tag`, with `key`, and returns its status, `Retry-After` and body.
async fn ask(net: &TestNetwork, key: &str, tag: &str) -> (u16, Option<String>, Value) {
    let body = json!({"model": MOCK_MODEL, "messages": [{"role": "user", "content": tag}]});
    let resp = client()
        .post(format!("{}/chat/completions", net.base_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.json().await.unwrap())
}

/// [`ask`] in a task of its own.
fn spawn_ask(
    net: &Arc<TestNetwork>,
    key: String,
    tag: &'static str,
) -> tokio::task::JoinHandle<(u16, Option<String>, Value)> {
    let net = Arc::clone(net);
    tokio::spawn(async move { ask(&net, &key, tag).await })
}

async fn wait_waiting(net: &TestNetwork, n: usize) {
    let nodes = net.hub.hub.state.nodes.clone();
    wait_until(&format!("{n} requests wait in the queue"), WAIT_DEADLINE, || {
        std::future::ready((nodes.waiting(MOCK_MODEL) == n).then_some(()))
    })
    .await;
}

async fn wait_requests(net: &TestNetwork, n: u64) {
    let upstream = &net.upstream;
    wait_until(
        &format!("the upstream has had {n} requests"),
        WAIT_DEADLINE,
        || std::future::ready((upstream.requests() == n).then_some(())),
    )
    .await;
}

/// The measurement: 64 concurrent clients against a node of 4 slots got 566 of 640
/// requests refused with `503 no_node_available`. With the queue every one is answered.
#[tokio::test]
async fn sixty_four_clients_on_a_node_of_four_slots_are_all_answered() {
    let script = Script::text("one two three four").chunk_delay(std::time::Duration::from_millis(2));
    let net = network(script, 4, |_| {}).await;
    let url = format!("{}/chat/completions", net.base_url());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (url, key) = (url.clone(), net.api_key.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..4 {
                    let resp = client()
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&chat_body(true))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let events = sse_events(&resp.text().await.unwrap());
                    statuses.push((status, events.last() == Some(&Value::from("[DONE]"))));
                }
                statuses
            })
        })
        .collect();
    let mut answered = 0;
    for t in tasks {
        for (status, done) in t.await.unwrap() {
            assert_eq!((status, done), (200, true));
            answered += 1;
        }
    }
    assert_eq!(answered, 256);
    assert_eq!(net.upstream.requests(), 256);
    assert_eq!(net.hub.hub.state.nodes.waiting(MOCK_MODEL), 0);
    assert_eq!(
        net.hub.hub.state.nodes.connected()[0].in_flight(),
        0,
        "every slot came back"
    );
}

/// One Stack's burst does not make another Stack's request wait behind all of it: with one slot,
/// Stack A's five requests and then Stack B's one reach the node as a0, a1, b0, a2, a3, a4 (first
/// come, first served would put b0 last).
#[tokio::test]
async fn stacks_take_turns_in_the_queue() {
    let net = network(Script::echo().held(), 1, |_| {}).await;
    let (_, b_key) = net.new_stack("b").await;
    let net = Arc::new(net);
    let mut answers = Vec::new();
    let send = |key: String, tag: &'static str| spawn_ask(&net, key, tag);
    answers.push(send(net.api_key.clone(), "a0"));
    wait_requests(&net, 1).await;
    for (i, tag) in ["a1", "a2", "a3", "a4"].into_iter().enumerate() {
        answers.push(send(net.api_key.clone(), tag));
        wait_waiting(&net, i + 1).await;
    }
    answers.push(send(b_key, "b0"));
    wait_waiting(&net, 5).await;
    let mut order = vec!["a0".to_owned()];
    for n in 2..=6 {
        net.upstream.release(1);
        wait_requests(&net, n).await;
        let last = net.upstream.last_request().unwrap();
        order.push(last["messages"][0]["content"].as_str().unwrap().to_owned());
    }
    net.upstream.release(1);
    assert_eq!(order, ["a0", "a1", "b0", "a2", "a3", "a4"]);
    for a in answers {
        assert_eq!(a.await.unwrap().0, 200);
    }
}

/// A queue at its bound refuses the next request at once with 503 `queue_full` and a
/// `Retry-After` estimated from the queue; nothing of it reaches a node, and the requests already
/// waiting are answered.
#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_and_costs_nothing() {
    let net = network(Script::echo().held(), 1, |c| c.max_queued_per_model = 2).await;
    money::set_price(&net).await;
    money::topup(&net, 10_000_000).await;
    let net = Arc::new(net);
    let send = |tag: &'static str| spawn_ask(&net, net.api_key.clone(), tag);
    let running = send("running");
    wait_requests(&net, 1).await;
    let waiting = [send("w1"), send("w2")];
    wait_waiting(&net, 2).await;
    let account = stacknet_ledger::AccountId::stack(net.stack);
    let before = money::ledger(&net).balance(account.clone()).await.unwrap();
    let (status, retry, body) = ask(&net, &net.api_key, "refused").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "queue_full");
    assert_eq!(body["error"]["type"], "service_unavailable_error");
    let retry: u64 = retry.expect("a Retry-After header").parse().unwrap();
    assert!(retry >= 1, "{retry}");
    // `/v1/models` says the same: one node, its one slot taken, two waiting, and the wait.
    let models = super::models(&net).await;
    let availability = &models["data"][0]["availability"];
    assert_eq!(models["data"][0]["id"], MOCK_MODEL);
    assert_eq!(availability["nodes"], 1, "{models}");
    assert_eq!(availability["slots"], 1, "{models}");
    assert_eq!(availability["free_slots"], 0, "{models}");
    assert_eq!(availability["waiting"], 2, "{models}");
    assert!(
        availability["estimated_wait_ms"].as_u64().unwrap() >= 1_000,
        "{models}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("(2 requests waiting). Retry in {retry} s.")),
        "{body}"
    );
    // Its hold (taken before it asked for a node) is released as the refusal returns.
    let ledger = money::ledger(&net);
    wait_until("the refused request's hold is released", WAIT_DEADLINE, || {
        let (ledger, account) = (ledger.clone(), account.clone());
        async move { (ledger.balance(account).await.ok()? == before).then_some(()) }
    })
    .await;
    net.upstream.release(3);
    assert_eq!(running.await.unwrap().0, 200);
    for w in waiting {
        assert_eq!(w.await.unwrap().0, 200);
    }
    assert_eq!(
        net.upstream.requests(),
        3,
        "the refused request never reached the node"
    );
    money::books_balance(&net).await;
}

/// A client that gives up while waiting leaves the queue: its place is not handed a slot, and the
/// request behind it is served.
#[tokio::test]
async fn a_client_that_leaves_the_queue_gives_up_its_place() {
    let net = network(Script::echo().held(), 1, |_| {}).await;
    let net = Arc::new(net);
    let send = |tag: &'static str| spawn_ask(&net, net.api_key.clone(), tag);
    let running = send("running");
    wait_requests(&net, 1).await;
    let gone = send("gone");
    wait_waiting(&net, 1).await;
    let kept = send("kept");
    wait_waiting(&net, 2).await;
    gone.abort();
    wait_waiting(&net, 1).await;
    net.upstream.release(2);
    assert_eq!(running.await.unwrap().0, 200);
    let (status, _, body) = kept.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "You said: kept");
    assert_eq!(net.upstream.requests(), 2);
}
