//! [`Client`]: a hub's HTTP API, typed. Every refusal comes back as [`Error::Api`] with the hub's
//! OpenAI-style error (status, message, `param`, `code`); answers larger than
//! [`MAX_ANSWER_BYTES`] are refused rather than buffered.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use stacknet_api::paths;
use stacknet_api::types::{
    BuyKey, ConsistencyProof, ErrorBody, ErrorDetail, HubInfo, InclusionProof, Injection, InjectionList,
    InjectionSpec, KeyState, Listing, ListingList, LogCheckpoint, ModelList, Referral, ReferralList, Sale,
    Skill, SkillList, SkillSpec, StackStatement, StatementQuery,
};
use stacknet_protocol::binding::{KeyBinding, Rebinding};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{FingerprintId, InjectionId, PaperworkId, Signed, SkillId};
use stacknet_protocol::{NodeKeyId, SecretKey, Timestamp};

use crate::verify::Content;

/// The largest answer read from a hub.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;
/// How long one call may take before it is given up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The hub refused, with its OpenAI-style error.
    #[error("the hub refused ({status}): {message}")]
    Api {
        status: u16,
        message: String,
        param: Option<String>,
        code: Option<String>,
    },
    #[error("{url} answered more than {MAX_ANSWER_BYTES} bytes")]
    TooLarge { url: String },
    #[error("the answer of {url} is malformed: {message}")]
    Malformed { url: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The hub's error code (`insufficient_balance`, `invalid_api_key`, ...), for a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, for a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A hub, reached over HTTP, with a Stack's API key where the calls need one.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

/// A whole (not streamed) answer of an OpenAI endpoint, with Stacknet's proof fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer(pub Value);

impl Answer {
    /// The fingerprint id the answer claims (`fp_...`).
    pub fn fingerprint(&self) -> Option<FingerprintId> {
        self.0.get("fingerprint")?.as_str()?.parse().ok()
    }

    /// The paperwork the answer names (`pw_...`).
    pub fn paperwork(&self) -> Option<PaperworkId> {
        self.0.get("paperwork")?.as_str()?.parse().ok()
    }

    /// The answer as content to verify.
    pub fn content(&self) -> Content {
        Content::Whole(self.0.clone())
    }
}

/// What an answer is checked against: its paperwork, the hub's checkpoint, and the paperwork's
/// inclusion proof at exactly that checkpoint's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub paperwork: Signed<Paperwork>,
    pub checkpoint: LogCheckpoint,
    pub inclusion: InclusionProof,
    /// The rebindings of the paperwork's Node Key id (empty: never sold), for
    /// [`crate::verify::answer_bound`].
    pub chain: Vec<Rebinding>,
}

impl Client {
    /// A client of the hub at `hub` (its origin, e.g. `http://127.0.0.1:8080`).
    pub fn new(hub: &str) -> Result<Self, Error> {
        let base = hub.trim_end_matches('/').trim_end_matches("/v1").to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!("{hub:?} is not an http(s) URL")));
        }
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Unreachable {
                url: base.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            api_key: None,
        })
    }

    /// The same client, calling with a Stack's API key (`sk_...`).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The hub's origin.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let mut resp = req.send().await.map_err(|e| Error::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > MAX_ANSWER_BYTES {
                return Err(Error::TooLarge { url });
            }
        }
        let malformed = |message: String| Error::Malformed {
            url: url.clone(),
            message,
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| malformed(format!("{status} without JSON: {e}")))?;
        if !status.is_success() {
            let detail = error_detail(&value);
            return Err(Error::Api {
                status: status.as_u16(),
                message: detail
                    .as_ref()
                    .map_or_else(|| value.to_string(), |d| d.message.clone()),
                param: detail.as_ref().and_then(|d| d.param.clone()),
                code: detail.and_then(|d| d.code),
            });
        }
        serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(reqwest::Method::GET, path, None::<&()>).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, Error> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    // -- The OpenAI endpoints ------------------------------------------------------------------

    /// `POST /v1/chat/completions` (not streamed: `stream` is set to false). `body` is OpenAI's,
    /// plus Stacknet's `skills` if wanted.
    pub async fn chat(&self, body: &Value) -> Result<Answer, Error> {
        self.openai(paths::CHAT_COMPLETIONS, body).await
    }

    /// `POST /v1/completions`.
    pub async fn completions(&self, body: &Value) -> Result<Answer, Error> {
        self.openai(paths::COMPLETIONS, body).await
    }

    /// `POST /v1/embeddings`.
    pub async fn embeddings(&self, body: &Value) -> Result<Answer, Error> {
        self.openai(paths::EMBEDDINGS, body).await
    }

    async fn openai(&self, path: &str, body: &Value) -> Result<Answer, Error> {
        let mut body = body.clone();
        match body.as_object_mut() {
            Some(obj) => obj.insert("stream".to_owned(), Value::Bool(false)),
            None => {
                return Err(Error::Invalid(
                    "the request body must be a JSON object".to_owned(),
                ))
            }
        };
        self.post(path, &body).await.map(Answer)
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<ModelList, Error> {
        self.get(paths::MODELS).await
    }

    // -- Stacknet: the hub, money, the log -----------------------------------------------------

    /// `GET /stacknet/v1/hub`: the hub's key (pin it: everything else is checked against it).
    pub async fn hub_info(&self) -> Result<HubInfo, Error> {
        self.get(paths::HUB_INFO).await
    }

    /// The Stack's statement: its balance and transfers (or a skill's royalties, with `skill`).
    pub async fn statement(&self, query: &StatementQuery) -> Result<StackStatement, Error> {
        let mut q = Vec::new();
        if let Some(a) = query.after {
            q.push(format!("after={a}"));
        }
        if let Some(l) = query.limit {
            q.push(format!("limit={l}"));
        }
        if let Some(s) = query.skill {
            q.push(format!("skill={s}"));
        }
        let path = if q.is_empty() {
            paths::STACK_STATEMENT.to_owned()
        } else {
            format!("{}?{}", paths::STACK_STATEMENT, q.join("&"))
        };
        self.get(&path).await
    }

    pub async fn paperwork(&self, id: PaperworkId) -> Result<Signed<Paperwork>, Error> {
        self.get(&paths::paperwork(&id)).await
    }

    /// The log's latest signed checkpoint.
    pub async fn checkpoint(&self) -> Result<LogCheckpoint, Error> {
        self.get(paths::LOG_CHECKPOINT).await
    }

    /// A paperwork's inclusion proof in the tree of `tree_size` leaves (the latest when `None`).
    pub async fn inclusion(&self, id: PaperworkId, tree_size: Option<u64>) -> Result<InclusionProof, Error> {
        let size = tree_size.map(|s| format!("&tree_size={s}")).unwrap_or_default();
        self.get(&format!("{}?paperwork={id}{size}", paths::LOG_INCLUSION))
            .await
    }

    /// The proof that the tree of `to` leaves extends the tree of `from`.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, Error> {
        self.get(&format!("{}?from={from}&to={to}", paths::LOG_CONSISTENCY))
            .await
    }

    /// What an answer is checked against: its paperwork, the checkpoint now, and the paperwork's
    /// inclusion proof at that checkpoint's size (so later appends cannot race the check).
    pub async fn evidence(&self, answer: &Answer) -> Result<Evidence, Error> {
        let id = answer
            .paperwork()
            .ok_or_else(|| Error::Invalid("the answer names no paperwork".to_owned()))?;
        let paperwork = self.paperwork(id).await?;
        let checkpoint = self.checkpoint().await?;
        let inclusion = self.inclusion(id, Some(checkpoint.size)).await?;
        let chain = self
            .key_state(paperwork.body.contract.body.node_key)
            .await?
            .bindings;
        Ok(Evidence {
            paperwork,
            checkpoint,
            inclusion,
            chain,
        })
    }

    // -- Stacknet: the Node Key market -----------------------------------------------------------

    /// The open listings.
    pub async fn listings(&self) -> Result<ListingList, Error> {
        self.get(paths::MARKET_KEYS).await
    }

    /// Every Node Key binding the hub holds, in the order its checkpoints commit to (the first
    /// `count` when given).
    pub async fn bindings(&self, count: Option<u64>) -> Result<Vec<Rebinding>, Error> {
        let q = count.map(|c| format!("?count={c}")).unwrap_or_default();
        let list: stacknet_api::types::BindingList =
            self.get(&format!("{}{q}", paths::MARKET_BINDINGS)).await?;
        Ok(list.data)
    }

    /// A Node Key id's status, operating key, rebindings and listing.
    pub async fn key_state(&self, node: NodeKeyId) -> Result<KeyState, Error> {
        self.get(&paths::market_key(&node)).await
    }

    /// Buys a listed Node Key id for this client's Stack (an owner key), binding `new_key` to it:
    /// the binding, signed by `new_key`, accepts exactly `listing`'s offer. Keep `new_key`: it is
    /// what operates the id from now on.
    pub async fn buy_key(&self, listing: &Listing, new_key: &SecretKey) -> Result<Sale, Error> {
        let body = KeyBinding {
            node: listing.node,
            seq: listing.seq,
            from_key: listing.seller_key,
            to_key: new_key.public_key(),
            offer: listing.offer_sha256,
            hub: listing.offer.body.hub,
            created_at: Timestamp::now(),
        };
        let binding = Signed::sign(body, new_key)
            .map_err(|e| Error::Invalid(format!("cannot sign the binding: {e}")))?;
        self.post(&paths::market_buy(&listing.node), &BuyKey { binding })
            .await
    }

    // -- Stacknet: attribution (an owner key changes things; the skills registry is public) ----

    pub async fn injections(&self) -> Result<InjectionList, Error> {
        self.get(paths::INJECTIONS).await
    }

    /// One injection, at `version` (the latest when `None`).
    pub async fn injection(&self, id: InjectionId, version: Option<u64>) -> Result<Injection, Error> {
        let v = version.map(|v| format!("?version={v}")).unwrap_or_default();
        self.get(&format!("{}{v}", paths::injection(&id))).await
    }

    pub async fn create_injection(&self, spec: &InjectionSpec) -> Result<Injection, Error> {
        self.post(paths::INJECTIONS, spec).await
    }

    /// The injection's next version.
    pub async fn update_injection(&self, id: InjectionId, spec: &InjectionSpec) -> Result<Injection, Error> {
        self.call(reqwest::Method::PUT, &paths::injection(&id), Some(spec))
            .await
    }

    /// Turns an injection off (a last version; earlier ones stay readable).
    pub async fn delete_injection(&self, id: InjectionId) -> Result<Injection, Error> {
        self.call(reqwest::Method::DELETE, &paths::injection(&id), None::<&()>)
            .await
    }

    /// The public registry (and, with an owner key, the Stack's own skills).
    pub async fn skills(&self) -> Result<SkillList, Error> {
        self.get(paths::SKILLS).await
    }

    pub async fn skill(&self, id: SkillId) -> Result<Skill, Error> {
        self.get(&paths::skill(&id)).await
    }

    pub async fn publish_skill(&self, spec: &SkillSpec) -> Result<Skill, Error> {
        self.post(paths::SKILLS, spec).await
    }

    pub async fn update_skill(&self, id: SkillId, spec: &SkillSpec) -> Result<Skill, Error> {
        self.call(reqwest::Method::PUT, &paths::skill(&id), Some(spec))
            .await
    }

    pub async fn unpublish_skill(&self, id: SkillId) -> Result<Skill, Error> {
        self.call(reqwest::Method::DELETE, &paths::skill(&id), None::<&()>)
            .await
    }

    /// Moves a skill's royalties into its Stack's balance (its creator's owner key).
    pub async fn collect_royalties(&self, id: SkillId) -> Result<stacknet_api::types::Collected, Error> {
        self.post(&paths::skill_collect(&id), &serde_json::json!({}))
            .await
    }

    pub async fn referrals(&self) -> Result<ReferralList, Error> {
        self.get(paths::REFERRALS).await
    }

    pub async fn create_referral(&self) -> Result<Referral, Error> {
        self.post(paths::REFERRALS, &serde_json::json!({})).await
    }
}

/// The detail of an OpenAI-style error body, if `v` is one.
fn error_detail(v: &Value) -> Option<ErrorDetail> {
    serde_json::from_value::<ErrorBody>(v.clone())
        .ok()
        .map(|b| b.error)
}
