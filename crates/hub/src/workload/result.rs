//! Workloads whose node sends the whole result as one JSON object in one chunk (code execution,
//! page fetch, web search, tool calls): the hub answers with it, adding `usage` in the workload's unit and the
//! proof. One [`ResultApi`] serves them all; they differ in their path, their unit and how many
//! units a request holds: sandbox seconds for code execution (its `run_timeout`, in the shape of
//! Piston's `execute`), one page, one query, one call.

use axum::body::Bytes;
use serde_json::{json, Value};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::{parse_json, with_proof, Accepted, Answer, Collected, Parsed, Stamp, WorkloadApi};
use crate::error::ApiError;

/// The most bytes a result may take: a frame. (Nodes cap what they send far below it: a sandbox's
/// output streams, a page's readable part of at most 5 MiB read, 20 search results.)
const MAX_RESULT_BYTES: u64 = stacknet_protocol::wire::MAX_FRAME_BYTES as u64;

/// The answer: the node's one chunk, with `usage` as `{unit: units}` and the proof.
fn answer(out: &Collected, accepted: Accepted, unit: &str) -> Result<Value, ApiError> {
    let [result] = out.chunks.as_slice() else {
        return Err(ApiError::NodeFailed(format!(
            "expected the result in one chunk, got {} chunks",
            out.chunks.len()
        )));
    };
    let mut body = result.clone();
    let obj = body
        .as_object_mut()
        .ok_or_else(|| ApiError::NodeFailed("the result is not a JSON object".into()))?;
    obj.insert("usage".into(), json!({ unit: accepted.usage.units }));
    Ok(with_proof(body, accepted))
}

/// A workload answered with its node's one result.
#[derive(Debug)]
pub struct ResultApi {
    workload: Workload,
    path: &'static str,
    /// The name of the unit in the answer's `usage`.
    unit: &'static str,
    /// The units a (validated) request holds.
    held: fn(&ApiRequest) -> u64,
    /// The request's input field.
    input: &'static str,
}

/// `POST /stacknet/v1/execute`: a program run in a node's sandbox, held for its wall-time limit.
pub const EXECUTE: ResultApi = ResultApi {
    workload: Workload::CodeExecution,
    path: stacknet_api::paths::EXECUTE,
    unit: "sandbox_seconds",
    held: |request| stacknet_api::request::code::held_seconds(&request.body),
    input: "files",
};

/// `POST /stacknet/v1/fetch`: a page, as readable markdown, text or HTML.
pub const FETCH: ResultApi = ResultApi {
    workload: Workload::WebFetch,
    path: stacknet_api::paths::FETCH,
    unit: "pages",
    held: |_| 1,
    input: "url",
};

/// `POST /v1/search`: a web search query.
pub const SEARCH: ResultApi = ResultApi {
    workload: Workload::WebSearch,
    path: stacknet_api::paths::SEARCH,
    unit: "queries",
    held: |_| 1,
    input: "query",
};

/// `POST /stacknet/v1/tools/call`: a call of a tool an operator installed on a node.
pub const TOOL_CALL: ResultApi = ResultApi {
    workload: Workload::ToolCall,
    path: stacknet_api::paths::TOOL_CALL,
    unit: "calls",
    held: |_| 1,
    input: "arguments",
};

impl WorkloadApi for ResultApi {
    fn path(&self) -> &'static str {
        self.path
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(self.workload, &body)
    }

    fn max_usage(&self, request: &ApiRequest, _body_len: usize, _default_max_output: u64) -> Usage {
        Usage {
            input_tokens: 0,
            output_tokens: 0,
            units: (self.held)(request),
        }
    }

    fn max_output_bytes(&self, _request: &ApiRequest, _default_max_output: u64) -> u64 {
        MAX_RESULT_BYTES
    }

    /// The units held: the hub cannot time a node's run (it includes the sandbox's set-up) or
    /// count a page, so a validator's re-run is what checks them.
    fn usage_bound(&self, _request: &ApiRequest, held: &Usage, _text_bytes: u64, _files: usize) -> Usage {
        held.clone()
    }

    fn input_param(&self) -> &'static str {
        self.input
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
    ) -> Result<Answer, ApiError> {
        answer(out, accepted, self.unit).map(Answer::Json)
    }
}
