//! The connection's life: reconnecting, refusals, liveness, capacity, cancel, pings, shutdown.

use std::time::Duration;

use axum::extract::ws::Message;
use tokio::time::{timeout, Instant};

use super::fake_hub::WAIT;
use super::*;

#[tokio::test]
async fn the_node_reconnects_when_the_hub_drops_the_connection() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let first = hub.next_conn().await.handshake(30_000).await;
    // The previous connection is dropped here: the TCP connection closes under the node.
    let mut conn = hub.next_conn().await;
    let second = conn.handshake(30_000).await;
    assert_eq!(first.body.node_key, second.body.node_key);
    assert_ne!(first.body.challenge, second.body.challenge);
    // And the new connection works.
    let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&contract, &chat_request("again"))).await;
    collect(&mut conn, contract.body.id).await.1.unwrap();
}

#[tokio::test]
async fn a_refused_hello_is_retried() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let _node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.challenge().await;
    let refusal = ErrorFrame {
        contract: None,
        code: ErrorCode::Unauthenticated,
        message: "this node key is not registered".to_owned(),
    };
    conn.send(&HubMessage::Error(refusal)).await;
    drop(conn);
    hub.next_conn().await.handshake(30_000).await;
}

#[tokio::test]
async fn a_node_pinned_to_another_hub_key_sends_no_hello() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let pinned = SecretKey::from_seed(&[8; 32]).public_key();
    let _node = start_node(&hub, mock.base_url(), |options, _| options.hub_key = Some(pinned)).await;
    let mut conn = hub.next_conn().await;
    let hub_key = hub.key.public_key();
    conn.send(&HubMessage::Challenge {
        nonce: Nonce::random(),
        hub: hub_key,
    })
    .await;
    assert!(conn.recv_raw().await.is_none(), "the node should hang up");
    // It keeps trying (the right hub may come back), and still refuses this one.
    let _again = hub.next_conn().await;
}

#[tokio::test]
async fn a_silent_hub_is_given_up_after_three_heartbeat_intervals() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let _node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut silent = hub.next_conn().await;
    silent.handshake(100).await;
    // Keep the socket open but say nothing: the node must notice by itself and reconnect.
    hub.next_conn().await.handshake(30_000).await;
    drop(silent);
}

#[tokio::test]
async fn a_heartbeat_interval_near_u64_max_does_not_panic_the_node() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    // An operator who wants the node to wait long for a quiet hub: the hub's interval times this
    // count is far beyond what a Duration or an Instant can hold.
    let node = start_node(&hub, mock.base_url(), |o, _| o.heartbeat_misses = 1_000_000).await;
    for interval_ms in [u64::MAX, u64::MAX / 3 + 1] {
        let mut conn = hub.next_conn().await;
        conn.handshake(interval_ms).await;
        // The session serves on: heartbeats are answered and a task runs to its paperwork.
        assert_eq!(active_tasks(&mut conn).await, 0, "interval {interval_ms} ms");
        let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
        conn.send(&task(&contract, &chat_request("still here"))).await;
        collect(&mut conn, contract.body.id).await.1.unwrap();
        // Dropping the connection makes the node reconnect for the next interval.
    }
}

#[tokio::test]
async fn excess_tasks_are_refused_as_overloaded_and_cancel_frees_their_slots() {
    let mock = MockUpstream::start(Script::echo().hang()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |options, _| options.max_concurrency = 2).await;
    let mut conn = hub.next_conn().await;
    assert_eq!(conn.handshake(30_000).await.body.max_concurrency, 2);
    let request = chat_request("hi");
    let tasks: Vec<_> = (0..3)
        .map(|_| contract(node.id(), MOCK_MODEL, Workload::Chat))
        .collect();
    for t in &tasks {
        conn.send(&task(t, &request)).await;
    }
    // The first two hang in the upstream; the third finds no free slot.
    expect_error(&mut conn, tasks[2].body.id, ErrorCode::Overloaded).await;
    assert_eq!(active_tasks(&mut conn).await, 2);

    for t in &tasks[..2] {
        conn.send(&HubMessage::Cancel { contract: t.body.id }).await;
        // Cut off before the upstream answered: nothing was produced, so no paperwork, and the
        // node says so, so the hub stops waiting for it.
        expect_error(&mut conn, t.body.id, ErrorCode::Cancelled).await;
    }
    let deadline = Instant::now() + WAIT;
    while active_tasks(&mut conn).await != 0 {
        assert!(
            Instant::now() < deadline,
            "cancelled tasks should free their slots"
        );
        tokio::task::yield_now().await;
    }

    mock.set_script(Script::echo());
    let next = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&next, &request)).await;
    let pw = collect(&mut conn, next.body.id).await.1.unwrap();
    // Cancelled tasks leave no paperwork.
    assert_eq!(node.node.wallet().list().await.unwrap(), vec![pw]);
}

/// Sends a heartbeat and returns the `active` count of the node's answer.
async fn active_tasks(conn: &mut HubConn) -> u32 {
    conn.send(&HubMessage::Heartbeat { at: Timestamp::now() }).await;
    match conn.recv().await {
        NodeMessage::Heartbeat { active, .. } => active,
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

#[tokio::test]
async fn pings_are_answered_and_malformed_frames_are_skipped() {
    let mock = MockUpstream::start(Script::echo()).await.unwrap();
    let mut hub = FakeHub::start().await;
    let _node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;

    conn.ws.send(Message::Ping("are you there".into())).await.unwrap();
    loop {
        match conn.recv_raw().await.expect("the node should stay connected") {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Message::Ping(_) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    for junk in [
        "not json",
        r#"{"v":1,"type":"bogus"}"#,
        r#"{"v":99,"type":"heartbeat"}"#,
        "[]",
    ] {
        conn.ws.send(Message::Text(junk.into())).await.unwrap();
    }
    conn.ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(active_tasks(&mut conn).await, 0);
}

#[tokio::test]
async fn shutdown_lets_a_running_task_finish_and_deliver_its_paperwork() {
    let mock = MockUpstream::start(Script::echo().chunks(4).chunk_delay(Duration::from_millis(50)))
        .await
        .unwrap();
    let mut hub = FakeHub::start().await;
    let mut node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;
    let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
    conn.send(&task(&contract, &chat_request("bye"))).await;
    let NodeMessage::Chunk { seq: 0, .. } = conn.recv().await else {
        panic!("expected the first chunk");
    };

    node.stop.take().unwrap().send(()).unwrap();
    let (rest, done) = collect(&mut conn, contract.body.id).await;
    assert_eq!(rest.first().map(|(seq, _)| *seq), Some(1));
    let pw = done.expect("the running task should finish during the drain");
    check_paperwork(&pw, &hub.key.public_key()).unwrap();
    assert!(
        conn.recv_raw().await.is_none(),
        "then the node should close the connection"
    );
    timeout(WAIT, &mut node.run).await.unwrap().unwrap();
}

/// Issue 10, defect 17, on the node alone: a `cancel` mid-stream aborts the upstream request, and
/// the task still ends with `done`: paperwork marked cancelled, over exactly the chunks it sent, and
/// claiming one output token per content chunk sent (the upstream never reported usage).
#[tokio::test]
async fn a_cancelled_task_aborts_its_upstream_request_and_signs_for_the_chunks_it_sent() {
    const CHUNKS: usize = 100;
    let words: Vec<String> = (0..CHUNKS).map(|i| format!("w{i}")).collect();
    let script = Script::text(words.join(" "))
        .chunks(CHUNKS)
        .chunk_delay(Duration::from_millis(20));
    let mock = MockUpstream::start(script).await.unwrap();
    let mut hub = FakeHub::start().await;
    let node = start_node(&hub, mock.base_url(), |_, _| {}).await;
    let mut conn = hub.next_conn().await;
    conn.handshake(30_000).await;
    let contract = contract(node.id(), MOCK_MODEL, Workload::Chat);
    let id = contract.body.id;
    conn.send(&task(&contract, &chat_request("go on"))).await;
    let mut sent = Vec::new();
    while sent.len() < 3 {
        match conn.recv().await {
            NodeMessage::Chunk { data, .. } => sent.push(data),
            NodeMessage::Heartbeat { .. } => {}
            other => panic!("expected a chunk, got {other:?}"),
        }
    }
    conn.send(&HubMessage::Cancel { contract: id }).await;
    let (rest, result) = collect(&mut conn, id).await;
    let pw = result.expect("a cancelled task that produced output ends with paperwork");
    sent.extend(rest.into_iter().map(|(_, data)| data));

    assert!(pw.body.cancelled);
    assert_eq!(
        pw.body.output_sha256,
        stacknet_node::digest_of_stream(Workload::Chat, &sent).unwrap()
    );
    let content = sent
        .iter()
        .filter(|c| stacknet_node::usage::is_content_chunk(c))
        .count() as u64;
    assert_eq!(pw.body.usage.output_tokens, content);
    assert!(content < CHUNKS as u64, "stopped after {content} chunks");
    assert_eq!(node.node.wallet().list().await.unwrap(), vec![pw]);
    let aborted = || std::future::ready((mock.aborted() == 1).then_some(()));
    stacknet_testkit::wait_until("the upstream request is aborted", WAIT, aborted).await;
}
