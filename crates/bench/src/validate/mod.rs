//! `stacknet-bench validate`: what checking a task costs, how far honest answers land from the C3
//! thresholds, and how often each cheat is caught. Everything runs the validator's real
//! [`check`](stacknet_node::validator::check) on SmolLM2 over llama.cpp, on paperwork signed as a
//! hub would assign it; the workers are the test kit's [`cheats`](stacknet_testkit::cheats) (the
//! honest worker is `cheats::honest`, the node's own generation loop).
//!
//! - [`cost`]: generation and the full check of the same 128-token tasks, side by side.
//! - [`calibrate`]: at least 1,000 honest tasks (generated prompts, greedy and seeded sampling,
//!   worker threads 1 and 2, validator threads 1 and 2, micro-batches 1 and 32, outputs of 1 to
//!   300 tokens, stop strings): the largest honest greedy gap and sampled distance, and any FAIL.
//! - [`detect`]: each cheat over N tasks, and a worker running a cheaper quantisation (Q4_0 of the
//!   same weights) under the Q4_1 file's sha256.
//!
//! [`Probe`] is the validator's model with the scoring options pinned and every position's distance
//! recorded (the checks themselves only report the worst), so one prefill gives both the verdict
//! and the numbers.

mod calibrate;
mod cost;
mod detect;
mod prompts;

use std::cell::RefCell;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_api::types::{Assignment, Round};
use stacknet_node::backend::llama::{LlamaConfig, LocalModel, ScoreOptions};
use stacknet_node::backend::BackendError;
use stacknet_node::models::{self as catalog, ModelStore};
use stacknet_node::validator::{check, forced, Model};
use stacknet_protocol::attestation::CheckResult;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::examples;
use stacknet_protocol::paperwork::{request_digest, Sampling};
use stacknet_protocol::{Sha256Digest, Signed, Timestamp};
use stacknet_testkit::cheats::Claim;

pub const CHAT_MODEL: &str = "smollm2-135m-instruct";

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Where models are stored (smollm2-135m-instruct must be there) [default: stacknet's]
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Which parts to run.
    #[arg(long, value_delimiter = ',', default_value = "cost,calibrate,detect,quant")]
    parts: Vec<Part>,
    /// Threads for generation and the check in the cost measurement.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Tasks per sampling mode in the cost measurement.
    #[arg(long, default_value_t = 6)]
    cost_tasks: usize,
    /// Tokens each cost task asks for.
    #[arg(long, default_value_t = 128)]
    cost_tokens: u32,
    /// Honest tasks in the calibration.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Tasks per cheat.
    #[arg(long, default_value_t = 12)]
    cheat_tasks: usize,
    /// The cheaper quantisation (`scripts/requantize.py` of SmolLM2's Q4_1 GGUF); `quant` is
    /// skipped without it.
    #[arg(long)]
    quant: Option<PathBuf>,
    /// Greedy tasks of the quantised worker.
    #[arg(long, default_value_t = 100)]
    quant_tasks: usize,
    /// The first task's seed for the prompt generator (runs with other seeds see other prompts).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Cost,
    Calibrate,
    Detect,
    Quant,
}

pub fn run(args: ValidateArgs) -> Result<()> {
    let dir = args
        .models_dir
        .clone()
        .unwrap_or_else(crate::models::default_models_dir);
    let spec = catalog::find(CHAT_MODEL).context("smollm2-135m-instruct is not in the catalog")?;
    let path = ModelStore::new(dir.clone())
        .path_of(spec)
        .with_context(|| format!("{CHAT_MODEL} is not in {} (stacknet models pull)", dir.display()))?;
    let sha: Sha256Digest = spec.files[0]
        .sha256
        .parse()
        .map_err(|e| anyhow::anyhow!("the catalog's sha256: {e}"))?;
    let load = |path: &PathBuf, threads: usize| -> Result<LocalModel> {
        let mut config = LlamaConfig::new(CHAT_MODEL, path.clone(), sha);
        config.threads = threads;
        LocalModel::load(config).with_context(|| format!("loading {}", path.display()))
    };
    println!(
        "stacknet-bench validate: {CHAT_MODEL} ({}) on llama.cpp, {} cores",
        path.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "thresholds: DELTA_HARD {} DELTA_MAX {} EPSILON {:e}; fail at max({}, {}bp) hard mismatches, outputs under {} tokens only on DELTA_MAX or the end token\n",
        forced::DELTA_HARD,
        forced::DELTA_MAX,
        forced::EPSILON,
        forced::MIN_HARD,
        forced::HARD_SHARE_BPS,
        forced::SHORT_OUTPUT_TOKENS
    );
    let one = load(&path, 1)?;
    let two = load(&path, 2)?;
    let main = if args.threads == 2 { &two } else { &one };
    for part in &args.parts {
        match part {
            Part::Cost if args.threads <= 2 => cost::run(main, &args)?,
            Part::Cost => cost::run(&load(&path, args.threads)?, &args)?,
            Part::Calibrate => calibrate::run([&one, &two], &args)?,
            Part::Detect => detect::cheats(&two, &args)?,
            Part::Quant => match &args.quant {
                Some(q) => detect::quant(&load(q, 2)?, &two, &args)?,
                None => println!("quant: skipped (no --quant FILE; scripts/requantize.py writes one)\n"),
            },
        }
    }
    Ok(())
}

/// What the hub would assign for `claim`: paperwork signed by the examples' node for the
/// examples' hub, the model pinned to the validator's.
pub fn assignment(
    claim: &Claim,
    request: &Value,
    workload: Workload,
    required: Sha256Digest,
) -> Result<Assignment> {
    let output = claim.choices(workload);
    let mut pw = examples::paperwork()?.body;
    pw.contract = contract_for(workload)?;
    pw.request_sha256 = request_digest(request)?;
    pw.output_sha256 = digest_of_response(workload, &json!({ "choices": output }))?;
    pw.usage = claim.usage.clone();
    pw.backend.model_sha256 = Some(claim.model_sha256);
    pw.commitment = Some(claim.commitment());
    let paperwork = Signed::sign(pw, &examples::node_key())?;
    Ok(Assignment {
        paperwork_id: paperwork.id()?,
        paperwork,
        round: Round::Check,
        request: request.clone(),
        output,
        output_tokens: Some(claim.tokens.clone()),
        required_model_sha256: Some(required),
        commit_by: Timestamp::now(),
    })
}

/// The examples' contract, for `workload` (the golden one is a chat), signed by the hub again.
fn contract_for(workload: Workload) -> Result<Signed<stacknet_protocol::contract::PromptContract>> {
    let mut c = examples::contract();
    c.workload = workload;
    Ok(Signed::sign(c, &examples::hub_key())?)
}

/// Runs every check of `claim` with `model` as the validator's.
pub fn judge(
    claim: &Claim,
    request: &Value,
    workload: Workload,
    model: &dyn Model,
) -> Result<Vec<CheckResult>> {
    let a = assignment(claim, request, workload, model.sha256())?;
    Ok(check(&a, &examples::hub_key().public_key(), Some(model)))
}

/// The validator's model with its scoring options pinned (`None`: as the validator runs, the
/// claimed ids in micro-batches of at most 32 rows) and each scored position's distance recorded: the greedy gap or the sampled
/// draw's distance outside its slice, as [`forced::position`] computes it.
pub struct Probe<'a> {
    pub model: &'a LocalModel,
    pub opts: Option<ScoreOptions>,
    /// The task's sampling, to score positions with; `None`: record nothing (for timing).
    pub sampling: Option<Sampling>,
    pub distances: RefCell<Vec<f64>>,
}

impl<'a> Probe<'a> {
    pub fn new(model: &'a LocalModel, opts: Option<ScoreOptions>, sampling: Option<Sampling>) -> Self {
        Self {
            model,
            opts,
            sampling,
            distances: RefCell::new(Vec::new()),
        }
    }

    pub fn distances(&self) -> Vec<f64> {
        self.distances.borrow().clone()
    }
}

impl Model for Probe<'_> {
    fn sha256(&self) -> Sha256Digest {
        Model::sha256(self.model)
    }

    fn prompt_tokens_of(&self, request: &Value, workload: Workload) -> Result<Vec<u32>, BackendError> {
        Model::prompt_tokens_of(self.model, request, workload)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<Vec<u8>, BackendError> {
        Model::detokenize(self.model, ids)
    }

    fn is_eog(&self, id: u32) -> bool {
        Model::is_eog(self.model, id)
    }

    fn teacher_forced(
        &self,
        prompt: &[u32],
        claimed: &[u32],
        at: &mut dyn FnMut(u32, &[f32]),
    ) -> Result<(), BackendError> {
        let opts = self.opts.unwrap_or_default();
        self.distances.borrow_mut().clear();
        self.model.teacher_forced(prompt, claimed, opts, |i, logits| {
            if let (Some(&c), Some(s)) = (claimed.get(i as usize), &self.sampling) {
                let p = forced::position(logits, s, i, c);
                self.distances.borrow_mut().push(p.distance);
            }
            at(i, logits)
        })
    }
}

/// Whether C3 would fail these distances with a hard limit of `delta_hard` (and, greedy,
/// `delta_max`), the other rules as [`forced::judge`] has them: for what-if tables.
pub fn fails_with(
    distances: &[f64],
    ends_on_eog: bool,
    greedy: bool,
    delta_hard: f64,
    delta_max: f64,
) -> bool {
    let n = distances.len();
    let hard = distances.iter().filter(|&&d| d > delta_hard).count();
    let eog = ends_on_eog && distances.last().is_some_and(|&d| d > delta_hard);
    let decisive = greedy && distances.iter().any(|&d| d > delta_max);
    eog || decisive || (n >= forced::SHORT_OUTPUT_TOKENS && hard >= forced::hard_limit(n))
}

/// The `q`-quantile (0 to 1) of `values`, nearest rank; 0 for none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}
