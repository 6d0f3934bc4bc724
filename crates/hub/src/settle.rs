//! After the task: the paperwork log's public endpoints, filing (settlement of the attribution
//! split), statements, and redemption.
//!
//! Filing (`POST /stacknet/v1/nodes/file`): a node sends a Filing signed by its Node Key and the
//! paperwork documents it lists. Each paperwork is checked on its own and gets its own verdict: that
//! it is this node's and its contract this hub's and assigned to it, its node signature, that the
//! log holds exactly this document (same leaf hash: so its contract's and fingerprint's signatures
//! are the ones the hub checked at acceptance, and need no second check), that its challenge window
//! has passed, that it was not filed before. The valid ones settle together:
//! 1. write-ahead: the store marks them filed under a settlement id in one transaction, which
//!    also settles races (two filings of one paperwork: one claims it, the other hears
//!    `already_filed`);
//! 2. the ledger moves each party's share out of escrow, summed per account, as one batch whose
//!    transfer ids derive from the settlement id (`<id>:share<n>`), plus the warm bonus from the
//!    treasury (`bonus:<id>`);
//! 3. the settlement is closed. A crash between 1 and 3 is finished at start by [`recover`] with
//!    the same ids, so nothing is paid twice or lost.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use sha2::{Digest, Sha256};
use stacknet_api::types::{
    ConsistencyProof, Direction, FilingAnswer, FilingRequest, FilingVerdict, InclusionProof, LogCheckpoint,
    LoggedPage, NodeStatement, Payout, StackStatement, Statement, StatementLine, Verdict,
};
pub use stacknet_api::types::{ConsistencyQuery, InclusionQuery, StatementQuery, LOGGED_PAGE_LEAVES};
use stacknet_ledger::{AccountId, LedgerError, LedgerStore};
use stacknet_protocol::contract::PromptContract;
use stacknet_protocol::filing::{NodeAction, NodeRequest, MAX_FILING_PAPERWORK};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Signed, Timestamp};

use crate::admin::balance_json;
use crate::error::ApiError;
use crate::log::{checkpoint_json, consistency_json, inclusion_json, log_origin, paperwork_leaf};
use crate::store::{LoggedPaperwork, Store};
use crate::AppState;

/// How far a signed request's `created_at` may be from the hub's clock.
pub const REQUEST_CLOCK_TOLERANCE_MS: i64 = 300_000;
/// How much longer than the clock tolerance a request's nonce is held, for requests checked at
/// the edge of the tolerance while another forgets expired nonces.
pub const NONCE_MARGIN_MS: i64 = 2_000;
/// Most lines in one statement page.
pub const STATEMENT_LINES: u32 = 100;

// ---------------------------------------------------------------------------------------------
// The paperwork log.

/// `GET /stacknet/v1/log/checkpoint`: the log's size and root, signed by the hub key.
pub async fn checkpoint(State(state): State<AppState>) -> Result<Json<LogCheckpoint>, ApiError> {
    state.writer.catch_up().await.map_err(ApiError::internal)?;
    // Every checkpoint also commits to the Node Key bindings (read from the store, in its order),
    // so a follower catches a hub that shows different bindings to different verifiers.
    let bindings = crate::market::all_bindings(&state).await?;
    let root = stacknet_api::proof::bindings_root(&bindings).map_err(ApiError::internal)?;
    let line = stacknet_api::proof::bindings_extension(bindings.len() as u64, &root);
    let cp = state
        .log
        .checkpoint_with(
            &log_origin(&state.hub_key.public_key()),
            &state.hub_key,
            vec![line],
        )
        .map_err(ApiError::internal)?;
    Ok(Json(checkpoint_json(&cp)))
}

/// `GET /stacknet/v1/log/proof/inclusion?paperwork=pw_...[&tree_size=N]`.
pub async fn inclusion(
    State(state): State<AppState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    let id: PaperworkId = q
        .paperwork
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("paperwork", e.to_string()))?;
    state.writer.catch_up().await.map_err(ApiError::internal)?;
    let logged = state
        .store
        .paperwork(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("paperwork {id} is not in the log")))?;
    let size = q.tree_size.unwrap_or_else(|| state.log.size());
    let proof = state
        .log
        .inclusion(logged.index, size)
        .map_err(|e| ApiError::invalid("tree_size", e.to_string()))?;
    Ok(Json(inclusion_json(
        logged.index,
        size,
        &logged.record.leaf_hash,
        &proof,
    )))
}

/// `GET /stacknet/v1/log/proof/consistency?from=N[&to=M]`.
pub async fn consistency(
    State(state): State<AppState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    state.writer.catch_up().await.map_err(ApiError::internal)?;
    let to = q.to.unwrap_or_else(|| state.log.size());
    let proof = state
        .log
        .consistency(q.from, to)
        .map_err(|e| ApiError::invalid("from", e.to_string()))?;
    Ok(Json(consistency_json(q.from, to, &proof)))
}

// ---------------------------------------------------------------------------------------------
// Statements.

async fn statement_json(
    ledger: &dyn LedgerStore,
    account: AccountId,
    after: Option<u64>,
    limit: Option<u32>,
) -> Result<Statement, ApiError> {
    let balance = ledger
        .balance(account.clone())
        .await
        .map_err(ApiError::internal)?;
    let lines = ledger
        .transfers_of(account.clone(), limit.unwrap_or(STATEMENT_LINES), after)
        .await
        .map_err(ApiError::internal)?;
    let transfers = lines
        .iter()
        .map(|l| {
            let t = &l.transfer;
            StatementLine {
                seq: l.seq,
                id: t.id.to_string(),
                reason: t.reason.as_str().to_owned(),
                state: t.state.as_str().to_owned(),
                debit: t.debit.to_string(),
                credit: t.credit.to_string(),
                amount: t.amount,
                released: t.released,
                direction: if t.credit == account {
                    Direction::In
                } else {
                    Direction::Out
                },
            }
        })
        .collect();
    Ok(Statement {
        account: account.to_string(),
        balance: balance_json(&balance),
        transfers,
        next_after: lines.last().map(|l| l.seq),
    })
}

/// `GET /stacknet/v1/statement`: the balance and transfers of the Stack whose API key is used.
pub async fn stack_statement(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StatementQuery>,
) -> Result<Json<StackStatement>, ApiError> {
    let stack = state.api_keys.authenticate(&headers)?;
    let account = match q.skill {
        None => AccountId::stack(stack),
        Some(skill) => {
            // Another Stack's skill is as unknown as a missing one.
            state
                .attribution
                .skill(skill)
                .filter(|s| s.creator == stack)
                .ok_or_else(|| ApiError::NotFound(format!("skill {skill} of this Stack")))?;
            AccountId::creator(skill)
        }
    };
    let statement = statement_json(&*state.ledger, account, q.after, q.limit).await?;
    Ok(Json(StackStatement {
        stack,
        skill: q.skill,
        statement,
    }))
}

/// Checks a Node Key request: its signature, that it is addressed to this hub, its time, and that
/// its nonce was never used (a replayed request is refused).
pub(crate) async fn check_node_request(
    state: &AppState,
    req: &Signed<NodeRequest>,
) -> Result<NodeKeyId, ApiError> {
    req.verify(&req.body.node_key)
        .map_err(|e| ApiError::BadSignature(e.to_string()))?;
    fresh(
        state,
        &req.body.hub,
        req.body.created_at,
        "node_request",
        &req.body.nonce,
    )
    .await?;
    acting_id(state, &req.body.node_key, req.body.acts_for)
}

/// The Node Key id a signed request of `key` acts for (`named`, if the request names one): the
/// key's own, or the one a sale bound it to. Refused (401) for a key a sale replaced, and for an
/// id the key does not operate.
pub(crate) fn acting_id(
    state: &AppState,
    key: &stacknet_protocol::PublicKey,
    named: Option<NodeKeyId>,
) -> Result<NodeKeyId, ApiError> {
    let id = state.attribution.acting_id(key).map_err(ApiError::BadSignature)?;
    match named {
        Some(n) if n != id => Err(ApiError::BadSignature(format!(
            "key {} does not operate {n}",
            key.to_hex()
        ))),
        _ => Ok(id),
    }
}

/// The checks every signed node message shares: the right hub, a time near ours, a new nonce.
async fn fresh(
    state: &AppState,
    hub: &stacknet_protocol::PublicKey,
    created_at: Timestamp,
    kind: &'static str,
    nonce: &stacknet_protocol::Nonce,
) -> Result<(), ApiError> {
    let ours = state.hub_key.public_key();
    if *hub != ours {
        return Err(ApiError::invalid(
            "hub",
            format!("addressed to hub {}, this hub is {}", hub.to_hex(), ours.to_hex()),
        ));
    }
    let skew = (Timestamp::now().unix_ms() - created_at.unix_ms()).abs();
    if skew > REQUEST_CLOCK_TOLERANCE_MS {
        return Err(ApiError::invalid(
            "created_at",
            format!(
                "created_at {created_at} is more than {REQUEST_CLOCK_TOLERANCE_MS} ms from the hub's clock"
            ),
        ));
    }
    // Held only while a replay could pass the clock check above: nonces are not kept for good.
    let expires_at = created_at.plus_ms(REQUEST_CLOCK_TOLERANCE_MS + NONCE_MARGIN_MS);
    let new = state
        .store
        .claim_nonce(kind, hex::encode(nonce.0), Timestamp::now(), expires_at)
        .await
        .map_err(ApiError::internal)?;
    if !new {
        return Err(ApiError::Conflict(format!(
            "this {kind} was used before (replay)"
        )));
    }
    Ok(())
}

pub(crate) fn signed_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// `POST /stacknet/v1/nodes/statement` (body: a signed `statement` NodeRequest): the Node Key's
/// earnings, payout-pending balance, transfers and payouts.
pub async fn node_statement(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<NodeStatement>, ApiError> {
    let req: Signed<NodeRequest> = signed_body(&body)?;
    let node = check_node_request(&state, &req).await?;
    if req.body.action != NodeAction::Statement {
        return Err(ApiError::invalid(
            "action",
            "this endpoint takes a `statement` request",
        ));
    }
    let statement = statement_json(&*state.ledger, AccountId::node(node), None, None).await?;
    let pending = state
        .ledger
        .balance(AccountId::payout_pending(node))
        .await
        .map_err(ApiError::internal)?;
    let payouts = state.store.payouts_of(node).await.map_err(ApiError::internal)?;
    let stake = statement_json(&*state.ledger, AccountId::stake(node), None, None).await?;
    let slashes = state
        .store
        .slashes(Some(node))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(NodeStatement {
        node_key: node,
        statement,
        payout_pending: balance_json(&pending),
        payouts,
        stake: (!stake.transfers.is_empty()).then_some(stake),
        slashes,
    }))
}

/// `POST /stacknet/v1/nodes/logged` (body: a signed `logged` NodeRequest): the key's paperwork in
/// the log among at most [`LOGGED_PAGE_LEAVES`] leaves from `from`, as logged. A node's wallet
/// commits without waiting for the disk (the hub's log is the copy that survives a power cut on
/// the request path), so this is how a node that lost its last writes finds them again to file.
pub async fn node_logged(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<LoggedPage>, ApiError> {
    let req: Signed<NodeRequest> = signed_body(&body)?;
    let node = check_node_request(&state, &req).await?;
    let NodeAction::Logged { from } = req.body.action else {
        return Err(ApiError::invalid(
            "action",
            "this endpoint takes a `logged` request",
        ));
    };
    // Level with what every replica logged, so the page's `size` is the stored log's.
    state.writer.catch_up().await.map_err(ApiError::internal)?;
    let size = state.log.size();
    let from = from.min(size);
    let next = from.saturating_add(LOGGED_PAGE_LEAVES).min(size);
    let logged = state
        .store
        .logged_of(node, from, next)
        .await
        .map_err(ApiError::internal)?;
    let paperwork = logged
        .iter()
        .map(|l| serde_json::from_str(&l.record.json))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(LoggedPage {
        node_key: node,
        paperwork,
        next,
        size,
    }))
}

// ---------------------------------------------------------------------------------------------
// Filing.

/// `POST /stacknet/v1/nodes/file`.
pub async fn file(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<FilingAnswer>, ApiError> {
    let FilingRequest {
        filing: signed,
        paperwork: docs,
    } = signed_body(&body)?;
    let filing = &signed.body;
    signed
        .verify(&filing.node_key)
        .map_err(|e| ApiError::BadSignature(format!("filing: {e}")))?;
    if filing.paperwork.is_empty() || filing.paperwork.len() > MAX_FILING_PAPERWORK {
        return Err(ApiError::invalid(
            "paperwork",
            format!("a filing lists 1 to {MAX_FILING_PAPERWORK} paperwork"),
        ));
    }
    if !stacknet_protocol::contract::is_sorted_unique(&filing.paperwork) {
        return Err(ApiError::invalid(
            "paperwork",
            "the filing's paperwork ids must be sorted, without duplicates",
        ));
    }
    fresh(&state, &filing.hub, filing.created_at, "filing", &filing.nonce).await?;
    // The key in force files: a key a sale replaced files nothing, and the buyer's key files the
    // id's paperwork, that signed before the sale included.
    let node = acting_id(&state, &filing.node_key, None)?;
    let hub = state.hub_key.public_key();
    let window = i64::try_from(state.config.challenge_window_ms).unwrap_or(i64::MAX);
    // The documents: checked in parallel on the blocking pool (three signatures each).
    let keys = state.attribution.key_times(node);
    let checked = check_documents(docs, hub, node, keys).await?;
    let mut by_id: BTreeMap<PaperworkId, Result<Checked, String>> = BTreeMap::new();
    for (id, result) in checked {
        by_id.insert(id, result);
    }
    let listed: Vec<PaperworkId> = filing.paperwork.clone();
    if by_id.keys().copied().collect::<Vec<_>>() != listed {
        return Err(ApiError::invalid(
            "paperwork",
            "the documents sent are not exactly the paperwork the filing lists",
        ));
    }
    let logged = state
        .store
        .paperwork_many(listed.clone())
        .await
        .map_err(ApiError::internal)?;
    let now = Timestamp::now();
    let mut verdicts: BTreeMap<PaperworkId, Verdict> = BTreeMap::new();
    let mut to_settle = Vec::new();
    for (id, logged) in listed.iter().zip(logged) {
        let verdict = match (by_id.remove(id), logged) {
            (Some(Err(reason)), _) => Some(refused(reason)),
            (_, None) => Some(refused(
                "not in the paperwork log: this hub never accepted it".into(),
            )),
            (Some(Ok(checked)), Some(l)) => match judge(&checked, &l, now, window) {
                Some(v) => Some(v),
                None => {
                    to_settle.push(Due::of(*id, &checked.doc, l.record.cost));
                    None
                }
            },
            (None, Some(_)) => Some(refused("missing document".into())),
        };
        if let Some(v) = verdict {
            verdicts.insert(*id, v);
        }
    }
    // Paperwork under validation waits; paperwork validators convicted is void.
    let ids: Vec<PaperworkId> = to_settle.iter().map(|d| d.id).collect();
    let holds = state
        .validation
        .filing_holds(&ids)
        .await
        .map_err(ApiError::internal)?;
    to_settle.retain(|d| !holds.iter().any(|(id, _)| *id == d.id));
    verdicts.extend(holds);
    if !to_settle.is_empty() {
        let settled = settle(&state.store, &state.ledger, to_settle, now).await?;
        for (id, verdict) in settled {
            verdicts.insert(id, verdict);
        }
    }
    let settled_total: i64 = verdicts
        .values()
        .map(|v| match v {
            Verdict::Settled { amount } => amount.micros(),
            _ => 0,
        })
        .sum();
    let answered = signed
        .digest()
        .map_err(|e| ApiError::invalid("filing", format!("cannot encode the filing: {e}")))?;
    let results = sign_verdicts(&state, filing.node_key, answered, verdicts).await?;
    Ok(Json(FilingAnswer {
        node_key: node,
        settled: Amount::from_micros(settled_total),
        results,
    }))
}

/// Each verdict signed with the hub key, bound to the node key and the filing it answers (on the
/// blocking pool: a filing may list 10,000 paperwork).
async fn sign_verdicts(
    state: &AppState,
    node_key: stacknet_protocol::PublicKey,
    filing: stacknet_protocol::Sha256Digest,
    verdicts: BTreeMap<PaperworkId, Verdict>,
) -> Result<Vec<Signed<FilingVerdict>>, ApiError> {
    let key = state.hub_key.clone();
    tokio::task::spawn_blocking(move || {
        let hub = key.public_key();
        verdicts
            .into_iter()
            .map(|(paperwork, verdict)| {
                let body = FilingVerdict {
                    hub,
                    node_key,
                    filing,
                    paperwork,
                    verdict,
                };
                Signed::sign(body, &key).map_err(ApiError::internal)
            })
            .collect()
    })
    .await
    .map_err(ApiError::internal)?
}

/// A refusal for good: filing the paperwork again cannot change it.
fn refused(reason: String) -> Verdict {
    Verdict::Refused { reason, retry: false }
}

/// A refusal for now: the same paperwork filed later may settle.
fn not_yet(reason: String) -> Verdict {
    Verdict::Refused { reason, retry: true }
}

/// Checks every document's signatures against this hub and that it is `node`'s, spread over the
/// cores. Each comes back with its id (as computed) and the document or why it was refused.
async fn check_documents(
    docs: Vec<Signed<Paperwork>>,
    hub: stacknet_protocol::PublicKey,
    node: NodeKeyId,
    keys: Vec<(Timestamp, stacknet_protocol::PublicKey)>,
) -> Result<Vec<(PaperworkId, Result<Checked, String>)>, ApiError> {
    let keys = std::sync::Arc::new(keys);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let per = docs.len().div_ceil(workers).max(1);
    let mut chunks = Vec::new();
    let mut docs = docs;
    while !docs.is_empty() {
        let rest = docs.split_off(per.min(docs.len()));
        chunks.push(std::mem::replace(&mut docs, rest));
    }
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let keys = keys.clone();
            tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|doc| check_document(doc, &hub, node, &keys))
                    .collect::<Result<Vec<_>, ApiError>>()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.map_err(ApiError::internal)??);
    }
    Ok(out)
}

/// `keys`: when each sale of `node` bound which key (none: never sold); a paperwork must be signed
/// by the key in force when its contract was signed.
fn check_document(
    doc: Signed<Paperwork>,
    hub: &stacknet_protocol::PublicKey,
    node: NodeKeyId,
    keys: &[(Timestamp, stacknet_protocol::PublicKey)],
) -> Result<(PaperworkId, Result<Checked, String>), ApiError> {
    let signing = doc
        .signing_bytes()
        .map_err(|e| ApiError::invalid("paperwork", format!("cannot encode a paperwork: {e}")))?;
    let digest = stacknet_protocol::Sha256Digest::of(&signing);
    let mut half = [0u8; 16];
    half.copy_from_slice(&digest.0[..16]);
    // The same id as `Signed::<Paperwork>::id`, from the bytes computed once here.
    let id = PaperworkId::from_digest(half);
    let body = &doc.body;
    let contract = &body.contract.body;
    let signer = body.node_key.node_key_id();
    let signed_in_force = match crate::attribution::key_at(keys, contract.created_at) {
        Some(key) => body.node_key == key,
        None => signer == node,
    };
    let refusal = if contract.node_key != node && signer == node {
        Some(format!(
            "the contract is assigned to {}, but the paperwork is from {signer}",
            contract.node_key
        ))
    } else if contract.node_key != node {
        Some(format!(
            "paperwork of another node ({}), not of the filing key's {node}",
            contract.node_key
        ))
    } else if !signed_in_force {
        Some(format!(
            "paperwork of {node} signed by key {}, which did not operate it when its contract was signed",
            body.node_key.to_hex()
        ))
    } else if contract.hub != *hub {
        Some(format!(
            "the contract was signed by hub key {}, not by this hub ({})",
            contract.hub.to_hex(),
            hub.to_hex()
        ))
    } else if let Err(e) = body.node_key.verify(&signing, &doc.signature) {
        Some(format!("paperwork signature invalid: {e}"))
    } else {
        None
    };
    if let Some(reason) = refusal {
        return Ok((id, Err(reason)));
    }
    match paperwork_leaf(&doc) {
        Ok(leaf) => Ok((id, Ok(Checked { doc, leaf }))),
        Err(e) => Ok((id, Err(e.to_string()))),
    }
}

/// A document whose node signature holds, with its log leaf (both computed off the async threads).
/// Its contract's and fingerprint's signatures are not checked again here: [`judge`] only lets it
/// settle when its leaf is exactly that of the logged document, whose every signature the hub
/// checked when it accepted the task.
#[derive(Debug)]
struct Checked {
    doc: Signed<Paperwork>,
    leaf: stacknet_protocol::merkle::Hash,
}

/// The verdict on one checked document against its log entry; `None`: it may be settled.
fn judge(checked: &Checked, logged: &LoggedPaperwork, now: Timestamp, window_ms: i64) -> Option<Verdict> {
    if checked.leaf != logged.record.leaf_hash {
        return Some(refused(
            "differs from the paperwork logged when the task was accepted".into(),
        ));
    }
    if logged.filed_at.is_some() {
        return Some(Verdict::AlreadyFiled);
    }
    let open_at = logged.record.accepted_at.plus_ms(window_ms);
    if now.unix_ms() < open_at.unix_ms() {
        return Some(not_yet(format!(
            "still in its challenge window: it can be filed from {open_at}"
        )));
    }
    if !logged.captured {
        return Some(not_yet(
            "its cost is not captured yet; file it again shortly".into(),
        ));
    }
    None
}

/// What settling one paperwork needs: its captured cost and the terms of its contract.
#[derive(Debug, Clone)]
struct Due {
    id: PaperworkId,
    cost: Amount,
    contract: PromptContract,
    warm: bool,
}

impl Due {
    /// `id` is the document's id, computed when it was checked.
    fn of(id: PaperworkId, doc: &Signed<Paperwork>, cost: Amount) -> Self {
        Self {
            id,
            cost,
            contract: doc.body.contract.body.clone(),
            warm: doc.body.resources.warm,
        }
    }

    fn from_log(l: &LoggedPaperwork) -> Result<Self, String> {
        let doc: Signed<Paperwork> = serde_json::from_str(&l.record.json).map_err(|e| e.to_string())?;
        Ok(Self::of(l.record.id, &doc, l.record.cost))
    }
}

/// Settles `due` (checked, logged, captured, unfiled) as one settlement; verdicts per id.
async fn settle(
    store: &std::sync::Arc<dyn Store>,
    ledger: &std::sync::Arc<dyn LedgerStore>,
    due: Vec<Due>,
    now: Timestamp,
) -> Result<Vec<(PaperworkId, Verdict)>, ApiError> {
    let ids: Vec<PaperworkId> = due.iter().map(|d| d.id).collect();
    let settlement = settlement_id(&ids);
    let claimed: std::collections::BTreeSet<PaperworkId> = store
        .begin_settlement(settlement.clone(), ids.clone(), now)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .collect();
    let due: Vec<Due> = due.into_iter().filter(|d| claimed.contains(&d.id)).collect();
    let amounts = pay(ledger, &settlement, &due).await?;
    store
        .finish_settlement(settlement)
        .await
        .map_err(ApiError::internal)?;
    Ok(ids
        .into_iter()
        .map(|id| {
            let verdict = match amounts.get(&id) {
                Some(amount) => Verdict::Settled { amount: *amount },
                None => Verdict::AlreadyFiled,
            };
            (id, verdict)
        })
        .collect())
}

/// `stl_` + 32 hex characters of the SHA-256 of the ids and a random nonce: unique per settlement.
fn settlement_id(ids: &[PaperworkId]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
    }
    h.update(stacknet_protocol::Nonce::random().0);
    format!("stl_{}", hex::encode(&h.finalize()[..16]))
}

/// The ledger side of a settlement ([`stacknet_ledger::settlement`]): each paperwork's captured
/// cost split per its contract, summed per account, paid out of escrow; then the warm bonuses.
/// Idempotent by the settlement id. Returns what each paperwork's cost was.
async fn pay(
    ledger: &std::sync::Arc<dyn LedgerStore>,
    settlement: &str,
    due: &[Due],
) -> Result<BTreeMap<PaperworkId, Amount>, ApiError> {
    let terms: Vec<stacknet_ledger::Due<'_>> = due
        .iter()
        .map(|d| stacknet_ledger::Due {
            cost: d.cost,
            contract: &d.contract,
            warm: d.warm,
        })
        .collect();
    let transfers = stacknet_ledger::settlement(settlement, &terms).map_err(ApiError::internal)?;
    for chunk in transfers.shares.chunks(stacknet_ledger::MAX_BATCH_ENTRIES) {
        crate::money::apply_retrying(ledger, chunk.to_vec())
            .await
            .map_err(|e| ApiError::internal(format!("settlement {settlement}: {e}")))?;
    }
    for bonus in transfers.bonuses {
        match crate::money::apply_retrying(ledger, vec![bonus]).await {
            Ok(_) => {}
            Err(LedgerError::InsufficientFunds {
                available, amount, ..
            }) => {
                tracing::warn!(%available, bonus = %amount, %settlement, "the treasury cannot pay a warm bonus (fund it with `stacknet admin topup --treasury`); it is skipped");
            }
            Err(e) => return Err(ApiError::internal(format!("settlement {settlement}: {e}"))),
        }
    }
    Ok(due.iter().map(|d| (d.id, d.cost)).collect())
}

/// Finishes settlements a crash or a failing ledger left open, with the same transfer ids: at
/// start, and from the repair loop (`money::start_repair`) while the hub runs. A settlement a
/// filing is finishing at the same time is paid once: the second payer's transfers replay.
pub async fn recover(
    store: &std::sync::Arc<dyn Store>,
    ledger: &std::sync::Arc<dyn LedgerStore>,
) -> Result<(), String> {
    let open = store.open_settlements().await.map_err(|e| e.to_string())?;
    for (settlement, logged) in open {
        tracing::info!(%settlement, count = logged.len(), "finishing an open settlement");
        let due = logged.iter().map(Due::from_log).collect::<Result<Vec<_>, _>>()?;
        pay(ledger, &settlement, &due).await.map_err(|e| e.to_string())?;
        store
            .finish_settlement(settlement)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Redemption.

/// `POST /stacknet/v1/nodes/redeem` (body: a signed `redeem` NodeRequest): moves earnings to
/// payout-pending and starts the payout webhook.
pub async fn redeem(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Payout>, ApiError> {
    let req: Signed<NodeRequest> = signed_body(&body)?;
    let node = check_node_request(&state, &req).await?;
    let NodeAction::Redeem { amount, destination } = &req.body.action else {
        return Err(ApiError::invalid(
            "action",
            "this endpoint takes a `redeem` request",
        ));
    };
    let payout = crate::payout::start(&state, node, *amount, destination.clone()).await?;
    Ok(Json(payout))
}
