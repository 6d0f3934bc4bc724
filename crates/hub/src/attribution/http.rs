//! The attribution endpoints: a Stack's injections, the skills registry, referral codes, and a
//! node's registration with a code. Changes need an `owner` key of the Stack (a node's, its Node
//! Key's signature); the skills registry is public.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use rand_core::RngCore;
use serde::Deserialize;
use serde_json::Value;
use stacknet_api::types::{
    Injection, InjectionList, InjectionSpec, NodeReferral, Referral, ReferralList, Skill, SkillList,
    SkillSpec,
};
use stacknet_ledger::AccountId;
use stacknet_protocol::filing::{NodeAction, NodeRequest};
use stacknet_protocol::{Amount, InjectionId, Signed, SkillId, StackId, Timestamp};

use super::{ReferrerDoc, SkillDoc, SkillVersion, INJECTION, NODE_REFERRER, REFERRAL, SKILL};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::settle::{check_node_request, signed_body};
use crate::store::DocRecord;
use crate::AppState;

/// The longest name, system prompt or instructions, and the most tools and keys one document may
/// carry: far above real use, far below what would bloat every request it shapes.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
pub const MAX_TOOLS: usize = 64;
pub const MAX_KEYS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

fn owner(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    state.api_keys.caller(headers)?.owner()
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_text(field: &str, text: Option<&String>) -> Result<(), ApiError> {
    match text {
        Some(t) if t.is_empty() || t.len() > MAX_TEXT_BYTES => Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to {MAX_TEXT_BYTES} bytes"),
        )),
        _ => Ok(()),
    }
}

/// Each tool is an OpenAI function tool with a name, and no two share one.
fn check_tools(tools: &[Value]) -> Result<(), ApiError> {
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid("tools", format!("at most {MAX_TOOLS} tools")));
    }
    let mut names = std::collections::HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::invalid(
                &param,
                "a tool must be {\"type\": \"function\", \"function\": {...}}",
            ));
        }
        let name = super::tool_name(tool)
            .filter(|n| !n.is_empty() && n.len() <= 64)
            .ok_or_else(|| ApiError::invalid(&param, "a tool's function needs a name of 1 to 64 bytes"))?;
        if !names.insert(name.clone()) {
            return Err(ApiError::invalid(&param, format!("two tools are named {name:?}")));
        }
    }
    if serde_json::to_vec(tools).map_or(usize::MAX, |b| b.len()) > MAX_TEXT_BYTES {
        return Err(ApiError::invalid(
            "tools",
            format!("tools must take at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_injection(spec: &InjectionSpec) -> Result<(), ApiError> {
    check_name(&spec.name)?;
    check_text("system", spec.system.as_ref())?;
    check_tools(&spec.tools)?;
    if spec.system.is_none() && spec.tools.is_empty() {
        return Err(ApiError::invalid(
            "system",
            "an injection needs a system prompt or tools",
        ));
    }
    if let Some(keys) = &spec.keys {
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(ApiError::invalid(
                "keys",
                format!("keys must name 1 to {MAX_KEYS} API key prefixes (leave it out for every key)"),
            ));
        }
        if let Some(k) = keys.iter().find(|k| {
            !k.starts_with(crate::auth::API_KEY_PREFIX) || k.len() != crate::auth::API_KEY_SHOWN_CHARS
        }) {
            return Err(ApiError::invalid(
                "keys",
                format!("{k:?} is not an API key prefix as listed (sk_ and 7 more characters)"),
            ));
        }
    }
    Ok(())
}

fn doc(
    kind: &str,
    id: String,
    version: u64,
    stack: StackId,
    json: &impl serde::Serialize,
) -> Result<DocRecord, ApiError> {
    Ok(DocRecord {
        kind: kind.to_owned(),
        id,
        version,
        stack: Some(stack),
        json: serde_json::to_string(json).map_err(ApiError::internal)?,
        created_at: Timestamp::now(),
    })
}

/// `GET /stacknet/v1/injections`.
pub async fn list_injections(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<InjectionList>, ApiError> {
    let caller = owner(&state, &headers)?;
    Ok(Json(InjectionList {
        object: "list".to_owned(),
        data: state.attribution.injections_of(caller.stack),
    }))
}

/// `POST /stacknet/v1/injections`.
pub async fn create_injection(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Injection>, ApiError> {
    let caller = owner(&state, &headers)?;
    let spec: InjectionSpec = json_body(&body)?;
    check_injection(&spec)?;
    let id = InjectionId::random();
    write_injection(&state, caller.stack, id, 1, spec).await
}

async fn write_injection(
    state: &AppState,
    stack: StackId,
    id: InjectionId,
    version: u64,
    spec: InjectionSpec,
) -> Result<Json<Injection>, ApiError> {
    let record = doc(INJECTION, id.to_string(), version, stack, &spec)?;
    let created_at = record.created_at;
    state.attribution.write(&*state.store, record).await?;
    Ok(Json(Injection {
        id,
        stack,
        version,
        spec,
        created_at,
    }))
}

/// The caller's injection `id` (another Stack's is as unknown as a missing one).
fn own_injection(state: &AppState, caller: &Caller, id: &str) -> Result<Injection, ApiError> {
    let id: InjectionId = id
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("id", e.to_string()))?;
    state
        .attribution
        .injection(id)
        .filter(|i| i.stack == caller.stack)
        .ok_or_else(|| ApiError::NotFound(format!("injection {id}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A past version (the latest when left out).
    pub version: Option<u64>,
}

/// `GET /stacknet/v1/injections/{id}` (`?version=N` for a past one: what it was when a contract
/// named it).
pub async fn get_injection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Injection>, ApiError> {
    let caller = state.api_keys.caller(&headers)?;
    let latest = own_injection(&state, &caller, &id)?;
    let Some(version) = q.version.filter(|v| *v != latest.version) else {
        return Ok(Json(latest));
    };
    let record = state
        .store
        .doc_versions(INJECTION.to_owned(), latest.id.to_string())
        .await?
        .into_iter()
        .find(|d| d.version == version)
        .ok_or_else(|| ApiError::NotFound(format!("version {version} of injection {}", latest.id)))?;
    Ok(Json(Injection {
        id: latest.id,
        stack: latest.stack,
        version,
        spec: serde_json::from_str(&record.json).map_err(ApiError::internal)?,
        created_at: record.created_at,
    }))
}

/// `PUT /stacknet/v1/injections/{id}`: its next version.
pub async fn update_injection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Injection>, ApiError> {
    let caller = owner(&state, &headers)?;
    let current = own_injection(&state, &caller, &id)?;
    let spec: InjectionSpec = json_body(&body)?;
    check_injection(&spec)?;
    write_injection(&state, caller.stack, current.id, current.version + 1, spec).await
}

/// `DELETE /stacknet/v1/injections/{id}`: a last version that applies to nothing.
pub async fn delete_injection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Injection>, ApiError> {
    let caller = owner(&state, &headers)?;
    let current = own_injection(&state, &caller, &id)?;
    if !current.spec.active {
        return Ok(Json(current));
    }
    let spec = InjectionSpec {
        active: false,
        ..current.spec
    };
    write_injection(&state, caller.stack, current.id, current.version + 1, spec).await
}

fn check_skill(state: &AppState, spec: &SkillSpec) -> Result<(), ApiError> {
    check_name(&spec.name)?;
    if spec.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::invalid(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    check_text("instructions", spec.instructions.as_ref())?;
    check_tools(&spec.tools)?;
    if spec.instructions.is_none() && spec.tools.is_empty() && spec.model.is_none() {
        return Err(ApiError::invalid(
            "instructions",
            "a skill needs instructions, tools or a model",
        ));
    }
    if let Some(m) = &spec.model {
        if m.is_empty() || m.len() > stacknet_api::request::MAX_MODEL_NAME_BYTES || m.starts_with("skill_") {
            return Err(ApiError::invalid(
                "model",
                "model must be 1 to 256 bytes and not a skill id",
            ));
        }
    }
    let share = state.config.split.skills_bps;
    if spec.royalty_bps > share {
        return Err(ApiError::invalid(
            "royalty_bps",
            format!("royalty_bps must be at most the network's skills share, {share} basis points"),
        ));
    }
    Ok(())
}

/// A skill as the registry shows it; `full` adds its instructions and tools (its creator asks).
async fn skill_json(state: &AppState, s: SkillVersion, usage: u64, full: bool) -> Result<Skill, ApiError> {
    let earnings = earnings(state, s.id).await?;
    let SkillSpec {
        name,
        description,
        instructions,
        tools,
        model,
        royalty_bps,
        public,
    } = s.doc.spec;
    Ok(Skill {
        id: s.id,
        creator: s.creator,
        version: s.version,
        name,
        description,
        model,
        royalty_bps,
        public,
        active: s.doc.active,
        instructions: instructions.filter(|_| full),
        tools: full.then_some(tools),
        created_at: s.created_at,
        usage,
        earnings,
    })
}

async fn skills_json(
    state: &AppState,
    skills: Vec<SkillVersion>,
    me: Option<StackId>,
) -> Result<Vec<Skill>, ApiError> {
    // What this hub counted is added first, so the counts include every task it accepted.
    if let Err(e) = state.attribution.flush_usage(&*state.store).await {
        tracing::warn!(error = %e, "could not add skill usage to the store");
    }
    let names = skills.iter().map(|s| super::usage_counter(s.id)).collect();
    let counts = state.store.counts(names).await?;
    let mut out = Vec::with_capacity(skills.len());
    for (s, usage) in skills.into_iter().zip(counts) {
        let full = Some(s.creator) == me;
        out.push(skill_json(state, s, usage, full).await?);
    }
    Ok(out)
}

/// The Stack of an owner key, if the request carries one (the registry is public without).
fn maybe_owner(state: &AppState, headers: &HeaderMap) -> Result<Option<StackId>, ApiError> {
    if crate::auth::bearer(headers).is_none() {
        return Ok(None);
    }
    let caller = state.api_keys.caller(headers)?;
    Ok((caller.role == crate::store::KeyRole::Owner).then_some(caller.stack))
}

/// `GET /stacknet/v1/skills`: every public, published skill, and the caller's own (with an owner key).
pub async fn list_skills(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SkillList>, ApiError> {
    let me = maybe_owner(&state, &headers)?;
    let skills: Vec<SkillVersion> = state
        .attribution
        .skills()
        .into_iter()
        .filter(|s| (s.doc.spec.public && s.doc.active) || Some(s.creator) == me)
        .collect();
    Ok(Json(SkillList {
        object: "list".to_owned(),
        data: skills_json(&state, skills, me).await?,
    }))
}

fn skill_id(id: &str) -> Result<SkillId, ApiError> {
    id.parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("id", e.to_string()))
}

/// `GET /stacknet/v1/skills/{id}`: public (a private one only for its creator).
pub async fn get_skill(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Skill>, ApiError> {
    let me = maybe_owner(&state, &headers)?;
    let id = skill_id(&id)?;
    let skill = state
        .attribution
        .skill(id)
        .filter(|s| s.doc.spec.public || Some(s.creator) == me)
        .ok_or_else(|| ApiError::NotFound(format!("skill {id}")))?;
    let mut out = skills_json(&state, vec![skill], me).await?;
    out.pop()
        .map(Json)
        .ok_or_else(|| ApiError::internal("a skill went missing"))
}

/// `POST /stacknet/v1/skills`: publishes a skill of the caller's Stack.
pub async fn create_skill(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Skill>, ApiError> {
    let caller = owner(&state, &headers)?;
    let spec: SkillSpec = json_body(&body)?;
    check_skill(&state, &spec)?;
    write_skill(
        &state,
        caller.stack,
        SkillId::random(),
        1,
        SkillDoc { spec, active: true },
    )
    .await
}

async fn write_skill(
    state: &AppState,
    stack: StackId,
    id: SkillId,
    version: u64,
    skill: SkillDoc,
) -> Result<Json<Skill>, ApiError> {
    let record = doc(SKILL, id.to_string(), version, stack, &skill)?;
    let created_at = record.created_at;
    state.attribution.write(&*state.store, record).await?;
    let written = SkillVersion {
        id,
        creator: stack,
        version,
        doc: skill,
        created_at,
    };
    let mut out = skills_json(state, vec![written], Some(stack)).await?;
    out.pop()
        .map(Json)
        .ok_or_else(|| ApiError::internal("a skill went missing"))
}

fn own_skill(state: &AppState, caller: &Caller, id: &str) -> Result<SkillVersion, ApiError> {
    let id = skill_id(id)?;
    let skill = state
        .attribution
        .skill(id)
        .ok_or_else(|| ApiError::NotFound(format!("skill {id}")))?;
    if skill.creator != caller.stack {
        return Err(ApiError::Forbidden(format!(
            "skill {id} belongs to another Stack"
        )));
    }
    Ok(skill)
}

/// `PUT /stacknet/v1/skills/{id}`: its next version (published again if it was not).
pub async fn update_skill(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Skill>, ApiError> {
    let caller = owner(&state, &headers)?;
    let current = own_skill(&state, &caller, &id)?;
    let spec: SkillSpec = json_body(&body)?;
    check_skill(&state, &spec)?;
    write_skill(
        &state,
        caller.stack,
        current.id,
        current.version + 1,
        SkillDoc { spec, active: true },
    )
    .await
}

/// `DELETE /stacknet/v1/skills/{id}`: unpublishes it; requests that name it get a 400 from now on.
/// Its royalties already credited stay its creator's.
pub async fn delete_skill(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Skill>, ApiError> {
    let caller = owner(&state, &headers)?;
    let current = own_skill(&state, &caller, &id)?;
    let doc = SkillDoc {
        spec: current.doc.spec.clone(),
        active: false,
    };
    if !current.doc.active {
        let mut out = skills_json(&state, vec![current], Some(caller.stack)).await?;
        return out
            .pop()
            .map(Json)
            .ok_or_else(|| ApiError::internal("a skill went missing"));
    }
    write_skill(&state, caller.stack, current.id, current.version + 1, doc).await
}

/// `GET /stacknet/v1/referrals`.
pub async fn list_referrals(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ReferralList>, ApiError> {
    let caller = owner(&state, &headers)?;
    Ok(Json(ReferralList {
        object: "list".to_owned(),
        data: state.attribution.referrals_of(caller.stack),
        topup_share_bps: state.config.referral_topup_bps,
    }))
}

/// `POST /stacknet/v1/referrals`: a new code of the caller's Stack.
pub async fn create_referral(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Referral>, ApiError> {
    let caller = owner(&state, &headers)?;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let code = format!("ref_{}", hex::encode(bytes));
    let record = doc(REFERRAL, code.clone(), 1, caller.stack, &serde_json::json!({}))?;
    let created_at = record.created_at;
    state.attribution.write(&*state.store, record).await?;
    Ok(Json(Referral {
        code,
        stack: caller.stack,
        created_at,
        nodes: Vec::new(),
        stacks: Vec::new(),
    }))
}

/// The Stack that made `code`; an unknown code is a 400 on `param`.
pub fn referrer_of(state: &AppState, code: &str, param: &str) -> Result<StackId, ApiError> {
    state
        .attribution
        .referral(code)
        .map(|(stack, _)| stack)
        .ok_or_else(|| ApiError::invalid(param, format!("{code:?} is not a referral code of this hub")))
}

/// Binds `id` (a node or a Stack, by `kind`) to the referrer of `code`, once: the same binding
/// again is answered as it stands, another one is a 409.
pub async fn bind_referrer(
    state: &AppState,
    kind: &str,
    id: String,
    code: &str,
    param: &str,
) -> Result<super::Referrer, ApiError> {
    let referrer = referrer_of(state, code, param)?;
    let existing = |state: &AppState| match kind {
        NODE_REFERRER => id.parse().ok().and_then(|n| state.attribution.node_referrer(n)),
        _ => id.parse().ok().and_then(|s| state.attribution.stack_referrer(s)),
    };
    if existing(state).is_none() {
        let record = doc(
            kind,
            id.clone(),
            1,
            referrer,
            &ReferrerDoc {
                code: code.to_owned(),
            },
        )?;
        if !state.store.put_doc(record.clone()).await? {
            // Another replica bound it first: its binding is the one.
            let now = state.store.doc_versions(kind.to_owned(), id.clone()).await?;
            state.attribution.apply(&now);
        } else {
            state.attribution.apply(&[record]);
        }
    }
    let bound = existing(state).ok_or_else(|| ApiError::internal("a referrer binding went missing"))?;
    if bound.stack != referrer {
        return Err(ApiError::Conflict(format!(
            "{id} was referred by {} already; a referrer never changes",
            bound.stack
        )));
    }
    Ok(bound)
}

/// `POST /stacknet/v1/nodes/referrer`: a Node Key registers with a referral code (signed `refer`).
pub async fn node_referrer(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<NodeReferral>, ApiError> {
    let req: Signed<NodeRequest> = signed_body(&body)?;
    let node = check_node_request(&state, &req).await?;
    let NodeAction::Refer { code } = &req.body.action else {
        return Err(ApiError::invalid(
            "action",
            "this endpoint takes a `refer` request",
        ));
    };
    let bound = bind_referrer(&state, NODE_REFERRER, node.to_string(), code, "code").await?;
    Ok(Json(NodeReferral {
        node,
        referrer: bound.stack,
        since: bound.since,
    }))
}

/// What a skill has earned: its creator account's balance plus every collection from it.
pub async fn earnings(state: &AppState, skill: SkillId) -> Result<Amount, ApiError> {
    let held = state
        .ledger
        .balance(AccountId::creator(skill))
        .await
        .map_err(ApiError::internal)?
        .posted;
    let (_, collected) = collections(state, skill).await?;
    Ok(Amount::from_micros(held.micros().saturating_add(collected)))
}

/// The id of a skill's `n`-th collection.
fn collection_id(skill: SkillId, n: u64) -> Result<stacknet_ledger::TransferId, ApiError> {
    stacknet_ledger::TransferId::new(&format!("royalty:{skill}:{n}")).map_err(ApiError::internal)
}

/// How many collections a skill had, and their sum: its collection transfers are numbered from 1,
/// so the ledger itself is the record (collections are rare: one lookup each).
async fn collections(state: &AppState, skill: SkillId) -> Result<(u64, i64), ApiError> {
    let (mut n, mut sum) = (0u64, 0i64);
    while let Some(t) = state
        .ledger
        .transfer(collection_id(skill, n + 1)?)
        .await
        .map_err(ApiError::internal)?
    {
        n += 1;
        sum = sum.saturating_add(t.amount.micros());
    }
    Ok((n, sum))
}

/// `POST /stacknet/v1/skills/{id}/collect`: moves the skill's royalties into its Stack's balance.
/// Two collections racing for one number: the ledger takes one (the other is a replay when it
/// asked the same amount, a 409 otherwise), so nothing moves twice.
pub async fn collect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<stacknet_api::types::Collected>, ApiError> {
    let caller = owner(&state, &headers)?;
    let skill = own_skill(&state, &caller, &id)?;
    let available = state
        .ledger
        .balance(AccountId::creator(skill.id))
        .await
        .map_err(ApiError::internal)?
        .available();
    if available.micros() <= 0 {
        return Err(ApiError::invalid(
            "id",
            format!("skill {} has no royalties to collect", skill.id),
        ));
    }
    let (n, _) = collections(&state, skill.id).await?;
    let transfer = collection_id(skill.id, n + 1)?;
    let t = stacknet_ledger::Transfer::posted(
        transfer.clone(),
        AccountId::creator(skill.id),
        AccountId::stack(caller.stack),
        available,
        stacknet_ledger::Reason::Royalty,
    );
    state
        .ledger
        .create_transfers(vec![t.into()])
        .await
        .map_err(|e| match e {
            stacknet_ledger::LedgerError::IdReused { .. }
            | stacknet_ledger::LedgerError::InsufficientFunds { .. } => ApiError::Conflict(format!(
                "another collection of skill {} ran at the same time: ask again",
                skill.id
            )),
            e => ApiError::internal(e),
        })?;
    Ok(Json(stacknet_api::types::Collected {
        skill: skill.id,
        stack: caller.stack,
        amount: available,
        transfer: transfer.to_string(),
    }))
}
