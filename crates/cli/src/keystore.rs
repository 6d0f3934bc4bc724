//! Where the CLI keeps things by default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use stacknet_protocol::SecretKey;

/// The Node Key at `path`, with a warning on stderr where the keystore has one (loose permissions).
pub fn read_node_key(path: &Path) -> Result<SecretKey> {
    let (key, warning) = stacknet_protocol::keystore::read(path)
        .with_context(|| format!("cannot read the Node Key at {}", path.display()))?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    Ok(key)
}

/// `$STACKNET_DATA_DIR`, else `$XDG_DATA_HOME/stacknet`, else `~/.local/share/stacknet`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STACKNET_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("stacknet");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/stacknet")
}
