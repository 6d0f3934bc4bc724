//! The videos API's task: `POST /v1/videos` read (multipart, as OpenAI's SDKs send it, or JSON),
//! its optional `input_reference` checked to be an image before anything is held, its usage bound
//! to its `seconds` (one unit a second: videos are priced per second), and its answer the node's
//! one MP4 file. The job around the task (created, polled, cancelled, its file kept) is
//! `crate::videos`; this is only what every workload has.

use axum::body::Bytes;
use serde_json::Value;
use stacknet_api::request::video::{self, FILE_FIELDS};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::multipart::{read_multipart, Form};
use super::{
    input_bound, parse_json, Accepted, Answer, Collected, Parsed, Stamp, WorkloadApi, OUTPUT_ALLOWANCE_BYTES,
};
use crate::error::ApiError;

const FORM: Form = Form {
    files: &FILE_FIELDS,
    numbers: &["seed"],
};

#[derive(Debug)]
pub struct Videos;

/// The seconds a validated video request asks for.
pub fn seconds(request: &ApiRequest) -> u64 {
    video::validate(request.body.clone()).map_or(video::DEFAULT_SECONDS, |(_, v)| v.seconds)
}

impl WorkloadApi for Videos {
    fn path(&self) -> &'static str {
        stacknet_api::paths::VIDEOS
    }

    fn parse(&self, content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        let is_json = content_type.is_some_and(|ct| ct.trim_start().starts_with("application/json"));
        if is_json {
            return parse_json(Workload::VideoGeneration, &body);
        }
        let (fields, files) = read_multipart(content_type, body, &FORM)?;
        let request = stacknet_api::request::validate(Workload::VideoGeneration, Value::Object(fields))?;
        if let Some((_, bytes)) = files.first() {
            if stacknet_api::output::image_dimensions(bytes).is_none() {
                return Err(ApiError::invalid(
                    "input_reference",
                    "the input reference must be a PNG, JPEG or WebP image",
                ));
            }
        }
        Ok(Parsed { request, files })
    }

    fn uploads(&self) -> bool {
        true
    }

    fn input_param(&self) -> &'static str {
        "prompt"
    }

    fn max_usage(&self, request: &ApiRequest, body_len: usize, _default_max_output: u64) -> Usage {
        Usage {
            input_tokens: input_bound(body_len),
            output_tokens: 0,
            units: seconds(request),
        }
    }

    fn max_output_bytes(&self, _request: &ApiRequest, _default_max_output: u64) -> u64 {
        // One file, and progress chunks (a few dozen bytes, at most one per percent).
        crate::gateway::HUB_LIMITS
            .max_file_bytes
            .saturating_add(OUTPUT_ALLOWANCE_BYTES)
    }

    /// The seconds held, at most: the units are checked against the output in
    /// [`WorkloadApi::units_shown`], not against the number of files.
    fn usage_bound(&self, _request: &ApiRequest, held: &Usage, _text_bytes: u64, _files: usize) -> Usage {
        held.clone()
    }

    fn units_shown(&self, held: &Usage, out: &Collected) -> Option<u64> {
        Some(match out.files.as_slice() {
            // The delivered file's own length, to the second above (a node may round up).
            [(_, bytes)] => stacknet_api::output::mp4_description(bytes)
                .map_or(0, |(_, _, _, ms)| u64::from(ms).div_ceil(1000)),
            // Cancelled before its file: what the progress it reported covers.
            [] => held.units.saturating_mul(out.progress).div_ceil(100),
            _ => 0,
        })
    }

    fn answer(
        &self,
        _request: &ApiRequest,
        out: &Collected,
        _stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Answer, ApiError> {
        match out.files.as_slice() {
            // An MP4 file by its first box, whatever the node called it.
            [(_, bytes)] if bytes.get(4..8) == Some(b"ftyp".as_slice()) => Ok(Answer::Bytes {
                content_type: "video/mp4".to_owned(),
                bytes: bytes.clone(),
                accepted,
            }),
            _ => Err(ApiError::NodeFailed("the node returned no video file".into())),
        }
    }
}
