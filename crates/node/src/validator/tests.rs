//! The checks against a synthetic model whose logits favour one known answer: each planted cheat
//! fails with its code, honest answers pass, and what cannot be replayed is INCONCLUSIVE.

use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_api::types::{Assignment, Round};
use stacknet_protocol::attestation::{CheckResult, Verdict};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::examples;
use stacknet_protocol::paperwork::{request_digest, tokens_sha256, Commitment, Sampling, SAMPLER_V1};
use stacknet_protocol::{sampler, Sha256Digest, Signed, Timestamp};

use super::checks::{check, verdict, Model, C0, C1, C2, C3};
use crate::backend::BackendError;

const EOG: u32 = 300;
const VOCAB: usize = 301;
const SHA: Sha256Digest = Sha256Digest([0xb1; 32]);

/// Token `b` (< 256) is the byte `b`; [`EOG`] ends generation. At output position `i` the model
/// favours `answer[i]` (then the end token) by `margin` logits over every other token.
struct Synthetic {
    answer: Vec<u32>,
    margin: f32,
}

impl Synthetic {
    fn new(answer: &str) -> Self {
        Self {
            answer: answer.bytes().map(u32::from).collect(),
            margin: 6.0,
        }
    }

    fn logits(&self, i: usize) -> Vec<f32> {
        let favoured = self.answer.get(i).copied().unwrap_or(EOG) as usize;
        // Lower-case letters besides the favourite, so sampling has a real distribution; every other
        // token far below.
        (0..VOCAB)
            .map(|t| match t {
                _ if t == favoured => self.margin,
                97..=122 => ((t * 7) % 5) as f32 * 0.1,
                _ => -30.0,
            })
            .collect()
    }

    /// What an honest worker generates: the sampler over these logits.
    fn generate(&self, s: &Sampling) -> Vec<u32> {
        let mut ids = Vec::new();
        for i in 0..s.max_tokens {
            let t = sampler::sample(&self.logits(i as usize), s, i).expect("a token");
            ids.push(t);
            if t == EOG {
                break;
            }
        }
        ids
    }
}

impl Model for Synthetic {
    fn sha256(&self) -> Sha256Digest {
        SHA
    }

    fn prompt_tokens_of(&self, request: &Value, _: Workload) -> Result<Vec<u32>, BackendError> {
        let text = request["messages"][0]["content"].as_str().unwrap_or_default();
        Ok(text.bytes().map(u32::from).collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<Vec<u8>, BackendError> {
        ids.iter()
            .map(|&t| u8::try_from(t).map_err(|_| BackendError::InvalidRequest(format!("token {t}"))))
            .collect()
    }

    fn is_eog(&self, id: u32) -> bool {
        id == EOG
    }

    fn teacher_forced(
        &self,
        _prompt: &[u32],
        claimed: &[u32],
        at: &mut dyn FnMut(u32, &[f32]),
    ) -> Result<(), BackendError> {
        for i in 0..claimed.len() {
            at(i as u32, &self.logits(i));
        }
        Ok(())
    }
}

fn sampling(temperature_milli: u32, max_tokens: u32) -> Sampling {
    Sampling {
        sampler: SAMPLER_V1.to_owned(),
        temperature_milli,
        top_p_milli: 950,
        seed: 42,
        max_tokens,
    }
}

/// What a worker claims: the ids it committed to, the text delivered, usage and finish.
struct Claim {
    request: Value,
    ids: Vec<u32>,
    committed_ids: Vec<u32>,
    text: String,
    finish: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    sampling: Sampling,
    model_sha: Sha256Digest,
    commit: bool,
}

const PROMPT: &str = "Say hello";

impl Claim {
    /// The honest claim for `ids` generated under `s`.
    fn honest(ids: Vec<u32>, s: Sampling) -> Self {
        let eog = ids.last() == Some(&EOG);
        let generated: Vec<u32> = ids.iter().copied().filter(|&t| t != EOG).collect();
        let bytes: Vec<u8> = generated.iter().map(|&t| t as u8).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let finish = if eog || (ids.len() as u32) < s.max_tokens {
            "stop"
        } else {
            "length"
        };
        Self {
            request: json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": PROMPT}]}),
            committed_ids: ids.clone(),
            output_tokens: generated.len() as u64,
            ids,
            text,
            finish,
            input_tokens: PROMPT.len() as u64,
            sampling: s,
            model_sha: SHA,
            commit: true,
        }
    }

    fn assignment(&self) -> Assignment {
        let output = json!([{"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": self.finish, "logprobs": null}]);
        let mut pw = examples::paperwork().expect("golden paperwork").body;
        pw.request_sha256 = request_digest(&self.request).expect("canonical");
        pw.output_sha256 = digest_of_response(Workload::Chat, &json!({ "choices": output })).expect("digest");
        pw.usage.input_tokens = self.input_tokens;
        pw.usage.output_tokens = self.output_tokens;
        pw.backend.model_sha256 = Some(self.model_sha);
        pw.commitment = self.commit.then(|| Commitment {
            output_tokens_sha256: tokens_sha256(&self.committed_ids),
            output_token_count: self.committed_ids.len() as u64,
            finish_reason: self.finish.to_owned(),
            sampling: self.sampling.clone(),
        });
        let paperwork = Signed::sign(pw, &examples::node_key()).expect("sign");
        Assignment {
            paperwork_id: paperwork.id().expect("id"),
            paperwork,
            round: Round::Check,
            request: self.request.clone(),
            output,
            output_tokens: self.commit.then(|| self.ids.clone()),
            required_model_sha256: Some(SHA),
            commit_by: Timestamp::now(),
        }
    }
}

fn run(claim: &Claim, model: &Synthetic) -> Vec<CheckResult> {
    check(
        &claim.assignment(),
        &examples::hub_key().public_key(),
        Some(model),
    )
}

fn failed_code(results: &[CheckResult]) -> Option<&str> {
    assert_eq!(verdict(results), Verdict::Fail, "{results:#?}");
    results
        .iter()
        .find(|c| !c.passed && !c.inconclusive)
        .and_then(|c| c.code.as_deref())
}

const ANSWER: &str = "Hello! How can I help you today? I am a small model running on a CPU.";

#[test]
fn honest_greedy_and_sampled_answers_pass_every_check() {
    let model = Synthetic::new(ANSWER);
    for s in [
        sampling(0, 200),
        sampling(800, 200),
        sampling(0, 10),
        sampling(800, 1),
    ] {
        let claim = Claim::honest(model.generate(&s), s);
        let results = run(&claim, &model);
        assert_eq!(verdict(&results), Verdict::Pass, "{results:#?}");
        assert_eq!(
            results.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            [C0, C1, C2, C3]
        );
    }
}

#[test]
fn an_answer_cut_at_a_requested_stop_sequence_passes() {
    let model = Synthetic::new(ANSWER);
    let s = sampling(0, 200);
    let all = model.generate(&s);
    // The worker stopped on the token that completed "help" and delivered the text before it.
    let at = ANSWER.find("help").expect("in the answer");
    let mut claim = Claim::honest(all[..at + 4].to_vec(), s);
    claim.request["stop"] = json!(["help"]);
    claim.text = ANSWER[..at].to_owned();
    claim.finish = "stop";
    assert_eq!(
        verdict(&run(&claim, &model)),
        Verdict::Pass,
        "{:#?}",
        run(&claim, &model)
    );
    // Without the stop sequence in the request, the cut is unexplained.
    claim.request.as_object_mut().expect("object").remove("stop");
    assert_eq!(failed_code(&run(&claim, &model)), Some(C1));
}

#[test]
fn each_planted_cheat_fails_with_its_code() {
    let model = Synthetic::new(ANSWER);
    let s = sampling(0, 200);
    let honest = model.generate(&s);
    let half = honest.len() / 2;

    let mut wrong_sha = Claim::honest(honest.clone(), s.clone());
    wrong_sha.model_sha = Sha256Digest([0x22; 32]);
    assert_eq!(failed_code(&run(&wrong_sha, &model)), Some(C0), "wrong-sha");

    let mut hash_mismatch = Claim::honest(honest.clone(), s.clone());
    hash_mismatch.committed_ids[0] = u32::from(b'J');
    assert_eq!(
        failed_code(&run(&hash_mismatch, &model)),
        Some(C0),
        "hash-mismatch"
    );

    let mut inflate = Claim::honest(honest.clone(), s.clone());
    inflate.output_tokens += 7;
    assert_eq!(failed_code(&run(&inflate, &model)), Some(C1), "inflate-usage");
    let mut inflate_prompt = Claim::honest(honest.clone(), s.clone());
    inflate_prompt.input_tokens += 50;
    assert_eq!(
        failed_code(&run(&inflate_prompt, &model)),
        Some(C1),
        "inflate-usage prompt"
    );

    let truncate_stop = Claim::honest(honest[..half].to_vec(), s.clone());
    assert_eq!(
        failed_code(&run(&truncate_stop, &model)),
        Some(C2),
        "truncate-stop"
    );

    let mut short = Claim::honest(honest[..half].to_vec(), s.clone());
    short.finish = "length";
    assert_eq!(failed_code(&run(&short, &model)), Some(C2), "short-length");

    let mut cut = honest[..half].to_vec();
    cut.push(EOG);
    let truncate_eos = Claim::honest(cut, s.clone());
    let r = run(&truncate_eos, &model);
    assert_eq!(failed_code(&r), Some(C3), "truncate-eos");
    let c3 = r.iter().find(|c| c.name == C3).expect("C3 ran");
    assert_eq!(
        c3.evidence.last().map(|m| (m.position, m.claimed)),
        Some((half as u32, EOG))
    );

    let mut fabricated: Vec<u32> = (1..honest.len() as u32)
        .map(|i| u32::from(b'a') + (i * 7) % 26)
        .collect();
    fabricated.push(EOG);
    let fabricate = Claim::honest(fabricated, s.clone());
    assert_eq!(failed_code(&run(&fabricate, &model)), Some(C3), "fabricate");

    let mut spliced = honest[..half].to_vec();
    spliced.extend((half..honest.len() - 1).map(|i| u32::from(b'a') + (i as u32 * 5) % 26));
    spliced.push(EOG);
    let splice = Claim::honest(spliced, s);
    assert_eq!(failed_code(&run(&splice, &model)), Some(C3), "splice");
}

#[test]
fn a_sampled_answer_with_another_seed_fails_the_replay() {
    let model = Synthetic {
        margin: 0.5,
        ..Synthetic::new(ANSWER)
    };
    let s = sampling(1000, 200);
    let other_seed = Sampling { seed: 7, ..s.clone() };
    let ids = model.generate(&other_seed);
    let claim = Claim::honest(ids, s);
    assert_eq!(failed_code(&run(&claim, &model)), Some(C3));
}

#[test]
fn without_a_commitment_or_the_model_only_the_envelope_decides() {
    let model = Synthetic::new(ANSWER);
    let s = sampling(0, 200);
    let mut upstream = Claim::honest(model.generate(&s), s.clone());
    upstream.commit = false;
    let hub = examples::hub_key().public_key();
    let results = check(&upstream.assignment(), &hub, Some(&model));
    assert_eq!(verdict(&results), Verdict::Inconclusive);
    assert!(results[3].detail.contains("never slash"), "{}", results[3].detail);

    let honest = Claim::honest(model.generate(&s), s);
    let results = check(&honest.assignment(), &hub, None);
    assert_eq!(verdict(&results), Verdict::Inconclusive);
    assert!(results[1].inconclusive && results[1].detail.contains("does not hold the model"));
}

#[test]
fn a_paperwork_for_another_hub_fails_the_envelope() {
    let model = Synthetic::new(ANSWER);
    let s = sampling(0, 200);
    let claim = Claim::honest(model.generate(&s), s);
    let results = check(
        &claim.assignment(),
        &examples::node_key().public_key(),
        Some(&model),
    );
    assert_eq!(failed_code(&results), Some(C0));
}
