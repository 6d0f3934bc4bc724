//! Built-in speech to text: Whisper (tiny.en, from the catalog) on the CPU with candle.
//!
//! The weights come as CTranslate2's `model.bin` (the format faster-whisper uses, and what the
//! registry package carries): [`ct2`] reads it and splits its fused attention projections into the
//! tensors candle's Whisper loads. The audio is decoded (WAV, MP3, FLAC, Ogg Vorbis), mixed to mono
//! and resampled to 16 kHz ([`mel`]), turned into an 80-bin log-mel spectrogram with OpenAI's
//! filterbank (computed, not shipped), and transcribed in 30-second windows, each conditioned on the
//! text before it, as OpenAI's reference does.
//!
//! Decoding is greedy (temperature 0 whatever the request says: the same audio always gives the
//! same text, so a validator re-running the task gets the same bytes) and without timestamp
//! tokens: a window is a segment, so `verbose_json`, `srt` and `vtt` have one cue per 30 seconds,
//! and word timestamps are refused. The model loads once and stays loaded (every task is warm);
//! one worker thread runs one transcription at a time on a pool of `threads` threads.

mod ct2;
pub mod mel;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{self as whisper_model, audio, model::Whisper as Model, Config};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use stacknet_api::request::audio::{transcription_content_type, validate_transcription, Transcription};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::values::Sha256Digest;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use super::embed::CANDLE_VERSION;
use super::{
    ask_worker, serve_jobs, Backend, BackendError, BackendOutcome, BackendTask, Cancellation, Job, OutputFile,
};
use crate::models::ModelSpec;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "candle-whisper";
/// The file whose SHA-256 identifies the model in offers and paperwork.
pub const WEIGHTS_FILE: &str = "model.bin";
/// Transcriptions that may wait for the worker; beyond this a task is refused as busy.
pub const QUEUE_CAPACITY: usize = 16;
/// Tokens decoded per 30-second window at most (half the decoder's context, as OpenAI's reference).
pub const MAX_WINDOW_TOKENS: usize = 224;

/// A Whisper model served from this machine's CPU. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Whisper {
    inner: Arc<Inner>,
    loaded_at: Timestamp,
}

#[derive(Debug)]
struct Inner {
    model_name: String,
    model_sha256: Sha256Digest,
    jobs: mpsc::Sender<Job<Transcribe, Heard>>,
}

/// One transcription for the worker.
struct Transcribe {
    audio: bytes::Bytes,
    hint: String,
    prompt: Option<String>,
    cancel: Cancellation,
}

/// One window's text.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Where the window starts, in spectrogram frames (10 ms each).
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
}

/// A transcription: its windows, and the audio's length in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Heard {
    pub segments: Vec<Segment>,
    pub duration: f64,
}

impl Heard {
    /// The whole text, as OpenAI's `text`.
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<String>()
            .trim()
            .to_owned()
    }
}

impl Whisper {
    /// Loads the catalog model `spec` from `dir` (`model.bin`, `tokenizer.json`, `config.json`) and
    /// starts its worker, which runs on at most `threads` threads. Blocking (reads 75 MB).
    pub fn load(dir: &Path, spec: &ModelSpec, threads: usize) -> Result<Self, BackendError> {
        let sha256 = super::file_sha256(spec, WEIGHTS_FILE)?;
        let mut engine = Engine::load(dir)?;
        // Every parallel loop of candle runs on the rayon pool current when it is called: each
        // transcription runs inside this one, so it takes at most `threads` threads.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("stacknet-whisper-{i}"))
            .build()
            .map_err(|e| setup("cannot start the transcription threads", e))?;
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("stacknet-whisper".to_owned())
            .spawn(move || {
                serve_jobs(queue, "transcription", |job: &Transcribe| {
                    pool.install(|| {
                        engine.transcribe(job.audio.clone(), &job.hint, job.prompt.as_deref(), &job.cancel)
                    })
                })
            })
            .map_err(|e| BackendError::Setup(format!("cannot start the transcription worker: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model_name: spec.name.clone(),
                model_sha256: sha256,
                jobs,
            }),
            loaded_at: Timestamp::now(),
        })
    }

    /// Transcribes an audio file on the same worker and queue tasks use, without the OpenAI
    /// request and response around it (the baseline of `stacknet-bench`).
    pub async fn transcribe(&self, audio: bytes::Bytes, hint: &str) -> Result<Heard, BackendError> {
        self.inner
            .transcribe(audio, hint.to_owned(), None, Cancellation::never())
            .await
    }
}

impl Backend for Whisper {
    fn models(&self) -> Vec<ModelOffer> {
        super::loaded_offer(
            &self.inner.model_name,
            &[Workload::Transcription],
            BACKEND_ID,
            self.inner.model_sha256,
        )
    }

    fn ready(&self) -> Vec<ModelReady> {
        super::ready_since(&self.inner.model_name, self.loaded_at)
    }

    fn execute(
        &self,
        task: BackendTask,
        _chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.run(task).await })
    }
}

impl Inner {
    async fn transcribe(
        &self,
        audio: bytes::Bytes,
        hint: String,
        prompt: Option<String>,
        cancel: Cancellation,
    ) -> Result<Heard, BackendError> {
        let job = Transcribe {
            audio,
            hint,
            prompt,
            cancel,
        };
        ask_worker(&self.jobs, job, "transcription").await
    }

    async fn run(&self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        if task.workload != Workload::Transcription || task.model != self.model_name {
            return Err(task.unsupported());
        }
        let (_, request) = validate_transcription(Value::clone(&task.request))?;
        if request.language.as_deref().is_some_and(|l| l != "en") {
            return Err(BackendError::InvalidRequest(format!(
                "language: {} transcribes English only",
                self.model_name
            )));
        }
        if request.timestamp_granularities.iter().any(|g| g == "word") {
            return Err(BackendError::InvalidRequest(format!(
                "timestamp_granularities: {} gives segment timestamps, not word timestamps",
                self.model_name
            )));
        }
        let bytes = task.file(&request.file.sha256, "file")?;
        super::upstream::check_length(&request.file, bytes)?;
        let hint = stacknet_api::audio::hint(request.file.filename.as_deref(), &request.file.content_type);
        let heard = self
            .transcribe(bytes.clone(), hint, request.prompt.clone(), task.cancel.clone())
            .await?;
        let body = answer(&heard, &request)?;
        let mut outcome = BackendOutcome::units(
            request.file.seconds(),
            BACKEND_ID,
            CANDLE_VERSION.to_owned(),
            &task.model,
        );
        outcome.info.model_sha256 = Some(self.model_sha256);
        outcome.files = vec![OutputFile {
            content_type: transcription_content_type(&request.format).to_owned(),
            bytes: body.into(),
        }];
        Ok(outcome)
    }
}

/// The answer's body in the asked `response_format`.
pub fn answer(heard: &Heard, request: &Transcription) -> Result<Vec<u8>, BackendError> {
    let text = heard.text();
    let seconds = request.file.seconds();
    let usage = json!({"type": "duration", "seconds": seconds});
    let json = |v: Value| serde_json::to_vec(&v).map_err(|e| BackendError::Setup(e.to_string()));
    Ok(match request.format.as_str() {
        "text" => format!("{text}\n").into_bytes(),
        "srt" => cues(heard, ',', |i| format!("{}\n", i + 1)).into_bytes(),
        "vtt" => format!("WEBVTT\n\n{}", cues(heard, '.', |_| String::new())).into_bytes(),
        "verbose_json" => {
            let segments: Vec<Value> = heard
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    json!({
                        "id": i, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text,
                        "tokens": s.tokens, "temperature": 0.0, "avg_logprob": s.avg_logprob,
                        "compression_ratio": compression_ratio(&s.text),
                        "no_speech_prob": s.no_speech_prob,
                    })
                })
                .collect();
            json(json!({
                "task": "transcribe", "language": "english", "duration": heard.duration,
                "text": text, "segments": segments, "usage": usage,
            }))?
        }
        _ => json(json!({"text": text, "usage": usage}))?,
    })
}

/// SRT or WebVTT cues, one per segment with text.
fn cues(heard: &Heard, separator: char, number: impl Fn(usize) -> String) -> String {
    heard
        .segments
        .iter()
        .filter(|s| !s.text.trim().is_empty())
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{}{} --> {}\n{}\n\n",
                number(i),
                cue_time(s.start, separator),
                cue_time(s.end, separator),
                s.text.trim()
            )
        })
        .collect()
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
pub fn cue_time(seconds: f64, separator: char) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The text's length over its zlib-compressed length (OpenAI's measure of repetition).
fn compression_ratio(text: &str) -> f64 {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = z.write_all(text.as_bytes()).and_then(|()| z.finish());
    match compressed {
        Ok(c) if !c.is_empty() => text.len() as f64 / c.len() as f64,
        _ => 1.0,
    }
}

fn setup(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what}: {e}"))
}

fn inference(e: candle_core::Error) -> BackendError {
    BackendError::Setup(format!("transcription failed: {e}"))
}

/// The model, its tokenizer and what decoding needs, owned by the worker.
struct Engine {
    model: Model,
    config: Config,
    tokenizer: Tokenizer,
    filters: Vec<f32>,
    /// Token ids never generated (symbols OpenAI suppresses), and those not generated first.
    suppress: Vec<u32>,
    suppress_first: Vec<u32>,
    sot: u32,
    eot: u32,
    sot_prev: u32,
    no_timestamps: u32,
    no_speech: Option<u32>,
}

impl Engine {
    fn load(dir: &Path) -> Result<Self, BackendError> {
        let weights = std::fs::read(dir.join(WEIGHTS_FILE)).map_err(|e| setup("cannot read model.bin", e))?;
        let (config, tensors) = {
            let ct2 = ct2::Ct2Model::parse(&weights)?;
            if ct2.spec != "WhisperSpec" {
                return Err(setup("model.bin", format!("a {} model, not Whisper", ct2.spec)));
            }
            let conv1 = ct2.dims("encoder/conv1/weight")?.to_vec();
            let embeddings = ct2.dims("decoder/embeddings/weight")?.to_vec();
            let (d_model, n_mels, vocab) = match (conv1.as_slice(), embeddings.as_slice()) {
                ([d, m, 3], [v, _]) => (*d, *m, *v),
                _ => return Err(setup("model.bin", "unexpected convolution or embedding shapes")),
            };
            let heads = |name: &str| {
                ct2.integer(name)
                    .and_then(|h| usize::try_from(h).map_err(|e| setup(name, e)))
            };
            let first = |name: &str| -> Result<usize, BackendError> {
                ct2.dims(name)?
                    .first()
                    .copied()
                    .ok_or_else(|| setup("model.bin", format!("{name} has no dimensions")))
            };
            let config = Config {
                num_mel_bins: n_mels,
                max_source_positions: first("encoder/position_encodings/encodings")?,
                d_model,
                encoder_attention_heads: heads("encoder/num_heads")?,
                encoder_layers: ct2.layers("encoder"),
                vocab_size: vocab,
                max_target_positions: first("decoder/position_encodings/encodings")?,
                decoder_attention_heads: heads("decoder/num_heads")?,
                decoder_layers: ct2.layers("decoder"),
                suppress_tokens: Vec::new(),
            };
            let tensors = ct2.whisper_tensors(config.encoder_layers, config.decoder_layers)?;
            (config, tensors)
        };
        drop(weights);
        let vb = VarBuilder::from_tensors(tensors, whisper_model::DTYPE, &Device::Cpu);
        let model = Model::load(&vb, config.clone()).map_err(|e| setup("cannot build the model", e))?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| setup("cannot read tokenizer.json", e))?;
        let token = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| setup("tokenizer.json", format!("no {t} token")))
        };
        let generation: Value = std::fs::read(dir.join("config.json"))
            .map_err(|e| setup("cannot read config.json", e))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| setup("config.json", e)))?;
        let ids = |key: &str| -> Vec<u32> {
            generation
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .filter_map(|i| u32::try_from(i).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Self {
            filters: mel::filters(mel::SAMPLE_RATE, whisper_model::N_FFT, config.num_mel_bins),
            suppress: ids("suppress_ids"),
            suppress_first: ids("suppress_ids_begin"),
            sot: token(whisper_model::SOT_TOKEN)?,
            eot: token(whisper_model::EOT_TOKEN)?,
            sot_prev: token("<|startofprev|>")?,
            no_timestamps: token(whisper_model::NO_TIMESTAMPS_TOKEN)?,
            no_speech: whisper_model::NO_SPEECH_TOKENS
                .iter()
                .find_map(|t| tokenizer.token_to_id(t)),
            model,
            config,
            tokenizer,
        })
    }

    fn transcribe(
        &mut self,
        audio: bytes::Bytes,
        hint: &str,
        prompt: Option<&str>,
        cancel: &Cancellation,
    ) -> Result<Heard, BackendError> {
        let decoded = stacknet_api::audio::decode_mono(audio, Some(hint))
            .map_err(|e| BackendError::InvalidRequest(format!("file: {e}")))?;
        let samples = mel::resample(&decoded.samples, decoded.sample_rate, mel::SAMPLE_RATE);
        self.windows(&samples, prompt, cancel)
    }

    /// Transcribes 16 kHz `samples` window by window.
    fn windows(
        &mut self,
        samples: &[f32],
        prompt: Option<&str>,
        cancel: &Cancellation,
    ) -> Result<Heard, BackendError> {
        let hop = whisper_model::HOP_LENGTH;
        let window = whisper_model::N_FRAMES;
        let content_frames = samples.len() / hop;
        // A window of silence past the end, so the last window is whole (as OpenAI's reference pads).
        let mut padded = samples.to_vec();
        padded.extend(std::iter::repeat_n(0.0, whisper_model::N_SAMPLES));
        let mel = audio::pcm_to_mel(&self.config, &padded, &self.filters);
        let n_mels = self.config.num_mel_bins;
        let frames = mel.len() / n_mels;
        let mel = Tensor::from_vec(mel, (1, n_mels, frames), &Device::Cpu).map_err(inference)?;
        let context_limit = self.config.max_target_positions / 2 - 1;
        let mut context: Vec<u32> = match prompt {
            Some(p) if !p.trim().is_empty() => self
                .tokenizer
                .encode(format!(" {}", p.trim()), false)
                .map_err(|e| BackendError::InvalidRequest(format!("prompt: {e}")))?
                .get_ids()
                .to_vec(),
            _ => Vec::new(),
        };
        let mut segments = Vec::new();
        let mut seek = 0;
        while seek < content_frames {
            if cancel.is_cancelled() {
                return Err(BackendError::Abandoned);
            }
            let piece = mel
                .narrow(2, seek, window.min(frames - seek))
                .map_err(inference)?;
            let tail = &context[context.len().saturating_sub(context_limit)..];
            let segment = self.window(&piece, tail, seek, cancel)?;
            context.extend_from_slice(&segment.tokens);
            let end = (seek + window).min(content_frames);
            segments.push(Segment {
                start: seek as f64 / 100.0,
                end: end as f64 / 100.0,
                ..segment
            });
            seek += window;
        }
        Ok(Heard {
            segments,
            duration: samples.len() as f64 / f64::from(mel::SAMPLE_RATE),
        })
    }

    /// Greedy decoding of one window, after `context` (the text before it).
    fn window(
        &mut self,
        mel: &Tensor,
        context: &[u32],
        seek: usize,
        cancel: &Cancellation,
    ) -> Result<Segment, BackendError> {
        let features = self.model.encoder.forward(mel, true).map_err(inference)?;
        let mut tokens = Vec::with_capacity(context.len() + MAX_WINDOW_TOKENS + 3);
        if !context.is_empty() {
            tokens.push(self.sot_prev);
            tokens.extend_from_slice(context);
        }
        let sot_at = tokens.len();
        tokens.extend([self.sot, self.no_timestamps]);
        let first = tokens.len();
        let (mut sum_logprob, mut no_speech_prob) = (0.0f64, 0.0f64);
        for step in 0..MAX_WINDOW_TOKENS {
            if tokens.len() >= self.config.max_target_positions || cancel.is_cancelled() {
                break;
            }
            let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .map_err(inference)?;
            let ys = self
                .model
                .decoder
                .forward(&input, &features, step == 0)
                .map_err(inference)?;
            if step == 0 {
                if let Some(id) = self.no_speech {
                    let at_sot = self.logits(&ys, sot_at)?;
                    no_speech_prob = f64::from(softmax_at(&at_sot, id as usize));
                }
            }
            let mut logits = self.logits(&ys, tokens.len() - 1)?;
            // Only text: no special tokens and no timestamps (everything after the end token),
            // none of the symbols OpenAI suppresses, and neither a blank nor the end first.
            for (id, l) in logits.iter_mut().enumerate() {
                if id > self.eot as usize {
                    *l = f32::NEG_INFINITY;
                }
            }
            let firsts: &[u32] = if step == 0 { &self.suppress_first } else { &[] };
            for id in self.suppress.iter().chain(firsts) {
                if let Some(l) = logits.get_mut(*id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            let next = argmax(&logits);
            sum_logprob += f64::from(log_softmax_at(&logits, next));
            if next == self.eot as usize {
                break;
            }
            tokens.push(next as u32);
        }
        let text_tokens = tokens[first..].to_vec();
        let text = self
            .tokenizer
            .decode(&text_tokens, true)
            .map_err(|e| setup("cannot decode tokens", e))?;
        let count = text_tokens.len().max(1) as f64;
        Ok(Segment {
            seek,
            start: 0.0,
            end: 0.0,
            text,
            avg_logprob: sum_logprob / count,
            no_speech_prob,
            tokens: text_tokens,
        })
    }

    /// The logits at `position` of the decoder's output `ys`.
    fn logits(&self, ys: &Tensor, position: usize) -> Result<Vec<f32>, BackendError> {
        ys.i((..1, position..position + 1))
            .and_then(|y| self.model.decoder.final_linear(&y))
            .and_then(|l| l.i(0))
            .and_then(|l| l.i(0))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(inference)
    }
}

/// The index of the largest value (the first, on ties: deterministic).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

fn log_softmax_at(values: &[f32], i: usize) -> f32 {
    values[i] - log_sum_exp(values)
}

fn softmax_at(values: &[f32], i: usize) -> f32 {
    values.get(i).map_or(0.0, |_| log_softmax_at(values, i).exp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn heard() -> Heard {
        let segment = |seek: usize, start: f64, end: f64, text: &str| Segment {
            seek,
            start,
            end,
            text: text.to_owned(),
            tokens: vec![1, 2],
            avg_logprob: -0.25,
            no_speech_prob: 0.01,
        };
        Heard {
            segments: vec![
                segment(0, 0.0, 30.0, " Hello there."),
                segment(3000, 30.0, 31.5, " Bye."),
            ],
            duration: 31.5,
        }
    }

    fn request(format: &str) -> Transcription {
        let body = json!({"model": "m", "response_format": format, "file":
            {"sha256": "ab".repeat(32), "size": 10, "content_type": "audio/wav", "duration_ms": 31_500}});
        validate_transcription(body).unwrap().1
    }

    #[test]
    fn every_response_format_is_written_as_openai_writes_it() {
        let h = heard();
        let text = |f: &str| String::from_utf8(answer(&h, &request(f)).unwrap()).unwrap();
        assert_eq!(text("text"), "Hello there. Bye.\n");
        assert_eq!(
            serde_json::from_str::<Value>(&text("json")).unwrap(),
            json!({"text": "Hello there. Bye.", "usage": {"type": "duration", "seconds": 32}})
        );
        assert_eq!(
            text("srt"),
            "1\n00:00:00,000 --> 00:00:30,000\nHello there.\n\n2\n00:00:30,000 --> 00:00:31,500\nBye.\n\n"
        );
        assert!(text("vtt").starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:30.000\nHello there.\n\n"));
        let verbose: Value = serde_json::from_str(&text("verbose_json")).unwrap();
        assert_eq!(verbose["segments"][1]["start"], 30.0);
        assert_eq!(verbose["segments"][1]["seek"], 3000);
        assert_eq!(verbose["duration"], 31.5);
    }

    #[test]
    fn softmax_and_argmax_are_exact_and_deterministic() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NEG_INFINITY]), 1);
        let p = softmax_at(&[0.0, 0.0, f32::NEG_INFINITY], 0);
        assert!((p - 0.5).abs() < 1e-6);
    }
}
