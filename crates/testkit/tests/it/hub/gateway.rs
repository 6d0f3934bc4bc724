//! The node gateway refuses what it must, precisely, and one bad peer never disturbs the others.

use futures_util::{SinkExt, StreamExt};
use stacknet_protocol::wire::{self, ErrorCode, Hello, HubMessage, NodeMessage};
use stacknet_protocol::{Nonce, PublicKey, SecretKey, Signed, Timestamp};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use tokio_tungstenite::tungstenite::Message;

use super::{chat_body, post_chat};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(net: &TestNetwork) -> (Ws, Nonce, PublicKey) {
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

fn hello(key: &SecretKey, hub: PublicKey, challenge: Nonce) -> Hello {
    Hello {
        node_key: key.public_key(),
        hub,
        challenge,
        models: vec![wire::ModelOffer {
            name: "mock-model".into(),
            workloads: vec![stacknet_protocol::contract::Workload::Chat],
            backend: "test".into(),
            model_sha256: None,
        }],
        max_concurrency: 1,
        software: "test".into(),
        created_at: Timestamp::now(),
        limits: None,
    }
}

/// Reads frames until the hub's error frame; then the connection must end.
async fn expect_error_and_close(ws: &mut Ws) -> (ErrorCode, String) {
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
    ws.send(Message::Text(
        wire::encode(&NodeMessage::Hello(Box::new(signed)))
            .unwrap()
            .into(),
    ))
    .await
    .unwrap();
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
    ws.send(Message::Text(
        wire::encode(&NodeMessage::Hello(Box::new(stale))).unwrap().into(),
    ))
    .await
    .unwrap();
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
    ws.send(Message::Text(
        wire::encode(&NodeMessage::Hello(Box::new(signed)))
            .unwrap()
            .into(),
    ))
    .await
    .unwrap();
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
