//! The node runtime against a fake hub (the test plays the hub's side of the WebSocket) and the mock
//! upstream: what the hub sees, what the upstream sees, and what ends up in the wallet.

mod fake_hub;
mod lifecycle;

use std::sync::Arc;

use serde_json::{json, Value};
use stacknet_node::{Node, NodeOptions, OpenAiUpstream, UpstreamConfig, Wallet};
use stacknet_protocol::contract::{PromptContract, Usage, Workload};
use stacknet_protocol::paperwork::{check_paperwork, Paperwork};
use stacknet_protocol::wire::{ErrorCode, ErrorFrame, HubMessage, ModelOffer, NodeMessage, Task};
use stacknet_protocol::{
    examples, jcs, ContractId, NodeKeyId, Nonce, SecretKey, Sha256Digest, Signed, Timestamp,
};
use stacknet_testkit::mock_upstream::{MockUpstream, Script, MOCK_MODEL};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use fake_hub::{FakeHub, HubConn};

/// A node running on its own task, with a temporary data directory.
struct TestNode {
    node: Node,
    stop: Option<oneshot::Sender<()>>,
    run: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.run.abort();
    }
}

impl TestNode {
    fn id(&self) -> NodeKeyId {
        self.node.node_key_id()
    }
}

async fn start_node(
    hub: &FakeHub,
    upstream_url: &str,
    configure: impl FnOnce(&mut NodeOptions, &mut UpstreamConfig),
) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::open(dir.path().join("wallet.sqlite")).unwrap();
    let mut options = NodeOptions::new(&hub.url);
    let mut upstream = UpstreamConfig::new(upstream_url, vec![MOCK_MODEL.to_owned()]);
    configure(&mut options, &mut upstream);
    let backend = OpenAiUpstream::new(&upstream).unwrap();
    let node = Node::new(SecretKey::generate(), wallet, Arc::new(backend), options).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = node.clone();
    let run = tokio::spawn(async move {
        runner
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    TestNode {
        node,
        stop: Some(stop),
        run,
        _dir: dir,
    }
}

/// A contract for `node`, signed by `signer`, naming `hub` as its hub.
fn contract_signed_by(
    signer: &SecretKey,
    node: NodeKeyId,
    model: &str,
    workload: Workload,
) -> Signed<PromptContract> {
    let now = Timestamp::now();
    let mut c = examples::contract();
    c.id = ContractId::random();
    c.hub = examples::hub_key().public_key();
    c.node_key = node;
    c.model = model.to_owned();
    c.workload = workload;
    c.created_at = now;
    c.expires_at = now.plus_ms(60_000);
    c.nonce = Nonce::random();
    Signed::sign(c, signer).unwrap()
}

fn contract(node: NodeKeyId, model: &str, workload: Workload) -> Signed<PromptContract> {
    contract_signed_by(&examples::hub_key(), node, model, workload)
}

fn task(contract: &Signed<PromptContract>, request: &Value) -> HubMessage {
    HubMessage::Task(Box::new(Task {
        contract: contract.clone(),
        request: request.clone(),
        attachments: Vec::new(),
    }))
}

fn chat_request(text: &str) -> Value {
    // The client asked for no streaming; the node streams from the upstream anyway.
    json!({"model": MOCK_MODEL, "messages": [{"role": "user", "content": text}], "stream": false})
}

/// Reads the node's frames for one contract until `done` or `error`: the chunks as (seq, data).
async fn collect(
    conn: &mut HubConn,
    id: ContractId,
) -> (Vec<(u64, Value)>, Result<Signed<Paperwork>, ErrorFrame>) {
    let mut chunks = Vec::new();
    loop {
        match conn.recv().await {
            NodeMessage::Chunk { contract, seq, data } if contract == id => chunks.push((seq, data)),
            NodeMessage::Done {
                contract, paperwork, ..
            } if contract == id => return (chunks, Ok(*paperwork)),
            NodeMessage::Error(frame) if frame.contract == Some(id) => return (chunks, Err(frame)),
            NodeMessage::Heartbeat { .. } => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

async fn expect_error(conn: &mut HubConn, id: ContractId, code: ErrorCode) -> ErrorFrame {
    let (chunks, result) = collect(conn, id).await;
    let frame = result.expect_err("the task should fail");
    assert_eq!(frame.code, code, "{frame:?} after {} chunks", chunks.len());
    frame
}

fn sha256_of_canonical(value: &Value) -> Sha256Digest {
    Sha256Digest::of(jcs::canonicalize(value).unwrap().as_bytes())
}

#[tokio::test]
async fn a_task_streams_its_chunks_in_order_and_ends_with_paperwork_already_in_the_wallet() {
    let mock = MockUpstream::start(Script::echo().chunks(5)).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    let hello = conn.handshake(30_000).await;
    assert_eq!(hello.body.node_key, node.node.node_key());
    let offer = ModelOffer {
        name: MOCK_MODEL.to_owned(),
        workloads: vec![Workload::Chat, Workload::Completion],
        backend: "openai-upstream".to_owned(),
        model_sha256: None,
        tool: None,
    };
    assert_eq!(hello.body.models, vec![offer]);
    assert_eq!(hello.body.max_concurrency, 4);
    assert!(hello.body.software.starts_with("stacknet/"));

    let request = chat_request("Hello node");
    let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&contract, &request)).await;
    let (chunks, done) = collect(&mut conn, contract.body.id).await;
    let pw = done.expect("the task should succeed");

    let seqs: Vec<u64> = chunks.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (0..chunks.len() as u64).collect::<Vec<_>>());
    let data: Vec<Value> = chunks.into_iter().map(|(_, data)| data).collect();
    let text: String = data
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
        .collect();
    assert_eq!(text, "You said: Hello node");
    // 5 content chunks, the finish chunk, and the upstream's usage-only chunk.
    assert_eq!(data.len(), 7);
    assert_eq!(data[6]["choices"], json!([]));

    let pw_id = check_paperwork(&pw, &hub.key.public_key()).unwrap().id;
    assert_eq!(pw.body.contract, contract);
    // The output digest is over the answer the client gets: the assembled choices.
    assert_eq!(
        pw.body.output_sha256,
        stacknet_node::digest_of_stream(Workload::Chat, &data).unwrap()
    );
    let whole = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "You said: Hello node"},
        "finish_reason": "stop", "logprobs": null}]});
    assert_eq!(pw.body.output_sha256, sha256_of_canonical(&whole["choices"]));
    assert_eq!(pw.body.request_sha256, sha256_of_canonical(&request));
    // The upstream's own counts: 2 prompt words, one token per content chunk.
    assert_eq!(
        pw.body.usage,
        Usage {
            input_tokens: 2,
            output_tokens: 5,
            units: 0
        }
    );
    assert_eq!(pw.body.backend.id, "openai-upstream");
    assert_eq!(pw.body.backend.model, MOCK_MODEL);
    // The node had never seen the upstream answer: cold.
    assert!(!pw.body.resources.warm);
    assert_eq!(pw.body.resources.hardware, "upstream");
    // Durable before `done`: the wallet already holds exactly what the hub received.
    assert_eq!(node.node.wallet().get(&pw_id).await.unwrap(), Some(pw.clone()));

    let sent = mock.last_request().unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["messages"], request["messages"]);
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn an_upstream_model_is_named_ready_once_it_answered_and_its_next_task_is_warm() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;
    let ready_in = |message: &NodeMessage| match message {
        NodeMessage::Heartbeat { ready, .. } => Some(ready.iter().any(|r| r.name == MOCK_MODEL)),
        _ => None,
    };
    // Asked before any task: connected, nothing ready.
    conn.send(&HubMessage::Heartbeat { at: Timestamp::now() }).await;
    assert_eq!(ready_in(&conn.recv().await), Some(false));

    let first = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&first, &chat_request("one"))).await;
    // The model is named ready before `done`, so a hub sees it warm for the next task.
    let mut named = false;
    let done = loop {
        let message = conn.recv().await;
        named |= ready_in(&message) == Some(true);
        match message {
            NodeMessage::Done { paperwork, .. } => break paperwork,
            NodeMessage::Chunk { .. } | NodeMessage::Heartbeat { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(named, "a heartbeat named the model before done");
    assert!(!done.body.resources.warm);

    let second = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&second, &chat_request("two"))).await;
    let (_, done) = collect(&mut conn, second.body.id).await;
    assert!(done.unwrap().body.resources.warm);
    conn.send(&HubMessage::Heartbeat { at: Timestamp::now() }).await;
    assert_eq!(ready_in(&conn.recv().await), Some(true));
}

#[tokio::test]
async fn completions_use_their_endpoint_and_usage_is_estimated_when_the_upstream_reports_none() {
    let mock = MockUpstream::start(Script::text("one two three").chunks(3).usage(false))
        .await
        .unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;

    let request = json!({"model": MOCK_MODEL, "prompt": "a b, c", "max_tokens": 8});
    let contract = contract(node.id(), MOCK_MODEL, Workload::Completion);
    conn.send(&task(&contract, &request)).await;
    let (chunks, done) = collect(&mut conn, contract.body.id).await;
    let pw = done.unwrap();
    assert!(chunks.iter().all(|(_, c)| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|(_, c)| c.pointer("/choices/0/text").and_then(Value::as_str))
        .collect();
    assert_eq!(text, "one two three");
    // No usage from the upstream: 4 words and marks in the prompt, 3 content chunks.
    assert_eq!(
        pw.body.usage,
        Usage {
            input_tokens: 4,
            output_tokens: 3,
            units: 0
        }
    );
    check_paperwork(&pw, &hub.key.public_key()).unwrap();
    assert_eq!(mock.last_request().unwrap()["prompt"], "a b, c");
}

#[tokio::test]
async fn contracts_that_fail_the_checks_are_refused_before_the_upstream_is_called() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;
    let request = chat_request("hi");

    let forged = contract_signed_by(
        &SecretKey::from_seed(&[7; 32]),
        node.id(),
        MOCK_MODEL,
        Workload::Chat,
    );
    conn.send(&task(&forged, &request)).await;
    expect_error(&mut conn, forged.body.id, ErrorCode::BadContract).await;

    let someone_else = contract(
        SecretKey::generate().public_key().node_key_id(),
        MOCK_MODEL,
        Workload::Chat,
    );
    conn.send(&task(&someone_else, &request)).await;
    expect_error(&mut conn, someone_else.body.id, ErrorCode::BadContract).await;

    let mut expired = contract(node.id(), MOCK_MODEL, Workload::Chat).body;
    expired.expires_at = Timestamp::now().plus_ms(-1_000);
    let expired = Signed::sign(expired, &hub.key).unwrap();
    conn.send(&task(&expired, &request)).await;
    let frame = expect_error(&mut conn, expired.body.id, ErrorCode::BadContract).await;
    assert!(frame.message.contains("expired"), "{}", frame.message);

    let unknown = contract(node.id(), "no-such-model", Workload::Chat);
    conn.send(&task(&unknown, &request)).await;
    expect_error(&mut conn, unknown.body.id, ErrorCode::UnknownModel).await;

    let wrong_workload = contract(node.id(), MOCK_MODEL, Workload::Embedding);
    conn.send(&task(&wrong_workload, &request)).await;
    expect_error(&mut conn, wrong_workload.body.id, ErrorCode::UnknownModel).await;

    assert_eq!(mock.requests(), 0);
    assert!(node.node.wallet().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_task_the_node_cannot_decode_gets_an_error_frame_at_once() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;

    // A request nested past serde_json's 128 levels: the frame is valid JSON the node cannot parse.
    let mut too_deep = json!([]);
    for _ in 0..200 {
        too_deep = Value::Array(vec![too_deep]);
    }
    let mut request = chat_request("hi");
    request["metadata"] = too_deep;
    let deep = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&deep, &request)).await;
    let frame = expect_error(&mut conn, deep.body.id, ErrorCode::MalformedFrame).await;
    assert!(frame.message.contains("recursion limit"), "{frame:?}");

    // A task with a field the protocol does not have: its shape is wrong, its contract readable.
    let odd = contract(node.id(), MOCK_MODEL, Workload::Chat);
    let mut raw: Value =
        serde_json::from_str(&stacknet_protocol::wire::encode(&task(&odd, &chat_request("hi"))).unwrap())
            .unwrap();
    raw["priority"] = json!("urgent");
    conn.ws
        .send(axum::extract::ws::Message::Text(raw.to_string().into()))
        .await
        .unwrap();
    expect_error(&mut conn, odd.body.id, ErrorCode::MalformedFrame).await;

    // Neither reached the upstream, and the node still serves.
    assert_eq!(mock.requests(), 0);
    let fine = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&fine, &chat_request("still there?"))).await;
    collect(&mut conn, fine.body.id).await.1.unwrap();
}

#[tokio::test]
async fn a_task_frame_over_the_nodes_limit_is_refused_without_dropping_the_connection() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;

    // A hub that breaks the node's 4 MiB limit: that task is refused, nothing else is lost.
    let huge = contract(node.id(), MOCK_MODEL, Workload::Chat);
    let request = chat_request(&"z".repeat(stacknet_protocol::wire::MAX_FRAME_BYTES + 1_000));
    conn.send(&task(&huge, &request)).await;
    let frame = expect_error(&mut conn, huge.body.id, ErrorCode::InvalidRequest).await;
    assert!(
        frame.message.contains("exceeds the limit of 4194304 bytes"),
        "{frame:?}"
    );
    assert_eq!(mock.requests(), 0);
    let fine = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&fine, &chat_request("still there?"))).await;
    collect(&mut conn, fine.body.id).await.1.unwrap();
}

#[tokio::test]
async fn upstream_failures_map_to_error_codes_and_leave_no_paperwork() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;
    let request = chat_request("hi");
    let cases = [
        (
            Script::echo().fail(500, "the GPU caught fire"),
            ErrorCode::UpstreamFailed,
            "the GPU caught fire",
        ),
        (
            Script::echo().fail_with_code(400, "prompt too long", "context_length_exceeded"),
            ErrorCode::ContextLengthExceeded,
            "prompt too long",
        ),
        (
            Script::echo().fail(400, "temperature must be <= 2"),
            ErrorCode::InvalidRequest,
            "temperature must be <= 2",
        ),
        (
            Script::echo().chunks(6).drop_after(2),
            ErrorCode::UpstreamFailed,
            "",
        ),
    ];
    for (script, code, message) in cases {
        mock.set_script(script);
        let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
        conn.send(&task(&contract, &request)).await;
        let frame = expect_error(&mut conn, contract.body.id, code).await;
        assert!(frame.message.contains(message), "{frame:?}");
    }
    assert_eq!(mock.requests(), 4);
    assert!(node.node.wallet().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out() {
    let mock = MockUpstream::start(Script::echo().hang()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, upstream| upstream.timeout_secs = 1).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;
    let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&contract, &chat_request("hi"))).await;
    expect_error(&mut conn, contract.body.id, ErrorCode::Timeout).await;
    assert!(node.node.wallet().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_upstream_is_upstream_failed_and_its_address_stays_private() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let url = mock.base_url().to_owned();
    mock.shutdown().await;
    let mut hub = FakeHub::start().await;
    // The node points at the address where the mock no longer listens.
    let node = start_node(&hub, &url, |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;
    let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&contract, &chat_request("anyone?"))).await;
    let frame = expect_error(&mut conn, contract.body.id, ErrorCode::UpstreamFailed).await;
    assert!(!frame.message.contains("127.0.0.1"), "{}", frame.message);
}
