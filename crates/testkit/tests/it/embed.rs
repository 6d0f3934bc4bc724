//! The built-in embeddings backend (candle, all-MiniLM-L6-v2) with the real model, called through
//! the `Backend` trait as the node calls it: the vectors a client gets, what paperwork is told, and
//! the requests it refuses.
//!
//! The model is read from `$STACKNET_MODELS_DIR/all-minilm-l6-v2/` (a store that `stacknet models
//! pull all-minilm-l6-v2 --models-dir DIR` filled), so these tests are ignored by a bare `cargo test`;
//! `scripts/test.sh` runs them with `--include-ignored`, and without the variable they fail.
//! `embeddings_per_second` is the benchmark, which scripts/test.sh skips; run it by hand:
//! `STACKNET_MODELS_DIR=DIR cargo test --release -p stacknet-testkit --test it embed -- --ignored --nocapture`

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_node::backend::embed::{CandleEmbeddings, CANDLE_VERSION};
use stacknet_node::backend::multi::MultiBackend;
use stacknet_node::models::{self, ModelStore, Workload};
use stacknet_node::{Backend, BackendError, BackendOutcome, BackendTask, Cancellation};
use stacknet_protocol::ContractId;
use tokio::sync::mpsc;

const MODEL: &str = "all-minilm-l6-v2";
const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// The backend, loaded once for every test of this binary; fails when the models directory is not
/// configured (a test that did not run must not pass).
fn backend() -> &'static CandleEmbeddings {
    static BACKEND: OnceLock<CandleEmbeddings> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let dir = std::env::var_os("STACKNET_MODELS_DIR")
            .expect("STACKNET_MODELS_DIR is not set: this test needs the models (scripts/test.sh pulls them and sets it)");
        let spec = models::find(MODEL).expect("the catalog has all-minilm-l6-v2");
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        CandleEmbeddings::from_store(&ModelStore::new(dir), spec, threads).expect("the model loads")
    })
}

fn task(model: &str, workload: Workload, request: Value) -> BackendTask {
    BackendTask {
        contract: ContractId::random(),
        workload,
        model: model.to_owned(),
        request: Arc::new(request),
        files: Arc::default(),
        cancel: Cancellation::never(),
    }
}

/// Runs one embeddings request; returns the one chunk it produced and the outcome.
async fn run(backend: &dyn Backend, request: Value) -> Result<(Value, BackendOutcome), BackendError> {
    let (tx, mut rx) = mpsc::channel(4);
    let outcome = backend
        .execute(task(MODEL, Workload::Embedding, request), tx)
        .await?;
    let chunk = rx.recv().await.expect("one chunk");
    assert!(rx.recv().await.is_none(), "exactly one chunk");
    Ok((chunk, outcome))
}

fn floats(embedding: &Value) -> Vec<f32> {
    let numbers = embedding.as_array().expect("a float array");
    numbers
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// The vectors of a response, in `index` order (checked to be the order of `data`).
fn vectors(body: &Value) -> Vec<Vec<f32>> {
    let data = body["data"].as_array().expect("data");
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["object"], "embedding");
    }
    data.iter().map(|item| floats(&item["embedding"])).collect()
}

async fn embed(backend: &CandleEmbeddings, input: Value) -> Vec<Vec<f32>> {
    let (body, _) = run(backend, json!({"model": MODEL, "input": input}))
        .await
        .unwrap();
    vectors(&body)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn embeddings_are_384_unit_vectors_with_exact_usage_and_paperwork_info() {
    let backend = backend();
    let (body, outcome) = run(
        backend,
        json!({"model": MODEL, "input": ["Hello world.", "A second, longer input."]}),
    )
    .await
    .unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MODEL);
    for vector in vectors(&body) {
        assert_eq!(vector.len(), 384);
        let norm = dot(&vector, &vector).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // [CLS] hello world . [SEP] = 5; [CLS] a second , longer input . [SEP] = 8.
    assert_eq!(body["usage"], json!({"prompt_tokens": 13, "total_tokens": 13}));
    let usage = outcome.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens, usage.units), (13, 0, 0));
    assert_eq!(outcome.info.id, "candle");
    assert_eq!(outcome.info.version, CANDLE_VERSION);
    assert_eq!(outcome.info.model, MODEL);
    assert_eq!(outcome.info.model_sha256.unwrap().to_hex(), WEIGHTS_SHA256);
    assert!(outcome.warm);
    let offers = backend.models();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].name, MODEL);
    assert_eq!(offers[0].workloads, [Workload::Embedding]);
    assert_eq!(offers[0].backend, "candle");
    assert_eq!(offers[0].model_sha256, outcome.info.model_sha256);
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn similar_sentences_are_closer_than_unrelated_ones() {
    let backend = backend();
    let v = embed(
        backend,
        json!([
            "The cat sits on the mat.",
            "A kitten is resting on a rug.",
            "Stock markets fell sharply today."
        ]),
    )
    .await;
    let (similar, unrelated) = (dot(&v[0], &v[1]), dot(&v[0], &v[2]));
    assert!(
        similar > unrelated,
        "cos(similar) {similar} <= cos(unrelated) {unrelated}"
    );
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_batch_gives_the_vectors_of_single_requests() {
    let backend = backend();
    // Different lengths, so the batch pads and the mask must keep padding out of the mean.
    let texts = [
        "Short.",
        "A sentence of medium length about the weather.",
        "Rust is a systems language.",
    ];
    let batch = embed(backend, json!(texts)).await;
    for (text, batched) in texts.iter().zip(&batch) {
        let single = embed(backend, json!(text)).await.remove(0);
        let worst = single
            .iter()
            .zip(batched)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{text:?}: batch and single differ by {worst}");
    }
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn base64_carries_the_same_floats() {
    let backend = backend();
    let texts = json!(["First input.", "Second input, a little longer."]);
    let floats = embed(backend, texts.clone()).await;
    let request = json!({"model": MODEL, "input": texts, "encoding_format": "base64"});
    let (body, _) = run(backend, request).await.unwrap();
    for (i, expected) in floats.iter().enumerate() {
        let text = body["data"][i]["embedding"].as_str().expect("a base64 string");
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // The float form is the shortest decimal of each f32, so both forms carry the same bits.
        assert_eq!(&decoded, expected);
    }
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn bad_requests_are_refused_with_a_precise_message() {
    let backend = backend();
    let cases = [
        (
            // The shared validator's message: the hub refuses with the same words.
            json!({"model": MODEL, "input": []}),
            "input must not be empty",
        ),
        (
            json!({"model": MODEL, "input": [101, 2023, 102]}),
            "'input' as token ids is not supported by this model: send strings",
        ),
        (
            json!({"model": MODEL, "input": [[101, 2023], [102]]}),
            "'input' as token ids is not supported by this model: send strings",
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": 10}),
            "'dimensions' must be 384 for this model (it cannot shorten its vectors), not 10",
        ),
    ];
    for (request, message) in cases {
        let err = run(backend, request.clone()).await.unwrap_err();
        assert_eq!(err, BackendError::InvalidRequest(message.to_owned()), "{request}");
    }
    let (tx, _rx) = mpsc::channel(1);
    let err = backend
        .execute(task(MODEL, Workload::Chat, json!({})), tx)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BackendError::Unsupported {
            workload: Workload::Chat,
            ..
        }
    ));
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn the_same_request_gives_byte_identical_output() {
    let backend = backend();
    let request = json!({"model": MODEL, "input": ["Determinism matters to validators.", "Twice."]});
    let (first, _) = run(backend, request.clone()).await.unwrap();
    let (second, _) = run(backend, request).await.unwrap();
    assert_eq!(
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&second).unwrap()
    );
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn long_inputs_are_truncated_not_refused() {
    let backend = backend();
    let long = "word ".repeat(2_000);
    let (body, outcome) = run(backend, json!({"model": MODEL, "input": long}))
        .await
        .unwrap();
    assert_eq!(vectors(&body)[0].len(), 384);
    assert_eq!(outcome.usage.unwrap().input_tokens, 256);
}

#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_multi_backend_routes_embeddings_to_candle() {
    let backend = backend();
    let multi = MultiBackend::new(vec![Arc::new(backend.clone())]).unwrap();
    assert_eq!(multi.models(), backend.models());
    let (body, outcome) = run(&multi, json!({"model": MODEL, "input": "Routed."}))
        .await
        .unwrap();
    assert_eq!(vectors(&body)[0].len(), 384);
    assert_eq!(outcome.info.id, "candle");
}

/// Sentences of about ten words, all different.
fn sentences(n: usize) -> Vec<String> {
    let subjects = [
        "The old farmer",
        "A young engineer",
        "My neighbour",
        "The committee",
        "A tired student",
    ];
    let verbs = [
        "carefully repaired",
        "quietly discussed",
        "happily painted",
        "slowly examined",
    ];
    let objects = [
        "the broken wooden fence",
        "a strange new proposal",
        "the small red boat",
    ];
    (0..n)
        .map(|i| {
            let s = subjects[i % subjects.len()];
            let v = verbs[(i / subjects.len()) % verbs.len()];
            let o = objects[(i / 7) % objects.len()];
            format!("{s} {v} {o} near the river on day {i}.")
        })
        .collect()
}

/// Embeddings per second, single requests and batches of 32 (a benchmark: prints, asserts nothing
/// about speed).
#[tokio::test]
#[ignore = "benchmark: run by hand with --release --ignored --nocapture"]
async fn embeddings_per_second() {
    let backend = backend();
    let texts = sentences(320);
    // Warm up the allocator and the kernels' dispatch.
    embed(backend, json!(texts[..32])).await;
    let started = Instant::now();
    for text in &texts[..100] {
        embed(backend, json!(text)).await;
    }
    let single = 100.0 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for batch in texts.chunks(32) {
        embed(backend, json!(batch)).await;
    }
    let batched = texts.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "embeddings/s on {} threads: {single:.1} single (~10 words each), {batched:.1} in batches of 32",
        backend.threads()
    );
}
