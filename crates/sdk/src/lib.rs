//! Stacknet's Rust SDK.
//!
//! - [`Client`]: a typed async client for a hub: the OpenAI endpoints (chat, completions,
//!   embeddings, models) and Stacknet's own (statement, paperwork, the log's checkpoint and proofs,
//!   injections, the skills registry, referral codes).
//! - [`verify`]: light verification, pure functions: an answer's fingerprint, its content against
//!   its paperwork (the node signed the output's digest), the paperwork against the hub key, the
//!   paperwork's inclusion in a signed checkpoint.
//! - [`follow`]: a light node that keeps a hub honest: it follows the hub's checkpoints, checks each
//!   is consistent with the last, and raises an alarm on a split view (two checkpoints of one size
//!   with different roots, a log that shrank or forked).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use stacknet_sdk::{verify, Client};
//! let hub = Client::new("http://127.0.0.1:8080")?.with_api_key("sk_...");
//! let answer = hub
//!     .chat(&serde_json::json!({"model": "smollm2-135m-instruct",
//!                                "messages": [{"role": "user", "content": "hi"}]}))
//!     .await?;
//! let info = hub.hub_info().await?;
//! let proof = hub.evidence(&answer).await?;
//! let checked = verify::answer(&answer.content(), &proof.paperwork, &info.hub_key)?;
//! let included = verify::inclusion(&proof.paperwork, &proof.inclusion, &proof.checkpoint.note, &info.hub_key)?;
//! println!("{} in the log at {}", checked.paperwork, included.leaf_index);
//! # Ok(()) }
//! ```

pub mod client;
pub mod follow;
pub mod verify;

pub use client::{Answer, Client, Error, Evidence};
pub use follow::{Alarm, Follower, Step};
pub use stacknet_api::proof::{log_origin, paperwork_leaf, LogError, VerifiedConsistency, VerifiedInclusion};
pub use stacknet_api::types;
