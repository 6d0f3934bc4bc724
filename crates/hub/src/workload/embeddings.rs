//! `POST /v1/embeddings`: the node sends the whole response in one chunk, or split into several when
//! it is larger than a frame; the hub joins them and stamps the response with the requested model,
//! the usage from the signed paperwork, and the proof.

use axum::body::Bytes;
use serde_json::{json, Value};
use stacknet_api::output::join_embeddings;
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::{
    input_bound, parse_json, with_proof, Accepted, Answer, Collected, Parsed, Stamp, WorkloadApi,
    OUTPUT_ALLOWANCE_BYTES,
};
use crate::error::ApiError;

/// The most dimensions an embedding is allowed (beyond any model served today).
pub const MAX_DIMENSIONS: u64 = 16_384;
/// Bytes of one number of an embedding in JSON: a full-precision float and its comma.
const BYTES_PER_NUMBER: u64 = 32;
/// Bytes around each embedding: its object, index and brackets.
const BYTES_PER_EMBEDDING: u64 = 256;

#[derive(Debug)]
pub struct Embeddings;

impl WorkloadApi for Embeddings {
    fn path(&self) -> &'static str {
        stacknet_api::paths::EMBEDDINGS
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(Workload::Embedding, &body)
    }

    fn max_usage(&self, _request: &ApiRequest, body_len: usize, _default_max_output: u64) -> Usage {
        Usage {
            input_tokens: input_bound(body_len),
            output_tokens: 0,
            units: 0,
        }
    }

    /// Every input's vector, at the `dimensions` asked for (or the most any model has), each number
    /// written out in full as JSON.
    fn max_output_bytes(&self, request: &ApiRequest, _default_max_output: u64) -> u64 {
        let inputs = match request.body.get("input") {
            Some(Value::Array(items)) if items.iter().all(|i| !i.is_number()) => items.len(),
            _ => 1,
        };
        let dimensions = request
            .body
            .get("dimensions")
            .and_then(Value::as_u64)
            .unwrap_or(MAX_DIMENSIONS)
            .min(MAX_DIMENSIONS);
        u64::try_from(inputs)
            .unwrap_or(u64::MAX)
            .saturating_mul(
                dimensions
                    .saturating_mul(BYTES_PER_NUMBER)
                    .saturating_add(BYTES_PER_EMBEDDING),
            )
            .saturating_add(OUTPUT_ALLOWANCE_BYTES)
    }

    fn keeps_chunks(&self) -> bool {
        true
    }

    fn answer(
        &self,
        request: &ApiRequest,
        out: &Collected,
        _stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Answer, ApiError> {
        // Large answers come in several chunks, each under the hub's frame limit.
        let mut body = join_embeddings(&out.chunks).ok_or_else(|| {
            ApiError::NodeFailed(format!(
                "expected the embeddings response in one or more chunks, got {} chunks",
                out.chunks.len()
            ))
        })?;
        let obj = body
            .as_object_mut()
            .ok_or_else(|| ApiError::NodeFailed("embeddings are not an object".into()))?;
        obj.insert("object".into(), Value::String("list".into()));
        obj.insert("model".into(), Value::String(request.model.clone()));
        let u = &accepted.usage;
        obj.insert(
            "usage".into(),
            json!({"prompt_tokens": u.input_tokens, "total_tokens": u.input_tokens}),
        );
        Ok(Answer::Json(with_proof(body, accepted)))
    }
}
