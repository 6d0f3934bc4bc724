//! The two content hashes in paperwork. Their definitions live where the hub finds them too:
//!
//! - `request_sha256` = SHA-256 of the RFC 8785 canonical JSON of the request exactly as the task
//!   carried it (`stacknet_protocol::paperwork::request_digest`).
//! - `output_sha256` = the workload's output digest over what the client receives
//!   (`stacknet_api::output`): for chat, the canonical JSON of the assembled `choices`.

pub use stacknet_api::output::{digest_of_response, digest_of_stream, OutputDigester};
pub use stacknet_protocol::paperwork::request_digest;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{json, Value};
    use stacknet_protocol::contract::Workload;
    use stacknet_protocol::Sha256Digest;

    use super::*;

    #[test]
    fn a_stream_and_its_whole_answer_have_one_digest() {
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hé \"x\""}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "\n!"}, "finish_reason": "stop"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        ];
        let streamed = digest_of_stream(Workload::Chat, &chunks).unwrap();
        let whole = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hé \"x\"\n!"},
            "finish_reason": "stop", "logprobs": null}]});
        assert_eq!(digest_of_response(Workload::Chat, &whole).unwrap(), streamed);
        let canonical = r#"[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hé \"x\"\n!","role":"assistant"}}]"#;
        assert_eq!(streamed, Sha256Digest::of(canonical.as_bytes()));
    }

    #[test]
    fn request_digest_ignores_member_order_and_whitespace() {
        let a: Value =
            serde_json::from_str(r#"{"model": "m", "messages": [{"role":"user","content":"Hi"}]}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"messages":[{"content":"Hi","role":"user"}],"model":"m"}"#).unwrap();
        assert_eq!(request_digest(&a).unwrap(), request_digest(&b).unwrap());
        // The golden paperwork's request hash is over exactly this canonical text.
        assert_eq!(
            request_digest(&a).unwrap(),
            Sha256Digest::of(br#"{"messages":[{"content":"Hi","role":"user"}],"model":"m"}"#)
        );
    }
}
