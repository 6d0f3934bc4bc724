//! `POST /stacknet/v1/execute`: sandboxed code execution in the shape of Piston's `execute`. The
//! node runs the program in its sandbox and sends the whole result (`language`, `version`, `run`)
//! in one chunk; the hub answers with it, the usage in sandbox seconds and the proof. Priced per
//! second of sandbox time (`units`), held for the request's wall-time limit.

use axum::body::Bytes;
use serde_json::Value;
use stacknet_api::request::code;
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::{parse_json, Accepted, Collected, Parsed, Stamp, WorkloadApi};
use crate::error::ApiError;

use super::result::MAX_RESULT_BYTES;

#[derive(Debug)]
pub struct Execute;

impl WorkloadApi for Execute {
    fn path(&self) -> &'static str {
        stacknet_api::paths::EXECUTE
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(Workload::CodeExecution, &body)
    }

    fn max_usage(&self, request: &ApiRequest, _body_len: usize, _default_max_output: u64) -> Usage {
        Usage {
            input_tokens: 0,
            output_tokens: 0,
            units: run_limits(request).map_or(1, |run| run.max_seconds()),
        }
    }

    fn max_output_bytes(&self, _request: &ApiRequest, _default_max_output: u64) -> u64 {
        MAX_RESULT_BYTES
    }

    /// Sandbox seconds up to the wall-time limit held; the hub cannot time the node's run (it
    /// includes the sandbox's set-up), so a validator's re-run is what checks them.
    fn usage_bound(&self, _request: &ApiRequest, held: &Usage, _text_bytes: u64, _files: usize) -> Usage {
        held.clone()
    }

    fn input_param(&self) -> &'static str {
        "files"
    }

    fn keeps_chunks(&self) -> bool {
        true
    }

    fn answer(
        &self,
        _request: &ApiRequest,
        out: &Collected,
        _stamp: &Stamp,
        accepted: Accepted,
    ) -> Result<Value, ApiError> {
        super::result::answer(out, accepted, "sandbox_seconds")
    }
}

fn run_limits(request: &ApiRequest) -> Option<code::Execute> {
    code::validate(request.body.clone()).ok().map(|(_, run)| run)
}
