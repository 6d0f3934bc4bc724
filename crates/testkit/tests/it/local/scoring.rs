//! What a validator relies on, with the real SmolLM2: the commitment hashes exactly the sampled ids,
//! and teacher forcing the claimed ids (one prefill, any thread count or micro-batch) gives every
//! honest token back as the model's choice, greedy or seeded, within a tiny numeric margin.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::{json, Value};
use stacknet_node::backend::llama::{Flow, LocalModel, ScoreOptions};
use stacknet_node::backend::Committed;
use stacknet_node::{Backend, BackendOutcome, BackendTask, Cancellation};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::paperwork::{tokens_sha256, Sampling};
use stacknet_protocol::sampler;

use super::{model_config, question, shared_model, MODEL};

/// Teacher forcing as the validator runs it by default reproduces the worker's logits exactly; this
/// leaves room only for float rounding.
const TINY_GAP: f32 = 1e-3;
/// Large micro-batches compute logits with other kernels (measured up to 0.08 off); a claimed token
/// further than this below the top logit would be a cheat.
const HONEST_GAP_BOUND: f32 = 0.5;
/// How far outside its replayed interval an honest sampled token may lie (rounding of the CDF).
const HONEST_DISTANCE_BOUND: f64 = 1e-3;

/// The model loaded directly (as a validator does), with 1 or 2 threads.
fn local_model(threads: usize) -> Arc<LocalModel> {
    static MODELS: [OnceLock<Arc<LocalModel>>; 2] = [OnceLock::new(), OnceLock::new()];
    MODELS[threads - 1]
        .get_or_init(|| {
            let mut config = model_config(512);
            config.threads = threads;
            Arc::new(LocalModel::load(config).unwrap())
        })
        .clone()
}

/// Runs `request` through the node's backend as a task; the text it delivered and its outcome.
async fn execute(request: Value) -> (String, BackendOutcome) {
    let task = BackendTask {
        contract: stacknet_protocol::ContractId::random(),
        workload: Workload::Chat,
        model: MODEL.to_owned(),
        request: Arc::new(request),
        files: Arc::default(),
        cancel: Cancellation::never(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let running = tokio::spawn(shared_model().execute(task, tx));
    let mut text = String::new();
    while let Some(chunk) = rx.recv().await {
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    (text, running.await.unwrap().unwrap())
}

fn committed(outcome: &BackendOutcome) -> &Committed {
    outcome.committed.as_ref().expect("the built-in model commits")
}

/// The commitment is to exactly these ids, and they stand for the delivered text.
fn assert_commits_to_its_ids(model: &LocalModel, text: &str, outcome: &BackendOutcome) {
    let c = committed(outcome);
    assert_eq!(c.commitment.output_tokens_sha256, tokens_sha256(&c.tokens));
    assert_eq!(c.commitment.output_token_count, c.tokens.len() as u64);
    let ends_on_eog = c.tokens.last().is_some_and(|&t| model.is_eog(t));
    let usage = outcome.usage.as_ref().unwrap();
    assert_eq!(
        usage.output_tokens + u64::from(ends_on_eog),
        c.tokens.len() as u64
    );
    let bytes = model.detokenize(&c.tokens);
    assert!(bytes.starts_with(text.as_bytes()), "{text:?}");
}

/// The largest gap between the top logit and each claimed token's, teacher-forced.
fn largest_greedy_gap(model: &LocalModel, prompt: &[u32], claimed: &[u32], opts: ScoreOptions) -> f32 {
    let mut largest = 0.0f32;
    let mut seen = 0;
    model
        .teacher_forced(prompt, claimed, opts, |i, logits| {
            assert_eq!(i, seen, "positions in order");
            seen += 1;
            let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            largest = largest.max(top - logits[claimed[i as usize] as usize]);
        })
        .unwrap();
    assert_eq!(seen as usize, claimed.len(), "every claimed token is scored");
    largest
}

/// How far each claimed token's draw lies outside its replayed interval; the largest.
fn largest_sampled_distance(
    model: &LocalModel,
    prompt: &[u32],
    claimed: &[u32],
    s: &Sampling,
    opts: ScoreOptions,
) -> f64 {
    let mut largest = 0.0f64;
    model
        .teacher_forced(prompt, claimed, opts, |i, logits| {
            let u = sampler::draw(s.seed, i);
            let distance = match sampler::interval(logits, s, claimed[i as usize]) {
                Some((lo, hi)) if lo <= u && u < hi => 0.0,
                Some((lo, hi)) => (lo - u).max(u - hi),
                None => f64::INFINITY,
            };
            largest = largest.max(distance);
        })
        .unwrap();
    largest
}

/// A system prompt long enough that the worker decodes the prompt in one large micro-batch.
const SYSTEM: &str = "You are a patient storyteller. You write vivid stories for children and adults \
    alike, with strong characters, a clear beginning, a middle full of trouble and an ending that \
    leaves the reader warm. You never use lists, you never break character, and you always describe \
    the weather, the light and the sounds of the place where the story happens.";

fn story(extra: Value) -> Value {
    let mut body = question(json!({"messages": [{"role": "user",
        "content": "Write a long story about a lighthouse keeper and the sea."}]}));
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn an_honest_greedy_answer_is_the_top_choice_at_every_position_under_teacher_forcing() {
    let request = story(json!({"max_tokens": 128}));
    let (text, outcome) = execute(request.clone()).await;
    let model = local_model(1);
    assert_commits_to_its_ids(&model, &text, &outcome);
    let c = committed(&outcome);
    assert_eq!(c.commitment.sampling.temperature_milli, 0);
    assert_eq!(c.commitment.sampling.max_tokens, 128);
    assert_eq!(c.tokens.len(), 128, "a long story runs to its budget");
    assert_eq!(c.commitment.finish_reason, "length");

    let prompt = model.prompt_tokens_of(&request, Workload::Chat).unwrap();
    assert_eq!(prompt.len() as u64, outcome.usage.as_ref().unwrap().input_tokens);
    for threads in [1, 2] {
        let opts = ScoreOptions {
            threads: Some(threads),
            ..ScoreOptions::default()
        };
        let gap = largest_greedy_gap(&model, &prompt, &c.tokens, opts);
        println!("greedy, {threads} threads, default options: largest gap {gap}");
        assert!(gap < TINY_GAP, "largest honest gap {gap}");
    }
    for (threads, ubatch, chunk) in [(1, 1, 64), (2, 32, 256), (2, 512, 256)] {
        let opts = ScoreOptions {
            threads: Some(threads),
            ubatch: Some(ubatch),
            chunk,
        };
        let gap = largest_greedy_gap(&model, &prompt, &c.tokens, opts);
        println!("greedy, {threads} threads, ubatch {ubatch}, chunk {chunk}: largest gap {gap}");
        assert!(gap < HONEST_GAP_BOUND, "largest honest gap {gap}");
    }

    // Generation against teacher forcing, for the same 128-token answer, one thread each.
    let started = Instant::now();
    let again = model
        .generate(&request, Workload::Chat, |_| Ok(Flow::Continue))
        .unwrap();
    let generation = started.elapsed();
    assert_eq!(again.tokens, c.tokens, "greedy generation is deterministic");
    let started = Instant::now();
    largest_greedy_gap(&model, &prompt, &again.tokens, ScoreOptions::default());
    println!(
        "1 thread, prompt {} + 128 tokens: generation {generation:?}, teacher forcing {:?}",
        prompt.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_seeded_sampled_answer_replays_and_every_token_lies_in_its_drawn_interval() {
    let request = story(
        json!({"max_tokens": 96, "temperature": 0.8, "seed": 42, "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]}),
    );
    let model = local_model(2);
    let first = model
        .generate(&request, Workload::Chat, |_| Ok(Flow::Continue))
        .unwrap();
    let second = model
        .generate(&request, Workload::Chat, |_| Ok(Flow::Continue))
        .unwrap();
    assert_eq!(first.tokens, second.tokens, "the same seed gives the same ids");
    assert_eq!(first.sampling.temperature_milli, 800);
    assert_eq!(first.sampling.seed, 42);
    let (asked, seed_given) = model.sampling_of(&request, Workload::Chat).unwrap();
    assert!(seed_given);
    assert_eq!(
        asked, first.sampling,
        "a validator rebuilds the sampling the node ran"
    );

    let greedy = model
        .generate(&story(json!({"max_tokens": 96})), Workload::Chat, |_| {
            Ok(Flow::Continue)
        })
        .unwrap();
    assert_ne!(greedy.tokens, first.tokens, "sampling at 0.8 is not greedy");

    let prompt = model.prompt_tokens_of(&request, Workload::Chat).unwrap();
    assert!(prompt.len() > 64, "a prompt longer than the exact micro-batch");
    for threads in [1, 2] {
        let opts = ScoreOptions {
            threads: Some(threads),
            ..ScoreOptions::default()
        };
        let distance = largest_sampled_distance(&model, &prompt, &first.tokens, &first.sampling, opts);
        println!(
            "seeded, {threads} threads: {} tokens, largest distance outside the interval {distance}",
            first.tokens.len()
        );
        assert!(
            distance <= HONEST_DISTANCE_BOUND,
            "largest honest distance {distance}"
        );
    }
    // Large micro-batches move near-tied tokens' slices of the ordered distribution: not a replay.
    let opts = ScoreOptions {
        ubatch: Some(512),
        ..ScoreOptions::default()
    };
    let distance = largest_sampled_distance(&model, &prompt, &first.tokens, &first.sampling, opts);
    println!("seeded, ubatch 512: largest distance {distance}");

    // Another seed's answer does not replay under this one.
    let mut reseeded = request.clone();
    reseeded["seed"] = json!(7);
    let other = model
        .generate(&reseeded, Workload::Chat, |_| Ok(Flow::Continue))
        .unwrap();
    assert!(
        largest_sampled_distance(
            &model,
            &prompt,
            &other.tokens,
            &first.sampling,
            ScoreOptions::default()
        ) > HONEST_DISTANCE_BOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn a_stop_sequence_and_a_one_token_budget_commit_what_was_generated() {
    let model = local_model(2);
    let (text, outcome) = execute(question(json!({"stop": ["Paris"]}))).await;
    assert_commits_to_its_ids(&model, &text, &outcome);
    let c = committed(&outcome);
    assert_eq!(c.commitment.finish_reason, "stop");
    assert!(!text.contains("Paris"), "{text}");
    let last = *c.tokens.last().unwrap();
    assert!(!model.is_eog(last), "cut by the stop sequence, not an end token");
    let bytes = String::from_utf8_lossy(&model.detokenize(&c.tokens)).into_owned();
    assert!(
        bytes.contains("Paris"),
        "the ids include the token completing the stop: {bytes}"
    );
    assert!(!String::from_utf8_lossy(&model.detokenize(&c.tokens[..c.tokens.len() - 1])).contains("Paris"));

    let (text, outcome) = execute(question(json!({"max_tokens": 1}))).await;
    assert_commits_to_its_ids(&model, &text, &outcome);
    let c = committed(&outcome);
    assert_eq!(c.commitment.finish_reason, "length");
    assert_eq!(c.tokens.len(), 1);
    assert_eq!(c.commitment.sampling.max_tokens, 1);
    assert_eq!(outcome.usage.as_ref().unwrap().output_tokens, 1);

    // The whole answer ends on an end token, which the ids include and usage does not count.
    let (text, outcome) = execute(question(json!({}))).await;
    assert_commits_to_its_ids(&model, &text, &outcome);
    let c = committed(&outcome);
    assert_eq!(c.commitment.finish_reason, "stop");
    assert!(model.is_eog(*c.tokens.last().unwrap()));
    let prompt = model
        .prompt_tokens_of(&question(json!({})), Workload::Chat)
        .unwrap();
    let gap = largest_greedy_gap(&model, &prompt, &c.tokens, ScoreOptions::default());
    assert!(
        gap < HONEST_GAP_BOUND,
        "the end token is the model's choice too: gap {gap}"
    );
}

#[test]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
fn teacher_forcing_refuses_ids_outside_the_vocabulary_and_a_claim_longer_than_the_context() {
    let model = local_model(2);
    let prompt = model
        .prompt_tokens_of(&question(json!({})), Workload::Chat)
        .unwrap();
    let err = model
        .teacher_forced(&prompt, &[1, model.n_vocab()], ScoreOptions::default(), |_, _| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("outside this model's vocabulary"),
        "{err}"
    );
    let long = vec![1u32; 9000];
    let err = model
        .teacher_forced(&prompt, &long, ScoreOptions::default(), |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("context holds"), "{err}");
    assert!(!model.is_eog(model.n_vocab()));
}
