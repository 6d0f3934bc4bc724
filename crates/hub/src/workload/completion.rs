//! `POST /v1/completions` (legacy text completions).

use axum::body::Bytes;
use serde_json::Value;
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::chat::text_answer;
use super::{parse_json, text_usage, Accepted, Collected, Parsed, Stamp, WorkloadApi};
use crate::error::ApiError;

#[derive(Debug)]
pub struct Completion;

impl WorkloadApi for Completion {
    fn path(&self) -> &'static str {
        stacknet_api::paths::COMPLETIONS
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(Workload::Completion, &body)
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
            "text_completion",
            &out,
            stamp,
            accepted,
        ))
    }
}
