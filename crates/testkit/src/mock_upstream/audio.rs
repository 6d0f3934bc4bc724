//! The mock's OpenAI audio endpoints, as a speaches or LocalAI server answers them.
//!
//! `POST /v1/audio/speech` "speaks" its input as a real 16 kHz, 16-bit PCM WAV file in which each
//! byte of the text is 10 ms of one sample value ([`speak`]); `POST /v1/audio/transcriptions`
//! reads such a file back ([`hear`]), so a round trip through hub and node gives the text back
//! exactly, in every `response_format`. Other formats than `wav` and `pcm` are refused with a 400,
//! as a server that cannot encode them would.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use stacknet_api::audio::{pcm16, wav_pcm16};
use stacknet_node::backend::whisper::cue_time;

use super::error_response;

/// The mock's sample rate.
pub const RATE: u32 = 16_000;
/// Samples per byte of text (10 ms).
pub const SAMPLES_PER_BYTE: usize = 160;

/// `text` as the mock speaks it: one run of [`SAMPLES_PER_BYTE`] samples per byte, each run the
/// 16-bit value `(byte - 128) * 128` (as a float sample, so it writes back exactly).
fn samples(text: &str) -> Vec<f32> {
    text.bytes()
        .flat_map(|b| {
            let sample = f32::from((i16::from(b) - 128) * 128) / f32::from(i16::MAX);
            std::iter::repeat_n(sample, SAMPLES_PER_BYTE)
        })
        .collect()
}

/// `text` as the mock speaks it, as raw 16-bit little-endian PCM.
pub fn speak_pcm(text: &str) -> Vec<u8> {
    samples(text)
        .into_iter()
        .flat_map(|s| pcm16(s).to_le_bytes())
        .collect()
}

/// `text` as the mock speaks it, in a WAV file.
pub fn speak(text: &str) -> Vec<u8> {
    wav_pcm16(&samples(text), RATE)
}

/// The text a WAV file made by [`speak`] says; `None` for any other file.
pub fn hear(wav: &[u8]) -> Option<String> {
    if wav.len() < 44 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return None;
    }
    let pcm = &wav[44..];
    let bytes: Vec<u8> = pcm
        .chunks_exact(SAMPLES_PER_BYTE * 2)
        .map(|run| {
            let sample = i16::from_le_bytes([run[0], run[1]]);
            u8::try_from(sample / 128 + 128).unwrap_or(b'?')
        })
        .collect();
    String::from_utf8(bytes).ok()
}

pub(super) fn speech(request: &Value) -> Response {
    let Some(input) = request.get("input").and_then(Value::as_str) else {
        return error_response(400, "input is required", None);
    };
    let format = request
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("mp3");
    match format {
        "wav" => ([(header::CONTENT_TYPE, "audio/wav")], speak(input)).into_response(),
        "pcm" => ([(header::CONTENT_TYPE, "audio/pcm")], speak_pcm(input)).into_response(),
        other => error_response(
            400,
            &format!("response_format {other} is not supported by this server"),
            None,
        ),
    }
}

/// A multipart request's text fields (arrays from `name[]`) and its files (the parts with a file
/// name), by field name.
/// A multipart form as read: its text fields and its files by field name.
pub(crate) type Form = (Map<String, Value>, std::collections::BTreeMap<String, Bytes>);

pub(crate) fn read_form(headers: &HeaderMap, body: Bytes) -> Result<Form, &'static str> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or("expected multipart/form-data")?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    let mut files = std::collections::BTreeMap::new();
    loop {
        let field = match futures_util::FutureExt::now_or_never(form.next_field()) {
            Some(Ok(Some(f))) => f,
            Some(Ok(None)) => break,
            _ => return Err("a broken multipart body"),
        };
        let name = field.name().unwrap_or("").to_owned();
        let is_file = field.file_name().is_some();
        let Some(Ok(bytes)) = futures_util::FutureExt::now_or_never(field.bytes()) else {
            return Err("a broken multipart body");
        };
        if is_file {
            files.insert(name, bytes);
        } else if let Some(array) = name.strip_suffix("[]") {
            let item = Value::String(String::from_utf8_lossy(&bytes).into_owned());
            if let Value::Array(items) = fields
                .entry(array.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                items.push(item);
            }
        } else {
            fields.insert(name, Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    Ok((fields, files))
}

pub(super) fn transcription(fields: &Map<String, Value>, file: &[u8]) -> Response {
    let Some(text) = hear(file) else {
        return error_response(400, "could not decode the audio", None);
    };
    let seconds = text.len() as f64 * SAMPLES_PER_BYTE as f64 / f64::from(RATE);
    let text_only = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.clone(),
    );
    match fields
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("json")
    {
        "text" => text_only.into_response(),
        "srt" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("1\n00:00:00,000 --> {}\n{text}\n\n", cue_time(seconds, ',')),
        )
            .into_response(),
        "vtt" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
                cue_time(seconds, '.')
            ),
        )
            .into_response(),
        "verbose_json" => {
            let words: Vec<Value> = text
                .split_whitespace()
                .map(|w| json!({"word": w, "start": 0.0, "end": seconds}))
                .collect();
            let mut body = json!({
                "task": "transcribe",
                "language": fields.get("language").and_then(Value::as_str).unwrap_or("english"),
                "duration": seconds,
                "text": text,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text,
                    "tokens": [], "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0,
                    "no_speech_prob": 0.0}],
            });
            let wants_words = fields
                .get("timestamp_granularities")
                .and_then(Value::as_array)
                .is_some_and(|g| g.iter().any(|x| x == "word"));
            if wants_words {
                body["words"] = Value::Array(words);
            }
            axum::Json(body).into_response()
        }
        _ => axum::Json(json!({"text": text})).into_response(),
    }
}
