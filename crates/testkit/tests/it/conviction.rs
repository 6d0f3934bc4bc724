//! The planted-cheat suite end to end: a real hub, a Stack paying through the OpenAI API, cheating
//! and honest worker nodes on the real SmolLM2 (`CheatBackend` over `LocalModel`), and bonded
//! validators running the real loop (`Validator` with `Checker` over SmolLM2). Every cheat is either
//! refused by the hub's own C0 at acceptance (nothing billed) or convicted by a quorum, with the
//! money moved exactly by the rules; honest workers are never failed; faulty validators are caught
//! by canaries and equivocation, and one without the model never counts. Needs the model.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use stacknet_api::types::AttestationList;
use stacknet_hub::rules::{credits, NetworkRules};
use stacknet_hub::validate::sample::BPS;
use stacknet_hub::validate::Case;
use stacknet_ledger::AccountId;
use stacknet_node::backend::llama::LocalModel;
use stacknet_node::settlement::{file_wallet, HubClient, SettlementError};
use stacknet_node::validator::checks::{C0, C1, C2, C3};
use stacknet_node::validator::runner::SharedModel;
use stacknet_protocol::attestation::Verdict;
use stacknet_protocol::filing::NodeAction;
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId};
use stacknet_testkit::cheats::{self, Cheat, CheatBackend};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::validators::{equivocate, AlwaysFail, AlwaysPass, Checker, TestValidator};
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

const MODEL: &str = "smollm2-135m-instruct";
/// A conviction takes a generation and six checks on a shared CPU.
const DECIDED_DEADLINE: Duration = Duration::from_secs(300);
/// 1 credit per request: a refund is easy to see.
const PRICE_PER_REQUEST: i64 = 1_000_000;
const VALIDATOR_BOND: Amount = credits(20_000);

/// SmolLM2 loaded once per `threads` (the workers'), shared by every network of the binary.
fn model(threads: usize) -> Arc<LocalModel> {
    static ONE: OnceLock<Arc<LocalModel>> = OnceLock::new();
    static TWO: OnceLock<Arc<LocalModel>> = OnceLock::new();
    let cell = if threads == 1 { &ONE } else { &TWO };
    cell.get_or_init(|| {
        let dir = std::env::var_os("STACKNET_MODELS_DIR")
            .expect("STACKNET_MODELS_DIR is not set: this test needs the models");
        Arc::new(cheats::load_model(dir.as_ref(), MODEL, Some(threads)).expect("SmolLM2 is pulled"))
    })
    .clone()
}

/// The validators' copy: one load shared by the in-process validators (each with its own key).
fn checker() -> Checker {
    let m: SharedModel = model(2);
    Checker {
        models: vec![m],
        ..Checker::default()
    }
}

fn backend(threads: usize, cheat: Option<Cheat>) -> Arc<CheatBackend> {
    Arc::new(CheatBackend {
        model: model(threads),
        name: MODEL.to_owned(),
        cheat,
        other_sha: cheats::other_sha(),
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn admin(net: &TestNetwork, path: &str, body: Value) -> Value {
    let resp = client()
        .post(format!("{}/stacknet/v1/admin{path}", net.hub.url()))
        .bearer_auth(&net.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// A hub with short windows, SmolLM2 priced per request, a funded Stack and treasury; no nodes.
async fn network(adjust: impl FnOnce(&mut stacknet_hub::HubConfig)) -> TestNetwork {
    let net = TestNetwork::start_without_nodes(Script::text("unused"), |c| {
        c.challenge_window_ms = 500;
        c.rules = NetworkRules {
            commit_window_ms: 60_000,
            ..NetworkRules::default()
        };
        adjust(c);
    })
    .await;
    admin(
        &net,
        "/prices",
        json!({"model": MODEL, "input_per_mtok": "0", "output_per_mtok": "0",
               "per_request": PRICE_PER_REQUEST.to_string()}),
    )
    .await;
    admin(
        &net,
        &format!("/stacks/{}/topup", net.stack),
        json!({"amount": (100 * PRICE_PER_REQUEST).to_string()}),
    )
    .await;
    admin(
        &net,
        "/treasury/topup",
        json!({"amount": credits(1_000).micros().to_string()}),
    )
    .await;
    net
}

async fn posted(net: &TestNetwork, account: AccountId) -> i64 {
    let ledger = &net.hub.hub.state.ledger;
    ledger.balance(account).await.unwrap().posted.micros()
}

fn chat(content: &str, extra: Value) -> Value {
    let mut r = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// `POST /v1/chat/completions` as the Stack's client; the status and the JSON body.
async fn ask(net: &TestNetwork, body: &Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/chat/completions", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if body["stream"] == true {
        // The last data event before [DONE] names the paperwork, as a JSON body does.
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v.get("paperwork").is_some())
            .unwrap_or(Value::String(text))
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

fn paperwork_of(answer: &Value) -> PaperworkId {
    answer["paperwork"]
        .as_str()
        .unwrap_or_else(|| panic!("the answer names its paperwork: {answer}"))
        .parse()
        .unwrap()
}

async fn attestations(net: &TestNetwork, node: NodeKeyId) -> AttestationList {
    client()
        .get(format!(
            "{}{}?node={node}",
            net.hub.url(),
            stacknet_api::paths::ATTESTATIONS
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the task's validation is decided (and a conviction's money moved: the worker's
/// suspension is its last step); returns the public outcome list of its worker.
async fn decided(net: &TestNetwork, node: NodeKeyId, id: PaperworkId) -> AttestationList {
    let what = format!("the validation of {id} is decided");
    wait_until(&what, DECIDED_DEADLINE, || async {
        let list = attestations(net, node).await;
        let done = list.tasks.iter().any(|t| {
            t.paperwork_id == id
                && match t.status.as_str() {
                    "pending" => false,
                    "convicted" => net.hub.hub.state.validation.is_suspended(&node),
                    _ => true,
                }
        });
        done.then_some(list)
    })
    .await
}

/// The hub's record of a case (its rounds and their members).
async fn case(net: &TestNetwork, id: PaperworkId) -> Case {
    let record = net.hub.hub.state.store.case(id).await.unwrap().unwrap();
    Case::from_record(&record).unwrap()
}

async fn validators(net: &TestNetwork, n: usize) -> Vec<TestValidator> {
    let mut out = Vec::new();
    for _ in 0..n {
        let v = TestValidator::start(&net.hub.url(), &net.admin_token, VALIDATOR_BOND, checker()).await;
        out.push(v.unwrap());
    }
    out
}

/// Where a cheat is caught: by the hub at acceptance, or by validators citing a check.
fn expected_catch(c: Cheat) -> (bool, &'static str) {
    match c {
        // The pin, the token hash and `length` below max_tokens are the hub's own C0.
        Cheat::WrongSha | Cheat::HashMismatch | Cheat::ShortLength => (true, C0),
        Cheat::InflateUsage => (false, C1),
        Cheat::TruncateStop => (false, C2),
        Cheat::OtherModel | Cheat::TruncateEos | Cheat::Fabricate | Cheat::Splice => (false, C3),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs models: smollm2-135m-instruct in STACKNET_MODELS_DIR"]
async fn every_planted_cheat_is_refused_at_acceptance_or_convicted_by_a_quorum_of_real_validators() {
    let mut net = network(|_| {}).await;
    let real = validators(&net, 5).await;
    // A sixth validator without the model: its INCONCLUSIVE never counts toward a conviction.
    let blind = TestValidator::start(
        &net.hub.url(),
        &net.admin_token,
        VALIDATOR_BOND,
        Checker::default(),
    )
    .await
    .unwrap();
    let rules = net.hub.hub.state.config.rules.clone();
    // Long enough to be cut at max_tokens, so halving cheats have room.
    let long = chat(
        "Explain in a few sentences why the sky is blue.",
        json!({"temperature": 0, "max_tokens": 32}),
    );
    // Ends before max_tokens: inflated output usage stays within the hub's own bound (at
    // max_tokens the hub refuses any usage above it at acceptance).
    let short = chat(
        "What is the capital of France?",
        json!({"temperature": 0, "max_tokens": 32}),
    );
    let stack = AccountId::stack(net.stack);
    let mut everyone: Vec<NodeKeyId> = real.iter().map(TestValidator::id).collect();
    everyone.push(blind.id());
    for c in Cheat::ALL {
        let (at_acceptance, code) = expected_catch(c);
        let started = std::time::Instant::now();
        let n = net.add_backend_node(backend(2, Some(c))).await;
        let worker = net.nodes[n].node.node_key_id();
        let bond = posted(&net, AccountId::stake(worker)).await;
        let stack_before = posted(&net, stack.clone()).await;
        let treasury_before = posted(&net, AccountId::treasury()).await;
        let mut earned_before = Vec::new();
        for v in &everyone {
            earned_before.push(posted(&net, AccountId::node(*v)).await);
        }
        let request = if c == Cheat::InflateUsage { &short } else { &long };
        let (status, answer) = ask(&net, request).await;
        if at_acceptance {
            assert_eq!(status, 502, "{}: {answer}", c.name());
            let msg = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains("C0_envelope"), "{}: {msg}", c.name());
            net.hub.hub.state.writer.flush().await;
            assert_eq!(
                posted(&net, stack.clone()).await,
                stack_before,
                "{}: nothing billed",
                c.name()
            );
            assert_eq!(posted(&net, AccountId::stake(worker)).await, bond);
            net.nodes.remove(n).stop().await;
            eprintln!("{}: refused at acceptance: {msg}", c.name());
            continue;
        }
        assert_eq!(status, 200, "{}: {answer}", c.name());
        let id = paperwork_of(&answer);
        let answered = started.elapsed();
        net.hub.hub.state.writer.flush().await;
        assert_eq!(
            posted(&net, stack.clone()).await,
            stack_before - PRICE_PER_REQUEST,
            "{}: captured",
            c.name()
        );
        let list = decided(&net, worker, id).await;
        let outcome = list.tasks.iter().find(|t| t.paperwork_id == id).unwrap();
        assert_eq!(outcome.status, "convicted", "{}: {outcome:#?}", c.name());
        // The worker's bond is slashed by exactly the rule, citing the check that should catch it.
        let slashed = bond * i64::from(rules.slash_bps) / BPS as i64;
        assert_eq!(list.slashes.len(), 1, "{}: {:?}", c.name(), list.slashes);
        let slash = &list.slashes[0];
        assert_eq!(
            (
                slash.reason.as_str(),
                slash.code.as_deref(),
                slash.amount.micros(),
                slash.paperwork
            ),
            ("convicted", Some(code), slashed, id),
            "{}",
            c.name()
        );
        assert_eq!(posted(&net, AccountId::stake(worker)).await, bond - slashed);
        // The Stack's capture is refunded.
        assert_eq!(
            posted(&net, stack.clone()).await,
            stack_before,
            "{}: refunded",
            c.name()
        );
        // The committee's FAILs citing a check convicted; they are rewarded, nobody else.
        let record = case(&net, id).await;
        let committee = record.rounds.last().unwrap();
        let convicting: Vec<NodeKeyId> = committee
            .members
            .iter()
            .filter_map(|m| m.attestation.as_ref())
            .filter(|a| stacknet_hub::validate::rounds::objective_code(&a.body).is_some())
            .map(|a| a.body.validator.node_key_id())
            .collect();
        assert!(
            convicting.len() >= rules.convict_threshold,
            "{}: {committee:#?}",
            c.name()
        );
        assert!(!convicting.contains(&blind.id()), "{}", c.name());
        let reward = slashed * i64::from(rules.convictor_reward_bps) / BPS as i64 / convicting.len() as i64;
        let fee = rules.verification_fee.micros();
        let mut reveals = 0;
        for (v, before) in everyone.iter().zip(&earned_before) {
            let revealed = record
                .rounds
                .iter()
                .flat_map(|r| &r.members)
                .filter(|m| m.validator.node_key_id() == *v && m.attestation.is_some())
                .count() as i64;
            reveals += revealed;
            let rewarded = if convicting.contains(v) { reward } else { 0 };
            assert_eq!(
                posted(&net, AccountId::node(*v)).await - before,
                revealed * fee + rewarded,
                "{}: validator {v}",
                c.name()
            );
        }
        assert_eq!(
            posted(&net, AccountId::treasury()).await - treasury_before,
            slashed - convicting.len() as i64 * reward - reveals * fee,
            "{}: treasury",
            c.name()
        );
        // The blind validator's answers, where it sat, are INCONCLUSIVE.
        for a in &outcome.attestations {
            if a.body.validator.node_key_id() == blind.id() {
                assert_eq!(a.body.verdict, Verdict::Inconclusive, "{}", c.name());
            }
        }
        // The paperwork is void: once its challenge window is over, filing it is refused for good.
        let node = &net.nodes[n];
        let hub = HubClient::connect(&net.hub.url()).await.unwrap();
        let verdicts = wait_until("the filing is answered for good", WAIT_DEADLINE, || async {
            let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
            let window = verdicts
                .iter()
                .any(|v| v.reason().is_some_and(|r| r.contains("challenge window")));
            (!window).then_some(verdicts)
        })
        .await;
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert!(
            verdicts[0].verdict.is_final_refusal(),
            "{}: {verdicts:?}",
            c.name()
        );
        assert!(verdicts[0].reason().unwrap().contains("void"), "{verdicts:?}");
        // Suspended: the hub routes it nothing more, and its stake status says so.
        assert!(net.hub.hub.state.validation.is_suspended(&worker));
        let status = hub.stake(&node.key, NodeAction::Stake).await.unwrap();
        assert!(status.suspended, "{}: {status:?}", c.name());
        assert_eq!(status.slashes, list.slashes, "{}", c.name());
        assert_eq!(status.bonded.micros(), bond - slashed);
        let (status, answer) = ask(&net, request).await;
        assert_eq!(status, 503, "{}: {answer}", c.name());
        eprintln!(
            "{}: convicted citing {code} by {} of {} committee members in {:?} (answered in {:?}); slashed {slashed}",
            c.name(),
            convicting.len(),
            committee.members.len(),
            started.elapsed(),
            answered
        );
        net.nodes.remove(n).stop().await;
    }
    let totals = net.hub.hub.state.ledger.sum_check().await.unwrap();
    assert!(totals.is_balanced(), "{totals:?}");
    for v in real {
        v.stop().await;
    }
    blind.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs models: smollm2-135m-instruct in STACKNET_MODELS_DIR"]
async fn honest_workers_on_one_and_two_threads_are_never_failed_by_real_validators() {
    let mut net = network(|_| {}).await;
    let real = validators(&net, 5).await;
    let controls = [
        chat(
            "What is the capital of France?",
            json!({"temperature": 0, "max_tokens": 24}),
        ),
        chat(
            "Write a haiku about rain.",
            json!({"temperature": 0.8, "seed": 7, "max_tokens": 24}),
        ),
        chat(
            "Count from 1 to 20, one number per line.",
            json!({"temperature": 0, "max_tokens": 64, "stop": ["7"], "stream": true}),
        ),
        chat("Say yes.", json!({"temperature": 0, "max_tokens": 1})),
        chat(
            "Tell me a long story about a dragon and a knight.",
            json!({"temperature": 0, "max_tokens": 256}),
        ),
    ];
    let mut checked = 0;
    for threads in [1, 2] {
        let n = net.add_backend_node(backend(threads, None)).await;
        let worker = net.nodes[n].node.node_key_id();
        let bond = posted(&net, AccountId::stake(worker)).await;
        let mut ids = Vec::new();
        for request in &controls {
            let (status, answer) = ask(&net, request).await;
            assert_eq!(status, 200, "{threads} threads, {request}: {answer}");
            ids.push(paperwork_of(&answer));
        }
        net.hub.hub.state.writer.flush().await;
        for (id, request) in ids.iter().zip(&controls) {
            let list = decided(&net, worker, *id).await;
            let outcome = list.tasks.iter().find(|t| t.paperwork_id == *id).unwrap();
            assert_eq!(
                outcome.status, "passed",
                "{threads} threads, {request}: {outcome:#?}"
            );
            assert!(
                outcome
                    .attestations
                    .iter()
                    .all(|a| a.body.verdict == Verdict::Pass),
                "{outcome:#?}"
            );
            checked += 1;
        }
        let list = attestations(&net, worker).await;
        assert!(list.slashes.is_empty(), "{:?}", list.slashes);
        assert_eq!(posted(&net, AccountId::stake(worker)).await, bond);
        assert!(!net.hub.hub.state.validation.is_suspended(&worker));
        // Passed tasks are filed and paid as usual.
        let node = &net.nodes[n];
        let hub = HubClient::connect(&net.hub.url()).await.unwrap();
        let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
        assert!(
            verdicts.iter().all(|v| v.status() == "settled"),
            "{threads} threads: {verdicts:?}"
        );
        net.nodes.remove(n).stop().await;
    }
    assert_eq!(checked, 2 * controls.len());
    for v in real {
        v.stop().await;
    }
}

/// The slashes of `v` by reason.
async fn slash_reasons(net: &TestNetwork, v: NodeKeyId) -> Vec<String> {
    let slashes = net.hub.hub.state.store.slashes(Some(v)).await.unwrap();
    slashes.into_iter().map(|s| s.reason).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs models: smollm2-135m-instruct in STACKNET_MODELS_DIR"]
async fn lazy_and_hostile_validators_are_slashed_on_canaries_an_equivocator_is_slashed_and_one_without_the_model_is_not(
) {
    // A canary is due at every ask; kept material outlives the test.
    let mut net = network(|c| {
        c.rules.canary_every = 1;
        c.challenge_window_ms = 3_600_000;
    })
    .await;
    // Two tasks done before any validator exists (so never sampled): a cheat's, known-bad, and an
    // honest one, known-good.
    let request = chat("Name three colours.", json!({"temperature": 0, "max_tokens": 24}));
    let mut canaries = Vec::new();
    for (cheat, expected) in [(Some(Cheat::TruncateStop), "fail"), (None, "pass")] {
        let n = net.add_backend_node(backend(2, cheat)).await;
        let (status, answer) = ask(&net, &request).await;
        assert_eq!(status, 200, "{answer}");
        let id = paperwork_of(&answer);
        net.hub.hub.state.writer.flush().await;
        let created = admin(
            &net,
            "/canaries",
            json!({"paperwork_id": id, "expected": expected}),
        )
        .await;
        assert_eq!(created["paperwork_id"], id.to_string());
        canaries.push(id);
        net.nodes.remove(n).stop().await;
    }
    let url = net.hub.url();
    let token = net.admin_token.clone();
    let lazy = TestValidator::start(&url, &token, VALIDATOR_BOND, AlwaysPass)
        .await
        .unwrap();
    let hostile = TestValidator::start(&url, &token, VALIDATOR_BOND, AlwaysFail)
        .await
        .unwrap();
    let honest = TestValidator::start(&url, &token, VALIDATOR_BOND, checker())
        .await
        .unwrap();
    let blind = TestValidator::start(&url, &token, VALIDATOR_BOND, Checker::default())
        .await
        .unwrap();
    let all = [&lazy, &hostile, &honest, &blind];
    // Each is handed both canaries (one per ask) and reveals its verdict on each.
    wait_until(
        "every validator revealed both canaries",
        DECIDED_DEADLINE,
        || async {
            for id in &canaries {
                let c = case(&net, *id).await;
                let revealed: Vec<NodeKeyId> = c
                    .rounds
                    .iter()
                    .flat_map(|r| &r.members)
                    .filter(|m| m.attestation.is_some())
                    .map(|m| m.validator.node_key_id())
                    .collect();
                if !all.iter().all(|v| revealed.contains(&v.id())) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let verdict_of = |c: &Case, v: NodeKeyId| {
        c.rounds
            .iter()
            .flat_map(|r| &r.members)
            .find(|m| m.validator.node_key_id() == v)
            .and_then(|m| m.attestation.as_ref())
            .map(|a| a.body.verdict)
    };
    let (bad, good) = (case(&net, canaries[0]).await, case(&net, canaries[1]).await);
    assert_eq!(verdict_of(&bad, honest.id()), Some(Verdict::Fail));
    assert_eq!(verdict_of(&good, honest.id()), Some(Verdict::Pass));
    assert_eq!(verdict_of(&bad, blind.id()), Some(Verdict::Inconclusive));
    assert_eq!(verdict_of(&good, blind.id()), Some(Verdict::Inconclusive));
    assert_eq!(slash_reasons(&net, lazy.id()).await, ["canary_pass"]);
    assert_eq!(slash_reasons(&net, hostile.id()).await, ["canary_fail"]);
    assert!(slash_reasons(&net, honest.id()).await.is_empty());
    assert!(slash_reasons(&net, blind.id()).await.is_empty());
    let tenth = VALIDATOR_BOND.micros() / 10;
    for (v, expected) in [
        (&lazy, VALIDATOR_BOND.micros() - tenth),
        (&hostile, VALIDATOR_BOND.micros() - tenth),
        (&honest, VALIDATOR_BOND.micros()),
        (&blind, VALIDATOR_BOND.micros()),
    ] {
        assert_eq!(posted(&net, AccountId::stake(v.id())).await, expected);
    }

    // An equivocating validator commits twice, differently, to the canary it is handed.
    let key = stacknet_protocol::SecretKey::generate();
    let hub = HubClient::connect(&url).await.unwrap();
    stacknet_testkit::validators::top_up_and_bond(&hub, &url, &token, &key, VALIDATOR_BOND)
        .await
        .unwrap();
    let second = equivocate(&hub, &key, &checker()).await.unwrap();
    assert_eq!(second.len(), 1, "a canary is due at the first ask");
    match &second[0] {
        Err(SettlementError::Refused { status: 409, message }) => {
            assert!(message.contains("equivocation"), "{message}")
        }
        other => panic!("the second commit must be refused as equivocation: {other:?}"),
    }
    let id = key.public_key().node_key_id();
    assert_eq!(slash_reasons(&net, id).await, ["equivocation"]);
    assert_eq!(
        posted(&net, AccountId::stake(id)).await,
        VALIDATOR_BOND.micros() - tenth
    );
    for v in [lazy, hostile, honest, blind] {
        v.stop().await;
    }
}
