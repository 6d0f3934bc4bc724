//! Built-in text to speech with a neural voice: Piper (a VITS model exported to ONNX, from the
//! catalog) on ONNX Runtime ([`super::onnx`]), with phonemes from eSpeak NG.
//!
//! The text is phonemized by the `espeak-ng` program (`-q --ipa`, the voice's eSpeak language; run,
//! never linked: it is GPL), one line per clause. The punctuation that ended each clause is taken
//! from the text (eSpeak drops it) when the clauses line up with it, so the voice hears the commas
//! and full stops it was trained with; each sentence becomes phoneme ids as Piper writes them (`^`,
//! then each phoneme followed by the pad `_`, then `$`; phonemes the voice does not know are
//! skipped) and is synthesized on its own, with 0.2 s of silence between sentences, as Piper does.
//!
//! Deterministic by default: the model's two noise scales are 0, so the same request always gives
//! the same samples and a validator re-running the task on the same runtime gets the same bytes.
//! `natural = true` in the backend's configuration uses the voice's trained noise instead (livelier,
//! not replayable). `speed` divides the voice's length scale. Output is peak-normalized as Piper's
//! is, then written in the asked format by [`super::voice::encode`], the same encoders as the
//! fallback voice. The model has one speaker: every OpenAI voice name is accepted and speaks with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::Value;
use stacknet_api::audio::Mono;
use stacknet_api::request::audio::{speech_content_type, validate_speech, Speech};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::values::Sha256Digest;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokio::sync::mpsc;

use super::onnx::Runtime;
use super::voice::{self, VOICES};
use super::{
    ask_worker, serve_jobs, Backend, BackendError, BackendOutcome, BackendTask, Cancellation, Job, OutputFile,
};
use crate::models::ModelSpec;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "onnxruntime-piper";
/// Syntheses that may wait for the worker; beyond this a task is refused as busy.
pub const QUEUE_CAPACITY: usize = 16;
/// Silence between sentences, as Piper puts it.
pub const SENTENCE_SILENCE_SECONDS: f32 = 0.2;
/// The voice's name, besides OpenAI's (which all speak with it).
pub const OWN_VOICE: &str = "joe";
/// How long one synthesis may take, phonemizing and encoding included.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A Piper voice served from this machine's CPU. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PiperVoice {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: String,
    model_sha256: Sha256Digest,
    version: String,
    espeak: PathBuf,
    voice: VoiceConfig,
    natural: bool,
    jobs: mpsc::Sender<Job<Utterance, Vec<f32>>>,
    loaded_at: Timestamp,
}

/// What the voice's `.onnx.json` says that synthesis needs.
#[derive(Clone, Debug, PartialEq)]
pub struct VoiceConfig {
    pub sample_rate: u32,
    /// The eSpeak voice its phonemes come from (`en-us`).
    pub espeak_voice: String,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    /// Each phoneme (one character) and its ids.
    pub phoneme_ids: Vec<(char, Vec<i64>)>,
}

impl VoiceConfig {
    /// Reads a Piper voice configuration.
    pub fn parse(json: &Value) -> Result<Self, String> {
        let number = |pointer: &str| json.pointer(pointer).and_then(Value::as_f64);
        let sample_rate = number("/audio/sample_rate")
            .filter(|r| (8_000.0..=96_000.0).contains(r))
            .ok_or("audio.sample_rate is missing or out of range")? as u32;
        if json["phoneme_type"] != "espeak" {
            return Err(format!("phoneme_type {} is not espeak", json["phoneme_type"]));
        }
        let espeak_voice = json
            .pointer("/espeak/voice")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c)))
            .ok_or("espeak.voice is missing or not a voice name")?
            .to_owned();
        if json.get("num_speakers").and_then(Value::as_u64).unwrap_or(1) != 1 {
            return Err("voices with several speakers are not supported".to_owned());
        }
        let map = json
            .get("phoneme_id_map")
            .and_then(Value::as_object)
            .ok_or("phoneme_id_map is missing")?;
        let mut phoneme_ids = Vec::with_capacity(map.len());
        for (phoneme, ids) in map {
            let mut chars = phoneme.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(format!("phoneme {phoneme:?} is not one character"));
            };
            let ids = ids
                .as_array()
                .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
                .ok_or_else(|| format!("phoneme {phoneme:?}: ids are not integers"))?;
            phoneme_ids.push((c, ids));
        }
        let config = Self {
            sample_rate,
            espeak_voice,
            noise_scale: number("/inference/noise_scale").unwrap_or(0.667) as f32,
            length_scale: number("/inference/length_scale").unwrap_or(1.0) as f32,
            noise_w: number("/inference/noise_w").unwrap_or(0.8) as f32,
            phoneme_ids,
        };
        for special in [PAD, BOS, EOS] {
            if config.ids(special).is_none() {
                return Err(format!("phoneme_id_map has no {special:?}"));
            }
        }
        Ok(config)
    }

    fn ids(&self, phoneme: char) -> Option<&[i64]> {
        self.phoneme_ids
            .iter()
            .find(|(c, _)| *c == phoneme)
            .map(|(_, ids)| ids.as_slice())
    }

    /// A sentence's phonemes as the model's input ids: `^ _ (p _)* $`, unknown phonemes skipped.
    pub fn sentence_ids(&self, phonemes: &str) -> Vec<i64> {
        let pad = self.ids(PAD).unwrap_or_default();
        let mut ids = Vec::with_capacity(phonemes.chars().count() * 2 + 3);
        ids.extend_from_slice(self.ids(BOS).unwrap_or_default());
        ids.extend_from_slice(pad);
        for c in phonemes.chars() {
            if let Some(p) = self.ids(c) {
                ids.extend_from_slice(p);
                ids.extend_from_slice(pad);
            }
        }
        ids.extend_from_slice(self.ids(EOS).unwrap_or_default());
        ids
    }
}

const PAD: char = '_';
const BOS: char = '^';
const EOS: char = '$';

/// One synthesis for the worker: each sentence's ids, and the scales.
struct Utterance {
    sentences: Vec<Vec<i64>>,
    /// noise_scale, length_scale, noise_w.
    scales: [f32; 3],
    cancel: Cancellation,
}

fn setup(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what}: {e}"))
}

impl PiperVoice {
    /// Loads the catalog voice `spec` from `dir` on `runtime` and starts its worker (inference on
    /// `threads` threads). `espeak` is the phonemizer program (default `espeak-ng` on the PATH).
    /// Blocking (reads the model).
    pub fn load(
        runtime: &Runtime,
        dir: &Path,
        spec: &ModelSpec,
        threads: usize,
        espeak: Option<PathBuf>,
        natural: bool,
    ) -> Result<Self, BackendError> {
        let onnx = spec
            .files
            .iter()
            .find(|f| f.path.ends_with(".onnx"))
            .ok_or_else(|| BackendError::Setup(format!("model {} has no .onnx file", spec.name)))?;
        let model_sha256 = super::file_sha256(spec, &onnx.path)?;
        let config_path = dir.join(format!("{}.json", onnx.path));
        let json: Value = std::fs::read(&config_path)
            .map_err(|e| setup(&format!("cannot read {}", config_path.display()), e))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| setup(&config_path.display().to_string(), e))
            })?;
        let voice = VoiceConfig::parse(&json).map_err(|e| setup(&config_path.display().to_string(), e))?;
        // A voice that cannot phonemize is not offered: say so at start, not on every task.
        let espeak = espeak.unwrap_or_else(|| PathBuf::from("espeak-ng"));
        std::process::Command::new(&espeak)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| {
                setup(
                    &format!(
                        "cannot run {} (apt install espeak-ng), which phonemizes for the voice",
                        espeak.display()
                    ),
                    e,
                )
            })?;
        let session = runtime.session(&dir.join(&onnx.path), threads)?;
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let name = spec.name.clone();
        std::thread::Builder::new()
            .name("stacknet-piper".to_owned())
            .spawn(move || {
                let mut session = session;
                serve_jobs(queue, &name, |u: &Utterance| synthesize(&mut session, u));
            })
            .map_err(|e| setup("cannot start the voice's thread", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model: spec.name.clone(),
                model_sha256,
                version: runtime.backend_version(),
                espeak,
                voice,
                natural,
                jobs,
                loaded_at: Timestamp::now(),
            }),
        })
    }

    pub fn model(&self) -> &str {
        &self.inner.model
    }

    /// Speaks `speech` in its format: the audio bytes. The same work a task does, without the task
    /// (the baseline of `stacknet-bench speech`).
    pub async fn speak(&self, speech: &Speech, cancel: &Cancellation) -> Result<Vec<u8>, BackendError> {
        let work = async {
            let mono = self.samples(speech, cancel).await?;
            voice::encode(&mono, &speech.format).await
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(BackendError::Abandoned),
            done = tokio::time::timeout(TIMEOUT, work) => done.map_err(|_| BackendError::Timeout(TIMEOUT))?,
        }
    }

    /// The speech as samples in -1..1 at the voice's rate.
    pub async fn samples(&self, speech: &Speech, cancel: &Cancellation) -> Result<Mono, BackendError> {
        let inner = &self.inner;
        if speech.voice != OWN_VOICE && !VOICES.iter().any(|(name, _)| *name == speech.voice) {
            let mut names: Vec<&str> = VOICES.iter().map(|(n, _)| *n).collect();
            names.push(OWN_VOICE);
            return Err(BackendError::InvalidRequest(format!(
                "voice: {:?} is not a voice of {}; its voices: {}",
                speech.voice,
                inner.model,
                names.join(", ")
            )));
        }
        voice::check_format(&speech.format)?;
        let lines = phonemize(&inner.espeak, &inner.voice.espeak_voice, &speech.input).await?;
        let sentences: Vec<Vec<i64>> = sentences(&speech.input, &lines)
            .iter()
            .map(|s| inner.voice.sentence_ids(s))
            .collect();
        let v = &inner.voice;
        let (noise, noise_w) = if inner.natural {
            (v.noise_scale, v.noise_w)
        } else {
            (0.0, 0.0)
        };
        let scales = [noise, v.length_scale / speech.speed as f32, noise_w];
        let utterance = Utterance {
            sentences,
            scales,
            cancel: cancel.clone(),
        };
        let raw = ask_worker(&inner.jobs, utterance, "Piper voice").await?;
        Ok(Mono {
            samples: normalize(raw, v.sample_rate),
            sample_rate: v.sample_rate,
        })
    }

    async fn run(self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        if task.workload != Workload::Speech || task.model != self.inner.model {
            return Err(task.unsupported());
        }
        let (_, speech) = validate_speech(Value::clone(&task.request))?;
        let bytes = self.speak(&speech, &task.cancel).await?;
        let mut outcome = BackendOutcome::units(
            speech.units(),
            BACKEND_ID,
            self.inner.version.clone(),
            &task.model,
        );
        outcome.info.model_sha256 = Some(self.inner.model_sha256);
        outcome.files = vec![OutputFile {
            content_type: speech_content_type(&speech.format).to_owned(),
            bytes: bytes.into(),
        }];
        Ok(outcome)
    }
}

/// Runs the model on each sentence; the raw samples, sentences joined by silence.
fn synthesize(session: &mut Session, u: &Utterance) -> Result<Vec<f32>, BackendError> {
    let failed = |e: ort::Error| BackendError::Setup(format!("the voice failed: {e}"));
    let mut out: Vec<f32> = Vec::new();
    for (i, ids) in u.sentences.iter().enumerate() {
        if u.cancel.is_cancelled() {
            return Err(BackendError::Abandoned);
        }
        if i > 0 {
            // Filled in by `normalize`, which knows the rate: a marker between sentences.
            out.push(f32::NAN);
        }
        let len = ids.len();
        let input = Tensor::from_array(([1_usize, len], ids.clone())).map_err(failed)?;
        let lengths = Tensor::from_array(([1_usize], vec![len as i64])).map_err(failed)?;
        let scales = Tensor::from_array(([3_usize], u.scales.to_vec())).map_err(failed)?;
        let outputs = session
            .run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
            .map_err(failed)?;
        let (_, samples) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
        out.extend(samples.iter().map(|s| if s.is_finite() { *s } else { 0.0 }));
    }
    Ok(out)
}

/// Peak-normalizes the samples to -1..1 as Piper does (a peak under 0.01 is not amplified past
/// 100x), and turns the sentence markers into silence.
fn normalize(raw: Vec<f32>, sample_rate: u32) -> Vec<f32> {
    let peak = raw
        .iter()
        .filter(|s| s.is_finite())
        .fold(0.0_f32, |m, s| m.max(s.abs()))
        .max(0.01);
    let silence = (SENTENCE_SILENCE_SECONDS * sample_rate as f32) as usize;
    let mut out = Vec::with_capacity(raw.len());
    for s in raw {
        if s.is_nan() {
            out.extend(std::iter::repeat_n(0.0, silence));
        } else {
            out.push((s / peak).clamp(-1.0, 1.0));
        }
    }
    out
}

/// The text's clauses as eSpeak NG phonemizes them (IPA, one line per clause).
async fn phonemize(program: &Path, language: &str, text: &str) -> Result<Vec<String>, BackendError> {
    let out = voice::pipe(
        &program.to_string_lossy(),
        &["-q", "--ipa", "--stdin", "-v", language],
        text.as_bytes().to_vec(),
    )
    .await?
    .map_err(|e| setup("espeak-ng (the phonemizer)", e))?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Punctuation that ends a clause for eSpeak, when followed by a space or the end of the text.
const CLAUSE_ENDS: [char; 6] = ['.', ',', '?', '!', ';', ':'];
/// Those that end a sentence.
const SENTENCE_ENDS: [char; 3] = ['.', '?', '!'];

/// Each clause's ending punctuation in `text`, in order; `None` for a last clause without one.
fn clause_punctuation(text: &str) -> Vec<Option<char>> {
    let chars: Vec<char> = text.chars().collect();
    let mut marks = Vec::new();
    let mut said = false;
    for (i, c) in chars.iter().enumerate() {
        if CLAUSE_ENDS.contains(c) && chars.get(i + 1).is_none_or(|n| n.is_whitespace()) {
            // "Wait..." or "?!" end one clause, not several.
            if said {
                marks.push(Some(*c));
                said = false;
            }
        } else if c.is_alphanumeric() {
            said = true;
        }
    }
    if said {
        marks.push(None);
    }
    marks
}

/// The phonemes of each sentence: the clauses' lines with their punctuation (when the clauses the
/// text's punctuation marks out are eSpeak's; else each line a sentence of its own, unpunctuated).
fn sentences(text: &str, lines: &[String]) -> Vec<String> {
    let marks = clause_punctuation(text);
    if marks.len() != lines.len() {
        return lines.to_vec();
    }
    let mut sentences = Vec::new();
    let mut current = String::new();
    for (line, mark) in lines.iter().zip(marks) {
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
        if let Some(m) = mark {
            current.push(m);
        }
        if mark.is_none_or(|m| SENTENCE_ENDS.contains(&m)) {
            sentences.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        sentences.push(current);
    }
    sentences
}

impl Backend for PiperVoice {
    fn models(&self) -> Vec<ModelOffer> {
        super::loaded_offer(
            &self.inner.model,
            &[Workload::Speech],
            BACKEND_ID,
            self.inner.model_sha256,
        )
    }

    /// Loaded at start and kept: always warm.
    fn ready(&self) -> Vec<ModelReady> {
        super::ready_since(&self.inner.model, self.inner.loaded_at)
    }

    fn execute(
        &self,
        task: BackendTask,
        _chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        Box::pin(self.clone().run(task))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> VoiceConfig {
        VoiceConfig::parse(&json!({
            "audio": {"sample_rate": 22050},
            "espeak": {"voice": "en-us"},
            "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
            "phoneme_type": "espeak",
            "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], ".": [10], "h": [20], "ə": [59], "ˈ": [120]},
        }))
        .unwrap()
    }

    #[test]
    fn ids_are_written_as_piper_writes_them() {
        // ^ _ then each known phoneme and a pad, then $; "x" is unknown and skipped.
        assert_eq!(
            config().sentence_ids("hˈəx."),
            vec![1, 0, 20, 0, 120, 0, 59, 0, 10, 0, 2]
        );
        assert_eq!(config().sentence_ids(""), vec![1, 0, 2]);
    }

    #[test]
    fn a_config_without_what_synthesis_needs_is_refused() {
        let mut bad = json!({"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-us; rm"}, "phoneme_type": "espeak", "phoneme_id_map": {}});
        assert!(VoiceConfig::parse(&bad).unwrap_err().contains("espeak.voice"));
        bad["espeak"]["voice"] = json!("en-us");
        assert!(VoiceConfig::parse(&bad).unwrap_err().contains("no '_'"));
        bad["phoneme_type"] = json!("text");
        assert!(VoiceConfig::parse(&bad).unwrap_err().contains("not espeak"));
    }

    #[test]
    fn clauses_get_their_punctuation_and_sentences_are_split() {
        let lines: Vec<String> = ["həlˈoʊ", "wˈɜːld", "hˌaʊ ɑːɹ juː", "fˈaɪn"]
            .map(str::to_owned)
            .into();
        assert_eq!(
            sentences("Hello, world. How are you?! Fine", &lines),
            vec!["həlˈoʊ, wˈɜːld.", "hˌaʊ ɑːɹ juː!", "fˈaɪn"]
        );
        // Numbers and abbreviations eSpeak reads differently: clauses do not line up, so each line
        // is a sentence and nothing is guessed.
        let two: Vec<String> = ["θɹˈiː pɔɪnt fˈaɪv"].map(str::to_owned).into();
        assert_eq!(sentences("3.5, ok.", &two), vec!["θɹˈiː pɔɪnt fˈaɪv"]);
    }

    #[test]
    fn samples_are_peak_normalized_and_sentences_separated_by_silence() {
        let out = normalize(vec![0.5, -0.25, f32::NAN, 0.1], 10);
        assert_eq!(out, vec![1.0, -0.5, 0.0, 0.0, 0.2]);
        // Near-silence is not blown up past 100x.
        assert!((normalize(vec![0.001], 10)[0] - 0.1).abs() < 1e-6);
    }
}
