//! `stacknet admin`: Stacks, API keys, top-ups and prices, through the hub's admin API.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use stacknet_api::paths;
use stacknet_api::types::{
    ErrorBody, KeyRole, NewKey, NewKeyRequest, NewStack, Price, PriceList, RevokedKey, SetPrice, Stack,
    StackList, TopUp, TopUpAnswer,
};
use stacknet_protocol::{Amount, StackId};

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

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
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
            let msg = ErrorBody::message_of(&v).unwrap_or_else(|| "unknown error".to_owned());
            bail!("the hub refused ({status}): {msg}");
        }
        serde_json::from_value(v).with_context(|| format!("the hub's answer to {path} is malformed"))
    }

    pub async fn create_stack(&self, name: &str, referral_code: Option<String>) -> Result<Stack> {
        let body = NewStack {
            name: name.to_owned(),
            referral_code,
        };
        self.call(reqwest::Method::POST, paths::ADMIN_STACKS, Some(&body))
            .await
    }

    pub async fn list_stacks(&self) -> Result<StackList> {
        self.call(reqwest::Method::GET, paths::ADMIN_STACKS, None::<&()>)
            .await
    }

    pub async fn create_key(&self, stack: StackId, role: KeyRole) -> Result<NewKey> {
        self.call(
            reqwest::Method::POST,
            &paths::admin_stack_keys(&stack),
            Some(&NewKeyRequest { role }),
        )
        .await
    }

    /// Revokes the API key listed as `prefix` (what `create-key` showed as `prefix`).
    pub async fn revoke_key(&self, prefix: &str) -> Result<RevokedKey> {
        self.call(reqwest::Method::DELETE, &paths::admin_key(prefix), None::<&()>)
            .await
    }

    /// Credits a Stack's balance (`stack`), or the treasury (`None`); `id` makes it idempotent.
    pub async fn topup(
        &self,
        stack: Option<StackId>,
        amount: Amount,
        id: Option<String>,
    ) -> Result<TopUpAnswer> {
        let path = match stack {
            Some(stack) => paths::admin_stack_topup(&stack),
            None => paths::ADMIN_TREASURY_TOPUP.to_owned(),
        };
        self.call(reqwest::Method::POST, &path, Some(&TopUp { amount, id }))
            .await
    }

    pub async fn set_price(&self, price: &SetPrice) -> Result<Price> {
        self.call(reqwest::Method::POST, paths::ADMIN_PRICES, Some(price))
            .await
    }

    pub async fn prices(&self) -> Result<PriceList> {
        self.call(reqwest::Method::GET, paths::ADMIN_PRICES, None::<&()>)
            .await
    }
}
