//! Key files on disk (feature `fs`, the only I/O in this crate, opt-in): created with mode 0600,
//! written atomically, never overwritten. Hub and node both keep their keys this way, and make their
//! other secret files (databases, tokens) private with [`restrict_to_owner`].

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::keyfile::{self, KeyFileError};
use crate::keys::SecretKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error(
        "refusing to overwrite the existing key file {0} (it may hold earnings); move or delete it first"
    )]
    Exists(PathBuf),
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid key file: {source}")]
    Invalid { path: PathBuf, source: KeyFileError },
}

/// Writes `key` to `path`, refusing to replace an existing file. The key goes to a temporary file in
/// the same directory first and is hard-linked into place, so the final name never holds a partial
/// key and of two concurrent writers exactly one wins.
pub fn write_new(path: &Path, key: &SecretKey) -> Result<(), KeyStoreError> {
    if path.exists() {
        return Err(KeyStoreError::Exists(path.to_path_buf()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let write_err = |source| KeyStoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(&dir).map_err(write_err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_tmp_and_link(&tmp, path, key);
    let _ = fs::remove_file(&tmp);
    result
}

fn write_tmp_and_link(tmp: &Path, path: &Path, key: &SecretKey) -> Result<(), KeyStoreError> {
    let write_err = |source| KeyStoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(tmp).map_err(write_err)?;
    file.write_all(keyfile::encode(key).as_bytes())
        .map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(KeyStoreError::Exists(path.to_path_buf())),
        Err(e) => Err(write_err(e)),
    }
}

/// Reads and checks a key file. The second value is a warning when others may read the file.
pub fn read(path: &Path) -> Result<(SecretKey, Option<String>), KeyStoreError> {
    let read_err = |source| KeyStoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut warning = None;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(read_err)?.permissions().mode();
        if mode & 0o077 != 0 {
            warning = Some(format!(
                "key file {} has mode {:o}; others can read it (run: chmod 600 {})",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    let mut bytes = Vec::new();
    file.take(keyfile::MAX_KEY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let key = keyfile::decode(&bytes).map_err(|source| KeyStoreError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((key, warning))
}

/// Reads the key at `path`, or creates one there when no file exists (first start of a hub or node).
pub fn load_or_create(path: &Path) -> Result<(SecretKey, Option<String>), KeyStoreError> {
    match read(path) {
        Err(KeyStoreError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {
            let key = SecretKey::generate();
            match write_new(path, &key) {
                Ok(()) => Ok((key, None)),
                // Someone else created it in between: use theirs.
                Err(KeyStoreError::Exists(_)) => read(path),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

/// Makes the file at `path` readable and writable by its owner only (mode 0600 on Unix), creating it
/// empty when missing, whatever mode it had: for secret files that something else writes (SQLite, a
/// rename), which would otherwise get whatever the umask gives, and for files left wider before.
pub fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => set_owner_only(path),
        Err(e) => Err(e),
    }
}

/// [`restrict_to_owner`] for an SQLite database and the journal files beside it. SQLite creates
/// those with the database's own mode, so once the database is private they stay private; this
/// also narrows any an earlier run left.
pub fn restrict_database_to_owner(path: &Path) -> std::io::Result<()> {
    restrict_to_owner(path)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        match set_owner_only(Path::new(&companion)) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_owner_only(path: &Path) -> std::io::Result<()> {
    fs::metadata(path).map(|_| ())
}
