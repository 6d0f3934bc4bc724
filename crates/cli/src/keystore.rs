//! Node Key files on disk: created with mode 0600, written atomically, never overwritten.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stacknet_protocol::keyfile;
use stacknet_protocol::SecretKey;

/// Writes `key` to `path`, refusing to replace an existing file. The key is written to a temporary
/// file in the same directory first and hard-linked into place, so the final name never holds a
/// partial key and two concurrent `key new` cannot both succeed.
pub fn write_new(path: &Path, key: &SecretKey) -> Result<()> {
    if path.exists() {
        bail!(
            "refusing to overwrite the existing key file {} (it may hold earnings); move or delete it first",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = write_tmp_and_link(&tmp, path, key);
    let _ = fs::remove_file(&tmp);
    result
}

fn write_tmp_and_link(tmp: &Path, path: &Path, key: &SecretKey) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(keyfile::encode(key).as_bytes())?;
    file.sync_all()?;
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            bail!("refusing to overwrite the existing key file {}", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}

/// Reads and checks a key file. Warns on stderr when others may read it, as ssh does.
pub fn read(path: &Path) -> Result<SecretKey> {
    let file = fs::File::open(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: key file {} has mode {:o}; others can read it (run: chmod 600 {})",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let mut bytes = Vec::new();
    file.take(keyfile::MAX_KEY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    keyfile::decode(&bytes).with_context(|| format!("{} is not a valid Node Key file", path.display()))
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
