//! The validator's checks with the real SmolLM2 on llama.cpp: honest answers (greedy and seeded,
//! stop strings, one token and hundreds) pass, and every planted cheat of the test kit fails with
//! the check that should catch it. Needs the model (STACKNET_MODELS_DIR), hence ignored by default.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_api::types::{Assignment, Round};
use stacknet_node::backend::llama::{LlamaConfig, LocalModel};
use stacknet_node::models::{self, ModelStore};
use stacknet_node::validator::checks::{C0, C1, C2, C3};
use stacknet_node::validator::{check, verdict};
use stacknet_protocol::attestation::{CheckResult, Verdict};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::examples;
use stacknet_protocol::paperwork::request_digest;
use stacknet_protocol::{Sha256Digest, Signed, Timestamp};
use stacknet_testkit::cheats::{self, Cheat, Claim};

const MODEL: &str = "smollm2-135m-instruct";

fn model() -> Arc<LocalModel> {
    static LOADED: OnceLock<Arc<LocalModel>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dir = std::env::var_os("STACKNET_MODELS_DIR")
                .expect("STACKNET_MODELS_DIR is not set: this test needs the models");
            let spec = models::find(MODEL).unwrap();
            let path = ModelStore::new(dir).path_of(spec).expect("the model is pulled");
            let mut config = LlamaConfig::new(MODEL, path, spec.files[0].sha256.parse().unwrap());
            config.threads = 2;
            Arc::new(LocalModel::load(config).unwrap())
        })
        .clone()
}

/// What the hub would assign for `claim`: paperwork signed by the golden node for the golden hub.
fn assignment(claim: &Claim, request: &Value, required: Sha256Digest) -> Assignment {
    let output = claim.choices(Workload::Chat);
    let mut pw = examples::paperwork().unwrap().body;
    pw.request_sha256 = request_digest(request).unwrap();
    pw.output_sha256 = digest_of_response(Workload::Chat, &json!({ "choices": output })).unwrap();
    pw.usage = claim.usage.clone();
    pw.backend.model_sha256 = Some(claim.model_sha256);
    pw.commitment = Some(claim.commitment());
    let paperwork = Signed::sign(pw, &examples::node_key()).unwrap();
    Assignment {
        paperwork_id: paperwork.id().unwrap(),
        paperwork,
        round: Round::Check,
        request: request.clone(),
        output,
        output_tokens: Some(claim.tokens.clone()),
        required_model_sha256: Some(required),
        commit_by: Timestamp::now(),
    }
}

fn judge(claim: &Claim, request: &Value) -> Vec<CheckResult> {
    let m = model();
    let a = assignment(claim, request, m.config().model_sha256);
    check(&a, &examples::hub_key().public_key(), Some(m.as_ref()))
}

fn chat(content: &str, extra: Value) -> Value {
    let mut r = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

#[test]
#[ignore = "needs models: smollm2-135m-instruct in STACKNET_MODELS_DIR"]
fn honest_answers_of_the_real_model_pass_every_check() {
    let m = model();
    let controls = [
        chat(
            "What is the capital of France?",
            json!({"temperature": 0, "max_tokens": 64}),
        ),
        chat(
            "Write a haiku about rain.",
            json!({"temperature": 0.8, "seed": 7, "max_tokens": 64}),
        ),
        chat(
            "Count from 1 to 20, one number per line.",
            json!({"temperature": 0, "max_tokens": 200, "stop": ["12"]}),
        ),
        chat("Say yes.", json!({"temperature": 0, "max_tokens": 1})),
        chat(
            "Tell me a long story about a dragon and a knight.",
            json!({"temperature": 0.7, "top_p": 0.9, "seed": 3, "max_tokens": 300}),
        ),
        chat(
            "List five fruits.",
            json!({"temperature": 1.0, "seed": 99, "max_tokens": 128}),
        ),
    ];
    for request in &controls {
        let claim = cheats::honest(&m, request, Workload::Chat).unwrap();
        let results = judge(&claim, request);
        for r in &results {
            let gaps: Vec<u32> = r.evidence.iter().map(|m| m.gap_milli).collect();
            eprintln!("CAL {} {}: {} {gaps:?}", request["temperature"], r.name, r.detail);
        }
        assert_eq!(verdict(&results), Verdict::Pass, "{request}: {results:#?}");
    }
}

#[test]
#[ignore = "needs models: smollm2-135m-instruct in STACKNET_MODELS_DIR"]
fn every_planted_cheat_fails_the_check_that_should_catch_it() {
    let m = model();
    let request = chat(
        "Explain in a few sentences why the sky is blue.",
        json!({"temperature": 0, "max_tokens": 96}),
    );
    let other_sha = Sha256Digest([0x42; 32]);
    for c in Cheat::ALL {
        let claim = cheats::cheat(c, &m, &request, Workload::Chat, other_sha).unwrap();
        let results = judge(&claim, &request);
        let expected = match c {
            Cheat::WrongSha | Cheat::HashMismatch => C0,
            Cheat::InflateUsage => C1,
            Cheat::TruncateStop | Cheat::ShortLength => C2,
            Cheat::OtherModel | Cheat::TruncateEos | Cheat::Fabricate | Cheat::Splice => C3,
        };
        assert_eq!(verdict(&results), Verdict::Fail, "{}: {results:#?}", c.name());
        let failed = results.iter().find(|r| !r.passed && !r.inconclusive).unwrap();
        assert_eq!(
            failed.code.as_deref(),
            Some(expected),
            "{}: {results:#?}",
            c.name()
        );
    }
}

#[test]
#[ignore = "needs models: smollm2-135m-instruct in STACKNET_MODELS_DIR"]
fn a_validator_without_the_model_answers_inconclusive() {
    let m = model();
    let request = chat("Hi", json!({"temperature": 0, "max_tokens": 8}));
    let claim = cheats::honest(&m, &request, Workload::Chat).unwrap();
    let a = assignment(&claim, &request, m.config().model_sha256);
    let results = check(&a, &examples::hub_key().public_key(), None);
    assert_eq!(verdict(&results), Verdict::Inconclusive, "{results:#?}");
}
