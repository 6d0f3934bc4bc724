//! The one way a node fetches a URL for a stranger (a page for `web_fetch`, later an image in a
//! chat message): an HTTP client that cannot be pointed at the operator's own network.
//!
//! The policy is Stripe Smokescreen's: resolve the name, refuse when any address is not public
//! unicast ([`ssrf::refusal`] names the class: loopback, private, link-local and the cloud
//! metadata address, CGNAT, IPv4-mapped and the other IPv6 forms of those, ...), and connect to the
//! addresses that were checked. The check *is* the client's DNS resolver, so there is no second
//! lookup for a rebinding answer to slip into. Literal IP hosts (in every form the URL standard
//! reads: `2130706433`, `0x7f.1`, `017700000001` are all 127.0.0.1) are checked before the request.
//! Redirects are followed by hand, each hop checked again (and by the caller's own check, such
//! as robots.txt, before it is requested); proxy variables are ignored; only
//! `http` and `https` on their URL's port, without credentials in the URL. Bodies are read up to a
//! size limit, everything within a time limit.

/// The address policy (in `stacknet_api`, so the hub refuses a literal private address in a
/// request before any node is asked).
pub use stacknet_api::ssrf;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The limits of one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Bytes of a body read, at most.
    pub max_bytes: u64,
    /// The whole fetch (every hop, every byte), at most.
    pub timeout: Duration,
    pub max_redirects: usize,
    pub user_agent: String,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 5 * 1024 * 1024,
            timeout: Duration::from_secs(15),
            max_redirects: 5,
            user_agent: format!("Stacknet-Fetch/{} (+robots: stacknet)", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Why a fetch did not happen or did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("refused to fetch {url}: {host} is {reason}")]
    Refused {
        url: String,
        host: String,
        reason: String,
    },
    #[error("not a URL a node fetches: {0}")]
    BadUrl(String),
    #[error("the body of {url} is over the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("fetching {url} took longer than {0:?}", .limit)]
    Timeout { url: String, limit: Duration },
    #[error("{url} redirected more than {limit} times")]
    TooManyRedirects { url: String, limit: usize },
    #[error("fetching {url} failed: {message}")]
    Failed { url: String, message: String },
}

/// A fetched response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The URL that answered, after redirects.
    pub url: Url,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// Each URL redirected from, in order.
    pub redirects: Vec<String>,
}

/// A caller's check of each URL a fetch is about to request; an error refuses it.
pub type HopCheck<'a> = &'a (dyn Fn(Url) -> BoxFuture<'a, Result<(), FetchError>> + Send + Sync);

/// The fetcher.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: FetchPolicy,
    /// Literal socket addresses let through although not public: tests' local servers. Only code
    /// sets it ([`Fetcher::with_test_allowlist`]); no configuration reaches it.
    allowed: Arc<Vec<SocketAddr>>,
}

/// The resolver that refuses non-public addresses.
#[derive(Debug)]
struct Guard;

/// A resolver's refusal, found again in the client's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} is {reason}")]
struct Refusal {
    host: String,
    reason: String,
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // Any address that is not public refuses the name: a name that answers with a mix is
            // one to stay away from, and connecting to "the good one" is a race a rebinding wins.
            for addr in &addrs {
                if let Some(reason) = ssrf::refusal(addr.ip()) {
                    return Err(Box::new(Refusal {
                        host: format!("{host} (resolving to {})", addr.ip()),
                        reason,
                    }) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Self, FetchError> {
        Self::build(policy, Vec::new())
    }

    /// A fetcher that also connects to `allowed`, exactly these addresses and ports, when a URL
    /// names one literally: the local servers of tests. Nothing but code calls it.
    pub fn with_test_allowlist(policy: FetchPolicy, allowed: Vec<SocketAddr>) -> Result<Self, FetchError> {
        Self::build(policy, allowed)
    }

    fn build(policy: FetchPolicy, allowed: Vec<SocketAddr>) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Guard))
            .user_agent(policy.user_agent.clone())
            .connect_timeout(policy.timeout)
            .build()
            .map_err(|e| FetchError::Failed {
                url: String::new(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            policy,
            allowed: Arc::new(allowed),
        })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// The same fetcher, reading bodies of at most `max_bytes`.
    pub fn limited_to(&self, max_bytes: u64) -> Fetcher {
        let mut limited = self.clone();
        limited.policy.max_bytes = max_bytes.min(self.policy.max_bytes);
        limited
    }

    /// `GET url`, following redirects, within the policy.
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        self.get_checked(url, &|_| Box::pin(async { Ok(()) })).await
    }

    /// [`Fetcher::get`], with `check` asked before each request (the first and every redirect's),
    /// after the address policy: a caller's own rule for what may be requested at all (robots.txt).
    pub async fn get_checked(&self, url: &str, check: HopCheck<'_>) -> Result<Fetched, FetchError> {
        let mut url = parse(url)?;
        let limit = self.policy.timeout;
        let shown = url.to_string();
        match tokio::time::timeout(limit, self.follow(&mut url, check)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { url: shown, limit }),
        }
    }

    async fn follow(&self, url: &mut Url, check: HopCheck<'_>) -> Result<Fetched, FetchError> {
        let mut redirects = Vec::new();
        loop {
            self.check_literal(url)?;
            check(url.clone()).await?;
            let shown = url.to_string();
            let response = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| failure(&shown, &e))?;
            let status = response.status();
            if status.is_redirection() {
                if let Some(location) = response.headers().get(reqwest::header::LOCATION) {
                    if redirects.len() >= self.policy.max_redirects {
                        return Err(FetchError::TooManyRedirects {
                            url: shown,
                            limit: self.policy.max_redirects,
                        });
                    }
                    let location = location.to_str().map_err(|_| {
                        FetchError::BadUrl(format!("{shown} redirects to a Location that is not text"))
                    })?;
                    let next = url
                        .join(location)
                        .map_err(|e| FetchError::BadUrl(format!("{shown} redirects to {location:?}: {e}")))?;
                    redirects.push(shown);
                    *url = parse(next.as_str())?;
                    continue;
                }
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = self.read(response, &shown).await?;
            return Ok(Fetched {
                url: url.clone(),
                status: status.as_u16(),
                content_type,
                body,
                redirects,
            });
        }
    }

    /// The body, refused as soon as it is over the limit (announced or read).
    async fn read(&self, mut response: reqwest::Response, url: &str) -> Result<Bytes, FetchError> {
        let limit = self.policy.max_bytes;
        let too_large = || FetchError::TooLarge {
            url: url.to_owned(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failure(url, &e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// A literal IP host must be public (or one of the test allow-list's exact addresses); a name is
    /// checked by the resolver.
    fn check_literal(&self, url: &Url) -> Result<(), FetchError> {
        let ip: IpAddr = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.into(),
            Some(url::Host::Ipv6(ip)) => ip.into(),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(FetchError::BadUrl(format!("{url} has no host"))),
        };
        let port = url.port_or_known_default().unwrap_or(0);
        if self.allowed.contains(&SocketAddr::new(ip, port)) {
            return Ok(());
        }
        match ssrf::refusal(ip) {
            None => Ok(()),
            Some(reason) => Err(FetchError::Refused {
                url: url.to_string(),
                host: ip.to_string(),
                reason,
            }),
        }
    }
}

/// A URL a node fetches: `http` or `https`, a host, no credentials.
pub fn parse(url: &str) -> Result<Url, FetchError> {
    let parsed = Url::parse(url).map_err(|e| FetchError::BadUrl(format!("{url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::BadUrl(format!(
            "{url:?}: only http and https URLs are fetched"
        )));
    }
    if parsed.host().is_none() {
        return Err(FetchError::BadUrl(format!("{url:?} has no host")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FetchError::BadUrl(format!(
            "{url:?}: credentials in a URL are not sent"
        )));
    }
    Ok(parsed)
}

/// The error of a request, with the resolver's refusal found in its chain when that is the cause.
fn failure(url: &str, e: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return FetchError::Refused {
                url: url.to_owned(),
                host: refusal.host.clone(),
                reason: refusal.reason.clone(),
            };
        }
        source = err.source();
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        message.push_str(": ");
        message.push_str(&err.to_string());
        source = err.source();
    }
    FetchError::Failed {
        url: url.to_owned(),
        message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_addresses_in_every_form_are_refused_before_any_connection() {
        let fetcher = Fetcher::new(FetchPolicy::default()).unwrap();
        for (url, host) in [
            ("http://127.0.0.1/", "127.0.0.1"),
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("http://017700000001/", "127.0.0.1"),
            ("http://0177.0.0.1/", "127.0.0.1"),
            ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
            ("http://[::1]:8080/", "::1"),
            ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
            ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
            ("http://100.100.100.200/", "100.100.100.200"),
            ("http://[fd00::1]/", "fd00::1"),
            ("http://0.0.0.0:22/", "0.0.0.0"),
        ] {
            match fetcher.get(url).await {
                Err(FetchError::Refused { host: h, .. }) => assert_eq!(h, host, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
        let fetcher = Fetcher::new(FetchPolicy::default()).unwrap();
        let err = fetcher.get("http://localhost:9/").await.unwrap_err();
        let FetchError::Refused { host, reason, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(host.starts_with("localhost (resolving to "), "{err}");
        assert!(reason.contains("loopback"), "{err}");
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        for url in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "gopher://x/",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            assert!(matches!(parse(url), Err(FetchError::BadUrl(_))), "{url}");
        }
        assert!(parse("https://example.com/a?b#c").is_ok());
    }
}
