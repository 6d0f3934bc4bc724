//! HMAC-signed webhooks, both ways: top-ups from the payment provider, payout requests to the
//! operators' payment system and its confirmations back.
//!
//! Signature header (`Stacknet-Signature`): `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A signature older or newer than [`SIGNATURE_TOLERANCE_SECS`] is refused, so a captured request
//! cannot be replayed later; within that window the event id makes a replay a no-op (a top-up's id
//! is its ledger transfer id, a payout's state only moves forward).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use hmac::{Hmac, Mac};
use sha2::Sha256;
pub use stacknet_api::types::PaymentEvent;
use stacknet_api::types::{PaymentAnswer, TopUp};
use stacknet_ledger::AccountId;

use crate::admin::credit;
use crate::error::ApiError;
use crate::AppState;

pub const SIGNATURE_HEADER: &str = "stacknet-signature";
/// How far a signature's time may be from the receiver's clock.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// Longest event id.
pub const MAX_EVENT_ID_BYTES: usize = 100;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, t: i64, body: &[u8]) -> Result<HmacSha256, SignatureError> {
    // HMAC takes keys of any length; the error exists only in the trait's signature.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Key)?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The header value signing `body` at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> Result<String, SignatureError> {
    Ok(format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body)?.finalize().into_bytes())
    ))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Stacknet-Signature header")]
    Missing,
    #[error("malformed Stacknet-Signature header; expected t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error("signature time {t} is more than {SIGNATURE_TOLERANCE_SECS} s from now ({now})")]
    Stale { t: i64, now: i64 },
    #[error("signature does not match the body")]
    Mismatch,
    #[error("the webhook secret cannot be used as an HMAC key")]
    Key,
}

/// Checks a `Stacknet-Signature` header over `body` at unix time `now`, in constant time.
pub fn verify(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    // `abs_diff` cannot overflow: `t` is whatever the sender wrote, `i64::MIN` included.
    if now.abs_diff(t) > SIGNATURE_TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale { t, now });
    }
    mac(secret, t, body)?
        .verify_slice(&v1)
        .map_err(|_| SignatureError::Mismatch)
}

pub fn now_secs() -> i64 {
    stacknet_protocol::Timestamp::now().unix_ms() / 1000
}

/// Checks the signature of an incoming webhook with `secret` (`None`: the webhook is off).
pub fn check(secret: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let secret =
        secret.ok_or_else(|| ApiError::NotFound("this webhook is not configured on this hub".into()))?;
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    verify(secret, header, body, now_secs()).map_err(|e| ApiError::BadSignature(e.to_string()))
}

/// `POST /stacknet/v1/webhooks/payments`: a top-up paid at the payment provider.
pub async fn payments(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<PaymentAnswer>, ApiError> {
    check(state.config.payments_webhook_secret.as_deref(), &headers, &body)?;
    let event: PaymentEvent =
        serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    if event.id.is_empty() || event.id.len() > MAX_EVENT_ID_BYTES {
        return Err(ApiError::invalid("id", "id must be 1 to 100 characters"));
    }
    if event.kind != "topup" {
        return Ok(Json(PaymentAnswer::Ignored {
            id: event.id,
            ignored: true,
        }));
    }
    let stack = event
        .stack
        .ok_or_else(|| ApiError::invalid("stack", "a topup event names the stack"))?;
    let amount = event
        .amount
        .ok_or_else(|| ApiError::invalid("amount", "a topup event carries an amount"))?;
    let known = state
        .store
        .stacks()
        .await
        .map_err(ApiError::internal)?
        .iter()
        .any(|s| s.id == stack);
    if !known {
        return Err(ApiError::NotFound(format!("stack {stack}")));
    }
    let answer = credit(
        &state,
        AccountId::stack(stack),
        TopUp {
            amount,
            id: Some(event.id),
        },
        "webhook",
    )
    .await?;
    Ok(Json(PaymentAnswer::Credited(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering_and_staleness() {
        let body = br#"{"id":"evt_1"}"#;
        let h = sign("s3cret", 1_000, body).unwrap();
        assert_eq!(verify("s3cret", Some(&h), body, 1_100), Ok(()));
        assert_eq!(
            verify("other", Some(&h), body, 1_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", Some(&h), b"{}", 1_100),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify("s3cret", Some(&h), body, 2_000),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(verify("s3cret", None, body, 1_000), Err(SignatureError::Missing));
        assert_eq!(
            verify("s3cret", Some("v1=zz"), body, 1_000),
            Err(SignatureError::Malformed)
        );
    }
}
