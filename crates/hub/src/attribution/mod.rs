//! Attribution: what shapes a request and who is credited for it.
//!
//! - **Injections** (`inj_`): a Stack's system prompts and tool definitions, put into its chat
//!   requests (all of them, or those of the API keys it names) before the contract is written.
//! - **Skills** (`skill_`): named bundles of instructions, tools and optionally a model that any
//!   Stack may publish and any Stack may invoke (`"skills": [...]` in the body, or the skill's id as
//!   the model); the creator earns its royalty out of the split's skills share at filing.
//! - **Referral codes** (`ref_`): a node that registers with a Stack's code has that Stack as its
//!   referrer in every later contract; a Stack that signs up with one earns its referrer a share of
//!   its top-ups ([`topup_share`]).
//! - **Model catalog parties**: the model and data providers an admin names for a model are the
//!   contract's `model_provider` and `data_provider`.
//!
//! The contract lists the skills (with their royalties) and injections that shaped the request,
//! and the node's fingerprint carries both lists, so an answer proves which of them shaped it.
//!
//! Storage: every injection, skill, code and binding is a versioned document in the store
//! ([`crate::store::DocStore`]); a version is never changed, so the registry keeps, as proof, what
//! each id meant at any time. The hub serves them from memory ([`Registry`]), loaded at start,
//! written through, and caught up with other replicas' writes by [`crate::refresh`].

pub mod http;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stacknet_api::types::{Injection, InjectionSpec, SkillSpec};
use stacknet_protocol::contract::{Parties, Workload};
use stacknet_protocol::{InjectionId, NodeKeyId, SkillId, StackId, Timestamp};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::{DocRecord, Store, StoreError};

/// Document kinds in the store.
pub const INJECTION: &str = "injection";
pub const SKILL: &str = "skill";
pub const REFERRAL: &str = "referral";
pub const NODE_REFERRER: &str = "node_referrer";
pub const STACK_REFERRER: &str = "stack_referrer";
pub const MODEL: &str = "model";
/// A Node Key's listing on the market (by id; a version per change), [`crate::market`].
pub const LISTING: &str = "listing";
/// A Node Key's rebinding (by id; version = the sale's sequence number).
pub const BINDING: &str = "binding";
/// A sale begun: written before its money moves, so a crash between the ledger and the binding is
/// finished at start ([`crate::market::recover`]).
pub const SALE: &str = "sale";

/// The most skills one request may invoke.
pub const MAX_SKILLS_PER_REQUEST: usize = 8;
/// The share of a referred Stack's top-ups its referrer earns, paid by the treasury: 5%.
pub const DEFAULT_REFERRAL_TOPUP_BPS: u32 = 500;
/// The counter of a skill's accepted tasks.
pub fn usage_counter(skill: SkillId) -> String {
    format!("skill_usage:{skill}")
}

/// A skill as stored: its spec, and whether it is still published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkillDoc {
    #[serde(flatten)]
    pub spec: SkillSpec,
    pub active: bool,
}

/// A skill's latest version, as the registry holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct SkillVersion {
    pub id: SkillId,
    pub creator: StackId,
    pub version: u64,
    pub doc: SkillDoc,
    pub created_at: Timestamp,
}

/// The document of a referrer binding (`node_referrer`, `stack_referrer`): the code used. The
/// referrer is the record's `stack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerDoc {
    pub code: String,
}

/// The document of a model's catalog parties (`model`, by model name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelParties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<StackId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_provider: Option<StackId>,
}

/// A binding to a referrer: who, with which code, since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    pub stack: StackId,
    pub code: String,
    pub since: Timestamp,
}

/// A Node Key's listing as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingDoc {
    /// The seller's signed `list` request: the offer a buyer's binding accepts.
    pub offer: stacknet_protocol::Signed<stacknet_protocol::filing::NodeRequest>,
    /// The sale's sequence number: one more than the id's bindings when it was listed.
    pub seq: u64,
    pub state: ListingState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListingState {
    Open,
    Withdrawn,
    Sold,
}

#[derive(Debug, Default)]
struct Inner {
    injections: HashMap<InjectionId, Injection>,
    skills: HashMap<SkillId, SkillVersion>,
    /// code -> (the Stack that made it, when)
    referrals: HashMap<String, (StackId, Timestamp)>,
    node_referrers: HashMap<NodeKeyId, Referrer>,
    stack_referrers: HashMap<StackId, Referrer>,
    models: HashMap<String, (u64, ModelParties)>,
    /// Each sold id's rebindings, by sequence number.
    bindings: HashMap<NodeKeyId, BTreeMap<u64, stacknet_protocol::binding::Rebinding>>,
    /// The key a sale bound to an id, for the id it operates.
    operators: HashMap<stacknet_protocol::PublicKey, NodeKeyId>,
    listings: HashMap<NodeKeyId, (u64, ListingDoc)>,
}

/// The registry in memory; see the module documentation.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Inner>,
    /// Tasks accepted per skill, not yet added to the store's counters.
    usage: Mutex<BTreeMap<SkillId, u64>>,
}

/// What the registry added to one request: the contract's lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shaped {
    /// Sorted, unique.
    pub skills: Vec<SkillId>,
    /// In the order of `skills`; empty when no skill was invoked.
    pub royalties: Vec<u32>,
    /// Sorted, unique.
    pub injections: Vec<InjectionId>,
    /// The body was changed (skills taken out, a skill's model put in, injected messages or tools).
    pub changed: bool,
}

impl Registry {
    /// Applies documents as read from the store (any order; a later version wins).
    pub fn apply(&self, docs: &[DocRecord]) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        for doc in docs {
            if let Err(why) = inner.apply(doc) {
                tracing::warn!(kind = %doc.kind, id = %doc.id, version = doc.version, "registry document skipped: {why}");
            }
        }
    }

    /// Writes a document's version to the store, then applies it here. A version written before
    /// (by another request, or another replica) is a 409: the caller read a stale version.
    pub async fn write(&self, store: &dyn Store, doc: DocRecord) -> Result<(), ApiError> {
        let (kind, id, version) = (doc.kind.clone(), doc.id.clone(), doc.version);
        if !store.put_doc(doc.clone()).await? {
            return Err(ApiError::Conflict(format!(
                "{kind} {id} already has a version {version}: read it again and retry"
            )));
        }
        self.apply(&[doc]);
        Ok(())
    }

    pub fn injection(&self, id: InjectionId) -> Option<Injection> {
        self.inner.read().ok()?.injections.get(&id).cloned()
    }

    /// The Stack's injections at their latest versions, by id.
    pub fn injections_of(&self, stack: StackId) -> Vec<Injection> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let mut out: Vec<Injection> = inner
            .injections
            .values()
            .filter(|i| i.stack == stack)
            .cloned()
            .collect();
        out.sort_by_key(|i| i.id);
        out
    }

    pub fn skill(&self, id: SkillId) -> Option<SkillVersion> {
        self.inner.read().ok()?.skills.get(&id).cloned()
    }

    /// Every skill at its latest version, by id.
    pub fn skills(&self) -> Vec<SkillVersion> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let mut out: Vec<SkillVersion> = inner.skills.values().cloned().collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// The Stack that made a referral code, if it is one.
    pub fn referral(&self, code: &str) -> Option<(StackId, Timestamp)> {
        self.inner.read().ok()?.referrals.get(code).copied()
    }

    /// A Stack's referral codes, each with the nodes and Stacks it brought.
    pub fn referrals_of(&self, stack: StackId) -> Vec<stacknet_api::types::Referral> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let mut out: Vec<stacknet_api::types::Referral> = inner
            .referrals
            .iter()
            .filter(|(_, (s, _))| *s == stack)
            .map(|(code, (s, at))| {
                let mut nodes: Vec<NodeKeyId> = inner
                    .node_referrers
                    .iter()
                    .filter(|(_, r)| r.code == *code)
                    .map(|(n, _)| *n)
                    .collect();
                nodes.sort();
                let mut stacks: Vec<StackId> = inner
                    .stack_referrers
                    .iter()
                    .filter(|(_, r)| r.code == *code)
                    .map(|(s, _)| *s)
                    .collect();
                stacks.sort();
                stacknet_api::types::Referral {
                    code: code.clone(),
                    stack: *s,
                    created_at: *at,
                    nodes,
                    stacks,
                }
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.code).cmp(&(b.created_at, &b.code)));
        out
    }

    pub fn node_referrer(&self, node: NodeKeyId) -> Option<Referrer> {
        self.inner.read().ok()?.node_referrers.get(&node).cloned()
    }

    pub fn stack_referrer(&self, stack: StackId) -> Option<Referrer> {
        self.inner.read().ok()?.stack_referrers.get(&stack).cloned()
    }

    /// The model's catalog parties and the version they are at (0: none set).
    pub fn model_parties(&self, model: &str) -> (u64, ModelParties) {
        self.inner
            .read()
            .ok()
            .and_then(|i| i.models.get(model).cloned())
            .unwrap_or_default()
    }

    /// The id's rebindings, first sale first.
    pub fn chain(&self, node: NodeKeyId) -> Vec<stacknet_protocol::binding::Rebinding> {
        self.inner
            .read()
            .ok()
            .and_then(|i| i.bindings.get(&node).map(|b| b.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// The key a sale bound to `node` last (`None`: never sold; its first key operates it).
    pub fn operating_key(&self, node: NodeKeyId) -> Option<stacknet_protocol::PublicKey> {
        let inner = self.inner.read().ok()?;
        let chain = inner.bindings.get(&node)?;
        chain.values().next_back().map(|r| r.binding.body.to_key)
    }

    /// When each sale of `node` bound which key, in order.
    pub fn key_times(&self, node: NodeKeyId) -> Vec<(Timestamp, stacknet_protocol::PublicKey)> {
        self.chain(node)
            .iter()
            .map(|r| (r.binding.body.created_at, r.binding.body.to_key))
            .collect()
    }

    /// The id `key` acts for: the one a sale bound it to, else its own; refused for a key a sale
    /// replaced.
    pub fn acting_id(&self, key: &stacknet_protocol::PublicKey) -> Result<NodeKeyId, String> {
        let inner = self
            .inner
            .read()
            .map_err(|_| "the registry's lock was poisoned".to_owned())?;
        if let Some(id) = inner.operators.get(key) {
            return Ok(*id);
        }
        let own = key.node_key_id();
        if inner.bindings.contains_key(&own) {
            return Err(format!(
                "Node Key {own} was sold: key {} no longer operates it",
                key.to_hex()
            ));
        }
        // A key a later sale replaced, operating an id it had bought.
        if inner
            .bindings
            .values()
            .any(|chain| chain.values().any(|r| r.binding.body.to_key == *key))
        {
            return Err(format!("key {} was sold on: it operates nothing", key.to_hex()));
        }
        Ok(own)
    }

    /// The id's listing and its version (`None`: never listed).
    pub fn listing(&self, node: NodeKeyId) -> Option<(u64, ListingDoc)> {
        self.inner.read().ok()?.listings.get(&node).cloned()
    }

    /// The open listings, by id.
    pub fn open_listings(&self) -> Vec<(NodeKeyId, ListingDoc)> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let mut out: Vec<(NodeKeyId, ListingDoc)> = inner
            .listings
            .iter()
            .filter(|(_, (_, l))| l.state == ListingState::Open)
            .map(|(n, (_, l))| (*n, l.clone()))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }

    /// The contract's parties for a task of `model` on `node`.
    pub fn parties(&self, model: &str, node: NodeKeyId) -> Parties {
        let (_, m) = self.model_parties(model);
        Parties {
            node_referrer: self.node_referrer(node).map(|r| r.stack),
            model_provider: m.model_provider,
            data_provider: m.data_provider,
        }
    }

    /// Counts a task accepted with `skills` (added to the store by [`Registry::flush_usage`]).
    pub fn used(&self, skills: &[SkillId]) {
        if skills.is_empty() {
            return;
        }
        if let Ok(mut usage) = self.usage.lock() {
            for s in skills {
                *usage.entry(*s).or_default() += 1;
            }
        }
    }

    /// Adds the usage counted since the last flush to the store's counters (put back on failure).
    pub async fn flush_usage(&self, store: &dyn Store) -> Result<(), StoreError> {
        let taken = match self.usage.lock() {
            Ok(mut usage) => std::mem::take(&mut *usage),
            Err(_) => return Err(StoreError::Poisoned),
        };
        if taken.is_empty() {
            return Ok(());
        }
        let rows = taken.iter().map(|(s, n)| (usage_counter(*s), *n)).collect();
        if let Err(e) = store.add_counts(rows).await {
            if let Ok(mut usage) = self.usage.lock() {
                for (s, n) in taken {
                    *usage.entry(s).or_default() += n;
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Shapes a request of `caller` before its contract is written: takes its `skills` (and a
    /// skill named as its model), checks each may be invoked, and for chat puts the Stack's
    /// injections and the skills' instructions and tools into the body. Skills on another workload
    /// are a 400; injections apply to chat only (they are system prompts and tools).
    pub fn shape(
        &self,
        caller: &Caller,
        workload: Workload,
        body: &mut Value,
        skills_bps: u32,
    ) -> Result<Shaped, ApiError> {
        let Some(obj) = body.as_object_mut() else {
            return Ok(Shaped::default());
        };
        let skills_field = obj.remove("skills");
        let had_skills = skills_field.is_some();
        let mut invoked: Vec<SkillId> = match skills_field {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > MAX_SKILLS_PER_REQUEST {
                    return Err(ApiError::invalid(
                        "skills",
                        format!("a request may invoke at most {MAX_SKILLS_PER_REQUEST} skills"),
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                            ApiError::invalid(
                                &format!("skills[{i}]"),
                                "skills[i] must be a skill id (skill_...)",
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "skills",
                    "skills must be an array of skill ids",
                ))
            }
        };
        let alias: Option<SkillId> = match obj.get("model").and_then(Value::as_str) {
            Some(m) if m.starts_with("skill_") => Some(
                m.parse()
                    .map_err(|_| ApiError::invalid("model", format!("{m} is not a skill id")))?,
            ),
            _ => None,
        };
        if let Some(skill) = alias {
            invoked.push(skill);
        }
        if workload != Workload::Chat {
            if !invoked.is_empty() {
                return Err(ApiError::invalid(
                    "skills",
                    "skills apply to chat completions only",
                ));
            }
            return Ok(Shaped::default());
        }
        invoked.sort();
        invoked.dedup();
        let inner = self
            .inner
            .read()
            .map_err(|_| ApiError::internal("the registry's lock was poisoned"))?;
        let mut skills = Vec::with_capacity(invoked.len());
        for id in &invoked {
            let skill = inner
                .skills
                .get(id)
                .ok_or_else(|| ApiError::invalid("skills", format!("skill {id} does not exist")))?;
            if !skill.doc.active {
                return Err(ApiError::invalid("skills", format!("skill {id} was unpublished")));
            }
            if !skill.doc.spec.public && skill.creator != caller.stack {
                return Err(ApiError::invalid("skills", format!("skill {id} is not public")));
            }
            skills.push(skill);
        }
        if let Some(alias) = alias {
            let model = inner
                .skills
                .get(&alias)
                .and_then(|s| s.doc.spec.model.clone())
                .ok_or_else(|| {
                    ApiError::invalid("model", format!("skill {alias} names no model to use as one"))
                })?;
            obj.insert("model".to_owned(), Value::String(model));
        }
        let mut injections: Vec<&Injection> = inner
            .injections
            .values()
            .filter(|i| i.stack == caller.stack && i.spec.active)
            .filter(|i| i.spec.keys.as_ref().is_none_or(|k| k.contains(&caller.prefix)))
            .collect();
        injections.sort_by_key(|i| i.id);
        let mut system = Vec::new();
        let mut tools = Vec::new();
        let changed = had_skills || alias.is_some();
        for i in &injections {
            system.extend(i.spec.system.iter().map(|s| (format!("injection {}", i.id), s)));
            tools.extend(i.spec.tools.iter().map(|t| (format!("injection {}", i.id), t)));
        }
        for s in &skills {
            system.extend(
                s.doc
                    .spec
                    .instructions
                    .iter()
                    .map(|x| (format!("skill {}", s.id), x)),
            );
            tools.extend(s.doc.spec.tools.iter().map(|t| (format!("skill {}", s.id), t)));
        }
        let (system_empty, tools_empty) = (system.is_empty(), tools.is_empty());
        if !system.is_empty() {
            let own = match obj.remove("messages") {
                Some(Value::Array(m)) => m,
                _ => return Err(ApiError::invalid("messages", "messages must be an array")),
            };
            let mut messages: Vec<Value> = system
                .into_iter()
                .map(|(_, content)| json!({"role": "system", "content": content}))
                .collect();
            messages.extend(own);
            obj.insert("messages".to_owned(), Value::Array(messages));
        }
        if !tools.is_empty() {
            let mut all = match obj.remove("tools") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(t)) => t,
                Some(_) => return Err(ApiError::invalid("tools", "tools must be an array")),
            };
            let mut names: HashSet<String> = all.iter().filter_map(tool_name).collect();
            for (source, tool) in tools {
                if let Some(name) = tool_name(tool) {
                    if !names.insert(name.clone()) {
                        return Err(ApiError::invalid(
                            "tools",
                            format!(
                                "the tool {name:?} of {source} has the name of another tool of this request"
                            ),
                        ));
                    }
                }
                all.push(tool.clone());
            }
            obj.insert("tools".to_owned(), Value::Array(all));
        }
        Ok(Shaped {
            changed: changed || !system_empty || !tools_empty,
            royalties: royalties(
                &skills.iter().map(|s| s.doc.spec.royalty_bps).collect::<Vec<_>>(),
                skills_bps,
            ),
            skills: invoked,
            injections: injections.iter().map(|i| i.id).collect(),
        })
    }
}

/// The key in force at `at` among sales `(took effect, key bound)` in order; `None` before the first.
pub fn key_at(
    times: &[(Timestamp, stacknet_protocol::PublicKey)],
    at: Timestamp,
) -> Option<stacknet_protocol::PublicKey> {
    times.iter().rev().find(|(t, _)| *t <= at).map(|(_, k)| *k)
}

/// A tool definition's function name.
pub fn tool_name(tool: &Value) -> Option<String> {
    tool.get("function")?.get("name")?.as_str().map(str::to_owned)
}

/// The royalties written into a contract: each skill's own, or, when together they ask more than
/// the skills' share, each scaled down in proportion (rounded down), so they always fit in it.
pub fn royalties(asked: &[u32], skills_bps: u32) -> Vec<u32> {
    let sum: u64 = asked.iter().map(|&r| u64::from(r)).sum();
    if sum <= u64::from(skills_bps) {
        return asked.to_vec();
    }
    asked
        .iter()
        .map(|&r| u32::try_from(u64::from(r) * u64::from(skills_bps) / sum).unwrap_or(0))
        .collect()
}

/// A referrer's share of a top-up of `amount` micro-credits.
pub fn topup_share(amount: i64, bps: u32) -> i64 {
    let v = i128::from(amount) * i128::from(bps.min(stacknet_protocol::contract::BPS_TOTAL))
        / i128::from(stacknet_protocol::contract::BPS_TOTAL);
    i64::try_from(v).unwrap_or(0)
}

/// A document's id, as the typed id its kind uses.
fn parse_id<T: std::str::FromStr<Err = stacknet_protocol::IdError>>(id: &str) -> Result<T, String> {
    id.parse().map_err(|e: stacknet_protocol::IdError| e.to_string())
}

impl Inner {
    fn apply(&mut self, doc: &DocRecord) -> Result<(), String> {
        let stack = || doc.stack.ok_or_else(|| "it names no Stack".to_owned());
        let bad = |e: serde_json::Error| e.to_string();
        match doc.kind.as_str() {
            INJECTION => {
                let id: InjectionId = parse_id(&doc.id)?;
                if self.injections.get(&id).is_some_and(|i| i.version >= doc.version) {
                    return Ok(());
                }
                let spec: InjectionSpec = serde_json::from_str(&doc.json).map_err(bad)?;
                self.injections.insert(
                    id,
                    Injection {
                        id,
                        stack: stack()?,
                        version: doc.version,
                        spec,
                        created_at: doc.created_at,
                    },
                );
            }
            SKILL => {
                let id: SkillId = parse_id(&doc.id)?;
                if self.skills.get(&id).is_some_and(|s| s.version >= doc.version) {
                    return Ok(());
                }
                let skill: SkillDoc = serde_json::from_str(&doc.json).map_err(bad)?;
                self.skills.insert(
                    id,
                    SkillVersion {
                        id,
                        creator: stack()?,
                        version: doc.version,
                        doc: skill,
                        created_at: doc.created_at,
                    },
                );
            }
            REFERRAL => {
                self.referrals
                    .entry(doc.id.clone())
                    .or_insert((stack()?, doc.created_at));
            }
            NODE_REFERRER | STACK_REFERRER => {
                let binding: ReferrerDoc = serde_json::from_str(&doc.json).map_err(bad)?;
                let referrer = Referrer {
                    stack: stack()?,
                    code: binding.code,
                    since: doc.created_at,
                };
                // Version 1 is the only one: the first binding stays.
                if doc.kind == NODE_REFERRER {
                    let node: NodeKeyId = parse_id(&doc.id)?;
                    self.node_referrers.entry(node).or_insert(referrer);
                } else {
                    let referred: StackId = parse_id(&doc.id)?;
                    self.stack_referrers.entry(referred).or_insert(referrer);
                }
            }
            MODEL => {
                if self.models.get(&doc.id).is_some_and(|(v, _)| *v >= doc.version) {
                    return Ok(());
                }
                let parties: ModelParties = serde_json::from_str(&doc.json).map_err(bad)?;
                self.models.insert(doc.id.clone(), (doc.version, parties));
            }
            LISTING => {
                let node: NodeKeyId = parse_id(&doc.id)?;
                if self.listings.get(&node).is_some_and(|(v, _)| *v >= doc.version) {
                    return Ok(());
                }
                let listing: ListingDoc = serde_json::from_str(&doc.json).map_err(bad)?;
                self.listings.insert(node, (doc.version, listing));
            }
            BINDING => {
                let node: NodeKeyId = parse_id(&doc.id)?;
                let rebinding: stacknet_protocol::binding::Rebinding =
                    serde_json::from_str(&doc.json).map_err(bad)?;
                if rebinding.binding.body.seq != doc.version || rebinding.binding.body.node != node {
                    return Err("a binding stored under another id or version".to_owned());
                }
                let chain = self.bindings.entry(node).or_default();
                chain.entry(doc.version).or_insert(rebinding);
                // The last binding's key operates the id; the keys before it operate nothing.
                for r in chain.values() {
                    self.operators.remove(&r.binding.body.to_key);
                }
                if let Some(last) = chain.values().next_back() {
                    self.operators.insert(last.binding.body.to_key, node);
                }
            }
            SALE => {}
            // Video jobs share the documents table; they are not the registry's.
            crate::videos::JOB_KIND => {}
            // Which hub key the database belongs to: read at start, nothing to hold here.
            crate::HUB_KEY_DOC => {}
            other => return Err(format!("unknown kind {other:?}")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn royalties_that_fit_are_kept_and_those_that_do_not_are_scaled_down_together() {
        assert_eq!(royalties(&[300, 150], 500), vec![300, 150]);
        // 600 asked of 500: each gets 5/6 of its own, rounded down.
        assert_eq!(royalties(&[400, 200], 500), vec![333, 166]);
        assert!(royalties(&[10_000, 10_000, 1], 500).iter().sum::<u32>() <= 500);
        assert_eq!(royalties(&[], 500), Vec::<u32>::new());
    }

    #[test]
    fn a_referrers_share_of_a_topup_rounds_down() {
        assert_eq!(topup_share(1_000_000, 500), 50_000);
        assert_eq!(topup_share(19, 500), 0);
        assert_eq!(topup_share(i64::MAX, 10_000), i64::MAX);
    }
}
