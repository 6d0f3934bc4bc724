//! `POST /v1/audio/speech` (text in, audio bytes out) and `POST /v1/audio/transcriptions` (an
//! uploaded audio file in, its text out), as OpenAI defines them.
//!
//! Both answer with bytes, not an OpenAI JSON object the hub can add to: the body is exactly what
//! the node produced (audio in the asked format; the transcription as JSON or text), its digest is
//! the SHA-256 of those bytes, and the proof travels in headers (PROTOCOL.md 7.7).
//!
//! A transcription's upload is measured by the hub before any node is asked: its descriptor in the
//! task's request carries `duration_ms` beside the sha256, size and type, and the task holds (and
//! the node may claim) that many seconds, rounded up. Speech is counted in characters of `input`.

use serde_json::{Map, Value};
use stacknet_protocol::contract::Workload;

use super::fields::{self, object};
use super::{ApiRequest, RequestError};

/// The longest `input` to speak, in characters (OpenAI's limit).
pub const MAX_SPEECH_CHARS: usize = 4_096;
/// The audio formats speech may be asked for, as OpenAI names them.
pub const SPEECH_FORMATS: [&str; 6] = ["mp3", "opus", "aac", "flac", "wav", "pcm"];
/// `speed`'s range.
pub const SPEED_RANGE: (f64, f64) = (0.25, 4.0);
/// The longest voice name, in bytes.
pub const MAX_VOICE_BYTES: usize = 128;
/// The longest `instructions` (speech) and `prompt` (transcription), in bytes.
pub const MAX_GUIDANCE_BYTES: usize = 4_096;
/// The formats a transcription may be answered in.
pub const TRANSCRIPTION_FORMATS: [&str; 5] = ["json", "text", "srt", "vtt", "verbose_json"];
/// The largest audio upload, in bytes (OpenAI's limit).
pub const MAX_AUDIO_BYTES: u64 = 25 * 1024 * 1024;
/// The multipart fields of a transcription that carry files.
pub const FILE_FIELDS: [&str; 1] = ["file"];
/// Timestamps a `verbose_json` transcription may be asked for.
pub const TIMESTAMP_GRANULARITIES: [&str; 2] = ["word", "segment"];

/// What a speech backend needs from a validated request.
#[derive(Clone, Debug, PartialEq)]
pub struct Speech {
    pub input: String,
    pub voice: String,
    /// One of [`SPEECH_FORMATS`]; `mp3` when not given.
    pub format: String,
    /// 1.0 when not given.
    pub speed: f64,
    pub instructions: Option<String>,
}

impl Speech {
    /// The units a speech task is counted in: characters of input.
    pub fn units(&self) -> u64 {
        characters(&self.input)
    }
}

/// Characters (Unicode scalar values) of `text`.
pub fn characters(text: &str) -> u64 {
    u64::try_from(text.chars().count()).unwrap_or(u64::MAX)
}

/// The media type of speech in `format`.
pub fn speech_content_type(format: &str) -> &'static str {
    match format {
        "opus" => "audio/ogg",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    }
}

/// The media type of a transcription in `format`.
pub fn transcription_content_type(format: &str) -> &'static str {
    match format {
        "json" | "verbose_json" => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

pub fn validate_speech(body: Value) -> Result<(ApiRequest, Speech), RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let input = match obj.get("input") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_SPEECH_CHARS => s.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(RequestError::invalid("input", "input must not be empty"))
        }
        Some(Value::String(_)) => {
            return Err(RequestError::invalid(
                "input",
                format!("input is over {MAX_SPEECH_CHARS} characters"),
            ))
        }
        Some(_) => return Err(RequestError::invalid("input", "input must be a string")),
        None => {
            return Err(RequestError::invalid(
                "input",
                "you must provide an input parameter",
            ))
        }
    };
    let voice = voice(obj)?;
    let format = fields::one_of(obj, "response_format", &SPEECH_FORMATS)?.unwrap_or_else(|| "mp3".to_owned());
    fields::number(obj, "speed", SPEED_RANGE.0, SPEED_RANGE.1)?;
    let speed = obj.get("speed").and_then(Value::as_f64).unwrap_or(1.0);
    let instructions = text(obj, "instructions", MAX_GUIDANCE_BYTES)?;
    // Speech streamed as server-sent events (`stream_format: "sse"`) is not served: the audio is one
    // body whose bytes the paperwork signs.
    fields::one_of(obj, "stream_format", &["audio"])?;
    let user = fields::user(obj)?;
    let speech = Speech {
        input,
        voice,
        format,
        speed,
        instructions,
    };
    Ok((ApiRequest::whole(Workload::Speech, model, user, 1, body), speech))
}

/// `voice`: a name, or OpenAI's `{"id": ...}` of a custom voice.
fn voice(obj: &Map<String, Value>) -> Result<String, RequestError> {
    let name = match obj.get("voice") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => o.get("id").and_then(Value::as_str).unwrap_or(""),
        None => {
            return Err(RequestError::invalid(
                "voice",
                "you must provide a voice parameter",
            ))
        }
        Some(_) => "",
    };
    if name.is_empty() || name.len() > MAX_VOICE_BYTES || name.chars().any(char::is_control) {
        return Err(RequestError::invalid(
            "voice",
            format!("voice must be a name of 1 to {MAX_VOICE_BYTES} bytes"),
        ));
    }
    Ok(name.to_owned())
}

/// An optional text field of at most `max` bytes.
fn text(obj: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, RequestError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(_) => Err(RequestError::invalid(
            field,
            format!("{field} must be a string of at most {max} bytes"),
        )),
    }
}

/// An uploaded audio file as the task's request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioRef {
    pub sha256: stacknet_protocol::Sha256Digest,
    pub size: u64,
    pub content_type: String,
    pub filename: Option<String>,
    /// Its length as the hub measured it.
    pub duration_ms: u64,
}

impl AudioRef {
    /// The seconds a transcription of it is counted in, rounded up.
    pub fn seconds(&self) -> u64 {
        self.duration_ms.div_ceil(1000)
    }
}

/// What a transcription backend needs from a validated request.
#[derive(Clone, Debug, PartialEq)]
pub struct Transcription {
    pub file: AudioRef,
    /// ISO-639-1, when given.
    pub language: Option<String>,
    pub prompt: Option<String>,
    /// One of [`TRANSCRIPTION_FORMATS`]; `json` when not given.
    pub format: String,
    pub temperature: Option<f64>,
    /// Of [`TIMESTAMP_GRANULARITIES`] (only with `verbose_json`); `segment` when not given.
    pub timestamp_granularities: Vec<String>,
}

pub fn validate_transcription(body: Value) -> Result<(ApiRequest, Transcription), RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let file = audio_ref(obj)?;
    let language = match obj.get("language") {
        None | Some(Value::Null) => None,
        Some(Value::String(l))
            if (2..=8).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic() || c == '-') =>
        {
            Some(l.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(RequestError::invalid(
                "language",
                "language must be an ISO-639-1 code such as en",
            ))
        }
    };
    let prompt = text(obj, "prompt", MAX_GUIDANCE_BYTES)?;
    let format =
        fields::one_of(obj, "response_format", &TRANSCRIPTION_FORMATS)?.unwrap_or_else(|| "json".to_owned());
    fields::number(obj, "temperature", 0.0, 1.0)?;
    let temperature = obj.get("temperature").and_then(Value::as_f64);
    let timestamp_granularities = match obj.get("timestamp_granularities") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(g) if TIMESTAMP_GRANULARITIES.contains(&g) => out.push(g.to_owned()),
                    _ => {
                        return Err(RequestError::invalid(
                            "timestamp_granularities",
                            "timestamp_granularities must list word and/or segment",
                        ))
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(RequestError::invalid(
                "timestamp_granularities",
                "timestamp_granularities must be an array",
            ))
        }
    };
    if !timestamp_granularities.is_empty() && format != "verbose_json" {
        return Err(RequestError::invalid(
            "timestamp_granularities",
            "timestamp_granularities needs response_format verbose_json",
        ));
    }
    // Streamed transcription (server-sent text deltas) is not served: the text is one body whose
    // bytes the paperwork signs.
    if fields::optional_bool(obj, "stream")? == Some(true) {
        return Err(RequestError::invalid(
            "stream",
            "streamed transcriptions are not served; leave stream out",
        ));
    }
    let user = fields::user(obj)?;
    let transcription = Transcription {
        file,
        language,
        prompt,
        format,
        temperature,
        timestamp_granularities,
    };
    Ok((
        ApiRequest::whole(Workload::Transcription, model, user, 1, body),
        transcription,
    ))
}

/// The seconds a (validated) transcription request is counted in; 0 if it names no measured file.
pub fn transcription_seconds(body: &Value) -> u64 {
    body.as_object()
        .and_then(|obj| audio_ref(obj).ok())
        .map_or(0, |f| f.seconds())
}

/// The characters a (validated) speech request is counted in.
pub fn speech_characters(body: &Value) -> u64 {
    body.get("input").and_then(Value::as_str).map_or(0, characters)
}

fn audio_ref(obj: &Map<String, Value>) -> Result<AudioRef, RequestError> {
    let bad = || RequestError::invalid("file", "file must be an uploaded audio file");
    let d = obj
        .get("file")
        .ok_or_else(|| RequestError::invalid("file", "you must provide a file"))?
        .as_object()
        .ok_or_else(bad)?;
    let sha256 = d
        .get("sha256")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let size = d
        .get("size")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
        .ok_or_else(bad)?;
    if size > MAX_AUDIO_BYTES {
        return Err(RequestError::invalid(
            "file",
            format!("the file is {size} bytes, over the {MAX_AUDIO_BYTES} byte limit"),
        ));
    }
    let content_type = d.get("content_type").and_then(Value::as_str).ok_or_else(bad)?;
    let duration_ms = d
        .get("duration_ms")
        .and_then(Value::as_u64)
        .filter(|ms| *ms > 0)
        .ok_or_else(bad)?;
    Ok(AudioRef {
        sha256,
        size,
        content_type: content_type.to_owned(),
        filename: d.get("filename").and_then(Value::as_str).map(str::to_owned),
        duration_ms,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn param(r: Result<impl std::fmt::Debug, RequestError>) -> String {
        match r.unwrap_err() {
            RequestError::Invalid { param, .. } => param,
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn speech_fields_are_checked_by_name() {
        let ok = json!({"model": "m", "input": "Hello there.", "voice": "alloy"});
        let (req, speech) = validate_speech(ok.clone()).unwrap();
        assert_eq!(
            (req.workload, speech.format.as_str(), speech.speed),
            (Workload::Speech, "mp3", 1.0)
        );
        assert_eq!(speech.units(), 12);
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            validate_speech(b)
        };
        assert_eq!(param(with("voice", json!(""))), "voice");
        assert_eq!(param(with("response_format", json!("ogg"))), "response_format");
        assert_eq!(param(with("speed", json!(5))), "speed");
        assert_eq!(param(with("input", json!("  "))), "input");
        assert_eq!(param(with("input", json!("é".repeat(4097)))), "input");
        assert!(with("input", json!("é".repeat(4096))).is_ok());
        assert_eq!(param(with("stream_format", json!("sse"))), "stream_format");
        assert_eq!(with("voice", json!({"id": "custom"})).unwrap().1.voice, "custom");
    }

    #[test]
    fn a_transcription_names_a_measured_file() {
        let file =
            json!({"sha256": "ab".repeat(32), "size": 10, "content_type": "audio/wav", "duration_ms": 1001});
        let ok = json!({"model": "whisper-1", "file": file});
        let (_, t) = validate_transcription(ok.clone()).unwrap();
        assert_eq!((t.file.seconds(), t.format.as_str()), (2, "json"));
        assert_eq!(transcription_seconds(&ok), 2);
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            validate_transcription(b)
        };
        assert_eq!(param(with("response_format", json!("xml"))), "response_format");
        assert_eq!(param(with("language", json!("english!"))), "language");
        assert_eq!(param(with("temperature", json!(2))), "temperature");
        assert_eq!(param(with("stream", json!(true))), "stream");
        assert_eq!(
            param(with("timestamp_granularities", json!(["word"]))),
            "timestamp_granularities"
        );
        let mut verbose = ok.clone();
        verbose["response_format"] = json!("verbose_json");
        verbose["timestamp_granularities"] = json!(["word", "segment"]);
        assert!(validate_transcription(verbose).is_ok());
        let mut unmeasured = ok.clone();
        unmeasured["file"]["duration_ms"] = json!(0);
        assert_eq!(param(validate_transcription(unmeasured)), "file");
        assert_eq!(param(validate_transcription(json!({"model": "m"}))), "file");
    }
}
