//! The paperwork log under load: checkpoints and proofs served while paperwork is being logged, and
//! the log as a restarted hub rebuilds it from its database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use serde_json::Value;
use stacknet_hub::log::{log_origin, paperwork_leaf, verify_consistency_response, verify_inclusion_response};
use stacknet_protocol::merkle::Hash;
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::Signed;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use tokio::sync::watch;

use super::money::Db;
use super::{chat_body, client, post_chat};

const REQUESTS: usize = 500;
const REQUESTS_IN_FLIGHT: usize = 16;
const POLLERS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_merkle_log_never_appends_the_same_leaves_twice_sqlite() {
    the_merkle_log_never_appends_the_same_leaves_twice(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (STACKNET_TEST_DATABASE_URL); scripts/test.sh runs it"]
async fn the_merkle_log_never_appends_the_same_leaves_twice_postgres() {
    let db = Db::postgres();
    the_merkle_log_never_appends_the_same_leaves_twice(db.clone()).await;
    db.drop_schema().await;
}

/// What the pollers were served: checkpoint notes, and inclusion proofs with the note of the
/// checkpoint each was asked against.
#[derive(Default)]
struct Served {
    checkpoints: Vec<Value>,
    inclusions: Vec<(String, Value, String)>,
    failures: Vec<String>,
}

async fn get(url: String) -> Result<Value, String> {
    let resp = client()
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    if status != 200 {
        return Err(format!("{url}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))
}

/// Polls checkpoints and inclusion proofs (of the newest paperwork answered so far, at the size of
/// the checkpoint just served) until told to stop.
async fn poll(
    hub: String,
    answered: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<Served>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow_and_update() {
        // The id is read before the checkpoint, so a hub that logged it has it in that checkpoint.
        let newest = answered.lock().unwrap().last().cloned();
        let checkpoint = match get(format!("{hub}/stacknet/v1/log/checkpoint")).await {
            Ok(v) => v,
            Err(e) => {
                served.lock().unwrap().failures.push(e);
                continue;
            }
        };
        let inclusion = match &newest {
            Some(id) => {
                let url = format!(
                    "{hub}/stacknet/v1/log/proof/inclusion?paperwork={id}&tree_size={}",
                    checkpoint["size"]
                );
                match get(url).await {
                    Ok(proof) => Some((id.clone(), proof)),
                    Err(e) => {
                        served.lock().unwrap().failures.push(e);
                        None
                    }
                }
            }
            None => None,
        };
        let mut served = served.lock().unwrap();
        if let Some((id, proof)) = inclusion {
            let note = checkpoint["note"].as_str().unwrap_or_default().to_owned();
            served.inclusions.push((id, proof, note));
        }
        served.checkpoints.push(checkpoint);
    }
}

/// 32 pollers of checkpoints and inclusion proofs while 500 requests are logged: every proof served
/// verifies against the checkpoint it was asked for, the log holds each paperwork once, and after a
/// restart (the tree rebuilt from the database) every checkpoint served before is consistent with
/// the new one.
async fn the_merkle_log_never_appends_the_same_leaves_twice(db: Db) {
    let mut net = TestNetwork::start_with(Script::text("logged"), |c| db.apply(c)).await;
    let hub = net.hub.url();
    let answered = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(Mutex::new(Served::default()));
    let (stop, stopped) = watch::channel(false);
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            tokio::spawn(poll(
                hub.clone(),
                answered.clone(),
                served.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    let net_ref = &net;
    let answers: Vec<Value> = stream::iter(0..REQUESTS)
        .map(|_| async move {
            post_chat(net_ref, &chat_body(false))
                .await
                .json::<Value>()
                .await
                .unwrap()
        })
        .buffer_unordered(REQUESTS_IN_FLIGHT)
        .inspect(|answer| {
            if let Some(id) = answer["paperwork"].as_str() {
                answered.lock().unwrap().push(id.to_owned());
            }
        })
        .collect()
        .await;
    stop.send(true).unwrap();
    for poller in pollers {
        poller.await.unwrap();
    }
    let served = Arc::try_unwrap(served).ok().unwrap().into_inner().unwrap();
    assert!(
        served.failures.is_empty(),
        "a poll failed: {:?}",
        &served.failures[..served.failures.len().min(3)]
    );
    assert_eq!(
        answered.lock().unwrap().len(),
        REQUESTS,
        "every request was answered: {:?}",
        answers.first()
    );
    assert!(!served.inclusions.is_empty(), "the pollers were served proofs");

    let hub_key = net.hub.hub.state.hub_key.public_key();
    let origin = log_origin(&hub_key);
    let docs: Vec<Signed<Paperwork>> = net.nodes[0].node.wallet().list().await.unwrap();
    let leaves: HashMap<String, Hash> = docs
        .iter()
        .map(|d| (d.id().unwrap().to_string(), paperwork_leaf(d).unwrap()))
        .collect();
    for (id, proof, note) in &served.inclusions {
        verify_inclusion_response(&leaves[id], proof, note, &origin, &hub_key)
            .unwrap_or_else(|e| panic!("the proof of {id} served at {proof} does not verify: {e}"));
    }

    net.restart_hub().await;
    let now = get(format!("{hub}/stacknet/v1/log/checkpoint")).await.unwrap();
    assert_eq!(now["size"], REQUESTS, "each paperwork is logged once");
    let mut sizes: Vec<(u64, &str)> = served
        .checkpoints
        .iter()
        .map(|c| (c["size"].as_u64().unwrap(), c["note"].as_str().unwrap()))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for (size, note) in sizes {
        let proof = get(format!(
            "{hub}/stacknet/v1/log/proof/consistency?from={size}&to={REQUESTS}"
        ))
        .await
        .unwrap_or_else(|e| panic!("no consistency proof from a checkpoint served at size {size}: {e}"));
        verify_consistency_response(&proof, note, now["note"].as_str().unwrap(), &origin, &hub_key)
            .unwrap_or_else(|e| {
                panic!("the checkpoint served at size {size} is contradicted after a restart: {e}")
            });
    }
}
