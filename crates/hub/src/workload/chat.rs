//! `POST /v1/chat/completions`, and the text API it shares with legacy completions: a streamed or
//! whole answer assembled from OpenAI chunks.

use axum::body::Bytes;
use serde_json::json;
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::{
    parse_json, text_output_bytes, text_usage, usage_json, with_proof, Accepted, Answer, Collected, Parsed,
    Stamp, WorkloadApi,
};
use crate::error::ApiError;

/// A text API: chat or legacy completions, which differ only in their path and object names.
#[derive(Debug)]
pub struct Text {
    pub workload: Workload,
    pub path: &'static str,
    /// The `object` of a whole answer.
    pub object: &'static str,
}

pub const CHAT: Text = Text {
    workload: Workload::Chat,
    path: stacknet_api::paths::CHAT_COMPLETIONS,
    object: "chat.completion",
};

impl WorkloadApi for Text {
    fn path(&self) -> &'static str {
        self.path
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(self.workload, &body)
    }

    fn max_usage(&self, request: &ApiRequest, body_len: usize, default_max_output: u64) -> Usage {
        text_usage(request, body_len, default_max_output)
    }

    fn max_output_bytes(&self, request: &ApiRequest, default_max_output: u64) -> u64 {
        text_output_bytes(request, default_max_output)
    }

    fn streams(&self, request: &ApiRequest) -> bool {
        request.stream
    }

    fn answer(
        &self,
        _request: &ApiRequest,
        out: &Collected,
        stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Answer, ApiError> {
        let body = json!({
            "id": stamp.id, "object": self.object, "created": stamp.created, "model": stamp.model,
            "choices": out.digester.choices(self.workload),
            "usage": usage_json(&accepted.usage),
        });
        Ok(Answer::Json(with_proof(body, accepted)))
    }
}
