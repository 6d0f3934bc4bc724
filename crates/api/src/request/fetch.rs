//! `POST /stacknet/v1/fetch`: a page fetched by a node, as readable markdown, text or HTML.
//!
//! `{"url": "https://...", "format": "markdown" | "text" | "html"}`; `model` is optional and names
//! the one page-fetch model nodes offer, [`MODEL`]. The answer (PROTOCOL.md 7.5) is
//! `{"url", "final_url", "status", "content_type", "title", "format", "content", "redirects"}`.

use serde_json::Value;
use stacknet_protocol::contract::Workload;

use super::fields::{self, object};
use super::{ApiRequest, RequestError};

/// The model page-fetch nodes offer.
pub const MODEL: &str = "web-fetch";
/// The longest URL taken.
pub const MAX_URL_BYTES: usize = 4096;

/// What the content is rendered as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Html,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::Html => "html",
        }
    }
}

/// What a fetch backend needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub url: String,
    pub format: Format,
}

pub fn validate(body: Value) -> Result<(ApiRequest, Fetch), RequestError> {
    let obj = object(&body)?;
    let url = match obj.get("url") {
        Some(Value::String(u)) if !u.is_empty() && u.len() <= MAX_URL_BYTES => u.clone(),
        Some(_) => {
            return Err(RequestError::invalid(
                "url",
                format!("url must be an http or https URL of at most {MAX_URL_BYTES} bytes"),
            ))
        }
        None => return Err(RequestError::invalid("url", "you must provide a url parameter")),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(RequestError::invalid(
            "url",
            "url must start with http:// or https://",
        ));
    }
    let format = match fields::one_of(obj, "format", &["markdown", "text", "html"])?.as_deref() {
        None | Some("markdown") => Format::Markdown,
        Some("text") => Format::Text,
        _ => Format::Html,
    };
    fields::fixed_model(obj, MODEL)?;
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::WebFetch, MODEL.to_owned(), user, 1, body);
    Ok((request, Fetch { url, format }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_fetch_is_read_and_bad_fields_are_named() {
        let (request, fetch) = validate(json!({"url": "https://example.com/a"})).unwrap();
        assert_eq!((request.model.as_str(), fetch.format), (MODEL, Format::Markdown));
        let (_, fetch) = validate(json!({"url": "http://x/", "format": "text"})).unwrap();
        assert_eq!(fetch.format, Format::Text);
        for (body, param) in [
            (json!({}), "url"),
            (json!({"url": "file:///etc/passwd"}), "url"),
            (json!({"url": 7}), "url"),
            (json!({"url": "http://x/", "format": "pdf"}), "format"),
            (json!({"url": "http://x/", "model": "gpt"}), "model"),
        ] {
            match validate(body).unwrap_err() {
                RequestError::Invalid { param: p, .. } => assert_eq!(p, param),
                other => panic!("{other:?}"),
            }
        }
    }
}
