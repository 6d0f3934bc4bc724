//! Money when things go wrong around a request: a client that stops reading, a ledger that fails,
//! a node that claims more usage than it delivered. Each test runs on both stores.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use serde_json::{json, Value};
use stacknet_ledger::{
    AccountId, Balance, Entry, LedgerError, LedgerStore, StatementLine, StoreFuture, Totals, TransferId,
    TransferOutcome, TransferRecord, TransferState,
};
use stacknet_node::settlement::HubClient;
use stacknet_node::{OpenAiUpstream, UpstreamConfig};
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::Timestamp;
use stacknet_testkit::fixtures::InflatedUsage;
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::money::{
    books_balance, cost_of, earn_and_file, ledger, on_both_stores, posted, priced, scripted_rail, set_price,
    spend, statement, topup, wallet_docs, with_rail, Db,
};
use super::{chat_body, post_chat, sse_events};

on_both_stores!(
    a_slow_reader_gets_no_free_answer,
    a_transient_ledger_error_does_not_lose_the_capture,
    a_capture_the_ledger_keeps_failing_is_made_while_the_hub_runs,
    a_settlement_the_ledger_failed_leaves_no_money_in_escrow,
    a_capture_made_after_its_hold_expired_still_charges_the_work,
    the_hub_does_not_bill_usage_it_did_not_relay,
    a_payout_the_ledger_failed_to_finish_is_finished_while_the_hub_runs,
);

/// A ledger that fails the first `times` batches `picks` chooses, as a database failing underneath
/// would (nothing applied), then works. With `first_lost`, the first of those failures is one whose
/// batch did commit and whose answer was lost: a retry must replay it, not apply it twice.
pub(super) struct Flaky {
    inner: Arc<dyn LedgerStore>,
    picks: fn(&[Entry]) -> bool,
    left: Arc<AtomicU32>,
    first_lost: bool,
    failed: Arc<AtomicU32>,
}

impl std::fmt::Debug for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flaky").finish_non_exhaustive()
    }
}

impl Flaky {
    /// The layer for the hub, and the count of failures it injected.
    pub(super) fn layer(
        picks: fn(&[Entry]) -> bool,
        times: u32,
        first_lost: bool,
    ) -> (stacknet_hub::LedgerLayer, Arc<AtomicU32>) {
        let (layer, failed, _) = Self::layer_until(picks, times, first_lost);
        (layer, failed)
    }

    /// As [`Flaky::layer`], with the failures still to come, which a test may set to 0 to heal it.
    fn layer_until(
        picks: fn(&[Entry]) -> bool,
        times: u32,
        first_lost: bool,
    ) -> (stacknet_hub::LedgerLayer, Arc<AtomicU32>, Arc<AtomicU32>) {
        let failed = Arc::new(AtomicU32::new(0));
        let left = Arc::new(AtomicU32::new(times));
        let (count, heal) = (failed.clone(), left.clone());
        let layer: stacknet_hub::LedgerLayer = Box::new(move |inner| {
            Arc::new(Flaky {
                inner,
                picks,
                left,
                first_lost,
                failed,
            })
        });
        (layer, count, heal)
    }
}

impl LedgerStore for Flaky {
    fn create_transfers(&self, batch: Vec<Entry>) -> StoreFuture<'_, Vec<TransferOutcome>> {
        let fail = (self.picks)(&batch)
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if !fail {
            return self.inner.create_transfers(batch);
        }
        let first = self.failed.fetch_add(1, Ordering::SeqCst) == 0;
        let lost = first && self.first_lost;
        Box::pin(async move {
            if lost {
                self.inner.create_transfers(batch).await?;
            }
            Err(LedgerError::Internal("injected: the database went away"))
        })
    }

    fn expire_due(&self, now: Timestamp) -> StoreFuture<'_, Vec<TransferId>> {
        self.inner.expire_due(now)
    }

    fn balances(&self, accounts: Vec<AccountId>) -> StoreFuture<'_, Vec<Balance>> {
        self.inner.balances(accounts)
    }

    fn transfer(&self, id: TransferId) -> StoreFuture<'_, Option<TransferRecord>> {
        self.inner.transfer(id)
    }

    fn transfers_of(
        &self,
        account: AccountId,
        limit: u32,
        after: Option<u64>,
    ) -> StoreFuture<'_, Vec<StatementLine>> {
        self.inner.transfers_of(account, limit, after)
    }

    fn sum_check(&self) -> StoreFuture<'_, Totals> {
        self.inner.sum_check()
    }
}

/// A capture: a post of a request's hold.
fn is_capture(batch: &[Entry]) -> bool {
    batch.iter().any(|e| matches!(e, Entry::Post(_)))
}

/// A settlement's shares: transfers out of escrow.
fn is_settlement(batch: &[Entry]) -> bool {
    batch
        .iter()
        .any(|e| matches!(e, Entry::Transfer(t) if t.debit == AccountId::escrow()))
}

async fn priced_on(
    db: &Db,
    script: Script,
    adjust: impl FnOnce(&mut stacknet_hub::HubConfig),
    layer: stacknet_hub::LedgerLayer,
) -> TestNetwork {
    let net = TestNetwork::start_layered(
        script,
        |c| {
            db.apply(c);
            adjust(c);
        },
        layer,
    )
    .await;
    set_price(&net).await;
    net
}

/// Waits until the paid request's cost has left the Stack for escrow and nothing is held.
async fn wait_captured(net: &TestNetwork, cost: i64) {
    let captured = || async {
        let s = statement(net).await;
        let escrow = posted(net, AccountId::escrow()).await;
        (s["balance"]["held"] == "0" && escrow == cost).then_some(())
    };
    wait_until("the request's cost is captured", WAIT_DEADLINE, captured).await;
}

async fn a_slow_reader_gets_no_free_answer(db: Db) {
    // Many chunks: before the fix, a client that stopped reading left the end of its answer, and the
    // node's paperwork, waiting behind a bounded queue until the hold had expired.
    let words: Vec<String> = (0..150).map(|i| format!("w{i}")).collect();
    let net = priced(&db, Script::text(words.join(" ")).chunks(150), |c| {
        c.request_timeout_ms = 2_000;
        c.hold_grace_ms = 500;
    })
    .await;
    topup(&net, 1_000_000).await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {}", net.api_key);
    headers.insert(header::AUTHORIZATION, bearer.parse().unwrap());
    headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    // In process, so that nothing reads the answer's body until this test does.
    let body = Bytes::from(serde_json::to_vec(&body).unwrap());
    let resp =
        stacknet_hub::task::respond(net.hub.hub.state.clone(), headers, Ok(body), Workload::Chat).await;
    assert_eq!(resp.status(), 200);

    // The request's first hold: wait past its deadline (the time-out and the grace) until it is
    // resolved: expired by the sweep, unless the hub kept it open.
    let stack = AccountId::stack(net.stack);
    let first_hold = || async {
        let lines = ledger(&net).transfers_of(stack.clone(), 100, None).await.unwrap();
        lines.into_iter().find(|l| l.transfer.pending).map(|l| l.transfer)
    };
    let hold = wait_until("the request holds its cost", WAIT_DEADLINE, first_hold).await;
    let expires = hold.expires_at.unwrap();
    let gone = || async {
        let now = Timestamp::now();
        let state = ledger(&net)
            .transfer(hold.id.clone())
            .await
            .unwrap()
            .unwrap()
            .state;
        (now > expires && state != TransferState::Pending).then_some(state)
    };
    let state = wait_until("the first hold's deadline passed", WAIT_DEADLINE, gone).await;

    // The client reads on: the whole answer, and it is paid for.
    let text = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let events = sse_events(std::str::from_utf8(&text).unwrap());
    assert_eq!(events.last(), Some(&Value::String("[DONE]".into())), "{events:?}");
    let usage = &events[events.len() - 2]["usage"];
    let cost = cost_of(usage);
    wait_captured(&net, cost).await;
    let s = statement(&net).await;
    assert_eq!(s["balance"]["available"], (1_000_000 - cost).to_string(), "{s}");
    // Captured as soon as the node's paperwork came (the hub takes a stream's events at the node's
    // pace, not the client's), or renewed while it waited: never expired.
    assert_ne!(
        state,
        TransferState::Expired,
        "the first hold expired under a running task"
    );
    books_balance(&net).await;
}

async fn a_transient_ledger_error_does_not_lose_the_capture(db: Db) {
    let (layer, failed) = Flaky::layer(is_capture, 1, false);
    let net = priced_on(&db, Script::text("four words of answer"), |_| {}, layer).await;
    topup(&net, 1_000_000).await;
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let cost = cost_of(&v["usage"]);
    // Well before the hold could expire (the default time-out is minutes).
    wait_captured(&net, cost).await;
    assert_eq!(failed.load(Ordering::SeqCst), 1, "the ledger failed once");
    let s = statement(&net).await;
    assert_eq!(s["balance"]["available"], (1_000_000 - cost).to_string(), "{s}");
    books_balance(&net).await;
}

async fn a_capture_the_ledger_keeps_failing_is_made_while_the_hub_runs(db: Db) {
    // More failures than the writer's attempts; the first one committed and lost its answer.
    let times = stacknet_hub::money::LEDGER_ATTEMPTS + 1;
    let (layer, failed) = Flaky::layer(is_capture, times, true);
    let net = priced_on(&db, Script::text("four words of answer"), |_| {}, layer).await;
    topup(&net, 1_000_000).await;
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let cost = cost_of(&v["usage"]);
    let store = net.hub.hub.state.store.clone();
    let marked = || async { store.uncaptured().await.unwrap().is_empty().then_some(()) };
    wait_until("the paperwork is marked captured", WAIT_DEADLINE, marked).await;
    assert_eq!(failed.load(Ordering::SeqCst), times);
    // Captured exactly once, though one attempt committed unseen.
    wait_captured(&net, cost).await;
    let s = statement(&net).await;
    assert_eq!(s["balance"]["available"], (1_000_000 - cost).to_string(), "{s}");
    let id = v["paperwork"].as_str().unwrap().parse().unwrap();
    let logged = store.paperwork(id).await.unwrap().unwrap();
    assert!(logged.captured);
    assert_eq!(logged.record.cost.micros(), cost);
    books_balance(&net).await;
}

async fn a_capture_made_after_its_hold_expired_still_charges_the_work(db: Db) {
    // The ledger refuses every capture until the hold has expired, then heals.
    let (layer, _, heal) = Flaky::layer_until(is_capture, u32::MAX, false);
    let net = priced_on(
        &db,
        Script::text("four words of answer"),
        |c| {
            c.request_timeout_ms = 1_000;
            c.hold_grace_ms = 200;
        },
        layer,
    )
    .await;
    topup(&net, 1_000_000).await;
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let cost = cost_of(&v["usage"]);
    let stack = AccountId::stack(net.stack);
    let expired = || async {
        let lines = ledger(&net).transfers_of(stack.clone(), 100, None).await.unwrap();
        lines
            .iter()
            .any(|l| l.transfer.pending && l.transfer.state == TransferState::Expired)
            .then_some(())
    };
    wait_until("the request's hold expired", WAIT_DEADLINE, expired).await;
    heal.store(0, Ordering::SeqCst);
    // The repair loop captures it from the Stack's balance: once.
    let store = net.hub.hub.state.store.clone();
    let marked = || async { store.uncaptured().await.unwrap().is_empty().then_some(()) };
    wait_until("the paperwork is marked captured", WAIT_DEADLINE, marked).await;
    wait_captured(&net, cost).await;
    let s = statement(&net).await;
    assert_eq!(s["balance"]["available"], (1_000_000 - cost).to_string(), "{s}");
    let id = v["paperwork"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        store.paperwork(id).await.unwrap().unwrap().record.cost.micros(),
        cost
    );
    books_balance(&net).await;
}

async fn a_settlement_the_ledger_failed_leaves_no_money_in_escrow(db: Db) {
    let times = stacknet_hub::money::LEDGER_ATTEMPTS + 1;
    let (layer, failed) = Flaky::layer(is_settlement, times, false);
    let net = priced_on(
        &db,
        Script::text("paid work here").chunks(3),
        |c| c.challenge_window_ms = 0,
        layer,
    )
    .await;
    topup(&net, 1_000_000).await;
    let total = spend(&net, 2).await;
    assert_eq!(posted(&net, AccountId::escrow()).await, total);
    let node = &net.nodes[0];
    let hub = stacknet_node::settlement::HubClient::connect(&net.hub.url())
        .await
        .unwrap();
    // The filing fails (the ledger kept failing through its retries; unless the repair loop's own
    // attempts used up the failures first), and the settlement it began is finished anyway,
    // without a restart.
    let _ = hub.file(&node.key, wallet_docs(&net).await).await;
    let store = net.hub.hub.state.store.clone();
    let paid = || async {
        let closed = store.open_settlements().await.unwrap().is_empty();
        (closed && posted(&net, AccountId::escrow()).await == 0).then_some(())
    };
    wait_until("the settlement is paid out of escrow", WAIT_DEADLINE, paid).await;
    assert_eq!(failed.load(Ordering::SeqCst), times);
    let earned = posted(&net, AccountId::node(node.node.node_key_id())).await;
    assert!(earned > 0 && earned <= total, "{earned} of {total}");
    // Filing again settles nothing twice.
    let again = hub.file(&node.key, wallet_docs(&net).await).await.unwrap();
    assert!(again.iter().all(|v| v.status() == "already_filed"), "{again:?}");
    assert_eq!(
        posted(&net, AccountId::node(node.node.node_key_id())).await,
        earned
    );
    books_balance(&net).await;
}

async fn the_hub_does_not_bill_usage_it_did_not_relay(db: Db) {
    let net = TestNetwork::start_without_nodes(Script::text("a short honest answer"), |c| db.apply(c)).await;
    set_price(&net).await;
    let mut net = net;
    let config = UpstreamConfig::new(net.upstream.base_url(), vec![MOCK_MODEL.to_owned()]);
    let honest = Arc::new(OpenAiUpstream::new(&config).unwrap());
    let claim = |input_tokens, output_tokens| Usage {
        input_tokens,
        output_tokens,
        units: 0,
    };
    // 100,000 + 100,000 tokens for a 21-byte answer to a 100-byte request.
    let node = Arc::new(InflatedUsage::new(honest, claim(100_000, 100_000)));
    let i = net.add_backend_node(node.clone()).await;
    let node_key = net.nodes[i].node.node_key_id();
    topup(&net, 1_000_000).await;
    for (stream, input, output, refused) in [
        (false, 100_000, 100_000, "100000 input_tokens"),
        (true, 3, 100_000, "100000 output_tokens"),
    ] {
        node.claim(claim(input, output));
        let resp = post_chat(&net, &chat_body(stream)).await;
        let text = resp.text().await.unwrap();
        let error = if stream {
            sse_events(&text).last().cloned().unwrap()["error"].clone()
        } else {
            serde_json::from_str::<Value>(&text).unwrap()["error"].clone()
        };
        assert_eq!(error["code"], "node_error", "{text}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("paperwork was refused") && message.contains(refused),
            "{message}"
        );
    }
    // Nothing charged, nothing logged, and the node's key carries the marks.
    let released = || async { (statement(&net).await["balance"]["held"] == "0").then_some(()) };
    wait_until("the holds are released", WAIT_DEADLINE, released).await;
    let s = statement(&net).await;
    assert_eq!(s["balance"]["available"], "1000000", "{s}");
    assert_eq!(posted(&net, AccountId::escrow()).await, 0);
    assert_eq!(net.hub.hub.state.log.size(), 0);
    let record = net.hub.hub.state.nodes.record(&node_key).unwrap();
    assert_eq!(record.refused_usage(), 2);
    // A claim within what the answer can hold is billed as before.
    node.claim(claim(3, 10));
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 10);
    wait_captured(&net, cost_of(&v["usage"])).await;
    books_balance(&net).await;
}

/// The transfer that finishes a confirmed payout: out of payout-pending to the rail.
fn is_payout_confirmation(batch: &[Entry]) -> bool {
    batch
        .iter()
        .any(|e| matches!(e, Entry::Transfer(t) if t.id.as_str().starts_with("payout-confirm:")))
}

/// Defect #9, the payout half: the rail confirmed, but the ledger failed the transfer that moves
/// the money out of payout-pending more often than the write is retried in place. Before, the money
/// stayed in payout-pending until the hub's next start; now a background repair finishes it.
async fn a_payout_the_ledger_failed_to_finish_is_finished_while_the_hub_runs(db: Db) {
    let failures = stacknet_hub::money::LEDGER_ATTEMPTS * 2;
    let (layer, failed) = Flaky::layer(is_payout_confirmation, failures, false);
    let (url, seen) = scripted_rail("rail-secret", vec![(200, json!({"status": "confirmed"}))]).await;
    let net = priced_on(
        &db,
        Script::text("earn it"),
        |c| with_rail(c, "rail-secret", url, 3),
        layer,
    )
    .await;
    earn_and_file(&net).await;
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let earnings = posted(&net, AccountId::node(node.node.node_key_id())).await;
    assert!(earnings > 0);
    hub.redeem(&node.key, None, "acct_7").await.unwrap();
    let paid = AccountId::external("payout").unwrap();
    let left = || async { (posted(&net, paid.clone()).await == earnings).then_some(()) };
    wait_until("the confirmed payout left the books", WAIT_DEADLINE, left).await;
    assert_eq!(
        failed.load(Ordering::SeqCst),
        failures,
        "the ledger failed as scripted"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "delivered once");
    let pending = posted(&net, AccountId::payout_pending(node.node.node_key_id())).await;
    assert_eq!(pending, 0, "nothing stays in payout-pending");
    books_balance(&net).await;
}
