//! Money through the whole path: prices, top-ups, escrow at admission, capture, 402s, filing and the
//! attribution split, the paperwork log's proofs, redemption through a payout webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use serde_json::{json, Value};
use stacknet_hub::log::{log_origin, paperwork_leaf, verify_consistency_response, verify_inclusion_response};
use stacknet_ledger::{AccountId, LedgerStore};
use stacknet_node::settlement::{file_wallet, HubClient};
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{Amount, SecretKey, Signed, Timestamp};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::{chat_body, client, post_chat};

/// Where a test's hub keeps its books: every test here runs on both.
#[derive(Clone, Debug)]
pub(super) enum Db {
    Sqlite,
    /// A fresh schema in the database `STACKNET_TEST_DATABASE_URL` names, dropped after the test.
    Postgres {
        url: String,
        schema: String,
    },
}

impl Db {
    /// Fails when no database is configured: a test that did not run must not pass.
    pub(super) fn postgres() -> Self {
        let url = std::env::var("STACKNET_TEST_DATABASE_URL").expect(
            "STACKNET_TEST_DATABASE_URL is not set: this test needs PostgreSQL (scripts/test.sh sets it)",
        );
        let schema = format!(
            "money_{}",
            hex::encode(&stacknet_protocol::Nonce::random().0[..6])
        );
        Db::Postgres { url, schema }
    }

    pub(super) fn apply(&self, config: &mut stacknet_hub::HubConfig) {
        if let Db::Postgres { url, schema } = self {
            config.database = Some(format!("{url}?schema={schema}"));
        }
    }

    pub(super) async fn drop_schema(&self) {
        if let Db::Postgres { url, schema } = self {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .unwrap();
        }
    }
}

/// `name` on SQLite, and on PostgreSQL in an ignored test (it needs `STACKNET_TEST_DATABASE_URL`;
/// `scripts/test.sh` runs it with `--include-ignored`).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Db::Sqlite).await;
            }
            #[tokio::test]
            #[ignore = "needs PostgreSQL (STACKNET_TEST_DATABASE_URL); scripts/test.sh runs it"]
            async fn postgres() {
                let db = super::Db::postgres();
                super::$name(db.clone()).await;
                db.drop_schema().await;
            }
        }
    )*};
}
pub(super) use on_both_stores;

on_both_stores!(
    a_paid_request_holds_the_maximum_then_captures_the_actual_cost,
    a_request_the_balance_cannot_cover_gets_402_before_any_node_is_used,
    fifty_simultaneous_requests_against_a_balance_for_one_admit_exactly_one,
    a_failed_task_releases_its_whole_hold,
    filing_pays_the_split_once_and_refuses_forged_altered_and_replayed_paperwork,
    paperwork_cannot_be_filed_inside_its_challenge_window,
    a_replayed_filing_request_is_refused,
    inclusion_and_consistency_proofs_from_the_hub_verify,
    redemption_pays_out_through_the_webhook_after_a_retry,
    a_payout_the_rail_refuses_fails_and_returns_the_money,
    a_payout_cannot_be_paid_twice,
    signed_requests_from_fresh_keys_leave_no_lasting_rows,
    a_refused_redeem_leaves_no_payout_row,
    a_spoofed_hub_cannot_make_the_wallet_drop_paperwork,
    a_wallet_that_lost_its_writes_recovers_them_from_the_log_and_is_paid_once,
    refused_paperwork_is_not_filed_again_and_shows_why,
    a_sent_payout_is_confirmed_or_failed_by_the_signed_callback_once,
    a_payout_url_with_credentials_never_shows_them_in_the_statement,
    the_payments_webhook_tops_up_once_per_event_and_refuses_bad_signatures,
    n_choices_cannot_escape_the_hold,
    a_prompt_array_cannot_escape_the_hold,
    best_of_cannot_escape_the_hold,
    images_cannot_escape_the_hold
);

/// 1 micro-credit per input token, 2 per output token, 100 per request.
pub(super) const PRICE: (i64, i64, i64) = (1_000_000, 2_000_000, 100);

pub(super) async fn admin(net: &TestNetwork, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/stacknet/v1/admin{path}", net.hub.url()))
        .bearer_auth(&net.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn start(db: &Db, script: Script, adjust: impl FnOnce(&mut stacknet_hub::HubConfig)) -> TestNetwork {
    TestNetwork::start_with(script, |c| {
        db.apply(c);
        adjust(c);
    })
    .await
}

pub(super) async fn priced(
    db: &Db,
    script: Script,
    adjust: impl FnOnce(&mut stacknet_hub::HubConfig),
) -> TestNetwork {
    let net = start(db, script, adjust).await;
    set_price(&net).await;
    net
}

/// Prices [`MOCK_MODEL`] at [`PRICE`].
pub(super) async fn set_price(net: &TestNetwork) {
    let resp = admin(
        net,
        "/prices",
        json!({"model": MOCK_MODEL, "input_per_mtok": PRICE.0.to_string(),
               "output_per_mtok": PRICE.1.to_string(), "per_request": PRICE.2.to_string()}),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

pub(super) async fn topup(net: &TestNetwork, micros: i64) {
    let resp = admin(
        net,
        &format!("/stacks/{}/topup", net.stack),
        json!({"amount": micros.to_string()}),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

pub(super) fn ledger(net: &TestNetwork) -> Arc<dyn LedgerStore> {
    net.hub.hub.state.ledger.clone()
}

pub(super) async fn posted(net: &TestNetwork, account: AccountId) -> i64 {
    ledger(net).balance(account).await.unwrap().posted.micros()
}

pub(super) async fn statement(net: &TestNetwork) -> Value {
    client()
        .get(format!("{}/stacknet/v1/statement", net.hub.url()))
        .bearer_auth(&net.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(super) fn cost_of(usage: &Value) -> i64 {
    let input = usage["prompt_tokens"].as_i64().unwrap();
    let output = usage["completion_tokens"].as_i64().unwrap();
    // Rounded up to the micro-credit, as PriceTerms::cost does.
    (input * PRICE.0 + output * PRICE.1 + 999_999) / 1_000_000 + PRICE.2
}

pub(super) async fn books_balance(net: &TestNetwork) {
    let totals = ledger(net).sum_check().await.unwrap();
    assert!(totals.is_balanced(), "books out of balance: {totals:?}");
}

async fn a_paid_request_holds_the_maximum_then_captures_the_actual_cost(db: Db) {
    let net = priced(&db, Script::text("four words of answer").chunks(2), |_| {}).await;
    topup(&net, 1_000_000).await;
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let cost = cost_of(&v["usage"]);
    let s = statement(&net).await;
    assert_eq!(s["balance"]["available"], (1_000_000 - cost).to_string(), "{s}");
    assert_eq!(s["balance"]["held"], "0");
    let reasons: Vec<&str> = s["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["topup", "hold", "capture"], "{s}");
    assert_eq!(s["transfers"][2]["amount"], cost.to_string(), "{s}");
    // The captured cost waits in escrow until the node files its paperwork.
    assert_eq!(posted(&net, AccountId::escrow()).await, cost);
    books_balance(&net).await;
}

async fn a_request_the_balance_cannot_cover_gets_402_before_any_node_is_used(db: Db) {
    let net = priced(&db, Script::text("never sent"), |_| {}).await;
    topup(&net, 50).await;
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_balance");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("50 micro-credits available"));
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    assert_eq!(statement(&net).await["balance"]["available"], "50");
}

async fn fifty_simultaneous_requests_against_a_balance_for_one_admit_exactly_one(db: Db) {
    // Slow enough that the first is still running when the other 49 ask.
    let net = priced(
        &db,
        Script::text("a b c d")
            .chunks(4)
            .chunk_delay(Duration::from_millis(150)),
        |_| {},
    )
    .await;
    let mut body = chat_body(false);
    body["max_tokens"] = json!(100);
    // Cover one request's maximum cost and not two.
    let bytes = serde_json::to_vec(&body).unwrap().len() as i64;
    let max = (bytes + 1024) * PRICE.0 / 1_000_000 + 100 * PRICE.1 / 1_000_000 + PRICE.2;
    topup(&net, max + max / 2).await;
    let calls = (0..50).map(|_| {
        let body = body.clone();
        let net = &net;
        async move { post_chat(net, &body).await.status().as_u16() }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 402).count();
    assert_eq!((ok, refused), (1, 49), "{statuses:?}");
    books_balance(&net).await;
}

async fn a_failed_task_releases_its_whole_hold(db: Db) {
    let net = priced(&db, Script::text("x").fail(500, "model server broke"), |_| {}).await;
    topup(&net, 1_000_000).await;
    let resp = post_chat(&net, &chat_body(false)).await;
    assert_eq!(resp.status(), 502);
    let released = || async { (statement(&net).await["balance"]["held"] == "0").then_some(()) };
    wait_until("the hold is released", WAIT_DEADLINE, released).await;
    assert_eq!(statement(&net).await["balance"]["available"], "1000000");
    assert_eq!(posted(&net, AccountId::escrow()).await, 0);
    books_balance(&net).await;
}

/// Makes `n` paid requests and returns their total cost.
pub(super) async fn spend(net: &TestNetwork, n: usize) -> i64 {
    let mut total = 0;
    for _ in 0..n {
        let v: Value = post_chat(net, &chat_body(false)).await.json().await.unwrap();
        total += cost_of(&v["usage"]);
    }
    net.hub.hub.state.writer.flush().await;
    total
}

pub(super) async fn wallet_docs(net: &TestNetwork) -> Vec<Signed<Paperwork>> {
    net.nodes[0].node.wallet().list().await.unwrap()
}

async fn filing_pays_the_split_once_and_refuses_forged_altered_and_replayed_paperwork(db: Db) {
    let net = priced(&db, Script::text("paid work here").chunks(3), |c| {
        c.challenge_window_ms = 0
    })
    .await;
    topup(&net, 1_000_000).await;
    let total = spend(&net, 3).await;
    let node = &net.nodes[0];
    let node_account = AccountId::node(node.node.node_key_id());
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let docs = wallet_docs(&net).await;
    assert_eq!(docs.len(), 3);

    // Forgeries first: none of them may move money.
    let before = (
        posted(&net, node_account.clone()).await,
        posted(&net, AccountId::escrow()).await,
    );
    let mut altered_usage = docs[0].clone();
    altered_usage.body.usage.output_tokens += 1000;
    let mut resigned = docs[0].body.clone();
    resigned.output_sha256 = stacknet_protocol::Sha256Digest::of(b"something else");
    let resigned = Signed::sign(resigned, &node.key).unwrap();
    let thief = SecretKey::generate();
    let mut stolen = docs[1].body.clone();
    stolen.node_key = thief.public_key();
    let stolen = Signed::sign(stolen, &thief).unwrap();
    let verdicts = hub.file(&node.key, vec![altered_usage, resigned]).await.unwrap();
    assert!(verdicts.iter().all(|v| v.status() == "refused"), "{verdicts:?}");
    assert!(
        verdicts.iter().any(|v| v.reason().unwrap().contains("signature")),
        "{verdicts:?}"
    );
    assert!(
        verdicts
            .iter()
            .any(|v| v.reason().unwrap().contains("not in the paperwork log")),
        "{verdicts:?}"
    );
    // Someone else's paperwork, filed with the thief's key: refused (and the contract names the node).
    let verdicts = hub.file(&thief, vec![stolen, docs[2].clone()]).await.unwrap();
    assert!(verdicts.iter().all(|v| v.status() == "refused"), "{verdicts:?}");
    let reasons: Vec<&str> = verdicts.iter().map(|v| v.reason().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("assigned to")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("another node")), "{reasons:?}");
    assert_eq!(
        before,
        (
            posted(&net, node_account.clone()).await,
            posted(&net, AccountId::escrow()).await
        ),
        "no money moved"
    );

    // The real filing settles everything once.
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert_eq!(verdicts.len(), 3);
    assert!(verdicts.iter().all(|v| v.status() == "settled"), "{verdicts:?}");
    let settled: i64 = verdicts.iter().map(|v| v.amount().unwrap().micros()).sum();
    assert_eq!(settled, total);
    assert_eq!(posted(&net, AccountId::escrow()).await, 0, "escrow emptied");
    let node_share = posted(&net, node_account.clone()).await;
    // 70% to the node (plus the rounding remainder), +10% warm bonus from the treasury's 20%.
    let expected_share: i64 = verdicts
        .iter()
        .map(|v| {
            let c = v.amount().unwrap().micros();
            let parts = [1_000, 500, 500, 400, 100, 500]
                .iter()
                .map(|bps| c * bps / 10_000)
                .sum::<i64>();
            c - parts
        })
        .sum();
    // The first task was cold (the hub had not seen the model ready on the node); the next two
    // were warm: the treasury pays +10% of the node's share on those, out of the 20% of shares it
    // received (no referrer, skills or providers named).
    let bonus = node_share - expected_share;
    assert!(
        bonus > 0 && bonus <= expected_share / 10,
        "node got {node_share}, share {expected_share}"
    );
    let stack_shares: i64 = verdicts
        .iter()
        .map(|v| v.amount().unwrap().micros() * 1_000 / 10_000)
        .sum();
    let treasury = posted(&net, AccountId::treasury()).await;
    assert_eq!(
        treasury + node_share + stack_shares,
        total,
        "every micro-credit of the cost is accounted for"
    );
    books_balance(&net).await;

    // A replay is idempotent: nothing moves, each paperwork says it was filed before.
    let again = hub.file(&node.key, docs.clone()).await.unwrap();
    assert!(again.iter().all(|v| v.status() == "already_filed"), "{again:?}");
    assert_eq!(posted(&net, node_account).await, node_share);
    // The wallet knows: a second `file` has nothing to send.
    assert!(file_wallet(&hub, &node.key, node.node.wallet())
        .await
        .unwrap()
        .is_empty());
}

async fn paperwork_cannot_be_filed_inside_its_challenge_window(db: Db) {
    let net = priced(&db, Script::text("early"), |c| c.challenge_window_ms = 3_600_000).await;
    topup(&net, 1_000_000).await;
    spend(&net, 1).await;
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].status(), "refused");
    assert!(
        verdicts[0].reason().unwrap().contains("challenge window"),
        "{verdicts:?}"
    );
    assert_eq!(posted(&net, AccountId::node(node.node.node_key_id())).await, 0);
    // Still unfiled in the wallet, for the next run.
    assert_eq!(
        file_wallet(&hub, &node.key, node.node.wallet())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn a_replayed_filing_request_is_refused(db: Db) {
    let net = priced(&db, Script::text("once"), |c| c.challenge_window_ms = 0).await;
    topup(&net, 1_000_000).await;
    spend(&net, 1).await;
    let node = &net.nodes[0];
    let docs = wallet_docs(&net).await;
    let hub_key = HubClient::connect(&net.hub.url()).await.unwrap().hub_key;
    let filing = stacknet_protocol::filing::Filing {
        node_key: node.key.public_key(),
        hub: hub_key,
        paperwork: vec![docs[0].id().unwrap()],
        created_at: stacknet_protocol::Timestamp::now(),
        nonce: stacknet_protocol::Nonce::random(),
    };
    let body = json!({"filing": Signed::sign(filing, &node.key).unwrap(), "paperwork": docs});
    let url = format!("{}/stacknet/v1/nodes/file", net.hub.url());
    let first = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(second.status(), 409);
    let v: Value = second.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("replay"), "{v}");
}

async fn inclusion_and_consistency_proofs_from_the_hub_verify(db: Db) {
    let net = start(&db, Script::text("logged"), |_| {}).await;
    spend(&net, 2).await;
    let get = |path: String| {
        let url = format!("{}{path}", net.hub.url());
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let old = get("/stacknet/v1/log/checkpoint".into()).await;
    assert_eq!(old["size"], 2);
    spend(&net, 3).await;
    let new = get("/stacknet/v1/log/checkpoint".into()).await;
    assert_eq!(new["size"], 5);
    let hub_key = net.hub.hub.state.hub_key.public_key();
    let origin = log_origin(&hub_key);
    for doc in wallet_docs(&net).await {
        let id = doc.id().unwrap();
        let proof = get(format!("/stacknet/v1/log/proof/inclusion?paperwork={id}")).await;
        let leaf = paperwork_leaf(&doc).unwrap();
        verify_inclusion_response(&leaf, &proof, new["note"].as_str().unwrap(), &origin, &hub_key).unwrap();
        // The proof for one paperwork does not prove another.
        let other = stacknet_protocol::merkle::leaf_hash(b"not a paperwork");
        assert!(
            verify_inclusion_response(&other, &proof, new["note"].as_str().unwrap(), &origin, &hub_key)
                .is_err()
        );
    }
    let consistency = get("/stacknet/v1/log/proof/consistency?from=2&to=5".into()).await;
    verify_consistency_response(
        &consistency,
        old["note"].as_str().unwrap(),
        new["note"].as_str().unwrap(),
        &origin,
        &hub_key,
    )
    .unwrap();
    let missing = client()
        .get(format!(
            "{}/stacknet/v1/log/proof/inclusion?paperwork=pw_00000000000000000000000000000000",
            net.hub.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// What a scripted rail was sent: each delivery's `Idempotency-Key` header and body.
pub(super) type Deliveries = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A payment system that answers the n-th delivery with `script[n]` (status, body), the last entry
/// ever after, and records what it is sent. Every delivery counts as acted on: a 503 stands for a
/// payment whose answer got lost.
pub(super) async fn scripted_rail(secret: &'static str, script: Vec<(u16, Value)>) -> (String, Deliveries) {
    let seen: Deliveries = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let app = axum::Router::new().route(
        "/payouts",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let recorder = recorder.clone();
            let script = script.clone();
            async move {
                let signature = headers.get("stacknet-signature").and_then(|v| v.to_str().ok());
                let now = stacknet_hub::webhook::now_secs();
                if stacknet_hub::webhook::verify(secret, signature, &body, now).is_err() {
                    return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({}))).into_response();
                }
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut seen = recorder.lock().unwrap();
                let n = seen.len();
                seen.push((key, serde_json::from_slice::<Value>(&body).unwrap()));
                let (status, answer) = script[n.min(script.len() - 1)].clone();
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                (status, axum::Json(answer)).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/payouts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn earned(db: &Db, secret: &'static str, url: String, attempts: u32) -> TestNetwork {
    let net = priced(db, Script::text("earn it"), |c| {
        with_rail(c, secret, url, attempts)
    })
    .await;
    earn_and_file(&net).await;
    net
}

/// Paperwork fileable at once, and redemptions paid through the rail at `url`.
pub(super) fn with_rail(c: &mut stacknet_hub::HubConfig, secret: &'static str, url: String, attempts: u32) {
    c.challenge_window_ms = 0;
    c.payout_rail = Some(stacknet_hub::PayoutRail {
        url,
        secret: secret.into(),
        max_attempts: attempts,
        first_backoff_ms: 10,
    });
}

/// The Stack funded, two paid requests, and the node's paperwork filed: the node has earnings.
pub(super) async fn earn_and_file(net: &TestNetwork) {
    topup(net, 1_000_000).await;
    spend(net, 2).await;
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
}

/// `POST /stacknet/v1/webhooks/{hook}` with `body`, signed (HMAC) with `secret`.
fn webhook(
    net: &TestNetwork,
    hook: &str,
    body: Value,
    secret: &str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    let bytes = serde_json::to_vec(&body).unwrap();
    let signature = stacknet_hub::webhook::sign(secret, stacknet_hub::webhook::now_secs(), &bytes).unwrap();
    client()
        .post(format!("{}/stacknet/v1/webhooks/{hook}", net.hub.url()))
        .header("stacknet-signature", signature)
        .body(bytes)
        .send()
}

/// The node's statement, as JSON for the assertions to index.
async fn payout_state(net: &TestNetwork) -> Value {
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    serde_json::to_value(hub.statement(&net.nodes[0].key).await.unwrap()).unwrap()
}

async fn redemption_pays_out_through_the_webhook_after_a_retry(db: Db) {
    let (url, seen) = scripted_rail(
        "rail-secret",
        vec![(503, json!({})), (200, json!({"status": "confirmed"}))],
    )
    .await;
    let net = earned(&db, "rail-secret", url, 4).await;
    let node = &net.nodes[0];
    let earnings = posted(&net, AccountId::node(node.node.node_key_id())).await;
    assert!(earnings > 0);
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let payout = hub.redeem(&node.key, None, "acct_123").await.unwrap();
    assert_eq!(payout.amount, Amount::from_micros(earnings));
    let paid = AccountId::external("payout").unwrap();
    let left = || async { (posted(&net, paid.clone()).await == earnings).then_some(()) };
    wait_until("the payout left the books", WAIT_DEADLINE, left).await;
    let s = payout_state(&net).await;
    assert_eq!(s["payouts"][0]["state"], "confirmed", "{s}");
    assert_eq!(s["payouts"][0]["attempts"], 2, "{s}");
    assert_eq!(s["balance"]["available"], "0");
    assert_eq!(s["payout_pending"]["posted"], "0");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].1["destination"], "acct_123");
    books_balance(&net).await;
}

async fn a_payout_the_rail_refuses_fails_and_returns_the_money(db: Db) {
    // A 503 may hide a payment: retried; the 422 after it is a definite refusal.
    let script = vec![(503, json!({})), (422, json!({"error": "account closed"}))];
    let (url, seen) = scripted_rail("rail-secret", script).await;
    let net = earned(&db, "rail-secret", url, 3).await;
    let node = &net.nodes[0];
    let account = AccountId::node(node.node.node_key_id());
    let earnings = posted(&net, account.clone()).await;
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    hub.redeem(&node.key, Some(Amount::from_micros(earnings)), "acct_9")
        .await
        .unwrap();
    // The state turns `failed` first (a compare-and-set), then the money goes back.
    let returned = || async {
        let state = payout_state(&net).await;
        let failed = state["payouts"][0]["state"] == "failed";
        (failed && posted(&net, account.clone()).await == earnings).then_some(state)
    };
    let state = wait_until(
        "the payout failed and the money went back",
        WAIT_DEADLINE,
        returned,
    )
    .await;
    assert_eq!(state["payouts"][0]["attempts"], 2, "{state}");
    let error = state["payouts"][0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("422"), "{state}");
    assert_eq!(seen.lock().unwrap().len(), 2, "no delivery after the refusal");
    books_balance(&net).await;
}

/// Defect #10: the rail pays, but every answer is lost (a 503 or a time-out after it acted). The
/// payout stays `sent` with its money in payout-pending, so the node cannot redeem it again, until
/// the rail's callback settles it; every delivery carries the payout id as its idempotency key.
async fn a_payout_cannot_be_paid_twice(db: Db) {
    let (url, seen) = scripted_rail("rail-secret", vec![(503, json!({}))]).await;
    let net = earned(&db, "rail-secret", url, 3).await;
    let node = &net.nodes[0];
    let account = AccountId::node(node.node.node_key_id());
    let earnings = posted(&net, account.clone()).await;
    assert!(earnings > 0);
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let payout = hub.redeem(&node.key, None, "acct_1").await.unwrap();
    let given_up = || async {
        let state = payout_state(&net).await;
        let p = &state["payouts"][0];
        (p["attempts"] == 3 && p["state"] != "pending").then_some(state)
    };
    let state = wait_until("every delivery was tried", WAIT_DEADLINE, given_up).await;
    assert_eq!(state["payouts"][0]["state"], "sent", "{state}");
    assert_eq!(state["payout_pending"]["posted"], earnings.to_string(), "{state}");
    assert_eq!(posted(&net, account.clone()).await, 0, "nothing went back");
    let again = hub.redeem(&node.key, None, "acct_1").await;
    assert!(again.is_err(), "redeemed twice: {again:?}");
    let keys: Vec<Option<String>> = seen.lock().unwrap().iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        keys,
        vec![Some(payout.id.clone()); 3],
        "the payout id is the idempotency key"
    );

    // The rail's word settles it, once.
    let callback = |status: &str| {
        webhook(
            &net,
            "payouts",
            json!({"id": payout.id, "status": status}),
            "rail-secret",
        )
    };
    let r: Value = callback("confirmed").await.unwrap().json().await.unwrap();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("confirmed"), Some(true)),
        "{r}"
    );
    let r: Value = callback("failed").await.unwrap().json().await.unwrap();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("confirmed"), Some(false)),
        "{r}"
    );
    let paid = AccountId::external("payout").unwrap();
    assert_eq!(posted(&net, paid).await, earnings);
    assert_eq!(posted(&net, account).await, 0);
    books_balance(&net).await;
}

async fn a_payout_url_with_credentials_never_shows_them_in_the_statement(db: Db) {
    // A port nothing listens on: bound, then closed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://rail-user:basic-secret@127.0.0.1:{port}/pay?token=query-secret&x=1");
    let net = earned(&db, "rail-secret", url, 2).await;
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    hub.redeem(&node.key, None, "acct_5").await.unwrap();
    let failed = || async {
        let state = payout_state(&net).await;
        (state["payouts"][0]["state"] == "failed").then_some(state)
    };
    let state = wait_until("the payout failed", WAIT_DEADLINE, failed).await;
    let shown = state.to_string();
    let error = state["payouts"][0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot reach the payment endpoint"), "{state}");
    for secret in ["rail-user", "basic-secret", "query-secret"] {
        assert!(!shown.contains(secret), "{secret} shown: {state}");
    }
    books_balance(&net).await;
}

async fn a_sent_payout_is_confirmed_or_failed_by_the_signed_callback_once(db: Db) {
    let (url, _) = scripted_rail("rail-secret", vec![(200, json!({"status": "accepted"}))]).await;
    let net = earned(&db, "rail-secret", url, 2).await;
    let node = &net.nodes[0];
    let account = AccountId::node(node.node.node_key_id());
    let earnings = posted(&net, account.clone()).await;
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let payout = hub.redeem(&node.key, None, "acct_7").await.unwrap();
    let id = payout.id;
    let sent = || async { (payout_state(&net).await["payouts"][0]["state"] == "sent").then_some(()) };
    wait_until("the payout is sent", WAIT_DEADLINE, sent).await;
    let callback = |status: &str, secret: &'static str| {
        webhook(&net, "payouts", json!({"id": id, "status": status}), secret)
    };
    assert_eq!(callback("failed", "wrong-secret").await.unwrap().status(), 401);
    let r: Value = callback("failed", "rail-secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("failed"), Some(true)),
        "{r}"
    );
    // A late confirmation cannot pay out money that went back.
    let r: Value = callback("confirmed", "rail-secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("failed"), Some(false)),
        "{r}"
    );
    assert_eq!(posted(&net, account).await, earnings);
    books_balance(&net).await;
}

/// A signed `statement` request from a fresh key, made at `created_at`; the hub's answer status.
async fn statement_request(
    net: &TestNetwork,
    hub: stacknet_protocol::PublicKey,
    created_at: Timestamp,
) -> u16 {
    let key = SecretKey::generate();
    let req = NodeRequest {
        acts_for: None,
        node_key: key.public_key(),
        hub,
        action: NodeAction::Statement,
        created_at,
        nonce: stacknet_protocol::Nonce::random(),
    };
    let body = serde_json::to_vec(&Signed::sign(req, &key).unwrap()).unwrap();
    client()
        .post(format!(
            "{}{}",
            net.hub.url(),
            stacknet_api::paths::NODE_STATEMENT
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Defect #11: every signed request from a fresh key left a nonce row for good. Its nonce is now
/// held only while a replay could pass the clock check, and the next request forgets it.
async fn signed_requests_from_fresh_keys_leave_no_lasting_rows(db: Db) {
    use stacknet_hub::settle::{NONCE_MARGIN_MS, REQUEST_CLOCK_TOLERANCE_MS};
    let net = start(&db, Script::text("x"), |_| {}).await;
    let store = net.hub.hub.state.store.clone();
    let hub = HubClient::connect(&net.hub.url()).await.unwrap().hub_key;
    // Signed near the edge of the clock tolerance, so that they expire within seconds.
    let created_at = Timestamp::now().plus_ms(3_000 - REQUEST_CLOCK_TOLERANCE_MS);
    for _ in 0..20 {
        assert_eq!(statement_request(&net, hub, created_at).await, 200);
    }
    assert_eq!(store.events_held("node_request").await.unwrap(), 20);
    let expired = created_at.plus_ms(REQUEST_CLOCK_TOLERANCE_MS + NONCE_MARGIN_MS + 1);
    let passed = || async { (Timestamp::now() > expired).then_some(()) };
    wait_until("the nonces expired", WAIT_DEADLINE, passed).await;
    assert_eq!(statement_request(&net, hub, Timestamp::now()).await, 200);
    assert_eq!(
        store.events_held("node_request").await.unwrap(),
        1,
        "only the last request's nonce is held"
    );
}

/// Defect #11: a redeem the earnings cannot cover wrote a `failed` payout row per call, from any
/// fresh key. It is refused before anything is written.
async fn a_refused_redeem_leaves_no_payout_row(db: Db) {
    let (url, seen) = scripted_rail("rail-secret", vec![(200, json!({"status": "confirmed"}))]).await;
    let net = earned(&db, "rail-secret", url, 2).await;
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let store = net.hub.hub.state.store.clone();
    for _ in 0..10 {
        let key = SecretKey::generate();
        let r = hub.redeem(&key, Some(Amount::from_micros(1_000)), "acct_x").await;
        assert!(r.is_err(), "{r:?}");
        let rows = store.payouts_of(key.public_key().node_key_id()).await.unwrap();
        assert!(rows.is_empty(), "a refused redeem left {rows:?}");
    }
    let node = &net.nodes[0];
    let earnings = posted(&net, AccountId::node(node.node.node_key_id())).await;
    let r = hub
        .redeem(&node.key, Some(Amount::from_micros(earnings + 1)), "acct_x")
        .await;
    assert!(r.is_err(), "{r:?}");
    let rows = store.payouts_of(node.node.node_key_id()).await.unwrap();
    assert!(rows.is_empty(), "a refused redeem left {rows:?}");
    assert!(seen.lock().unwrap().is_empty());
    books_balance(&net).await;
}

/// A hub impostor at the returned URL: announces `announced` as its hub key and answers every
/// filing `already_filed`, each verdict signed with `signer` for the very filing it got.
/// A hub that announces `announced`, signs verdicts with `signer` and answers every `logged` request
/// with `logged` as the whole log.
async fn spoofed_hub(
    announced: stacknet_protocol::PublicKey,
    signer: SecretKey,
    logged: Vec<Signed<Paperwork>>,
) -> String {
    use stacknet_api::types::{FilingAnswer, FilingRequest, FilingVerdict, HubInfo, LoggedPage, Verdict};
    let signer = Arc::new(signer);
    let info = HubInfo {
        hub_key: announced,
        protocol_version: 1,
        software: "impostor".into(),
    };
    let file = move |axum::Json(req): axum::Json<FilingRequest>| {
        let signer = signer.clone();
        async move {
            let filing = req.filing.digest().unwrap();
            let node_key = req.filing.body.node_key;
            let results = req
                .filing
                .body
                .paperwork
                .iter()
                .map(|id| {
                    let v = FilingVerdict {
                        hub: announced,
                        node_key,
                        filing,
                        paperwork: *id,
                        verdict: Verdict::AlreadyFiled,
                    };
                    Signed::sign(v, &signer).unwrap()
                })
                .collect();
            axum::Json(FilingAnswer {
                node_key: node_key.node_key_id(),
                settled: Amount::ZERO,
                results,
            })
        }
    };
    let app = axum::Router::new()
        .route(
            stacknet_api::paths::HUB_INFO,
            axum::routing::get(move || async move { axum::Json(info) }),
        )
        .route(stacknet_api::paths::NODE_FILE, axum::routing::post(file))
        .route(
            stacknet_api::paths::NODE_LOGGED,
            axum::routing::post(move |axum::Json(req): axum::Json<Signed<NodeRequest>>| {
                let logged = logged.clone();
                async move {
                    axum::Json(LoggedPage {
                        node_key: req.body.node_key.node_key_id(),
                        next: logged.len() as u64,
                        size: logged.len() as u64,
                        paperwork: logged,
                    })
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Defect #14: `stacknet paperwork file` took the hub key from whichever hub it asked and believed
/// its unsigned `already_filed`, so an impostor made the wallet drop real earnings. The wallet files
/// only with the hub key it pinned, and acts only on verdicts that key signed for its own filing.
async fn a_spoofed_hub_cannot_make_the_wallet_drop_paperwork(db: Db) {
    let net = priced(&db, Script::text("worth money"), |c| c.challenge_window_ms = 0).await;
    topup(&net, 1_000_000).await;
    spend(&net, 2).await;
    let node = &net.nodes[0];
    let wallet = node.node.wallet();
    let real = HubClient::connect(&net.hub.url()).await.unwrap();
    wallet.pin_hub_key(&real.hub_key).await.unwrap();
    let due = || async {
        let entries = wallet.entries().await.unwrap();
        entries.iter().filter(|e| e.is_due()).count()
    };
    assert_eq!(due().await, 2);

    // An impostor with a key of its own: refused before anything is sent.
    let evil = SecretKey::generate();
    let impostor = HubClient::connect(&spoofed_hub(evil.public_key(), evil, vec![]).await)
        .await
        .unwrap();
    let r = file_wallet(&impostor, &node.key, wallet).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(due().await, 2, "nothing dropped");

    // An impostor claiming the real hub key cannot sign as it.
    let evil = SecretKey::generate();
    let impostor = HubClient::connect(&spoofed_hub(real.hub_key, evil, vec![]).await)
        .await
        .unwrap();
    let r = file_wallet(&impostor, &node.key, wallet).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(due().await, 2, "nothing dropped");

    // The real hub settles them, and its signed word marks them filed.
    let verdicts = file_wallet(&real, &node.key, wallet).await.unwrap();
    assert!(verdicts.iter().all(|v| v.status() == "settled"), "{verdicts:?}");
    assert_eq!(due().await, 0);
    books_balance(&net).await;
}

/// The node's wallet commits without waiting for the disk (issue 13: one fsync on the request
/// path, the hub's): a power cut can take its last writes. The hub's log has them: filing first
/// recovers what the wallet lacks, checked against the node's and the hub's keys, and every task is
/// paid once. A hub that hands back a forged paperwork gets nothing stored.
async fn a_wallet_that_lost_its_writes_recovers_them_from_the_log_and_is_paid_once(db: Db) {
    let net = priced(&db, Script::text("work to recover"), |c| {
        c.challenge_window_ms = 0
    })
    .await;
    topup(&net, 1_000_000).await;
    let total = spend(&net, 3).await;
    let node = &net.nodes[0];
    let real = HubClient::connect(&net.hub.url()).await.unwrap();
    let docs = wallet_docs(&net).await;
    assert_eq!(docs.len(), 3);

    // A hub answering with a paperwork the node never signed (its usage raised): nothing is kept.
    let lost = stacknet_node::wallet::Wallet::open(net.dir.path().join("lost-1.sqlite")).unwrap();
    let mut forged = docs[0].clone();
    forged.body.usage.output_tokens += 1000;
    let evil = SecretKey::generate();
    let liar = HubClient::connect(&spoofed_hub(real.hub_key, evil, vec![forged]).await)
        .await
        .unwrap();
    let r = stacknet_node::settlement::recover_wallet(&liar, &node.key, &lost).await;
    assert!(
        matches!(r, Err(stacknet_node::settlement::SettlementError::Untrusted(_))),
        "{r:?}"
    );
    assert!(lost.list().await.unwrap().is_empty(), "nothing stored");

    // The wallet lost everything (a new disk): filing recovers all three from the log.
    let node_account = AccountId::node(node.node.node_key_id());
    let verdicts = file_wallet(&real, &node.key, &lost).await.unwrap();
    assert_eq!(verdicts.len(), 3, "{verdicts:?}");
    assert!(verdicts.iter().all(|v| v.status() == "settled"), "{verdicts:?}");
    let settled: i64 = verdicts.iter().map(|v| v.amount().unwrap().micros()).sum();
    assert_eq!(settled, total);
    let mut recovered = lost.list().await.unwrap();
    let mut expected = docs.clone();
    recovered.sort_by_key(|d| d.id().unwrap());
    expected.sort_by_key(|d| d.id().unwrap());
    assert_eq!(recovered, expected, "the very documents the node signed");
    assert_eq!(lost.recovered_to().await.unwrap(), 3);

    // The original wallet files the same paperwork: already filed, nothing paid twice.
    let paid = posted(&net, node_account.clone()).await;
    let again = file_wallet(&real, &node.key, node.node.wallet()).await.unwrap();
    assert!(again.iter().all(|v| v.status() == "already_filed"), "{again:?}");
    assert_eq!(posted(&net, node_account).await, paid);
    // Recovering again reads only what was logged since, and finds nothing new.
    let added = stacknet_node::settlement::recover_wallet(&real, &node.key, &lost)
        .await
        .unwrap();
    assert_eq!(added, 0);
    books_balance(&net).await;
}

/// Defect #17 (the wallet's side): paperwork the hub refuses for good is not filed again, and the
/// wallet keeps why; paperwork refused for now (its challenge window) stays due.
async fn refused_paperwork_is_not_filed_again_and_shows_why(db: Db) {
    let net = priced(&db, Script::text("paid work"), |_| {}).await;
    topup(&net, 1_000_000).await;
    spend(&net, 1).await;
    let node = &net.nodes[0];
    let wallet = node.node.wallet();
    let real = wallet_docs(&net).await;
    // A paperwork the hub never accepted: refused for good.
    let mut never = real[0].body.clone();
    never.output_sha256 = stacknet_protocol::Sha256Digest::of(b"never accepted");
    let never = Signed::sign(never, &node.key).unwrap();
    let never_id = wallet.store(&never).await.unwrap();
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, wallet).await.unwrap();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert!(verdicts.iter().all(|v| v.status() == "refused"), "{verdicts:?}");
    let entries = wallet.entries().await.unwrap();
    let refused: Vec<_> = entries.iter().filter(|e| e.refused.is_some()).collect();
    assert_eq!(refused.len(), 1, "{entries:?}");
    assert_eq!(refused[0].paperwork.id().unwrap(), never_id);
    let why = refused[0].refused.as_deref().unwrap();
    assert!(why.contains("not in the paperwork log"), "{why}");
    // Filed again: only the one in its challenge window goes.
    let again = file_wallet(&hub, &node.key, wallet).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again[0].paperwork, never_id);
    assert!(
        again[0].reason().unwrap().contains("challenge window"),
        "{again:?}"
    );
}

async fn the_payments_webhook_tops_up_once_per_event_and_refuses_bad_signatures(db: Db) {
    let net = start(&db, Script::text("x"), |c| {
        c.payments_webhook_secret = Some("pay-secret".into());
    })
    .await;
    let send = |body: Value, secret: &'static str| webhook(&net, "payments", body, secret);
    let event = json!({"id": "evt_1", "type": "topup", "stack": net.stack, "amount": "5000"});
    let first: Value = send(event.clone(), "pay-secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["replayed"], false);
    let again: Value = send(event.clone(), "pay-secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["replayed"], true);
    let changed = json!({"id": "evt_1", "type": "topup", "stack": net.stack, "amount": "9000"});
    assert_eq!(send(changed, "pay-secret").await.unwrap().status(), 409);
    assert_eq!(send(event, "forged").await.unwrap().status(), 401);
    assert_eq!(statement(&net).await["balance"]["available"], "5000");
}

/// `POST /stacknet/v1/webhooks/payments` with a `Stacknet-Signature` header claiming time `t`,
/// correctly signed for that time.
async fn payments_webhook_at(net: &TestNetwork, secret: &str, t: i64, body: &Value) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    let signature = stacknet_hub::webhook::sign(secret, t, &bytes).unwrap();
    client()
        .post(format!("{}/stacknet/v1/webhooks/payments", net.hub.url()))
        .header("stacknet-signature", signature)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_webhook_timestamp_of_i64_min_is_refused_not_overflowed() {
    let net = start(&Db::Sqlite, Script::text("x"), |c| {
        c.payments_webhook_secret = Some("pay-secret".into());
    })
    .await;
    let event = json!({"id": "evt_far", "type": "topup", "stack": net.stack, "amount": "5000"});
    // A valid HMAC over an absurd time: only the freshness check stands in the way.
    for t in [i64::MIN, i64::MIN + 1, i64::MAX] {
        let resp = payments_webhook_at(&net, "pay-secret", t, &event).await;
        assert_eq!(resp.status(), 401, "t={t}");
        let body: Value = resp.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("signature time {t}")), "t={t}: {body}");
    }
    // The hub is still up, and a fresh signature still works.
    let fresh = payments_webhook_at(&net, "pay-secret", stacknet_hub::webhook::now_secs(), &event).await;
    assert_eq!(fresh.status(), 200);
    assert_eq!(statement(&net).await["balance"]["available"], "5000");
}

#[tokio::test]
async fn admin_prices_near_2_pow_62_are_refused_or_capped_without_overflow() {
    let net = start(&Db::Sqlite, Script::text("x"), |_| {}).await;
    let huge = (1i64 << 62).to_string();
    for field in ["input_per_mtok", "output_per_mtok", "per_request", "per_unit"] {
        let resp = admin(&net, "/prices", json!({"model": MOCK_MODEL, field: huge})).await;
        assert_eq!(resp.status(), 400, "{field}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("at most"), "{field}: {body}");
    }
    // The largest price allowed is kept, and a request under it is admitted or refused for money,
    // never by an overflow.
    let max = stacknet_hub::admin::MAX_PRICE_MICROS.to_string();
    let resp = admin(
        &net,
        "/prices",
        json!({"model": MOCK_MODEL, "input_per_mtok": max, "output_per_mtok": max,
               "per_request": max, "per_unit": max}),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    topup(&net, 1_000_000).await;
    assert_eq!(post_chat(&net, &chat_body(false)).await.status(), 402);
    // Prices that came some other way (a contract signed elsewhere) are costed without overflow:
    // usage a hostile node could claim, against the largest prices an Amount can hold.
    for price in [1i64 << 62, i64::MAX] {
        let terms = stacknet_protocol::contract::PriceTerms {
            input_per_mtok: Amount::from_micros(price),
            output_per_mtok: Amount::from_micros(price),
            per_request: Amount::from_micros(price),
            per_unit: Amount::from_micros(price),
        };
        let usage = stacknet_protocol::contract::Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            units: u64::MAX,
        };
        assert_eq!(terms.cost(&usage, Amount::from_micros(i64::MAX)), None);
        let one = stacknet_protocol::contract::Usage {
            input_tokens: 0,
            output_tokens: 0,
            units: 0,
        };
        assert_eq!(
            terms.cost(&one, Amount::from_micros(5)),
            Some(Amount::from_micros(5))
        );
    }
}

#[tokio::test]
async fn a_top_up_past_the_largest_balance_is_refused_with_400_not_500() {
    let net = start(&Db::Sqlite, Script::text("x"), |_| {}).await;
    let path = format!("/stacks/{}/topup", net.stack);
    let first = admin(&net, &path, json!({"amount": i64::MAX.to_string()})).await;
    assert_eq!(first.status(), 200);
    let again = admin(&net, &path, json!({"amount": "1"})).await;
    assert_eq!(again.status(), 400);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["param"], "amount", "{body}");
    assert_eq!(
        statement(&net).await["balance"]["available"],
        i64::MAX.to_string()
    );
    books_balance(&net).await;
}

/// The hold at [`PRICE`] for `body` as the hub bounds it: every body byte an input token, plus 1,024
/// template tokens per prompt and 1,500 per image; `max_tokens` of output per completion generated.
fn hold_for(body: &Value, prompts: i64, images: i64, generations: i64) -> i64 {
    let bytes = serde_json::to_vec(body).unwrap().len() as i64;
    let input = bytes + 1024 * prompts + 1500 * images;
    let output = body["max_tokens"].as_i64().unwrap() * generations;
    (input * PRICE.0 + output * PRICE.1) / 1_000_000 + PRICE.2
}

/// A balance one micro-credit short of `hold` gets 402 before any node is asked; `hold` itself is
/// admitted: the hold is exactly the bound.
async fn holds_exactly(db: &Db, path: &str, body: Value, hold: i64) {
    let net = priced(db, Script::text("ok"), |_| {}).await;
    let post = || {
        client()
            .post(format!("{}{path}", net.base_url()))
            .bearer_auth(&net.api_key)
            .json(&body)
            .send()
    };
    topup(&net, hold - 1).await;
    let short = post().await.unwrap();
    assert_eq!(short.status(), 402, "{}", short.text().await.unwrap());
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    topup(&net, 1).await;
    let enough = post().await.unwrap();
    assert_eq!(enough.status(), 200, "{}", enough.text().await.unwrap());
    books_balance(&net).await;
}

async fn n_choices_cannot_escape_the_hold(db: Db) {
    let mut body = chat_body(false);
    body["max_tokens"] = json!(50);
    body["n"] = json!(4);
    let hold = hold_for(&body, 1, 0, 4);
    holds_exactly(&db, "/chat/completions", body, hold).await;
}

async fn a_prompt_array_cannot_escape_the_hold(db: Db) {
    // Each prompt gets its own `n` choices: 3 prompts x 2 choices.
    let body = json!({"model": MOCK_MODEL, "prompt": ["one", "two", "three"], "n": 2, "max_tokens": 50});
    let hold = hold_for(&body, 3, 0, 6);
    holds_exactly(&db, "/completions", body, hold).await;
}

async fn best_of_cannot_escape_the_hold(db: Db) {
    // The server generates best_of candidates to return the best n.
    let body = json!({"model": MOCK_MODEL, "prompt": "pick one", "n": 2, "best_of": 5, "max_tokens": 50});
    let hold = hold_for(&body, 1, 0, 5);
    holds_exactly(&db, "/completions", body, hold).await;
}

async fn images_cannot_escape_the_hold(db: Db) {
    let picture = json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}});
    let body = json!({"model": MOCK_MODEL, "max_tokens": 50, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "which is bigger?"}, picture, picture]}]});
    let hold = hold_for(&body, 1, 2, 1);
    holds_exactly(&db, "/chat/completions", body, hold).await;
}

/// A node that keeps sending output, far past what the request's `max_tokens` allows, is cut off
/// at the hub's output cap: the client gets an error (a 502, or the SSE error event), the task is
/// cancelled, the hold is released (nothing charged) and its paperwork never accepted, and the
/// evidence puts the node below the routing floor: the next request gets no node, and no charge.
#[tokio::test]
async fn a_node_that_streams_without_end_is_cut_off_at_the_output_cap() {
    let endless = "word ".repeat(1_000_000);
    let net = priced(&Db::Sqlite, Script::text(endless).chunks(1_000), |_| {}).await;
    topup(&net, 1_000_000).await;
    let capped = |stream: bool| {
        let mut body = chat_body(stream);
        body["max_tokens"] = json!(5);
        body
    };
    let released = || async { (statement(&net).await["balance"]["held"] == "0").then_some(()) };

    let resp = post_chat(&net, &capped(false)).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "node_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded the bound"),
        "{v}"
    );
    wait_until("the hold is released", WAIT_DEADLINE, released).await;
    assert_eq!(statement(&net).await["balance"]["available"], "1000000");

    let resp = post_chat(&net, &capped(true)).await;
    assert_eq!(resp.status(), 200);
    let events = super::sse_events(&resp.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "node_error", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    wait_until("the hold is released", WAIT_DEADLINE, released).await;
    assert_eq!(statement(&net).await["balance"]["available"], "1000000");
    assert_eq!(posted(&net, AccountId::escrow()).await, 0);

    // Each over-bound output is evidence against the node (weighing 5): after two, its quality
    // (1 / 12) is below the routing floor, so it gets no client task even once it answers well.
    // The node's record flushes the evidence first, so this does not race the periodic flush.
    let id = net.nodes[0].key.public_key().node_key_id();
    let record: Value = super::get_json(&net, &stacknet_api::paths::node(&id)).await;
    assert_eq!(record["below_floor"], json!(true), "{record}");
    net.upstream
        .set_script(Script::text("four words of answer").chunks(2));
    let resp = post_chat(&net, &capped(false)).await;
    assert_eq!(resp.status(), 503, "below the floor");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "no_node_available", "{v}");
    // The refused request's hold is voided by a task spawned when its handler drops the hold, so
    // the 503 can arrive first: wait for the release rather than race it (it lost under load).
    wait_until("the hold is released", WAIT_DEADLINE, released).await;
    assert_eq!(statement(&net).await["balance"]["available"], "1000000");
    books_balance(&net).await;
}
