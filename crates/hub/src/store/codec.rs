//! The row layout both implementations share: text, hashes and counts as stored, decoded into
//! records with a `Corrupt` error naming the table when a row does not parse.

use std::fmt;

use stacknet_protocol::Amount;

use super::records::{LoggedPaperwork, ModelPrice, PaperworkRecord, PayoutRecord, PayoutState};
use super::traits::StoreError;

pub(crate) fn parse<T: std::str::FromStr>(table: &'static str, s: &str) -> Result<T, StoreError>
where
    T::Err: fmt::Display,
{
    s.parse().map_err(|e: T::Err| StoreError::Corrupt {
        table,
        detail: format!("{s:?}: {e}"),
    })
}

/// A suspension's time, stored as Unix milliseconds.
pub(crate) fn suspended_at(ms: i64) -> Result<stacknet_protocol::Timestamp, StoreError> {
    stacknet_protocol::Timestamp::from_unix_ms(ms).map_err(|e| StoreError::Corrupt {
        table: "validation_suspended",
        detail: format!("{ms}: {e}"),
    })
}

pub(crate) fn hash32(table: &'static str, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("hash of {} bytes", bytes.len()),
    })
}

pub(crate) fn to_u64(table: &'static str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("negative count {n}"),
    })
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn price_from_json(model: String, terms: &str, at: &str) -> Result<ModelPrice, StoreError> {
    Ok(ModelPrice {
        model,
        price: serde_json::from_str(terms).map_err(|e| StoreError::Corrupt {
            table: "prices",
            detail: e.to_string(),
        })?,
        updated_at: parse("prices", at)?,
    })
}

pub(crate) fn price_json(price: &ModelPrice) -> String {
    // PriceTerms holds only amounts (strings): serialising it cannot fail.
    serde_json::to_string(&price.price).unwrap_or_default()
}

/// A `paperwork_log` row (`idx, id, contract, node_key, json, leaf_hash, accepted_at, hold, cost,
/// captured, filed_at`), as both stores read it.
pub(crate) struct LogRow {
    pub idx: i64,
    pub id: String,
    pub contract: String,
    pub node_key: String,
    pub json: String,
    pub leaf: Vec<u8>,
    pub accepted_at: String,
    pub hold: Option<String>,
    pub cost: i64,
    pub captured: bool,
    pub filed_at: Option<String>,
}

pub(crate) fn logged(row: LogRow) -> Result<LoggedPaperwork, StoreError> {
    let LogRow {
        idx,
        id,
        contract,
        node_key,
        json,
        leaf,
        accepted_at: at,
        hold,
        cost,
        captured,
        filed_at: filed,
    } = row;
    const T: &str = "paperwork_log";
    Ok(LoggedPaperwork {
        index: to_u64(T, idx)?,
        record: PaperworkRecord {
            id: parse(T, &id)?,
            contract,
            node_key: parse(T, &node_key)?,
            json,
            leaf_hash: hash32(T, &leaf)?,
            accepted_at: parse(T, &at)?,
            hold,
            cost: Amount::from_micros(cost),
        },
        captured,
        filed_at: filed.map(|f| parse(T, &f)).transpose()?,
    })
}

pub(crate) type PayoutRow = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<String>,
    String,
    String,
);

pub(crate) fn payout_from(
    (id, node, amount, destination, state, attempts, last_error, created, updated): PayoutRow,
) -> Result<PayoutRecord, StoreError> {
    const T: &str = "payouts";
    Ok(PayoutRecord {
        id,
        node_key: parse(T, &node)?,
        amount: Amount::from_micros(amount),
        destination,
        state: PayoutState::parse(&state).ok_or_else(|| StoreError::Corrupt {
            table: T,
            detail: format!("state {state:?}"),
        })?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error,
        created_at: parse(T, &created)?,
        updated_at: parse(T, &updated)?,
    })
}

/// A kept task's material as one JSON column: `{request, output, tokens}`.
pub(crate) fn material_json(task: &super::records::KeptTask) -> String {
    serde_json::json!({"request": task.request, "output": task.output, "tokens": task.tokens}).to_string()
}

pub(crate) fn kept_from(
    paperwork: &str,
    node_key: &str,
    accepted_at: i64,
    material: &str,
) -> Result<super::records::KeptTask, StoreError> {
    const TABLE: &str = "validation_kept";
    let mut m: serde_json::Value = parse_json(TABLE, material)?;
    let tokens = serde_json::from_value(m["tokens"].take()).map_err(|e| StoreError::Corrupt {
        table: TABLE,
        detail: e.to_string(),
    })?;
    Ok(super::records::KeptTask {
        paperwork: parse(TABLE, paperwork)?,
        node_key: parse(TABLE, node_key)?,
        accepted_at: timestamp(TABLE, accepted_at)?,
        request: m["request"].take(),
        output: m["output"].take(),
        tokens,
    })
}

pub(crate) fn case_from(
    paperwork: &str,
    node_key: &str,
    open: bool,
    canary: bool,
    json: String,
) -> Result<super::records::CaseRecord, StoreError> {
    Ok(super::records::CaseRecord {
        paperwork: parse("validation_cases", paperwork)?,
        node_key: parse("validation_cases", node_key)?,
        open,
        canary,
        json,
    })
}

pub(crate) fn validator_from(
    key: &str,
    handed: i64,
    since: i64,
) -> Result<super::records::ValidatorRecord, StoreError> {
    const TABLE: &str = "validation_validators";
    Ok(super::records::ValidatorRecord {
        key: stacknet_protocol::PublicKey::from_tagged(key).map_err(|e| StoreError::Corrupt {
            table: TABLE,
            detail: e.to_string(),
        })?,
        handed: to_u64(TABLE, handed)?,
        since_canary: to_u64(TABLE, since)?,
    })
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

pub(crate) fn timestamp(table: &'static str, ms: i64) -> Result<stacknet_protocol::Timestamp, StoreError> {
    stacknet_protocol::Timestamp::from_unix_ms(ms).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

/// An `unbondings` row: id, node_key, amount, created_at, withdrawable_at, withdrawn_at.
pub(crate) type UnbondingRow = (String, String, i64, String, String, Option<String>);

pub(crate) fn unbonding_from(
    (id, node, amount, created, withdrawable, withdrawn): UnbondingRow,
) -> Result<crate::store::records::UnbondingRecord, StoreError> {
    Ok(crate::store::records::UnbondingRecord {
        id,
        node_key: parse("unbondings", &node)?,
        amount: stacknet_protocol::Amount::from_micros(amount),
        created_at: parse("unbondings", &created)?,
        withdrawable_at: parse("unbondings", &withdrawable)?,
        withdrawn_at: withdrawn.map(|t| parse("unbondings", &t)).transpose()?,
    })
}
