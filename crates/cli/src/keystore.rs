//! Where the CLI keeps things by default.

use std::path::PathBuf;

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
