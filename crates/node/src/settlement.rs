//! The operator's side of getting paid: filing the wallet's paperwork with the hub, statements and
//! redemption, recovery of paperwork the wallet lost from the hub's log, and stake requests, each signed
//! with the Node Key. Used by `stacknet paperwork` and `stacknet stake`.

use std::time::Duration;

use serde_json::Value;
use stacknet_api::paths;
use stacknet_api::types::{
    ErrorBody, FilingAnswer, FilingRequest, HubInfo, Listing, LoggedPage, NodeReferral, NodeStatement,
    Payout, StakeStatus,
};
use stacknet_protocol::filing::{Filing, FilingVerdict, NodeAction, NodeRequest};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{Amount, Nonce, PaperworkId, PublicKey, SecretKey, Sha256Digest, Signed, Timestamp};

use crate::wallet::{Wallet, WalletError};

/// The most bytes of paperwork sent in one filing request (the hub's default body limit is 4 MiB).
pub const FILING_BODY_BUDGET_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    #[error("cannot reach the hub at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the hub refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the hub's answer is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error("cannot sign: {0}")]
    Sign(String),
    /// A verdict not signed by the hub filed with, or not about what was filed: nothing is marked.
    #[error("the hub's filing answer cannot be trusted: {0}")]
    Untrusted(String),
    /// A validator's committed, unrevealed verdicts could not be written to its pending file.
    #[error("cannot keep the pending reveals: {0}")]
    Pending(String),
}

/// A hub reached over HTTP, with the key it answered with.
#[derive(Debug, Clone)]
pub struct HubClient {
    url: String,
    http: reqwest::Client,
    pub hub_key: PublicKey,
}

impl HubClient {
    /// Asks `url` for its hub key (`GET /stacknet/v1/hub`).
    pub async fn connect(url: &str) -> Result<Self, SettlementError> {
        let url = url.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| SettlementError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let info = call(&http, &url, reqwest::Method::GET, paths::HUB_INFO, None).await?;
        let info: HubInfo =
            serde_json::from_value(info).map_err(|e| SettlementError::Malformed(e.to_string()))?;
        Ok(Self {
            url,
            http,
            hub_key: info.hub_key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, SettlementError> {
        call(&self.http, &self.url, method, path, body).await
    }

    /// A public `GET` of the hub, read as `T`.
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, SettlementError> {
        let answer = self.call(reqwest::Method::GET, path, None).await?;
        serde_json::from_value(answer).map_err(|e| SettlementError::Malformed(e.to_string()))
    }

    pub(crate) async fn node_request<T: serde::de::DeserializeOwned>(
        &self,
        key: &SecretKey,
        path: &str,
        action: NodeAction,
    ) -> Result<T, SettlementError> {
        self.node_request_for(key, None, path, action).await
    }

    /// As [`Self::node_request`], naming the id acted for (an id a sale bound `key` to).
    async fn node_request_for<T: serde::de::DeserializeOwned>(
        &self,
        key: &SecretKey,
        node: Option<stacknet_protocol::NodeKeyId>,
        path: &str,
        action: NodeAction,
    ) -> Result<T, SettlementError> {
        let body = self.signed_request_for(key, node, action)?;
        let answer = self.call(reqwest::Method::POST, path, Some(body)).await?;
        serde_json::from_value(answer).map_err(|e| SettlementError::Malformed(e.to_string()))
    }

    /// `action` as a request to this hub signed with `key`, as JSON bytes.
    fn signed_request(&self, key: &SecretKey, action: NodeAction) -> Result<Vec<u8>, SettlementError> {
        self.signed_request_for(key, None, action)
    }

    fn signed_request_for(
        &self,
        key: &SecretKey,
        node: Option<stacknet_protocol::NodeKeyId>,
        action: NodeAction,
    ) -> Result<Vec<u8>, SettlementError> {
        let req = NodeRequest {
            acts_for: node,
            node_key: key.public_key(),
            hub: self.hub_key,
            action,
            created_at: Timestamp::now(),
            nonce: Nonce::random(),
        };
        let signed = Signed::sign(req, key).map_err(|e| SettlementError::Sign(e.to_string()))?;
        serde_json::to_vec(&signed).map_err(|e| SettlementError::Sign(e.to_string()))
    }

    /// Posts `action` signed with `key` to `path` and hands back the response as it arrives (a
    /// stream), once its status says it was taken; a refusal is read as [`Self::node_request`]'s.
    pub(crate) async fn node_request_streamed(
        &self,
        key: &SecretKey,
        path: &str,
        action: NodeAction,
    ) -> Result<reqwest::Response, SettlementError> {
        let url = format!("{}{path}", self.url);
        let resp = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.signed_request(key, action)?)
            .send()
            .await
            .map_err(|e| SettlementError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let value: Value = resp
            .json()
            .await
            .map_err(|e| SettlementError::Malformed(e.to_string()))?;
        Err(SettlementError::Refused {
            status: status.as_u16(),
            message: ErrorBody::message_of(&value).unwrap_or_else(|| value.to_string()),
        })
    }

    /// One page of the key's paperwork in the hub's log, from index `from`.
    pub async fn logged(&self, key: &SecretKey, from: u64) -> Result<LoggedPage, SettlementError> {
        self.node_request(key, paths::NODE_LOGGED, NodeAction::Logged { from })
            .await
    }

    /// The Node Key's earnings, transfers and payouts.
    pub async fn statement(&self, key: &SecretKey) -> Result<NodeStatement, SettlementError> {
        self.node_request(key, paths::NODE_STATEMENT, NodeAction::Statement)
            .await
    }

    /// A stake request (`Stake`, `Bond`, `Unbond` or `Withdraw`) and where the key's stake stands after it.
    pub async fn stake(&self, key: &SecretKey, action: NodeAction) -> Result<StakeStatus, SettlementError> {
        self.node_request(key, paths::STAKE, action).await
    }

    /// Registers the Node Key with a Stack's referral code (once: the same code again is answered
    /// as it stands, another is refused).
    pub async fn refer(&self, key: &SecretKey, code: &str) -> Result<NodeReferral, SettlementError> {
        let action = NodeAction::Refer {
            code: code.to_owned(),
        };
        self.node_request(key, paths::NODE_REFERRER, action).await
    }

    /// Lists the Node Key id `key` operates for sale at `price`, paid to the Stack `proceeds`. `node`
    /// names the id when `key` operates one a sale bound it to (the offer must say which id).
    pub async fn list(
        &self,
        key: &SecretKey,
        node: Option<stacknet_protocol::NodeKeyId>,
        price: Amount,
        proceeds: stacknet_protocol::StackId,
    ) -> Result<Listing, SettlementError> {
        let action = NodeAction::List { price, proceeds };
        self.node_request_for(key, node, paths::MARKET_KEYS, action).await
    }

    /// Withdraws the key's listing.
    pub async fn unlist(&self, key: &SecretKey) -> Result<Listing, SettlementError> {
        self.node_request(key, paths::MARKET_KEYS, NodeAction::Unlist)
            .await
    }

    /// Redeems `amount` of earnings (all when `None`) to `destination`.
    pub async fn redeem(
        &self,
        key: &SecretKey,
        amount: Option<Amount>,
        destination: &str,
    ) -> Result<Payout, SettlementError> {
        let action = NodeAction::Redeem {
            amount,
            destination: destination.to_owned(),
        };
        self.node_request(key, paths::NODE_REDEEM, action).await
    }

    /// Files `paperwork` (one signed filing per request, split to stay under the body limit) and
    /// returns every per-paperwork verdict the hub gave, each checked: signed by [`Self::hub_key`],
    /// about a paperwork of that filing, for this key and that very filing.
    pub async fn file(
        &self,
        key: &SecretKey,
        paperwork: Vec<Signed<Paperwork>>,
    ) -> Result<Vec<Verdict>, SettlementError> {
        let mut verdicts = Vec::new();
        for batch in batches(paperwork)? {
            let mut ids: Vec<PaperworkId> = batch.iter().map(|(id, _)| *id).collect();
            ids.sort();
            let filing = Filing {
                node_key: key.public_key(),
                hub: self.hub_key,
                paperwork: ids,
                created_at: Timestamp::now(),
                nonce: Nonce::random(),
            };
            let filing = Signed::sign(filing, key).map_err(|e| SettlementError::Sign(e.to_string()))?;
            let digest = filing
                .digest()
                .map_err(|e| SettlementError::Sign(e.to_string()))?;
            let listed = filing.body.paperwork.clone();
            let docs: Vec<Signed<Paperwork>> = batch.into_iter().map(|(_, p)| p).collect();
            let request = FilingRequest {
                filing,
                paperwork: docs,
            };
            let body = serde_json::to_vec(&request).map_err(|e| SettlementError::Sign(e.to_string()))?;
            let answer = self
                .call(reqwest::Method::POST, paths::NODE_FILE, Some(body))
                .await?;
            let answer: FilingAnswer =
                serde_json::from_value(answer).map_err(|e| SettlementError::Malformed(e.to_string()))?;
            for v in answer.results {
                verdicts.push(self.check_verdict(v, key, &digest, &listed)?);
            }
        }
        Ok(verdicts)
    }

    fn check_verdict(
        &self,
        v: Signed<FilingVerdict>,
        key: &SecretKey,
        filing: &Sha256Digest,
        listed: &[PaperworkId],
    ) -> Result<Verdict, SettlementError> {
        let untrusted = |why: String| SettlementError::Untrusted(format!("{}: {why}", v.body.paperwork));
        v.verify(&self.hub_key).map_err(|e| untrusted(e.to_string()))?;
        let b = &v.body;
        if b.hub != self.hub_key || b.node_key != key.public_key() {
            return Err(untrusted("a verdict for another hub or node key".into()));
        }
        if b.filing != *filing || listed.binary_search(&b.paperwork).is_err() {
            return Err(untrusted("a verdict about another filing".into()));
        }
        Ok(v.body)
    }
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Value, SettlementError> {
    let url = format!("{base}{path}");
    let mut req = http.request(method, &url);
    if let Some(body) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let resp = req.send().await.map_err(|e| SettlementError::Unreachable {
        url: url.clone(),
        message: e.to_string(),
    })?;
    let status = resp.status();
    let value: Value = resp
        .json()
        .await
        .map_err(|e| SettlementError::Malformed(e.to_string()))?;
    if !status.is_success() {
        let message = ErrorBody::message_of(&value).unwrap_or_else(|| value.to_string());
        return Err(SettlementError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    Ok(value)
}

/// One filing's paperwork, each with its id.
type Batch = Vec<(PaperworkId, Signed<Paperwork>)>;

/// Paperwork split into filings that stay under [`FILING_BODY_BUDGET_BYTES`] and the protocol's
/// per-filing maximum.
fn batches(paperwork: Vec<Signed<Paperwork>>) -> Result<Vec<Batch>, SettlementError> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for p in paperwork {
        let id = p.id().map_err(|e| SettlementError::Sign(e.to_string()))?;
        let size = serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0) + 64;
        if !current.is_empty()
            && (bytes + size > FILING_BODY_BUDGET_BYTES
                || current.len() >= stacknet_protocol::filing::MAX_FILING_PAPERWORK)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((id, p));
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// The hub's verdict on one filed paperwork, its signature checked.
pub type Verdict = FilingVerdict;

/// Stores in `wallet` every paperwork of `key` the hub logged that the wallet lacks, reading the
/// log from where the last recovery ended; returns how many it added. The wallet commits without
/// waiting for the disk, so a power cut can lose its last writes; the hub's log, made durable before
/// a task is answered, still holds what the hub accepted. Each document must be signed by `key`
/// under a contract the hub signed for the id: a hub handing back anything else is not trusted and
/// nothing of its page is stored. One call reads at most [`MAX_RECOVERY_PAGES`] pages (a hub
/// claiming an endless log cannot keep it asking); the next call goes on from there.
pub async fn recover_wallet(
    hub: &HubClient,
    key: &SecretKey,
    wallet: &Wallet,
) -> Result<usize, SettlementError> {
    let mine = key.public_key();
    let mut from = wallet.recovered_to().await?;
    let mut added = 0;
    for _ in 0..MAX_RECOVERY_PAGES {
        let page = hub.logged(key, from).await?;
        if page.next < from || page.next > page.size || (page.next == from && from < page.size) {
            return Err(SettlementError::Untrusted(format!(
                "a page of the log from {from} ends at {} of {}",
                page.next, page.size
            )));
        }
        let mut found = Vec::with_capacity(page.paperwork.len());
        for doc in page.paperwork {
            if doc.body.node_key != mine {
                // Signed by another key bound to the same id (a sale): not this wallet's to file.
                continue;
            }
            doc.verify(&mine)
                .and_then(|()| doc.body.contract.verify(&hub.hub_key))
                .map_err(|e| SettlementError::Untrusted(format!("a logged paperwork: {e}")))?;
            if doc.body.contract.body.node_key != page.node_key {
                return Err(SettlementError::Untrusted(format!(
                    "a logged paperwork's contract is assigned to {}, not {}",
                    doc.body.contract.body.node_key, page.node_key
                )));
            }
            found.push(doc);
        }
        for doc in &found {
            let id = doc.id().map_err(|e| SettlementError::Malformed(e.to_string()))?;
            if wallet.get(&id).await?.is_none() {
                wallet.store(doc).await?;
                added += 1;
            }
        }
        from = page.next;
        wallet.set_recovered_to(from).await?;
        if from >= page.size {
            break;
        }
    }
    Ok(added)
}

/// Most pages of the hub's log one [`recover_wallet`] reads (a million leaves at 4,096 a page).
pub const MAX_RECOVERY_PAGES: usize = 256;

/// Files every paperwork in `wallet` still due (neither filed nor refused for good) with `hub`, and
/// marks in the wallet what its signed verdicts say: filed, or refused for good with the reason. The
/// wallet files with one hub only: the key pinned at first use (or from the node's configuration,
/// pinned before); another hub key is refused before anything is sent.
pub async fn file_wallet(
    hub: &HubClient,
    key: &SecretKey,
    wallet: &Wallet,
) -> Result<Vec<Verdict>, SettlementError> {
    wallet.pin_hub_key(&hub.hub_key).await?;
    let recovered = recover_wallet(hub, key, wallet).await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "the wallet lacked paperwork the hub logged: recovered from its log"
        );
    }
    let unfiled: Vec<Signed<Paperwork>> = wallet
        .entries()
        .await?
        .into_iter()
        .filter(|e| e.is_due())
        .map(|e| e.paperwork)
        .collect();
    if unfiled.is_empty() {
        return Ok(Vec::new());
    }
    let verdicts = hub.file(key, unfiled).await?;
    let filed: Vec<PaperworkId> = verdicts
        .iter()
        .filter(|v| v.is_filed())
        .map(|v| v.paperwork)
        .collect();
    wallet.mark_filed(&filed).await?;
    let refused: Vec<(PaperworkId, String)> = verdicts
        .iter()
        .filter(|v| v.verdict.is_final_refusal())
        .map(|v| (v.paperwork, v.reason().unwrap_or_default().to_owned()))
        .collect();
    wallet.mark_refused(&refused).await?;
    Ok(verdicts)
}
