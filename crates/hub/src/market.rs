//! The Node Key market: a Node Key id changes hands, its bond and unfiled earnings with it.
//!
//! - **List** (`POST /stacknet/v1/market/keys`, a `list` request signed by the key in force): a price
//!   and the Stack that receives it. The signed request is the seller's offer; the listing records
//!   it with the sale's sequence number (one more than the id's bindings).
//! - **Buy** (`POST /stacknet/v1/market/keys/{id}/buy`, an owner key of the buying Stack): the body
//!   is a [`KeyBinding`] signed by the buyer's new key, naming the offer's digest. The hub checks the
//!   rebinding as any verifier would ([`Rebinding::check`]), then, in this order: records the sale
//!   (a `sale` document), moves the money in one ledger batch (the price, less the transfer fee, to
//!   the seller's Stack; the fee's halves to the Stack that originated the key, its referrer, or the
//!   treasury, and to the treasury; the earnings the seller had filed, to the seller's Stack), writes
//!   the binding (version = the sequence number: a second binding of one sale cannot be written),
//!   and closes the listing. The transfer ids derive from the id and the sequence number, so a
//!   second buyer's batch is refused by the ledger itself (the first claimed those ids) and a
//!   retried purchase moves nothing twice. A crash after the money moved and before the binding was
//!   written is finished at the next start ([`recover`]).
//! - A key is not sold (nor listed) while a slash may be pending against it (a validation case in
//!   committee, or a conviction whose money has not all moved), while it is unbonding, or while it
//!   is suspended; a key is sold once per listing (a sold listing is closed).
//! - After the sale the id's old key operates nothing: the hub refuses its hello, its node requests
//!   and its filings, and its connection, if any, gets no more tasks. The new key runs the id (the
//!   hub knows which id a bound key operates: `stacknet node` needs no flag), files its later
//!   paperwork, and the paperwork signed before the sale stays valid: verifiers check a paperwork
//!   against the key in force when its contract was signed ([`stacknet_protocol::binding`]).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use sha2::{Digest, Sha256};
use stacknet_api::types::{BuyKey, KeyState, Listing, ListingList, Sale};
use stacknet_ledger::{AccountId, Entry, LedgerError, Reason, Transfer, TransferId};
use stacknet_protocol::binding::Rebinding;
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::{Amount, NodeKeyId, PublicKey, Signed, StackId, Timestamp};

use crate::attribution::{ListingDoc, ListingState, BINDING, LISTING, SALE};
use crate::error::ApiError;
use crate::settle::{check_node_request, signed_body, REQUEST_CLOCK_TOLERANCE_MS};
use crate::store::DocRecord;
use crate::AppState;

/// The transfer fee by default: 5% of the price, half to the key's originator, half to the protocol.
pub const DEFAULT_KEY_TRANSFER_FEE_BPS: u32 = 500;

/// `POST /stacknet/v1/market/keys`: a signed `list` or `unlist` request.
pub async fn offer(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Listing>, ApiError> {
    let req: Signed<NodeRequest> = signed_body(&body)?;
    let node = check_node_request(&state, &req).await?;
    match &req.body.action {
        NodeAction::List { price, proceeds } => list(&state, node, *price, *proceeds, req.clone()).await,
        NodeAction::Unlist => unlist(&state, node).await,
        _ => Err(ApiError::invalid(
            "action",
            "this endpoint takes a `list` or `unlist` request",
        )),
    }
}

async fn list(
    state: &AppState,
    node: NodeKeyId,
    price: Amount,
    proceeds: StackId,
    offer: Signed<NodeRequest>,
) -> Result<Json<Listing>, ApiError> {
    if price.micros() <= 0 || price.micros() > crate::admin::MAX_PRICE_MICROS {
        return Err(ApiError::invalid(
            "price",
            format!(
                "price must be 1 to {} micro-credits",
                crate::admin::MAX_PRICE_MICROS
            ),
        ));
    }
    let stacks = state.store.stacks().await?;
    if !stacks.iter().any(|s| s.id == proceeds) {
        return Err(ApiError::invalid(
            "proceeds",
            format!("{proceeds} is not a Stack of this hub"),
        ));
    }
    // The offer is checked on its own by every verifier: it must name the id it sells.
    let named = offer
        .body
        .acts_for
        .unwrap_or_else(|| offer.body.node_key.node_key_id());
    if named != node {
        return Err(ApiError::invalid(
            "acts_for",
            format!("this key operates {node}, which it bought: the offer must name it in acts_for (`stacknet market list --node {node}`)"),
        ));
    }
    let current = state.attribution.listing(node);
    if let Some((_, l)) = &current {
        if l.state == ListingState::Open {
            return Err(ApiError::Conflict(format!(
                "{node} is listed already: unlist it first"
            )));
        }
    }
    sellable(state, node).await?;
    let doc = ListingDoc {
        offer,
        seq: state.attribution.chain(node).len() as u64 + 1,
        state: ListingState::Open,
    };
    let version = current.map_or(1, |(v, _)| v + 1);
    write_listing(state, node, version, &doc).await?;
    Ok(Json(listing_json(node, &doc)?))
}

async fn unlist(state: &AppState, node: NodeKeyId) -> Result<Json<Listing>, ApiError> {
    let (version, mut doc) = state
        .attribution
        .listing(node)
        .filter(|(_, l)| l.state == ListingState::Open)
        .ok_or_else(|| ApiError::NotFound(format!("an open listing of {node}")))?;
    doc.state = ListingState::Withdrawn;
    write_listing(state, node, version + 1, &doc).await?;
    Ok(Json(listing_json(node, &doc)?))
}

async fn write_listing(
    state: &AppState,
    node: NodeKeyId,
    version: u64,
    doc: &ListingDoc,
) -> Result<(), ApiError> {
    let record = DocRecord {
        kind: LISTING.to_owned(),
        id: node.to_string(),
        version,
        stack: None,
        json: serde_json::to_string(doc).map_err(ApiError::internal)?,
        created_at: Timestamp::now(),
    };
    state.attribution.write(&*state.store, record).await
}

/// Refused (409) while a slash may be pending, while unbonding, while suspended; otherwise the
/// earnings the key has filed (what its stake status read), which a sale pays to the seller.
async fn sellable(state: &AppState, node: NodeKeyId) -> Result<Amount, ApiError> {
    if let Some(paperwork) = crate::validate::slash_pending(state, node).await? {
        return Err(ApiError::Conflict(format!(
            "{node} may be slashed (the validation of its paperwork {paperwork} is in committee or its conviction is settling): it cannot change hands until that is decided"
        )));
    }
    let stake = crate::stake::status(state, node).await?;
    if !stake.unbonding.is_empty() {
        return Err(ApiError::Conflict(format!(
            "{node} is unbonding: it cannot change hands until its unbonding stake is withdrawn"
        )));
    }
    if stake.suspended {
        return Err(ApiError::Conflict(format!(
            "{node} is suspended after a conviction"
        )));
    }
    Ok(stake.earnings)
}

fn listing_json(node: NodeKeyId, doc: &ListingDoc) -> Result<Listing, ApiError> {
    let NodeAction::List { price, proceeds } = doc.offer.body.action else {
        return Err(ApiError::internal(
            "a listing whose offer is not a `list` request",
        ));
    };
    Ok(Listing {
        node,
        price,
        proceeds,
        seq: doc.seq,
        seller_key: doc.offer.body.node_key,
        offer_sha256: doc.offer.digest().map_err(ApiError::internal)?,
        offer: doc.offer.clone(),
        state: match doc.state {
            ListingState::Open => "open",
            ListingState::Withdrawn => "withdrawn",
            ListingState::Sold => "sold",
        }
        .to_owned(),
        listed_at: doc.offer.body.created_at,
    })
}

/// `GET /stacknet/v1/market/keys`: the open listings.
pub async fn listings(State(state): State<AppState>) -> Result<Json<ListingList>, ApiError> {
    let data = state
        .attribution
        .open_listings()
        .into_iter()
        .map(|(node, doc)| listing_json(node, &doc))
        .collect::<Result<_, _>>()?;
    Ok(Json(ListingList {
        object: "list".to_owned(),
        data,
        fee_bps: state.config.key_transfer_fee_bps,
    }))
}

fn node_id(id: &str) -> Result<NodeKeyId, ApiError> {
    id.parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("id", e.to_string()))
}

/// `GET /stacknet/v1/market/keys/{id}`: the id's status, operating key, rebindings and listing.
pub async fn key_state(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyState>, ApiError> {
    let node = node_id(&id)?;
    let bindings = state.attribution.chain(node);
    let listing = state
        .attribution
        .listing(node)
        .map(|(_, doc)| listing_json(node, &doc))
        .transpose()?;
    let bonded = state
        .ledger
        .balance(AccountId::stake(node))
        .await
        .map_err(ApiError::internal)?
        .posted;
    let connected = state.nodes.get(&node).is_some();
    let status = if listing.as_ref().is_some_and(|l| l.state == "open") {
        "listed"
    } else if connected {
        "connected"
    } else if !bindings.is_empty() {
        "transferred"
    } else if bonded >= state.config.rules.min_worker_bond && bonded.micros() > 0 {
        "active"
    } else {
        "cold"
    };
    Ok(Json(KeyState {
        node,
        status: status.to_owned(),
        operating_key: state.attribution.operating_key(node),
        bindings,
        listing,
        bonded,
    }))
}

/// The shares of a sale at `price` under a fee of `fee_bps`: (to the seller, to the originator, to
/// the protocol), each rounded down but the seller's, which takes the remainder.
pub fn sale_shares(price: i64, fee_bps: u32) -> (i64, i64, i64) {
    let fee = i64::try_from(i128::from(price) * i128::from(fee_bps.min(10_000)) / 10_000).unwrap_or(0);
    let originator = fee / 2;
    let protocol = fee - originator;
    (price - fee, originator, protocol)
}

fn transfer_id(node: NodeKeyId, seq: u64, part: &str) -> Result<TransferId, ApiError> {
    TransferId::new(&format!("keysale:{node}:{seq}:{part}")).map_err(ApiError::internal)
}

/// `POST /stacknet/v1/market/keys/{id}/buy`.
pub async fn buy(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Sale>, ApiError> {
    let buyer = state.api_keys.caller(&headers)?.owner()?;
    let node = node_id(&id)?;
    let req: BuyKey = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let (version, listing) = state
        .attribution
        .listing(node)
        .ok_or_else(|| ApiError::NotFound(format!("a listing of {node}")))?;
    match listing.state {
        ListingState::Open => {}
        ListingState::Sold => return Err(ApiError::Conflict(format!("{node} was sold already"))),
        ListingState::Withdrawn => return Err(ApiError::NotFound(format!("an open listing of {node}"))),
    }
    let rebinding = Rebinding {
        offer: listing.offer.clone(),
        binding: req.binding,
    };
    let hub = state.hub_key.public_key();
    let seller_key = listing.offer.body.node_key;
    rebinding
        .check(node, listing.seq, &seller_key, &hub)
        .map_err(|e| ApiError::invalid("binding", e.to_string()))?;
    let b = &rebinding.binding.body;
    let skew = (Timestamp::now().unix_ms() - b.created_at.unix_ms()).abs();
    if skew > REQUEST_CLOCK_TOLERANCE_MS {
        return Err(ApiError::invalid(
            "binding",
            format!(
                "created_at {} is more than {REQUEST_CLOCK_TOLERANCE_MS} ms from the hub's clock",
                b.created_at
            ),
        ));
    }
    new_key_is_free(&state, &b.to_key, node)?;
    let earnings = sellable(&state, node).await?;
    let intent = serde_json::json!({"rebinding": rebinding, "buyer": buyer.stack});
    let digest =
        hex::encode(&Sha256::digest(serde_json::to_vec(&rebinding).map_err(ApiError::internal)?)[..16]);
    let sale_doc = DocRecord {
        kind: SALE.to_owned(),
        id: format!("{node}:{}:{digest}", listing.seq),
        version: 1,
        stack: Some(buyer.stack),
        json: intent.to_string(),
        created_at: Timestamp::now(),
    };
    state.store.put_doc(sale_doc).await?;
    let sale = pay(&state, node, &listing, buyer.stack, b.to_key, earnings).await?;
    finish(&state, node, version, &listing, &rebinding).await?;
    Ok(Json(sale))
}

/// The new key must not operate another id, nor run as its own id now (one key, one id).
fn new_key_is_free(state: &AppState, key: &PublicKey, node: NodeKeyId) -> Result<(), ApiError> {
    let own = key.node_key_id();
    let fresh = matches!(state.attribution.acting_id(key), Ok(id) if id == own);
    if !fresh || state.nodes.get(&own).is_some() || own == node {
        return Err(ApiError::invalid(
            "binding",
            "to_key must be a fresh key: one that operates no Node Key id yet",
        ));
    }
    Ok(())
}

/// The sale's money, in one batch; refused whole when the buyer cannot pay, or when another buyer's
/// batch claimed the sale's transfer ids first.
async fn pay(
    state: &AppState,
    node: NodeKeyId,
    listing: &ListingDoc,
    buyer: StackId,
    new_key: PublicKey,
    earnings: Amount,
) -> Result<Sale, ApiError> {
    let NodeAction::List { price, proceeds } = listing.offer.body.action else {
        return Err(ApiError::internal(
            "a listing whose offer is not a `list` request",
        ));
    };
    let seq = listing.seq;
    let (to_seller, to_originator, to_protocol) =
        sale_shares(price.micros(), state.config.key_transfer_fee_bps);
    let originator = state
        .attribution
        .node_referrer(node)
        .map_or_else(AccountId::treasury, |r| AccountId::stack(r.stack));
    let from = AccountId::stack(buyer);
    let mut parts = vec![
        ("price", from.clone(), AccountId::stack(proceeds), to_seller),
        ("originator", from.clone(), originator, to_originator),
        ("protocol", from, AccountId::treasury(), to_protocol),
        (
            "earnings",
            AccountId::node(node),
            AccountId::stack(proceeds),
            earnings.micros(),
        ),
    ];
    parts.retain(|(_, _, _, amount)| *amount > 0);
    let mut transfers: Vec<Entry> = Vec::with_capacity(parts.len());
    let mut ids = Vec::with_capacity(parts.len());
    for (part, debit, credit, amount) in parts {
        let id = transfer_id(node, seq, part)?;
        ids.push(id.to_string());
        transfers
            .push(Transfer::posted(id, debit, credit, Amount::from_micros(amount), Reason::KeySale).into());
    }
    state
        .ledger
        .create_transfers(transfers)
        .await
        .map_err(|e| match e {
            LedgerError::InsufficientFunds {
                account,
                available,
                amount,
                ..
            } if account == AccountId::stack(buyer) => ApiError::InsufficientBalance {
                needed: amount,
                available,
            },
            LedgerError::IdReused { .. } => ApiError::Conflict(format!("{node} was sold to another buyer")),
            e => ApiError::internal(e),
        })?;
    Ok(Sale {
        node,
        seq,
        buyer,
        new_key,
        price,
        proceeds: Amount::from_micros(to_seller),
        originator_fee: Amount::from_micros(to_originator),
        protocol_fee: Amount::from_micros(to_protocol),
        transfers: ids,
    })
}

/// After the money: the binding (a second one of the same sale cannot be written), the listing
/// closed, and the old key's connection taken out of routing.
async fn finish(
    state: &AppState,
    node: NodeKeyId,
    version: u64,
    listing: &ListingDoc,
    rebinding: &Rebinding,
) -> Result<(), ApiError> {
    let record = DocRecord {
        kind: BINDING.to_owned(),
        id: node.to_string(),
        version: listing.seq,
        stack: None,
        json: serde_json::to_string(rebinding).map_err(ApiError::internal)?,
        created_at: Timestamp::now(),
    };
    if !state.store.put_doc(record.clone()).await? {
        let written = state
            .store
            .doc_versions(BINDING.to_owned(), node.to_string())
            .await?;
        state.attribution.apply(&written);
        let same = state
            .attribution
            .chain(node)
            .get(usize::try_from(listing.seq - 1).unwrap_or(usize::MAX))
            .is_some_and(|r| r == rebinding);
        if !same {
            return Err(ApiError::Conflict(format!("{node} was sold to another buyer")));
        }
    } else {
        state.attribution.apply(&[record]);
    }
    let sold = ListingDoc {
        state: ListingState::Sold,
        ..listing.clone()
    };
    // Another replica may have closed it first: the same closing.
    if let Err(e) = write_listing(state, node, version + 1, &sold).await {
        if !matches!(e, ApiError::Conflict(_)) {
            return Err(e);
        }
    }
    if let Some(old) = state.nodes.get(&node) {
        if old.key != rebinding.binding.body.to_key {
            state.nodes.unregister(&node, old.conn_id);
            old.fail_all();
        }
    }
    Ok(())
}

/// Every rebinding the hub holds, in the order its checkpoints commit to (the store's write order).
pub async fn all_bindings(state: &AppState) -> Result<Vec<Rebinding>, ApiError> {
    state
        .store
        .docs_of_kind(BINDING.to_owned())
        .await?
        .iter()
        .map(|d| serde_json::from_str(&d.json).map_err(ApiError::internal))
        .collect()
}

/// `GET /stacknet/v1/market/bindings`: every rebinding, in the order the checkpoints' bindings line
/// commits to; `?count=N`: the first N (what a checkpoint of N bindings covered).
pub async fn bindings(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<BindingsQuery>,
) -> Result<Json<stacknet_api::types::BindingList>, ApiError> {
    let mut data = all_bindings(&state).await?;
    if let Some(count) = q.count {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > data.len() {
            return Err(ApiError::invalid(
                "count",
                format!("the hub holds {} bindings, not {count}", data.len()),
            ));
        }
        data.truncate(count);
    }
    Ok(Json(stacknet_api::types::BindingList {
        object: "list".to_owned(),
        data,
    }))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingsQuery {
    pub count: Option<u64>,
}

/// At start: a sale whose money moved but whose binding was never written (a crash between them)
/// is finished; one whose money never moved is left as it is (its buyer was not charged).
pub async fn recover(state: &AppState) -> Result<(), String> {
    let sales = state
        .store
        .docs_of_kind(SALE.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    for doc in &sales {
        let intent: serde_json::Value = serde_json::from_str(&doc.json).map_err(|e| e.to_string())?;
        let rebinding: Rebinding =
            serde_json::from_value(intent["rebinding"].clone()).map_err(|e| e.to_string())?;
        let b = &rebinding.binding.body;
        if state.attribution.chain(b.node).len() as u64 >= b.seq {
            continue;
        }
        let paid = state
            .ledger
            .transfer(transfer_id(b.node, b.seq, "price").map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        let buyer = doc.stack.map(AccountId::stack);
        if paid.is_some_and(|t| Some(t.debit) == buyer) {
            let Some((version, listing)) = state.attribution.listing(b.node) else {
                continue;
            };
            tracing::warn!(node = %b.node, seq = b.seq, "a sale paid before a stop is finished now");
            finish(state, b.node, version, &listing, &rebinding)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
