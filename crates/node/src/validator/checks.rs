//! The checks a validator runs on one task, cheapest first, each a [`CheckResult`]: PASS, FAIL
//! with an objective `code` (and evidence for C3), or INCONCLUSIVE (never counts toward a fail).
//!
//! - C0 `C0_envelope`: signatures, the request, output and token hashes, the required model.
//! - C1 `C1_tokens`: usage equals the re-tokenized prompt and the ids; the ids spell the text.
//! - C2 `C2_termination`: `length` is exactly the budget, `stop` is an end token or a stop sequence.
//! - C3 `C3_teacher_forced`: [`crate::validator::forced`].
//!
//! A task without a commitment (an upstream backend) gets C0 only: C1 to C3 are INCONCLUSIVE.
//! After a FAIL the later checks are not run: one objective failure is the verdict, and it saves
//! the prefill.

use serde_json::Value;
use stacknet_api::output::{digest_of_response, output_kind, OutputKind};
use stacknet_api::types::{Assignment, KeptFiles};
use stacknet_protocol::attestation::{CheckResult, Verdict};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::paperwork::{check_paperwork, request_digest, tokens_sha256, Commitment, SAMPLER_V1};
use stacknet_protocol::{PublicKey, Sha256Digest};

use crate::backend::llama::BACKEND_ID;
use crate::backend::BackendError;

pub const C0: &str = "C0_envelope";
pub const C1: &str = "C1_tokens";
pub const C2: &str = "C2_termination";
pub const C3: &str = "C3_teacher_forced";

/// What the checks need of a model: the same GGUF the worker ran, loaded by the validator.
pub trait Model {
    /// SHA-256 of the model file (a task claiming another model is not this model's to check).
    fn sha256(&self) -> Sha256Digest;
    /// The prompt's token ids exactly as the worker fed them (chat template applied).
    fn prompt_tokens_of(&self, request: &Value, workload: Workload) -> Result<Vec<u32>, BackendError>;
    /// The bytes the ids spell, as the worker streamed them (special tokens not rendered).
    fn detokenize(&self, ids: &[u32]) -> Result<Vec<u8>, BackendError>;
    /// An end of generation token.
    fn is_eog(&self, id: u32) -> bool;
    /// One prefill of `prompt` then `claimed`; calls `at(i, logits)` with the logits that predict
    /// `claimed[i]`, for every `i` in order, computed with the arithmetic generation used (for
    /// llama.cpp: the claimed ids in micro-batches of at most 32 rows, whose kernels match a
    /// one-token decode's).
    fn teacher_forced(
        &self,
        prompt: &[u32],
        claimed: &[u32],
        at: &mut dyn FnMut(u32, &[f32]),
    ) -> Result<(), BackendError>;
}

pub(crate) fn pass(name: &str, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        passed: true,
        score_ppm: None,
        detail: detail.into(),
        inconclusive: false,
        code: None,
        evidence: Vec::new(),
    }
}

pub(crate) fn fail(name: &str, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        passed: false,
        code: Some(name.to_owned()),
        ..pass(name, detail)
    }
}

pub(crate) fn inconclusive(name: &str, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        passed: false,
        inconclusive: true,
        ..pass(name, detail)
    }
}

/// FAIL if any check failed with an objective code, INCONCLUSIVE if any could not decide and none
/// failed, else PASS.
pub fn verdict(checks: &[CheckResult]) -> Verdict {
    if checks
        .iter()
        .any(|c| !c.passed && !c.inconclusive && c.code.is_some())
    {
        Verdict::Fail
    } else if checks.iter().any(|c| !c.passed) || checks.is_empty() {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

/// Runs every check on one task, cheapest first, for the hub whose key is `hub`. `model` is the
/// validator's copy of the task's model (`None`: it has none, and C1 to C3 are INCONCLUSIVE).
pub fn check(a: &Assignment, hub: &PublicKey, model: Option<&dyn Model>) -> Vec<CheckResult> {
    let c0 = envelope(a, hub);
    if !c0.passed {
        return vec![c0];
    }
    let mut out = vec![c0];
    let Some(replay) = replayable(a, model, &mut out) else {
        return out;
    };
    let Replay {
        model,
        commitment,
        ids,
    } = replay;
    let text = match delivered_text(&a.output, a.paperwork.body.contract.body.workload) {
        Ok(t) => t,
        Err(why) => {
            out.push(fail(C1, why));
            return out;
        }
    };
    let stops = stop_sequences(&a.request);
    let ctx = Context {
        a,
        model,
        commitment,
        ids,
        text: &text,
        stops: &stops,
    };
    let (c1, prompt) = tokens(&ctx);
    let failed = !c1.passed;
    out.push(c1);
    if failed {
        return out;
    }
    let c2 = termination(&ctx);
    let failed = !c2.passed && !c2.inconclusive;
    out.push(c2);
    if failed {
        return out;
    }
    let Some(prompt) = prompt else {
        out.push(inconclusive(C3, "the prompt could not be tokenized"));
        return out;
    };
    out.push(crate::validator::forced::score(
        model,
        &prompt,
        ids,
        &commitment.sampling,
    ));
    out
}

struct Replay<'a> {
    model: &'a dyn Model,
    commitment: &'a Commitment,
    ids: &'a [u32],
}

/// Whether C1 to C3 can run; if not, pushes why as INCONCLUSIVE results.
fn replayable<'a>(
    a: &'a Assignment,
    model: Option<&'a dyn Model>,
    out: &mut Vec<CheckResult>,
) -> Option<Replay<'a>> {
    let pw = &a.paperwork.body;
    let mut skip = |why: String| {
        for name in [C1, C2, C3] {
            out.push(inconclusive(name, why.clone()));
        }
        None
    };
    let Some(commitment) = pw.commitment.as_ref() else {
        return skip(format!(
            "backend {:?} commits to no token ids (an upstream): only statistical checks apply, and they never slash",
            pw.backend.id
        ));
    };
    if pw.backend.id != BACKEND_ID {
        return skip(format!(
            "backend {:?} cannot be replayed by this validator",
            pw.backend.id
        ));
    }
    if commitment.sampling.sampler != SAMPLER_V1 {
        return skip(format!("unknown sampler {:?}", commitment.sampling.sampler));
    }
    let Some(model) = model else {
        return skip(format!(
            "this validator does not hold the model {:?}",
            pw.backend.model
        ));
    };
    if pw.backend.model_sha256 != Some(model.sha256()) {
        return skip(format!(
            "this validator's model is {}, the task's {:?}",
            model.sha256(),
            pw.backend.model_sha256
        ));
    }
    // C0 proved the ids are there and hash to the commitment.
    let ids = a.output_tokens.as_deref()?;
    Some(Replay {
        model,
        commitment,
        ids,
    })
}

/// C0: everything checkable without a model.
pub(crate) fn envelope(a: &Assignment, hub: &PublicKey) -> CheckResult {
    match envelope_error(a, hub) {
        None => pass(C0, "signatures, request, output and token hashes, model"),
        Some(why) => fail(C0, why),
    }
}

fn envelope_error(a: &Assignment, hub: &PublicKey) -> Option<String> {
    let pw = &a.paperwork.body;
    if let Err(e) = check_paperwork(&a.paperwork, hub) {
        return Some(format!("paperwork: {e}"));
    }
    match request_digest(&a.request) {
        Ok(d) if d == pw.request_sha256 => {}
        Ok(d) => {
            return Some(format!(
                "request_sha256 is {}, the request hashes to {d}",
                pw.request_sha256
            ))
        }
        Err(e) => return Some(format!("the request is not canonical JSON: {e}")),
    }
    let workload = pw.contract.body.workload;
    // A media task's output is its files' hashes (and bytes), as the hub kept them.
    let digest = match output_kind(workload) {
        Some(OutputKind::Files) => KeptFiles::parse(&a.output).and_then(|k| k.digest()),
        _ => digest_of_response(workload, &serde_json::json!({ "choices": a.output }))
            .map_err(|e| e.to_string()),
    };
    match digest {
        Ok(d) if d == pw.output_sha256 => {}
        Ok(d) => {
            return Some(format!(
                "output_sha256 is {}, the output hashes to {d}",
                pw.output_sha256
            ))
        }
        Err(e) => return Some(format!("the output cannot be digested: {e}")),
    }
    if let Some(required) = a.required_model_sha256 {
        if pw.backend.model_sha256 != Some(required) {
            return Some(format!(
                "model_sha256 is {:?}, the model {:?} is pinned to {required}",
                pw.backend.model_sha256.map(|d| d.to_string()),
                pw.contract.body.model
            ));
        }
    }
    if let Some(c) = &pw.commitment {
        if pw.backend.id != BACKEND_ID {
            // Only llama.cpp commits today; another id with a commitment is not one we can judge,
            // and C1 to C3 say so (INCONCLUSIVE), so it is no envelope failure.
            return None;
        }
        let Some(ids) = &a.output_tokens else {
            return Some("the paperwork commits to output token ids the worker never delivered".into());
        };
        if ids.len() as u64 != c.output_token_count {
            return Some(format!(
                "output_token_count is {}, {} ids were delivered",
                c.output_token_count,
                ids.len()
            ));
        }
        if tokens_sha256(ids) != c.output_tokens_sha256 {
            return Some("output_tokens_sha256 is not the hash of the delivered ids".into());
        }
    }
    None
}

/// The text the client received: the one choice's text (completion) or message content (chat).
fn delivered_text(output: &Value, workload: Workload) -> Result<String, String> {
    let choices = output.as_array().ok_or("the output is not a choices array")?;
    let [choice] = choices.as_slice() else {
        return Err(format!(
            "a built-in model gives one choice; the output has {}",
            choices.len()
        ));
    };
    let text = match workload {
        Workload::Completion => choice.get("text"),
        _ => choice.get("message").and_then(|m| m.get("content")),
    };
    match text {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err("the output's text is not a string".into()),
    }
}

/// The request's stop sequences (a string or an array of strings), as the worker read them.
fn stop_sequences(request: &Value) -> Vec<String> {
    match request.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

struct Context<'a> {
    a: &'a Assignment,
    model: &'a dyn Model,
    commitment: &'a Commitment,
    ids: &'a [u32],
    text: &'a str,
    stops: &'a [String],
}

impl Context<'_> {
    /// The ids without a final end token (what was counted and spelled).
    fn generated(&self) -> &[u32] {
        match self.ids.split_last() {
            Some((last, rest)) if self.model.is_eog(*last) => rest,
            _ => self.ids,
        }
    }

    /// What the ids spell beyond the delivered text, when that is explained by a stop sequence
    /// the output was cut at.
    fn cut_at_stop(&self, spelled: &str) -> bool {
        spelled
            .strip_prefix(self.text)
            .is_some_and(|rest| !rest.is_empty() && self.stops.iter().any(|s| rest.starts_with(s.as_str())))
            && !self.stops.iter().any(|s| self.text.contains(s.as_str()))
    }
}

/// C1: usage and text against the re-tokenized prompt and the ids. Also returns the prompt's ids
/// for C3.
fn tokens(c: &Context) -> (CheckResult, Option<Vec<u32>>) {
    let usage = &c.a.paperwork.body.usage;
    let workload = c.a.paperwork.body.contract.body.workload;
    let prompt = match c.model.prompt_tokens_of(&c.a.request, workload) {
        Ok(p) => p,
        Err(e) => return (inconclusive(C1, format!("cannot tokenize the prompt: {e}")), None),
    };
    if usage.input_tokens != prompt.len() as u64 {
        let why = format!(
            "usage.input_tokens is {}, the prompt is {} tokens",
            usage.input_tokens,
            prompt.len()
        );
        return (fail(C1, why), Some(prompt));
    }
    let generated = c.generated();
    if usage.output_tokens != generated.len() as u64 {
        let why = format!(
            "usage.output_tokens is {}, {} tokens were generated",
            usage.output_tokens,
            generated.len()
        );
        return (fail(C1, why), Some(prompt));
    }
    let spelled = match c.model.detokenize(generated) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            return (
                fail(C1, format!("the ids are not this model's tokens: {e}")),
                Some(prompt),
            )
        }
    };
    if spelled != c.text && !c.cut_at_stop(&spelled) {
        let why = format!(
            "the ids spell {} bytes that are not the delivered {} bytes (nor cut at a requested stop)",
            spelled.len(),
            c.text.len()
        );
        return (fail(C1, why), Some(prompt));
    }
    (
        pass(
            C1,
            format!("{} prompt and {} output tokens", prompt.len(), generated.len()),
        ),
        Some(prompt),
    )
}

/// C2: how generation ended agrees with the ids.
fn termination(c: &Context) -> CheckResult {
    let commitment = c.commitment;
    let budget = commitment.sampling.max_tokens as usize;
    let n = c.ids.len();
    if let Some(i) = c.ids[..n.saturating_sub(1)]
        .iter()
        .position(|&t| c.model.is_eog(t))
    {
        return fail(
            C2,
            format!("an end token at position {i}, before the last of {n}"),
        );
    }
    if n > budget {
        return fail(C2, format!("{n} ids, over the budget of {budget}"));
    }
    let claimed =
        c.a.output
            .get(0)
            .and_then(|ch| ch.get("finish_reason"))
            .and_then(Value::as_str);
    if claimed != Some(commitment.finish_reason.as_str()) {
        return fail(
            C2,
            format!(
                "the output says finish_reason {claimed:?}, the commitment {:?}",
                commitment.finish_reason
            ),
        );
    }
    let ends_on_eog = c.ids.last().is_some_and(|&t| c.model.is_eog(t));
    match commitment.finish_reason.as_str() {
        "length" if ends_on_eog => fail(C2, "`length`, but the last id is an end token"),
        "length" if n != budget => fail(C2, format!("`length` with {n} ids; the budget is {budget}")),
        "length" => pass(C2, format!("`length`: exactly {budget} ids")),
        "stop" if ends_on_eog => pass(C2, "`stop` on an end token"),
        "stop" => {
            let spelled = c
                .model
                .detokenize(c.ids)
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            match spelled {
                Ok(s) if c.cut_at_stop(&s) => pass(C2, "`stop` at a requested stop sequence"),
                Ok(_) if c.a.paperwork.body.cancelled => inconclusive(
                    C2,
                    "`stop` without an end token or stop sequence, on a task marked cancelled by the hub",
                ),
                Ok(_) => fail(
                    C2,
                    "`stop`, but neither an end token nor a requested stop sequence ended it",
                ),
                Err(e) => inconclusive(C2, format!("cannot detokenize: {e}")),
            }
        }
        other => fail(
            C2,
            format!("finish_reason {other:?} is neither `stop` nor `length`"),
        ),
    }
}
