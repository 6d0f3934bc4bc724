//! Attribution (`/stacknet/v1/injections`, `/stacknet/v1/skills`, `/stacknet/v1/referrals`): what a
//! Stack adds to its requests, the skills it publishes for every Stack, and the codes with which it
//! brings nodes and Stacks to the network. Managed with an `owner` API key of the Stack.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stacknet_protocol::{Amount, InjectionId, NodeKeyId, SkillId, StackId, Timestamp};

/// The body of `POST /stacknet/v1/injections` (a new injection) and `PUT .../{id}` (its next
/// version, replacing every field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionSpec {
    pub name: String,
    /// A system message put before the request's own messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Tool definitions (OpenAI's `{"type": "function", "function": {...}}`) added to the request's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    /// The API keys (by the prefix they are listed with) whose requests it applies to; left out:
    /// every request of the Stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Applied to requests (a version with `false` turns it off; the versions stay, as proof).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// An injection's version, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    pub id: InjectionId,
    pub stack: StackId,
    /// 1 for the first, one more for each update.
    pub version: u64,
    #[serde(flatten)]
    pub spec: InjectionSpec,
    pub created_at: Timestamp,
}

/// `GET /stacknet/v1/injections`: the Stack's injections, each at its latest version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InjectionList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Injection>,
}

/// The body of `POST /stacknet/v1/skills` (publish) and `PUT .../{id}` (its next version).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A system message put before the request's own messages when the skill is invoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    /// The model a request gets when it names the skill as its model (`"model": "skill_..."`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The creator's royalty, in basis points of each task's cost, within the network's skills
    /// share (the hub scales the royalties of one request down together when they exceed it).
    #[serde(default)]
    pub royalty_bps: u32,
    /// Other Stacks may invoke it (the creator's own Stack always may).
    #[serde(default = "yes")]
    pub public: bool,
}

/// A skill as the registry lists it. `instructions` and `tools` are shown to the creator only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    pub id: SkillId,
    /// The Stack that published it, which its royalties credit.
    pub creator: StackId,
    pub version: u64,
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub royalty_bps: u32,
    pub public: bool,
    /// False once unpublished: no request may invoke it.
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    pub created_at: Timestamp,
    /// Tasks accepted with this skill.
    pub usage: u64,
    /// Royalties credited so far: what its `creator:skill_...` account holds plus what its Stack
    /// collected from it.
    pub earnings: Amount,
}

/// The answer to `POST /stacknet/v1/skills/{id}/collect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    pub skill: SkillId,
    /// The Stack credited.
    pub stack: StackId,
    pub amount: Amount,
    /// The ledger transfer (`royalty:<skill>:<n>`, the skill's n-th collection).
    pub transfer: String,
}

/// `GET /stacknet/v1/skills`: the public registry (every public, active skill) and, for an owner
/// key, the Stack's own skills too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkillList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Skill>,
}

/// A referral code of a Stack, and whom it brought.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// `ref_` + 32 hex characters.
    pub code: String,
    pub stack: StackId,
    pub created_at: Timestamp,
    /// Nodes registered with it: the Stack is their referrer in every contract.
    pub nodes: Vec<NodeKeyId>,
    /// Stacks that signed up with it: the Stack earns a share of their top-ups.
    pub stacks: Vec<StackId>,
}

/// `GET /stacknet/v1/referrals`: the Stack's codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Referral>,
    /// The share of a referred Stack's top-ups its referrer earns, in basis points.
    pub topup_share_bps: u32,
}

/// The answer to a node's signed `refer` request (`POST /stacknet/v1/nodes/referrer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReferral {
    pub node: NodeKeyId,
    pub referrer: StackId,
    pub since: Timestamp,
}
