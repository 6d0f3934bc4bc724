//! `POST /v1/search`: web search, in the shape of LiteLLM's search API (which follows Perplexity's):
//! `{"query", "max_results", "search_domain_filter", "country"}` in,
//! `{"object": "search", "results": [{"title", "url", "snippet", "date"}]}` out. `model` is
//! optional and names the one search model nodes offer, [`MODEL`]; the node's operator chooses the
//! engine behind it (SearXNG, Brave, Tavily).

use serde_json::Value;
use stacknet_protocol::contract::Workload;

use super::fields::{self, integer, object};
use super::{ApiRequest, RequestError};

/// The model search nodes offer.
pub const MODEL: &str = "web-search";
pub const MAX_QUERY_BYTES: usize = 2048;
pub const MAX_RESULTS: u64 = 20;
pub const DEFAULT_RESULTS: u64 = 10;
pub const MAX_DOMAINS: usize = 20;

/// What a search backend needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search {
    pub query: String,
    pub max_results: u64,
    /// Only results from these domains (a leading `-` excludes one instead).
    pub domains: Vec<String>,
    pub country: Option<String>,
}

/// A two-letter country code (absent or `null`: none), lowercased; `param` names the field.
pub fn country(value: Option<&Value>, param: &str) -> Result<Option<String>, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(c)) if c.len() == 2 && c.chars().all(|c| c.is_ascii_alphabetic()) => {
            Ok(Some(c.to_ascii_lowercase()))
        }
        Some(_) => Err(RequestError::invalid(
            param,
            format!("{param} must be a two-letter country code"),
        )),
    }
}

pub fn validate(body: Value) -> Result<(ApiRequest, Search), RequestError> {
    let obj = object(&body)?;
    let query = match obj.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() && q.len() <= MAX_QUERY_BYTES => q.clone(),
        Some(_) => {
            return Err(RequestError::invalid(
                "query",
                format!("query must be a non-empty string of at most {MAX_QUERY_BYTES} bytes"),
            ))
        }
        None => {
            return Err(RequestError::invalid(
                "query",
                "you must provide a query parameter",
            ))
        }
    };
    let max_results = integer(obj, "max_results", 1, MAX_RESULTS)?.unwrap_or(DEFAULT_RESULTS);
    let domains = match obj.get("search_domain_filter") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items))
            if items.len() <= MAX_DOMAINS
                && items.iter().all(|d| {
                    d.as_str().is_some_and(|d| {
                        !d.is_empty()
                            && d.len() <= 253
                            && d.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
                    })
                }) =>
        {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        }
        Some(_) => {
            return Err(RequestError::invalid(
                "search_domain_filter",
                format!("search_domain_filter must be an array of at most {MAX_DOMAINS} domain names"),
            ))
        }
    };
    let country = country(obj.get("country"), "country")?;
    fields::fixed_model(obj, MODEL)?;
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::WebSearch, MODEL.to_owned(), user, 1, body);
    Ok((
        request,
        Search {
            query,
            max_results,
            domains,
            country,
        },
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_search_is_read_and_bad_fields_are_named() {
        let (request, search) =
            validate(json!({"query": "rust", "search_domain_filter": ["docs.rs", "-x.com"]})).unwrap();
        assert_eq!(request.model, MODEL);
        assert_eq!(search.max_results, DEFAULT_RESULTS);
        assert_eq!(search.domains, ["docs.rs", "-x.com"]);
        for (body, param) in [
            (json!({}), "query"),
            (json!({"query": " "}), "query"),
            (json!({"query": "q", "max_results": 0}), "max_results"),
            (
                json!({"query": "q", "search_domain_filter": ["a b"]}),
                "search_domain_filter",
            ),
            (json!({"query": "q", "country": "usa"}), "country"),
            (json!({"query": "q", "model": "gpt"}), "model"),
        ] {
            match validate(body).unwrap_err() {
                RequestError::Invalid { param: p, .. } => assert_eq!(p, param),
                other => panic!("{other:?}"),
            }
        }
    }
}
