//! A hub reduced to its node gateway: every WebSocket a node opens is handed to the test, which plays
//! the hub's side frame by frame.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use stacknet_protocol::wire::{self, Hello, HubMessage, NodeMessage};
use stacknet_protocol::{examples, Nonce, SecretKey, Signed};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct FakeHub {
    /// The base URL a node is configured with (`http://127.0.0.1:PORT`).
    pub url: String,
    pub key: SecretKey,
    connections: mpsc::Receiver<WebSocket>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn upgrade(ws: WebSocketUpgrade, State(tx): State<mpsc::Sender<WebSocket>>) -> Response {
    ws.on_upgrade(move |socket| async move {
        let _ = tx.send(socket).await;
    })
}

impl FakeHub {
    pub async fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, connections) = mpsc::channel(16);
        let app = Router::new()
            .route("/stacknet/v1/nodes/connect", get(upgrade))
            .with_state(tx);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeHub {
            url: format!("http://{addr}"),
            key: examples::hub_key(),
            connections,
            server,
        }
    }

    /// The next connection a node opens.
    pub async fn next_conn(&mut self) -> HubConn {
        let ws = timeout(WAIT, self.connections.recv())
            .await
            .expect("the node should connect")
            .expect("the fake hub is running");
        HubConn {
            ws,
            key: SecretKey::from_seed(&self.key.seed()),
        }
    }
}

pub struct HubConn {
    pub ws: WebSocket,
    key: SecretKey,
}

impl HubConn {
    pub async fn send(&mut self, message: &HubMessage) {
        let frame = wire::encode(message).unwrap();
        self.ws.send(Message::Text(frame.into())).await.unwrap();
    }

    /// The next WebSocket message, pings and pongs included; `None` when the node closed.
    pub async fn recv_raw(&mut self) -> Option<Message> {
        match timeout(WAIT, self.ws.recv())
            .await
            .expect("the node should send something")
        {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => None,
            Some(Ok(message)) => Some(message),
        }
    }

    /// The next protocol message from the node.
    pub async fn recv(&mut self) -> NodeMessage {
        loop {
            match self.recv_raw().await.expect("the node closed the connection") {
                Message::Text(text) => return wire::decode(text.as_bytes()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends a challenge and returns the node's Hello, checked: signed by the key it names, bound to
    /// this hub and this nonce.
    pub async fn challenge(&mut self) -> Signed<Hello> {
        let nonce = Nonce::random();
        let hub = self.key.public_key();
        self.send(&HubMessage::Challenge { nonce, hub }).await;
        let NodeMessage::Hello(hello) = self.recv().await else {
            panic!("expected a hello");
        };
        hello
            .verify(&hello.body.node_key)
            .expect("the hello is signed by its node key");
        assert_eq!(hello.body.hub, hub);
        assert_eq!(hello.body.challenge, nonce);
        *hello
    }

    /// Challenge, hello, welcome, and the node's first heartbeat (the models it has ready): the
    /// node is connected.
    pub async fn handshake(&mut self, heartbeat_interval_ms: u64) -> Signed<Hello> {
        let hello = self.challenge().await;
        let node_key = hello.body.node_key.node_key_id();
        self.send(&HubMessage::Welcome {
            node_key,
            heartbeat_interval_ms,
            limits: None,
        })
        .await;
        match self.recv().await {
            NodeMessage::Heartbeat { .. } => {}
            other => panic!("expected the node's first heartbeat, got {other:?}"),
        }
        hello
    }
}
