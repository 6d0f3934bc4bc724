//! Workloads whose node sends the whole result as one JSON object in one chunk (code execution,
//! page fetch, web search): the hub answers with it, adding `usage` in the workload's unit and the
//! proof. Page fetch and web search are one unit a request (a page, a query): [`OneUnit`].

use axum::body::Bytes;
use serde_json::{json, Value};
use stacknet_api::ApiRequest;
use stacknet_protocol::contract::{Usage, Workload};

use super::{parse_json, with_proof, Accepted, Collected, Parsed, Stamp, WorkloadApi};
use crate::error::ApiError;

/// The most bytes a result may take: a frame. (Nodes cap what they send far below it: a sandbox's
/// output streams, a page's readable part of at most 5 MiB read, 20 search results.)
pub(crate) const MAX_RESULT_BYTES: u64 = stacknet_protocol::wire::MAX_FRAME_BYTES as u64;

/// The answer: the node's one chunk, with `usage` as `{unit: units}` and the proof.
pub(crate) fn answer(out: &Collected, accepted: Accepted, unit: &str) -> Result<Value, ApiError> {
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

/// A workload of one unit a request, answered with its node's one result.
#[derive(Debug)]
pub struct OneUnit {
    workload: Workload,
    path: &'static str,
    /// The name of the unit in the answer's `usage`.
    unit: &'static str,
    /// The request's input field.
    input: &'static str,
}

/// `POST /stacknet/v1/fetch`: a page, as readable markdown, text or HTML.
pub const FETCH: OneUnit = OneUnit {
    workload: Workload::WebFetch,
    path: stacknet_api::paths::FETCH,
    unit: "pages",
    input: "url",
};

/// `POST /v1/search`: a web search query.
pub const SEARCH: OneUnit = OneUnit {
    workload: Workload::WebSearch,
    path: stacknet_api::paths::SEARCH,
    unit: "queries",
    input: "query",
};

impl WorkloadApi for OneUnit {
    fn path(&self) -> &'static str {
        self.path
    }

    fn parse(&self, _content_type: Option<&str>, body: Bytes) -> Result<Parsed, ApiError> {
        parse_json(self.workload, &body)
    }

    fn max_usage(&self, _request: &ApiRequest, _body_len: usize, _default_max_output: u64) -> Usage {
        Usage {
            input_tokens: 0,
            output_tokens: 0,
            units: 1,
        }
    }

    fn max_output_bytes(&self, _request: &ApiRequest, _default_max_output: u64) -> u64 {
        MAX_RESULT_BYTES
    }

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
    ) -> Result<Value, ApiError> {
        answer(out, accepted, self.unit)
    }
}
