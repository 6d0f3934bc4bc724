//! `POST /v1/embeddings`: the node sends the whole response in one chunk; the hub stamps it with the
//! requested model, the usage from the signed paperwork, and the proof.

use axum::body::Bytes;
use serde_json::{json, Value};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::{input_bound, parse_json, with_proof, Accepted, Collected, Parsed, Stamp, WorkloadApi};
use crate::error::ApiError;

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

    fn keeps_chunks(&self) -> bool {
        true
    }

    fn answer(
        &self,
        request: &ApiRequest,
        out: &Collected,
        _stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Value, ApiError> {
        let [data] = out.chunks.as_slice() else {
            return Err(ApiError::NodeFailed(format!(
                "expected one embeddings chunk, got {}",
                out.chunks.len()
            )));
        };
        let mut body = data.clone();
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
        Ok(with_proof(body, accepted))
    }
}
