//! Validation end to end: a worker node on a committing fixture backend, scripted validators that
//! sign their own requests with bonded keys (no model needed), and the hub deciding, slashing and
//! refunding through its ledger.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use stacknet_api::types::{Assignment, Assignments, AttestationList, Round, ValidationAck};
use stacknet_hub::rules::credits;
use stacknet_hub::validate::envelope::pinned_sha256;
use stacknet_hub::validate::rounds::commit_digest;
use stacknet_ledger::{AccountId, Reason, Transfer, TransferId};
use stacknet_node::backend::{Backend, BackendError, BackendOutcome, BackendTask, Committed};
use stacknet_node::settlement::{file_wallet, HubClient};
use stacknet_protocol::attestation::{Attestation, CheckResult, Verdict};
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::paperwork::{tokens_sha256, BackendInfo, Commitment, Sampling, SAMPLER_V1};
use stacknet_protocol::wire::ModelOffer;
use stacknet_protocol::{Amount, Nonce, SecretKey, Sha256Digest, Signed, Timestamp};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};
use tokio::sync::mpsc;

use super::client;
use super::money::{admin, ledger, on_both_stores, posted, Db};

const MODEL: &str = "smollm2-135m-instruct";
const TOKENS: [u32; 3] = [7, 8, 2];

/// How the fixture lies, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    None,
    /// Claims another file's sha256 under the pinned model.
    WrongSha,
    /// Sends token ids that do not hash to its commitment.
    OtherTokens,
}

/// A built-in text backend as the hub sees one: `llama.cpp`, the pinned SmolLM2, a commitment to
/// the token ids it sends. It runs no model; what it says is scripted.
struct Committing {
    lie: Mutex<Lie>,
}

impl Committing {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            lie: Mutex::new(Lie::None),
        })
    }

    fn lie(&self, lie: Lie) {
        *self.lie.lock().unwrap() = lie;
    }
}

impl Backend for Committing {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: MODEL.to_owned(),
            workloads: vec![Workload::Chat],
            backend: "llama.cpp".to_owned(),
            model_sha256: None,
            tool: None,
        }]
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let lie = *self.lie.lock().unwrap();
        Box::pin(async move {
            let chunk = json!({"choices": [{"index": 0,
                "delta": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}]});
            chunks
                .send(chunk)
                .await
                .map_err(|_| BackendError::Malformed("the runtime went away".into()))?;
            let sha = match lie {
                Lie::WrongSha => Some(Sha256Digest::of(b"another model file")),
                _ => pinned_sha256(MODEL),
            };
            let commitment = Commitment {
                output_tokens_sha256: tokens_sha256(&TOKENS),
                output_token_count: TOKENS.len() as u64,
                finish_reason: "stop".into(),
                sampling: Sampling {
                    sampler: SAMPLER_V1.into(),
                    temperature_milli: 0,
                    top_p_milli: 1000,
                    seed: 0,
                    max_tokens: 16,
                },
            };
            let tokens = if lie == Lie::OtherTokens {
                vec![7, 8, 9]
            } else {
                TOKENS.to_vec()
            };
            Ok(BackendOutcome {
                usage: Some(Usage {
                    input_tokens: 4,
                    output_tokens: 3,
                    units: 0,
                }),
                info: BackendInfo {
                    id: "llama.cpp".into(),
                    version: "test".into(),
                    model: task.model,
                    model_sha256: sha,
                },
                warm: false,
                files: Vec::new(),
                committed: Some(Committed { commitment, tokens }),
            })
        })
    }
}

/// 1 credit per request: easy amounts to follow.
const PRICE_PER_REQUEST: i64 = 1_000_000;

async fn network(
    db: &Db,
    adjust: impl FnOnce(&mut stacknet_hub::HubConfig),
) -> (TestNetwork, Arc<Committing>) {
    network_layered(db, adjust, Box::new(|ledger| ledger)).await
}

/// As [`network`], with the hub's ledger seen through `layer`.
async fn network_layered(
    db: &Db,
    adjust: impl FnOnce(&mut stacknet_hub::HubConfig),
    layer: stacknet_hub::LedgerLayer,
) -> (TestNetwork, Arc<Committing>) {
    let mut net = TestNetwork::start_without_nodes_layered(
        Script::text("unused"),
        |c| {
            db.apply(c);
            c.challenge_window_ms = 0;
            adjust(c);
        },
        layer,
    )
    .await;
    let backend = Committing::new();
    net.add_backend_node(backend.clone()).await;
    let resp = admin(
        &net,
        "/prices",
        json!({"model": MODEL, "input_per_mtok": "0", "output_per_mtok": "0",
               "per_request": PRICE_PER_REQUEST.to_string()}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    super::money::topup(&net, 100 * PRICE_PER_REQUEST).await;
    fund(&net, AccountId::treasury(), credits(100).micros(), "treasury").await;
    (net, backend)
}

/// Moves `micros` from the outside world into `account` (a bond, before the stake endpoint).
async fn fund(net: &TestNetwork, account: AccountId, micros: i64, tag: &str) {
    let t = Transfer::posted(
        TransferId::new(&format!("test:{tag}:{}", hex::encode(Nonce::random().0))).unwrap(),
        AccountId::external("topup").unwrap(),
        account,
        Amount::from_micros(micros),
        Reason::StakeBond,
    );
    ledger(net).create_transfers(vec![t.into()]).await.unwrap();
}

async fn chat(net: &TestNetwork) -> reqwest::Response {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16});
    super::post_chat(net, &body).await
}

fn worker(net: &TestNetwork) -> stacknet_protocol::NodeKeyId {
    net.nodes[0].node.node_key_id()
}

/// A validator run by the test: its own bonded key, signing its own requests.
struct Validator {
    key: SecretKey,
}

impl Validator {
    async fn bonded(net: &TestNetwork) -> Self {
        let key = SecretKey::generate();
        let id = key.public_key().node_key_id();
        fund(net, AccountId::stake(id), credits(10_000).micros(), "bond").await;
        let v = Self { key };
        v.assignments(net).await;
        v
    }

    fn id(&self) -> stacknet_protocol::NodeKeyId {
        self.key.public_key().node_key_id()
    }

    async fn send(&self, net: &TestNetwork, action: NodeAction) -> reqwest::Response {
        let req = NodeRequest {
            acts_for: None,
            node_key: self.key.public_key(),
            hub: net.hub.hub.state.hub_key.public_key(),
            action,
            created_at: Timestamp::now(),
            nonce: Nonce::random(),
        };
        client()
            .post(format!("{}{}", net.hub.url(), stacknet_api::paths::VALIDATION))
            .json(&Signed::sign(req, &self.key).unwrap())
            .send()
            .await
            .unwrap()
    }

    async fn assignments(&self, net: &TestNetwork) -> Assignments {
        let resp = self.send(net, NodeAction::Assignments).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        resp.json().await.unwrap()
    }

    fn attest(&self, a: &Assignment, verdict: Verdict, code: Option<&str>) -> Signed<Attestation> {
        let body = Attestation {
            paperwork: a.paperwork_id,
            contract: a.paperwork.body.contract.body.id,
            node_key: a.paperwork.body.node_key.node_key_id(),
            validator: self.key.public_key(),
            verdict,
            checks: vec![CheckResult {
                name: "scripted".into(),
                passed: verdict == Verdict::Pass,
                score_ppm: None,
                detail: String::new(),
                inconclusive: verdict == Verdict::Inconclusive,
                code: code.map(str::to_owned),
                evidence: Vec::new(),
            }],
            created_at: Timestamp::now(),
        };
        Signed::sign(body, &self.key).unwrap()
    }

    async fn commit(
        &self,
        net: &TestNetwork,
        att: &Signed<Attestation>,
        salt: &[u8; 32],
    ) -> reqwest::Response {
        let digest = commit_digest(salt, att).unwrap();
        self.send(
            net,
            NodeAction::Commit {
                paperwork: att.body.paperwork,
                digest,
            },
        )
        .await
    }

    async fn reveal(
        &self,
        net: &TestNetwork,
        att: &Signed<Attestation>,
        salt: &[u8; 32],
    ) -> reqwest::Response {
        self.send(
            net,
            NodeAction::Reveal {
                attestation: Box::new(att.clone()),
                salt: hex::encode(salt),
            },
        )
        .await
    }

    /// Commits to `verdict` on its one assignment and returns the attestation and salt.
    async fn commit_to(
        &self,
        net: &TestNetwork,
        verdict: Verdict,
        code: Option<&str>,
    ) -> (Signed<Attestation>, [u8; 32]) {
        let list = self.assignments(net).await;
        assert_eq!(list.assignments.len(), 1, "{:?}", list.assignments);
        let att = self.attest(&list.assignments[0], verdict, code);
        let salt: [u8; 32] = rand_salt();
        let resp = self.commit(net, &att, &salt).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        (att, salt)
    }
}

fn rand_salt() -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..16].copy_from_slice(&Nonce::random().0);
    s[16..].copy_from_slice(&Nonce::random().0);
    s
}

async fn ack(resp: reqwest::Response) -> ValidationAck {
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

async fn error_message(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status(), status);
    let v: Value = resp.json().await.unwrap();
    v["error"]["message"].as_str().unwrap().to_owned()
}

on_both_stores!(
    paperwork_claiming_another_model_file_or_other_tokens_is_refused_and_not_billed,
    a_new_workers_first_tasks_are_all_assigned_with_their_material,
    a_reveal_must_follow_its_commit_and_match_it_and_a_pass_lets_the_task_be_filed,
    a_second_different_commit_is_equivocation_and_slashes_the_validator,
    a_three_of_five_committee_convicts_and_moves_exactly_the_right_amounts,
    canaries_slash_a_validator_that_passes_a_known_bad_task_or_fails_a_known_good_one,
    a_slash_reaches_what_the_worker_is_unbonding_once_and_shows_in_its_stake_status,
    a_round_past_its_windows_is_decided_and_reassigned_without_any_poll,
    a_batch_logged_but_not_sampled_before_a_crash_is_sampled_at_the_restart,
    a_restarted_validator_reveals_what_it_committed_to_before,
    a_conviction_whose_slash_the_ledger_failed_is_finished_by_the_ticker_once,
    a_suspension_ends_after_its_period_and_a_rebonded_worker_is_eligible_again,
    a_pass_given_a_second_opinion_that_fails_goes_to_a_committee,
);

async fn paperwork_claiming_another_model_file_or_other_tokens_is_refused_and_not_billed(db: Db) {
    let (net, backend) = network(&db, |_| {}).await;
    let stack = AccountId::stack(net.stack);
    let before = posted(&net, stack.clone()).await;
    backend.lie(Lie::WrongSha);
    let msg = error_message(chat(&net).await, 502).await;
    assert!(
        msg.contains("C0_envelope") && msg.contains("pinned to sha256"),
        "{msg}"
    );
    backend.lie(Lie::OtherTokens);
    let msg = error_message(chat(&net).await, 502).await;
    assert!(
        msg.contains("C0_envelope") && msg.contains("do not hash to the commitment"),
        "{msg}"
    );
    net.hub.hub.state.writer.flush().await;
    assert_eq!(posted(&net, stack.clone()).await, before, "nothing billed");
    backend.lie(Lie::None);
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    assert_eq!(posted(&net, stack).await, before - PRICE_PER_REQUEST);
}

async fn a_new_workers_first_tasks_are_all_assigned_with_their_material(db: Db) {
    let (net, _) = network(&db, |_| {}).await;
    let v = Validator::bonded(&net).await;
    for _ in 0..3 {
        assert_eq!(chat(&net).await.status(), 200);
    }
    net.hub.hub.state.writer.flush().await;
    let list = v.assignments(&net).await;
    assert_eq!(list.assignments.len(), 3);
    for a in &list.assignments {
        assert_eq!(a.round, Round::Check);
        assert_eq!(a.output_tokens.as_deref(), Some(TOKENS.as_slice()));
        assert_eq!(a.required_model_sha256, pinned_sha256(MODEL));
        assert_eq!(a.request["messages"][0]["content"], "hi");
        assert_eq!(a.output[0]["message"]["content"], "hello there", "{}", a.output);
    }
    // Under validation: filing waits.
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert_eq!(verdicts.len(), 3);
    assert!(
        verdicts
            .iter()
            .all(|v| v.reason().is_some_and(|r| r.contains("under validation"))),
        "{verdicts:?}"
    );
}

async fn a_reveal_must_follow_its_commit_and_match_it_and_a_pass_lets_the_task_be_filed(db: Db) {
    let (net, _) = network(&db, |_| {}).await;
    let v = Validator::bonded(&net).await;
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let list = v.assignments(&net).await;
    let att = v.attest(&list.assignments[0], Verdict::Pass, None);
    let salt = rand_salt();
    let msg = error_message(v.reveal(&net, &att, &salt).await, 409).await;
    assert!(msg.contains("no commit"), "{msg}");
    ack(v.commit(&net, &att, &salt).await).await;
    assert_eq!(v.assignments(&net).await.reveal, vec![att.body.paperwork]);
    let msg = error_message(v.reveal(&net, &att, &rand_salt()).await, 400).await;
    assert!(msg.contains("do not match the commit"), "{msg}");
    assert_eq!(ack(v.reveal(&net, &att, &salt).await).await.status, "passed");
    // The verification fee was paid, and the task may now be filed.
    assert_eq!(posted(&net, AccountId::node(v.id())).await, 1_000);
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert_eq!(verdicts[0].status(), "settled", "{verdicts:?}");
    let list: AttestationList = client()
        .get(format!(
            "{}{}?node={}",
            net.hub.url(),
            stacknet_api::paths::ATTESTATIONS,
            worker(&net)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.tasks.len(), 1);
    assert_eq!(list.tasks[0].status, "passed");
    assert_eq!(list.tasks[0].attestations, vec![att]);
}

async fn a_second_different_commit_is_equivocation_and_slashes_the_validator(db: Db) {
    let (net, _) = network(&db, |_| {}).await;
    let v = Validator::bonded(&net).await;
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let (att, salt) = v.commit_to(&net, Verdict::Pass, None).await;
    ack(v.commit(&net, &att, &salt).await).await;
    let msg = error_message(v.commit(&net, &att, &rand_salt()).await, 409).await;
    assert!(msg.contains("equivocation"), "{msg}");
    let stake = posted(&net, AccountId::stake(v.id())).await;
    assert_eq!(stake, credits(9_000).micros());
    let list: AttestationList = client()
        .get(format!("{}{}", net.hub.url(), stacknet_api::paths::ATTESTATIONS))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.slashes.len(), 1);
    assert_eq!(list.slashes[0].reason, "equivocation");
    assert_eq!(list.slashes[0].node_key, v.id());
}

async fn a_three_of_five_committee_convicts_and_moves_exactly_the_right_amounts(db: Db) {
    let (mut net, _) = network(&db, |_| {}).await;
    // The test kit bonded the worker the minimum worker bond.
    let bond = credits(1_000).micros();
    assert_eq!(posted(&net, AccountId::stake(worker(&net))).await, bond);
    let validators = {
        let mut vs = Vec::new();
        for _ in 0..6 {
            vs.push(Validator::bonded(&net).await);
        }
        vs
    };
    let stack = AccountId::stack(net.stack);
    let before_stack = posted(&net, stack.clone()).await;
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    assert_eq!(
        posted(&net, stack.clone()).await,
        before_stack - PRICE_PER_REQUEST
    );
    let treasury_before = posted(&net, AccountId::treasury()).await;

    // The one checker fails it, citing C2: a committee of the five others is drawn.
    let checker = assigned(&net, &validators, &[]).await;
    let (att, salt) = checker
        .commit_to(&net, Verdict::Fail, Some("C2_termination"))
        .await;
    assert_eq!(
        ack(checker.reveal(&net, &att, &salt).await).await.status,
        "revealed"
    );
    let committee: Vec<&Validator> = validators.iter().filter(|v| v.id() != checker.id()).collect();
    let mut votes = Vec::new();
    for (i, v) in committee.iter().enumerate() {
        let (verdict, code) = if i < 3 {
            (Verdict::Fail, Some("C3_teacher_forced"))
        } else {
            (Verdict::Pass, None)
        };
        let list = v.assignments(&net).await;
        assert_eq!(list.assignments[0].round, Round::Committee);
        // Nobody may reveal before every member committed.
        let (a, s) = v.commit_to(&net, verdict, code).await;
        if i == 0 {
            let msg = error_message(v.reveal(&net, &a, &s).await, 409).await;
            assert!(msg.contains("every member committed"), "{msg}");
        }
        votes.push((v, a, s));
    }
    let mut last = String::new();
    for (v, a, s) in &votes {
        last = ack(v.reveal(&net, a, s).await).await.status;
    }
    assert_eq!(last, "convicted");

    // The worker loses 10% of its bond; 10% of that goes to the three convicting validators.
    let slashed = bond / 10;
    let reward = slashed / 10 / 3;
    assert_eq!(posted(&net, AccountId::stake(worker(&net))).await, bond - slashed);
    let fee = 1_000;
    assert_eq!(posted(&net, AccountId::node(checker.id())).await, fee);
    for (i, (v, _, _)) in votes.iter().enumerate() {
        let expected = if i < 3 { fee + reward } else { fee };
        assert_eq!(posted(&net, AccountId::node(v.id())).await, expected);
    }
    assert_eq!(
        posted(&net, AccountId::treasury()).await,
        treasury_before + slashed - 3 * reward - 6 * fee
    );
    // The client gets its money back.
    assert_eq!(posted(&net, stack).await, before_stack);
    // The paperwork is void: never filable.
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert!(verdicts[0].verdict.is_final_refusal(), "{verdicts:?}");
    assert!(verdicts[0].reason().unwrap().contains("void"), "{verdicts:?}");
    // Suspended: no more tasks, also after a restart.
    assert_eq!(chat(&net).await.status(), 503);
    net.restart_hub().await;
    net.wait_connected(&net.nodes[0]).await;
    assert_eq!(chat(&net).await.status(), 503);
    let totals = ledger(&net).sum_check().await.unwrap();
    assert!(totals.is_balanced(), "{totals:?}");
}

async fn canaries_slash_a_validator_that_passes_a_known_bad_task_or_fails_a_known_good_one(db: Db) {
    let (net, _) = network(&db, |c| {
        c.rules.canary_every = 1;
        c.challenge_window_ms = 3_600_000;
    })
    .await;
    // Tasks done before any validator exists are not checked, and stay kept for canaries.
    assert_eq!(chat(&net).await.status(), 200);
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let node = &net.nodes[0];
    let ids: Vec<_> = node
        .node
        .wallet()
        .list()
        .await
        .unwrap()
        .iter()
        .map(|d| d.id().unwrap())
        .collect();
    for (id, expected) in ids.iter().zip(["fail", "pass"]) {
        let resp = admin(
            &net,
            "/canaries",
            json!({"paperwork_id": id, "expected": expected}),
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let lazy = Validator::bonded(&net).await;
    let hostile = Validator::bonded(&net).await;
    let honest = Validator::bonded(&net).await;
    // Twice the minimum: a slashed validator stays eligible, and is handed the other canary too.
    for v in [&lazy, &hostile, &honest] {
        fund(&net, AccountId::stake(v.id()), credits(10_000).micros(), "bond").await;
    }
    // Each asks until it has been handed both canaries (one per ask at most), and answers as it does.
    for (v, answer) in [
        (&lazy, Some(Verdict::Pass)),
        (&hostile, Some(Verdict::Fail)),
        (&honest, None),
    ] {
        let mut answered = 0;
        while answered < 2 {
            let list = v.assignments(&net).await;
            assert!(!list.assignments.is_empty(), "a canary is due at every ask");
            for a in &list.assignments {
                let truth = if a.paperwork_id == ids[0] {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                };
                let verdict = answer.unwrap_or(truth);
                let code = (verdict == Verdict::Fail).then_some("C3_teacher_forced");
                let att = v.attest(a, verdict, code);
                let salt = rand_salt();
                ack(v.commit(&net, &att, &salt).await).await;
                ack(v.reveal(&net, &att, &salt).await).await;
                answered += 1;
            }
        }
        assert!(
            v.assignments(&net).await.assignments.is_empty(),
            "only two canaries exist"
        );
    }
    let nine_tenths = credits(18_000).micros();
    assert_eq!(posted(&net, AccountId::stake(lazy.id())).await, nine_tenths);
    assert_eq!(posted(&net, AccountId::stake(hostile.id())).await, nine_tenths);
    assert_eq!(
        posted(&net, AccountId::stake(honest.id())).await,
        credits(20_000).micros()
    );
    let slashes = net.hub.hub.state.store.slashes(None).await.unwrap();
    let reasons: Vec<(_, &str)> = slashes.iter().map(|s| (s.node_key, s.reason.as_str())).collect();
    assert_eq!(
        reasons,
        vec![(lazy.id(), "canary_pass"), (hostile.id(), "canary_fail")]
    );
    // Canaries are never shown as outcomes.
    let list: AttestationList = client()
        .get(format!("{}{}", net.hub.url(), stacknet_api::paths::ATTESTATIONS))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.tasks.is_empty());
}

/// `action` signed by `key` and posted to `path`: (status, body).
async fn signed_post(net: &TestNetwork, key: &SecretKey, path: &str, action: NodeAction) -> (u16, Value) {
    let req = NodeRequest {
        acts_for: None,
        node_key: key.public_key(),
        hub: net.hub.hub.state.hub_key.public_key(),
        action,
        created_at: Timestamp::now(),
        nonce: Nonce::random(),
    };
    let resp = client()
        .post(format!("{}{path}", net.hub.url()))
        .json(&Signed::sign(req, key).unwrap())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The one open case's paperwork (the network's one task).
async fn the_case(net: &TestNetwork) -> stacknet_protocol::PaperworkId {
    let cases = net.hub.hub.state.store.cases_about(None).await.unwrap();
    assert_eq!(cases.len(), 1, "one task under validation");
    cases[0].paperwork
}

/// The first checker fails the one sampled task; three of the five others fail it too: convicted.
async fn convict_the_task(net: &TestNetwork, validators: &[Validator]) {
    let checker = assigned(net, validators, &[]).await;
    let (att, salt) = checker
        .commit_to(net, Verdict::Fail, Some("C2_termination"))
        .await;
    ack(checker.reveal(net, &att, &salt).await).await;
    let mut votes = Vec::new();
    for (i, v) in validators.iter().filter(|v| v.id() != checker.id()).enumerate() {
        let (verdict, code) = if i < 3 {
            (Verdict::Fail, Some("C3_teacher_forced"))
        } else {
            (Verdict::Pass, None)
        };
        votes.push((v, v.commit_to(net, verdict, code).await));
    }
    let mut last = String::new();
    for (v, (a, s)) in &votes {
        last = ack(v.reveal(net, a, s).await).await.status;
    }
    assert_eq!(last, "convicted");
}

async fn a_slash_reaches_what_the_worker_is_unbonding_once_and_shows_in_its_stake_status(db: Db) {
    let (net, _) = network(&db, |_| {}).await;
    let mut validators = Vec::new();
    for _ in 0..6 {
        validators.push(Validator::bonded(&net).await);
    }
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    // Seeing its task sampled, the worker unbonds nearly everything, in two steps.
    let key = net.nodes[0].key.clone();
    for micros in [credits(500).micros(), credits(450).micros()] {
        let amount = Amount::from_micros(micros);
        let (status, body) = signed_post(
            &net,
            &key,
            stacknet_api::paths::STAKE,
            NodeAction::Unbond { amount },
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let id = worker(&net);
    assert_eq!(posted(&net, AccountId::stake(id)).await, credits(50).micros());
    // And a record a crash left between an unbond's record and its ledger move: the latest to
    // mature, so a slash that trusted the records would cut it first and leave real ones whole.
    let orphan = stacknet_hub::store::UnbondingRecord {
        id: format!("unbond:{}", "f".repeat(32)),
        node_key: id,
        amount: credits(700),
        created_at: Timestamp::now(),
        withdrawable_at: Timestamp::now().plus_ms(30 * 24 * 3_600_000),
        withdrawn_at: None,
    };
    net.hub.hub.state.store.add_unbonding(orphan).await.unwrap();
    convict_the_task(&net, &validators).await;

    // 10% of the 1,000 bonded and unbonding: 50 from the bond, the other 50 from the latest unbonding.
    assert_eq!(posted(&net, AccountId::stake(id)).await, 0);
    assert_eq!(
        posted(&net, AccountId::unbonding(id)).await,
        credits(900).micros()
    );
    let (status, body) = signed_post(&net, &key, stacknet_api::paths::STAKE, NodeAction::Stake).await;
    assert_eq!(status, 200, "{body}");
    let status: stacknet_api::types::StakeStatus = serde_json::from_value(body).unwrap();
    assert_eq!(status.bonded, Amount::ZERO);
    let left: Vec<i64> = status.unbonding.iter().map(|u| u.amount.micros()).collect();
    assert_eq!(left.iter().sum::<i64>(), credits(900).micros(), "{left:?}");
    assert!(
        left.contains(&credits(500).micros()) && left.contains(&credits(400).micros()),
        "{left:?}"
    );
    assert!(status.suspended);
    assert_eq!(status.slashes.len(), 1);
    let slash = &status.slashes[0];
    assert_eq!(slash.reason, "convicted");
    assert_eq!(slash.amount, credits(100));
    assert_eq!(slash.from_unbonding, credits(50));
    // The routing map follows the ledger: nothing bonded, not routable even were it not suspended.
    let nodes = &net.hub.hub.state.nodes;
    assert_eq!(nodes.bond(&id), Amount::ZERO);
    assert!(!nodes.is_bonded(&id));

    // A retried slash (the same task, offender and reason) moves nothing and cuts no row again.
    let v = &net.hub.hub.state.validation;
    let paperwork = the_case(&net).await;
    let again = stacknet_hub::validate::money::slash(v, id, paperwork, "convicted", None, &[])
        .await
        .unwrap();
    assert_eq!(again, credits(100));
    assert_eq!(
        posted(&net, AccountId::unbonding(id)).await,
        credits(900).micros()
    );
    let rows = net.hub.hub.state.store.unbondings_of(id).await.unwrap();
    assert_eq!(
        rows.iter().map(|u| u.amount.micros()).sum::<i64>(),
        credits(900).micros()
    );
    assert_eq!(net.hub.hub.state.store.slashes(Some(id)).await.unwrap().len(), 1);
    let totals = ledger(&net).sum_check().await.unwrap();
    assert!(totals.is_balanced(), "{totals:?}");
}

/// A conviction suspends the worker for the network's suspension period: no task at all. After it,
/// the key is eligible again once it bonds back to the minimum (the slash took it below), and then,
/// like any node whose evidence put it under the reputation floor, it gets guardians' probes only
/// until their evidence lifts it (`hub::reputation`): the conviction's evidence stays.
async fn a_suspension_ends_after_its_period_and_a_rebonded_worker_is_eligible_again(db: Db) {
    let period_ms = 4_000;
    let (net, _) = network(&db, |c| c.rules.suspension_ms = period_ms).await;
    let mut validators = Vec::new();
    for _ in 0..6 {
        validators.push(Validator::bonded(&net).await);
    }
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let id = worker(&net);
    let before = Timestamp::now();
    convict_the_task(&net, &validators).await;
    let nodes = &net.hub.hub.state.nodes;
    let until = nodes.suspended_until(&id).expect("suspended by the conviction");
    assert!(
        until.unix_ms() >= before.unix_ms() + period_ms as i64
            && until.unix_ms() <= Timestamp::now().unix_ms() + period_ms as i64,
        "{until}"
    );
    let key = net.nodes[0].key.clone();
    let (status, body) = signed_post(&net, &key, stacknet_api::paths::STAKE, NodeAction::Stake).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suspended"], json!(true), "{body}");
    assert_eq!(body["suspended_until"], json!(until.to_string()), "{body}");
    assert_eq!(chat(&net).await.status(), 503);

    wait_until("the suspension ends", WAIT_DEADLINE, || async {
        (!nodes.is_suspended(&id)).then_some(())
    })
    .await;
    // 900 bonded of the 1,000 the network asks: still no task.
    assert_eq!(chat(&net).await.status(), 503);
    let resp = admin(
        &net,
        &format!("/nodes/{id}/topup"),
        json!({"amount": credits(100).micros().to_string(), "reference": "rebond"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (status, body) = signed_post(
        &net,
        &key,
        stacknet_api::paths::STAKE,
        NodeAction::Bond { amount: credits(100) },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suspended"], json!(false), "{body}");
    assert!(nodes.is_bonded(&id));
    let report: Value = super::get_json(&net, &stacknet_api::paths::node(&id)).await;
    assert_eq!(report["suspended"], json!(false), "{report}");
    assert_eq!(report["below_floor"], json!(true), "{report}");
    assert_eq!(chat(&net).await.status(), 503, "probes only, below the floor");
    let totals = ledger(&net).sum_check().await.unwrap();
    assert!(totals.is_balanced(), "{totals:?}");
}

/// The validator of those with an assignment now that is not in `not`.
async fn assigned<'a>(net: &TestNetwork, validators: &'a [Validator], not: &[&Validator]) -> &'a Validator {
    let mut found = Vec::new();
    for v in validators.iter().filter(|v| not.iter().all(|n| n.id() != v.id())) {
        if !v.assignments(net).await.assignments.is_empty() {
            found.push(v);
        }
    }
    assert_eq!(found.len(), 1, "one validator holds the check");
    found[0]
}

/// Every PASS asked for a second opinion (`second_opinion_bps` 10,000): the first PASS leaves the
/// task pending (not filable), a second validator checks it, and its FAIL citing an objective check
/// escalates to a committee of five others, which convicts as after a first FAIL.
async fn a_pass_given_a_second_opinion_that_fails_goes_to_a_committee(db: Db) {
    let (net, _) = network(&db, |c| c.rules.second_opinion_bps = 10_000).await;
    let mut validators = Vec::new();
    for _ in 0..7 {
        validators.push(Validator::bonded(&net).await);
    }
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let first = assigned(&net, &validators, &[]).await;
    let (att, salt) = first.commit_to(&net, Verdict::Pass, None).await;
    assert_eq!(
        ack(first.reveal(&net, &att, &salt).await).await.status,
        "revealed"
    );
    let paperwork = the_case(&net).await;
    let case = net.hub.hub.state.store.case(paperwork).await.unwrap().unwrap();
    assert!(case.open, "a PASS with a second opinion to come is not final");
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert_ne!(verdicts[0].status(), "settled", "{verdicts:?}");

    let second = assigned(&net, &validators, &[first]).await;
    let (att, salt) = second
        .commit_to(&net, Verdict::Fail, Some("C3_teacher_forced"))
        .await;
    assert_eq!(
        ack(second.reveal(&net, &att, &salt).await).await.status,
        "revealed"
    );
    let mut committee = Vec::new();
    for v in validators
        .iter()
        .filter(|v| v.id() != first.id() && v.id() != second.id())
    {
        let list = v.assignments(&net).await;
        assert_eq!(list.assignments.len(), 1, "all five others sit on the committee");
        assert_eq!(list.assignments[0].round, Round::Committee);
        committee.push(v);
    }
    assert_eq!(committee.len(), 5);
    let mut votes = Vec::new();
    for (i, v) in committee.iter().enumerate() {
        let verdict = if i < 3 { Verdict::Fail } else { Verdict::Pass };
        let code = (verdict == Verdict::Fail).then_some("C3_teacher_forced");
        votes.push((v, v.commit_to(&net, verdict, code).await));
    }
    let mut last = String::new();
    for (v, (a, s)) in &votes {
        last = ack(v.reveal(&net, a, s).await).await.status;
    }
    assert_eq!(last, "convicted");
    assert!(net.hub.hub.state.nodes.is_suspended(&worker(&net)));
    let totals = ledger(&net).sum_check().await.unwrap();
    assert!(totals.is_balanced(), "{totals:?}");
}

async fn a_round_past_its_windows_is_decided_and_reassigned_without_any_poll(db: Db) {
    let (net, _) = network(&db, |c| c.rules.commit_window_ms = 1_000).await;
    let a = Validator::bonded(&net).await;
    let b = Validator::bonded(&net).await;
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let paperwork = the_case(&net).await;
    // The drawn checker commits and never reveals; the other never asks for work.
    let (first, second) = if a.assignments(&net).await.assignments.is_empty() {
        (&b, &a)
    } else {
        (&a, &b)
    };
    let (att, salt) = first.commit_to(&net, Verdict::Pass, None).await;
    let store = net.hub.hub.state.store.clone();
    let case = || {
        let store = store.clone();
        async move {
            let record = store.case(paperwork).await.unwrap().unwrap();
            stacknet_hub::validate::Case::from_record(&record).unwrap()
        }
    };
    wait_until("the unrevealed check is reassigned", WAIT_DEADLINE, || async {
        (case().await.rounds.len() == 2).then_some(())
    })
    .await;
    let reassigned = case().await;
    assert!(reassigned.rounds[0].decided);
    assert_eq!(reassigned.rounds[1].members[0].validator, second.key.public_key());
    wait_until(
        "the unanswered second check is decided",
        WAIT_DEADLINE,
        || async { (case().await.status == stacknet_hub::validate::Status::Inconclusive).then_some(()) },
    )
    .await;
    // Too late: the round was decided without this reveal.
    let msg = error_message(first.reveal(&net, &att, &salt).await, 409).await;
    assert!(msg.contains("decided without this reveal"), "{msg}");
    // Inconclusive holds nothing up: the task is filed.
    let node = &net.nodes[0];
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert_eq!(verdicts[0].status(), "settled", "{verdicts:?}");
}

async fn a_batch_logged_but_not_sampled_before_a_crash_is_sampled_at_the_restart(db: Db) {
    let (mut net, _) = network(&db, |_| {}).await;
    let v = Validator::bonded(&net).await;
    net.hub.hub.state.validation.crash_before_sampling(true);
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let store = net.hub.hub.state.store.clone();
    assert!(
        store.cases_about(None).await.unwrap().is_empty(),
        "not sampled yet"
    );
    let (size, root) = net.hub.hub.state.log.head();
    assert!(store.sampled_through().await.unwrap() < Some(size));
    net.restart_hub().await;
    let store = net.hub.hub.state.store.clone();
    assert_eq!(store.sampled_through().await.unwrap(), Some(size));
    let paperwork = the_case(&net).await;
    let record = store.case(paperwork).await.unwrap().unwrap();
    let case = stacknet_hub::validate::Case::from_record(&record).unwrap();
    // The draw a hub that had not stopped would have made: by the root of the log after the batch.
    assert_eq!(
        case.seed,
        stacknet_hub::validate::sample::sample_hash(&root, &paperwork)
    );
    assert_eq!(v.assignments(&net).await.assignments.len(), 1);
    // Sampled once: a second restart samples nothing again.
    net.restart_hub().await;
    assert_eq!(net.hub.hub.state.store.cases_about(None).await.unwrap().len(), 1);
}

/// A judge that passes everything, as a scripted validator's.
struct AlwaysPass;

impl stacknet_node::validator::Judge for AlwaysPass {
    fn judge(&self, _: &Assignment, _: &stacknet_protocol::PublicKey) -> Vec<CheckResult> {
        vec![CheckResult {
            name: "scripted".into(),
            passed: true,
            score_ppm: None,
            detail: String::new(),
            inconclusive: false,
            code: None,
            evidence: Vec::new(),
        }]
    }
}

async fn a_restarted_validator_reveals_what_it_committed_to_before(db: Db) {
    use stacknet_node::validator::{Validator as Runner, ValidatorOptions};
    let (net, _) = network(&db, |_| {}).await;
    let key = Validator::bonded(&net).await.key;
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let paperwork = the_case(&net).await;
    let options = ValidatorOptions {
        pending_file: Some(net.dir.path().join("validator.pending.json")),
        ..ValidatorOptions::default()
    };
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let mut before = Runner::new(key.clone(), hub.clone(), AlwaysPass, options.clone());
    assert_eq!(before.round().await.unwrap(), 1, "it commits");
    assert_eq!(before.pending(), 1);
    drop(before);
    // A run without the file cannot reveal; the restarted one with it does.
    let mut forgetful = Runner::new(key.clone(), hub.clone(), AlwaysPass, ValidatorOptions::default());
    assert_eq!(forgetful.round().await.unwrap(), 0);
    let mut after = Runner::new(key, hub, AlwaysPass, options.clone());
    assert_eq!(after.pending(), 1);
    assert_eq!(after.round().await.unwrap(), 1, "it reveals");
    assert_eq!(after.pending(), 0);
    let record = net.hub.hub.state.store.case(paperwork).await.unwrap().unwrap();
    let case = stacknet_hub::validate::Case::from_record(&record).unwrap();
    assert_eq!(case.status, stacknet_hub::validate::Status::Passed);
    let file: Value = serde_json::from_slice(&std::fs::read(options.pending_file.unwrap()).unwrap()).unwrap();
    assert_eq!(file["pending"], json!([]));
}

#[tokio::test]
async fn a_hello_offering_a_model_file_other_than_the_catalog_pin_is_refused() {
    use futures_util::SinkExt;
    use stacknet_protocol::wire::{self, ErrorCode, NodeMessage};
    use tokio_tungstenite::tungstenite::Message;
    let (net, _) = network(&Db::Sqlite, |_| {}).await;
    let (mut ws, nonce, hub) = super::gateway::connect(&net).await;
    let key = SecretKey::generate();
    let mut hello = super::gateway::hello(&key, hub, nonce);
    let other = Sha256Digest::of(b"another model file");
    hello.models = vec![ModelOffer {
        name: MODEL.to_owned(),
        workloads: vec![Workload::Chat],
        backend: "llama.cpp".to_owned(),
        model_sha256: Some(other),
        tool: None,
    }];
    let signed = Signed::sign(hello, &key).unwrap();
    let frame = wire::encode(&NodeMessage::Hello(Box::new(signed))).unwrap();
    ws.send(Message::Text(frame.into())).await.unwrap();
    let (code, message) = super::gateway::expect_error_and_close(&mut ws).await;
    assert_eq!(code, ErrorCode::InvalidRequest);
    let pin = pinned_sha256(MODEL).unwrap();
    assert_eq!(
        message,
        format!(
            "model offer refused: model {MODEL} is pinned to sha256 {}, not {}",
            pin.to_hex(),
            other.to_hex()
        )
    );
    let id = key.public_key().node_key_id();
    assert!(net.hub.hub.state.nodes.connected().iter().all(|n| n.id != id));
}

/// A batch that slashes a stake.
fn is_slash(batch: &[stacknet_ledger::Entry]) -> bool {
    batch
        .iter()
        .any(|e| matches!(e, stacknet_ledger::Entry::Transfer(t) if t.reason == Reason::Slash))
}

/// The ledger fails every try of the conviction's slash (more than the in-line retries): the
/// committee's decision stands (the paperwork is void at once) and the deadline ticker finishes the
/// money later, exactly once: one slash, one refund, the worker suspended.
async fn a_conviction_whose_slash_the_ledger_failed_is_finished_by_the_ticker_once(db: Db) {
    let (layer, failed) = super::money_faults::Flaky::layer(is_slash, 6, false);
    let (net, _) = network_layered(&db, |c| c.rules.commit_window_ms = 2_000, layer).await;
    let mut validators = Vec::new();
    for _ in 0..6 {
        validators.push(Validator::bonded(&net).await);
    }
    let id = worker(&net);
    let bond = posted(&net, AccountId::stake(id)).await;
    let stack_before = posted(&net, AccountId::stack(net.stack)).await;
    assert_eq!(chat(&net).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    assert_eq!(
        posted(&net, AccountId::stack(net.stack)).await,
        stack_before - PRICE_PER_REQUEST
    );
    convict_the_task(&net, &validators).await;
    assert!(
        failed.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "the slash failed in line"
    );
    let paperwork = the_case(&net).await;

    wait_until("the ticker slashed the worker", WAIT_DEADLINE, || async {
        (posted(&net, AccountId::stake(id)).await == bond - bond / 10).then_some(())
    })
    .await;
    wait_until("the conviction is settled", WAIT_DEADLINE, || async {
        let case = net.hub.hub.state.store.case(paperwork).await.unwrap().unwrap();
        (!case.open).then_some(())
    })
    .await;
    assert_eq!(failed.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(
        posted(&net, AccountId::stake(id)).await,
        bond - bond / 10,
        "slashed once"
    );
    assert_eq!(
        posted(&net, AccountId::stack(net.stack)).await,
        stack_before,
        "the capture refunded once"
    );
    assert!(net.hub.hub.state.nodes.is_suspended(&id));
    assert_eq!(net.hub.hub.state.store.slashes(Some(id)).await.unwrap().len(), 1);
    let totals = ledger(&net).sum_check().await.unwrap();
    assert!(totals.is_balanced(), "{totals:?}");
}
