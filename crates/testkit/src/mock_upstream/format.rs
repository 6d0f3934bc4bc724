//! The mock's answers in OpenAI's formats, written straight into strings: the mock is a benchmark
//! baseline, so it builds no JSON trees for its output.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Script;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completion,
}

/// One answer, ready to be written as a stream or as a whole.
pub(crate) struct Reply {
    endpoint: Endpoint,
    /// The fields every chunk starts with: `"id":...,"object":...,"created":...,"model":...`.
    head: String,
    /// The reply text, split into pieces, each already a JSON string literal.
    pieces: Vec<String>,
    text: String,
    prompt_tokens: u64,
}

impl Reply {
    pub fn new(endpoint: Endpoint, request: &Value, script: &Script, n: u64) -> Self {
        let prompt = prompt_texts(endpoint, request);
        let text = match &script.reply {
            Some(text) => text.clone(),
            None => format!("You said: {}", prompt.last().map(String::as_str).unwrap_or("")),
        };
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(super::MOCK_MODEL);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (prefix, object) = match endpoint {
            Endpoint::Chat => ("chatcmpl", "chat.completion.chunk"),
            Endpoint::Completion => ("cmpl", "text_completion"),
        };
        let head = format!(
            r#""id":"{prefix}-mock-{n}","object":"{object}","created":{created},"model":{}"#,
            json_string(model)
        );
        Self {
            endpoint,
            head,
            pieces: split(&text, script.chunks)
                .iter()
                .map(|p| json_string(p))
                .collect(),
            prompt_tokens: prompt.iter().map(|t| t.split_whitespace().count() as u64).sum(),
            text,
        }
    }

    fn usage(&self) -> String {
        let completion = self.pieces.len() as u64;
        format!(
            r#""usage":{{"prompt_tokens":{},"completion_tokens":{completion},"total_tokens":{}}}"#,
            self.prompt_tokens,
            self.prompt_tokens + completion
        )
    }
}

/// The SSE events of a streamed answer, `[DONE]` last.
pub(crate) fn events(reply: &Reply, with_usage: bool) -> Vec<String> {
    let mut out = Vec::with_capacity(reply.pieces.len() + 3);
    for (i, piece) in reply.pieces.iter().enumerate() {
        let choice = match reply.endpoint {
            Endpoint::Chat if i == 0 => {
                format!(
                    r#"{{"index":0,"delta":{{"role":"assistant","content":{piece}}},"finish_reason":null}}"#
                )
            }
            Endpoint::Chat => format!(r#"{{"index":0,"delta":{{"content":{piece}}},"finish_reason":null}}"#),
            Endpoint::Completion => {
                format!(r#"{{"index":0,"text":{piece},"logprobs":null,"finish_reason":null}}"#)
            }
        };
        out.push(event(&reply.head, &choice, None));
    }
    let last = match reply.endpoint {
        Endpoint::Chat => r#"{"index":0,"delta":{},"finish_reason":"stop"}"#,
        Endpoint::Completion => r#"{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}"#,
    };
    out.push(event(&reply.head, last, None));
    if with_usage {
        out.push(event(&reply.head, "", Some(&reply.usage())));
    }
    out.push("data: [DONE]\n\n".to_owned());
    out
}

fn event(head: &str, choice: &str, usage: Option<&str>) -> String {
    let mut s = String::with_capacity(head.len() + choice.len() + 48);
    let _ = write!(s, "data: {{{head},\"choices\":[{choice}]");
    if let Some(usage) = usage {
        s.push(',');
        s.push_str(usage);
    }
    s.push_str("}\n\n");
    s
}

/// The non-streaming answer: `chat.completion` or `text_completion`, with usage when scripted.
pub(crate) fn full_response(reply: &Reply, with_usage: bool) -> String {
    let text = json_string(&reply.text);
    let (head, choice) = match reply.endpoint {
        Endpoint::Chat => (
            reply.head.replace("chat.completion.chunk", "chat.completion"),
            format!(
                r#"{{"index":0,"message":{{"role":"assistant","content":{text}}},"finish_reason":"stop"}}"#
            ),
        ),
        Endpoint::Completion => (
            reply.head.clone(),
            format!(r#"{{"index":0,"text":{text},"logprobs":null,"finish_reason":"stop"}}"#),
        ),
    };
    let mut s = format!("{{{head},\"choices\":[{choice}]");
    if with_usage {
        s.push(',');
        s.push_str(&reply.usage());
    }
    s.push('}');
    s
}

/// The texts of the prompt: every message's text (chat), or the prompt(s) (completion).
fn prompt_texts(endpoint: Endpoint, request: &Value) -> Vec<String> {
    let text_of = |content: &Value| match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    match endpoint {
        Endpoint::Chat => {
            let messages = request.get("messages").and_then(Value::as_array);
            let mut texts: Vec<(bool, String)> = messages
                .into_iter()
                .flatten()
                .map(|m| {
                    let is_user = m.get("role").and_then(Value::as_str) == Some("user");
                    (is_user, m.get("content").map(text_of).unwrap_or_default())
                })
                .collect();
            // The echo quotes the last *user* message, so keep it last.
            if let Some(last_user) = texts.iter().rposition(|(user, _)| *user) {
                let message = texts.remove(last_user);
                texts.push(message);
            }
            texts.into_iter().map(|(_, t)| t).collect()
        }
        Endpoint::Completion => request.get("prompt").map(text_of).into_iter().collect(),
    }
}

/// `text` in `n` pieces of nearly equal length (fewer when it is shorter), on character boundaries.
pub(crate) fn split(text: &str, n: usize) -> Vec<&str> {
    let chars = text.chars().count();
    if chars == 0 {
        return vec![text];
    }
    let per_piece = chars.div_ceil(n.clamp(1, chars));
    let mut pieces = Vec::new();
    let mut start = 0;
    for (count, (i, _)) in text.char_indices().enumerate() {
        if count > 0 && count % per_piece == 0 {
            pieces.push(&text[start..i]);
            start = i;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

fn json_string(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn split_keeps_the_text_and_the_count() {
        assert_eq!(split("abcdefgh", 4), ["ab", "cd", "ef", "gh"]);
        assert_eq!(split("abcde", 2), ["abc", "de"]);
        assert_eq!(split("ab", 5), ["a", "b"]);
        assert_eq!(split("héllo wörld", 3).concat(), "héllo wörld");
        assert_eq!(split("", 3), [""]);
    }

    #[test]
    fn streamed_events_are_valid_openai_chunks() {
        let request = json!({"model": "m", "messages": [{"role": "user", "content": "hi \"there\""}]});
        let reply = Reply::new(Endpoint::Chat, &request, &Script::echo().chunks(3), 7);
        let events = events(&reply, true);
        assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap().trim_end()).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
            .collect();
        assert_eq!(text, "You said: hi \"there\"");
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert_eq!(usage["usage"]["prompt_tokens"], 2);
        let full: Value = serde_json::from_str(&full_response(&reply, true)).unwrap();
        assert_eq!(full["object"], "chat.completion");
        assert_eq!(full["choices"][0]["message"]["content"], "You said: hi \"there\"");
    }
}
