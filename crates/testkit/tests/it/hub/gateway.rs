//! The node gateway refuses what it must, precisely, and one bad peer never disturbs the others.

use futures_util::{SinkExt, StreamExt};
use stacknet_protocol::wire::{self, ErrorCode, ErrorFrame, Hello, HubMessage, NodeMessage};
use stacknet_protocol::{ContractId, Nonce, PublicKey, SecretKey, Signed, Timestamp};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use tokio_tungstenite::tungstenite::Message;

use super::{chat_body, post_chat};

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn connect(net: &TestNetwork) -> (Ws, Nonce, PublicKey) {
    let url = format!("ws://{}/stacknet/v1/nodes/connect", net.hub.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("a challenge first")
    };
    let HubMessage::Challenge { nonce, hub } = wire::decode(t.as_bytes()).unwrap() else {
        panic!("challenge")
    };
    (ws, nonce, hub)
}

pub(super) fn hello(key: &SecretKey, hub: PublicKey, challenge: Nonce) -> Hello {
    Hello {
        node_key: key.public_key(),
        hub,
        challenge,
        models: vec![wire::ModelOffer {
            name: "mock-model".into(),
            workloads: vec![stacknet_protocol::contract::Workload::Chat],
            backend: "test".into(),
            model_sha256: None,
            tool: None,
        }],
        max_concurrency: 1,
        software: "test".into(),
        created_at: Timestamp::now(),
        limits: None,
    }
}

/// Sends a signed hello.
pub(super) async fn send_hello(ws: &mut Ws, signed: Signed<Hello>) {
    let frame = wire::encode(&NodeMessage::Hello(Box::new(signed))).unwrap();
    ws.send(Message::Text(frame.into())).await.unwrap();
}

/// Reads frames until the hub's error frame; then the connection must end.
pub(super) async fn expect_error_and_close(ws: &mut Ws) -> (ErrorCode, String) {
    let mut error = None;
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(t)) => {
                if let Ok(HubMessage::Error(e)) = wire::decode::<HubMessage>(t.as_bytes()) {
                    error = Some((e.code, e.message));
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    error.expect("an error frame before the close")
}

#[tokio::test]
async fn a_hello_with_a_wrong_signature_is_refused() {
    let net = TestNetwork::start(Script::echo()).await;
    let (mut ws, nonce, hub) = connect(&net).await;
    let key = SecretKey::generate();
    let mut signed = Signed::sign(hello(&key, hub, nonce), &key).unwrap();
    // Claim another key than the one that signed.
    signed.body.node_key = SecretKey::generate().public_key();
    send_hello(&mut ws, signed).await;
    let (code, message) = expect_error_and_close(&mut ws).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert_eq!(message, "hello signature does not verify with its node_key");
    assert_eq!(net.hub.hub.state.nodes.connected().len(), 1, "only the real node");
}

#[tokio::test]
async fn a_replayed_hello_for_another_challenge_is_refused() {
    let net = TestNetwork::start(Script::echo()).await;
    let (mut ws, _nonce, hub) = connect(&net).await;
    let key = SecretKey::generate();
    let stale = Signed::sign(hello(&key, hub, Nonce::random()), &key).unwrap();
    send_hello(&mut ws, stale).await;
    let (code, message) = expect_error_and_close(&mut ws).await;
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert_eq!(message, "hello does not answer this connection's challenge");
}

#[tokio::test]
async fn an_unknown_protocol_version_gets_an_error_frame_and_a_closed_connection() {
    let net = TestNetwork::start(Script::echo()).await;
    let (mut ws, nonce, hub) = connect(&net).await;
    let key = SecretKey::generate();
    let frame = wire::encode(&NodeMessage::Hello(Box::new(
        Signed::sign(hello(&key, hub, nonce), &key).unwrap(),
    )))
    .unwrap()
    .replacen("\"v\":1", "\"v\":2", 1);
    ws.send(Message::Text(frame.into())).await.unwrap();
    let (code, message) = expect_error_and_close(&mut ws).await;
    assert_eq!(code, ErrorCode::UnsupportedVersion);
    assert_eq!(message, "unsupported protocol version 2; this side speaks 1");
}

#[tokio::test]
async fn a_malformed_frame_after_welcome_closes_only_that_connection() {
    let net = TestNetwork::start(Script::echo()).await;
    let (mut ws, nonce, hub) = connect(&net).await;
    let key = SecretKey::generate();
    let signed = Signed::sign(hello(&key, hub, nonce), &key).unwrap();
    send_hello(&mut ws, signed).await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("welcome")
    };
    assert!(matches!(
        wire::decode::<HubMessage>(t.as_bytes()).unwrap(),
        HubMessage::Welcome { .. }
    ));
    ws.send(Message::Text(
        "{\"v\":1,\"type\":\"chunk\",\"contract\":42}".into(),
    ))
    .await
    .unwrap();
    let (code, _) = expect_error_and_close(&mut ws).await;
    assert_eq!(code, ErrorCode::MalformedFrame);
}

#[tokio::test]
async fn a_flood_of_malformed_frames_does_not_disturb_other_nodes() {
    let net = TestNetwork::start(Script::echo()).await;
    let mut floods = Vec::new();
    for i in 0..16 {
        let url = format!("ws://{}/stacknet/v1/nodes/connect", net.hub.addr);
        floods.push(tokio::spawn(async move {
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                return;
            };
            for j in 0..200 {
                let junk = match (i + j) % 4 {
                    0 => Message::Text("not json".into()),
                    1 => Message::Binary(vec![0xff; 64].into()),
                    2 => Message::Text("{\"v\":99}".into()),
                    _ => Message::Text("{\"v\":1,\"type\":\"hello\"}".into()),
                };
                if ws.send(junk).await.is_err() {
                    return;
                }
            }
        }));
    }
    for _ in 0..20 {
        let resp = post_chat(&net, &chat_body(false)).await;
        assert_eq!(resp.status(), 200);
    }
    for f in floods {
        f.await.unwrap();
    }
    assert_eq!(
        net.hub.hub.state.nodes.connected().len(),
        1,
        "the real node is still there, alone"
    );
}

/// A raw node for `key`, through the handshake: its connection, welcomed.
async fn join(net: &TestNetwork, key: &SecretKey) -> Ws {
    let (mut ws, nonce, hub) = connect(net).await;
    let signed = Signed::sign(hello(key, hub, nonce), key).unwrap();
    send_hello(&mut ws, signed).await;
    let welcomed = next_hub_message(&mut ws).await;
    assert!(matches!(welcomed, HubMessage::Welcome { .. }), "{welcomed:?}");
    net.bond_key(key.public_key().node_key_id()).await;
    ws
}

/// The hub's next message other than a heartbeat (the deadline bounds a hang).
async fn next_hub_message(ws: &mut Ws) -> HubMessage {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match wire::decode::<HubMessage>(t.as_bytes()).unwrap() {
                    HubMessage::Heartbeat { .. } => continue,
                    other => return other,
                },
                Some(Ok(Message::Close(_))) | None => panic!("the hub closed the connection"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("{e}"),
            }
        }
    };
    tokio::time::timeout(stacknet_testkit::WAIT_DEADLINE, read)
        .await
        .expect("a message from the hub in time")
}

async fn send(ws: &mut Ws, msg: &NodeMessage) {
    ws.send(Message::Text(wire::encode(msg).unwrap().into()))
        .await
        .unwrap();
}

/// A chat request sent in the background, and the contract the hub hands `ws`'s node for it.
async fn assigned_task(net: &TestNetwork, ws: &mut Ws) -> (tokio::task::JoinHandle<u16>, ContractId) {
    let (url, api_key) = (
        format!("{}/chat/completions", net.base_url()),
        net.api_key.clone(),
    );
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(api_key)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let HubMessage::Task(task) = next_hub_message(ws).await else {
        panic!("a task")
    };
    (request, task.contract.body.id)
}

fn chunk(contract: ContractId) -> NodeMessage {
    NodeMessage::Chunk {
        contract,
        seq: 0,
        data: serde_json::json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}),
    }
}

fn done(contract: ContractId) -> NodeMessage {
    NodeMessage::Done {
        contract,
        paperwork: Box::new(stacknet_protocol::examples::paperwork().unwrap()),
        output_tokens: None,
    }
}

/// The error frame the hub answers a stray frame with.
async fn expect_bad_contract(ws: &mut Ws, contract: ContractId) {
    let HubMessage::Error(e) = next_hub_message(ws).await else {
        panic!("an error frame")
    };
    assert_eq!(e.code, ErrorCode::BadContract);
    assert_eq!(e.contract, Some(contract));
    assert!(
        e.message.contains("is not a running task of this node"),
        "{}",
        e.message
    );
}

fn marks(net: &TestNetwork, key: &SecretKey) -> u64 {
    net.hub
        .hub
        .state
        .nodes
        .record(&key.public_key().node_key_id())
        .expect("the hub keeps a record of the node")
        .stray_frames()
}

#[tokio::test]
async fn a_done_for_another_nodes_contract_gets_an_error_frame_and_a_mark() {
    let net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let (owner_key, other_key) = (SecretKey::generate(), SecretKey::generate());
    let mut owner = join(&net, &owner_key).await;
    let (request, contract) = assigned_task(&net, &mut owner).await;
    let mut other = join(&net, &other_key).await;

    send(&mut other, &done(contract)).await;
    expect_bad_contract(&mut other, contract).await;
    assert_eq!(marks(&net, &other_key), 1);
    assert_eq!(marks(&net, &owner_key), 0);
    assert_eq!(
        net.hub.hub.state.nodes.connected().len(),
        2,
        "the sender stays connected"
    );

    // The task is still the owner's: its own answer reaches the client.
    send(
        &mut owner,
        &NodeMessage::Error(ErrorFrame {
            contract: Some(contract),
            code: ErrorCode::Internal,
            message: "owner gives up".into(),
        }),
    )
    .await;
    assert_ne!(request.await.unwrap(), 200);
    assert_eq!(marks(&net, &owner_key), 0);
}

#[tokio::test]
async fn a_chunk_for_an_unknown_contract_gets_an_error_frame_and_a_mark() {
    let net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let key = SecretKey::generate();
    let mut ws = join(&net, &key).await;
    let unknown = ContractId::random();
    send(&mut ws, &chunk(unknown)).await;
    expect_bad_contract(&mut ws, unknown).await;
    assert_eq!(marks(&net, &key), 1);

    // A task the node itself finished is no longer running either.
    let (request, contract) = assigned_task(&net, &mut ws).await;
    send(
        &mut ws,
        &NodeMessage::Error(ErrorFrame {
            contract: Some(contract),
            code: ErrorCode::Internal,
            message: "failed".into(),
        }),
    )
    .await;
    request.await.unwrap();
    send(&mut ws, &chunk(contract)).await;
    expect_bad_contract(&mut ws, contract).await;
    assert_eq!(marks(&net, &key), 2);
}

#[tokio::test]
async fn a_reconnected_node_is_not_marked_for_its_own_earlier_tasks() {
    let net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let key = SecretKey::generate();
    let mut first = join(&net, &key).await;
    let (request, contract) = assigned_task(&net, &mut first).await;
    first.close(None).await.unwrap();
    drop(first);
    // The reconnect fails the task of the old connection, as before.
    assert_ne!(request.await.unwrap(), 200);

    let mut second = join(&net, &key).await;
    send(&mut second, &chunk(contract)).await;
    send(&mut second, &done(contract)).await;
    // A frame for a task that never was its own, after them: its error frame is the first one.
    let unknown = ContractId::random();
    send(&mut second, &chunk(unknown)).await;
    expect_bad_contract(&mut second, unknown).await;
    assert_eq!(marks(&net, &key), 1, "only the unknown contract is a mark");
}

/// A node's tool offers are checked at hello: a `tool_call` model carries its spec within the
/// limits, under a tool name that is not one of the network's own; no other model carries one.
/// Each refusal names the offer and the rule; a good offer connects.
#[tokio::test]
async fn tool_offers_that_break_the_rules_are_refused_at_hello() {
    use stacknet_protocol::contract::Workload;
    use wire::{ToolSpec, MAX_TOOL_DESCRIPTION_BYTES};

    let net = TestNetwork::start(Script::echo()).await;
    let schema = |v: serde_json::Value| v.as_object().unwrap().clone();
    let spec = |description: String, input_schema| {
        Some(ToolSpec {
            description,
            input_schema,
        })
    };
    let good = || spec("adds".into(), schema(serde_json::json!({"type": "object"})));
    let offer = |name: &str, workload: Workload, tool: Option<ToolSpec>| wire::ModelOffer {
        name: name.into(),
        workloads: vec![workload],
        backend: "mcp-stdio".into(),
        model_sha256: None,
        tool,
    };
    let huge = serde_json::json!({"type": "object", "description": "x".repeat(17 * 1024)});
    let cases = [
        (
            offer("notes__add", Workload::ToolCall, None),
            "a tool_call model must carry its tool spec",
        ),
        (
            offer("mock-model", Workload::Chat, good()),
            "only a tool_call model carries a tool spec",
        ),
        (
            offer("notes add", Workload::ToolCall, good()),
            "a tool's name is 1 to 128 letters",
        ),
        (
            offer("run_code", Workload::ToolCall, good()),
            "one of the network's own tools",
        ),
        (
            offer(
                "notes__add",
                Workload::ToolCall,
                spec(
                    "d".repeat(MAX_TOOL_DESCRIPTION_BYTES + 1),
                    schema(serde_json::json!({"type": "object"})),
                ),
            ),
            "description is at most 2048 bytes",
        ),
        (
            offer("notes__add", Workload::ToolCall, spec("d".into(), schema(huge))),
            "input schema is at most 16384 bytes",
        ),
        (
            offer(
                "notes__add",
                Workload::ToolCall,
                spec("d".into(), schema(serde_json::json!({"type": "string"}))),
            ),
            "must be of type \"object\"",
        ),
    ];
    for (bad, why) in cases {
        let (mut ws, nonce, hub) = connect(&net).await;
        let key = SecretKey::generate();
        let mut body = hello(&key, hub, nonce);
        body.models = vec![bad];
        let signed = Signed::sign(body, &key).unwrap();
        send_hello(&mut ws, signed).await;
        let (code, message) = expect_error_and_close(&mut ws).await;
        assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
        assert!(message.contains(why), "{message} (expected: {why})");
    }
    // A good tool offer connects beside the mock node.
    let (mut ws, nonce, hub) = connect(&net).await;
    let key = SecretKey::generate();
    let mut body = hello(&key, hub, nonce);
    body.models = vec![offer("notes__add", Workload::ToolCall, good())];
    let signed = Signed::sign(body, &key).unwrap();
    send_hello(&mut ws, signed).await;
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("a welcome")
    };
    assert!(
        matches!(
            wire::decode::<HubMessage>(t.as_bytes()).unwrap(),
            HubMessage::Welcome { .. }
        ),
        "{t}"
    );
}
