//! The verified marker: a small file in a model's directory saying "these files hashed to their
//! pins", so that every start of a node does not re-hash hundreds of megabytes.
//!
//! The marker records each file's pin (path, size, SHA-256) and its modification time when it was
//! verified. It vouches for a file only while the file's size and modification time are unchanged
//! and the pin is the one the catalog holds now; anything else (a file edited or truncated, a
//! catalog that moved to a new version) makes the model "unverified", and the next pull re-hashes
//! it. A deliberate tamperer can forge this; it guards against accidents, not attackers, and
//! paperwork carries the pinned hash, which validators check against their own copies.

use std::io::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::error::io_at;
use super::{ModelSpec, PullError};

/// The marker's file name inside a model's directory (hidden: it is not part of the model).
pub const MARKER_FILE: &str = ".stacknet-verified.json";
/// A marker is a few hundred bytes; anything much larger is not one of ours.
const MAX_MARKER_BYTES: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    files: Vec<MarkedFile>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct MarkedFile {
    path: String,
    size_bytes: u64,
    sha256: String,
    modified_unix_ns: u64,
}

/// Whether `model_dir` holds `spec`'s files, verified against today's pins and untouched since.
pub(crate) fn is_verified(model_dir: &Path, spec: &ModelSpec) -> bool {
    let marker_path = model_dir.join(MARKER_FILE);
    let Ok(meta) = std::fs::metadata(&marker_path) else {
        return false;
    };
    if meta.len() > MAX_MARKER_BYTES {
        return false;
    }
    let Some(marker) = std::fs::read(&marker_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Marker>(&bytes).ok())
    else {
        return false;
    };
    spec.files.iter().all(|file| {
        let Ok(now) = describe(model_dir, &file.path, &file.sha256) else {
            return false;
        };
        now.size_bytes == file.size_bytes && marker.files.contains(&now)
    })
}

/// Records that `spec`'s files in `model_dir` were just verified. Written to a temporary name,
/// synced and renamed, so a marker is either whole or absent.
pub(crate) fn write(model_dir: &Path, spec: &ModelSpec) -> Result<(), PullError> {
    let files = spec
        .files
        .iter()
        .map(|f| describe(model_dir, &f.path, &f.sha256))
        .collect::<Result<Vec<_>, _>>()?;
    let json = serde_json::to_vec_pretty(&Marker { files })
        .map_err(|e| PullError::Task(format!("cannot encode the verified marker: {e}")))?;
    let tmp = model_dir.join(format!("{MARKER_FILE}.tmp"));
    let mut out = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
    out.write_all(&json).map_err(io_at(&tmp))?;
    out.sync_all().map_err(io_at(&tmp))?;
    let path = model_dir.join(MARKER_FILE);
    std::fs::rename(&tmp, &path).map_err(io_at(&path))
}

/// The marker entry a file on disk would have today, given the hash it was verified to have.
fn describe(model_dir: &Path, rel: &str, sha256: &str) -> Result<MarkedFile, PullError> {
    let path = model_dir.join(rel);
    let meta = std::fs::metadata(&path).map_err(io_at(&path))?;
    let modified = meta.modified().map_err(io_at(&path))?;
    // A time before 1970 or past 2554 reads as 0; the size and pin still have to match.
    let modified_unix_ns = modified
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0);
    Ok(MarkedFile {
        path: rel.to_owned(),
        size_bytes: meta.len(),
        sha256: sha256.to_ascii_lowercase(),
        modified_unix_ns,
    })
}
