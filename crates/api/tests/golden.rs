//! The golden paperwork's output digest (docs/PROTOCOL.md) is what this crate computes from the
//! answer a client receives, streamed or whole.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use stacknet_api::output::{digest_of_response, digest_of_stream};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::examples;

#[test]
fn the_golden_chat_digest_is_the_digest_of_the_answer() {
    let pw = examples::paperwork().unwrap();
    let answer = json!({
        "id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "smollm2-135m-instruct",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                     "finish_reason": "stop", "logprobs": null}],
    });
    assert_eq!(
        digest_of_response(Workload::Chat, &answer).unwrap(),
        pw.body.output_sha256
    );
    let stream = [
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello! "}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "How can I help you today?"}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 31, "completion_tokens": 9}}),
    ];
    assert_eq!(
        digest_of_stream(Workload::Chat, &stream).unwrap(),
        pw.body.output_sha256
    );
}

#[test]
fn the_protocol_document_quotes_the_golden_choices_and_their_digest() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md")).unwrap();
    assert!(
        doc.contains(examples::GOLDEN_CHAT_CHOICES),
        "PROTOCOL.md quotes the golden choices"
    );
    let digest = examples::paperwork().unwrap().body.output_sha256.to_string();
    assert!(doc.contains(&digest), "PROTOCOL.md quotes their digest {digest}");
}
