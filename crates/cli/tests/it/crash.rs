//! The hub killed with SIGKILL while requests are being settled, again and again: after every restart
//! the books balance, every answered request's paperwork is logged and its cost captured exactly
//! once, and in the end every accepted paperwork files and settles once. Then the node killed the same
//! way under load.

use std::collections::BTreeSet;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use stacknet_ledger::{AccountId, LedgerStore, TransferId};
use stacknet_node::settlement::{file_wallet, HubClient};
use stacknet_node::NodeOptions;
use stacknet_testkit::mock_upstream::{MockUpstream, Script, MOCK_MODEL};
use stacknet_testkit::network::TestNode;
use stacknet_testkit::wait_until;

const ADMIN: &str = "crash-admin";
const ROUNDS: usize = 6;
/// Open holds expire after the request time-out (3 s) and the hold grace, at the hub's next sweep.
const HOLDS_EXPIRE_DEADLINE: Duration = Duration::from_secs(30);

fn start_hub(dir: &std::path::Path, listen: &str, database: &str) -> (Child, String) {
    let args = [
        "--listen",
        listen,
        "--admin-token",
        ADMIN,
        "--database",
        database,
        "--challenge-window-ms",
        "0",
        "--request-timeout-ms",
        "3000",
        "--hold-grace-ms",
        "200",
        // A private hub: its test node is routed tasks without a bond.
        "--min-worker-bond",
        "0",
    ];
    crate::spawn_hub(&args, dir)
}

async fn admin(http: &reqwest::Client, url: &str, path: &str, body: Value) -> Value {
    let resp = http
        .post(format!("{url}/stacknet/v1/admin{path}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// A Stack named `name` with money, and the mock model priced: its API key.
async fn funded_stack(http: &reqwest::Client, url: &str, name: &str) -> String {
    let stack = admin(http, url, "/stacks", json!({ "name": name })).await;
    let stack = stack["id"].as_str().unwrap().to_owned();
    let key = admin(http, url, &format!("/stacks/{stack}/keys"), json!({})).await;
    admin(
        http,
        url,
        "/prices",
        json!({"model": MOCK_MODEL, "input_per_mtok": "1000000", "output_per_mtok": "3000000", "per_request": "7"}),
    )
    .await;
    admin(
        http,
        url,
        &format!("/stacks/{stack}/topup"),
        json!({"amount": "100000000000"}),
    )
    .await;
    key["api_key"].as_str().unwrap().to_owned()
}

/// One chat request with the Stack's `key`: `Err` when it could not be sent, else the answered
/// contract's id (`ct_...`) when it was answered 200.
async fn ask(http: &reqwest::Client, url: &str, key: &str) -> Result<Option<String>, reqwest::Error> {
    let body =
        json!({"model": MOCK_MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 50});
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    if resp.status() != 200 {
        return Ok(None);
    }
    let Ok(v) = resp.json::<Value>().await else {
        return Ok(None);
    };
    let id = v["id"].as_str().unwrap().strip_prefix("chatcmpl-").unwrap();
    Ok(Some(format!("ct_{id}")))
}

/// Eight clients sending chat requests until stopped, each answered contract recorded in `accepted`.
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(http: &reqwest::Client, url: &str, key: &str, accepted: &Arc<Mutex<BTreeSet<String>>>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..8)
            .map(|_| {
                let (http, url, key, accepted, stop) = (
                    http.clone(),
                    url.to_owned(),
                    key.to_owned(),
                    accepted.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match ask(&http, &url, &key).await {
                            Ok(Some(contract)) => drop(accepted.lock().unwrap().insert(contract)),
                            Ok(None) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        Self { stop, clients }
    }

    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in self.clients {
            c.await.unwrap();
        }
    }
}

/// The ledger the hub at `database` keeps (PostgreSQL: in the URL's `schema`).
async fn open_ledger(
    database: &str,
) -> Result<std::sync::Arc<dyn LedgerStore>, stacknet_ledger::LedgerError> {
    if database.starts_with("sqlite://") {
        return stacknet_ledger::open(database).await;
    }
    let (url, schema) = stacknet_hub::store::pg_schema(database);
    let options = stacknet_ledger::PgOptions { schema, pool_size: 2 };
    Ok(std::sync::Arc::new(
        stacknet_ledger::PgLedger::connect(&url, options).await?,
    ))
}

/// The invariants that must hold whenever the hub is down or idle.
async fn check_books(ledger: &dyn LedgerStore) {
    let totals = ledger.sum_check().await.unwrap();
    assert!(totals.is_balanced(), "books out of balance: {totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_batch_loses_and_doubles_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("hub.db").display());
    killed_again_and_again(dir.path(), &database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (STACKNET_TEST_DATABASE_URL); scripts/test.sh runs it"]
async fn a_hub_killed_mid_batch_loses_and_doubles_nothing_on_postgres() {
    let url = std::env::var("STACKNET_TEST_DATABASE_URL").expect(
        "STACKNET_TEST_DATABASE_URL is not set: this test needs PostgreSQL (scripts/test.sh sets it)",
    );
    let dir = tempfile::tempdir().unwrap();
    let schema = format!(
        "crash_{}",
        hex::encode(&stacknet_protocol::Nonce::random().0[..6])
    );
    killed_again_and_again(dir.path(), &format!("{url}?schema={schema}")).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

async fn killed_again_and_again(dir: &std::path::Path, database: &str) {
    let data = dir.join("hub");
    let upstream = MockUpstream::start(Script::text("crash test answer words").chunks(3))
        .await
        .unwrap();
    let (mut hub, url) = start_hub(&data, "127.0.0.1:0", database);
    let listen = url.strip_prefix("http://").unwrap().to_owned();
    let http = reqwest::Client::new();
    let key = funded_stack(&http, &url, "crash").await;

    let mut options = NodeOptions::new(url.clone());
    options.max_concurrency = 64;
    let node = TestNode::start_with(options, upstream.base_url(), &[MOCK_MODEL], dir).await;

    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    for round in 0..ROUNDS {
        // Load from several clients until the hub dies under them.
        let load = Load::start(&http, &url, &key, &accepted);
        tokio::time::sleep(Duration::from_millis(300 + 150 * (round as u64 % 4))).await;
        hub.kill().unwrap();
        hub.wait().unwrap();
        load.stop().await;
        {
            let ledger = open_ledger(database).await.unwrap();
            check_books(&*ledger).await;
        }
        let (restarted, _) = start_hub(&data, &listen, database);
        hub = restarted;
        // Recovery has run once the hub listens: every answered request is logged and captured once.
        let store = stacknet_hub::store::open(database).await.unwrap();
        let ledger = open_ledger(database).await.unwrap();
        let ids: Vec<String> = accepted.lock().unwrap().iter().cloned().collect();
        assert!(!ids.is_empty(), "round {round}: some requests were answered");
        for contract in &ids {
            let capture = ledger
                .transfer(TransferId::new(&format!("capture:{contract}")).unwrap())
                .await
                .unwrap();
            assert!(
                capture.is_some(),
                "round {round}: {contract} was answered but its cost not captured"
            );
        }
        let uncaptured = store.uncaptured().await.unwrap();
        assert!(
            uncaptured.is_empty(),
            "round {round}: {} logged but uncaptured",
            uncaptured.len()
        );
        check_books(&*ledger).await;
    }

    // Holds of requests the crashes cut short expire; then everything accepted files once.
    let ledger = open_ledger(database).await.unwrap();
    let expired = || async {
        let escrow = ledger.balance(AccountId::escrow()).await.unwrap();
        (escrow.credits_pending.micros() == 0).then_some(())
    };
    wait_until(
        "the holds the crashes cut short expired",
        HOLDS_EXPIRE_DEADLINE,
        expired,
    )
    .await;
    let hub_client = HubClient::connect(&url).await.unwrap();
    let verdicts = file_wallet(&hub_client, &node.key, node.node.wallet())
        .await
        .unwrap();
    let settled: BTreeSet<String> = verdicts
        .iter()
        .filter(|v| v.status() == "settled")
        .map(|v| v.paperwork.to_string())
        .collect();
    let store = stacknet_hub::store::open(database).await.unwrap();
    let logged_accepted = accepted.lock().unwrap().len();
    assert!(
        settled.len() >= logged_accepted,
        "{} settled, {logged_accepted} answered",
        settled.len()
    );
    for v in verdicts.iter().filter(|v| v.status() != "settled") {
        // Paperwork the hub never logged (killed before its batch committed) is refused, nothing else.
        let reason = v.reason().unwrap_or_default().to_owned();
        assert!(reason.contains("not in the paperwork log"), "{v:?}");
        assert!(store.paperwork(v.paperwork).await.unwrap().is_none());
    }
    let escrow = ledger.balance(AccountId::escrow()).await.unwrap();
    assert_eq!(
        escrow.posted.micros(),
        0,
        "every captured cost was shared out: {escrow:?}"
    );
    assert_eq!(
        escrow.credits_pending.micros(),
        0,
        "no hold is left open: {escrow:?}"
    );
    check_books(&*ledger).await;
    // Filing again pays nothing more.
    let before = ledger
        .balance(AccountId::node(node.node.node_key_id()))
        .await
        .unwrap();
    let docs = node.node.wallet().list().await.unwrap();
    let again = hub_client.file(&node.key, docs).await.unwrap();
    assert!(
        again.iter().all(|v| v.status() != "settled"),
        "nothing settles twice"
    );
    let after = ledger
        .balance(AccountId::node(node.node.node_key_id()))
        .await
        .unwrap();
    assert_eq!(before, after);
    let _ = hub.kill();
    let _ = hub.wait();
}

/// The node killed with SIGKILL under load, again and again, and started again on the same data
/// directory: its wallet commits without waiting for the disk, so this is the crash it must survive
/// by itself. Every answered request is captured once; requests cut short release their holds; in
/// the end the wallet holds every paperwork the hub logged, and filing settles each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("hub.db").display());
    let upstream = MockUpstream::start(
        Script::text("node crash test answer words")
            .chunks(4)
            .chunk_delay(Duration::from_millis(5)),
    )
    .await
    .unwrap();
    let (mut hub, url) = start_hub(&dir.path().join("hub"), "127.0.0.1:0", &database);
    let http = reqwest::Client::new();
    let key = funded_stack(&http, &url, "node-crash").await;
    let node_dir = dir.path().join("node");
    let start_node = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stacknet"))
            .args([
                "node",
                "--hub",
                &url,
                "--upstream",
                upstream.base_url(),
                "--model",
                MOCK_MODEL,
            ])
            .args(["--max-concurrency", "64", "--data-dir"])
            .arg(&node_dir)
            .env("STACKNET_LOG", "warn")
            .env_remove("STACKNET_MODELS")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut node = start_node();
    for round in 0..4 {
        // Served again before the load starts: the node (re)connected.
        let first = wait_until("the node serves", Duration::from_secs(60), || async {
            ask(&http, &url, &key).await.ok().flatten()
        })
        .await;
        accepted.lock().unwrap().insert(first);
        let load = Load::start(&http, &url, &key, &accepted);
        tokio::time::sleep(Duration::from_millis(300 + 150 * round)).await;
        node.kill().unwrap();
        node.wait().unwrap();
        load.stop().await;
        node = start_node();
    }

    // Every answered request is captured once; what the kills cut short is released.
    let ledger = open_ledger(&database).await.unwrap();
    let ids: Vec<String> = accepted.lock().unwrap().iter().cloned().collect();
    for contract in &ids {
        let capture = ledger
            .transfer(TransferId::new(&format!("capture:{contract}")).unwrap())
            .await
            .unwrap();
        assert!(
            capture.is_some(),
            "{contract} was answered but its cost not captured"
        );
    }
    let released = || async {
        let escrow = ledger.balance(AccountId::escrow()).await.unwrap();
        (escrow.credits_pending.micros() == 0).then_some(())
    };
    wait_until("no hold is left open", HOLDS_EXPIRE_DEADLINE, released).await;
    check_books(&*ledger).await;

    // The wallet, read after the last kill, files everything the hub logged, each once.
    let _ = node.kill();
    let _ = node.wait();
    let (node_key, _) = stacknet_protocol::keystore::read(&node_dir.join("node.key")).unwrap();
    let wallet = stacknet_node::wallet::Wallet::open(node_dir.join("wallet.sqlite")).unwrap();
    let hub_client = HubClient::connect(&url).await.unwrap();
    let verdicts = file_wallet(&hub_client, &node_key, &wallet).await.unwrap();
    let store = stacknet_hub::store::open(&database).await.unwrap();
    let logged = store
        .logged_of(node_key.public_key().node_key_id(), 0, u64::MAX)
        .await
        .unwrap();
    let settled = verdicts.iter().filter(|v| v.status() == "settled").count();
    assert_eq!(
        settled,
        logged.len(),
        "every logged paperwork settles once: {verdicts:?}"
    );
    assert!(settled >= ids.len(), "{settled} settled, {} answered", ids.len());
    for v in verdicts.iter().filter(|v| v.status() != "settled") {
        // Signed by a node killed before the hub logged it: never payable.
        assert!(
            v.reason()
                .unwrap_or_default()
                .contains("not in the paperwork log"),
            "{v:?}"
        );
    }
    let escrow = ledger.balance(AccountId::escrow()).await.unwrap();
    assert_eq!(
        escrow.posted.micros(),
        0,
        "every captured cost was shared out: {escrow:?}"
    );
    check_books(&*ledger).await;
    let again = file_wallet(&hub_client, &node_key, &wallet).await.unwrap();
    assert!(again.is_empty(), "nothing is due twice: {again:?}");
    let _ = hub.kill();
    let _ = hub.wait();
}
