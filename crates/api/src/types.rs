//! Bodies of the hub's own endpoints, shared by the hub's handlers and its clients (node, CLI,
//! tests), so neither side keeps a copy. This file holds the hub's description and filing; the
//! admin API and money after the task have their own modules, re-exported here.

mod admin;
mod attribution;
mod log;
mod market;
mod settle;
mod validate;

pub use admin::{
    KeyRole, NewKey, NewKeyRequest, NewStack, Price, PriceList, ReferralShare, RevokedKey, SetPrice, Stack,
    StackList, TopUp, TopUpAnswer,
};
pub use attribution::{
    Collected, Injection, InjectionList, InjectionSpec, NodeReferral, Referral, ReferralList, Skill,
    SkillList, SkillSpec,
};
pub use log::{ConsistencyProof, ConsistencyQuery, InclusionProof, InclusionQuery, LogCheckpoint};
pub use market::{BindingList, BuyKey, KeyState, Listing, ListingList, Sale};
pub use settle::{
    Balance, Direction, LoggedPage, NodeStatement, PaymentAnswer, PaymentEvent, Payout, PayoutAck,
    PayoutCallback, PayoutCallbackAnswer, PayoutRequest, PayoutState, StackStatement, Statement,
    StatementLine, StatementQuery, LOGGED_PAGE_LEAVES,
};
pub use validate::{
    kept_files, Assignment, Assignments, AttestationList, AttestationQuery, KeptFiles, NodeTopUp, Round,
    Slash, StakeStatus, TaskOutcome, Unbonding, ValidationAck, KEEP_MEDIA_BYTES,
};

use serde::{Deserialize, Serialize};
use stacknet_protocol::filing::Filing;
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{Amount, NodeKeyId, PublicKey, Signed};

/// Every refusal, on every endpoint (and as the last event of a refused stream), OpenAI's shape:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `billing_error`, `api_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// A stable code to match on (`invalid_api_key`, `insufficient_balance`, ...).
    pub code: Option<String>,
}

impl ErrorBody {
    /// The message of an error body, from any JSON a server answered with.
    pub fn message_of(v: &serde_json::Value) -> Option<String> {
        ErrorBody::deserialize(v).ok().map(|b| b.error.message)
    }
}

/// `GET /stacknet/v1/hub`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubInfo {
    /// The hub key that signs contracts, checkpoints and filing verdicts.
    pub hub_key: PublicKey,
    pub protocol_version: u64,
    pub software: String,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    /// Nodes connected now.
    pub nodes: u64,
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// Who serves it now and how long a request would wait (a Stacknet extension; OpenAI clients
    /// ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
}

/// Whether anyone can serve a model now, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// Connected nodes that serve it and may be routed tasks (bonded, not suspended).
    pub nodes: u64,
    /// Their task slots, and how many of those are free now.
    pub slots: u64,
    pub free_slots: u64,
    /// Requests waiting in its queue now.
    pub waiting: u64,
    /// How long a request sent now would wait for a slot, in milliseconds (0: one is free).
    pub estimated_wait_ms: u64,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(models: impl IntoIterator<Item = (String, Option<Availability>)>) -> Self {
        Self {
            object: "list".to_owned(),
            data: models
                .into_iter()
                .map(|(id, availability)| Model {
                    id,
                    object: "model".to_owned(),
                    created: 0,
                    owned_by: "stacknet".to_owned(),
                    availability,
                })
                .collect(),
        }
    }
}

/// `GET /stacknet/v1/nodes`: every node the hub knows (connected, or with evidence), best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    pub object: String,
    pub data: Vec<NodeReport>,
}

/// A node's public record: what it serves now, its stake, and its reputation with the components
/// and evidence counts it is computed from. `GET /stacknet/v1/nodes/{id}` adds the evidence rows,
/// from which anyone can recompute `score` (the formula: the hub's `reputation` module, and the
/// README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node_key: NodeKeyId,
    pub connected: bool,
    /// When its current connection was made (uptime over longer spans: the guardians' telemetry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<stacknet_protocol::Timestamp>,
    /// The models it offers on its connection now, with their workloads.
    pub models: Vec<stacknet_protocol::wire::ModelOffer>,
    /// The models the hub has seen ready (loaded) on it: tasks of these are warm.
    pub ready: Vec<String>,
    pub in_flight: u32,
    pub max_concurrency: u32,
    pub bonded: Amount,
    pub suspended: bool,
    pub slashes: u64,
    /// In (0, 1]: `quality * latency`; new nodes start at 0.5.
    pub score: f64,
    /// Its quality is below the routing floor: it gets no client task, only guardians' probes.
    pub below_floor: bool,
    pub components: ScoreComponents,
    /// Evidence counts by kind, over all days (not decayed).
    pub counts: std::collections::BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    /// The newest guardians' telemetry reports about it (one node's record only), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telemetry: Vec<Signed<stacknet_protocol::attestation::Telemetry>>,
}

/// The answer to a guardian's telemetry: its id (hex SHA-256 of its signed bytes), and whether it
/// was new (a report handed in again is kept and counted once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryReceipt {
    pub id: String,
    pub new: bool,
}

/// The parts of a score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreComponents {
    /// Beta reputation `(good + 1) / (good + bad + 2)`.
    pub quality: f64,
    /// `reference / (reference + ttft_ms)`, 1 with no served task yet.
    pub latency: f64,
    /// Decayed, weighted sums of good and bad evidence.
    pub good: f64,
    pub bad: f64,
    /// Decayed mean time to first output of the tasks it served, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// The UTC day (days since the Unix epoch) the decay counts ages from.
    pub as_of_day: i64,
}

/// One bucket of evidence: `count` observations of `kind` on UTC day `day`, and their summed
/// milliseconds (time to first output, for `served`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub day: i64,
    pub kind: String,
    pub count: u64,
    pub sum_ms: u64,
}

/// `POST /stacknet/v1/nodes/file`: a signed filing and the documents it lists.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilingRequest {
    pub filing: Signed<Filing>,
    /// The documents the filing lists, in any order.
    pub paperwork: Vec<Signed<Paperwork>>,
}

pub use stacknet_protocol::filing::{FilingVerdict, Verdict};

/// One paperwork's verdict in a filing answer, signed by the hub key.
pub type FiledPaperwork = Signed<FilingVerdict>;

/// The answer to a filing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilingAnswer {
    pub node_key: NodeKeyId,
    /// The total settled by this filing (the sum of the signed verdicts' amounts).
    pub settled: Amount,
    pub results: Vec<FiledPaperwork>,
}

#[cfg(test)]
mod tests;
