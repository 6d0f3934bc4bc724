//! `stacknet validator`: re-checks tasks other nodes ran and attests to what it found.
//!
//! - [`checks`]: the checks themselves as pure logic over an [`Assignment`](stacknet_api::types::Assignment)
//!   and a [`Model`]: C0 envelope, C1 token accounting, C2 termination (in `checks`), C3
//!   teacher-forced scoring (in [`forced`], with its calibrated thresholds), and [`checks::verdict`]
//!   that folds them into PASS / FAIL / INCONCLUSIVE.
//! - [`model`]: [`Model`] for the built-in llama.cpp [`LocalModel`](crate::backend::llama::LocalModel),
//!   the same GGUF the workers run.
//! - [`runner`]: the loop: poll the hub for assignments, check each, commit to the signed
//!   attestation, reveal it when the hub says every committee member has committed.
//! - [`media`]: the checks of image and video tasks: M0 the request's terms on the kept files, M1
//!   a replay by a seeded deterministic backend (the built-in terrain model).
//! - [`load`]: the validator's models, from the same models directory as a node's.

pub mod checks;
pub mod forced;
pub mod load;
pub mod media;
pub mod model;
pub mod runner;
#[cfg(test)]
mod tests;

pub use checks::{check, verdict, Model};
pub use media::{Replayer, SharedReplayer};
pub use runner::{Checker, Judge, SharedModel, Validator, ValidatorOptions};
