//! The check's cost against the generation's, for the same task: the honest worker generates a
//! `--cost-tokens` answer (greedy, then seeded sampling at 0.8), then the validator runs every
//! check on it, one after the other on the same threads, so the machine's noise falls on both.
//! Sampled tasks are checked twice: as the validator runs them and with a batched prefill
//! (llama.cpp's default micro-batch), to show what `exact` costs.

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
    let batched = Probe::new(model, Some(ScoreOptions::default()), None);
    let rows: [(&str, bool, &dyn Model); 3] = [
        ("greedy (batched prefill)", false, model),
        ("sampled 0.8 (exact, ubatch 1)", true, model),
        ("sampled 0.8 (batched prefill)", true, &batched),
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
