//! Page fetch through the SSRF-safe fetcher: a local test site (let through by an allow-list that
//! only test code can give, exactly its address and port) comes back as clean markdown; every way to
//! reach a non-public address is refused by name (literal forms are unit tests of the fetcher:
//! `stacknet_node::fetch`); robots.txt is honoured; size and time limits hold. Then through hub and
//! node: one page charged, paperwork that verifies, and a refusal the client can read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_api::request::fetch::Format;
use stacknet_node::backend::web_fetch::WebFetch;
use stacknet_node::fetch::{FetchError, FetchPolicy, Fetcher};
use stacknet_protocol::contract::Workload;
use stacknet_sdk::verify::{self, Content};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use crate::hub::{client, paperwork_of};

const ARTICLE: &str = r#"<!doctype html><html><head><title>The Tides of Saturn</title>
<script>var tracking = "do not show me";</script><style>body { color: red }</style></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a> | <a href="/shop">Shop</a></nav>
<article><h1>The Tides of Saturn</h1>
<p>Saturn's rings are made of ice and rock, and they move with a rhythm that astronomers have
measured for decades. Each particle follows its own orbit, yet together they form waves.</p>
<p>The moons shepherd the rings: Prometheus and Pandora keep the F ring narrow, pulling on it from
either side as they pass. Without them the ring would spread out over a few thousand years.</p>
<p>Density waves travel outward through the A ring, launched by resonances with the moons, and the
Cassini spacecraft photographed them in detail before it plunged into the planet in 2017.</p>
</article><footer>Copyright, cookies, newsletter sign-up</footer></body></html>"#;

/// Requests the local sites served at `/private/page`, which their robots.txt disallows: none may
/// ever arrive.
static PRIVATE_HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The bytes of the local site's `/cat.png` (a PNG signature and a few bytes: an image as far as
/// its content type and the node's forwarding go).
pub(crate) const CAT_PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a cat, but bytes of one";

/// A local site: an article, robots.txt that disallows `/private/`, redirects, a large and a slow
/// page, an image.
pub(crate) async fn site() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/robots.txt",
            get(|| async { "User-agent: *\nDisallow: /private/\n" }),
        )
        .route(
            "/article",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], ARTICLE) }),
        )
        .route(
            "/private/page",
            get(|| async {
                PRIVATE_HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ([(header::CONTENT_TYPE, "text/html")], ARTICLE)
            }),
        )
        .route("/plain", get(|| async { "just text\n" }))
        .route(
            "/cat.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], CAT_PNG) }),
        )
        .route(
            "/to/{target}",
            get(|Path(target): Path<String>| async move {
                let to = match target.as_str() {
                    "metadata" => "http://169.254.169.254/latest/meta-data/".to_owned(),
                    "decimal" => "http://2130706433/".to_owned(),
                    "localhost" => "http://localhost/".to_owned(),
                    "article" => "/article".to_owned(),
                    "private" => "/private/page".to_owned(),
                    "loop" => "/to/loop".to_owned(),
                    port => format!("http://127.0.0.1:{port}/"),
                };
                Redirect::temporary(&to)
            }),
        )
        .route(
            "/large",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    "x".repeat(3 * 1024 * 1024),
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .route(
            "/binary",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    vec![0u8; 10],
                )
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A second local site whose robots.txt cannot be read (it answers 500).
async fn broken_robots_site() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/robots.txt",
            get(|| async {
                Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body("no".into())
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }),
        )
        .route("/page", get(|| async { "fine" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn web_fetch(allowed: Vec<SocketAddr>, policy: FetchPolicy) -> WebFetch {
    WebFetch::new(Fetcher::with_test_allowlist(policy, allowed).unwrap())
}

#[tokio::test]
async fn a_page_comes_back_as_clean_markdown() {
    let addr = site().await;
    let web = web_fetch(vec![addr], FetchPolicy::default());
    let page = web
        .page(&format!("http://{addr}/article"), Format::Markdown)
        .await
        .unwrap();
    assert_eq!(page["title"], "The Tides of Saturn", "{page}");
    assert_eq!(page["status"], 200);
    let content = page["content"].as_str().unwrap();
    assert!(
        content.contains("Prometheus and Pandora keep the F ring narrow"),
        "{content}"
    );
    for noise in ["do not show me", "color: red", "newsletter", "Shop"] {
        assert!(!content.contains(noise), "{noise:?} in {content}");
    }
    let text = web
        .page(&format!("http://{addr}/article"), Format::Text)
        .await
        .unwrap();
    assert!(
        text["content"].as_str().unwrap().contains("Cassini spacecraft"),
        "{text}"
    );
    let html = web
        .page(&format!("http://{addr}/article"), Format::Html)
        .await
        .unwrap();
    assert!(html["content"].as_str().unwrap().contains("<p>"), "{html}");
    // Plain text passes through; a redirect within the site is followed and reported.
    let plain = web
        .page(&format!("http://{addr}/plain"), Format::Markdown)
        .await
        .unwrap();
    assert_eq!(plain["content"], "just text\n");
    let moved = web
        .page(&format!("http://{addr}/to/article"), Format::Markdown)
        .await
        .unwrap();
    assert_eq!(moved["final_url"], format!("http://{addr}/article"));
    assert_eq!(moved["redirects"], json!([format!("http://{addr}/to/article")]));
    // Bytes that are not a page are refused.
    let err = web
        .page(&format!("http://{addr}/binary"), Format::Markdown)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("application/octet-stream is not a page"),
        "{err}"
    );
}

#[tokio::test]
async fn redirects_and_names_to_private_addresses_are_refused_by_name() {
    let addr = site().await;
    // Another local server, which nothing may reach: only `addr` is allowed.
    let other = site().await;
    let web = web_fetch(vec![addr], FetchPolicy::default());
    for (path, host, class) in [
        ("/to/metadata", "169.254.169.254", "link-local"),
        ("/to/decimal", "127.0.0.1", "loopback"),
        (&format!("/to/{}", other.port()) as &str, "127.0.0.1", "loopback"),
        ("/to/localhost", "localhost (resolving to", "loopback"),
    ] {
        let err = web
            .page(&format!("http://{addr}{path}"), Format::Markdown)
            .await
            .unwrap_err();
        let FetchError::Refused { host: h, reason, .. } = &err else {
            panic!("{path}: {err:?}");
        };
        assert!(h.starts_with(host) && reason.contains(class), "{path}: {err}");
    }
    // The same addresses named directly.
    for url in [
        format!("http://{other}/article"),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://localhost/".to_owned(),
    ] {
        assert!(
            matches!(
                web.page(&url, Format::Markdown).await,
                Err(FetchError::Refused { .. })
            ),
            "{url}"
        );
    }
    let err = web
        .page(&format!("http://{addr}/to/loop"), Format::Markdown)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooManyRedirects { limit: 5, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn robots_txt_is_honoured() {
    let addr = site().await;
    let broken = broken_robots_site().await;
    let web = web_fetch(vec![addr, broken], FetchPolicy::default());
    let err = web
        .page(&format!("http://{addr}/private/page"), Format::Markdown)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("robots.txt disallows /private/page for stacknet"),
        "{err}"
    );
    assert!(web
        .page(&format!("http://{addr}/article"), Format::Markdown)
        .await
        .is_ok());
    // A redirect to a disallowed path is refused before that path is requested.
    let err = web
        .page(&format!("http://{addr}/to/private"), Format::Markdown)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("robots.txt disallows /private/page"),
        "{err}"
    );
    assert_eq!(
        PRIVATE_HITS.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a page robots.txt disallows was requested"
    );
    let err = web
        .page(&format!("http://{broken}/page"), Format::Markdown)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("answered 500"), "{err}");
}

#[tokio::test]
async fn size_and_time_limits_hold() {
    let addr = site().await;
    let policy = FetchPolicy {
        max_bytes: 1024 * 1024,
        timeout: Duration::from_secs(1),
        ..FetchPolicy::default()
    };
    let web = web_fetch(vec![addr], policy);
    let err = web
        .page(&format!("http://{addr}/large"), Format::Markdown)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 1_048_576, .. }),
        "{err:?}"
    );
    let started = std::time::Instant::now();
    let err = web
        .page(&format!("http://{addr}/slow"), Format::Markdown)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_fetch_through_the_hub_is_charged_one_page_with_paperwork() {
    let addr = site().await;
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(web_fetch(vec![addr], FetchPolicy::default())))
        .await;
    let url = format!("{}/stacknet/v1/fetch", net.hub.url());
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&json!({"url": format!("http://{addr}/article")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["title"], "The Tides of Saturn", "{answer}");
    assert_eq!(answer["usage"]["pages"], 1, "{answer}");
    let paperwork = paperwork_of(&net, &answer).await;
    assert_eq!(paperwork.body.usage.units, 1);
    assert_eq!(
        digest_of_response(Workload::WebFetch, &answer).unwrap(),
        paperwork.body.output_sha256
    );
    let hub_key = net.hub.hub.state.hub_key.public_key();
    verify::answer(&Content::Whole(answer.clone()), &paperwork, &hub_key).expect("the answer verifies");

    // A refusal reaches the client with its reason.
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&json!({"url": "http://169.254.169.254/latest/meta-data/"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("link-local"),
        "{err}"
    );
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&json!({"url": "file:///etc/passwd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

/// A scripted search engine: SearXNG's `/search?format=json`, Brave's web search and Tavily's
/// search, each answering in its own shape, recording what it was asked.
async fn engines() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b, c) = (asked.clone(), asked.clone(), asked.clone());
    let app = Router::new()
        .route(
            "/search",
            get(move |q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                a.lock().unwrap().push(format!("searxng q={} format={}", q["q"], q["format"]));
                axum::Json(json!({"query": q["q"], "results": [
                    {"title": "Rust", "url": "https://www.rust-lang.org/", "content": "A language empowering everyone", "publishedDate": null},
                    {"title": "Docs", "url": "https://docs.rs/tokio", "content": "tokio docs", "publishedDate": "2026-01-02"},
                    {"title": "no url"},
                ]}))
            }),
        )
        .route(
            "/brave",
            get(move |h: axum::http::HeaderMap| async move {
                b.lock().unwrap().push(format!("brave token={}", h["x-subscription-token"].to_str().unwrap()));
                axum::Json(json!({"web": {"results": [
                    {"title": "Brave result", "url": "https://example.org/a", "description": "from brave", "page_age": "2025-05-01"}]}}))
            }),
        )
        .route(
            "/tavily",
            axum::routing::post(move |h: axum::http::HeaderMap, body: axum::Json<Value>| async move {
                c.lock().unwrap().push(format!("tavily auth={} body={}", h["authorization"].to_str().unwrap(), body.0));
                axum::Json(json!({"results": [
                    {"title": "T", "url": "https://docs.rs/x", "content": "from tavily", "score": 0.9},
                    {"title": "U", "url": "https://spam.example/", "content": "excluded"}]}))
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, asked)
}

#[tokio::test]
async fn search_engines_answer_in_one_shape_charged_one_query() {
    use stacknet_api::request::search;
    use stacknet_node::backend::web_search::WebSearch;
    use stacknet_node::config::{ApiKey, SearchBackendConfig, SearchEngine};

    let (addr, asked) = engines().await;
    let config = |engine, path: &str, key: Option<&str>| SearchBackendConfig {
        engine,
        base_url: Some(format!("http://{addr}{path}")),
        api_key: key.map(ApiKey::new),
        timeout_ms: None,
    };
    let searxng = WebSearch::new(config(SearchEngine::Searxng, "", None)).unwrap();
    let (_, query) = search::validate(json!({"query": "rust async", "max_results": 5})).unwrap();
    let got = searxng.search(&query).await.unwrap();
    assert_eq!(
        got,
        json!({"object": "search", "query": "rust async", "results": [
            {"title": "Rust", "url": "https://www.rust-lang.org/", "snippet": "A language empowering everyone", "date": null},
            {"title": "Docs", "url": "https://docs.rs/tokio", "snippet": "tokio docs", "date": "2026-01-02"}]})
    );
    let (_, only_docs) =
        search::validate(json!({"query": "tokio", "search_domain_filter": ["docs.rs"]})).unwrap();
    let got = searxng.search(&only_docs).await.unwrap();
    assert_eq!(got["results"].as_array().unwrap().len(), 1, "{got}");
    assert!(asked
        .lock()
        .unwrap()
        .contains(&"searxng q=tokio site:docs.rs format=json".to_owned()));

    let brave = WebSearch::new(config(SearchEngine::Brave, "/brave", Some("brave-key"))).unwrap();
    let got = brave.search(&query).await.unwrap();
    assert_eq!(
        got["results"][0],
        json!({"title": "Brave result", "url": "https://example.org/a", "snippet": "from brave", "date": "2025-05-01"})
    );
    let tavily = WebSearch::new(config(SearchEngine::Tavily, "/tavily", Some("tv-key"))).unwrap();
    let (_, filtered) =
        search::validate(json!({"query": "q", "search_domain_filter": ["-spam.example"]})).unwrap();
    let got = tavily.search(&filtered).await.unwrap();
    assert_eq!(got["results"].as_array().unwrap().len(), 1, "{got}");
    let log = asked.lock().unwrap().join("\n");
    assert!(log.contains("brave token=brave-key"), "{log}");
    assert!(log.contains("tavily auth=Bearer tv-key"), "{log}");
    assert!(log.contains(r#""exclude_domains":["spam.example"]"#), "{log}");
    // Keys are required where the engine needs one.
    assert!(WebSearch::new(config(SearchEngine::Brave, "/brave", None)).is_err());

    // Through hub and node: one query charged, paperwork that verifies.
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(searxng)).await;
    let resp = client()
        .post(format!("{}/search", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(&json!({"query": "rust async", "max_results": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["usage"]["queries"], 1, "{answer}");
    let paperwork = paperwork_of(&net, &answer).await;
    let hub_key = net.hub.hub.state.hub_key.public_key();
    verify::answer(&Content::Whole(answer.clone()), &paperwork, &hub_key).expect("the answer verifies");
}

/// Every way to name a non-public address, refused. Run as it is, and inside an empty network
/// namespace by [`refusals_need_no_network`], where any connection attempt would fail differently
/// (no route, not a refusal): so the refusals come before any packet.
#[tokio::test]
async fn ssrf_refusals_come_before_any_connection() {
    let web = web_fetch(Vec::new(), FetchPolicy::default());
    for url in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://localhost/",
    ] {
        let err = web.page(url, Format::Markdown).await.unwrap_err();
        assert!(matches!(err, FetchError::Refused { .. }), "{url}: {err:?}");
    }
}

/// The refusals above, inside a network namespace of its own with no interface up (`unshare
/// --net`, which needs root, as CI runs): they still come out as refusals by name.
#[test]
#[ignore = "needs root for `unshare --net`; scripts/test.sh runs it"]
fn refusals_need_no_network() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args([
            "--exact",
            "fetch::ssrf_refusals_come_before_any_connection",
            "--test-threads",
            "1",
        ])
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("1 passed"), "{printed}");
}

/// Chat with `web_search_options`: the hub runs a search task, then the chat with the results in
/// its context, each with its own paperwork; the answer's message carries `url_citation`
/// annotations for the results its content cites, whole and streamed, and the chat's paperwork
/// still verifies (the annotations are the hub's, outside the output digest).
#[tokio::test]
async fn chat_with_web_search_options_cites_what_the_search_found() {
    use stacknet_node::backend::web_search::WebSearch;
    use stacknet_node::config::{SearchBackendConfig, SearchEngine};
    use stacknet_testkit::mock_upstream::MOCK_MODEL;

    let (addr, asked) = engines().await;
    let searxng = WebSearch::new(SearchBackendConfig {
        engine: SearchEngine::Searxng,
        base_url: Some(format!("http://{addr}")),
        api_key: None,
        timeout_ms: None,
    })
    .unwrap();
    let mut net = TestNetwork::start(Script::text("Rust [1] is documented at docs.rs [2], not [7].")).await;
    let url = format!("{}/chat/completions", net.base_url());
    let chat = |stream: bool, options: Value| {
        json!({"model": MOCK_MODEL, "stream": stream, "web_search_options": options,
               "messages": [{"role": "user", "content": "what is rust?"}]})
    };
    // No search node yet: the request fails, saying it was the search.
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&chat(false, json!({})))
        .send()
        .await
        .unwrap();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "web_search_options", "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("web search"),
        "{err}"
    );
    net.add_backend_node(Arc::new(searxng)).await;
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&chat(false, json!({"search_context_size": "huge"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(
        err["error"]["param"], "web_search_options.search_context_size",
        "{err}"
    );

    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&chat(false, json!({"search_context_size": "low"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let annotations = &answer["choices"][0]["message"]["annotations"];
    assert_eq!(
        annotations,
        &json!([
            {"type": "url_citation", "url_citation": {"start_index": 5, "end_index": 8, "title": "Rust", "url": "https://www.rust-lang.org/"}},
            {"type": "url_citation", "url_citation": {"start_index": 34, "end_index": 37, "title": "Docs", "url": "https://docs.rs/tokio"}}
        ]),
        "{answer}"
    );
    assert!(asked
        .lock()
        .unwrap()
        .contains(&"searxng q=what is rust? format=json".to_owned()));
    // The node ran a plain chat with the results in its context.
    let ran = net.upstream.last_request().unwrap();
    assert!(ran.get("web_search_options").is_none(), "{ran}");
    assert_eq!(ran["messages"][0]["role"], "system", "{ran}");
    assert!(
        ran["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("[1] Rust\nURL: https://www.rust-lang.org/"),
        "{ran}"
    );
    // Two tasks, each with paperwork that verifies.
    let hub_key = net.hub.hub.state.hub_key.public_key();
    let search = &answer["web_search"];
    assert_eq!(search["usage"]["queries"], 1, "{answer}");
    let paperwork = paperwork_of(&net, search).await;
    verify::answer(&Content::Whole(search.clone()), &paperwork, &hub_key).expect("the search verifies");
    let paperwork = paperwork_of(&net, &answer).await;
    assert_eq!(paperwork.body.contract.body.workload, Workload::Chat);
    verify::answer(&Content::Whole(answer.clone()), &paperwork, &hub_key).expect("the chat verifies");

    // Streamed: the annotations in a chunk of their own before the last, which carries the search.
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&chat(true, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = crate::hub::sse_events(&resp.text().await.unwrap());
    let noted: Vec<&Value> = events
        .iter()
        .filter(|e| e.pointer("/choices/0/delta/annotations").is_some())
        .collect();
    assert_eq!(noted.len(), 1, "{events:?}");
    assert_eq!(noted[0]["choices"][0]["delta"]["annotations"], *annotations);
    let chunks: Vec<Value> = events.iter().filter(|e| e.is_object()).cloned().collect();
    let last = chunks.last().unwrap();
    assert_eq!(last["web_search"]["object"], "search", "{last}");
    let paperwork = paperwork_of(&net, last).await;
    verify::answer(&Content::Stream(chunks.clone()), &paperwork, &hub_key)
        .expect("the streamed chat verifies");
}
