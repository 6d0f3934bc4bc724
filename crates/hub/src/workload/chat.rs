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

/// Refuses an image URL whose host is literally a non-public address (in any form the URL standard
/// reads: `2130706433`, `[::ffff:7f00:1]`, ...) or `localhost`, naming it: the node would refuse to
/// fetch it, so the hub refuses it before anything is held or any node is asked. A name that
/// resolves to such an address is refused by the node's fetcher when it resolves it.
pub fn image_hosts(body: &serde_json::Value) -> Result<(), ApiError> {
    for (i, j, url) in stacknet_api::request::chat::fetched_images(body) {
        let param = format!("messages[{i}].content[{j}].image_url.url");
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ApiError::invalid(&param, format!("{param} is not a valid URL: {e}")))?;
        let host = parsed.host_str().unwrap_or("");
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ApiError::invalid(
                &param,
                format!("{param}: credentials in a URL are not sent"),
            ));
        }
        let reason = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => stacknet_api::ssrf::refusal(ip),
            Err(_)
                if host.eq_ignore_ascii_case("localhost")
                    || host.to_ascii_lowercase().ends_with(".localhost") =>
            {
                Some("loopback (localhost)".to_owned())
            }
            Err(_) => None,
        };
        if let Some(reason) = reason {
            return Err(ApiError::invalid(
                &param,
                format!("{param}: {host} is {reason}; images are fetched from public addresses only"),
            ));
        }
    }
    Ok(())
}

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
        let parsed = parse_json(self.workload, &body)?;
        image_hosts(&parsed.request.body)?;
        Ok(parsed)
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
