//! Detection rates. Each cheat of the test kit (`stacknet_testkit::cheats`), plus two sampled-task
//! cheats written here (a worker that draws with its own seed, or greedily, and claims the
//! requested seeded sampling), over `--cheat-tasks` generated tasks each, checked as the validator
//! checks them. Then a worker that runs a cheaper quantisation of the same weights (Q4_0 of the
//! Q4_1 file) greedily under the Q4_1 file's sha256, against the honest Q4_1 worker on the same
//! tasks: the share C3 fails, the gaps it leaves, and what other thresholds would catch.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Value};
use stacknet_node::backend::llama::LocalModel;
use stacknet_node::validator::checks::C3;
use stacknet_node::validator::{forced, verdict};
use stacknet_protocol::attestation::{CheckResult, Verdict};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::paperwork::Sampling;
use stacknet_protocol::Sha256Digest;
use stacknet_testkit::cheats::{self, Cheat, Claim};

use super::{fails_with, judge, max, prompts, quantile, Probe, ValidateArgs};

/// Other sampled thresholds the detection table shows the sampled cheats against.
const WHAT_IF_EPSILONS: [f64; 5] = [1e-3, 0.01, 0.05, 0.1, 0.25];

/// The sampled-task cheats of the research's matrix (row 10) that the test kit does not plant.
#[derive(Clone, Copy)]
enum SeedCheat {
    /// Draws with seed + 1, claims the requested seed.
    OwnSeed,
    /// Decodes greedily, claims the requested temperature and seed.
    Greedy,
}

fn seed_cheat(how: SeedCheat, model: &LocalModel, request: &Value, workload: Workload) -> Result<Claim> {
    let mut ran = request.clone();
    match how {
        SeedCheat::OwnSeed => ran["seed"] = json!(request["seed"].as_u64().unwrap_or(0) + 1),
        SeedCheat::Greedy => ran["temperature"] = json!(0),
    }
    let mut claim = cheats::honest(model, &ran, workload)?;
    let (asked, _) = model.sampling_of(request, workload)?;
    claim.sampling = Sampling {
        max_tokens: claim.sampling.max_tokens,
        ..asked
    };
    Ok(claim)
}

fn failed_code(results: &[CheckResult]) -> String {
    results
        .iter()
        .find(|r| !r.passed && !r.inconclusive)
        .and_then(|r| r.code.clone())
        .unwrap_or_else(|| "-".into())
}

pub fn cheats(model: &LocalModel, args: &ValidateArgs) -> Result<()> {
    println!(
        "detect: each cheat over {} generated tasks (greedy and sampled in turn, budgets 32-128), checked by the validator ({} threads, claimed ids in micro-batches of at most 32 rows)",
        args.cheat_tasks,
        model.config().threads
    );
    println!(
        "{:<22}{:>7}{:>9}{:>8}{:>8}{:>6}  caught by",
        "cheat", "tasks", "tokens", "FAIL", "rate", "INC"
    );
    let other_sha = Sha256Digest([0x42; 32]);
    let names: Vec<String> = Cheat::ALL
        .iter()
        .map(|c| c.name().to_owned())
        .chain(["own-seed".to_owned(), "greedy-as-sampled".to_owned()])
        .collect();
    for (k, name) in names.iter().enumerate() {
        let seed_cheat = match name.as_str() {
            "own-seed" => Some(SeedCheat::OwnSeed),
            "greedy-as-sampled" => Some(SeedCheat::Greedy),
            _ => None,
        };
        let (mut fails, mut inconclusive, mut tokens) = (0, 0, 0);
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        // Its sampled tasks: what the whole verdict would be with another EPSILON.
        let (mut sampled, mut what_if) = (0, [0usize; WHAT_IF_EPSILONS.len()]);
        for i in 0..args.cheat_tasks {
            let greedy = seed_cheat.is_none() && i % 2 == 0;
            let t = prompts::task(
                args.seed + 7_000 + k as u64,
                i as u64,
                Some(greedy),
                Some((32, 128)),
            );
            let claim = match seed_cheat {
                Some(how) => seed_cheat_claim(how, model, &t)?,
                None => cheats::cheat(Cheat::ALL[k], model, &t.request, t.workload, other_sha)?,
            };
            // The probe scores as the validator does, and keeps every position's distance.
            let probe = Probe::new(model, None, Some(claim.sampling.clone()));
            let results = judge(&claim, &t.request, t.workload, &probe)?;
            tokens += claim.tokens.len();
            if claim.sampling.temperature_milli != 0 {
                sampled += 1;
                let d = probe.distances();
                let ends = claim.tokens.last().is_some_and(|&id| model.is_eog(id));
                let before_c3 = results
                    .iter()
                    .any(|r| !r.passed && !r.inconclusive && r.code.as_deref() != Some(C3));
                for (caught, eps) in what_if.iter_mut().zip(WHAT_IF_EPSILONS) {
                    *caught += usize::from(before_c3 || fails_with(&d, ends, false, eps, f64::INFINITY));
                }
            }
            match verdict(&results) {
                Verdict::Fail => {
                    fails += 1;
                    *codes.entry(failed_code(&results)).or_default() += 1;
                }
                Verdict::Inconclusive => inconclusive += 1,
                Verdict::Pass => {
                    let c3 = results.last().map_or("", |r| r.detail.as_str());
                    println!("  missed: {name} task {i} ({}): {c3}", t.kind);
                }
            }
        }
        let n = args.cheat_tasks.max(1);
        println!(
            "{name:<22}{:>7}{:>9.1}{:>8}{:>7.0}%{:>6}  {codes:?}",
            args.cheat_tasks,
            tokens as f64 / n as f64,
            fails,
            100.0 * fails as f64 / n as f64,
            inconclusive
        );
        if sampled > 0 {
            let row: Vec<String> = WHAT_IF_EPSILONS
                .iter()
                .zip(what_if)
                .map(|(eps, caught)| format!("{eps}: {caught}/{sampled}"))
                .collect();
            println!("  sampled tasks caught at EPSILON {}", row.join(", "));
        }
    }
    println!();
    Ok(())
}

fn seed_cheat_claim(how: SeedCheat, model: &LocalModel, t: &prompts::Task) -> Result<Claim> {
    seed_cheat(how, model, &t.request, t.workload)
}

/// One side of the quantisation run: per task, the verdict and the C3 distances.
#[derive(Default)]
struct Side {
    verdicts: Vec<(Verdict, String)>,
    distances: Vec<(Vec<f64>, bool)>,
}

pub fn quant(cheap: &LocalModel, honest: &LocalModel, args: &ValidateArgs) -> Result<()> {
    println!(
        "quant: a worker running {} (Q4_0 of the same weights) greedily, claiming the Q4_1 sha256, against the honest Q4_1 worker on the same {} tasks (budgets 64-192), both checked by the Q4_1 validator (2 threads)",
        cheap.config().path.display(),
        args.quant_tasks
    );
    let (mut q, mut h) = (Side::default(), Side::default());
    let mut identical = 0;
    for i in 0..args.quant_tasks {
        let t = prompts::task(args.seed + 9_000, i as u64, Some(true), Some((64, 192)));
        let qc = cheats::honest(cheap, &t.request, t.workload)?;
        let hc = cheats::honest(honest, &t.request, t.workload)?;
        identical += usize::from(qc.tokens == hc.tokens);
        for (claim, side) in [(&qc, &mut q), (&hc, &mut h)] {
            let probe = Probe::new(honest, None, Some(claim.sampling.clone()));
            let results = judge(claim, &t.request, t.workload, &probe)?;
            side.verdicts.push((verdict(&results), failed_code(&results)));
            let ends = claim.tokens.last().is_some_and(|&id| honest.is_eog(id));
            side.distances.push((probe.distances(), ends));
        }
    }
    let n = args.quant_tasks.max(1) as f64;
    println!(
        "outputs identical to the honest worker's: {identical}/{} ({:.0}%)",
        args.quant_tasks,
        100.0 * identical as f64 / n
    );
    println!(
        "{:<18}{:>7}{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "worker", "FAIL", "rate", "positions", "gap>0", "p50>0", "p90>0", "p99>0", "largest"
    );
    for (name, side) in [("Q4_0 (cheat)", &q), ("Q4_1 (honest)", &h)] {
        let fails = side.verdicts.iter().filter(|v| v.0 == Verdict::Fail).count();
        let all: Vec<f64> = side.distances.iter().flat_map(|d| d.0.clone()).collect();
        let nonzero: Vec<f64> = all.iter().copied().filter(|&d| d > 0.0).collect();
        println!(
            "{name:<18}{fails:>7}{:>7.0}%{:>10}{:>10}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
            100.0 * fails as f64 / n,
            all.len(),
            nonzero.len(),
            quantile(&nonzero, 0.5),
            quantile(&nonzero, 0.9),
            quantile(&nonzero, 0.99),
            max(&nonzero)
        );
    }
    let per_task_hard: Vec<usize> = q
        .distances
        .iter()
        .map(|(d, _)| d.iter().filter(|&&x| x > f64::from(forced::DELTA_HARD)).count())
        .collect();
    let mut hist: BTreeMap<usize, usize> = BTreeMap::new();
    for k in per_task_hard {
        *hist.entry(k.min(5)).or_default() += 1;
    }
    println!("Q4_0 tasks by hard mismatches at DELTA_HARD (5 = 5 or more): {hist:?}");
    println!(
        "what-if (same rules, other DELTA_HARD, DELTA_MAX {}): Q4_0 caught / honest failed",
        forced::DELTA_MAX
    );
    for delta in [0.1, 0.25, 0.5, 1.0, 2.0, 4.0] {
        let caught = |s: &Side| {
            s.distances
                .iter()
                .filter(|(d, eog)| fails_with(d, *eog, true, delta, f64::from(forced::DELTA_MAX)))
                .count()
        };
        println!(
            "  DELTA_HARD {delta:<5} {:>4}/{} ({:>3.0}%)   honest {}/{}",
            caught(&q),
            args.quant_tasks,
            100.0 * caught(&q) as f64 / n,
            caught(&h),
            args.quant_tasks
        );
    }
    println!();
    Ok(())
}
