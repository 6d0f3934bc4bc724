//! `POST /v1/chat/completions`: messages in, a message out (streamed as deltas or whole).

use serde_json::{Map, Value};
use stacknet_protocol::contract::Workload;

use super::fields::{self, integer, number, object, optional_bool};
use super::{ApiRequest, RequestError};

/// Most choices (`n`) per request.
pub const MAX_CHOICES: u64 = 8;
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

pub fn validate(body: Value) -> Result<ApiRequest, RequestError> {
    let images = check_messages(object(&body)?)?;
    Ok(ApiRequest {
        images,
        ..text_request(Workload::Chat, body)?
    })
}

/// The fields chat and legacy completions share: sampling, streaming, limits.
pub(crate) fn text_request(workload: Workload, body: Value) -> Result<ApiRequest, RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let stream = optional_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => optional_bool(o, "include_usage")
            .map_err(|_| RequestError::invalid("stream_options.include_usage", "must be a boolean"))?
            .unwrap_or(false),
        Some(_) => return Err(RequestError::invalid("stream_options", "must be an object")),
    };
    number(obj, "temperature", 0.0, 2.0)?;
    number(obj, "top_p", 0.0, 1.0)?;
    let max_tokens = integer(obj, "max_tokens", 1, u64::from(u32::MAX))?;
    let max_completion_tokens = integer(obj, "max_completion_tokens", 1, u64::from(u32::MAX))?;
    let choices = integer(obj, "n", 1, MAX_CHOICES)?.unwrap_or(1);
    let best_of = integer(obj, "best_of", 1, MAX_CHOICES)?;
    if best_of.is_some_and(|b| b < choices) {
        return Err(RequestError::invalid(
            "best_of",
            "best_of must be at least n: it is how many candidates the n choices are picked from",
        ));
    }
    let user = fields::user(obj)?;
    Ok(ApiRequest {
        workload,
        model,
        stream,
        include_usage,
        user,
        choices,
        best_of,
        prompts: 1,
        images: 0,
        max_output_tokens: max_completion_tokens.or(max_tokens),
        body,
    })
}

/// Checks the messages; returns how many images they carry (`image_url` content parts).
fn check_messages(obj: &Map<String, Value>) -> Result<u64, RequestError> {
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(RequestError::invalid("messages", "messages must not be empty")),
        Some(_) => return Err(RequestError::invalid("messages", "messages must be an array")),
        None => {
            return Err(RequestError::invalid(
                "messages",
                "you must provide a messages parameter",
            ))
        }
    };
    let mut images: u64 = 0;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !role.is_some_and(|r| ROLES.contains(&r)) {
            return Err(RequestError::invalid(
                &format!("messages[{i}].role"),
                format!("messages[{i}].role must be one of {}", ROLES.join(", ")),
            ));
        }
        match m.get("content") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    if part["type"] == "image_url" {
                        check_image(part, &format!("messages[{i}].content[{j}].image_url"))?;
                        images = images.saturating_add(1);
                    }
                }
            }
            Some(_) => {
                return Err(RequestError::invalid(
                    &format!("messages[{i}].content"),
                    format!("messages[{i}].content must be a string or an array of content parts"),
                ))
            }
        }
    }
    Ok(images)
}

/// The `detail` an image part may ask for.
pub const IMAGE_DETAILS: [&str; 3] = ["auto", "low", "high"];

/// An `image_url` part: `{"url": ...}` (and an optional `detail`), where the URL is an `http(s)`
/// URL (the node fetches it, from public addresses only) or a base64 `data:` URL of an image.
fn check_image(part: &Value, param: &str) -> Result<(), RequestError> {
    let image = part
        .get("image_url")
        .and_then(Value::as_object)
        .ok_or_else(|| RequestError::invalid(param, format!("{param} must be an object with a url")))?;
    let url_param = format!("{param}.url");
    let url = image
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| RequestError::invalid(&url_param, format!("{url_param} must be a string")))?;
    if let Some(why) = image_url_refusal(url) {
        return Err(RequestError::invalid(&url_param, format!("{url_param} {why}")));
    }
    match image.get("detail") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(d)) if IMAGE_DETAILS.contains(&d.as_str()) => Ok(()),
        Some(_) => Err(RequestError::invalid(
            &format!("{param}.detail"),
            format!("{param}.detail must be one of {}", IMAGE_DETAILS.join(", ")),
        )),
    }
}

/// Why `url` cannot be an image of a chat message; `None` when it can be.
pub fn image_url_refusal(url: &str) -> Option<&'static str> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return None;
    }
    if lower.starts_with("data:") {
        let header = url.get(5..).and_then(|rest| rest.split_once(','));
        return match header {
            Some((h, data))
                if h.to_ascii_lowercase().starts_with("image/")
                    && h.to_ascii_lowercase().ends_with(";base64")
                    && !data.is_empty() =>
            {
                None
            }
            _ => Some("must be a base64 data: URL of an image (data:image/png;base64,...)"),
        };
    }
    Some("must be an http or https URL, or a data: URL of an image")
}

/// Every image URL of a chat request's messages (`image_url` parts), with where it is (`(message,
/// part)`).
pub fn image_urls(body: &Value) -> Vec<(usize, usize, &str)> {
    let mut found = Vec::new();
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return found;
    };
    for (i, m) in messages.iter().enumerate() {
        let Some(parts) = m.get("content").and_then(Value::as_array) else {
            continue;
        };
        for (j, part) in parts.iter().enumerate() {
            if part["type"] != "image_url" {
                continue;
            }
            if let Some(url) = part.pointer("/image_url/url").and_then(Value::as_str) {
                found.push((i, j, url));
            }
        }
    }
    found
}

/// Every `http(s)` image URL of a chat request's messages (those a node fetches), with where it is.
pub fn fetched_images(body: &Value) -> Vec<(usize, usize, &str)> {
    image_urls(body)
        .into_iter()
        .filter(|(_, _, url)| !url.get(..5).unwrap_or("").eq_ignore_ascii_case("data:"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{parse_json, validate as validate_for};
    use super::*;

    #[test]
    fn what_the_hold_must_cover_is_counted() {
        let picture = json!({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}});
        let chat = json!({"model": "m", "n": 2, "best_of": 5, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "compare"}, picture, picture]},
            {"role": "user", "content": [picture]},
        ]});
        let r = validate(chat).unwrap();
        assert_eq!((r.choices, r.best_of, r.prompts, r.images), (2, Some(5), 1, 3));
        assert_eq!(r.generations(), 5);

        let prompts = json!({"model": "m", "prompt": ["a", "b", "c"], "n": 4});
        let r = validate_for(Workload::Completion, prompts).unwrap();
        assert_eq!((r.prompts, r.images, r.generations()), (3, 0, 12));
        let one = parse_json(Workload::Completion, br#"{"model": "m", "prompt": "a"}"#).unwrap();
        assert_eq!(one.generations(), 1);
    }

    #[test]
    fn images_are_http_urls_or_base64_data_urls_of_images() {
        let with = |url: &str| {
            validate(json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]}]}))
        };
        for ok in [
            "https://example.com/a.png",
            "HTTP://example.com/a",
            "data:image/png;base64,iVBORw0KGgo=",
        ] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/a.png",
            "file:///etc/passwd",
            "data:text/plain;base64,aGk=",
            "data:image/png,raw",
            "a.png",
        ] {
            let Err(RequestError::Invalid { param, .. }) = with(bad) else {
                panic!("{bad} should be refused");
            };
            assert_eq!(param, "messages[0].content[1].image_url.url");
        }
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}}]}]});
        assert_eq!(fetched_images(&body), vec![(0, 1, "https://example.com/b.jpg")]);
    }

    #[test]
    fn best_of_is_at_least_n_and_at_most_the_choice_limit() {
        let with = |n: u64, best_of: u64| {
            validate(json!({"model": "m", "n": n, "best_of": best_of,
                "messages": [{"role": "user", "content": "hi"}]}))
        };
        assert!(with(3, 3).is_ok());
        for (n, best_of) in [(3, 2), (1, 0), (1, MAX_CHOICES + 1)] {
            let Err(RequestError::Invalid { param, .. }) = with(n, best_of) else {
                panic!("n={n} best_of={best_of} should be refused");
            };
            assert_eq!(param, "best_of");
        }
    }
}
