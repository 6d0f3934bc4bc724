//! A client that goes away cancels its task (issue 10, defect 17): the hub tells the node at once,
//! the node stops its backend (the upstream request is aborted), signs for the output it actually
//! produced, and the hub accepts, logs and bills that paperwork, so the node is paid for the work
//! done and its filing settles instead of being refused forever.

use std::time::Duration;

use stacknet_ledger::AccountId;
use stacknet_node::settlement::{file_wallet, HubClient};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::money::{set_price, statement, topup};
use super::{chat_body, post_chat};

/// Content chunks of the scripted answer: far more than a client reads before it leaves.
const ANSWER_CHUNKS: usize = 200;
/// Content chunks a streaming client reads before it disconnects.
const READ_BEFORE_LEAVING: usize = 3;

/// One token per chunk, paced so the answer takes seconds: a cancelled task is cut off mid-way.
fn long_answer() -> Script {
    let words: Vec<String> = (0..ANSWER_CHUNKS).map(|i| format!("w{i}")).collect();
    Script::text(words.join(" "))
        .chunks(ANSWER_CHUNKS)
        .chunk_delay(Duration::from_millis(20))
}

/// A network with a priced model, a funded Stack, and paperwork fileable at once.
async fn priced_network() -> TestNetwork {
    let net = TestNetwork::start_with(long_answer(), |c| c.challenge_window_ms = 0).await;
    set_price(&net).await;
    topup(&net, 1_000_000).await;
    net
}

/// Streams a chat answer, reads `n` content chunks of it, then drops the connection.
async fn read_then_leave(net: &TestNetwork, n: usize) {
    let mut resp = post_chat(net, &chat_body(true)).await;
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    while seen.matches("\"content\":\"w").count() < n {
        let piece = resp.chunk().await.unwrap().expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    drop(resp);
}

/// Sends a whole-answer chat request on a bare connection, which the caller closes by dropping it.
async fn ask_then_hang_up(net: &TestNetwork) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        net.hub.addr,
        net.api_key,
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(net.hub.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    tcp
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_task_up_to_the_upstream() {
    let net = priced_network().await;
    let aborted = |n: u64| {
        let upstream = &net.upstream;
        move || std::future::ready((upstream.aborted() >= n).then_some(()))
    };

    // Streaming: the client drops the SSE body after a few chunks.
    read_then_leave(&net, READ_BEFORE_LEAVING).await;
    wait_until(
        "the upstream request of the streamed answer is aborted",
        WAIT_DEADLINE,
        aborted(1),
    )
    .await;

    // Whole answer: the client closes its connection while the node is still generating.
    let client = ask_then_hang_up(&net).await;
    let upstream = &net.upstream;
    let asked = || std::future::ready((upstream.requests() >= 2).then_some(()));
    wait_until("the second request reaches the upstream", WAIT_DEADLINE, asked).await;
    drop(client);
    wait_until(
        "the upstream request of the whole answer is aborted",
        WAIT_DEADLINE,
        aborted(2),
    )
    .await;

    // Neither task holds a slot any more: the next request is answered in full.
    net.upstream.set_script(Script::text("short answer").chunks(2));
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn a_cancelled_task_is_signed_for_what_it_produced_accepted_and_billed() {
    let net = priced_network().await;
    read_then_leave(&net, READ_BEFORE_LEAVING).await;

    // The node signs for the cancelled task and the hub captures its cost: nothing stays held.
    let wallet = net.nodes[0].node.wallet();
    let docs = wait_until(
        "the node signed paperwork for the cancelled task",
        WAIT_DEADLINE,
        || async { wallet.list().await.ok().filter(|d| !d.is_empty()) },
    )
    .await;
    assert_eq!(docs.len(), 1);
    let pw = &docs[0];
    assert!(pw.body.cancelled, "the paperwork says the task was cancelled");
    let produced = pw.body.usage.output_tokens;
    assert!(
        produced >= READ_BEFORE_LEAVING as u64 && produced < ANSWER_CHUNKS as u64,
        "signed for {produced} output tokens"
    );
    let held = || async { (statement(&net).await["balance"]["held"] == "0").then_some(()) };
    wait_until("the cancelled task's hold is settled", WAIT_DEADLINE, held).await;
    net.hub.hub.state.writer.flush().await;

    // Accepted: in the paperwork log, and the Stack paid its cost (less than the whole answer's).
    let id = pw.id().unwrap();
    let logged = net.hub.hub.state.store.paperwork(id).await.unwrap();
    assert!(logged.is_some(), "the hub logged the cancelled task's paperwork");
    let cost = (pw.body.usage.input_tokens + 2 * produced) as i64 + 100;
    let s = statement(&net).await;
    assert_eq!(s["balance"]["available"], (1_000_000 - cost).to_string(), "{s}");
    let full = (pw.body.usage.input_tokens + 2 * ANSWER_CHUNKS as u64) as i64 + 100;
    assert!(cost < full);

    // The node is paid for it, once.
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, wallet).await.unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].status(), "settled", "{verdicts:?}");
    assert_eq!(verdicts[0].amount().unwrap().micros(), cost);
    let earned = net
        .hub
        .hub
        .state
        .ledger
        .balance(AccountId::node(node.node.node_key_id()))
        .await
        .unwrap()
        .posted
        .micros();
    assert!(earned > 0, "the node earned {earned}");
    let again = hub.file(&node.key, docs.clone()).await.unwrap();
    assert_eq!(again[0].status(), "already_filed", "{again:?}");
    assert!(file_wallet(&hub, &node.key, wallet).await.unwrap().is_empty());
}
