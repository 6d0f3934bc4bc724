//! The checks of a media task (image generations and edits, videos), whose output is files. The hub
//! keeps each file's SHA-256 and, up to its size cap, the file itself; C0 (the envelope, shared with
//! text tasks) binds the paperwork's output digest to those hashes and the kept bytes to theirs.
//!
//! - M0 `M0_terms`: the kept files keep the request's terms ([`stacknet_api::terms`]: how many,
//!   their format and size, a video's length), as the hub checked them at acceptance. INCONCLUSIVE
//!   when the files were too large to keep.
//! - M1 `M1_replay`: a seeded deterministic backend ([`Replayer`], the built-in terrain model) runs
//!   the request again and must make the same files: the same bytes pass; otherwise the same
//!   pictures within the numerical noise of another CPU ([`NOISE_LEVELS`], [`NOISE_SHARE_PPM`] of the
//!   pixels) pass, and anything else fails. INCONCLUSIVE for any other backend (an upstream, a
//!   ComfyUI workflow: nothing to re-run them with), for tasks that need their uploads (edits,
//!   videos from a reference), and for a validator without the model.

use std::sync::Arc;

use serde_json::Value;
use stacknet_api::types::{Assignment, KeptFiles};
use stacknet_protocol::attestation::CheckResult;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::{PublicKey, Sha256Digest};

use super::checks::{envelope, fail, inconclusive, pass};
use crate::backend::image::Rgb;
use crate::backend::BackendError;

pub const M0: &str = "M0_terms";
pub const M1: &str = "M1_replay";
/// How far a channel of a replayed pixel may be from the claimed one and still count as the same.
pub const NOISE_LEVELS: u8 = 8;
/// The share of pixels, in parts per million, that may differ by more than [`NOISE_LEVELS`].
pub const NOISE_SHARE_PPM: u64 = 5_000;

/// A seeded, deterministic media backend a validator can run a task again with. Blocking.
pub trait Replayer: Send + Sync {
    /// The backend id its tasks' paperwork names.
    fn backend_id(&self) -> &str;
    /// The SHA-256 of its model file.
    fn sha256(&self) -> Sha256Digest;
    /// The output files of a `workload` task asked by `request`, made again; `None` when this
    /// backend cannot replay that workload from its request alone.
    fn replay(&self, workload: Workload, request: &Value) -> Option<Result<Vec<Vec<u8>>, BackendError>>;
}

/// A replayer a validator holds, shareable with the blocking pool.
pub type SharedReplayer = Arc<dyn Replayer>;

/// Every check of a media task, cheapest first; after a FAIL the later checks are not run.
pub fn check(a: &Assignment, hub: &PublicKey, replayers: &[SharedReplayer]) -> Vec<CheckResult> {
    let c0 = envelope(a, hub);
    if !c0.passed {
        return vec![c0];
    }
    let pw = &a.paperwork.body;
    let workload = pw.contract.body.workload;
    // C0 proved the kept files are readable and hash as the paperwork says.
    let kept = match KeptFiles::parse(&a.output) {
        Ok(kept) => kept,
        Err(why) => return vec![c0, inconclusive(M0, why)],
    };
    let m0 = match &kept.bytes {
        None => inconclusive(M0, "the hub kept the files' hashes only (too large to keep)"),
        Some(files) => {
            let files: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
            match stacknet_api::terms::broken(workload, &a.request, &files, pw.cancelled) {
                Some(why) => fail(M0, why),
                None => pass(
                    M0,
                    format!("{} files of the count, format and size asked", files.len()),
                ),
            }
        }
    };
    let failed = !m0.passed && !m0.inconclusive;
    let mut out = vec![c0, m0];
    if !failed {
        out.push(replay(a, &kept, replayers));
    }
    out
}

/// M1: the task made again by the same deterministic backend.
fn replay(a: &Assignment, kept: &KeptFiles, replayers: &[SharedReplayer]) -> CheckResult {
    let pw = &a.paperwork.body;
    let workload = pw.contract.body.workload;
    let Some(replayer) = replayers.iter().find(|r| r.backend_id() == pw.backend.id) else {
        return inconclusive(
            M1,
            format!(
                "backend {:?} is not one this validator can run again",
                pw.backend.id
            ),
        );
    };
    if pw.backend.model_sha256 != Some(replayer.sha256()) {
        return inconclusive(
            M1,
            format!(
                "this validator's model is {}, the task's {:?}",
                replayer.sha256(),
                pw.backend.model_sha256
            ),
        );
    }
    if pw.cancelled {
        return inconclusive(
            M1,
            "the task was cancelled: what it made before is not replayable",
        );
    }
    let made = match replayer.replay(workload, &a.request) {
        None => {
            return inconclusive(
                M1,
                format!("{workload:?} tasks are not replayed from the request alone"),
            )
        }
        // A request the hub took and this code refuses is another version's, not the worker's doing.
        Some(Err(e)) => return inconclusive(M1, format!("the replay failed here: {e}")),
        Some(Ok(made)) => made,
    };
    if made.len() != kept.hashes.len() {
        return fail(
            M1,
            format!("{} files made again, {} claimed", made.len(), kept.hashes.len()),
        );
    }
    let mut noisy = 0;
    for (i, (file, claimed)) in made.iter().zip(&kept.hashes).enumerate() {
        if Sha256Digest::of(file) == *claimed {
            continue;
        }
        let Some(claimed_bytes) = kept.bytes.as_ref().and_then(|b| b.get(i)) else {
            return inconclusive(
                M1,
                format!("file {i} differs from the replay, and the hub kept only its hash to compare"),
            );
        };
        match same_picture(file, claimed_bytes) {
            Ok(()) => noisy += 1,
            Err(why) => return fail(M1, format!("file {i} is not what the backend makes: {why}")),
        }
    }
    match noisy {
        0 => pass(M1, format!("{} files made again, byte for byte", made.len())),
        n => pass(
            M1,
            format!(
                "{} files made again, {n} equal within the numerical noise of another CPU",
                made.len()
            ),
        ),
    }
}

/// The claimed picture is the replayed one within [`NOISE_LEVELS`] on all but [`NOISE_SHARE_PPM`]
/// of its pixels.
fn same_picture(made: &[u8], claimed: &[u8]) -> Result<(), String> {
    let made = Rgb::decode(made).map_err(|e| format!("the replay does not decode: {e}"))?;
    let claimed = Rgb::decode(claimed).map_err(|e| format!("it does not decode: {e}"))?;
    if (made.width, made.height) != (claimed.width, claimed.height) {
        return Err(format!(
            "{}x{}, the replay {}x{}",
            claimed.width, claimed.height, made.width, made.height
        ));
    }
    let pixels = (made.width * made.height) as u64;
    let far = made
        .data
        .chunks_exact(3)
        .zip(claimed.data.chunks_exact(3))
        .filter(|(a, b)| a.iter().zip(b.iter()).any(|(x, y)| x.abs_diff(*y) > NOISE_LEVELS))
        .count() as u64;
    if far * 1_000_000 > pixels * NOISE_SHARE_PPM {
        return Err(format!(
            "{far} of its {pixels} pixels differ from the replay by more than {NOISE_LEVELS} levels"
        ));
    }
    Ok(())
}
