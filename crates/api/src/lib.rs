//! The hub's HTTP API as types, shared by the hub, the node, the CLI and the tests, so that none of
//! them keeps its own copy of a path, a body or a rule.
//!
//! Layout:
//! - [`paths`]: every endpoint's path.
//! - [`request`]: the OpenAI-style requests, one module per workload, each with the one validator
//!   that the hub (at the edge) and the node (before it runs anything) both apply.
//! - [`output`]: how a workload's output is assembled from a node's chunks and files, and the
//!   output digest (`output_sha256` in paperwork) over what the client receives.
//! - [`types`]: the request and response bodies of the hub's own endpoints (`/stacknet/v1/...`).
//! - [`catalog`](mod@catalog): the pinned real models (names, workloads, files by SHA-256, sources)
//!   that nodes pull and serve and that the hub checks `model_sha256` against.
//!
//! Depends only on the protocol crate: no I/O, no async.

#[cfg(feature = "audio")]
pub mod audio;
pub mod catalog;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod output;
pub mod paths;
pub mod proof;
pub mod request;
pub mod ssrf;
pub mod terms;
pub mod types;

pub use request::{ApiRequest, RequestError};
