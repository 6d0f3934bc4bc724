//! The dashboard, read by plain HTTP and in a real headless browser (Debian's chromium, driven over
//! W3C WebDriver by chromedriver): live figures after traffic, plots drawn, the Stack page refusing
//! a wrong key. Screenshots go to `<target>/tmp/dashboard/`.

use std::process::{Child, Command, Stdio};

use base64::Engine;
use serde_json::{json, Value};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::money::{self, on_both_stores, Db};
use super::{chat_body, client, post_chat};

on_both_stores!(the_dashboard_shows_the_traffic_and_keeps_stacks_apart);

/// A priced network on `db` that has answered `n` chat requests.
async fn served(db: &Db, n: usize) -> TestNetwork {
    let net = TestNetwork::start_with(Script::text("one two three four"), |c| db.apply(c)).await;
    money::set_price(&net).await;
    money::topup(&net, 10_000_000).await;
    for _ in 0..n {
        assert_eq!(post_chat(&net, &chat_body(false)).await.status(), 200);
    }
    net
}

async fn get(url: &str) -> (u16, String) {
    let resp = client().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn post_key(net: &TestNetwork, key: &str) -> (u16, String) {
    let resp = client()
        .post(format!("{}/stack", net.hub.url()))
        .form(&[("api_key", key)])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn the_dashboard_shows_the_traffic_and_keeps_stacks_apart(db: Db) {
    let net = served(&db, 3).await;
    let (status, html) = get(&net.hub.url()).await;
    assert_eq!(status, 200);
    assert!(html.contains("<b id=\"nodes-online\">1</b>"), "{html}");
    assert!(html.contains("<b id=\"requests-5m\">3</b>"), "{html}");
    assert!(html.contains("<svg id=\"plot-requests\""), "{html}");
    assert!(html.contains(&format!("<td>{MOCK_MODEL}</td>")), "{html}");
    let node = net.nodes[0].node.node_key_id();
    let (status, page) = get(&format!("{}/nodes/{node}", net.hub.url())).await;
    assert_eq!(status, 200);
    assert!(page.contains("<b id=\"node-state\">online</b>"), "{page}");
    assert!(page.contains("<b id=\"node-requests\">3</b>"), "{page}");
    let (status, page) = get(&format!("{}/nodes/not-a-node", net.hub.url())).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("id=\"error\""), "{page}");

    let (status, page) = post_key(&net, "sk_not_a_key").await;
    assert_eq!(status, 401, "{page}");
    assert!(!page.contains("stack-requests"), "{page}");
    let (status, page) = post_key(&net, &net.api_key).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<b id=\"stack-requests\">3</b>"), "{page}");
    assert!(page.contains(&format!("<td>{MOCK_MODEL}</td>")), "{page}");

    // Another Stack's key shows that Stack's figures, none of these.
    let (_, other) = net.new_stack("another").await;
    let (status, page) = post_key(&net, &other).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<b id=\"stack-requests\">0</b>"), "{page}");

    // A model name is text, never markup.
    let hostile = "<script>alert(1)</script>";
    let resp = post_chat(
        &net,
        &json!({"model": hostile, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let (_, html) = get(&net.hub.url()).await;
    assert!(!html.contains(hostile));
}

/// chromedriver on a free loopback port, and one headless chromium session.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/test.sh installs Debian's chromium-driver)");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver answers", WAIT_DEADLINE, || async {
            let ready = http.get(format!("{base}/status")).send().await.ok()?;
            let v: Value = ready.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Self {
            http,
            session: format!("{base}/session/{session}"),
            driver,
        }
    }

    /// A WebDriver command: its value, or the whole answer when it is an error.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        match v["value"].get("error") {
            Some(_) => Err(v),
            None => Ok(v["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let path_shown = path.to_owned();
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|v| panic!("WebDriver {path_shown}: {v}"))
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The element `css` selects, waited for: a click that submits a form or follows a link
    /// may return before the next page is there.
    async fn find(&self, css: &str) -> String {
        wait_until(&format!("the page shows {css}"), WAIT_DEADLINE, || {
            self.try_find(css)
        })
        .await
    }

    async fn try_find(&self, css: &str) -> Option<String> {
        let query = json!({"using": "css selector", "value": css});
        let v = self
            .try_call(reqwest::Method::POST, "/element", Some(query))
            .await
            .ok()?;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    async fn count(&self, css: &str) -> usize {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array().unwrap().len()
    }

    /// The text of the element `css` selects, waited for (found again should the page change
    /// between finding it and reading it).
    async fn text(&self, css: &str) -> String {
        wait_until(&format!("the text of {css}"), WAIT_DEADLINE, || async {
            let id = self.try_find(css).await?;
            let v = self
                .try_call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
                .await
                .ok()?;
            v.as_str().map(str::to_owned)
        })
        .await
    }

    async fn type_in(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The rendered width of the element `css`, as the browser laid it out.
    async fn width(&self, css: &str) -> f64 {
        let id = self.find(css).await;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{id}/rect"), None)
            .await;
        v["width"].as_f64().unwrap()
    }

    /// Saves a screenshot of the page as `<target>/tmp/dashboard/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver (Debian's chromium, chromium-driver); scripts/test.sh installs them"]
async fn the_dashboard_in_a_headless_browser() {
    let net = served(&Db::Sqlite, 4).await;
    let browser = Browser::start().await;
    browser.goto(&net.hub.url()).await;
    assert_eq!(browser.text("#nodes-online").await, "1");
    assert_eq!(browser.text("#requests-5m").await, "4");
    // The plots are drawn: an SVG laid out at its size, with its line.
    assert_eq!(browser.count("svg#plot-requests polyline").await, 1);
    assert!(browser.width("svg#plot-requests").await > 600.0);
    assert!(browser.text("#models").await.contains(MOCK_MODEL));
    browser.screenshot("network").await;

    browser.click("#nodes a").await;
    assert_eq!(browser.text("#node-state").await, "online");
    assert_eq!(browser.text("#node-requests").await, "4");
    assert_eq!(browser.count("svg#plot-node-requests polyline").await, 1);
    browser.screenshot("node").await;

    browser.goto(&format!("{}/stack", net.hub.url())).await;
    browser.type_in("#api_key", "sk_wrong").await;
    browser.click("#show").await;
    let error = browser.text("#error").await;
    assert!(error.contains("API key"), "{error}");
    assert_eq!(browser.count("#stack-requests").await, 0);
    browser.screenshot("stack-refused").await;

    browser.type_in("#api_key", &net.api_key).await;
    browser.click("#show").await;
    assert_eq!(browser.text("#stack-requests").await, "4");
    let spend = browser.text("#spend").await;
    assert!(spend.contains(MOCK_MODEL), "{spend}");
    browser.screenshot("stack").await;
    browser.close().await;
}
