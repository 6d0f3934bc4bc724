//! Cheating workers for the validator tests: each wraps the real llama.cpp [`LocalModel`] and lies
//! about one thing, the way an operator who wants to be paid for less work would. Chosen by name
//! (`--cheat NAME`, [`Cheat::from_str`]); a test kit fixture, never a switch of the real node.
//!
//! | name | what it claims | caught by |
//! |---|---|---|
//! | `wrong-sha` | the honest output, under another model's sha256 | C0 (the hub's own, at acceptance, where the catalog pins the model) |
//! | `other-model` | SmolLM2's answer to another prompt, as this prompt's (usage as if honest) | C3 |
//! | `truncate-stop` | the first half of the ids, `stop`, no end token | C2 |
//! | `truncate-eos` | the first half, then an end token, `stop` | C3 (the end token must pass) |
//! | `short-length` | the first half, `length` | C2 |
//! | `fabricate` | random ids of the vocabulary, then an end token | C3 |
//! | `splice` | the first half honest, then random ids and an end token | C3 |
//! | `inflate-usage` | the honest output with usage +50 prompt and +10% output tokens | C1 |
//! | `hash-mismatch` | the honest output, the commitment hashing other ids | C0 |
//!
//! Every cheat emits a stream consistent with its own claim (the delivered text is what its ids
//! spell), so the hub accepts its paperwork unless the hub's own C0 sees the lie.

use std::str::FromStr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use stacknet_node::backend::llama::{Flow, LlamaConfig, LocalModel, BACKEND_ID, LLAMA_CPP_2_VERSION};
use stacknet_node::backend::{Backend, BackendError, BackendOutcome, BackendTask, Committed};
use stacknet_node::models::{self, ModelStore};
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::paperwork::{tokens_sha256, BackendInfo, Commitment, Sampling};
use stacknet_protocol::wire::ModelOffer;
use stacknet_protocol::{sampler, Sha256Digest};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cheat {
    WrongSha,
    OtherModel,
    TruncateStop,
    TruncateEos,
    ShortLength,
    Fabricate,
    Splice,
    InflateUsage,
    HashMismatch,
}

impl Cheat {
    pub const ALL: [Cheat; 9] = [
        Cheat::WrongSha,
        Cheat::OtherModel,
        Cheat::TruncateStop,
        Cheat::TruncateEos,
        Cheat::ShortLength,
        Cheat::Fabricate,
        Cheat::Splice,
        Cheat::InflateUsage,
        Cheat::HashMismatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cheat::WrongSha => "wrong-sha",
            Cheat::OtherModel => "other-model",
            Cheat::TruncateStop => "truncate-stop",
            Cheat::TruncateEos => "truncate-eos",
            Cheat::ShortLength => "short-length",
            Cheat::Fabricate => "fabricate",
            Cheat::Splice => "splice",
            Cheat::InflateUsage => "inflate-usage",
            Cheat::HashMismatch => "hash-mismatch",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no cheat {0:?}; known: wrong-sha, other-model, truncate-stop, truncate-eos, short-length, fabricate, splice, inflate-usage, hash-mismatch")]
pub struct UnknownCheat(String);

impl FromStr for Cheat {
    type Err = UnknownCheat;
    fn from_str(s: &str) -> Result<Self, UnknownCheat> {
        Cheat::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCheat(s.to_owned()))
    }
}

/// The model `wrong-sha` claims to have run: another catalog model's pinned GGUF.
pub const OTHER_MODEL: &str = "gemma-3-270m";

/// The pinned sha256 of [`OTHER_MODEL`] (what `wrong-sha` reports).
pub fn other_sha() -> Sha256Digest {
    models::find(OTHER_MODEL)
        .and_then(|spec| spec.files.first())
        .and_then(|f| f.sha256.parse().ok())
        .unwrap_or_else(|| Sha256Digest::of(OTHER_MODEL.as_bytes()))
}

/// Loads the built-in model `name` from `models_dir` (pulled with `stacknet models pull`), with
/// `threads` llama.cpp threads (every core when `None`). Blocking.
pub fn load_model(
    models_dir: &std::path::Path,
    name: &str,
    threads: Option<usize>,
) -> Result<LocalModel, BackendError> {
    let spec =
        models::find(name).ok_or_else(|| BackendError::Setup(format!("no model {name} in the catalog")))?;
    let path = ModelStore::new(models_dir).path_of(spec).ok_or_else(|| {
        BackendError::Setup(format!(
            "{name} is not pulled into {} (stacknet models pull {name})",
            models_dir.display()
        ))
    })?;
    let sha = spec
        .files
        .first()
        .and_then(|f| f.sha256.parse().ok())
        .ok_or_else(|| BackendError::Setup(format!("{name} has no pinned sha256")))?;
    let mut config = LlamaConfig::new(name, path, sha);
    if let Some(t) = threads {
        config.threads = t.max(1);
    }
    LocalModel::load(config)
}

/// What a worker claims for one task: the ids it sends, the ids its commitment hashes (the same,
/// for an honest worker), the text delivered, usage, finish and sampling, and the model sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub tokens: Vec<u32>,
    pub committed_tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: String,
    pub usage: Usage,
    pub sampling: Sampling,
    pub model_sha256: Sha256Digest,
}

impl Claim {
    pub fn commitment(&self) -> Commitment {
        Commitment {
            output_tokens_sha256: tokens_sha256(&self.committed_tokens),
            output_token_count: self.committed_tokens.len() as u64,
            finish_reason: self.finish_reason.clone(),
            sampling: self.sampling.clone(),
        }
    }

    /// The `choices` array the client receives.
    pub fn choices(&self, workload: Workload) -> Value {
        match workload {
            Workload::Completion => {
                json!([{"index": 0, "text": self.text, "finish_reason": self.finish_reason, "logprobs": null}])
            }
            _ => {
                json!([{"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": self.finish_reason, "logprobs": null}])
            }
        }
    }
}

/// The requested stop sequences.
fn stops(request: &Value) -> Vec<String> {
    match request.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// What the honest node claims for `request`: generation as the node runs it, the text cut at the
/// first requested stop sequence.
pub fn honest(model: &LocalModel, request: &Value, workload: Workload) -> Result<Claim, BackendError> {
    let stops = stops(request);
    let mut bytes = Vec::new();
    let mut cut = None;
    let done = model.generate(request, workload, |piece| {
        bytes.extend_from_slice(piece);
        let text = String::from_utf8_lossy(&bytes);
        cut = stops.iter().filter_map(|s| text.find(s.as_str())).min();
        Ok(if cut.is_some() {
            Flow::Stopped
        } else {
            Flow::Continue
        })
    })?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(at) = cut {
        text.truncate(at);
    }
    Ok(Claim {
        committed_tokens: done.tokens.clone(),
        tokens: done.tokens,
        text,
        finish_reason: done.finish_reason.to_owned(),
        usage: done.usage,
        sampling: done.sampling,
        model_sha256: model.config().model_sha256,
    })
}

/// A deterministic stand-in for randomness: ids spread over the vocabulary, never an end token.
fn random_ids(model: &LocalModel, n: usize, seed: u32) -> Vec<u32> {
    let vocab = model.n_vocab().max(1);
    (0..n as u32)
        .map(|i| (sampler::draw(seed, i) * f64::from(vocab)) as u32)
        // Never an end token: the lie must be in what was generated, not a stop a check of the
        // termination catches first. One step down is not enough (SmolLM2's end tokens are
        // neighbours: 1 lands on 0), so keep stepping down, wrapping at 0.
        .map(|mut id| {
            let mut steps = 0;
            while model.is_eog(id) && steps < vocab {
                id = id.checked_sub(1).unwrap_or(vocab - 1);
                steps += 1;
            }
            id
        })
        .collect()
}

fn end_token(model: &LocalModel, honest: &Claim) -> Option<u32> {
    honest
        .tokens
        .last()
        .copied()
        .filter(|&t| model.is_eog(t))
        .or_else(|| (0..model.n_vocab()).rev().find(|&t| model.is_eog(t)))
}

/// A claim made of `ids`, with usage and text that agree with them (the lie is in the ids).
fn claim_of(model: &LocalModel, honest: &Claim, ids: Vec<u32>, finish: &str) -> Claim {
    let generated: Vec<u32> = match ids.split_last() {
        Some((last, rest)) if model.is_eog(*last) => rest.to_vec(),
        _ => ids.clone(),
    };
    Claim {
        text: String::from_utf8_lossy(&model.detokenize(&generated)).into_owned(),
        usage: Usage {
            output_tokens: generated.len() as u64,
            ..honest.usage.clone()
        },
        committed_tokens: ids.clone(),
        tokens: ids,
        finish_reason: finish.to_owned(),
        ..honest.clone()
    }
}

/// What `cheat` claims for `request`. `other_sha` is the sha256 `wrong-sha` reports.
pub fn cheat(
    cheat: Cheat,
    model: &LocalModel,
    request: &Value,
    workload: Workload,
    other_sha: Sha256Digest,
) -> Result<Claim, BackendError> {
    let h = honest(model, request, workload)?;
    let gen_len = h.usage.output_tokens as usize;
    // Room for the appended end token within the budget.
    let room = (h.sampling.max_tokens as usize).saturating_sub(1);
    let half = (gen_len / 2).max(1);
    let eog = end_token(model, &h);
    Ok(match cheat {
        Cheat::WrongSha => Claim {
            model_sha256: other_sha,
            ..h
        },
        Cheat::OtherModel => {
            let mut other = request.clone();
            other["messages"] = json!([{"role": "user", "content": "Write a short poem about the sea."}]);
            other["prompt"] = json!("Write a short poem about the sea.");
            let o = honest(model, &other, workload)?;
            claim_of(model, &h, o.tokens, &o.finish_reason)
        }
        Cheat::TruncateStop => claim_of(model, &h, h.tokens[..half.min(h.tokens.len())].to_vec(), "stop"),
        Cheat::TruncateEos => {
            let mut ids = h.tokens[..half.min(h.tokens.len())].to_vec();
            ids.extend(eog);
            claim_of(model, &h, ids, "stop")
        }
        Cheat::ShortLength => claim_of(model, &h, h.tokens[..half.min(h.tokens.len())].to_vec(), "length"),
        Cheat::Fabricate => {
            let mut ids = random_ids(model, gen_len.clamp(2, room.max(2)), h.sampling.seed ^ 0x5eed);
            ids.extend(eog);
            claim_of(model, &h, ids, "stop")
        }
        Cheat::Splice => {
            let mut ids = h.tokens[..half.min(h.tokens.len())].to_vec();
            ids.extend(random_ids(
                model,
                room.min(gen_len).saturating_sub(half).max(2),
                h.sampling.seed ^ 0x5911ce,
            ));
            ids.extend(eog);
            claim_of(model, &h, ids, "stop")
        }
        Cheat::InflateUsage => Claim {
            usage: Usage {
                input_tokens: h.usage.input_tokens + 50,
                output_tokens: h.usage.output_tokens + h.usage.output_tokens.div_ceil(10),
                units: 0,
            },
            ..h
        },
        Cheat::HashMismatch => {
            let mut committed = h.tokens.clone();
            committed.reverse();
            committed.push(eog.unwrap_or(0));
            Claim {
                committed_tokens: committed,
                ..h
            }
        }
    })
}

/// A backend that serves `name` with `model` and cheats as told (a fixture node's backend).
#[derive(Clone)]
pub struct CheatBackend {
    pub model: Arc<LocalModel>,
    pub name: String,
    pub cheat: Option<Cheat>,
    /// The sha256 `wrong-sha` claims.
    pub other_sha: Sha256Digest,
}

impl std::fmt::Debug for CheatBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheatBackend")
            .field("name", &self.name)
            .field("cheat", &self.cheat)
            .finish_non_exhaustive()
    }
}

impl Backend for CheatBackend {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: self.name.clone(),
            workloads: vec![Workload::Chat, Workload::Completion],
            backend: BACKEND_ID.to_owned(),
            model_sha256: Some(self.model.config().model_sha256),
            tool: None,
        }]
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let me = self.clone();
        Box::pin(async move {
            let (request, workload) = (task.request.clone(), task.workload);
            let claim = tokio::task::spawn_blocking(move || match me.cheat {
                Some(c) => cheat(c, &me.model, &request, workload, me.other_sha),
                None => honest(&me.model, &request, workload),
            })
            .await
            .map_err(|e| BackendError::Setup(format!("the cheat panicked: {e}")))??;
            for chunk in stream(&claim, workload, &task.model) {
                chunks.send(chunk).await.map_err(|_| BackendError::Abandoned)?;
            }
            Ok(BackendOutcome {
                usage: Some(claim.usage.clone()),
                info: BackendInfo {
                    id: BACKEND_ID.to_owned(),
                    version: LLAMA_CPP_2_VERSION.to_owned(),
                    model: task.model.clone(),
                    model_sha256: Some(claim.model_sha256),
                },
                warm: true,
                files: Vec::new(),
                committed: Some(Committed {
                    commitment: claim.commitment(),
                    tokens: claim.tokens,
                }),
            })
        })
    }
}

/// The streamed chunks of a claim, shaped as the built-in backend's.
fn stream(claim: &Claim, workload: Workload, model: &str) -> Vec<Value> {
    let (object, text, finish) = match workload {
        Workload::Completion => (
            "text_completion",
            json!([{"index": 0, "text": claim.text, "finish_reason": null, "logprobs": null}]),
            json!([{"index": 0, "text": "", "finish_reason": claim.finish_reason, "logprobs": null}]),
        ),
        _ => (
            "chat.completion.chunk",
            json!([{"index": 0, "delta": {"role": "assistant", "content": claim.text}, "finish_reason": null}]),
            json!([{"index": 0, "delta": {}, "finish_reason": claim.finish_reason}]),
        ),
    };
    let u = &claim.usage;
    let usage = json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.input_tokens + u.output_tokens});
    [text, finish, json!([])]
        .into_iter()
        .enumerate()
        .map(|(i, choices)| {
            let mut c =
                json!({"id": "cheat", "object": object, "created": 0, "model": model, "choices": choices});
            if i == 2 {
                c["usage"] = usage.clone();
            }
            c
        })
        .collect()
}
