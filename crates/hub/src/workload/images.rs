//! The images APIs. `POST /v1/images/generations`: a JSON body (`prompt`, `model`, `n`, `size`,
//! `quality`, `seed`, ...). `POST /v1/images/edits`: a multipart upload (`image`, optional `mask`,
//! `prompt`, `model`, `n`, `size`, `response_format`, `user`), whose files travel to the node in
//! binary frames. Either way the node's output images come back as files and are answered as
//! `b64_json`, as OpenAI does; each image is one unit.

use axum::body::Bytes;
use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_api::request::image_edit::{self, FILE_FIELDS};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::multipart::{read_multipart, upload, Form};
use super::{
    input_bound, parse_json, with_proof, Accepted, Answer, Collected, Parsed, Stamp, WorkloadApi,
    OUTPUT_ALLOWANCE_BYTES,
};
use crate::error::ApiError;

/// The upload's form: its file fields, and the numbers `n` and `seed`.
const FORM: Form = Form {
    files: &FILE_FIELDS,
    numbers: &["n", "seed"],
};

#[derive(Debug)]
pub struct ImageEdit;

impl WorkloadApi for ImageEdit {
    fn path(&self) -> &'static str {
        stacknet_api::paths::IMAGE_EDITS
    }

    fn parse(&self, content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        let (fields, files) = read_multipart(content_type, body, &FORM)?;
        let request = stacknet_api::request::validate(Workload::ImageEdit, Value::Object(fields))?;
        // The request names each upload by its digest; their bytes are checked here, before a hold.
        let bytes_of = |field: &str| {
            let (_, bytes) = upload(request.body.get(field)?.as_object()?, &files)?;
            Some(bytes.as_ref())
        };
        image_edit::check_uploads(bytes_of("image").unwrap_or_default(), bytes_of("mask"))?;
        Ok(Parsed { request, files })
    }

    fn uploads(&self) -> bool {
        true
    }

    fn max_usage(&self, request: &ApiRequest, _body_len: usize, _default_max_output: u64) -> Usage {
        // The text that travels is the request without the files: its bytes bound the prompt's tokens.
        let text_len = serde_json::to_vec(&request.body)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        Usage {
            input_tokens: input_bound(text_len),
            output_tokens: 0,
            units: request.choices,
        }
    }

    fn max_output_bytes(&self, request: &ApiRequest, _default_max_output: u64) -> u64 {
        images_bytes(request)
    }

    fn answer(
        &self,
        _request: &ApiRequest,
        out: &Collected,
        stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Answer, ApiError> {
        images_answer(out, stamp, accepted)
    }
}

#[derive(Debug)]
pub struct ImageGeneration;

impl WorkloadApi for ImageGeneration {
    fn path(&self) -> &'static str {
        stacknet_api::paths::IMAGE_GENERATIONS
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(Workload::ImageGeneration, &body)
    }

    fn input_param(&self) -> &'static str {
        "prompt"
    }

    fn max_usage(&self, request: &ApiRequest, body_len: usize, _default_max_output: u64) -> Usage {
        Usage {
            input_tokens: input_bound(body_len),
            output_tokens: 0,
            units: request.choices,
        }
    }

    fn max_output_bytes(&self, request: &ApiRequest, _default_max_output: u64) -> u64 {
        images_bytes(request)
    }

    fn answer(
        &self,
        _request: &ApiRequest,
        out: &Collected,
        stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Answer, ApiError> {
        images_answer(out, stamp, accepted)
    }
}

/// Every image asked for, each at most the largest file the hub takes, and the JSON around them.
fn images_bytes(request: &ApiRequest) -> u64 {
    request
        .choices
        .max(1)
        .saturating_mul(crate::gateway::HUB_LIMITS.max_file_bytes)
        .saturating_add(OUTPUT_ALLOWANCE_BYTES)
}

/// OpenAI's images answer: each output file as `b64_json`.
fn images_answer(out: &Collected, stamp: &Stamp, accepted: Accepted) -> Result<Answer, ApiError> {
    if out.files.is_empty() {
        return Err(ApiError::NodeFailed("the node returned no image".into()));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let data: Vec<Value> = out
        .files
        .iter()
        .map(|(_, bytes)| json!({"b64_json": engine.encode(bytes)}))
        .collect();
    Ok(Answer::Json(with_proof(
        json!({"created": stamp.created, "data": data}),
        accepted,
    )))
}
