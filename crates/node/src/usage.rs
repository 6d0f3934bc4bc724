//! Usage when the backend does not report it.
//!
//! Upstream servers that honour `stream_options.include_usage` report exact token counts, and those
//! are what paperwork carries. Some servers do not, and a node must still claim *something*; these
//! functions give a deliberately simple, deterministic **estimate** that a validator can recompute:
//!
//! - input: the number of words and punctuation marks in every message's text (chat) or in the prompt
//!   (completion). Real tokenisers split words further, so this tends to undercount, never overcharge.
//! - output: the number of chunks that carry content (text, or tool-call arguments). Servers stream
//!   about one token per chunk, so this is close to the completion token count.

use serde_json::Value;
use stacknet_protocol::contract::Usage;

/// The fallback usage for a finished task (see the module docs for what is estimated and how).
pub fn estimate(request: &Value, content_chunks: u64) -> Usage {
    Usage {
        input_tokens: estimate_input_tokens(request),
        output_tokens: content_chunks,
        units: 0,
    }
}

/// Estimated prompt tokens of an OpenAI chat or completion request.
pub fn estimate_input_tokens(request: &Value) -> u64 {
    let mut count = 0;
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        for message in messages {
            count += text_tokens(message.get("content"));
        }
    }
    count += text_tokens(request.get("prompt"));
    count
}

/// Words and punctuation in a string, or in every text part of an array (chat content parts,
/// a batch of prompts).
fn text_tokens(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::String(s)) => count_words(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part {
                Value::String(s) => count_words(s),
                other => text_tokens(other.get("text")),
            })
            .sum(),
        _ => 0,
    }
}

/// Runs of alphanumeric characters, plus each other non-space character on its own.
pub fn count_words(text: &str) -> u64 {
    let mut count = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !in_word {
                count += 1;
                in_word = true;
            }
        } else {
            in_word = false;
            if !c.is_whitespace() {
                count += 1;
            }
        }
    }
    count
}

/// True when a streaming chunk carries output: chat `delta.content` / `delta.tool_calls`, or
/// completion `text`, in any choice.
pub fn is_content_chunk(chunk: &Value) -> bool {
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
        return false;
    };
    choices.iter().any(|choice| {
        let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        let delta = choice.get("delta");
        non_empty(choice.get("text"))
            || non_empty(delta.and_then(|d| d.get("content")))
            || delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array)
                .is_some_and(|calls| !calls.is_empty())
    })
}

/// The usage an OpenAI-compatible server reported in a chunk, if any (`usage` is often `null` on
/// every chunk but the last).
pub fn reported_usage(chunk: &Value) -> Option<Usage> {
    let usage = chunk.get("usage")?.as_object()?;
    let count = |name: &str| usage.get(name).and_then(Value::as_u64);
    Some(Usage {
        input_tokens: count("prompt_tokens")?,
        output_tokens: count("completion_tokens").unwrap_or(0),
        units: 0,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn words_and_punctuation() {
        assert_eq!(count_words(""), 0);
        assert_eq!(count_words("Hello, world!"), 4);
        assert_eq!(count_words("  naïve   café\n"), 2);
    }

    #[test]
    fn input_estimate_covers_messages_parts_and_prompts() {
        let chat = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi there"}, {"type": "image_url"}]}
        ]});
        assert_eq!(estimate_input_tokens(&chat), 5);
        assert_eq!(estimate_input_tokens(&json!({"prompt": ["a b", "c"]})), 3);
    }

    #[test]
    fn content_chunks_and_reported_usage() {
        assert!(is_content_chunk(
            &json!({"choices": [{"delta": {"content": "x"}}]})
        ));
        assert!(is_content_chunk(&json!({"choices": [{"text": "x"}]})));
        assert!(!is_content_chunk(
            &json!({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        ));
        assert!(!is_content_chunk(
            &json!({"choices": [], "usage": {"prompt_tokens": 1}})
        ));
        let usage = reported_usage(&json!({"usage": {"prompt_tokens": 7, "completion_tokens": 3}}));
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 7,
                output_tokens: 3,
                units: 0
            })
        );
        assert_eq!(reported_usage(&json!({"usage": null})), None);
    }
}
