//! Web search through an engine the operator plugs in: a SearXNG instance's JSON API, Brave Search
//! or Tavily (with its key). Every engine's answer is normalised to one shape,
//! `{"object": "search", "query", "results": [{"title", "url", "snippet", "date"}]}`, the domain
//! filter is applied to every engine's results (and passed to those that take it), and at most
//! `max_results` come back. The engine is the operator's own choice, so it is reached directly, not
//! through the SSRF guard (a SearXNG on the operator's loopback is the common case); what a client
//! controls (the query) never names a host.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use stacknet_api::request::search::{self, Search};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::values::Timestamp;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use tokio::sync::mpsc;

use super::{Backend, BackendError, BackendOutcome, BackendTask};
use crate::config::{SearchBackendConfig, SearchEngine};

pub const BACKEND_ID: &str = "web-search";
const BRAVE_URL: &str = "https://api.search.brave.com/res/v1/web/search";
const TAVILY_URL: &str = "https://api.tavily.com/search";
/// The longest snippet kept.
const MAX_SNIPPET_CHARS: usize = 1000;

/// The search backend.
#[derive(Debug, Clone)]
pub struct WebSearch {
    config: SearchBackendConfig,
    client: reqwest::Client,
    started: Timestamp,
}

impl WebSearch {
    pub fn new(config: SearchBackendConfig) -> Result<Self, BackendError> {
        if config.engine == SearchEngine::Searxng && config.base_url.is_none() {
            return Err(BackendError::Setup(
                "a searxng search backend needs base_url (the instance, with its JSON format enabled)".into(),
            ));
        }
        if config.engine != SearchEngine::Searxng && config.api_key.is_none() {
            return Err(BackendError::Setup(format!(
                "a {:?} search backend needs api_key",
                config.engine
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.unwrap_or(10_000)))
            .build()
            .map_err(|e| BackendError::Setup(e.to_string()))?;
        Ok(Self {
            config,
            client,
            started: Timestamp::now(),
        })
    }

    /// Runs the search on the engine and normalises its answer.
    pub async fn search(&self, s: &Search) -> Result<Value, BackendError> {
        let (includes, excludes): (Vec<&str>, Vec<&str>) = {
            let (ex, inc): (Vec<&String>, Vec<&String>) = s.domains.iter().partition(|d| d.starts_with('-'));
            (
                inc.into_iter().map(String::as_str).collect(),
                ex.into_iter().map(|d| d.trim_start_matches('-')).collect(),
            )
        };
        let key = self
            .config
            .api_key
            .as_ref()
            .map(|k| k.expose().to_owned())
            .unwrap_or_default();
        let request = match self.config.engine {
            SearchEngine::Searxng => {
                let base = self
                    .config
                    .base_url
                    .as_deref()
                    .unwrap_or_default()
                    .trim_end_matches('/');
                let mut q = s.query.clone();
                if let [only] = includes.as_slice() {
                    q.push_str(&format!(" site:{only}"));
                }
                let mut params = vec![("q", q), ("format", "json".to_owned())];
                if let Some(c) = &s.country {
                    params.push(("language", format!("all-{}", c.to_ascii_uppercase())));
                }
                self.client.get(format!("{base}/search")).query(&params)
            }
            SearchEngine::Brave => {
                let url = self.config.base_url.as_deref().unwrap_or(BRAVE_URL);
                let mut params = vec![("q", s.query.clone()), ("count", s.max_results.to_string())];
                if let Some(c) = &s.country {
                    params.push(("country", c.clone()));
                }
                self.client
                    .get(url)
                    .query(&params)
                    .header("X-Subscription-Token", key)
                    .header("Accept", "application/json")
            }
            SearchEngine::Tavily => {
                let url = self.config.base_url.as_deref().unwrap_or(TAVILY_URL);
                self.client.post(url).bearer_auth(key).json(&json!({
                    "query": s.query,
                    "max_results": s.max_results,
                    "include_domains": includes,
                    "exclude_domains": excludes,
                }))
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| BackendError::Connect(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let message: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            return Err(BackendError::Status {
                status: status.as_u16(),
                message,
            });
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| BackendError::Malformed(format!("the search engine's answer is not JSON: {e}")))?;
        let items = match self.config.engine {
            SearchEngine::Searxng | SearchEngine::Tavily => body.get("results"),
            SearchEngine::Brave => body.pointer("/web/results"),
        }
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
        let results: Vec<Value> = items
            .iter()
            .filter_map(normalise)
            .filter(|r| {
                let host = r["url"]
                    .as_str()
                    .and_then(|u| reqwest::Url::parse(u).ok())
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default();
                let under = |d: &str| host == d || host.ends_with(&format!(".{d}"));
                (includes.is_empty() || includes.iter().any(|d| under(d)))
                    && !excludes.iter().any(|d| under(d))
            })
            .take(usize::try_from(s.max_results).unwrap_or(usize::MAX))
            .collect();
        Ok(json!({"object": "search", "query": s.query, "results": results}))
    }
}

/// One result in the common shape; `None` without a URL.
fn normalise(item: &Value) -> Option<Value> {
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| item.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let url = text(&["url"])?;
    let snippet: String = text(&["content", "description", "snippet"])
        .unwrap_or_default()
        .chars()
        .take(MAX_SNIPPET_CHARS)
        .collect();
    Some(json!({
        "title": text(&["title"]).unwrap_or_default(),
        "url": url,
        "snippet": snippet,
        "date": text(&["publishedDate", "published_date", "page_age", "age"]),
    }))
}

impl Backend for WebSearch {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: search::MODEL.to_owned(),
            workloads: vec![Workload::WebSearch],
            backend: BACKEND_ID.to_owned(),
            model_sha256: None,
            tool: None,
        }]
    }

    fn ready(&self) -> Vec<ModelReady> {
        vec![ModelReady {
            name: search::MODEL.to_owned(),
            since: self.started,
        }]
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let this = self.clone();
        Box::pin(async move {
            if task.workload != Workload::WebSearch || task.model != search::MODEL {
                return Err(task.unsupported());
            }
            let (_, request) = search::validate((*task.request).clone())?;
            let result = tokio::select! {
                r = this.search(&request) => r?,
                () = task.cancel.cancelled() => return Err(BackendError::Abandoned),
            };
            chunks.send(result).await.map_err(|_| BackendError::Abandoned)?;
            Ok(BackendOutcome::units(
                1,
                BACKEND_ID,
                format!("{}; {:?}", env!("CARGO_PKG_VERSION"), this.config.engine).to_lowercase(),
                search::MODEL,
            ))
        })
    }
}
