//! Size and speed limits between client, hub and node: a client that stops reading costs only its
//! own task, a request whose task frame the node would refuse is answered 413 before any node sees
//! it, and an output larger than a frame travels in several chunks.

use std::sync::Arc;

use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::MAX_FRAME_BYTES;
use stacknet_testkit::fixtures::{wide_number, WideEmbeddings, WIDE_EMBED_DIMENSIONS, WIDE_EMBED_MODEL};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};
use tokio::io::AsyncWriteExt;

use super::{chat_body, client, post_chat};

/// Heartbeats for tests that move megabytes on one test thread: seconds of encoding on a loaded
/// machine must not look like a silent peer (3 missed intervals drop a connection).
const QUIET_HEARTBEAT_MS: u64 = 30_000;

/// The node's tasks in flight, as the hub counts them, and its connection id.
fn node_state(net: &TestNetwork) -> (u32, u64) {
    let nodes = net.hub.hub.state.nodes.connected();
    let [node] = nodes.as_slice() else {
        panic!("one node connected, not {}", nodes.len())
    };
    (node.in_flight(), node.conn_id)
}

#[tokio::test]
async fn a_slow_client_costs_only_its_own_task() {
    // 16 MB of output in 4 KiB chunks: far more than every buffer between the node and a client,
    // and than the 1 MiB this hub lets wait for one client (64 MiB by default).
    let reply = "x".repeat(4_000 * 4_096);
    let net = TestNetwork::start_with(Script::text(reply).chunks(4_000), |c| {
        c.request_timeout_ms = 60_000;
        c.max_queued_output_bytes = 1024 * 1024;
        c.heartbeat_interval_ms = QUIET_HEARTBEAT_MS;
    })
    .await;
    let (_, conn) = node_state(&net);
    // Client A asks for a stream through a socket with a tiny receive buffer, and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut a = socket.connect(net.hub.addr).await.unwrap();
    let body = serde_json::to_vec(&chat_body(true)).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        net.hub.addr,
        net.api_key,
        body.len()
    );
    a.write_all(head.as_bytes()).await.unwrap();
    a.write_all(&body).await.unwrap();
    let upstream = &net.upstream;
    wait_until(
        "the node asked its upstream for A's answer",
        WAIT_DEADLINE,
        || std::future::ready((upstream.requests() >= 1).then_some(())),
    )
    .await;
    net.upstream.set_script(Script::echo());
    // Client B, on the same node, while A's answer is stuck: it completes.
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "You said: hello there"
    );
    // A's task was ended by the hub (its slot is free again) while A is still connected, unread.
    wait_until(
        "A's task is cancelled and its slot released",
        WAIT_DEADLINE,
        || std::future::ready((node_state(&net).0 == 0).then_some(())),
    )
    .await;
    assert_eq!(node_state(&net).1, conn, "the node kept its connection");
    drop(a);
}

/// A chat body whose message fills `len` bytes of content.
fn chat_body_of(len: usize) -> Value {
    json!({"model": MOCK_MODEL, "messages": [{"role": "user", "content": "y".repeat(len)}]})
}

#[tokio::test]
async fn a_task_larger_than_the_nodes_frame_limit_gets_413_and_hurts_no_node() {
    let net = TestNetwork::start(Script::echo()).await;
    let (_, conn) = node_state(&net);
    // Under the hub's 4 MiB body limit, but the task frame adds the signed contract.
    let resp = post_chat(&net, &chat_body_of(MAX_FRAME_BYTES - 200)).await;
    assert_eq!(resp.status(), 413);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["code"], "max_frame_bytes_exceeded", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(&MAX_FRAME_BYTES.to_string()), "{message}");
    // No node was hurt: the same connection, no task held, and it serves the next request.
    assert_eq!(node_state(&net), (0, conn));
    assert_eq!(net.upstream.requests(), 0, "nothing reached the upstream");
    assert_eq!(post_chat(&net, &chat_body(false)).await.status(), 200);
    assert_eq!(node_state(&net), (0, conn));
}

#[tokio::test]
async fn a_2048_input_embeddings_request_answers_200_in_chunks() {
    let mut net =
        TestNetwork::start_without_nodes(Script::echo(), |c| c.heartbeat_interval_ms = QUIET_HEARTBEAT_MS)
            .await;
    net.add_backend_node(Arc::new(WideEmbeddings)).await;
    let (_, conn) = node_state(&net);
    let inputs: Vec<String> = (0..2_048).map(|i| format!("text {i}")).collect();
    let resp = client()
        .post(format!("{}/embeddings", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(&json!({"model": WIDE_EMBED_MODEL, "input": inputs}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
    );
    assert!(
        bytes.len() > 2 * MAX_FRAME_BYTES,
        "the answer spans several frames"
    );
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2_048);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        let vector = item["embedding"].as_array().unwrap();
        assert_eq!(vector.len(), WIDE_EMBED_DIMENSIONS);
        assert_eq!(vector[7].as_f64().unwrap(), wide_number(i, 7));
    }
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], WIDE_EMBED_MODEL);
    // The paperwork's digest is the one of the whole `data`, as the client recomputes it.
    let pw = super::paperwork_of(&net, &answer).await;
    assert_eq!(
        pw.body.output_sha256,
        digest_of_response(Workload::Embedding, &answer).unwrap()
    );
    assert_eq!(node_state(&net), (0, conn), "the node kept its connection");
}
