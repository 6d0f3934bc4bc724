//! Video jobs through hub and node to an upstream that serves OpenAI's videos API (a scripted mock
//! that moves a job on each poll and writes real MP4 files): a job is created at once, reports the
//! node's progress, completes with the upstream's file, which is signed for and billed per second
//! (SQLite and PostgreSQL: any process sharing the database answers it); a running job cancelled
//! is deleted at the upstream and the seconds its progress covered are billed; a failed or
//! orphaned job (its node gone) fails with a reason and costs nothing; bad input is a 400 before
//! anything is held; a finished job survives a hub restart, a running one fails cleanly.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stacknet_api::output::mp4_description as describe;
use stacknet_ledger::AccountId;
use stacknet_node::backend::upstream::OpenAiUpstream;
use stacknet_node::config::UpstreamConfig;
use stacknet_protocol::Sha256Digest;
use stacknet_testkit::mock_upstream::videos::mp4;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::files::{multipart_files, post_multipart, RefusedUpload};
use super::money::{admin, books_balance, on_both_stores, posted, topup, Db};
use super::{client, paperwork_of};

const VIDEO: &str = "mock-video";
/// Micro-credits a second of video.
const PER_SECOND: i64 = 1_000;

async fn network(db: &Db) -> TestNetwork {
    network_with(db, |_| {}).await
}

async fn network_with(db: &Db, adjust: impl FnOnce(&mut stacknet_hub::HubConfig)) -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |config| {
        db.apply(config);
        adjust(config);
    })
    .await;
    add_node(&mut net).await;
    price_and_fund(&net).await;
    net
}

/// Videos priced per second, and the Stack funded.
async fn price_and_fund(net: &TestNetwork) {
    let priced = admin(
        net,
        "/prices",
        json!({"model": VIDEO, "input_per_mtok": "0", "output_per_mtok": "0", "per_request": "0",
               "per_unit": PER_SECOND.to_string()}),
    )
    .await;
    assert_eq!(priced.status(), 200, "{}", priced.text().await.unwrap());
    topup(net, 1_000_000).await;
}

/// A backend in front of the mock's videos API.
fn upstream(net: &TestNetwork) -> Arc<OpenAiUpstream> {
    let mut config = UpstreamConfig::new(net.upstream.base_url(), Vec::new());
    config.video_models = vec![VIDEO.to_owned()];
    Arc::new(OpenAiUpstream::new(&config).unwrap())
}

/// A node in front of the mock's videos API.
async fn add_node(net: &mut TestNetwork) {
    let backend = upstream(net);
    net.add_backend_node(backend).await;
}

/// An eight-second job that stays half done (the mock's `hang`), once it is; its id.
async fn half_done(net: &TestNetwork) -> String {
    let created: Value = create(
        net,
        &[("model", VIDEO), ("prompt", "hang on"), ("seconds", "8")],
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    wait_until("the job is half done", WAIT_DEADLINE, || async {
        (job(net, &id).await["progress"] == 50).then_some(())
    })
    .await;
    id
}

/// `POST /v1/videos` as OpenAI's SDK sends it: a multipart form.
async fn create(net: &TestNetwork, fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> reqwest::Response {
    let files: Vec<(&str, &str, &str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (*name, "reference.png", "image/png", *bytes))
        .collect();
    post_multipart(net, "videos", multipart_files(fields, &files)).await
}

async fn call(net: &TestNetwork, method: reqwest::Method, path: &str) -> reqwest::Response {
    client()
        .request(method, format!("{}/{path}", net.base_url()))
        .bearer_auth(&net.api_key)
        .send()
        .await
        .unwrap()
}

async fn job(net: &TestNetwork, id: &str) -> Value {
    call(net, reqwest::Method::GET, &format!("videos/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// A job of `prompt` (the mock's default length and size) created; its id.
async fn started(net: &TestNetwork, prompt: &str) -> String {
    let job: Value = create(net, &[("model", VIDEO), ("prompt", prompt)], &[])
        .await
        .json()
        .await
        .unwrap();
    job["id"].as_str().expect("a job id").to_owned()
}

/// Polls job `id` until its status is `status`.
async fn until(net: &TestNetwork, id: &str, status: &str) -> Value {
    wait_until(&format!("video {id} is {status}"), WAIT_DEADLINE, || async {
        let v = job(net, id).await;
        (v["status"] == status).then_some(v)
    })
    .await
}

fn stack_balance(net: &TestNetwork) -> AccountId {
    AccountId::stack(net.stack)
}

on_both_stores!(a_video_job_is_created_polled_downloaded_and_billed_per_second);

async fn a_video_job_is_created_polled_downloaded_and_billed_per_second(db: Db) {
    let net = network(&db).await;
    let before = posted(&net, stack_balance(&net)).await;
    let reference = stacknet_testkit::mock_upstream::images::png("a start", 0, 64, 64);
    let resp = create(
        &net,
        &[
            ("model", VIDEO),
            ("prompt", "a red kite"),
            ("seconds", "8"),
            ("size", "256x256"),
        ],
        &[("input_reference", &reference)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            created["object"].as_str(),
            created["status"].as_str(),
            created["seconds"].as_str()
        ),
        (Some("video"), Some("queued"), Some("8"))
    );
    let done = until(&net, &id, "completed").await;
    assert_eq!(
        (done["progress"].as_u64(), done["size"].as_str()),
        (Some(100), Some("256x256"))
    );
    // The node's progress was written on the way: a version of the job in progress, part done.
    let versions = net
        .hub
        .hub
        .state
        .store
        .doc_versions("video".to_owned(), id.clone())
        .await
        .unwrap();
    assert!(
        versions.iter().any(|d| {
            let j: Value = serde_json::from_str(&d.json).unwrap();
            j["status"] == "in_progress" && (1..100).contains(&j["progress"].as_u64().unwrap())
        }),
        "no progress was recorded"
    );
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(
        sent["input_reference"]["sha256"],
        Sha256Digest::of(&reference).to_string()
    );
    assert_eq!(
        (sent["seconds"].as_str(), sent["model"].as_str()),
        (Some("8"), Some(VIDEO))
    );

    let content = call(&net, reqwest::Method::GET, &format!("videos/{id}/content")).await;
    assert_eq!(content.status(), 200);
    assert_eq!(content.headers()["content-type"], "video/mp4");
    let file = content.bytes().await.unwrap();
    assert_eq!(file.as_ref(), mp4("a red kite", 8, 256, 256).unwrap().as_slice());
    assert_eq!(describe(&file), Some((256, 256, 16, 8000)));

    let pw = paperwork_of(&net, &done).await;
    assert_eq!(pw.body.usage.units, 8, "one unit a second");
    assert_eq!(pw.body.output_sha256, Sha256Digest::of(&file));
    net.hub.hub.state.writer.flush().await;
    assert_eq!(posted(&net, stack_balance(&net)).await, before - 8 * PER_SECOND);
    books_balance(&net).await;

    // Listed, newest first; a remix is a new job with the original's length, size and reference.
    let remixed: Value = client()
        .post(format!("{}/videos/{id}/remix", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(&json!({"prompt": "a blue kite"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(remixed["remixed_from_video_id"], id.as_str(), "{remixed}");
    let remix_id = remixed["id"].as_str().unwrap().to_owned();
    let again = until(&net, &remix_id, "completed").await;
    assert_eq!(
        (again["seconds"].as_str(), again["size"].as_str()),
        (Some("8"), Some("256x256"))
    );
    // It starts from the original's input reference too, which the shared file store kept.
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(sent["prompt"], "a blue kite");
    assert_eq!(
        sent["input_reference"]["sha256"],
        Sha256Digest::of(&reference).to_string()
    );
    let listed: Value = call(&net, reqwest::Method::GET, "videos?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], remix_id.as_str());
    assert_eq!(listed["has_more"], true);
    let rest: Value = call(&net, reqwest::Method::GET, &format!("videos?after={remix_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["data"][0]["id"], id.as_str());

    // Deleted: gone from the API.
    let deleted: Value = call(&net, reqwest::Method::DELETE, &format!("videos/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        deleted,
        json!({"id": id, "object": "video.deleted", "deleted": true})
    );
    assert_eq!(
        call(&net, reqwest::Method::GET, &format!("videos/{id}"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn bad_video_requests_are_refused_before_anything_is_held() {
    let net = network(&Db::Sqlite).await;
    let before = posted(&net, stack_balance(&net)).await;
    let cases: [RefusedUpload<'_>; 4] = [
        (&[("prompt", "a kite"), ("seconds", "5")], vec![], "seconds"),
        (&[("prompt", "a kite"), ("size", "100x100")], vec![], "size"),
        (&[("prompt", "")], vec![], "prompt"),
        (
            &[("prompt", "a kite")],
            vec![("input_reference", b"not an image")],
            "input_reference",
        ),
    ];
    for (extra, files, param) in cases {
        let mut fields = vec![("model", VIDEO)];
        fields.extend_from_slice(extra);
        let resp = create(&net, &fields, &files).await;
        assert_eq!(resp.status(), 400, "{param}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let unknown = create(
        &net,
        &[("model", "no-such-video-model"), ("prompt", "a kite")],
        &[],
    )
    .await;
    assert_eq!(unknown.status(), 404);
    let stranger = call(
        &net,
        reqwest::Method::GET,
        "videos/video_00000000000000000000000000000000",
    )
    .await;
    assert_eq!(stranger.status(), 404);
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    assert_eq!(posted(&net, stack_balance(&net)).await, before);
}

#[tokio::test]
async fn a_cancelled_job_is_deleted_upstream_and_bills_the_seconds_rendered() {
    let net = network(&Db::Sqlite).await;
    let before = posted(&net, stack_balance(&net)).await;
    let id = half_done(&net).await;
    let resp = call(&net, reqwest::Method::DELETE, &format!("videos/{id}")).await;
    assert_eq!(resp.status(), 200);
    wait_until("the upstream's job is deleted", WAIT_DEADLINE, || async {
        (!net.upstream.deleted_videos().is_empty()).then_some(())
    })
    .await;
    // Half of eight seconds rendered: four billed, by the node's paperwork of what it did.
    wait_until("the rendered seconds are billed", WAIT_DEADLINE, || async {
        net.hub.hub.state.writer.flush().await;
        (posted(&net, stack_balance(&net)).await == before - 4 * PER_SECOND).then_some(())
    })
    .await;
    assert_eq!(
        call(&net, reqwest::Method::GET, &format!("videos/{id}"))
            .await
            .status(),
        404
    );
    books_balance(&net).await;
}

#[tokio::test]
async fn a_failed_job_or_one_whose_node_vanishes_fails_cleanly_and_costs_nothing() {
    let mut net = network(&Db::Sqlite).await;
    let ledger = net.hub.hub.state.ledger.clone();
    let before = ledger.balance(stack_balance(&net)).await.unwrap();
    let failing = started(&net, "fail please").await;
    let failed = until(&net, &failing, "failed").await;
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the mock's renderer failed"),
        "{failed}"
    );
    let id = started(&net, "hang on").await;
    until(&net, &id, "in_progress").await;
    net.nodes.remove(0).kill().await;
    let orphaned = until(&net, &id, "failed").await;
    assert!(orphaned["error"]["message"].as_str().is_some(), "{orphaned}");
    wait_until("every hold is released", Duration::from_secs(20), || async {
        (ledger.balance(stack_balance(&net)).await.unwrap() == before).then_some(())
    })
    .await;
    books_balance(&net).await;
}

/// A hub that stops (as a crash: its jobs' tasks dropped, nothing written) leaves a running job with
/// a lease that lapses; the restarted hub reading it runs it again, and the node, which kept the
/// work going when it lost the hub, joins it to the new contract: the upstream renders it once, it
/// completes, and it is billed once. A finished job is served as before.
#[tokio::test]
async fn a_job_survives_a_hub_restart_the_node_resuming_it_and_it_is_billed_once() {
    let mut net = network_with(&Db::Sqlite, |config| config.video_lease_ms = 1_500).await;
    let done_id = started(&net, "a kite").await;
    until(&net, &done_id, "completed").await;
    net.hub.hub.state.writer.flush().await;
    let before = posted(&net, stack_balance(&net)).await;
    let running_id = started(&net, "a slowly drawn kite").await;
    until(&net, &running_id, "in_progress").await;
    net.hub.hub.state.videos.crash();
    net.restart_hub().await;
    let after = until(&net, &done_id, "completed").await;
    assert_eq!(after["progress"], 100);
    let content = call(&net, reqwest::Method::GET, &format!("videos/{done_id}/content")).await;
    assert_eq!(content.status(), 200);
    assert_eq!(describe(&content.bytes().await.unwrap()).map(|d| d.2), Some(8));

    let finished = until(&net, &running_id, "completed").await;
    assert_eq!(
        net.upstream.videos_created(),
        2,
        "the node resumed the upstream's job"
    );
    assert_eq!(net.upstream.deleted_videos(), Vec::<String>::new());
    billed_once(&net, &running_id, &finished, "a slowly drawn kite", before).await;
}

/// The same with the node gone too: the job is run again from its request, from the start.
#[tokio::test]
async fn a_job_whose_hub_and_node_both_stopped_is_run_again_from_the_start_and_billed_once() {
    let mut net = network_with(&Db::Sqlite, |config| config.video_lease_ms = 1_500).await;
    let before = posted(&net, stack_balance(&net)).await;
    let running_id = started(&net, "a stalled kite").await;
    until(&net, &running_id, "in_progress").await;
    net.hub.hub.state.videos.crash();
    net.nodes.remove(0).kill().await;
    net.restart_hub().await;
    add_node(&mut net).await;
    let finished = until(&net, &running_id, "completed").await;
    assert_eq!(net.upstream.videos_created(), 2, "created again upstream");
    billed_once(&net, &running_id, &finished, "a stalled kite", before).await;
}

/// Job `id` (`finished`, of `prompt`) delivered its video, and the Stack paid its 4 seconds once
/// since `before`, with no hold left open.
async fn billed_once(net: &TestNetwork, id: &str, finished: &Value, prompt: &str, before: i64) {
    let content = call(net, reqwest::Method::GET, &format!("videos/{id}/content")).await;
    assert_eq!(content.status(), 200);
    assert_eq!(
        content.bytes().await.unwrap().as_ref(),
        mp4(prompt, 4, 128, 128).unwrap().as_slice()
    );
    let pw = paperwork_of(net, finished).await;
    assert_eq!(pw.body.usage.units, 4);
    net.hub.hub.state.writer.flush().await;
    assert_eq!(
        posted(net, stack_balance(net)).await,
        before - 4 * PER_SECOND,
        "billed once"
    );
    let ledger = net.hub.hub.state.ledger.clone();
    wait_until("no hold is left open", Duration::from_secs(20), || async {
        let b = ledger.balance(stack_balance(net)).await.unwrap();
        (b.debits_pending.micros() == 0).then_some(())
    })
    .await;
    books_balance(net).await;
}

/// A job found orphaned after its work was billed (the hub stopped between billing the node's
/// paperwork and storing the video) is failed, not run and billed again.
#[tokio::test]
async fn an_orphaned_job_whose_work_was_billed_is_failed_not_run_twice() {
    use stacknet_hub::store::DocRecord;
    use stacknet_protocol::Timestamp;
    let net = network(&Db::Sqlite).await;
    let id = started(&net, "a kite").await;
    until(&net, &id, "completed").await;
    net.hub.hub.state.writer.flush().await;
    let balance = posted(&net, stack_balance(&net)).await;
    // What the document says when the hub stopped after billing and before storing the file.
    let store = &net.hub.hub.state.store;
    let last = store
        .doc_versions("video".into(), id.clone())
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut doc: Value = serde_json::from_str(&last.json).unwrap();
    doc["status"] = json!("in_progress");
    doc["progress"] = json!(75);
    doc["file_id"] = Value::Null;
    doc["paperwork"] = Value::Null;
    doc["owner"] = json!("a stopped hub");
    doc["lease_until"] = serde_json::to_value(Timestamp::now().plus_ms(-1_000)).unwrap();
    assert_eq!(doc["contracts"].as_array().map(Vec::len), Some(1), "{doc}");
    let orphaned = DocRecord {
        version: last.version + 1,
        json: doc.to_string(),
        created_at: Timestamp::now(),
        ..last
    };
    assert!(store.put_doc(orphaned).await.unwrap());
    let failed = until(&net, &id, "failed").await;
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("billed"), "{failed}");
    assert_eq!(net.upstream.videos_created(), 1, "not run again");
    assert_eq!(
        posted(&net, stack_balance(&net)).await,
        balance,
        "not billed again"
    );
}

#[tokio::test]
async fn a_node_claiming_more_seconds_than_its_progress_shows_is_not_paid() {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let honest = upstream(&net);
    // Every answer claims all eight seconds, whatever was rendered.
    let claim = stacknet_protocol::contract::Usage {
        input_tokens: 0,
        output_tokens: 0,
        units: 8,
    };
    let node = Arc::new(stacknet_testkit::fixtures::InflatedUsage::new(honest, claim));
    let i = net.add_backend_node(node).await;
    let node_key = net.nodes[i].node.node_key_id();
    price_and_fund(&net).await;
    let before = posted(&net, stack_balance(&net)).await;
    let id = half_done(&net).await;
    assert_eq!(
        call(&net, reqwest::Method::DELETE, &format!("videos/{id}"))
            .await
            .status(),
        200
    );
    // Eight seconds claimed where the progress covers four: the paperwork is refused, nothing billed.
    let record = net.hub.hub.state.nodes.record(&node_key).unwrap();
    wait_until("the claim is refused", WAIT_DEADLINE, || async {
        (record.refused_usage() == 1).then_some(())
    })
    .await;
    net.hub.hub.state.writer.flush().await;
    assert_eq!(posted(&net, stack_balance(&net)).await, before);
    books_balance(&net).await;
}
