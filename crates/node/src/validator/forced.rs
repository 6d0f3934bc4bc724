//! C3 `C3_teacher_forced`: one prefill of the prompt and the claimed ids, and at every output
//! position the question "would the model, sampling as the worker said it did, have produced this
//! token?".
//!
//! - Greedy (temperature 0): the gap is the top logit minus the claimed token's. A gap over
//!   [`DELTA_HARD`] is a hard mismatch; any gap over [`DELTA_MAX`] fails on its own.
//! - Sampled (`stacknet/sampler/v1`): the position's draw must lie in the claimed token's slice of
//!   the replayed distribution, give or take [`EPSILON`]; a token that is not a candidate at all is
//!   a hard mismatch.
//!
//! FAIL when the hard mismatches reach `max(`[`MIN_HARD`]`, `[`HARD_SHARE_BPS`]` of the output)`,
//! or when the final end token is a hard mismatch (it must pass on its own: that is what catches a
//! truncated answer with an end token appended). Outputs shorter than [`SHORT_OUTPUT_TOKENS`] fail
//! only on a gap over [`DELTA_MAX`] or the final end token.
//!
//! Every task is scored with the arithmetic of generation: the prompt decoded whole, the claimed
//! ids in micro-batches of at most 32 rows (`ScoreOptions::default()`; llama.cpp's CPU kernels change
//! above that, and a prefill in micro-batches of 512 put honest greedy gaps at 0.25 and honest
//! sampled draws up to 0.17 outside their slices). So scored, every honest position of the
//! real-model tests was the argmax (gap 0) or held its draw (distance 0), at 1 and 2 threads. The
//! 1,000-task calibration (`stacknet-bench validate --parts calibrate`, seed 3; 43,333 positions
//! across worker and validator threads 1/2 and micro-batches 1, 32 and the validator's) found one
//! honest greedy gap of 0.026 (38x under [`DELTA_HARD`]) and, in one sampled 246-token answer whose
//! worker and validator ran on different thread counts, five distances up to 0.026 at its last
//! positions, past 256 tokens of context. So [`EPSILON`] is 0.1, about 4x the largest honest
//! distance (at 1e-3 that honest task failed); the sampled cheats' detection it keeps, the
//! end-token rule's included, is measured by `stacknet-bench validate --parts detect`. A Q4_0
//! copy of the weights under the Q4_1 sha256 is failed on 55% of its answers at `DELTA_HARD` 1.0.

use stacknet_protocol::attestation::{CheckResult, Mismatch};
use stacknet_protocol::paperwork::Sampling;
use stacknet_protocol::sampler;

use super::checks::{fail, inconclusive, pass, Model, C3};

/// A greedy position whose top logit exceeds the claimed token's by more than this is a hard mismatch.
pub const DELTA_HARD: f32 = 1.0;
/// A greedy gap this large fails the task on its own.
pub const DELTA_MAX: f32 = 8.0;
/// How far (in probability mass) a sampled position's draw may lie outside the claimed slice.
pub const EPSILON: f64 = 0.1;
/// The fewest hard mismatches that fail a task...
pub const MIN_HARD: usize = 3;
/// ... or this share of its output positions, in basis points, if more.
pub const HARD_SHARE_BPS: usize = 200;
/// Outputs shorter than this fail only on [`DELTA_MAX`] or the final end token.
pub const SHORT_OUTPUT_TOKENS: usize = 16;
/// Evidence lists at most this many positions (the worst first), to keep attestations small.
pub const MAX_EVIDENCE: usize = 64;

/// What one position showed.
#[derive(Clone, Debug, PartialEq)]
pub struct Position {
    pub mismatch: Mismatch,
    /// A hard mismatch.
    pub hard: bool,
    /// So far off that it fails alone (greedy gap over [`DELTA_MAX`]).
    pub decisive: bool,
    /// Greedy: the gap in logits; sampled: the draw's distance outside the slice (1.0: not a candidate).
    pub distance: f64,
}

/// Scores one position: `claimed` against the logits that predict it.
pub fn position(logits: &[f32], s: &Sampling, i: u32, claimed: u32) -> Position {
    let top = sampler::sample(logits, s, i).unwrap_or(0);
    if s.temperature_milli == 0 {
        let gap = match (logits.get(top as usize), logits.get(claimed as usize)) {
            (Some(t), Some(c)) => f64::from(t - c),
            _ => f64::INFINITY,
        };
        let gap_milli = if gap.is_finite() {
            (gap * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32
        } else {
            u32::MAX
        };
        return Position {
            mismatch: Mismatch {
                position: i,
                claimed,
                top,
                gap_milli,
            },
            hard: gap > f64::from(DELTA_HARD),
            decisive: gap > f64::from(DELTA_MAX),
            distance: gap,
        };
    }
    let u = sampler::draw(s.seed, i);
    let distance = match sampler::interval(logits, s, claimed) {
        Some((lo, _)) if u < lo => lo - u,
        Some((_, hi)) if u >= hi => u - hi,
        Some(_) => 0.0,
        None => 1.0,
    };
    let gap_milli = if distance >= 1.0 {
        u32::MAX
    } else {
        (distance * 1e6).round() as u32
    };
    Position {
        mismatch: Mismatch {
            position: i,
            claimed,
            top,
            gap_milli,
        },
        hard: distance > EPSILON,
        decisive: false,
        distance,
    }
}

/// How many hard mismatches fail an output of `n` positions.
pub fn hard_limit(n: usize) -> usize {
    MIN_HARD.max((n * HARD_SHARE_BPS).div_ceil(10_000))
}

/// C3 on one task: `prompt` and the claimed `ids` (a final end token included).
pub fn score(model: &dyn Model, prompt: &[u32], ids: &[u32], s: &Sampling) -> CheckResult {
    if ids.is_empty() {
        return pass(C3, "no output tokens to score");
    }
    let mut seen = Vec::with_capacity(ids.len());
    let result = model.teacher_forced(prompt, ids, &mut |i, logits| {
        if let Some(&claimed) = ids.get(i as usize) {
            seen.push(position(logits, s, i, claimed));
        }
    });
    if let Err(e) = result {
        return inconclusive(C3, format!("teacher forcing failed: {e}"));
    }
    if seen.len() != ids.len() {
        return inconclusive(C3, format!("scored {} of {} positions", seen.len(), ids.len()));
    }
    let ends_on_eog = ids.last().is_some_and(|&t| model.is_eog(t));
    judge(&seen, ends_on_eog, s)
}

/// The verdict over scored positions.
pub fn judge(seen: &[Position], ends_on_eog: bool, s: &Sampling) -> CheckResult {
    let n = seen.len();
    let hard: Vec<&Position> = seen.iter().filter(|p| p.hard).collect();
    let worst = seen.iter().map(|p| p.distance).fold(0.0, f64::max);
    let mode = if s.temperature_milli == 0 {
        "greedy"
    } else {
        "sampled"
    };
    let eog_fails = ends_on_eog && seen.last().is_some_and(|p| p.hard);
    let decisive = seen.iter().any(|p| p.decisive);
    let many = n >= SHORT_OUTPUT_TOKENS && hard.len() >= hard_limit(n);
    let score_ppm = Some(((n - hard.len()) as u64 * 1_000_000 / n as u64) as u32);
    let summary = format!(
        "{mode}: {} hard mismatches in {n} positions (fail at {}), worst {}{worst:.4}",
        hard.len(),
        hard_limit(n),
        if s.temperature_milli == 0 {
            "gap "
        } else {
            "distance "
        },
    );
    if !(eog_fails || decisive || many) {
        return CheckResult {
            score_ppm,
            ..pass(C3, summary)
        };
    }
    let why = if eog_fails {
        "the final end token is a hard mismatch"
    } else if decisive {
        "a gap over the decisive limit"
    } else {
        "too many hard mismatches"
    };
    let mut evidence: Vec<&Position> = hard;
    evidence.sort_by(|a, b| {
        b.distance
            .total_cmp(&a.distance)
            .then(a.mismatch.position.cmp(&b.mismatch.position))
    });
    let last = seen.last().filter(|p| eog_fails && p.hard);
    let mut listed: Vec<Mismatch> = last.map(|p| p.mismatch.clone()).into_iter().collect();
    listed.extend(
        evidence
            .iter()
            .filter(|p| Some(p.mismatch.position) != last.map(|l| l.mismatch.position))
            .take(MAX_EVIDENCE - listed.len())
            .map(|p| p.mismatch.clone()),
    );
    listed.sort_by_key(|m| m.position);
    CheckResult {
        score_ppm,
        evidence: listed,
        ..fail(C3, format!("{why}; {summary}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacknet_protocol::paperwork::SAMPLER_V1;

    fn sampling(temperature_milli: u32) -> Sampling {
        Sampling {
            sampler: SAMPLER_V1.to_owned(),
            temperature_milli,
            top_p_milli: 1000,
            seed: 11,
            max_tokens: 64,
        }
    }

    fn logits_favouring(top: u32, gap: f32) -> Vec<f32> {
        (0..8).map(|i| if i == top { gap } else { 0.0 }).collect()
    }

    #[test]
    fn greedy_gaps_below_the_hard_limit_pass_and_above_count() {
        let s = sampling(0);
        assert!(!position(&logits_favouring(3, 0.5), &s, 0, 1).hard);
        let p = position(&logits_favouring(3, 2.0), &s, 4, 1);
        assert!(p.hard && !p.decisive);
        assert_eq!(
            p.mismatch,
            Mismatch {
                position: 4,
                claimed: 1,
                top: 3,
                gap_milli: 2000
            }
        );
        assert!(position(&logits_favouring(3, 9.0), &s, 0, 1).decisive);
    }

    #[test]
    fn the_hard_limit_is_three_or_two_percent() {
        assert_eq!(hard_limit(16), 3);
        assert_eq!(hard_limit(150), 3);
        assert_eq!(hard_limit(151), 4);
        assert_eq!(hard_limit(1000), 20);
    }

    fn scored(gaps: &[f32]) -> Vec<Position> {
        let s = sampling(0);
        gaps.iter()
            .enumerate()
            .map(|(i, &g)| position(&logits_favouring(0, g), &s, i as u32, if g > 0.0 { 1 } else { 0 }))
            .collect()
    }

    #[test]
    fn two_hard_mismatches_pass_three_fail_with_their_positions() {
        let mut gaps = vec![0.0; 40];
        gaps[5] = 2.0;
        gaps[9] = 3.0;
        assert!(judge(&scored(&gaps), false, &sampling(0)).passed);
        gaps[20] = 1.5;
        let r = judge(&scored(&gaps), false, &sampling(0));
        assert!(!r.passed && r.code.as_deref() == Some(C3));
        let at: Vec<u32> = r.evidence.iter().map(|m| m.position).collect();
        assert_eq!(at, vec![5, 9, 20]);
    }

    #[test]
    fn a_final_end_token_must_pass_alone() {
        let mut gaps = vec![0.0; 40];
        gaps[39] = 2.0;
        assert!(!judge(&scored(&gaps), true, &sampling(0)).passed);
        assert!(judge(&scored(&gaps), false, &sampling(0)).passed);
    }

    #[test]
    fn short_outputs_fail_only_on_a_decisive_gap_or_the_end_token() {
        let gaps = [2.0, 2.0, 2.0, 2.0, 0.0];
        assert!(judge(&scored(&gaps), false, &sampling(0)).passed);
        assert!(!judge(&scored(&[0.0, 9.0]), false, &sampling(0)).passed);
    }

    #[test]
    fn a_sampled_token_is_checked_against_the_replayed_draw() {
        let s = sampling(800);
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 / 3.0).collect();
        for i in 0..30 {
            let honest = sampler::sample(&logits, &s, i).expect("a token");
            assert!(!position(&logits, &s, i, honest).hard);
        }
        // The least likely candidate holds the draw (give or take EPSILON each side) only as often
        // as its slice and the margins are wide.
        let (unlikely, p) = sampler::distribution(&logits, &s)
            .into_iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("candidates");
        let draws = 1_000;
        let held = (0..draws)
            .filter(|&i| !position(&logits, &s, i, unlikely).hard)
            .count();
        let share = held as f64 / draws as f64;
        assert!(
            share <= p + 2.0 * EPSILON + 0.05,
            "{held} of {draws} held, slice {p}"
        );
        let p = position(&logits, &s, 0, 10_000);
        assert!(p.hard && p.mismatch.gap_milli == u32::MAX);
    }

    #[test]
    fn an_honest_draw_replayed_on_slightly_moved_logits_is_not_a_hard_mismatch() {
        // Worker and validator on other thread counts: logits apart by up to about 0.03 (the
        // calibration's largest honest gap), which moves the slices by a few hundredths.
        let s = sampling(800);
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 / 3.0).collect();
        let moved: Vec<f32> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| if i % 2 == 0 { l + 0.03 } else { l - 0.03 })
            .collect();
        let mut worst: f64 = 0.0;
        for i in 0..300 {
            let honest = sampler::sample(&logits, &s, i).expect("a token");
            let p = position(&moved, &s, i, honest);
            worst = worst.max(p.distance);
            assert!(!p.hard, "position {i}: distance {}", p.distance);
        }
        assert!(worst > 1e-3, "the drift is real: {worst}");
    }
}
