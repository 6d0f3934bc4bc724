//! Built-in text to speech, the fallback voice: eSpeak NG, run as a program (it is GPL: the node
//! calls it, never links it). Robotic, but on every Debian machine, fast on any CPU, and
//! deterministic: the same request always gives the same bytes, so a validator can re-run it.
//!
//! The text goes to `espeak-ng` on its standard input (never as an argument), in one of a fixed
//! set of voices (OpenAI's voice names, each mapped to an eSpeak voice), at a rate scaled by
//! `speed`. Its WAV is decoded, then written in the asked format: `wav` (16-bit PCM, 22.05 kHz) and
//! `pcm` (raw 16-bit little-endian at 24 kHz, as OpenAI sends it) here; `mp3`, `flac` and `opus`
//! by Debian's `lame`, `flac` and `opusenc` programs, fed a WAV on their standard input (each with
//! fixed settings, so its output is deterministic too). A format whose program is missing, and
//! `aac`, are refused with a 400 naming the formats this node can give.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use stacknet_api::request::audio::{speech_content_type, validate_speech, Speech};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, Semaphore};

use super::{Backend, BackendError, BackendOutcome, BackendTask, Cancellation, OutputFile};

/// The model name it is offered under, and its backend id.
pub const MODEL: &str = "espeak-ng";
/// OpenAI's voices, each as an eSpeak voice and variant.
pub const VOICES: [(&str, &str); 13] = [
    ("alloy", "en-us"),
    ("ash", "en-us+m3"),
    ("ballad", "en-gb+m2"),
    ("cedar", "en-us+m5"),
    ("coral", "en-us+f2"),
    ("echo", "en-us+m1"),
    ("fable", "en-gb"),
    ("marin", "en-us+f5"),
    ("nova", "en-us+f3"),
    ("onyx", "en-us+m7"),
    ("sage", "en-us+f1"),
    ("shimmer", "en-us+f4"),
    ("verse", "en-gb+m4"),
];
/// eSpeak's words per minute at `speed` 1, and the range it speaks in.
pub const WORDS_PER_MINUTE: f64 = 175.0;
const RATE_RANGE: (f64, f64) = (80.0, 450.0);
/// OpenAI's `pcm`: 24 kHz, 16-bit signed little-endian, mono.
pub const PCM_RATE: u32 = 24_000;
/// Syntheses at once (each a process); more wait, and past the queue a task is refused as busy.
pub const MAX_CONCURRENT: usize = 4;
/// One synthesis and its encoding, at most.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The encoders, by format: the program and its arguments (reading a WAV on stdin, writing stdout).
const ENCODERS: [(&str, &str, &[&str]); 3] = [
    ("mp3", "lame", &["--silent", "-b", "64", "-", "-"]),
    ("flac", "flac", &["--silent", "--stdout", "--no-seektable", "-"]),
    ("opus", "opusenc", &["--quiet", "--serial", "1", "-", "-"]),
];

/// The fallback voice. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EspeakVoice {
    program: PathBuf,
    version: String,
    slots: Arc<Semaphore>,
    since: Timestamp,
}

fn failed(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what}: {e}"))
}

impl EspeakVoice {
    /// Checks that `program` (default: `espeak-ng` on the PATH) runs, and reads its version.
    pub async fn start(program: Option<PathBuf>) -> Result<Self, BackendError> {
        let program = program.unwrap_or_else(|| PathBuf::from("espeak-ng"));
        let out = tokio::process::Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                failed(
                    &format!("cannot run {} (apt install espeak-ng)", program.display()),
                    e,
                )
            })?;
        // "eSpeak NG text-to-speech: 1.51  Data at: ..."
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("unknown")
            .to_owned();
        Ok(Self {
            program,
            version,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            since: Timestamp::now(),
        })
    }

    /// The eSpeak NG version it runs.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Speaks `speech` in its format: the audio bytes. The same work a task does, without the task
    /// (the baseline of `stacknet-bench speech`).
    pub async fn speak(&self, speech: &Speech, cancel: &Cancellation) -> Result<Vec<u8>, BackendError> {
        let voice = VOICES
            .iter()
            .find(|(name, _)| *name == speech.voice)
            .map(|(_, voice)| *voice)
            .ok_or_else(|| {
                let names: Vec<&str> = VOICES.iter().map(|(n, _)| *n).collect();
                BackendError::InvalidRequest(format!(
                    "voice: {:?} is not a voice of {MODEL}; its voices: {}",
                    speech.voice,
                    names.join(", ")
                ))
            })?;
        check_format(&speech.format)?;
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| failed("slots", e))?;
        let work = async {
            let rate = (WORDS_PER_MINUTE * speech.speed)
                .clamp(RATE_RANGE.0, RATE_RANGE.1)
                .round();
            let spoken = pipe(
                &self.program.to_string_lossy(),
                &["--stdout", "--stdin", "-v", voice, "-s", &format!("{rate}")],
                speech.input.as_bytes().to_vec(),
            )
            .await?
            .map_err(|e| failed("espeak-ng", e))?;
            let mono = stacknet_api::audio::decode_mono(spoken, Some("wav"))
                .map_err(|e| failed("espeak-ng's output", e))?;
            encode(&mono, &speech.format).await
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(BackendError::Abandoned),
            done = tokio::time::timeout(TIMEOUT, work) => done.map_err(|_| BackendError::Timeout(TIMEOUT))?,
        }
    }

    async fn run(self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        if task.workload != Workload::Speech || task.model != MODEL {
            return Err(task.unsupported());
        }
        let (_, speech) = validate_speech(Value::clone(&task.request))?;
        let bytes = self.speak(&speech, &task.cancel).await?;
        let mut outcome = BackendOutcome::units(speech.units(), MODEL, self.version.clone(), &task.model);
        outcome.files = vec![OutputFile {
            content_type: speech_content_type(&speech.format).to_owned(),
            bytes: bytes.into(),
        }];
        Ok(outcome)
    }
}

/// Refuses, before any work, a format no node writes (`aac`: Debian has no free AAC encoder).
pub(crate) fn check_format(format: &str) -> Result<(), BackendError> {
    if format == "aac" {
        return Err(unencodable("aac", "no AAC encoder"));
    }
    Ok(())
}

/// A format this node cannot write: the client's error, naming what it can.
fn unencodable(format: &str, why: &str) -> BackendError {
    BackendError::InvalidRequest(format!(
        "response_format: {format} cannot be written by this node ({why}); ask for wav or pcm, or \
         mp3, flac and opus where lame, flac and opusenc are installed"
    ))
}

/// Speech in `format`.
pub async fn encode(mono: &stacknet_api::audio::Mono, format: &str) -> Result<Vec<u8>, BackendError> {
    let wav = || stacknet_api::audio::wav_pcm16(&mono.samples, mono.sample_rate);
    match format {
        "wav" => Ok(wav()),
        "pcm" => {
            let at = super::whisper::mel::resample(&mono.samples, mono.sample_rate, PCM_RATE);
            Ok(at
                .iter()
                .flat_map(|s| stacknet_api::audio::pcm16(*s).to_le_bytes())
                .collect())
        }
        other => {
            let (_, program, args) = ENCODERS
                .iter()
                .find(|(f, _, _)| *f == other)
                .ok_or_else(|| unencodable(other, "no encoder"))?;
            match pipe(program, args, wav()).await? {
                Ok(bytes) => Ok(bytes),
                Err(why) => Err(unencodable(other, &why)),
            }
        }
    }
}

/// Runs `program args` with `input` on its standard input; its standard output, or why it failed
/// (`Err` inside: not found, or a failing exit). The process dies with the future.
pub(crate) async fn pipe(
    program: &str,
    args: &[&str],
    input: Vec<u8>,
) -> Result<Result<Vec<u8>, String>, BackendError> {
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!("{program} is not installed")))
        }
        Err(e) => return Err(failed(&format!("cannot run {program}"), e)),
    };
    let mut stdin = child.stdin.take().ok_or_else(|| failed(program, "no stdin"))?;
    let feed = tokio::spawn(async move {
        // A program that stops reading early fails below by its exit status.
        let _ = stdin.write_all(&input).await;
    });
    let out = child.wait_with_output().await.map_err(|e| failed(program, e))?;
    let _ = feed.await;
    if !out.status.success() || out.stdout.is_empty() {
        return Ok(Err(format!("{program} failed: {}", out.status)));
    }
    Ok(Ok(out.stdout))
}

impl Backend for EspeakVoice {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: MODEL.to_owned(),
            workloads: vec![Workload::Speech],
            backend: MODEL.to_owned(),
            model_sha256: None,
            tool: None,
        }]
    }

    /// Nothing to load: ready from start.
    fn ready(&self) -> Vec<ModelReady> {
        vec![ModelReady {
            name: MODEL.to_owned(),
            since: self.since,
        }]
    }

    fn execute(
        &self,
        task: BackendTask,
        _chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        Box::pin(self.clone().run(task))
    }
}
