//! `POST /v1/audio/speech` (JSON in, audio out) and `POST /v1/audio/transcriptions` (a multipart
//! upload in, JSON or text out). Both answer with the node's one output file as the body, exactly
//! as the node made it, the proof in headers (PROTOCOL.md 7.7); the body's media type is the one
//! the request's `response_format` names, never the node's word.
//!
//! An upload is measured here before anything is held or any node is asked: a file that is not
//! audio, is empty, is over [`MAX_AUDIO_BYTES`] or runs over `stacknet_api::audio::MAX_AUDIO_MS`
//! is a 400 naming `file`. Its length, in milliseconds, goes into its descriptor in the task's
//! request (`duration_ms`); the task holds that many seconds, rounded up, which is also the most
//! the node may claim. Speech holds, and may claim, its input's characters.

use axum::body::Bytes;
use serde_json::Value;
use stacknet_api::audio::{hint, probe, AudioError};
use stacknet_api::request::audio::{
    speech_characters, speech_content_type, transcription_content_type, transcription_seconds, FILE_FIELDS,
    MAX_AUDIO_BYTES,
};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::multipart::{read_multipart, upload, Form};
use super::{parse_json, Accepted, Answer, Collected, Parsed, Stamp, WorkloadApi, OUTPUT_ALLOWANCE_BYTES};
use crate::error::ApiError;

/// Bytes of a transcription allowed per second of audio: `verbose_json` with word timestamps
/// (a few words a second, each with its start and end) and its segments, with room to spare.
pub const TRANSCRIPTION_BYTES_PER_SECOND: u64 = 4 * 1024;

/// A transcription upload's form.
const FORM: Form = Form {
    files: &FILE_FIELDS,
    numbers: &["temperature"],
};

/// One of the two audio APIs.
#[derive(Debug)]
pub struct Audio {
    workload: Workload,
    path: &'static str,
}

pub const SPEECH: Audio = Audio {
    workload: Workload::Speech,
    path: stacknet_api::paths::AUDIO_SPEECH,
};

pub const TRANSCRIPTION: Audio = Audio {
    workload: Workload::Transcription,
    path: stacknet_api::paths::AUDIO_TRANSCRIPTIONS,
};

impl WorkloadApi for Audio {
    fn path(&self) -> &'static str {
        self.path
    }

    fn parse(&self, content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        if self.workload == Workload::Speech {
            return parse_json(Workload::Speech, &body);
        }
        let (mut fields, files) = read_multipart(content_type, body, &FORM)?;
        if let Some(descriptor) = fields.get_mut("file").and_then(Value::as_object_mut) {
            let (meta, bytes) =
                upload(descriptor, &files).ok_or_else(|| ApiError::internal("an upload without its file"))?;
            if meta.size > MAX_AUDIO_BYTES {
                return Err(ApiError::invalid(
                    "file",
                    format!(
                        "the file is {} bytes, over the {MAX_AUDIO_BYTES} byte limit",
                        meta.size
                    ),
                ));
            }
            let filename = descriptor.get("filename").and_then(Value::as_str);
            let hint = hint(filename, &meta.content_type);
            let info = probe(bytes.clone(), Some(&hint)).map_err(|e| audio_refusal(&e))?;
            descriptor.insert("duration_ms".into(), Value::from(info.duration_ms));
        }
        let request = stacknet_api::request::validate(Workload::Transcription, Value::Object(fields))?;
        Ok(Parsed { request, files })
    }

    fn uploads(&self) -> bool {
        self.workload == Workload::Transcription
    }

    fn max_usage(&self, request: &ApiRequest, _body_len: usize, _default_max_output: u64) -> Usage {
        Usage {
            input_tokens: 0,
            output_tokens: 0,
            units: units(self.workload, request),
        }
    }

    fn max_output_bytes(&self, request: &ApiRequest, _default_max_output: u64) -> u64 {
        let limit = crate::gateway::HUB_LIMITS.max_file_bytes;
        match self.workload {
            Workload::Transcription => units(self.workload, request)
                .saturating_mul(TRANSCRIPTION_BYTES_PER_SECOND)
                .saturating_add(OUTPUT_ALLOWANCE_BYTES)
                .min(limit),
            _ => limit,
        }
    }

    /// What was held: the characters to speak, or the seconds the hub measured. The hub cannot
    /// count a node's work any better; a validator's re-run checks it.
    fn usage_bound(&self, _request: &ApiRequest, held: &Usage, _text_bytes: u64, _files: usize) -> Usage {
        held.clone()
    }

    fn input_param(&self) -> &'static str {
        match self.workload {
            Workload::Speech => "input",
            _ => "file",
        }
    }

    fn answer(
        &self,
        request: &ApiRequest,
        out: &Collected,
        _stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Answer, ApiError> {
        let [(_, bytes)] = out.files.as_slice() else {
            return Err(ApiError::NodeFailed(format!(
                "expected the answer as one file, got {} files",
                out.files.len()
            )));
        };
        let format = request.body.get("response_format").and_then(Value::as_str);
        let content_type = match self.workload {
            Workload::Speech => speech_content_type(format.unwrap_or("mp3")),
            _ => transcription_content_type(format.unwrap_or("json")),
        };
        Ok(Answer::Bytes {
            content_type: content_type.to_owned(),
            bytes: bytes.clone(),
            accepted,
        })
    }
}

/// The units `request` holds: characters of speech, seconds of audio to transcribe.
fn units(workload: Workload, request: &ApiRequest) -> u64 {
    match workload {
        Workload::Speech => speech_characters(&request.body),
        _ => transcription_seconds(&request.body),
    }
}

/// A file that is not audio the network takes: the client's error, naming `file`.
fn audio_refusal(e: &AudioError) -> ApiError {
    ApiError::invalid("file", e.to_string())
}
