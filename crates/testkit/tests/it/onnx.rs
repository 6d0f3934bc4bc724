//! The built-in ONNX models on ONNX Runtime, with the real models and the real runtime, through hub
//! and node as a client calls them:
//!
//! - the Piper voice speaks every format it writes, Whisper hears its speech back (word error rate at
//!   most 10%), the same request gives the same bytes (a validator can re-run it), `speed` shortens
//!   it, and what it cannot do is refused by name;
//! - PP-OCR reads an image with rendered text (PNG and JPEG) through chat, streamed or whole, images
//!   given inline or fetched by the node, with usage by the documented rule; a request it cannot read
//!   is the client's error, named, and moves no money;
//! - the terrain model generates images of the size asked, the same bytes for the same seed and
//!   others for another, and bad requests cost nothing; it edits and renders MP4 videos the same
//!   for the same seed.
//!
//! The models are read from `$STACKNET_MODELS_DIR` (`stacknet models pull onnxruntime
//! piper-en-us-joe-medium pp-ocrv6-tiny terrain-diffusion-128 whisper-tiny-en`), phonemes come from
//! Debian's `espeak-ng`;
//! `scripts/test.sh` provides them all, so a bare `cargo test` ignores these tests.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_ledger::AccountId;
use stacknet_node::backend::image::Rgb;
use stacknet_node::backend::multi::MultiBackend;
use stacknet_node::backend::ocr::Ocr;
use stacknet_node::backend::onnx::Runtime;
use stacknet_node::backend::piper::PiperVoice;
use stacknet_node::backend::terrain::Terrain;
use stacknet_node::fetch::{FetchPolicy, Fetcher};
use stacknet_node::models::{self, ModelStore};
use stacknet_node::{Backend, BackendError, BackendTask, Cancellation};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::ContractId;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use crate::hub::client;
use crate::transcribe::{whisper, word_error_rate};

const VOICE: &str = "piper-en-us-joe-medium";
const OCR: &str = "pp-ocrv6-tiny";
const TERRAIN: &str = "terrain-diffusion-128";
/// What the fixtures say (rendered by Pillow's default font, 32 px, black on white).
const TWO_LINES: &str = "Stacknet reads text in images.\nInvoice 2026-12-01 total 42.50";
const TWO_LINES_PNG: &[u8] = include_bytes!("fixtures/two-lines.png");
const TWO_LINES_JPG: &[u8] = include_bytes!("fixtures/two-lines.jpg");

fn store() -> ModelStore {
    let dir = std::env::var_os("STACKNET_MODELS_DIR").expect(
        "STACKNET_MODELS_DIR is not set: this test needs the models (scripts/test.sh pulls them and sets it)",
    );
    ModelStore::new(dir)
}

fn runtime() -> &'static Runtime {
    Runtime::from_store(&store()).expect("onnxruntime is pulled and loads")
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The voice, loaded once for every test of this binary.
fn piper() -> PiperVoice {
    static VOICE_MODEL: OnceLock<PiperVoice> = OnceLock::new();
    VOICE_MODEL
        .get_or_init(|| {
            let store = store();
            let spec = models::find(VOICE).expect("the catalog has the voice");
            let dir = store.path_of(spec).expect("the voice is pulled");
            PiperVoice::load(runtime(), &dir, spec, threads(), None, false).expect("the voice loads")
        })
        .clone()
}

#[test]
#[ignore = "needs onnxruntime and the Piper voice (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
fn a_voice_without_its_phonemizer_is_refused_at_start() {
    let store = store();
    let spec = models::find(VOICE).expect("the catalog has the voice");
    let dir = store.path_of(spec).expect("the voice is pulled");
    let missing = Some(std::path::PathBuf::from("/nonexistent/espeak-ng"));
    let err = PiperVoice::load(runtime(), &dir, spec, 1, missing, false).unwrap_err();
    assert!(err.to_string().contains("apt install espeak-ng"), "{err}");
}

fn ocr_with(images: Fetcher) -> Ocr {
    let store = store();
    let spec = models::find(OCR).expect("the catalog has the OCR model");
    let dir = store.path_of(spec).expect("the OCR model is pulled");
    Ocr::load(runtime(), &dir, spec, threads(), images).expect("the OCR model loads")
}

fn ocr() -> Ocr {
    static OCR_MODEL: OnceLock<Ocr> = OnceLock::new();
    OCR_MODEL
        .get_or_init(|| ocr_with(Fetcher::new(FetchPolicy::default()).unwrap()))
        .clone()
}

async fn network(backends: Vec<Arc<dyn Backend>>) -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(MultiBackend::new(backends).unwrap()))
        .await;
    net
}

async fn post(net: &TestNetwork, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/{path}", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs onnxruntime, the Piper voice, whisper-tiny-en (STACKNET_MODELS_DIR), espeak-ng, lame, flac and opusenc; scripts/test.sh runs it"]
async fn the_piper_voice_speaks_every_format_and_whisper_hears_it_back() {
    let net = network(vec![Arc::new(piper()), Arc::new(whisper())]).await;
    let said = "Please open the window and let the fresh air in. The children are playing in the garden.";
    let request =
        |format: &str| json!({"model": VOICE, "input": said, "voice": "alloy", "response_format": format});
    let resp = post(&net, "audio/speech", &request("wav")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let wav = resp.bytes().await.unwrap().to_vec();
    let length = stacknet_api::audio::probe(wav.clone(), Some("wav"))
        .unwrap()
        .duration_ms;
    assert!((3_000..15_000).contains(&length), "{length} ms");

    let form = crate::hub::files::multipart(
        &[("model", "whisper-tiny-en"), ("response_format", "text")],
        ("file", "speech.wav", "audio/wav", &wav),
    );
    let heard = crate::hub::files::post_multipart(&net, "audio/transcriptions", form)
        .await
        .text()
        .await
        .unwrap();
    let wer = word_error_rate(said, &heard);
    assert!(wer <= 0.10, "WER {wer:.2}: heard {heard:?}");

    // Deterministic: the same request, the same bytes.
    let again = post(&net, "audio/speech", &request("wav"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(again.to_vec(), wav);

    for (format, content_type, hint) in [
        ("mp3", "audio/mpeg", "mp3"),
        ("flac", "audio/flac", "flac"),
        ("opus", "audio/ogg", "ogg"),
    ] {
        let resp = post(&net, "audio/speech", &request(format)).await;
        assert_eq!(resp.status(), 200, "{format}");
        assert_eq!(resp.headers()["content-type"], content_type);
        let info = stacknet_api::audio::probe(resp.bytes().await.unwrap().to_vec(), Some(hint))
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert!(
            info.duration_ms.abs_diff(length) * 10 < length,
            "{format}: {} ms",
            info.duration_ms
        );
    }
    let pcm = post(&net, "audio/speech", &request("pcm"))
        .await
        .bytes()
        .await
        .unwrap();
    let pcm_ms = pcm.len() as u64 / 2 * 1000 / 24_000;
    assert!(
        pcm.len() % 2 == 0 && pcm_ms.abs_diff(length) < 50,
        "{pcm_ms} ms against {length} ms"
    );

    // Twice the speed: about half as long.
    let mut fast = request("wav");
    fast["speed"] = json!(2.0);
    let fast = post(&net, "audio/speech", &fast)
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let fast_ms = stacknet_api::audio::probe(fast, Some("wav")).unwrap().duration_ms;
    assert!(
        fast_ms * 10 < length * 7,
        "{fast_ms} ms at speed 2 against {length} ms"
    );

    // What it cannot do: refused by name, nothing charged.
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    let aac = post(&net, "audio/speech", &request("aac")).await;
    assert_eq!(aac.status(), 400);
    assert!(aac.text().await.unwrap().contains("aac cannot be written"));
    let mut unknown = request("wav");
    unknown["voice"] = json!("robot");
    let resp = post(&net, "audio/speech", &unknown).await;
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("is not a voice of piper-en-us-joe-medium"));
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
}

fn data_url(content_type: &str, bytes: &[u8]) -> String {
    format!(
        "data:{content_type};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn read_request(urls: &[String]) -> Value {
    let mut content = vec![json!({"type": "text", "text": "What does this say?"})];
    content.extend(
        urls.iter()
            .map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
    );
    json!({"model": OCR, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
#[ignore = "needs onnxruntime and pp-ocrv6-tiny (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn the_ocr_model_reads_rendered_text_through_chat() {
    let net = network(vec![Arc::new(ocr())]).await;
    let png = data_url("image/png", TWO_LINES_PNG);
    let resp = post(
        &net,
        "chat/completions",
        &read_request(std::slice::from_ref(&png)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], TWO_LINES, "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    // Input: the text part's 5 words and marks, and 85 for the image; output: its words and marks.
    assert_eq!(answer["usage"]["prompt_tokens"], 5 + 85);
    assert_eq!(answer["usage"]["completion_tokens"], 16);

    // A JPEG of the same, and two images at once: each one's text, a blank line between.
    let jpg = data_url("image/jpeg", TWO_LINES_JPG);
    let both: Value = post(&net, "chat/completions", &read_request(&[png.clone(), jpg]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        both["choices"][0]["message"]["content"],
        format!("{TWO_LINES}\n\n{TWO_LINES}"),
        "{both}"
    );

    // Streamed, and cut at max_tokens.
    let mut short = read_request(std::slice::from_ref(&png));
    short["max_tokens"] = json!(3);
    short["stream"] = json!(true);
    let events = post(&net, "chat/completions", &short).await.text().await.unwrap();
    let chunks: Vec<Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Stacknet reads text");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));
}

#[tokio::test]
#[ignore = "needs onnxruntime and pp-ocrv6-tiny (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn what_the_ocr_model_cannot_read_is_refused_by_name_and_costs_nothing() {
    let net = network(vec![Arc::new(ocr())]).await;
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    let gif = data_url("image/gif", b"GIF89a\x01\x00\x01\x00");
    let cut = data_url("image/png", &TWO_LINES_PNG[..200]);
    let text_only = json!({"model": OCR, "messages": [{"role": "user", "content": "What does this say?"}]});
    for (body, says) in [
        (read_request(&[gif]), "not a PNG or JPEG image"),
        (read_request(&[cut]), "cannot be decoded"),
        (text_only, "no image_url part"),
        (read_request(&["http://10.0.0.7/page.png".to_owned()]), "private"),
    ] {
        let resp = post(&net, "chat/completions", &body).await;
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {err}");
    }
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
}

/// A local server with the fixture at `/two-lines.png`.
async fn image_site() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/two-lines.png",
        get(|| async { ([(header::CONTENT_TYPE, "image/png")], TWO_LINES_PNG) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn run(ocr: &Ocr, request: Value) -> Result<Vec<Value>, BackendError> {
    let task = BackendTask {
        contract: ContractId::random(),
        workload: Workload::Chat,
        model: OCR.to_owned(),
        request: Arc::new(request),
        files: Arc::default(),
        cancel: Cancellation::never(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(c) = rx.recv().await {
            all.push(c);
        }
        all
    });
    ocr.execute(task, tx).await?;
    Ok(collect.await.unwrap())
}

#[tokio::test]
#[ignore = "needs onnxruntime and pp-ocrv6-tiny (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn images_by_url_are_fetched_by_the_node_through_the_ssrf_safe_fetcher() {
    let site = image_site().await;
    let url = format!("http://{site}/two-lines.png");
    let allowed = ocr_with(Fetcher::with_test_allowlist(FetchPolicy::default(), vec![site]).unwrap());
    let chunks = run(&allowed, read_request(std::slice::from_ref(&url)))
        .await
        .unwrap();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, TWO_LINES);
    // The node's own fetcher refuses the same local address, by class.
    let err = run(&ocr(), read_request(&[url])).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidRequest(m) if m.contains("loopback")),
        "{err:?}"
    );
}

fn terrain() -> Terrain {
    let store = store();
    let spec = models::find(TERRAIN).expect("the catalog has the terrain model");
    let path = store.path_of(spec).expect("the terrain model is pulled");
    Terrain::load(runtime(), &path, spec, threads()).expect("the terrain model loads")
}

/// The images of an answer, as PNG bytes.
fn images_of(answer: &Value) -> Vec<Vec<u8>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            base64::engine::general_purpose::STANDARD
                .decode(d["b64_json"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs onnxruntime and terrain-diffusion-128 (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn the_terrain_model_gives_the_same_bytes_for_the_same_seed_and_others_for_another() {
    let net = network(vec![Arc::new(terrain())]).await;
    let ask = |seed: u64, n: u64, size: &str| {
        json!({"model": TERRAIN, "prompt": "a mountain lake", "n": n, "size": size, "seed": seed,
            "response_format": "b64_json"})
    };
    let resp = post(&net, "images/generations", &ask(7, 2, "256x256")).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert!(
        answer["paperwork"].as_str().unwrap().starts_with("pw_"),
        "{answer}"
    );
    let two = images_of(&answer);
    assert_eq!(two.len(), 2);
    for png in &two {
        let img = Rgb::decode(png).unwrap();
        assert_eq!((img.width, img.height), (256, 256));
    }
    assert_ne!(two[0], two[1], "two images of one request differ");

    // The same seed: the same bytes (a validator re-running the task gets them); image i of seed s
    // is image 0 of seed s + i; another seed, another image.
    let again = images_of(
        &post(&net, "images/generations", &ask(7, 1, "256x256"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(again[0], two[0]);
    let next = images_of(
        &post(&net, "images/generations", &ask(8, 1, "256x256"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(next[0], two[1]);
    let wide = images_of(
        &post(&net, "images/generations", &ask(7, 1, "1792x1024"))
            .await
            .json()
            .await
            .unwrap(),
    );
    let img = Rgb::decode(&wide[0]).unwrap();
    assert_eq!((img.width, img.height), (1792, 1024));

    // Without a seed the prompt seeds it: the same prompt, the same image.
    let unseeded = json!({"model": TERRAIN, "prompt": "a mountain lake"});
    let a = images_of(
        &post(&net, "images/generations", &unseeded)
            .await
            .json()
            .await
            .unwrap(),
    );
    let b = images_of(
        &post(&net, "images/generations", &unseeded)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(Rgb::decode(&a[0]).unwrap().width, 128);

    // Bad input: a 400 naming the field, and nothing charged.
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    let long = "x".repeat(32_001);
    for (body, param) in [
        (ask(7, 1, "100x100"), "size"),
        (ask(7, 11, "256x256"), "n"),
        (json!({"model": TERRAIN, "prompt": long}), "prompt"),
        (
            json!({"model": TERRAIN, "prompt": "p", "response_format": "base64"}),
            "response_format",
        ),
        (
            json!({"model": TERRAIN, "prompt": "p", "output_format": "jpeg"}),
            "prompt",
        ),
    ] {
        let resp = post(&net, "images/generations", &body).await;
        assert_eq!(resp.status(), 400, "{param}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
    }
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
}

#[tokio::test]
#[ignore = "needs onnxruntime and terrain-diffusion-128 (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn the_terrain_model_edits_and_renders_videos_the_same_for_the_same_seed() {
    use stacknet_api::output::mp4_description as describe;
    use stacknet_api::request::image_edit::{FileRef, ImageEdit};
    use stacknet_api::request::video::VideoRequest;

    let terrain = terrain();
    let start = stacknet_testkit::mock_upstream::images::png("a start", 0, 200, 150);
    let edit = |seed: u64| ImageEdit {
        prompt: "a mountain lake".to_owned(),
        image: FileRef {
            sha256: stacknet_protocol::Sha256Digest::of(&start),
            size: start.len() as u64,
            content_type: "image/png".to_owned(),
        },
        mask: None,
        n: 1,
        size: Some("256x256".to_owned()),
        seed: Some(seed),
        output_format: None,
    };
    let never = Cancellation::never();
    let run = |seed: u64, mask: Option<Vec<u8>>| {
        let (terrain, request, start) = (terrain.clone(), edit(seed), start.clone());
        async move {
            let never = Cancellation::never();
            terrain
                .edit(&request, start.into(), mask.map(Into::into), &never)
                .await
                .unwrap()
                .remove(0)
        }
    };
    let a = run(5, None).await;
    assert_eq!(Rgb::decode(&a).unwrap().width, 256);
    assert_eq!(run(5, None).await, a, "the same seed, the same edit");
    assert_ne!(run(6, None).await, a, "another seed, another edit");
    // A mask opaque everywhere keeps the whole upload: the seed no longer matters.
    let keep_all = stacknet_testkit::fixtures::mask_png(200, 150, |_, _| false);
    assert_eq!(run(5, Some(keep_all.clone())).await, run(6, Some(keep_all)).await);

    let video = |seed: u64| VideoRequest {
        prompt: "a mountain lake".to_owned(),
        seconds: 4,
        size: Some("128x128".to_owned()),
        seed: Some(seed),
        input_reference: None,
        remix_of: None,
    };
    let (progress, mut seen) = tokio::sync::mpsc::channel(64);
    let made = terrain.video(&video(3), None, &progress, &never).await.unwrap();
    let file = made.file.unwrap();
    assert_eq!(made.seconds, 4);
    assert_eq!(describe(&file), Some((128, 128, 32, 4000)));
    let mut percents = Vec::new();
    while let Ok(chunk) = seen.try_recv() {
        percents.push(chunk["progress"].as_u64().unwrap());
    }
    assert!(
        percents.windows(2).all(|w| w[0] < w[1]) && percents.last() == Some(&100),
        "{percents:?}"
    );
    let again = terrain.video(&video(3), None, &progress, &never).await.unwrap();
    assert_eq!(again.file.unwrap(), file, "the same seed, the same video");
    let other = terrain.video(&video(4), None, &progress, &never).await.unwrap();
    assert_ne!(other.file.unwrap(), file);
    // Cancelled before it starts: nothing rendered, nothing to bill, no file.
    let (cancel, cancelled) = Cancellation::pair();
    cancel.cancel();
    let none = terrain
        .video(&video(3), None, &progress, &cancelled)
        .await
        .unwrap();
    assert_eq!((none.seconds, none.file.is_none()), (0, true));
    let too_big = VideoRequest {
        size: Some("720x1280".to_owned()),
        ..video(3)
    };
    assert!(matches!(
        terrain.video(&too_big, None, &progress, &never).await,
        Err(BackendError::InvalidRequest(_))
    ));
}

/// The hub keeps a terrain task's request and files for validators; a validator holding the model
/// runs it again (M1) and passes it, byte for byte, and passes a copy off by a few levels on a few
/// pixels (another CPU's arithmetic); it fails another seed's picture (M1) and a picture of another
/// size than asked (M0, the terms), and without the model, or with only the files' hashes to
/// compare a different replay against, it cannot decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs onnxruntime and terrain-diffusion-128 (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_validator_runs_a_terrain_task_again_and_fails_a_picture_the_seed_does_not_make() {
    use stacknet_api::output::files_digest;
    use stacknet_api::types::{Assignment, Round};
    use stacknet_node::validator::media::{M0, M1};
    use stacknet_node::validator::{verdict, Checker, Judge, SharedReplayer};
    use stacknet_protocol::attestation::{CheckResult, Verdict};
    use stacknet_protocol::{Sha256Digest, Signed, Timestamp};

    let model = terrain();
    let net = network(vec![Arc::new(model.clone())]).await;
    let request =
        json!({"model": TERRAIN, "prompt": "a mountain lake", "n": 2, "size": "256x256", "seed": 7});
    let resp = post(&net, "images/generations", &request).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let paperwork = crate::hub::paperwork_of(&net, &answer).await;
    let id = paperwork.id().unwrap();
    let kept = net
        .hub
        .hub
        .state
        .store
        .kept_task(id)
        .await
        .unwrap()
        .expect("the hub kept the task");
    assert_eq!(kept.output.as_array().map(Vec::len), Some(2), "{}", kept.output);
    let hub = net.hub.hub.state.hub_key.public_key();
    let node_key = net.nodes[0].key.clone();

    // The assignment for `files` (each kept with its bytes, or its hash only), its paperwork re-signed
    // by the node as a node claiming them would.
    let assignment = |files: &[Vec<u8>], bytes: bool| {
        let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let output = stacknet_api::types::kept_files(&refs, bytes);
        let mut body = paperwork.body.clone();
        let hashes: Vec<Sha256Digest> = files.iter().map(|f| Sha256Digest::of(f)).collect();
        body.output_sha256 = files_digest(&hashes).unwrap();
        let signed = Signed::sign(body, &node_key).unwrap();
        Assignment {
            paperwork_id: signed.id().unwrap(),
            paperwork: signed,
            round: Round::Check,
            request: kept.request.clone(),
            output,
            output_tokens: None,
            required_model_sha256: None,
            commit_by: Timestamp::now(),
        }
    };
    let judge =
        |checker: Checker, a: Assignment| tokio::task::spawn_blocking(move || checker.judge(&a, &hub));
    let with_model = Checker {
        media: vec![Arc::new(model.clone()) as SharedReplayer],
        ..Checker::default()
    };
    let decided = |results: &[CheckResult], code: &str| {
        results
            .iter()
            .find(|r| r.name == code)
            .map(|r| (r.passed, r.inconclusive, r.detail.clone()))
    };

    // What the hub kept, as the hub assigns it: the same bytes.
    let honest = Assignment {
        paperwork_id: id,
        paperwork: paperwork.clone(),
        round: Round::Check,
        request: kept.request.clone(),
        output: kept.output.clone(),
        output_tokens: None,
        required_model_sha256: None,
        commit_by: Timestamp::now(),
    };
    let results = judge(with_model.clone(), honest.clone()).await.unwrap();
    assert_eq!(verdict(&results), Verdict::Pass, "{results:#?}");
    assert!(
        decided(&results, M1).unwrap().2.contains("byte for byte"),
        "{results:#?}"
    );
    let files = images_of(&answer);

    // A few pixels a few levels off: the noise of another CPU, still a pass.
    let mut noisy = Rgb::decode(&files[0]).unwrap();
    for px in noisy.data.chunks_exact_mut(3).take(40) {
        px[0] = px[0].saturating_add(3);
    }
    let noisy = vec![noisy.encode_png().unwrap(), files[1].clone()];
    assert_ne!(noisy[0], files[0]);
    let results = judge(with_model.clone(), assignment(&noisy, true)).await.unwrap();
    assert_eq!(verdict(&results), Verdict::Pass, "{results:#?}");
    assert!(
        decided(&results, M1).unwrap().2.contains("numerical noise"),
        "{results:#?}"
    );

    // Another seed's pictures, of the size asked: only the replay can tell, and it does.
    let other = model
        .generate(
            &stacknet_api::request::image_generation::validate(
                json!({"model": TERRAIN, "prompt": "x", "n": 2, "size": "256x256", "seed": 99}),
            )
            .unwrap()
            .1,
            &Cancellation::never(),
        )
        .await
        .unwrap();
    let results = judge(with_model.clone(), assignment(&other, true)).await.unwrap();
    assert_eq!(verdict(&results), Verdict::Fail, "{results:#?}");
    let failed = results.iter().find(|r| !r.passed).unwrap();
    assert_eq!(failed.code.as_deref(), Some(M1), "{results:#?}");

    // One picture at the model's own 128 x 128 for the 256 x 256 asked: the terms, before any replay.
    let small_img = Rgb::decode(&files[1]).unwrap().resize(128, 128);
    let small = vec![files[0].clone(), small_img.encode_png().unwrap()];
    let results = judge(with_model.clone(), assignment(&small, true)).await.unwrap();
    assert_eq!(verdict(&results), Verdict::Fail, "{results:#?}");
    let failed = results.iter().find(|r| !r.passed).unwrap();
    assert_eq!(failed.code.as_deref(), Some(M0), "{results:#?}");
    assert!(failed.detail.contains("128x128"), "{results:#?}");

    // Hashes only: the honest files still replay byte for byte, a different one cannot be judged.
    let results = judge(with_model.clone(), assignment(&files, false))
        .await
        .unwrap();
    assert_eq!(
        verdict(&results),
        Verdict::Inconclusive,
        "M0 needs the bytes: {results:#?}"
    );
    assert!(decided(&results, M1).unwrap().0, "{results:#?}");
    let results = judge(with_model, assignment(&other, false)).await.unwrap();
    let m1 = decided(&results, M1).unwrap();
    assert!(m1.1 && m1.2.contains("only its hash"), "{results:#?}");

    // No model: nothing to replay with.
    let results = judge(Checker::default(), honest).await.unwrap();
    assert_eq!(verdict(&results), Verdict::Inconclusive, "{results:#?}");
    assert!(decided(&results, M1).unwrap().1, "{results:#?}");
}
