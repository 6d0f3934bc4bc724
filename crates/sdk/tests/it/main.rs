//! The SDK against a real hub (hub + node + mock upstream on loopback): its client, its verifier
//! against tampered answers, paperwork and proofs, and its follower against a forked log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use stacknet_api::types::{SkillSpec, StatementQuery};
use stacknet_hub::log::MerkleLog;
use stacknet_protocol::merkle::{self, Hash};
use stacknet_protocol::{PublicKey, SecretKey};
use stacknet_sdk::follow::{Alarm, FollowError, Follower, Step};
use stacknet_sdk::verify::{self, Content, VerifyError};
use stacknet_sdk::{log_origin, Client};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;

fn chat() -> Value {
    json!({"model": MOCK_MODEL, "messages": [{"role": "user", "content": "hello"}]})
}

async fn topup(net: &TestNetwork, stack: stacknet_protocol::StackId) {
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/stacknet/v1/admin/stacks/{stack}/topup",
            net.hub.url()
        ))
        .bearer_auth(&net.admin_token)
        .json(&json!({"amount": "1000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_client_drives_a_hub_and_what_it_answers_verifies() {
    let net = TestNetwork::start(Script::text("verified words")).await;
    let hub = Client::new(&net.base_url()).unwrap().with_api_key(&net.api_key);
    let info = hub.hub_info().await.unwrap();
    assert_eq!(info.hub_key, net.hub.hub.state.hub_key.public_key());
    assert_eq!(hub.models().await.unwrap().data[0].id, MOCK_MODEL);

    // A skill published with the SDK, used from another Stack.
    let skill = hub
        .publish_skill(&SkillSpec {
            name: "sdk".into(),
            description: "published from Rust".into(),
            instructions: Some("Be exact.".into()),
            tools: Vec::new(),
            model: None,
            royalty_bps: 250,
            public: true,
        })
        .await
        .unwrap();
    let (other, other_key) = net.new_stack("user").await;
    topup(&net, other).await;
    let user = Client::new(&net.hub.url()).unwrap().with_api_key(&other_key);
    let mut body = chat();
    body["skills"] = json!([skill.id]);
    let answer = user.chat(&body).await.unwrap();
    assert!(answer.fingerprint().is_some());

    // The answer checks against its paperwork, and the paperwork against the log.
    let evidence = user.evidence(&answer).await.unwrap();
    let checked = verify::answer(&answer.content(), &evidence.paperwork, &info.hub_key).unwrap();
    assert_eq!(Some(checked.paperwork), answer.paperwork());
    assert_eq!(checked.fingerprint.fingerprint.skills, vec![skill.id]);
    let included = verify::inclusion(
        &evidence.paperwork,
        &evidence.inclusion,
        &evidence.checkpoint.note,
        &info.hub_key,
    )
    .unwrap();
    assert_eq!(included.checkpoint.size, evidence.checkpoint.size);

    // Refusals come back typed.
    let err = Client::new(&net.hub.url())
        .unwrap()
        .with_api_key("sk_wrong")
        .chat(&chat())
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(401), Some("invalid_api_key")));
    let statement = user.statement(&StatementQuery::default()).await.unwrap();
    assert_eq!(statement.stack, other);
    assert_eq!(hub.skill(skill.id).await.unwrap().usage, 1);
}

#[tokio::test]
async fn tampered_answers_paperwork_and_proofs_are_refused() {
    let net = TestNetwork::start(Script::text("the true answer")).await;
    let hub = Client::new(&net.hub.url()).unwrap().with_api_key(&net.api_key);
    let key = hub.hub_info().await.unwrap().hub_key;
    let answer = hub.chat(&chat()).await.unwrap();
    let evidence = hub.evidence(&answer).await.unwrap();
    assert!(verify::answer(&answer.content(), &evidence.paperwork, &key).is_ok());

    // Other content under the same proof.
    let mut altered = answer.0.clone();
    altered["choices"][0]["message"]["content"] = json!("a forged answer");
    let err = verify::answer(&Content::Whole(altered), &evidence.paperwork, &key).unwrap_err();
    assert!(matches!(err, VerifyError::Content { .. }), "{err}");
    // An attribution edited to credit another Stack.
    let mut altered = answer.0.clone();
    altered["attribution"]["stack"] = json!(stacknet_protocol::StackId::random());
    let err = verify::fingerprint(&Content::Whole(altered)).unwrap_err();
    assert!(matches!(err, VerifyError::Attribution(_)), "{err}");
    // A paperwork whose usage was edited: its signature fails.
    let mut pw = evidence.paperwork.clone();
    pw.body.usage.output_tokens += 1;
    let err = verify::answer(&answer.content(), &pw, &key).unwrap_err();
    assert!(matches!(err, VerifyError::Paperwork(_)), "{err}");
    // Under another hub key: the contract's signature fails.
    let err = verify::answer(
        &answer.content(),
        &evidence.paperwork,
        &SecretKey::generate().public_key(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Paperwork(_)), "{err}");
    // Another answer's paperwork.
    let second = hub.chat(&chat()).await.unwrap();
    let other = hub.evidence(&second).await.unwrap();
    let err = verify::answer(&answer.content(), &other.paperwork, &key).unwrap_err();
    assert!(matches!(err, VerifyError::OtherPaperwork { .. }), "{err}");

    // Proofs: the right one verifies; an edited path, another index, another key's checkpoint do not.
    let note = &other.checkpoint.note;
    let first_in = hub
        .inclusion(answer.paperwork().unwrap(), Some(other.checkpoint.size))
        .await
        .unwrap();
    assert!(verify::inclusion(&evidence.paperwork, &first_in, note, &key).is_ok());
    let mut bad = first_in.clone();
    bad.proof[0] = hex::encode([7u8; 32]);
    assert!(matches!(
        verify::inclusion(&evidence.paperwork, &bad, note, &key),
        Err(VerifyError::Log(_))
    ));
    let mut bad = first_in.clone();
    bad.leaf_index ^= 1;
    assert!(verify::inclusion(&evidence.paperwork, &bad, note, &key).is_err());
    assert!(
        verify::inclusion(&other.paperwork, &first_in, note, &key).is_err(),
        "another leaf"
    );
    let stranger = SecretKey::generate();
    assert!(verify::inclusion(&evidence.paperwork, &first_in, note, &stranger.public_key()).is_err());
}

/// A checkpoint note of a log of `leaves` leaves, signed as the hub `key` would.
fn forked_note(key: &SecretKey, leaves: u64, salt: &str) -> String {
    let leaves: Vec<Hash> = (0..leaves)
        .map(|i| merkle::leaf_hash(format!("{salt} {i}").as_bytes()))
        .collect();
    MerkleLog::from_leaves(leaves)
        .checkpoint(&log_origin(&key.public_key()), key)
        .unwrap()
        .note
}

#[tokio::test]
async fn a_follower_sees_the_log_grow_and_alarms_on_a_split_view() {
    let net = TestNetwork::start(Script::text("logged")).await;
    let hub = Client::new(&net.hub.url()).unwrap().with_api_key(&net.api_key);
    let key: PublicKey = hub.hub_info().await.unwrap().hub_key;
    let mut follower = Follower::new(hub.clone(), key);
    assert!(matches!(
        follower.poll().await.unwrap(),
        Step::First { size: 0, .. }
    ));
    for _ in 0..3 {
        hub.chat(&chat()).await.unwrap();
    }
    net.hub.hub.state.writer.flush().await;
    let grew = follower.poll().await.unwrap();
    assert!(matches!(grew, Step::Grew { from: 0, to: 3, .. }), "{grew:?}");
    assert_eq!(follower.poll().await.unwrap(), Step::Same { size: 3 });
    hub.chat(&chat()).await.unwrap();
    net.hub.hub.state.writer.flush().await;
    assert!(matches!(
        follower.poll().await.unwrap(),
        Step::Grew { from: 3, to: 4, .. }
    ));

    // The hub signs another log of a size already seen: a split view, caught without asking it.
    let hub_key = net.hub.hub.state.hub_key.clone();
    let fork = forked_note(&hub_key, 4, "forked");
    let err = follower.observe(&fork).await.unwrap_err();
    assert!(
        matches!(err, FollowError::Alarm(Alarm::SplitView { size: 4, .. })),
        "{err}"
    );
    // A larger forked log: the hub has no consistency proof from what the follower saw.
    let fork = forked_note(&hub_key, 9, "forked");
    let err = follower.observe(&fork).await.unwrap_err();
    assert!(
        matches!(
            err,
            FollowError::Alarm(Alarm::Inconsistent { from: 4, to: 9, .. })
        ),
        "{err}"
    );
    // A note not signed by the hub is refused as such.
    let err = follower
        .observe(&forked_note(&SecretKey::generate(), 2, "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FollowError::Alarm(Alarm::BadCheckpoint(_))),
        "{err}"
    );
    // The real log is still followed.
    assert_eq!(follower.poll().await.unwrap(), Step::Same { size: 4 });
}

#[tokio::test]
async fn two_checkpoints_of_one_size_with_different_roots_are_a_split_view_offline() {
    let key = SecretKey::generate();
    // Nothing listens there: a split view needs no call to the hub.
    let mut follower = Follower::new(Client::new("http://127.0.0.1:9").unwrap(), key.public_key());
    assert!(matches!(
        follower.observe(&forked_note(&key, 5, "a")).await.unwrap(),
        Step::First { size: 5, .. }
    ));
    assert_eq!(
        follower.observe(&forked_note(&key, 5, "a")).await.unwrap(),
        Step::Same { size: 5 }
    );
    let err = follower.observe(&forked_note(&key, 5, "b")).await.unwrap_err();
    assert!(
        matches!(err, FollowError::Alarm(Alarm::SplitView { size: 5, .. })),
        "{err}"
    );
}

#[tokio::test]
async fn a_follower_checks_the_node_key_bindings_every_checkpoint_commits_to() {
    let net = TestNetwork::start_with(Script::text("x"), |c| {
        c.rules.probation_tasks = 0;
        c.rules.new_sample_bps = 0;
        c.rules.established_sample_bps = 0;
    })
    .await;
    topup(&net, net.stack).await;
    let hub = Client::new(&net.hub.url()).unwrap().with_api_key(&net.api_key);
    let key = hub.hub_info().await.unwrap().hub_key;
    let mut follower = Follower::new(hub.clone(), key);
    assert!(matches!(
        follower.poll().await.unwrap(),
        Step::First { size: 0, .. }
    ));
    assert!(hub
        .checkpoint()
        .await
        .unwrap()
        .note
        .contains("\nstacknet-bindings 0 "));

    // A sale: the next checkpoint commits to one binding, which the follower fetches and checks.
    let node = &net.nodes[0];
    let seller = stacknet_node::settlement::HubClient::connect(&net.hub.url())
        .await
        .unwrap();
    let (proceeds, _) = net.new_stack("seller").await;
    let listing = seller
        .list(
            &node.key,
            None,
            stacknet_protocol::Amount::from_micros(1_000),
            proceeds,
        )
        .await
        .unwrap();
    hub.buy_key(&listing, &SecretKey::generate()).await.unwrap();
    assert_eq!(follower.poll().await.unwrap(), Step::Same { size: 0 });
    assert!(hub
        .checkpoint()
        .await
        .unwrap()
        .note
        .contains("\nstacknet-bindings 1 "));
    assert_eq!(hub.bindings(None).await.unwrap().len(), 1);

    // The same log with other bindings, signed by the hub: a split view of its bindings.
    let hub_key = net.hub.hub.state.hub_key.clone();
    let signed = |line: String| {
        MerkleLog::new()
            .checkpoint_with(&log_origin(&key), &hub_key, vec![line])
            .unwrap()
            .note
    };
    let other = stacknet_api::proof::bindings_extension(1, &[9u8; 32]);
    let err = follower.observe(&signed(other)).await.unwrap_err();
    assert!(
        matches!(err, FollowError::Alarm(Alarm::BindingsSplitView { count: 1, .. })),
        "{err}"
    );
    // A count of bindings the hub cannot show.
    let more = stacknet_api::proof::bindings_extension(2, &[9u8; 32]);
    let err = follower.observe(&signed(more)).await.unwrap_err();
    assert!(
        matches!(err, FollowError::Alarm(Alarm::BindingsInconsistent { .. })),
        "{err}"
    );
    assert_eq!(follower.poll().await.unwrap(), Step::Same { size: 0 });
}
