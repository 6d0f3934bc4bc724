//! `stacknet/sampler/v1`: the sampler every built-in text backend runs, owned by the network so that
//! a validator can replay a sampled task from its seed (docs/PROTOCOL.md 4.1).
//!
//! Each position draws its own uniform number from the seed and the position alone
//! ([`draw`]), so a validator scoring the claimed tokens teacher-forced can check every position
//! independently: the claimed token must be the one whose slice of the cumulative distribution holds
//! the draw ([`interval`]). Probabilities are computed in `f64` from the model's `f32` logits; the
//! distribution is ordered by probability (highest first, the lower id first on a tie), so it does
//! not depend on any library's sort or random number generator.
//!
//! 1. Temperature 0 is greedy: the highest logit, the lower id on a tie.
//! 2. Otherwise the logits are divided by the temperature; tokens more than [`CUTOFF`] below the
//!    highest scaled logit are dropped (their mass is under e^-40 each);
//! 3. softmax over what is left, ordered as above; with `top_p` below 1 the nucleus is the shortest
//!    prefix whose mass reaches `top_p`, renormalized;
//! 4. the nucleus is put in token id order, and the token is the first whose cumulative mass
//!    exceeds the position's draw.
//!
//! Why id order for the walk: a validator's logits differ from the worker's by rounding noise (its
//! prefill runs other kernels than the worker's one-token decode). Walked in probability order, two
//! tokens of nearly equal probability could swap places under that noise and move every slice after
//! them by a whole token's mass; in id order, noise moves each slice's edges only by the noise.

use sha2::{Digest, Sha256};

use crate::paperwork::Sampling;

/// Scaled logits this far below the highest are not candidates.
pub const CUTOFF: f64 = 40.0;

/// The uniform draw in [0, 1) of one position (0 is the first generated token).
pub fn draw(seed: u32, position: u32) -> f64 {
    let mut h = Sha256::new();
    h.update(b"stacknet/sampler/v1");
    h.update(seed.to_le_bytes());
    h.update(position.to_le_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// The greedy choice: the highest logit, the lower id on a tie. `None` for no logits.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// The candidates of one position, in token id order, with their probabilities (summing to 1).
pub fn distribution(logits: &[f32], s: &Sampling) -> Vec<(u32, f64)> {
    if s.temperature_milli == 0 {
        return argmax(logits).map(|t| vec![(t, 1.0)]).unwrap_or_default();
    }
    let t = f64::from(s.temperature_milli) / 1000.0;
    let max = logits
        .iter()
        .map(|&l| f64::from(l) / t)
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return Vec::new();
    }
    let mut c: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .filter_map(|(i, &l)| {
            let x = f64::from(l) / t - max;
            (x >= -CUTOFF).then(|| (i as u32, x.exp()))
        })
        .collect();
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f64 = c.iter().map(|x| x.1).sum();
    for x in &mut c {
        x.1 /= total;
    }
    if s.top_p_milli < 1000 {
        let p = f64::from(s.top_p_milli) / 1000.0;
        let mut mass = 0.0;
        let mut keep = c.len();
        for (i, x) in c.iter().enumerate() {
            mass += x.1;
            if mass >= p {
                keep = i + 1;
                break;
            }
        }
        c.truncate(keep.max(1));
        let total: f64 = c.iter().map(|x| x.1).sum();
        for x in &mut c {
            x.1 /= total;
        }
    }
    c.sort_by_key(|x| x.0);
    c
}

/// The token of one position.
pub fn sample(logits: &[f32], s: &Sampling, position: u32) -> Option<u32> {
    let dist = distribution(logits, s);
    if s.temperature_milli == 0 {
        return dist.first().map(|x| x.0);
    }
    let u = draw(s.seed, position);
    let mut mass = 0.0;
    for &(id, p) in &dist {
        mass += p;
        if u < mass {
            return Some(id);
        }
    }
    dist.last().map(|x| x.0)
}

/// Where `token` lies in the cumulative distribution of one position: `[low, high)`, or `None`
/// when it is not a candidate at all (outside the nucleus, or far below the top).
pub fn interval(logits: &[f32], s: &Sampling, token: u32) -> Option<(f64, f64)> {
    let mut low = 0.0;
    for (id, p) in distribution(logits, s) {
        if id == token {
            return Some((low, low + p));
        }
        low += p;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature_milli: u32, top_p_milli: u32) -> Sampling {
        Sampling {
            sampler: crate::paperwork::SAMPLER_V1.to_owned(),
            temperature_milli,
            top_p_milli,
            seed: 7,
            max_tokens: 16,
        }
    }

    #[test]
    fn greedy_takes_the_highest_logit_and_the_lower_id_on_a_tie() {
        assert_eq!(sample(&[0.5, 2.0, 2.0, -1.0], &sampling(0, 1000), 3), Some(1));
    }

    #[test]
    fn the_draw_depends_only_on_seed_and_position() {
        assert_eq!(draw(7, 3), draw(7, 3));
        assert_ne!(draw(7, 3), draw(7, 4));
        assert_ne!(draw(7, 3), draw(8, 3));
        assert!((0.0..1.0).contains(&draw(1, 1)));
    }

    #[test]
    fn a_sampled_token_lies_in_its_own_interval_at_its_position() {
        let logits: Vec<f32> = (0..200).map(|i| ((i * 37) % 23) as f32 / 4.0).collect();
        let s = sampling(800, 950);
        for pos in 0..50 {
            let t = sample(&logits, &s, pos).expect("a token");
            let (lo, hi) = interval(&logits, &s, t).expect("a candidate");
            let u = draw(s.seed, pos);
            assert!(lo <= u && u < hi, "{lo} <= {u} < {hi}");
        }
    }

    #[test]
    fn a_tiny_change_of_the_logits_moves_a_slice_only_a_little() {
        // Two tokens of nearly equal probability swap their probability order under noise; their
        // slices must not jump by a whole token's mass.
        let s = sampling(1000, 1000);
        let a = [1.0f32, 1.000_001, 0.5, 3.0];
        let b = [1.000_001f32, 1.0, 0.5, 3.0];
        for t in 0..4u32 {
            let (la, ha) = interval(&a, &s, t).expect("a candidate");
            let (lb, hb) = interval(&b, &s, t).expect("a candidate");
            assert!((la - lb).abs() < 1e-5 && (ha - hb).abs() < 1e-5, "token {t}");
        }
    }

    #[test]
    fn the_nucleus_drops_the_tail() {
        let s = sampling(1000, 500);
        let d = distribution(&[10.0, 0.0, 0.0], &s);
        assert_eq!(d.len(), 1);
        assert!(interval(&[10.0, 0.0, 0.0], &s, 2).is_none());
    }
}
