//! `POST /v1/chat/completions`.

use axum::body::Bytes;
use serde_json::{json, Value};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::{
    parse_json, text_usage, usage_json, with_proof, Accepted, Collected, Parsed, Stamp, WorkloadApi,
};
use crate::error::ApiError;

#[derive(Debug)]
pub struct Chat;

impl WorkloadApi for Chat {
    fn path(&self) -> &'static str {
        stacknet_api::paths::CHAT_COMPLETIONS
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(Workload::Chat, &body)
    }

    fn max_usage(&self, request: &ApiRequest, body_len: usize, default_max_output: u64) -> Usage {
        text_usage(request, body_len, default_max_output)
    }

    fn streams(&self, request: &ApiRequest) -> bool {
        request.stream
    }

    fn answer(
        &self,
        request: &ApiRequest,
        out: Collected,
        stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Value, ApiError> {
        Ok(text_answer(
            request.workload,
            "chat.completion",
            &out,
            stamp,
            accepted,
        ))
    }
}

/// The whole answer of chat and legacy completions: the assembled choices, usage and proof.
pub(super) fn text_answer(
    workload: Workload,
    object: &str,
    out: &Collected,
    stamp: &Stamp,
    accepted: Accepted,
) -> Value {
    let body = json!({
        "id": stamp.id, "object": object, "created": stamp.created, "model": stamp.model,
        "choices": out.digester.choices(workload),
        "usage": usage_json(&accepted.usage),
    });
    with_proof(body, accepted)
}
