//! Reputation from evidence (issue 12): a planted slow node, an erroring node and a node that
//! claims warmth it never announced, among honest nodes; their scores and traffic shares fall, the
//! claimer earns no warm terms; every served score can be recomputed from its evidence; a hub
//! restart and a client that leaves cost no node anything, a node that drops its task does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::Value;
use stacknet_api::types::{NodeList, NodeReport, TelemetryReceipt};
use stacknet_node::backend::upstream::OpenAiUpstream;
use stacknet_node::backend::{Backend, BackendError, BackendOutcome, BackendTask};
use stacknet_node::config::UpstreamConfig;
use stacknet_node::guardian::{Guardian, GuardianOptions, Prompt};
use stacknet_node::settlement::{HubClient, SettlementError};
use stacknet_protocol::attestation::Telemetry;
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::{NodeKeyId, Nonce, SecretKey, Signed, Timestamp};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::validators::top_up_and_bond;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};
use tokio::sync::mpsc;

use super::{chat_body, client, get_json, post_chat};

/// What a planted node does differently from an honest one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    Honest,
    /// Waits this long before it answers.
    Slow(Duration),
    /// Fails three tasks of every four with an upstream error.
    Erroring,
    /// Serves like an honest node but never names its model ready (its paperwork says warm).
    ClaimsWarm,
    /// Answers every task, but with other words than the model's.
    Wrong,
}

/// A backend (the mock upstream, or a built-in model) behind a planted behaviour.
pub struct Planted {
    inner: Arc<dyn Backend>,
    plant: Plant,
    calls: AtomicU64,
}

impl Planted {
    pub fn new(inner: Arc<dyn Backend>, plant: Plant) -> Self {
        Self {
            inner,
            plant,
            calls: AtomicU64::new(0),
        }
    }
}

impl Backend for Planted {
    fn models(&self) -> Vec<ModelOffer> {
        self.inner.models()
    }

    fn ready(&self) -> Vec<ModelReady> {
        match self.plant {
            Plant::ClaimsWarm => Vec::new(),
            _ => self.inner.ready(),
        }
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let plant = self.plant;
        let chunks = if plant == Plant::Wrong {
            rewrite_content(chunks)
        } else {
            chunks
        };
        let run = self.inner.execute(task, chunks);
        Box::pin(async move {
            match plant {
                Plant::Slow(delay) => tokio::time::sleep(delay).await,
                Plant::Erroring if !call.is_multiple_of(4) => {
                    return Err(BackendError::Status {
                        status: 502,
                        message: "planted failure".into(),
                    })
                }
                _ => {}
            }
            let mut outcome = run.await?;
            if plant == Plant::ClaimsWarm {
                outcome.warm = true;
            }
            Ok(outcome)
        })
    }
}

/// A sender whose chunks reach `out` with every piece of content replaced.
fn rewrite_content(out: mpsc::Sender<Value>) -> mpsc::Sender<Value> {
    let (tx, mut rx) = mpsc::channel::<Value>(16);
    tokio::spawn(async move {
        while let Some(mut chunk) = rx.recv().await {
            if let Some(content) = chunk.pointer_mut("/choices/0/delta/content") {
                *content = Value::from("no ");
            }
            if out.send(chunk).await.is_err() {
                return;
            }
        }
    });
    tx
}

async fn add_planted(net: &mut TestNetwork, plant: Plant) -> NodeKeyId {
    let config = UpstreamConfig::new(net.upstream.base_url(), vec![MOCK_MODEL.to_owned()]);
    let backend = Planted::new(Arc::new(OpenAiUpstream::new(&config).unwrap()), plant);
    let i = net.add_backend_node(Arc::new(backend)).await;
    net.nodes[i].node.node_key_id()
}

async fn nodes(net: &TestNetwork) -> BTreeMap<NodeKeyId, NodeReport> {
    let list: NodeList = get_json(net, stacknet_api::paths::NODES).await;
    list.data.into_iter().map(|n| (n.node_key, n)).collect()
}

async fn node(net: &TestNetwork, id: NodeKeyId) -> NodeReport {
    get_json(net, &stacknet_api::paths::node(&id)).await
}

/// Tasks the hub has evidence of per node (every outcome counts once).
fn tasks(report: &NodeReport) -> u64 {
    report.counts.values().sum()
}

/// `n` chat requests, `concurrency` at a time; statuses are not checked (the erroring node fails some).
async fn traffic(net: &TestNetwork, n: usize, concurrency: usize) {
    futures_util::stream::iter(0..n)
        .map(|_| async { post_chat(net, &chat_body(false)).await.status() })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
}

/// The README's formula, written again here from its description, over a node's evidence rows.
fn recompute(report: &NodeReport) -> f64 {
    let weights: BTreeMap<&str, (f64, f64)> = [
        ("served", (1.0, 0.0)),
        ("validation_passed", (5.0, 0.0)),
        ("node_error", (0.0, 1.0)),
        ("timeout", (0.0, 1.0)),
        ("dropped", (0.0, 1.0)),
        ("overloaded", (0.0, 1.0)),
        ("paperwork_refused", (0.0, 5.0)),
        ("output_over_bound", (0.0, 5.0)),
        ("convicted", (0.0, 50.0)),
        ("probe_passed", (1.0, 0.0)),
        ("probe_failed", (0.0, 1.0)),
        ("probe_wrong", (0.0, 2.0)),
        ("warm_claim_failed", (0.0, 5.0)),
    ]
    .into_iter()
    .collect();
    let today = report.components.as_of_day;
    let (mut good, mut bad, mut served, mut ms) = (0.0, 0.0, 0.0, 0.0);
    for e in &report.evidence {
        let w = 0.98f64.powi((today - e.day) as i32);
        let (g, b) = weights.get(e.kind.as_str()).copied().unwrap_or((0.0, 0.0));
        good += w * e.count as f64 * g;
        bad += w * e.count as f64 * b;
        if e.kind == "served" {
            served += w * e.count as f64;
            ms += w * e.sum_ms as f64;
        }
    }
    let quality = (good + 1.0) / (good + bad + 2.0);
    let latency = if served > 0.0 {
        1_000.0 / (1_000.0 + ms / served)
    } else {
        1.0
    };
    quality * latency
}

#[tokio::test]
async fn planted_slow_erroring_and_warm_claiming_nodes_lose_score_share_and_bonus_terms() {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let honest = [
        add_planted(&mut net, Plant::Honest).await,
        add_planted(&mut net, Plant::Honest).await,
    ];
    let slow = add_planted(&mut net, Plant::Slow(Duration::from_millis(1_000))).await;
    let erroring = add_planted(&mut net, Plant::Erroring).await;
    let claims_warm = add_planted(&mut net, Plant::ClaimsWarm).await;

    // Phase one: everyone starts at the prior.
    traffic(&net, 100, 8).await;
    let first = nodes(&net).await;
    // Phase two: routing reads the scores phase one earned (flushed by the read above).
    traffic(&net, 300, 8).await;
    let second = nodes(&net).await;

    let share = |id: &NodeKeyId| {
        let all: u64 = second.values().map(tasks).sum::<u64>() - first.values().map(tasks).sum::<u64>();
        (tasks(&second[id]) - first.get(id).map_or(0, tasks)) as f64 / all as f64
    };
    let honest_share = (share(&honest[0]) + share(&honest[1])) / 2.0;
    let named = [
        ("honest", honest[0]),
        ("honest", honest[1]),
        ("slow", slow),
        ("erroring", erroring),
        ("claims_warm", claims_warm),
    ];
    let shares: Vec<String> = named
        .iter()
        .map(|(name, id)| {
            let (p1, p2) = (
                first.get(id).map_or(0, tasks),
                tasks(&second[id]) - first.get(id).map_or(0, tasks),
            );
            format!(
                "{name}: phase one {p1} tasks, phase two {p2} ({:.1}%), score {:.3}",
                100.0 * share(id),
                second[id].score
            )
        })
        .collect();
    println!("traffic by node: {shares:#?}");
    let score = |id: &NodeKeyId| second[id].score;
    // (Honest answers take milliseconds; 0.75 leaves room for a loaded machine's.)
    for h in &honest {
        assert!(score(h) > 0.75, "{:?}", second[h]);
    }
    assert!(score(&erroring) < 0.5, "{:?}", second[&erroring]);
    assert!(second[&erroring].counts.get("node_error").copied().unwrap_or(0) > 0);
    assert!(score(&slow) < 0.6, "{:?}", second[&slow]);
    assert!(second[&slow].components.ttft_ms.unwrap() >= 1_000.0);
    // Shares follow: well under an honest node's.
    assert!(share(&erroring) < 0.6 * honest_share, "{shares:?}");
    assert!(share(&slow) < 0.8 * honest_share, "{shares:?}");
    assert!(share(&claims_warm) < honest_share, "{shares:?}");

    // Warm terms: only where the hub saw the model ready before assigning the task.
    let docs = |id: &NodeKeyId| {
        let node = net.nodes.iter().find(|n| n.node.node_key_id() == *id).unwrap();
        node.node.wallet().list()
    };
    let claimed = docs(&claims_warm).await.unwrap();
    assert!(!claimed.is_empty());
    assert!(claimed.iter().all(|d| d.body.resources.warm), "it claims warm");
    assert!(
        claimed
            .iter()
            .all(|d| d.body.contract.body.split.warm_bonus_bps == 0),
        "a warm claim the hub never saw announced earns no bonus terms"
    );
    for h in &honest {
        let served = docs(h).await.unwrap();
        let warm = served
            .iter()
            .filter(|d| d.body.contract.body.split.warm_bonus_bps == 1_000 && d.body.resources.warm)
            .count();
        // Its first tasks ran before it had answered once; every later one is warm.
        assert!(warm + 8 >= served.len() && warm > 0, "{warm} of {}", served.len());
        assert_eq!(second[h].ready, vec![MOCK_MODEL.to_owned()]);
    }
    assert!(second[&claims_warm].ready.is_empty());

    // Every served score is the formula over the evidence served with it.
    for id in second.keys() {
        let report = node(&net, *id).await;
        assert!(!report.evidence.is_empty());
        let again = recompute(&report);
        assert!((again - report.score).abs() < 1e-12, "{again} against {report:?}");
    }
}

/// A chat request on a task of its own (aborting it is a client that goes away).
fn spawn_chat(net: &TestNetwork) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let url = format!("{}/chat/completions", net.base_url());
    let key = net.api_key.clone();
    tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(key)
            .json(&chat_body(false))
            .send()
            .await
    })
}

/// Waits until the mock upstream has received `n` requests in all.
async fn upstream_holds(net: &TestNetwork, n: u64) {
    let upstream = &net.upstream;
    wait_until(&format!("the upstream holds request {n}"), WAIT_DEADLINE, || {
        std::future::ready((upstream.requests() >= n).then_some(()))
    })
    .await;
}

#[tokio::test]
async fn a_client_that_leaves_and_a_hub_restart_cost_no_score_but_a_dropped_task_does() {
    let mut net = TestNetwork::start_without_nodes(Script::echo().held(), |_| {}).await;
    let id = add_planted(&mut net, Plant::Honest).await;

    // The upstream holds every request until released, and none is: each task below ends while it
    // runs (its upstream request aborted by the node).

    // A client that goes away while its task runs: cancelled, never the node's fault.
    let asked = spawn_chat(&net);
    upstream_holds(&net, 1).await;
    asked.abort();
    wait_until("the cancelled task is on record", WAIT_DEADLINE, || async {
        let r = node(&net, id).await;
        (r.counts.get("client_cancelled") == Some(&1)).then_some(())
    })
    .await;
    let r = node(&net, id).await;
    assert_eq!(r.score, 0.5, "no evidence against it: the prior {r:?}");

    // A hub restart while a task runs: the hub ended it, so nothing is on record.
    let asked = spawn_chat(&net);
    upstream_holds(&net, 2).await;
    net.restart_hub().await;
    let _ = asked.await;
    net.wait_connected(&net.nodes[0]).await;
    let r = node(&net, id).await;
    assert_eq!(r.score, 0.5, "{r:?}");
    assert_eq!(tasks(&r), 1, "only the client's cancellation: {r:?}");

    // A node that dies holding a task: its fault.
    let asked = spawn_chat(&net);
    upstream_holds(&net, 3).await;
    net.nodes.remove(0).kill().await;
    let resp = asked.await.unwrap().unwrap();
    assert_eq!(resp.status(), 503, "no other node to retry on");
    let r = node(&net, id).await;
    assert_eq!(r.counts.get("dropped"), Some(&1), "{r:?}");
    assert!(r.score < 0.5, "{r:?}");
}

/// Tops up and bonds a new guardian key to the validator bond.
pub async fn bonded_guardian(net: &TestNetwork) -> SecretKey {
    let key = SecretKey::generate();
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let bond = net.hub.hub.state.config.rules.min_validator_bond;
    top_up_and_bond(&hub, &net.hub.url(), &net.admin_token, &key, bond)
        .await
        .unwrap();
    key
}

/// Hands `report` in again, as its guardian would (a new signed request, the same report).
async fn hand_in(net: &TestNetwork, key: &SecretKey, report: &Signed<Telemetry>) -> TelemetryReceipt {
    let req = NodeRequest {
        acts_for: None,
        node_key: key.public_key(),
        hub: net.hub.hub.state.hub_key.public_key(),
        action: NodeAction::Telemetry {
            report: Box::new(report.clone()),
        },
        created_at: Timestamp::now(),
        nonce: Nonce::random(),
    };
    let resp = client()
        .post(format!("{}{}", net.hub.url(), stacknet_api::paths::GUARDIAN))
        .json(&Signed::sign(req, key).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_bonded_guardian_probes_every_node_and_its_signed_reports_move_their_scores() {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let honest = add_planted(&mut net, Plant::Honest).await;
    let wrong = add_planted(&mut net, Plant::Wrong).await;
    // Names its model ready once it answered, but answers as slowly as a cold model loads.
    let slow_warm = add_planted(&mut net, Plant::Slow(Duration::from_millis(2_500))).await;
    // Every node answers once, so each names its model ready.
    traffic(&net, 24, 4).await;
    let before = nodes(&net).await;
    for id in [honest, wrong, slow_warm] {
        assert_eq!(
            before[&id].ready,
            vec![MOCK_MODEL.to_owned()],
            "{:?}",
            before[&id]
        );
    }

    let key = SecretKey::generate();
    let options = GuardianOptions {
        window: Duration::from_secs(1),
        probes_per_node: 4,
        // Far above an honest answer's milliseconds, far below the planted 2.5 s.
        warm_latency: Duration::from_millis(1_500),
        prompts: vec![Prompt::Echo],
        references: Vec::new(),
    };
    let guardian = Guardian::connect(&net.hub.url(), key.clone(), options)
        .await
        .unwrap();
    // Not bonded yet: the hub refuses it, and nothing is probed.
    match guardian.window().await {
        Err(SettlementError::Refused { status: 400, message }) => {
            assert!(message.contains("guardian"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let bond = net.hub.hub.state.config.rules.min_validator_bond;
    top_up_and_bond(&hub, &net.hub.url(), &net.admin_token, &key, bond)
        .await
        .unwrap();

    let reports = guardian.window().await.unwrap();
    assert_eq!(reports.len(), 3, "one report per node");
    let by_node: BTreeMap<NodeKeyId, &Signed<Telemetry>> =
        reports.iter().map(|(r, _)| (r.body.node_key, r)).collect();
    for (report, receipt) in &reports {
        assert!(receipt.new);
        report.verify(&key.public_key()).unwrap();
        assert_eq!(report.body.probes, 4);
    }
    let t = |id: &NodeKeyId| &by_node[id].body;
    assert_eq!((t(&honest).successes, t(&honest).warm_failures), (4, 0));
    assert_eq!((t(&wrong).wrong, t(&wrong).successes), (4, 0));
    assert_eq!((t(&slow_warm).successes, t(&slow_warm).warm_failures), (4, 4));
    assert!(t(&slow_warm).latency_p50_ms >= 2_500 && t(&slow_warm).ttft_p50_ms >= 2_500);
    for (report, _) in &reports {
        // Each node was connected in the guardian's one window.
        assert_eq!(report.body.uptime_ppm, 1_000_000);
    }

    let after = nodes(&net).await;
    assert!(
        after[&honest].score >= before[&honest].score,
        "{:?}",
        after[&honest]
    );
    let quality = |r: &NodeReport| r.components.quality;
    assert!(
        quality(&after[&wrong]) < quality(&before[&wrong]) - 0.3,
        "{:?}",
        after[&wrong]
    );
    assert!(
        quality(&after[&slow_warm]) < quality(&before[&slow_warm]) - 0.3,
        "{:?}",
        after[&slow_warm]
    );
    assert!(after[&wrong].score < before[&wrong].score && after[&slow_warm].score < before[&slow_warm].score);
    assert_eq!(after[&wrong].counts.get("probe_wrong"), Some(&4));
    assert_eq!(after[&slow_warm].counts.get("warm_claim_failed"), Some(&4));
    // Probes are the guardian's evidence, not the hub's: no `served` of the hub's own was added.
    for id in [honest, wrong, slow_warm] {
        assert_eq!(after[&id].counts.get("served"), before[&id].counts.get("served"));
    }

    // The hub keeps each report with the node's record; one handed in again counts once.
    let record = node(&net, wrong).await;
    assert_eq!(record.telemetry, vec![by_node[&wrong].clone()]);
    let again = hand_in(&net, &key, by_node[&wrong]).await;
    assert!(!again.new);
    assert_eq!(node(&net, wrong).await.counts, record.counts);
    // A report with counts that do not add up is refused.
    let mut body = by_node[&honest].body.clone();
    body.successes += 1;
    body.nonce = Nonce::random();
    let forged = Signed::sign(body, &key).unwrap();
    let req = NodeRequest {
        acts_for: None,
        node_key: key.public_key(),
        hub: net.hub.hub.state.hub_key.public_key(),
        action: NodeAction::Telemetry {
            report: Box::new(forged),
        },
        created_at: Timestamp::now(),
        nonce: Nonce::random(),
    };
    let resp = client()
        .post(format!("{}{}", net.hub.url(), stacknet_api::paths::GUARDIAN))
        .json(&Signed::sign(req, &key).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "report.probes", "{body}");
}
