//! Stakes: a Node Key's bond, moved only by requests the key signs (`POST /stacknet/v1/stake`).
//!
//! - `bond`: earnings -> stake (`stake_bond`); refused (402) when the earnings cannot cover it.
//! - `unbond`: stake -> unbonding (`unbond`), recorded in the store with `withdrawable_at` = now +
//!   the network's unbonding period; it stays slashable until then.
//! - `withdraw`: every matured unbonding -> earnings (`unbond`); nothing matured is a 400.
//! - `stake`: the status only.
//!
//! Every request passes the same checks as statements and redemptions (signature, hub, clock,
//! nonce: [`crate::settle::check_node_request`]), so a replayed request is refused before anything
//! moves; on top of that each transfer id derives from the request's nonce (a withdrawal's from the
//! unbonding it returns), so the same request can never move money twice. The only other path that
//! moves a bond is a slash, decided by validators' quorum (or a validator's fault): it takes
//! `slash_bps` of what the key has bonded and unbonding, from the stake first, then from the
//! unbonding account and its rows ([`crate::validate::money::slash`]), so unbonding first is no
//! escape. After every move, a slash's included, the scheduler's record of the key's bond is
//! refreshed from the ledger ([`crate::nodes::Nodes::set_bond`]), as it is when the node connects.
//! A suspension (after a conviction) lasts the network's `suspension_ms` (30 days by default) from
//! the latest conviction, and no other path lifts it; after it, a slashed worker whose bond fell
//! below the minimum is still not routed until it bonds again, and it is sampled at the new-worker
//! rate for good.
//!
//! Unbonds and withdrawals hold validation's lock ([`crate::validate::Validation::lock`]), under
//! which every slash runs, so a slash never reads the unbonding rows while a withdrawal is between
//! its ledger move and its rows (one hub; replicas on PostgreSQL do not share that lock).
//!
//! Order of writes for an unbond: the store's record first (its id is the ledger move's), then the
//! ledger. A refused move removes the record at once; a crash between the two leaves a record whose
//! move never happened, which [`unbondings`] finds (no ledger transfer under its id) and removes,
//! under the same lock, before a withdrawal or a slash reads the records. So the unbonding account
//! and its records cannot drift apart: no money stays in the account without a record to release
//! it, and no record releases money that is not there (`hub::stake`'s crash test plants one).

use axum::extract::State;
use axum::Json;
use sha2::{Digest, Sha256};
use stacknet_api::types::{StakeStatus, TopUp, Unbonding};
use stacknet_ledger::{AccountId, Entry, LedgerError, Reason, Transfer, TransferId};
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::{Amount, NodeKeyId, Nonce, Signed, Timestamp};

use crate::error::ApiError;
use crate::settle::{check_node_request, signed_body};
use crate::store::UnbondingRecord;
use crate::AppState;

/// `POST /stacknet/v1/stake` (body: a signed `stake`, `bond`, `unbond` or `withdraw` NodeRequest).
pub async fn stake(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<StakeStatus>, ApiError> {
    let req: Signed<NodeRequest> = signed_body(&body)?;
    let node = check_node_request(&state, &req).await?;
    let nonce = &req.body.nonce;
    match &req.body.action {
        NodeAction::Stake => {}
        NodeAction::Bond { amount } => bond(&state, node, *amount, move_id("bond", node, nonce)?).await?,
        NodeAction::Unbond { amount } => {
            unbond(&state, node, *amount, move_id("unbond", node, nonce)?).await?
        }
        NodeAction::Withdraw => withdraw(&state, node).await?,
        _ => {
            return Err(ApiError::invalid(
                "action",
                "this endpoint takes a `stake`, `bond`, `unbond` or `withdraw` request",
            ))
        }
    }
    Ok(Json(status(&state, node).await?))
}

/// `<kind>:` + 32 hex of SHA-256(node key id, nonce): one id per signed request.
fn move_id(kind: &str, node: NodeKeyId, nonce: &Nonce) -> Result<TransferId, ApiError> {
    let mut h = Sha256::new();
    h.update(node.to_string().as_bytes());
    h.update(nonce.0);
    TransferId::new(&format!("{kind}:{}", hex::encode(&h.finalize()[..16]))).map_err(ApiError::internal)
}

fn positive(amount: Amount) -> Result<(), ApiError> {
    if amount.micros() <= 0 {
        return Err(ApiError::invalid(
            "amount",
            "amount must be more than zero micro-credits",
        ));
    }
    Ok(())
}

/// Moves `amount` of `node`'s earnings to its stake under transfer `id`.
pub async fn bond(state: &AppState, node: NodeKeyId, amount: Amount, id: TransferId) -> Result<(), ApiError> {
    positive(amount)?;
    let transfer = Transfer::posted(
        id,
        AccountId::node(node),
        AccountId::stake(node),
        amount,
        Reason::StakeBond,
    );
    let result = state.ledger.create_transfers(vec![transfer.into()]).await;
    result.map_err(|e| match e {
        LedgerError::InsufficientFunds { available, .. } => ApiError::InsufficientEarnings {
            available,
            needed: amount,
        },
        e => refusal(e),
    })?;
    refresh_bond(state, node).await?;
    Ok(())
}

/// Starts unbonding `amount` of `node`'s stake under transfer `id`.
async fn unbond(state: &AppState, node: NodeKeyId, amount: Amount, id: TransferId) -> Result<(), ApiError> {
    positive(amount)?;
    let _slashes_wait = state.validation.lock().await;
    let now = Timestamp::now();
    let period = i64::try_from(state.config.rules.unbonding_period_ms).unwrap_or(i64::MAX);
    let record = UnbondingRecord {
        id: id.to_string(),
        node_key: node,
        amount,
        created_at: now,
        withdrawable_at: now.plus_ms(period),
        withdrawn_at: None,
    };
    state.store.add_unbonding(record).await?;
    let transfer = Transfer::posted(
        id.clone(),
        AccountId::stake(node),
        AccountId::unbonding(node),
        amount,
        Reason::Unbond,
    );
    if let Err(e) = state.ledger.create_transfers(vec![transfer.into()]).await {
        // The record goes when nothing is in the ledger under its id (an earlier request's move
        // under the same id keeps it); if the ledger cannot say, the next reconcile decides.
        if let Ok(None) = state.ledger.transfer(id.clone()).await {
            state.store.remove_unbonding(id.to_string()).await?;
        }
        return Err(match e {
            LedgerError::InsufficientFunds { available, .. } => ApiError::invalid(
                "amount",
                format!("cannot unbond {amount} micro-credits: {available} are bonded"),
            ),
            e => refusal(e),
        });
    }
    refresh_bond(state, node).await?;
    Ok(())
}

/// `node`'s open unbondings whose ledger move happened. With `remove` (only under validation's
/// lock, which every unbond holds from its record to its move), a record without its move is left
/// from a crash between the two and is removed; without, it is only left out.
pub async fn unbondings(
    store: &dyn crate::store::Store,
    ledger: &dyn stacknet_ledger::LedgerStore,
    node: NodeKeyId,
    remove: bool,
) -> Result<Vec<UnbondingRecord>, String> {
    let mut moved = Vec::new();
    for u in store.unbondings_of(node).await.map_err(|e| e.to_string())? {
        let id = TransferId::new(&u.id).map_err(|e| e.to_string())?;
        if ledger.transfer(id).await.map_err(|e| e.to_string())?.is_some() {
            moved.push(u);
        } else if remove {
            tracing::warn!(%node, unbonding = %u.id, "an unbonding recorded without its ledger move (a crash between them) is removed");
            store.remove_unbonding(u.id).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(moved)
}

/// Returns every unbonding of `node` whose period has ended to its earnings.
async fn withdraw(state: &AppState, node: NodeKeyId) -> Result<(), ApiError> {
    let _slashes_wait = state.validation.lock().await;
    let now = Timestamp::now();
    let open = unbondings(state.store.as_ref(), state.ledger.as_ref(), node, true)
        .await
        .map_err(ApiError::internal)?;
    let (due, waiting): (Vec<_>, Vec<_>) = open
        .into_iter()
        .partition(|u| u.withdrawable_at.unix_ms() <= now.unix_ms());
    if due.is_empty() {
        let why = match waiting.first() {
            Some(u) => format!(
                "nothing to withdraw yet: the first unbonding ({} micro-credits) can be withdrawn from {}",
                u.amount, u.withdrawable_at
            ),
            None => "nothing to withdraw: nothing is unbonding".to_owned(),
        };
        return Err(ApiError::invalid("action", why));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(due.len());
    for u in &due {
        // `unbond:<h>` returns as `withdraw:<h>`: a withdrawal sent twice moves each amount once.
        let suffix = u.id.strip_prefix("unbond:").unwrap_or(&u.id);
        let id = TransferId::new(&format!("withdraw:{suffix}")).map_err(ApiError::internal)?;
        let t = Transfer::posted(
            id,
            AccountId::unbonding(node),
            AccountId::node(node),
            u.amount,
            Reason::Unbond,
        );
        entries.push(t.into());
    }
    for chunk in entries.chunks(stacknet_ledger::MAX_BATCH_ENTRIES) {
        crate::money::apply_retrying(&state.ledger, chunk.to_vec())
            .await
            .map_err(|e| match e {
                // Only a slash takes from an unbonding account besides withdrawals.
                LedgerError::InsufficientFunds { available, .. } => ApiError::Conflict(format!(
                    "the unbonding balance ({available} micro-credits) no longer covers what is due: part of it was slashed"
                )),
                e => ApiError::internal(e),
            })?;
    }
    let ids = due.into_iter().map(|u| u.id).collect();
    state.store.mark_withdrawn(ids, now).await?;
    Ok(())
}

/// A ledger refusal of a stake move as the client sees it.
fn refusal(e: LedgerError) -> ApiError {
    match e {
        LedgerError::IdReused { field, .. } => ApiError::Conflict(format!(
            "this request was applied before with a different {field}"
        )),
        LedgerError::Overflow { account, .. } => ApiError::invalid(
            "amount",
            format!("this would take the balance of {account} past the largest amount"),
        ),
        e => ApiError::internal(e),
    }
}

/// Reads `node`'s bond from the ledger into the scheduler's record of it, and returns it.
pub async fn refresh_bond(state: &AppState, node: NodeKeyId) -> Result<Amount, ApiError> {
    let bonded = state
        .ledger
        .balance(AccountId::stake(node))
        .await
        .map_err(ApiError::internal)?
        .posted;
    state.nodes.set_bond(node, bonded);
    Ok(bonded)
}

/// Where `node`'s stake stands.
pub async fn status(state: &AppState, node: NodeKeyId) -> Result<StakeStatus, ApiError> {
    let balances = state
        .ledger
        .balances(vec![AccountId::stake(node), AccountId::node(node)])
        .await
        .map_err(ApiError::internal)?;
    let (bonded, earnings) = match balances.as_slice() {
        [stake, earnings] => (stake.posted, earnings.available()),
        _ => {
            return Err(ApiError::internal(
                "the ledger answered the wrong number of balances",
            ))
        }
    };
    state.nodes.set_bond(node, bonded);
    let unbonding = unbondings(state.store.as_ref(), state.ledger.as_ref(), node, false)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|u| Unbonding {
            amount: u.amount,
            withdrawable_at: u.withdrawable_at,
        })
        .collect();
    let rules = &state.config.rules;
    Ok(StakeStatus {
        node_key: node,
        bonded,
        unbonding,
        earnings,
        min_worker_bond: rules.min_worker_bond,
        min_validator_bond: rules.min_validator_bond,
        suspended: state.validation.is_suspended(&node),
        suspended_until: state.nodes.suspended_until(&node),
        slashes: state.store.slashes(Some(node)).await?,
    })
}

/// The outside-world account (`external:autobond`) that [`auto_bond`]'s grants come from.
pub const AUTO_BOND_ACCOUNT: &str = "autobond";

/// Tops up `node`'s earnings from the outside world by what its bond lacks of the minimum worker
/// bond, and bonds it: what `stacknet up` and the test kit do for the node they start, so a hub
/// with the default minimum serves them as before. Nothing moves when the bond is enough already.
/// Idempotent for a given bond: the ids derive from the key and what it had bonded.
pub async fn auto_bond(state: &AppState, node: NodeKeyId) -> Result<StakeStatus, ApiError> {
    let min = state.config.rules.min_worker_bond;
    let bonded = refresh_bond(state, node).await?;
    let Some(lack) = min.checked_sub(bonded).filter(|a| a.micros() > 0) else {
        return status(state, node).await;
    };
    let event = format!("autobond-{node}-{}", bonded.micros());
    let topup = TopUp {
        amount: lack,
        id: Some(event.clone()),
    };
    // Through a door of its own, so these grants are told apart from paid top-ups in statements.
    let world = AccountId::external(AUTO_BOND_ACCOUNT).map_err(ApiError::internal)?;
    crate::admin::credit_from(state, world, AccountId::node(node), topup, "node").await?;
    let id = TransferId::new(&format!("bond:{event}")).map_err(ApiError::internal)?;
    bond(state, node, lack, id).await?;
    status(state, node).await
}
