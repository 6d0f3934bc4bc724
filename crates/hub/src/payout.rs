//! Redemption through the payout rail: an HMAC-signed webhook to the operator's payment system.
//!
//! States: `pending` (earnings moved to payout-pending, webhook not delivered yet) -> `sent` (the
//! rail has it, or may have it) -> `confirmed` (paid: the money leaves the books to
//! `external:payout`), or `failed` (not paid: the money goes back to the node's earnings). A
//! delivery answered `{"status": "confirmed"}` is confirmed at once; otherwise the payment system
//! confirms or fails it later on `POST /stacknet/v1/webhooks/payouts`.
//!
//! Only a definite "not paid" returns money: the rail's refusal (a 4xx other than 408, 409, 425 and
//! 429), its `failed` callback, or attempts that all failed to connect. A 5xx, a time-out or a lost
//! answer after the request left may hide a payment: the payout turns `sent`, is retried with the
//! same `Idempotency-Key` (its id), and after the last attempt stays `sent` until the callback. A
//! callback that settles a payout stops its retries (each attempt is recorded by compare-and-set).
//!
//! Each state change is a compare-and-set in the store followed by an idempotent ledger transfer
//! (`payout:<id>`, `payout-confirm:<id>`, `payout-return:<id>`), so a retry and a callback never both
//! act, and [`resume`] re-applies after a crash whatever transfer a state change did not reach.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
pub use stacknet_api::types::PayoutCallback as Callback;
use stacknet_api::types::{PayoutAck, PayoutCallbackAnswer, PayoutRequest};
use stacknet_ledger::{AccountId, LedgerError, Reason, Transfer, TransferId};
use stacknet_protocol::{Amount, NodeKeyId, Timestamp};

use crate::error::ApiError;
use crate::store::{PayoutRecord, PayoutState};
use crate::webhook;
use crate::AppState;

/// Longest destination (the operator's account reference at the payment provider).
pub const MAX_DESTINATION_CHARS: usize = 200;
/// How long one delivery attempt may take.
pub const DELIVERY_TIMEOUT_MS: u64 = 10_000;

fn tid(text: String) -> Result<TransferId, ApiError> {
    TransferId::new(&text).map_err(ApiError::internal)
}

/// The transfer that moves a payout's money into payout-pending.
fn reserve(p: &PayoutRecord) -> Result<Transfer, ApiError> {
    Ok(Transfer::posted(
        tid(format!("payout:{}", p.id))?,
        AccountId::node(p.node_key),
        AccountId::payout_pending(p.node_key),
        p.amount,
        Reason::Payout,
    ))
}

/// The transfer a final state calls for.
fn settle_transfer(p: &PayoutRecord, state: PayoutState) -> Result<Option<Transfer>, ApiError> {
    Ok(match state {
        PayoutState::Confirmed => Some(Transfer::posted(
            tid(format!("payout-confirm:{}", p.id))?,
            AccountId::payout_pending(p.node_key),
            AccountId::external("payout").map_err(ApiError::internal)?,
            p.amount,
            Reason::Payout,
        )),
        PayoutState::Failed => Some(Transfer::posted(
            tid(format!("payout-return:{}", p.id))?,
            AccountId::payout_pending(p.node_key),
            AccountId::node(p.node_key),
            p.amount,
            Reason::Refund,
        )),
        PayoutState::Pending | PayoutState::Sent => None,
    })
}

/// Starts a payout of `amount` (all available earnings when `None`) to `destination`.
pub async fn start(
    state: &AppState,
    node: NodeKeyId,
    amount: Option<Amount>,
    destination: String,
) -> Result<PayoutRecord, ApiError> {
    if state.config.payout_rail.is_none() {
        return Err(ApiError::NotFound(
            "no payout rail is configured on this hub".into(),
        ));
    }
    if destination.is_empty() || destination.chars().count() > MAX_DESTINATION_CHARS {
        return Err(ApiError::invalid(
            "destination",
            "destination must be 1 to 200 characters",
        ));
    }
    let earnings = state
        .ledger
        .balance(AccountId::node(node))
        .await
        .map_err(ApiError::internal)?
        .available();
    let amount = amount.unwrap_or(earnings);
    if amount.micros() <= 0 {
        return Err(ApiError::invalid(
            "amount",
            format!("nothing to redeem: {earnings} available"),
        ));
    }
    // Refused before any row is written: a request the earnings cannot cover leaves nothing behind
    // (only a redeem racing another for the same money can still end as a `failed` payout).
    if amount > earnings {
        return Err(ApiError::InsufficientBalance {
            available: earnings,
            needed: amount,
        });
    }
    let now = Timestamp::now();
    let mut payout = PayoutRecord {
        id: format!("po_{}", hex::encode(stacknet_protocol::Nonce::random().0)),
        node_key: node,
        amount,
        destination,
        state: PayoutState::Pending,
        attempts: 0,
        last_error: None,
        created_at: now,
        updated_at: now,
    };
    // The record first: a crash before the ledger transfer leaves a pending payout that `resume`
    // completes or fails, never money in payout-pending without a record.
    state
        .store
        .create_payout(payout.clone())
        .await
        .map_err(ApiError::internal)?;
    match state
        .ledger
        .create_transfers(vec![reserve(&payout)?.into()])
        .await
    {
        Ok(_) => {}
        Err(LedgerError::InsufficientFunds { available, .. }) => {
            finish(
                state,
                &payout,
                PayoutState::Failed,
                Some("insufficient earnings".into()),
            )
            .await?;
            return Err(ApiError::InsufficientBalance {
                available,
                needed: amount,
            });
        }
        Err(e) => return Err(ApiError::internal(e)),
    }
    spawn_delivery(state.clone(), payout.clone());
    payout.updated_at = Timestamp::now();
    Ok(payout)
}

/// Moves `payout` to a final state (only from pending or sent) and applies its transfer. False when
/// it was already final (nothing done).
async fn finish(
    state: &AppState,
    payout: &PayoutRecord,
    to: PayoutState,
    error: Option<String>,
) -> Result<bool, ApiError> {
    let changed = state
        .store
        .update_payout(
            payout.id.clone(),
            &[PayoutState::Pending, PayoutState::Sent],
            to,
            payout.attempts,
            error,
            Timestamp::now(),
        )
        .await
        .map_err(ApiError::internal)?;
    if changed {
        state.metrics.payout(to.as_str());
        apply_final(state, payout, to).await?;
    }
    Ok(changed)
}

/// Applies the transfer of the final state `to`, which the store already records. A ledger failing
/// underneath is retried with backoff here, then by [`repair_final`] in the background until it
/// works, so a confirmed or failed payout's money never waits in payout-pending for a restart.
async fn apply_final(state: &AppState, payout: &PayoutRecord, to: PayoutState) -> Result<(), ApiError> {
    match apply_final_once(state, payout, to).await {
        Err(Failure::Underneath(e)) => {
            tracing::warn!(payout = %payout.id, error = %e, "a payout's final transfer failed; repairing in the background");
            tokio::spawn(repair_final(state.clone(), payout.clone(), to));
            Ok(())
        }
        other => other.map_err(Failure::into_api),
    }
}

/// Why a final transfer was not applied.
#[derive(Debug)]
enum Failure {
    /// The ledger's store failed underneath: worth retrying unchanged.
    Underneath(LedgerError),
    /// Anything else: retrying the same way fails the same way.
    Other(ApiError),
}

impl Failure {
    fn into_api(self) -> ApiError {
        match self {
            Failure::Underneath(e) => ApiError::internal(e),
            Failure::Other(e) => e,
        }
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Self {
        if e.is_refusal() {
            Failure::Other(ApiError::internal(e))
        } else {
            Failure::Underneath(e)
        }
    }
}

async fn apply_final_once(state: &AppState, payout: &PayoutRecord, to: PayoutState) -> Result<(), Failure> {
    let reserved = state
        .ledger
        .transfer(tid(format!("payout:{}", payout.id)).map_err(Failure::Other)?)
        .await?;
    // A payout that failed before its money moved has nothing to return.
    if reserved.is_none() {
        return Ok(());
    }
    if let Some(t) = settle_transfer(payout, to).map_err(Failure::Other)? {
        crate::money::apply_retrying(&state.ledger, vec![t.into()]).await?;
    }
    Ok(())
}

/// Longest wait between two background attempts at a payout's final transfer.
pub const MAX_REPAIR_BACKOFF_MS: u64 = 30_000;

/// Retries a final transfer the ledger failed, with backoff, until it is applied (the transfer id
/// makes a late duplicate a replay), refused, or the hub shuts down (then [`resume`] at the next
/// start re-applies it).
async fn repair_final(state: AppState, payout: PayoutRecord, to: PayoutState) {
    let mut wait = Duration::from_millis(crate::money::REPAIR_INTERVAL_MS);
    loop {
        tokio::time::sleep(wait).await;
        match apply_final_once(&state, &payout, to).await {
            Ok(()) => {
                tracing::info!(payout = %payout.id, "a payout's final transfer was repaired");
                return;
            }
            Err(Failure::Underneath(e)) => {
                tracing::warn!(payout = %payout.id, error = %e, "a payout's final transfer still fails; retrying");
                wait = (wait * 2).min(Duration::from_millis(MAX_REPAIR_BACKOFF_MS));
            }
            Err(Failure::Other(e)) => {
                tracing::error!(payout = %payout.id, error = ?e, "a payout's final transfer was refused");
                return;
            }
        }
    }
}

fn spawn_delivery(state: AppState, payout: PayoutRecord) {
    tokio::spawn(async move {
        if let Err(e) = deliver(&state, payout).await {
            tracing::error!(error = %e, "payout delivery stopped");
        }
    });
}

/// The header that carries the payout id on every delivery: the rail pays one id at most once, so
/// a retry after a lost answer cannot pay twice.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// What one delivery attempt established.
#[derive(Debug)]
enum Delivery {
    /// The rail took it: `confirmed` when it says it paid at once.
    Accepted { confirmed: bool },
    /// The rail said no (a 4xx that is not about timing or a duplicate): nothing was paid.
    Refused(String),
    /// The request never reached the rail (no connection): nothing was paid.
    NotSent(String),
    /// The rail may have acted: a 5xx, a time-out or a broken answer after the request was sent.
    Unknown(String),
}

/// Classifies the answer to one delivery. Only a definite refusal, or a request that never left,
/// lets the money go back; anything the rail may have acted on waits for its callback.
async fn delivery_outcome(sent: Result<reqwest::Response, reqwest::Error>, url: &str) -> Delivery {
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => return Delivery::NotSent(delivery_error(e, url)),
        Err(e) => return Delivery::Unknown(delivery_error(e, url)),
    };
    let status = resp.status();
    if status.is_success() {
        // An answer that is not an acknowledgement is a delivery without a confirmation.
        let answer: PayoutAck = resp.json().await.unwrap_or_default();
        return Delivery::Accepted {
            confirmed: answer.is_confirmed(),
        };
    }
    let error = format!("the payment endpoint answered {status}");
    // 408 (time-out), 409 (the same key still in progress), 425 and 429 say nothing about payment.
    let retryable = matches!(status.as_u16(), 408 | 409 | 425 | 429);
    if status.is_client_error() && !retryable {
        Delivery::Refused(error)
    } else {
        Delivery::Unknown(error)
    }
}

/// Delivers the webhook with retries and backoff, each with the payout id as idempotency key, and
/// records the outcome. Once an attempt may have reached the rail the payout is `sent`, and only the
/// rail (a definite refusal, or its callback) can fail it; a callback that settled it first stops
/// the retries.
async fn deliver(state: &AppState, mut payout: PayoutRecord) -> Result<(), ApiError> {
    let Some(rail) = state.config.payout_rail.clone() else {
        return Ok(());
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(DELIVERY_TIMEOUT_MS))
        .build()
        .map_err(ApiError::internal)?;
    let body = serde_json::to_vec(&PayoutRequest {
        id: payout.id.clone(),
        node_key: payout.node_key,
        amount: payout.amount,
        destination: payout.destination.clone(),
        created_at: payout.created_at,
    })
    .map_err(ApiError::internal)?;
    let mut backoff = rail.first_backoff_ms;
    while payout.attempts < rail.max_attempts {
        payout.attempts += 1;
        let signature =
            webhook::sign(&rail.secret, webhook::now_secs(), &body).map_err(ApiError::internal)?;
        let sent = client
            .post(&rail.url)
            .header(webhook::SIGNATURE_HEADER, signature)
            .header(IDEMPOTENCY_HEADER, &payout.id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let error = match delivery_outcome(sent, &rail.url).await {
            Delivery::Accepted { confirmed: true } => {
                finish(state, &payout, PayoutState::Confirmed, None).await?;
                return Ok(());
            }
            Delivery::Accepted { confirmed: false } => {
                payout.state = PayoutState::Sent;
                record_attempt(state, &payout, None).await?;
                return Ok(());
            }
            Delivery::Refused(error) => {
                finish(state, &payout, PayoutState::Failed, Some(error)).await?;
                return Ok(());
            }
            Delivery::NotSent(error) => error,
            Delivery::Unknown(error) => {
                payout.state = PayoutState::Sent;
                error
            }
        };
        let rail_url = rail.shown_url();
        tracing::warn!(payout = %payout.id, attempt = payout.attempts, %rail_url, %error, "payout delivery failed");
        if !record_attempt(state, &payout, Some(error.clone())).await? {
            return Ok(());
        }
        if payout.attempts >= rail.max_attempts {
            return give_up(state, &payout, error).await;
        }
        tokio::time::sleep(Duration::from_millis(backoff)).await;
        backoff = backoff.saturating_mul(2);
    }
    give_up(state, &payout, "no delivery attempts left".into()).await
}

/// Records an attempt and the state it left `payout` in (`sent` once the rail may have it); false
/// when the payout is final already: a callback won, and the retries stop.
async fn record_attempt(
    state: &AppState,
    payout: &PayoutRecord,
    error: Option<String>,
) -> Result<bool, ApiError> {
    state
        .store
        .update_payout(
            payout.id.clone(),
            &[PayoutState::Pending, PayoutState::Sent],
            payout.state,
            payout.attempts,
            error,
            Timestamp::now(),
        )
        .await
        .map_err(ApiError::internal)
}

/// No attempts left. A payout no attempt could have reached the rail with fails (the money goes
/// back); one the rail may have acted on stays `sent` until its callback (see the module's docs).
async fn give_up(state: &AppState, payout: &PayoutRecord, error: String) -> Result<(), ApiError> {
    if payout.state == PayoutState::Pending {
        finish(state, payout, PayoutState::Failed, Some(error)).await?;
        return Ok(());
    }
    let error = format!(
        "{error}; no answer after {} attempts, and the payout may have been made: it waits for \
         the payment system's callback",
        payout.attempts
    );
    tracing::error!(payout = %payout.id, %error, "payout outcome unknown");
    state
        .store
        .update_payout(
            payout.id.clone(),
            &[PayoutState::Sent],
            PayoutState::Sent,
            payout.attempts,
            Some(error),
            Timestamp::now(),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Why a delivery could not be sent, as stored in `last_error` and shown in the node's statement:
/// without the rail's URL, whose userinfo, path or query may hold the payment system's credentials.
fn delivery_error(e: reqwest::Error, url: &str) -> String {
    let e = e.without_url();
    let mut text = format!("cannot reach the payment endpoint: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    redact_url_secrets(text, url)
}

/// `text` with every credential-bearing part of `url` (the URL itself, its password and its query)
/// replaced, in case a cause ever quotes them.
fn redact_url_secrets(mut text: String, url: &str) -> String {
    let parsed = reqwest::Url::parse(url).ok();
    let password = parsed.as_ref().and_then(|u| u.password().map(str::to_owned));
    let query = parsed.as_ref().and_then(|u| u.query().map(str::to_owned));
    for secret in [Some(url.to_owned()), password, query].into_iter().flatten() {
        if !secret.is_empty() {
            text = text.replace(&secret, "<redacted>");
        }
    }
    text
}

/// At start: completes what a crash interrupted. Pending payouts get their money reserved (the
/// same transfer id) and their delivery restarted; final ones get their final transfer re-applied
/// (a no-op where it was written).
pub fn resume(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        for s in [PayoutState::Confirmed, PayoutState::Failed, PayoutState::Pending] {
            let payouts = match state.store.payouts_in(s).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read payouts to resume");
                    return;
                }
            };
            for p in payouts {
                let outcome = match s {
                    PayoutState::Pending => resume_pending(&state, p).await,
                    _ => apply_final(&state, &p, s).await,
                };
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "cannot resume a payout");
                }
            }
        }
    });
}

async fn resume_pending(state: &AppState, p: PayoutRecord) -> Result<(), ApiError> {
    match state.ledger.create_transfers(vec![reserve(&p)?.into()]).await {
        Ok(_) => {
            spawn_delivery(state.clone(), p);
            Ok(())
        }
        Err(LedgerError::InsufficientFunds { .. }) => {
            finish(
                state,
                &p,
                PayoutState::Failed,
                Some("insufficient earnings".into()),
            )
            .await?;
            Ok(())
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `POST /stacknet/v1/webhooks/payouts`: the payment system confirms or fails a payout (signed
/// with the rail's secret).
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<PayoutCallbackAnswer>, ApiError> {
    let secret = state.config.payout_rail.as_ref().map(|r| r.secret.as_str());
    webhook::check(secret, &headers, &body)?;
    let cb: Callback = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let to = match cb.status.as_str() {
        "confirmed" => PayoutState::Confirmed,
        "failed" => PayoutState::Failed,
        other => {
            return Err(ApiError::invalid(
                "status",
                format!("status must be `confirmed` or `failed`, not {other:?}"),
            ))
        }
    };
    let payout = state
        .store
        .payout(cb.id.clone())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("payout {}", cb.id)))?;
    let changed = finish(&state, &payout, to, cb.reason).await?;
    let now = state
        .store
        .payout(cb.id)
        .await
        .map_err(ApiError::internal)?
        .map_or(payout.state, |p| p.state);
    Ok(Json(PayoutCallbackAnswer {
        id: payout.id,
        state: now,
        changed,
    }))
}
