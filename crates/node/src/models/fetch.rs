//! HTTP downloads that stream to disk, hash as they go, and resume.
//!
//! A download lives at one path for its whole life, across pulls: whatever is there when a download
//! starts is taken as a prefix of the file and continued with `Range: bytes=N-`. A server that
//! ignores the range (200), answers for another range, or says the range is unsatisfiable for a
//! size other than what is there, gets a clean restart from byte 0. A resumed file whose hash then
//! fails may owe it to a bad prefix, so it is downloaded once more from scratch before the mismatch
//! is reported.

use crate::chain::error_chain;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::warn;

use super::error::io_at;
use super::{Progress, PullError, Stage};

/// Progress is reported at most once per this many bytes (and at the end).
pub(crate) const PROGRESS_STEP_BYTES: u64 = 1 << 20;
/// No file the catalog could name is this large; a server that sends more is not to be trusted.
pub(crate) const MAX_DOWNLOAD_BYTES: u64 = 32 << 30;
/// Opening a connection may take this long.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that delivers nothing for this long is given up on (its bytes are kept).
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Writes go to disk in blocks of this size rather than one small write per network chunk.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// The HTTP client for model downloads: system and bundled roots, no overall time-out (a model
/// takes as long as it takes), but a read time-out so a stalled connection does not hang a pull.
pub(crate) fn client() -> Result<reqwest::Client, PullError> {
    reqwest::Client::builder()
        .user_agent(concat!("stacknet/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(|e| PullError::Task(format!("cannot build the HTTP client: {e}")))
}

/// One file to fetch.
pub(crate) struct Download<'a> {
    pub url: &'a str,
    pub dest: &'a Path,
    /// Lowercase hex; checked over the whole file, resumed or not.
    pub expected_sha256: Option<&'a str>,
    /// The name shown in progress and errors (a wheel's file name, a URL).
    pub label: &'a str,
}

enum Attempt {
    Done {
        sha256: String,
    },
    /// The server would not continue where the file stands; start over without a range.
    Restart,
}

/// Fetches `d.url` into `d.dest`, continuing a partial file, and checks the hash when one is given.
pub(crate) async fn download(
    client: &reqwest::Client,
    d: &Download<'_>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), PullError> {
    let mut may_resume = true;
    loop {
        let offset = if may_resume {
            existing_len(d.dest).await?
        } else {
            remove_file_if_exists(d.dest).await?;
            0
        };
        let sha256 = match attempt(client, d, offset, progress).await? {
            Attempt::Done { sha256 } => sha256,
            Attempt::Restart => {
                may_resume = false;
                continue;
            }
        };
        match d.expected_sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(&sha256) => {
                remove_file_if_exists(d.dest).await?;
                if offset > 0 {
                    warn!(
                        file = d.label,
                        "resumed download has the wrong hash; downloading it again"
                    );
                    may_resume = false;
                    continue;
                }
                return Err(PullError::ChecksumMismatch {
                    file: d.label.to_owned(),
                    expected: expected.to_owned(),
                    got: sha256,
                });
            }
            _ => return Ok(()),
        }
    }
}

async fn attempt(
    client: &reqwest::Client,
    d: &Download<'_>,
    offset: u64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Attempt, PullError> {
    let mut request = client.get(d.url);
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let response = request
        .send()
        .await
        .map_err(|e| transfer(d.url, offset, error_chain(&e.without_url())))?;
    let status = response.status();
    let content_range = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(parse_content_range);
    let (start, total) = match status {
        StatusCode::OK => (0, response.content_length()),
        StatusCode::PARTIAL_CONTENT if offset > 0 => match content_range {
            Some(Some((Some(first), total))) if first == offset => (offset, total),
            _ => return Ok(Attempt::Restart),
        },
        // The file may already be whole (a pull killed between the last byte and the hash check).
        StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
            return match content_range {
                Some(Some((None, Some(total)))) if total == offset => {
                    let (hasher, _) = hash_file(d.dest).await?;
                    Ok(Attempt::Done {
                        sha256: hex::encode(hasher.finalize()),
                    })
                }
                _ => Ok(Attempt::Restart),
            };
        }
        _ => {
            return Err(PullError::HttpStatus {
                url: redact_url(d.url),
                status: status.as_u16(),
            })
        }
    };
    let (file, hasher) = if start > 0 {
        let (hasher, _) = hash_file(d.dest).await?;
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(d.dest)
            .await
            .map_err(io_at(d.dest))?;
        (file, hasher)
    } else {
        let file = tokio::fs::File::create(d.dest).await.map_err(io_at(d.dest))?;
        (file, Sha256::new())
    };
    let body = Body {
        file: tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
        hasher,
        done: start,
        total,
    };
    let sha256 = body.receive(response, d, start, progress).await?;
    Ok(Attempt::Done { sha256 })
}

/// The receiving end of one response body.
struct Body {
    file: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
    done: u64,
    total: Option<u64>,
}

impl Body {
    async fn receive(
        mut self,
        response: reqwest::Response,
        d: &Download<'_>,
        resumed_from: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<String, PullError> {
        let mut report = |done: u64| {
            progress(Progress {
                stage: Stage::Download { resumed_from },
                item: d.label.to_owned(),
                done_bytes: done,
                total_bytes: self.total,
            })
        };
        report(self.done);
        let mut reported = self.done;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    // Keep what arrived: the next attempt continues from it.
                    self.file.flush().await.map_err(io_at(d.dest))?;
                    return Err(transfer(d.url, self.done, error_chain(&e.without_url())));
                }
            };
            self.done += chunk.len() as u64;
            if self.done > MAX_DOWNLOAD_BYTES {
                drop(self.file);
                remove_file_if_exists(d.dest).await?;
                return Err(PullError::TooLarge {
                    url: redact_url(d.url),
                    limit_bytes: MAX_DOWNLOAD_BYTES,
                });
            }
            self.hasher.update(&chunk);
            self.file.write_all(&chunk).await.map_err(io_at(d.dest))?;
            if self.done - reported >= PROGRESS_STEP_BYTES {
                report(self.done);
                reported = self.done;
            }
        }
        self.file.flush().await.map_err(io_at(d.dest))?;
        self.file.get_ref().sync_all().await.map_err(io_at(d.dest))?;
        if reported != self.done {
            report(self.done);
        }
        Ok(hex::encode(self.hasher.finalize()))
    }
}

/// `Content-Range: bytes 100-199/200` gives `(Some(100), Some(200))`, `bytes */200` gives
/// `(None, Some(200))`; `None` when the header is malformed.
fn parse_content_range(value: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let first = match range.trim() {
        "*" => None,
        r => Some(r.split_once('-')?.0.parse().ok()?),
    };
    Some((first, total))
}

fn transfer(url: &str, received_bytes: u64, reason: String) -> PullError {
    PullError::Transfer {
        url: redact_url(url),
        received_bytes,
        reason,
    }
}

/// `url` fit for errors and logs: an index URL may carry credentials (`https://user:token@host/simple`,
/// as pip allows), which are replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // Both calls fail only for URLs that cannot have credentials, which these just had.
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("***");
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The SHA-256 state and length of a file's current contents, read off the runtime's threads.
pub(crate) async fn hash_file(path: &Path) -> Result<(Sha256, u64), PullError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&owned).map_err(io_at(&owned))?;
        let mut hasher = Sha256::new();
        let n = std::io::copy(&mut file, &mut hasher).map_err(io_at(&owned))?;
        Ok((hasher, n))
    })
    .await
    .map_err(|e| PullError::Task(e.to_string()))?
}

async fn existing_len(path: &Path) -> Result<u64, PullError> {
    match tokio::fs::metadata(path).await {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_at(path)(e)),
    }
}

pub(crate) async fn remove_file_if_exists(path: &Path) -> Result<(), PullError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((Some(100), Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((Some(5), None)));
        assert_eq!(parse_content_range("bytes */200"), Some((None, Some(200))));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn credentials_never_reach_an_error_message() {
        assert_eq!(
            super::redact_url("https://me:s3cret@mirror.example/simple/x/"),
            "https://***@mirror.example/simple/x/"
        );
        assert_eq!(
            super::redact_url("https://pypi.org/simple"),
            "https://pypi.org/simple"
        );
    }
}
