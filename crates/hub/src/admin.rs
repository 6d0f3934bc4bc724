//! The admin API (`/stacknet/v1/admin/...`, admin token as bearer): Stacks and their API keys,
//! model prices, top-ups (of Stacks, the treasury and Node Keys' earnings).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use stacknet_api::types::NodeTopUp;
use stacknet_api::types::{
    Balance, NewKey, NewKeyRequest, Price, PriceList, ReferralShare, RevokedKey, Stack, StackList,
    TopUpAnswer,
};
/// The admin API's request bodies, kept here under their old paths for the hub's own callers.
pub use stacknet_api::types::{NewStack, SetPrice, TopUp};
use stacknet_ledger::{AccountId, LedgerError, Reason, Transfer, TransferId};
use stacknet_protocol::contract::PriceTerms;
use stacknet_protocol::{Amount, NodeKeyId, StackId, Timestamp};

use crate::attribution::{self, ModelParties};
use crate::auth::{self, bearer, hash_key};
use crate::error::ApiError;
use crate::store::{ApiKeyRecord, DocRecord, KeyRole, ModelPrice, StackRecord};
use crate::AppState;

/// The longest Stack name.
pub const MAX_STACK_NAME_CHARS: usize = 200;

pub(crate) fn check_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = bearer(headers).ok_or(ApiError::InvalidAdminToken)?;
    // Compare hashes, so the time taken says nothing about how much of the token matched.
    if hash_key(given) == hash_key(&state.config.admin_token) {
        Ok(())
    } else {
        Err(ApiError::InvalidAdminToken)
    }
}

pub async fn create_stack(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Stack>, ApiError> {
    check_admin(&state, &headers)?;
    let req: NewStack = json_body(&body)?;
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_STACK_NAME_CHARS {
        return Err(ApiError::invalid("name", "name must be 1 to 200 characters"));
    }
    // An unknown code is refused before the Stack exists.
    if let Some(code) = &req.referral_code {
        attribution::http::referrer_of(&state, code, "referral_code")?;
    }
    let stack = StackRecord {
        id: StackId::random(),
        name,
        created_at: Timestamp::now(),
    };
    state
        .store
        .create_stack(stack.clone())
        .await
        .map_err(ApiError::internal)?;
    if let Some(code) = &req.referral_code {
        attribution::http::bind_referrer(
            &state,
            attribution::STACK_REFERRER,
            stack.id.to_string(),
            code,
            "referral_code",
        )
        .await?;
    }
    Ok(Json(stack_json(&state, stack)))
}

fn stack_json(state: &AppState, s: StackRecord) -> Stack {
    Stack {
        referred_by: state.attribution.stack_referrer(s.id).map(|r| r.stack),
        id: s.id,
        name: s.name,
        created_at: s.created_at,
    }
}

pub async fn list_stacks(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StackList>, ApiError> {
    check_admin(&state, &headers)?;
    let stacks = state.store.stacks().await.map_err(ApiError::internal)?;
    Ok(Json(StackList::new(
        stacks.into_iter().map(|s| stack_json(&state, s)).collect(),
    )))
}

/// Creates an API key for a Stack (body, optional: `{"role": "owner"}`; a `client` key without
/// it); the key is in this response and nowhere else, ever.
pub async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stack): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<NewKey>, ApiError> {
    check_admin(&state, &headers)?;
    let stack: StackId = stack
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("stack", e.to_string()))?;
    let req: NewKeyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        NewKeyRequest::default()
    } else {
        json_body(&body)?
    };
    let (api_key, record) = issue_key(&state, stack, req.role).await?;
    Ok(Json(NewKey {
        stack,
        role: record.role,
        api_key,
        prefix: record.prefix,
        created_at: record.created_at,
    }))
}

/// Creates and stores a key, and makes it usable at once.
pub async fn issue_key(
    state: &AppState,
    stack: StackId,
    role: KeyRole,
) -> Result<(String, ApiKeyRecord), ApiError> {
    known_stack(state, stack).await?;
    let key = auth::new_api_key();
    let record = ApiKeyRecord {
        hash: hash_key(&key),
        prefix: key.chars().take(auth::API_KEY_SHOWN_CHARS).collect(),
        stack,
        created_at: Timestamp::now(),
        revoked_at: None,
        role,
    };
    state
        .store
        .create_api_key(record.clone())
        .await
        .map_err(ApiError::internal)?;
    state.api_keys.insert(&record);
    Ok((key, record))
}

/// `DELETE /stacknet/v1/admin/keys/{prefix}`: revokes the live key listed as `prefix`. This hub
/// refuses it at once; other hubs on the same database within a refresh ([`crate::refresh`]).
pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(prefix): Path<String>,
) -> Result<Json<RevokedKey>, ApiError> {
    check_admin(&state, &headers)?;
    let at = Timestamp::now();
    let revoked = state
        .store
        .revoke_key(prefix.clone(), at)
        .await
        .map_err(ApiError::internal)?;
    state.api_keys.apply(&revoked);
    let first = revoked
        .first()
        .ok_or_else(|| ApiError::NotFound(format!("API key {prefix}")))?;
    Ok(Json(RevokedKey {
        stack: first.stack,
        prefix: first.prefix.clone(),
        created_at: first.created_at,
        revoked_at: at,
    }))
}

async fn known_stack(state: &AppState, stack: StackId) -> Result<(), ApiError> {
    let known = state
        .store
        .stacks()
        .await
        .map_err(ApiError::internal)?
        .iter()
        .any(|s| s.id == stack);
    if known {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("stack {stack}")))
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// `POST /stacknet/v1/admin/stacks/{id}/topup`: credits a Stack's balance from `external:topup`.
pub async fn topup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stack): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TopUpAnswer>, ApiError> {
    check_admin(&state, &headers)?;
    let stack: StackId = stack
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("stack", e.to_string()))?;
    let req: TopUp = json_body(&body)?;
    known_stack(&state, stack).await?;
    Ok(Json(credit(&state, AccountId::stack(stack), req, "admin").await?))
}

/// `POST /stacknet/v1/admin/treasury/topup`: funds the protocol treasury (which pays warm bonuses).
pub async fn topup_treasury(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<TopUpAnswer>, ApiError> {
    check_admin(&state, &headers)?;
    let req: TopUp = json_body(&body)?;
    Ok(Json(credit(&state, AccountId::treasury(), req, "admin").await?))
}

/// `POST /stacknet/v1/admin/nodes/{id}/topup`: credits a Node Key's earnings from `external:topup`
/// (so it can bond), applied once per `reference`.
pub async fn topup_node(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(node): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TopUpAnswer>, ApiError> {
    check_admin(&state, &headers)?;
    let node: NodeKeyId = node
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("id", e.to_string()))?;
    let req: NodeTopUp = json_body(&body)?;
    let topup = TopUp {
        amount: req.amount,
        id: Some(req.reference),
    };
    Ok(Json(credit(&state, AccountId::node(node), topup, "node").await?))
}

/// Moves `req.amount` from the outside world into `account`, idempotently by id.
pub(crate) async fn credit(
    state: &AppState,
    account: AccountId,
    req: TopUp,
    source: &str,
) -> Result<TopUpAnswer, ApiError> {
    let world = AccountId::external("topup").map_err(ApiError::internal)?;
    credit_from(state, world, account, req, source).await
}

/// As [`credit`], through the outside world's door `world` (`external:...`).
pub(crate) async fn credit_from(
    state: &AppState,
    world: AccountId,
    account: AccountId,
    req: TopUp,
    source: &str,
) -> Result<TopUpAnswer, ApiError> {
    if req.amount.micros() <= 0 {
        return Err(ApiError::invalid(
            "amount",
            "amount must be more than zero micro-credits",
        ));
    }
    let event = match req.id {
        Some(id) => id,
        None => stacknet_protocol::ContractId::random().to_string(),
    };
    let transfer_id = TransferId::new(&format!("topup:{source}:{event}"))
        .map_err(|_| ApiError::invalid("id", "id must be 1 to 100 characters of A-Z a-z 0-9 _ - . :"))?;
    let transfer = Transfer::posted(
        transfer_id.clone(),
        world,
        account.clone(),
        req.amount,
        Reason::Topup,
    );
    let outcome = state
        .ledger
        .create_transfers(vec![transfer.into()])
        .await
        .map_err(|e| match e {
            LedgerError::IdReused { field, .. } => ApiError::Conflict(format!(
                "top-up {event} was applied before with a different {field}"
            )),
            // The amount is the caller's: too much is their error, not the hub's.
            LedgerError::Overflow { account, .. } => ApiError::invalid(
                "amount",
                format!("this top-up would take the balance of {account} past the largest amount"),
            ),
            e => ApiError::internal(e),
        })?;
    let replayed = outcome.first().is_some_and(|o| o.replayed);
    let referral = referral_share(state, &account, &transfer_id, req.amount).await?;
    let balance = state
        .ledger
        .balance(account.clone())
        .await
        .map_err(ApiError::internal)?;
    Ok(TopUpAnswer {
        account: account.to_string(),
        transfer: transfer_id.to_string(),
        amount: req.amount,
        replayed,
        balance: balance_json(&balance),
        referral,
    })
}

/// Pays a referred Stack's referrer its share of a top-up, from the treasury, under an id derived
/// from the top-up's (so a top-up sent again pays it at most once, and retries one the treasury
/// could not cover before). Other accounts, and Stacks nobody referred, have no share.
async fn referral_share(
    state: &AppState,
    account: &AccountId,
    topup: &TransferId,
    amount: Amount,
) -> Result<Option<ReferralShare>, ApiError> {
    let Some(referred) = account.stack_id() else {
        return Ok(None);
    };
    let Some(referrer) = state.attribution.stack_referrer(referred) else {
        return Ok(None);
    };
    let share = attribution::topup_share(amount.micros(), state.config.referral_topup_bps);
    if share <= 0 {
        return Ok(None);
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(topup.to_string().as_bytes());
    let id =
        TransferId::new(&format!("referral:{}", hex::encode(&digest[..16]))).map_err(ApiError::internal)?;
    let transfer = Transfer::posted(
        id.clone(),
        AccountId::treasury(),
        AccountId::stack(referrer.stack),
        Amount::from_micros(share),
        Reason::Referral,
    );
    let paid = match state.ledger.create_transfers(vec![transfer.into()]).await {
        Ok(_) => true,
        // A short treasury owes it: the same top-up sent again retries it.
        Err(LedgerError::InsufficientFunds { .. }) => false,
        Err(e) => return Err(ApiError::internal(e)),
    };
    Ok(Some(ReferralShare {
        stack: referrer.stack,
        amount: Amount::from_micros(share),
        transfer: id.to_string(),
        paid,
    }))
}

/// A ledger balance as the API shows it: `held` is the open holds on the account.
pub(crate) fn balance_json(b: &stacknet_ledger::Balance) -> Balance {
    Balance {
        posted: b.posted,
        held: b.debits_pending,
        available: b.available(),
    }
}

/// The highest price the admin API takes, in micro-credits (a billion credits per million tokens, per
/// request or per unit). A larger one is a typo, not a price, and refusing it keeps every cost
/// computed from prices far from the limits of the arithmetic.
pub const MAX_PRICE_MICROS: i64 = 1_000_000_000_000_000;

/// `POST /stacknet/v1/admin/prices`: sets a model's price; contracts signed from now on carry it.
pub async fn set_price(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Price>, ApiError> {
    check_admin(&state, &headers)?;
    let req: SetPrice = json_body(&body)?;
    if req.model.is_empty() || req.model.len() > stacknet_api::request::MAX_MODEL_NAME_BYTES {
        return Err(ApiError::invalid("model", "model must be 1 to 256 bytes"));
    }
    let amounts = [
        ("input_per_mtok", req.input_per_mtok),
        ("output_per_mtok", req.output_per_mtok),
        ("per_request", req.per_request),
        ("per_unit", req.per_unit),
    ];
    if let Some((field, _)) = amounts.iter().find(|(_, a)| a.is_some_and(|a| a.micros() < 0)) {
        return Err(ApiError::invalid(field, format!("{field} must not be negative")));
    }
    let too_high = |a: &Option<Amount>| a.is_some_and(|a| a.micros() > MAX_PRICE_MICROS);
    if let Some((field, _)) = amounts.iter().find(|(_, a)| too_high(a)) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be at most {MAX_PRICE_MICROS} micro-credits"),
        ));
    }
    let price = PriceTerms {
        input_per_mtok: req.input_per_mtok.unwrap_or(Amount::ZERO),
        output_per_mtok: req.output_per_mtok.unwrap_or(Amount::ZERO),
        per_request: req.per_request.unwrap_or(Amount::ZERO),
        per_unit: req.per_unit.unwrap_or(Amount::ZERO),
    };
    for (field, party) in [
        ("model_provider", req.model_provider),
        ("data_provider", req.data_provider),
    ] {
        if let Some(stack) = party {
            known_stack(&state, stack).await.map_err(|_| {
                ApiError::invalid(field, format!("{field} {stack} is not a Stack of this hub"))
            })?;
        }
    }
    let record = ModelPrice {
        model: req.model.clone(),
        price: price.clone(),
        updated_at: Timestamp::now(),
    };
    // The catalog's parties are written before the price: a crash between the two leaves the new
    // parties with the old price, and the same request sent again completes it.
    let parties = ModelParties {
        model_provider: req.model_provider,
        data_provider: req.data_provider,
    };
    let (version, current) = state.attribution.model_parties(&req.model);
    if current != parties {
        let doc = DocRecord {
            kind: attribution::MODEL.to_owned(),
            id: req.model.clone(),
            version: version + 1,
            stack: None,
            json: serde_json::to_string(&parties).map_err(ApiError::internal)?,
            created_at: record.updated_at,
        };
        state.attribution.write(&*state.store, doc).await?;
    }
    state
        .store
        .set_price(record.clone())
        .await
        .map_err(ApiError::internal)?;
    state.prices.set(req.model, price);
    Ok(Json(price_json(&state, &record)))
}

fn price_json(state: &AppState, p: &ModelPrice) -> Price {
    let (_, parties) = state.attribution.model_parties(&p.model);
    Price {
        model: p.model.clone(),
        price: p.price.clone(),
        updated_at: p.updated_at,
        model_provider: parties.model_provider,
        data_provider: parties.data_provider,
    }
}

/// `GET /stacknet/v1/admin/prices`: every priced model, and the default for the others.
pub async fn list_prices(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<PriceList>, ApiError> {
    check_admin(&state, &headers)?;
    let prices = state.store.prices().await.map_err(ApiError::internal)?;
    Ok(Json(PriceList::new(
        prices.iter().map(|p| price_json(&state, p)).collect(),
        state.prices.default_price().clone(),
    )))
}
