//! Chat's `web_search_options`, as OpenAI's search models take it: the hub runs a web search task
//! (on a search node, with its own contract, paperwork and charge) for the last user message, puts
//! the results in the chat's context (a system message listing them, numbered, asking the model to
//! cite them as `[n]`), runs the chat task (its own contract, paperwork and charge), and adds to
//! each answer message `annotations` of type `url_citation`, one for each `[n]` marker in its
//! content that names a result (`start_index` and `end_index` in characters, the marker's span),
//! and to the answer the search's own answer, proof included, as `web_search`.
//!
//! `search_context_size` sets how many results: `low` 3, `medium` (default) 5, `high` 10.
//! `user_location.approximate.country` (two letters) is passed to the search. A streamed chat gets
//! its annotations in one chunk before the last (a `delta` with only `annotations`, which changes no
//! content), and `web_search` in the last chunk, beside the chat's proof. The annotations and
//! `web_search` are the hub's additions: the chat's output digest leaves them out (PROTOCOL.md 7.7).
//! A failed search fails the request before any chat runs (the search, if it ran, is charged).

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use stacknet_api::request::search::MAX_QUERY_BYTES;

use crate::error::ApiError;

/// What `web_search_options` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub results: u64,
    pub country: Option<String>,
}

/// Takes `web_search_options` out of a chat body (the node gets a plain chat), checked; `None` when
/// the body has none.
pub fn take(body: &mut Value) -> Result<Option<Options>, ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Ok(None);
    };
    let options = match obj.remove("web_search_options") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::invalid(
                "web_search_options",
                "web_search_options must be an object",
            ))
        }
    };
    let results = match options.get("search_context_size").map(Value::as_str) {
        None | Some(Some("medium")) => 5,
        Some(Some("low")) => 3,
        Some(Some("high")) => 10,
        Some(_) => {
            return Err(ApiError::invalid(
                "web_search_options.search_context_size",
                "search_context_size must be one of low, medium, high",
            ))
        }
    };
    let country = stacknet_api::request::search::country(
        options
            .get("user_location")
            .and_then(|l| l.get("approximate"))
            .and_then(|a| a.get("country")),
        "web_search_options.user_location.approximate.country",
    )?;
    Ok(Some(Options { results, country }))
}

/// The search request for a chat body: its last user message's text, as the query.
pub fn search_request(body: &Value, options: &Options) -> Result<Value, ApiError> {
    let last_user = body.get("messages").and_then(Value::as_array).and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    });
    let text = match last_user.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let mut query = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if query.is_empty() {
        return Err(ApiError::invalid(
            "web_search_options",
            "a web search needs a user message with text to search for",
        ));
    }
    if query.len() > MAX_QUERY_BYTES {
        let mut end = MAX_QUERY_BYTES;
        while !query.is_char_boundary(end) {
            end -= 1;
        }
        query.truncate(end);
    }
    let mut request = json!({"query": query, "max_results": options.results});
    if let (Some(country), Some(obj)) = (&options.country, request.as_object_mut()) {
        obj.insert("country".into(), Value::String(country.clone()));
    }
    Ok(request)
}

/// A search's failure, as the chat's: the same status and code, the message saying it was the
/// search, `param` naming `web_search_options`.
pub async fn search_failed(response: Response) -> Response {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let mut body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"error": {}}));
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        error.insert(
            "message".into(),
            Value::String(format!("The web search for web_search_options failed: {message}")),
        );
        error.insert("param".into(), Value::String("web_search_options".into()));
    }
    (status, axum::Json(body)).into_response()
}

/// The search's results: `{title, url, snippet}` objects.
pub fn results(search_answer: &Value) -> Vec<Value> {
    search_answer
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Puts the results in the chat's context: a system message first, listing them numbered.
pub fn ground(body: &mut Value, results: &[Value]) {
    let mut text = String::from(
        "Web search results for the user's question. Use them to answer, and cite a result you use \
         by its number in brackets, like [1].\n",
    );
    for (i, r) in results.iter().enumerate() {
        let field = |name: &str| r.get(name).and_then(Value::as_str).unwrap_or("");
        text.push_str(&format!(
            "\n[{}] {}\nURL: {}\n{}\n",
            i + 1,
            field("title"),
            field("url"),
            field("snippet")
        ));
    }
    if results.is_empty() {
        text.push_str("\nThe search found nothing.\n");
    }
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        messages.insert(0, json!({"role": "system", "content": text}));
    }
}

/// The `url_citation` annotations of `content`: one for each `[n]` that names a result.
pub fn citations(content: &str, results: &[Value]) -> Vec<Value> {
    let chars: Vec<char> = content.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            let digits: String = chars[i + 1..].iter().take_while(|c| c.is_ascii_digit()).collect();
            let end = i + 1 + digits.len();
            if !digits.is_empty() && digits.len() <= 3 && chars.get(end) == Some(&']') {
                let n: usize = digits.parse().unwrap_or(0);
                if let Some(r) = n.checked_sub(1).and_then(|k| results.get(k)) {
                    let field = |name: &str| r.get(name).cloned().unwrap_or(Value::String(String::new()));
                    out.push(json!({
                        "type": "url_citation",
                        "url_citation": {
                            "start_index": i,
                            "end_index": end + 1,
                            "title": field("title"),
                            "url": field("url"),
                        }
                    }));
                }
                i = end + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Adds annotations to each choice's message of a whole chat answer, and the search's answer.
pub fn annotate(answer: &mut Value, search_answer: &Value) {
    let results = results(search_answer);
    if let Some(choices) = answer.get_mut("choices").and_then(Value::as_array_mut) {
        for choice in choices {
            if let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) {
                let content = message.get("content").and_then(Value::as_str).unwrap_or("");
                let found = citations(content, &results);
                message.insert("annotations".into(), Value::Array(found));
            }
        }
    }
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("web_search".into(), search_answer.clone());
    }
}

/// The chat's response with the search's additions: a whole answer annotated; a stream given its
/// annotations chunk and `web_search` as it passes. An error response passes unchanged.
pub async fn finish(response: Response, search_answer: Value, stream: bool) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    if !stream {
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return ApiError::internal("the chat's answer could not be read").into_response();
        };
        let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
            return Response::from_parts(parts, Body::from(bytes));
        };
        annotate(&mut answer, &search_answer);
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        let mut parts = parts;
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut state = StreamState {
        search_answer,
        results: Vec::new(),
        content: BTreeMap::new(),
        pending: Vec::new(),
    };
    state.results = results(&state.search_answer);
    let frames = body.into_data_stream();
    let annotated = frames
        .scan(state, |state, frame| {
            let out = match frame {
                Ok(bytes) => Ok::<_, Infallible>(state.pass(&bytes)),
                // The hub's own stream does not fail; were it to, the client sees it end.
                Err(_) => Ok(Bytes::new()),
            };
            std::future::ready(Some(out))
        })
        .filter(|b| std::future::ready(!matches!(b, Ok(bytes) if bytes.is_empty())));
    Response::from_parts(parts, Body::from_stream(annotated))
}

/// A stream's events as they pass: the content of each choice so far, and what is not yet a whole
/// event.
struct StreamState {
    search_answer: Value,
    results: Vec<Value>,
    content: BTreeMap<u64, String>,
    pending: Vec<u8>,
}

impl StreamState {
    /// The bytes to send for a frame of the chat's stream.
    fn pass(&mut self, frame: &[u8]) -> Bytes {
        self.pending.extend_from_slice(frame);
        let mut out = Vec::new();
        while let Some(at) = find(&self.pending, b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..at + 2).collect();
            self.event(&event, &mut out);
        }
        Bytes::from(out)
    }

    fn event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let data = event
            .strip_prefix(b"data: ")
            .map(|d| d.strip_suffix(b"\n\n").unwrap_or(d));
        let Some(mut chunk) = data.and_then(|d| serde_json::from_slice::<Value>(d).ok()) else {
            out.extend_from_slice(event);
            return;
        };
        if chunk.get("paperwork").is_some() {
            // The last chunk: the annotations first, then the proof with the search's answer.
            let mut choices = Vec::new();
            for (index, content) in &self.content {
                let found = citations(content, &self.results);
                if !found.is_empty() {
                    choices.push(
                        json!({"index": index, "delta": {"annotations": found}, "finish_reason": null}),
                    );
                }
            }
            if !choices.is_empty() {
                let mut note = Map::new();
                for member in ["id", "object", "created", "model"] {
                    if let Some(v) = chunk.get(member) {
                        note.insert(member.into(), v.clone());
                    }
                }
                note.insert("choices".into(), Value::Array(choices));
                push_event(out, &Value::Object(note));
            }
            if let Some(obj) = chunk.as_object_mut() {
                obj.insert("web_search".into(), self.search_answer.clone());
            }
            push_event(out, &chunk);
            return;
        }
        if let Some(choices) = chunk.get("choices").and_then(Value::as_array) {
            for c in choices {
                let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(text) = c.pointer("/delta/content").and_then(Value::as_str) {
                    self.content.entry(index).or_default().push_str(text);
                }
            }
        }
        out.extend_from_slice(event);
    }
}

fn push_event(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn results() -> Vec<Value> {
        vec![
            json!({"title": "Tides", "url": "https://a.example/tides", "snippet": "s1"}),
            json!({"title": "Rings", "url": "https://b.example/rings", "snippet": "s2"}),
        ]
    }

    #[test]
    fn options_are_taken_out_and_checked() {
        let mut body = json!({"messages": [], "web_search_options": {"search_context_size": "high",
            "user_location": {"type": "approximate", "approximate": {"country": "DE"}}}});
        let options = take(&mut body).unwrap().unwrap();
        assert_eq!(
            options,
            Options {
                results: 10,
                country: Some("de".into())
            }
        );
        assert!(body.get("web_search_options").is_none());
        assert_eq!(take(&mut json!({"messages": []})).unwrap(), None);
        assert_eq!(
            take(&mut json!({"web_search_options": {}}))
                .unwrap()
                .unwrap()
                .results,
            5
        );
        for bad in [
            json!(1),
            json!({"search_context_size": "huge"}),
            json!({"user_location": {"approximate": {"country": "Germany"}}}),
        ] {
            let err = take(&mut json!({"web_search_options": bad})).unwrap_err();
            assert!(matches!(err, ApiError::InvalidField { .. }), "{err:?}");
        }
    }

    #[test]
    fn the_query_is_the_last_user_messages_text() {
        let options = Options {
            results: 3,
            country: None,
        };
        let body = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "tides  of"}, {"type": "image_url"}, {"type": "text", "text": "saturn"}]}
        ]});
        assert_eq!(
            search_request(&body, &options).unwrap(),
            json!({"query": "tides of saturn", "max_results": 3})
        );
        let none = json!({"messages": [{"role": "system", "content": "x"}]});
        assert!(search_request(&none, &options).is_err());
        let long = json!({"messages": [{"role": "user", "content": "é".repeat(2000)}]});
        let q = search_request(&long, &options).unwrap();
        assert!(q["query"].as_str().unwrap().len() <= MAX_QUERY_BYTES);
    }

    #[test]
    fn markers_naming_results_become_url_citations() {
        let content = "Saturn's tides [1] and rings [2]; not [3], [x] or [].";
        let found = citations(content, &results());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0]["url_citation"]["url"], "https://a.example/tides");
        assert_eq!(found[0]["url_citation"]["start_index"], 15);
        assert_eq!(found[0]["url_citation"]["end_index"], 18);
        assert_eq!(found[1]["url_citation"]["title"], "Rings");
        // Character indexes, not bytes.
        let found = citations("ééé [2]", &results());
        assert_eq!(found[0]["url_citation"]["start_index"], 4);
    }

    #[test]
    fn a_stream_gets_its_annotations_before_the_last_chunk() {
        let search = json!({"object": "search", "results": results(), "paperwork": "pw_s"});
        let mut state = StreamState {
            search_answer: search.clone(),
            results: results(),
            content: BTreeMap::new(),
            pending: Vec::new(),
        };
        let first = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"See [2\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"].\"}}]}\n\nda";
        let out = state.pass(first);
        assert_eq!(out.len(), first.len() - 2, "whole events pass unchanged");
        let out = state.pass(b"ta: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"paperwork\":\"pw_c\"}\n\ndata: [DONE]\n\n");
        let text = String::from_utf8(out.to_vec()).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3, "{text}");
        let note: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            note["choices"][0]["delta"]["annotations"][0]["url_citation"]["url"],
            "https://b.example/rings"
        );
        assert_eq!(
            note["choices"][0]["delta"]["annotations"][0]["url_citation"]["start_index"],
            4
        );
        let last: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(last["web_search"], search);
        assert_eq!(events[2], "data: [DONE]");
    }
}
