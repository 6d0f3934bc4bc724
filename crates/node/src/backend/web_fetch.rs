//! Page fetch: a URL in, readable markdown (or text, or the article's HTML) out, through the
//! SSRF-safe [`Fetcher`](crate::fetch::Fetcher), honouring robots.txt.
//!
//! HTML goes through `dom_smoothie` (a port of Mozilla's readability.js, which Firefox's reader view
//! runs) and its markdown renderer; plain text, markdown and JSON pass through as they are; other
//! content types are refused. robots.txt is read with `texting_robots` for the agent `stacknet`,
//! as RFC 9309 says: a missing one (4xx) allows everything, an unreachable one (5xx, a failure)
//! disallows everything; each host's answer is kept for ten minutes. It is asked before every
//! request, redirects included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use stacknet_api::request::fetch::{self, Format};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::values::Timestamp;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use tokio::sync::mpsc;

use super::{Backend, BackendError, BackendOutcome, BackendTask};
use crate::fetch::{FetchError, FetchPolicy, Fetcher};

/// The backend id in offers and paperwork.
pub const BACKEND_ID: &str = "web-fetch";
/// The product token robots.txt rules are matched against.
pub const ROBOTS_AGENT: &str = "stacknet";
/// How long a host's robots.txt is trusted.
const ROBOTS_TTL: Duration = Duration::from_secs(600);
/// The largest robots.txt read (Google reads 500 KiB).
const ROBOTS_MAX_BYTES: u64 = 512 * 1024;

/// The page-fetch backend.
#[derive(Debug, Clone)]
pub struct WebFetch {
    fetcher: Fetcher,
    robots: Arc<Mutex<HashMap<String, (Instant, Rules)>>>,
    started: Timestamp,
}

/// A host's robots.txt, as read.
#[derive(Debug, Clone)]
enum Rules {
    AllowAll,
    DisallowAll(String),
    Parsed(Arc<texting_robots::Robot>),
}

impl WebFetch {
    pub fn new(fetcher: Fetcher) -> Self {
        Self {
            fetcher,
            robots: Arc::new(Mutex::new(HashMap::new())),
            started: Timestamp::now(),
        }
    }

    /// The default policy.
    pub fn with_defaults() -> Result<Self, BackendError> {
        Fetcher::new(FetchPolicy::default())
            .map(Self::new)
            .map_err(|e| BackendError::Setup(e.to_string()))
    }

    /// Fetches `url` as `format`: the result object the API answers with.
    pub async fn page(&self, url: &str, format: Format) -> Result<Value, FetchError> {
        // robots.txt is asked before each request: the page's and every redirect's, whose target
        // may be another site (or a disallowed path of the same one).
        let robots = |hop: reqwest::Url| -> BoxFuture<'_, Result<(), FetchError>> {
            Box::pin(async move { self.robots_allow(&hop).await })
        };
        let fetched = self.fetcher.get_checked(url, &robots).await?;
        let media = fetched
            .content_type
            .as_deref()
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "text/html".to_owned());
        let text = String::from_utf8_lossy(&fetched.body).into_owned();
        let (title, content) = match media.as_str() {
            "text/html" | "application/xhtml+xml" => {
                readable(&text, fetched.url.as_str(), format).map_err(|e| FetchError::Failed {
                    url: fetched.url.to_string(),
                    message: format!("no readable content: {e}"),
                })?
            }
            "text/plain" | "text/markdown" | "application/json" | "text/csv" => (None, text),
            other => {
                return Err(FetchError::Failed {
                    url: fetched.url.to_string(),
                    message: format!("the content type {other} is not a page (text, HTML, JSON)"),
                })
            }
        };
        Ok(json!({
            "url": url,
            "final_url": fetched.url.as_str(),
            "status": fetched.status,
            "content_type": fetched.content_type,
            "title": title,
            "format": format.name(),
            "content": content,
            "redirects": fetched.redirects,
        }))
    }

    /// Whether robots.txt lets the agent fetch `url`; an error naming the rule's host when not.
    async fn robots_allow(&self, url: &reqwest::Url) -> Result<(), FetchError> {
        let origin = url.origin().ascii_serialization();
        let cached = self.robots.lock().ok().and_then(|m| {
            m.get(&origin)
                .filter(|(at, _)| at.elapsed() < ROBOTS_TTL)
                .map(|(_, r)| r.clone())
        });
        let rules = match cached {
            Some(rules) => rules,
            None => {
                let rules = self.read_robots(&origin).await;
                if let Ok(mut m) = self.robots.lock() {
                    m.insert(origin.clone(), (Instant::now(), rules.clone()));
                }
                rules
            }
        };
        let refused = |why: String| FetchError::Failed {
            url: url.to_string(),
            message: why,
        };
        match rules {
            Rules::AllowAll => Ok(()),
            Rules::DisallowAll(why) => Err(refused(why)),
            Rules::Parsed(robot) if robot.allowed(url.as_str()) => Ok(()),
            Rules::Parsed(_) => Err(refused(format!(
                "{origin}/robots.txt disallows {} for {ROBOTS_AGENT}",
                url.path()
            ))),
        }
    }

    async fn read_robots(&self, origin: &str) -> Rules {
        match self.fetcher.limited_to(ROBOTS_MAX_BYTES).get(&format!("{origin}/robots.txt")).await {
            Ok(f) if (200..300).contains(&f.status) => match texting_robots::Robot::new(ROBOTS_AGENT, &f.body) {
                Ok(robot) => Rules::Parsed(Arc::new(robot)),
                // Unparseable rules say nothing: RFC 9309 treats them as absent.
                Err(_) => Rules::AllowAll,
            },
            Ok(f) if (400..500).contains(&f.status) => Rules::AllowAll,
            Ok(f) => Rules::DisallowAll(format!(
                "{origin}/robots.txt answered {}: a site whose rules cannot be read is not fetched",
                f.status
            )),
            // A refusal (the host is not public) stands on its own when the page is fetched.
            Err(FetchError::Refused { .. }) => Rules::AllowAll,
            Err(e) => Rules::DisallowAll(format!(
                "{origin}/robots.txt could not be read ({e}): a site whose rules cannot be read is not fetched"
            )),
        }
    }
}

/// The readable part of an HTML page: its title and its content as `format`.
fn readable(html: &str, url: &str, format: Format) -> Result<(Option<String>, String), String> {
    let text_mode = match format {
        Format::Markdown => dom_smoothie::TextMode::Markdown,
        Format::Text | Format::Html => dom_smoothie::TextMode::Formatted,
    };
    let config = dom_smoothie::Config {
        text_mode,
        ..Default::default()
    };
    let mut readability =
        dom_smoothie::Readability::new(html, Some(url), Some(config)).map_err(|e| e.to_string())?;
    let article = readability.parse().map_err(|e| e.to_string())?;
    let title = Some(article.title.clone()).filter(|t| !t.is_empty());
    let content = match format {
        Format::Html => article.content.to_string(),
        Format::Markdown | Format::Text => article.text_content.to_string(),
    };
    Ok((title, content.trim().to_owned()))
}

impl Backend for WebFetch {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: fetch::MODEL.to_owned(),
            workloads: vec![Workload::WebFetch],
            backend: BACKEND_ID.to_owned(),
            model_sha256: None,
            tool: None,
        }]
    }

    fn ready(&self) -> Vec<ModelReady> {
        vec![ModelReady {
            name: fetch::MODEL.to_owned(),
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
            if task.workload != Workload::WebFetch || task.model != fetch::MODEL {
                return Err(task.unsupported());
            }
            let (_, request) = fetch::validate((*task.request).clone())?;
            let page = tokio::select! {
                page = this.page(&request.url, request.format) => page,
                () = task.cancel.cancelled() => return Err(BackendError::Abandoned),
            };
            let page = page.map_err(|e| match e {
                FetchError::Timeout { limit, .. } => BackendError::Timeout(limit),
                other => BackendError::InvalidRequest(other.to_string()),
            })?;
            chunks.send(page).await.map_err(|_| BackendError::Abandoned)?;
            Ok(BackendOutcome::units(
                1,
                BACKEND_ID,
                env!("CARGO_PKG_VERSION").to_owned(),
                fetch::MODEL,
            ))
        })
    }
}
