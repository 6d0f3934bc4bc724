//! The built-in llama.cpp backend with the real SmolLM2 model, through a hub and a node.
//! The model comes from STACKNET_MODELS_DIR (scripts/test.sh pulls it there once), so these tests are
//! ignored by a bare `cargo test`; run with `--include-ignored` and without the variable, they fail.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use stacknet_node::backend::llama::{LlamaChat, LlamaConfig};
use stacknet_node::models::{self, ModelStore};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::Signed;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use crate::hub::{post_chat, sse_events};

mod scoring;

const MODEL: &str = "smollm2-135m-instruct";

fn model_config(context_tokens: u32) -> LlamaConfig {
    let dir = std::env::var_os("STACKNET_MODELS_DIR").expect(
        "STACKNET_MODELS_DIR is not set: this test needs the models (scripts/test.sh pulls them and sets it)",
    );
    let spec = models::find(MODEL).unwrap();
    let path = ModelStore::new(dir)
        .path_of(spec)
        .expect("the model is pulled into STACKNET_MODELS_DIR");
    let sha = spec.files[0].sha256.parse().unwrap();
    let mut config = LlamaConfig::new(MODEL, path, sha);
    config.context_tokens = context_tokens;
    config
}

/// One loaded model for the whole test binary: loading takes time and memory.
fn shared_model() -> Arc<LlamaChat> {
    static MODEL_BACKEND: OnceLock<Arc<LlamaChat>> = OnceLock::new();
    MODEL_BACKEND
        .get_or_init(|| Arc::new(LlamaChat::load(model_config(512)).unwrap()))
        .clone()
}

async fn network() -> TestNetwork {
    let backend = shared_model();
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(backend).await;
    net
}

fn question(extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL, "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn the_real_model_answers_paris_deterministically_streamed_or_not() {
    let net = network().await;
    let first: Value = post_chat(&net, &question(json!({}))).await.json().await.unwrap();
    let text = first["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(first["choices"][0]["finish_reason"], "stop");
    let second: Value = post_chat(&net, &question(json!({}))).await.json().await.unwrap();
    assert_eq!(
        second["choices"][0]["message"]["content"],
        text.as_str(),
        "greedy decoding is byte-identical"
    );
    let usage = &first["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);

    let events = sse_events(
        &post_chat(&net, &question(json!({"stream": true})))
            .await
            .text()
            .await
            .unwrap(),
    );
    let streamed: String = events
        .iter()
        .filter_map(|c| {
            c.get("choices")?.get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, text);

    net.hub.hub.state.writer.flush().await;
    let wallet: Vec<Signed<Paperwork>> = net.nodes[0].node.wallet().list().await.unwrap();
    let backend = &wallet[0].body.backend;
    assert_eq!(
        (backend.id.as_str(), backend.version.as_str()),
        ("llama.cpp", "0.1.160")
    );
    assert_eq!(
        backend.model_sha256.unwrap().to_hex(),
        models::find(MODEL).unwrap().files[0].sha256
    );
    assert_eq!(
        wallet[0].body.usage.output_tokens,
        usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn max_tokens_stop_sequences_and_completions_behave_as_openai_says() {
    let net = network().await;
    let short: Value = post_chat(&net, &question(json!({"max_tokens": 2})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 2);

    let stopped: Value = post_chat(&net, &question(json!({"stop": ["Paris"]})))
        .await
        .json()
        .await
        .unwrap();
    let text = stopped["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.contains("Paris"), "{text}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    let resp = crate::hub::client()
        .post(format!("{}/completions", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(
            &json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}),
        )
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_prompt_longer_than_the_context_is_a_clear_400() {
    let config = model_config(64);
    let mut config = config;
    config.model_name = "smollm2-tiny-context".into();
    let backend = Arc::new(LlamaChat::load(config).unwrap());
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(backend).await;
    let long = "Tell me about Paris. ".repeat(40);
    let body = json!({"model": "smollm2-tiny-context", "messages": [{"role": "user", "content": long}]});
    let resp = post_chat(&net, &body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("context_length_exceeded: the prompt is "),
        "{message}"
    );
    assert!(
        message.contains("this model's context holds 64 tokens"),
        "{message}"
    );
}

/// Issue 10, defect 17: a cancelled task stops llama.cpp between tokens, and the backend reports the
/// tokens it generated, which the node then signs for.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_cancelled_generation_stops_between_tokens_and_reports_what_it_generated() {
    use stacknet_node::{Backend, BackendTask, Cancellation};
    use stacknet_protocol::contract::Workload;

    const MAX_TOKENS: u64 = 400;
    let backend = shared_model();
    let (canceller, cancel) = Cancellation::pair();
    let request = question(json!({"max_tokens": MAX_TOKENS, "messages": [{"role": "user",
        "content": "Write a very long story about a lighthouse keeper, with many chapters."}]}));
    let task = BackendTask {
        contract: stacknet_protocol::ContractId::random(),
        workload: Workload::Chat,
        model: MODEL.to_owned(),
        request: Arc::new(request),
        files: Arc::default(),
        cancel,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let running = tokio::spawn(backend.execute(task, tx));
    let mut chunks = 0;
    while chunks < 4 {
        rx.recv().await.expect("the model streams");
        chunks += 1;
    }
    canceller.cancel();
    // Keep reading, as the node does, until the backend returns.
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let outcome = running
        .await
        .unwrap()
        .expect("a cancelled generation still reports its work");
    drain.await.unwrap();
    let generated = outcome.usage.unwrap().output_tokens;
    // It commits to the ids it generated: no end token, and as many as it reports.
    let committed = outcome.committed.expect("a cancelled task commits too");
    assert_eq!(committed.tokens.len() as u64, generated);
    assert_eq!(committed.commitment.finish_reason, "stop");
    assert!(
        (3..MAX_TOKENS / 2).contains(&generated),
        "generated {generated} tokens"
    );
}

/// A guardian holding the same pinned model asks greedy questions and compares the answers with
/// its own, exactly: an honest node's match, a node that answers with other words is wrong.
#[tokio::test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_guardian_holding_the_model_checks_exact_greedy_answers() {
    use stacknet_node::backend::llama::LocalModel;
    use stacknet_node::guardian::{Guardian, GuardianOptions, Prompt};

    use crate::hub::reputation::{bonded_guardian, Plant, Planted};

    let mut net = network().await;
    let honest = net.nodes[0].node.node_key_id();
    let liar = net
        .add_backend_node(Arc::new(Planted::new(shared_model(), Plant::Wrong)))
        .await;
    let liar = net.nodes[liar].node.node_key_id();
    let key = bonded_guardian(&net).await;
    let reference = Arc::new(LocalModel::load(model_config(512)).unwrap());
    let options = GuardianOptions {
        window: std::time::Duration::from_secs(1),
        probes_per_node: 2,
        warm_latency: std::time::Duration::from_secs(60),
        prompts: vec![Prompt::Exact],
        references: vec![reference],
    };
    let guardian = Guardian::connect(&net.hub.url(), key, options).await.unwrap();
    let reports = guardian.window().await.unwrap();
    assert_eq!(reports.len(), 2);
    for (report, _) in &reports {
        let t = &report.body;
        let expect = if t.node_key == honest {
            (2, 0)
        } else {
            assert_eq!(t.node_key, liar);
            (0, 2)
        };
        assert_eq!((t.successes, t.wrong), expect, "{t:?}");
    }
}
