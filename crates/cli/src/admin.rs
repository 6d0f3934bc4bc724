//! `stacknet admin`: Stacks, API keys, top-ups and prices, through the hub's admin API.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub fn new(hub: &str, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: hub.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/stacknet/v1/admin{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .with_context(|| format!("the hub answered {status} without JSON"))?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("unknown error");
            bail!("the hub refused ({status}): {msg}");
        }
        Ok(v)
    }

    pub async fn create_stack(&self, name: &str) -> Result<Value> {
        self.call(reqwest::Method::POST, "/stacks", Some(json!({"name": name})))
            .await
    }

    pub async fn list_stacks(&self) -> Result<Value> {
        self.call(reqwest::Method::GET, "/stacks", None).await
    }

    pub async fn create_key(&self, stack: &str) -> Result<Value> {
        self.call(reqwest::Method::POST, &format!("/stacks/{stack}/keys"), None)
            .await
    }

    /// Credits a Stack's balance (`stack`), or the treasury (`None`); `id` makes it idempotent.
    pub async fn topup(&self, stack: Option<&str>, amount: &str, id: Option<&str>) -> Result<Value> {
        let path = match stack {
            Some(stack) => format!("/stacks/{stack}/topup"),
            None => "/treasury/topup".to_owned(),
        };
        let mut body = json!({"amount": amount});
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        self.call(reqwest::Method::POST, &path, Some(body)).await
    }

    pub async fn set_price(&self, price: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, "/prices", Some(price)).await
    }

    pub async fn prices(&self) -> Result<Value> {
        self.call(reqwest::Method::GET, "/prices", None).await
    }
}
