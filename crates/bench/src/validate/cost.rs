//! The check's cost against the generation's, for the same task: the honest worker generates a
//! `--cost-tokens` answer (greedy, then seeded sampling at 0.8), then the validator runs every
//! check on it, one after the other on the same threads, so the machine's noise falls on both.
//! Sampled tasks are checked three times: as the validator runs them (the claimed ids in
//! micro-batches of at most 32 rows, which replay generation exactly), one row per micro-batch, and
//! in micro-batches of 512 (llama.cpp's default: faster, not exact), to show what exactness costs.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use stacknet_node::backend::llama::{LocalModel, ScoreOptions};
use stacknet_node::validator::{verdict, Model};
use stacknet_protocol::attestation::Verdict;
use stacknet_protocol::contract::Workload;
use stacknet_testkit::cheats;

use super::{judge, prompts, Probe, ValidateArgs, CHAT_MODEL};

struct Row {
    tokens: usize,
    generation: Duration,
    check: Duration,
    verdict: Verdict,
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let out = f()?;
    Ok((out, start.elapsed()))
}

pub fn run(model: &LocalModel, args: &ValidateArgs) -> Result<()> {
    let threads = model.config().threads;
    println!(
        "cost: generation (LocalModel::generate) vs the full check (C0-C3, checks::check) of the same task; {} tasks per row, max_tokens {}, {threads} threads both sides",
        args.cost_tasks, args.cost_tokens
    );
    let request = |i: usize, sampled: bool| {
        let mut r = json!({
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": format!("Write a long story about {}.", prompts::Rng::new(i as u64).pick(&["a lighthouse keeper", "a dragon", "a robot", "a lost cat", "a city under the sea", "two friends", "a baker", "a comet"]))}],
            "max_tokens": args.cost_tokens,
            "temperature": 0,
        });
        if sampled {
            r["temperature"] = json!(0.8);
            r["seed"] = json!(1000 + i);
        }
        r
    };
    // Warm-up, unreported: page faults of the mapped weights, first contexts.
    let warm = request(0, false);
    let claim = cheats::honest(model, &warm, Workload::Chat)?;
    judge(&claim, &warm, Workload::Chat, model)?;

    println!(
        "{:<34}{:>7}{:>9}{:>14}{:>12}{:>10}{:>10}",
        "", "tasks", "tokens", "generate ms", "check ms", "ratio", "verdicts"
    );
    let with_ubatch = |u| {
        let opts = ScoreOptions {
            ubatch: Some(u),
            ..ScoreOptions::default()
        };
        Probe::new(model, Some(opts), None)
    };
    let (one, wide) = (with_ubatch(1), with_ubatch(512));
    let rows: [(&str, bool, &dyn Model); 4] = [
        ("greedy (validator: <=32 rows)", false, model),
        ("sampled 0.8 (validator: <=32 rows)", true, model),
        ("sampled 0.8 (1 row per ubatch)", true, &one),
        ("sampled 0.8 (ubatch 512)", true, &wide),
    ];
    for (name, sampled, checker) in rows {
        let mut out = Vec::new();
        for i in 0..args.cost_tasks {
            let r = request(i + 1, sampled);
            let (claim, generation) = timed(|| Ok(cheats::honest(model, &r, Workload::Chat)?))?;
            let (results, check) = timed(|| judge(&claim, &r, Workload::Chat, checker))?;
            out.push(Row {
                tokens: claim.tokens.len(),
                generation,
                check,
                verdict: verdict(&results),
            });
        }
        print_row(name, &out);
    }
    println!("(ratio: total check time / total generation time; target at most 0.5)\n");
    Ok(())
}

fn print_row(name: &str, rows: &[Row]) {
    let n = rows.len().max(1) as f64;
    let tokens: usize = rows.iter().map(|r| r.tokens).sum();
    let generation: Duration = rows.iter().map(|r| r.generation).sum();
    let check: Duration = rows.iter().map(|r| r.check).sum();
    let passed = rows.iter().filter(|r| r.verdict == Verdict::Pass).count();
    println!(
        "{name:<34}{:>7}{:>9.1}{:>14.1}{:>12.1}{:>10.3}{:>10}",
        rows.len(),
        tokens as f64 / n,
        generation.as_secs_f64() * 1000.0 / n,
        check.as_secs_f64() * 1000.0 / n,
        check.as_secs_f64() / generation.as_secs_f64().max(1e-9),
        format!("{passed}/{} ok", rows.len()),
    );
}
