//! The records the hub's store keeps, as every implementation reads and writes them.

use serde::{Deserialize, Serialize};
use stacknet_protocol::contract::PriceTerms;
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, StackId, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRecord {
    pub id: StackId,
    pub name: String,
    pub created_at: Timestamp,
}

/// An API key as stored: only the SHA-256 of the secret, plus a short prefix to recognise it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub hash: [u8; 32],
    pub prefix: String,
    pub stack: StackId,
    pub created_at: Timestamp,
    /// When the key was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<Timestamp>,
    pub role: KeyRole,
}

pub use stacknet_api::types::KeyRole;

/// A version of a registry document: an injection, a skill, a referral code, a referrer binding,
/// a model's providers. A few columns to find it by and the document itself as JSON, which only
/// its module (`crate::attribution`) reads. A version, once written, never changes: an update is
/// the next version, and two writers racing for one version get one winner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRecord {
    pub kind: String,
    pub id: String,
    pub version: u64,
    /// The Stack it belongs to (its owner, the referrer), where it has one.
    pub stack: Option<StackId>,
    pub json: String,
    pub created_at: Timestamp,
}

/// A file the hub serves by URL for a while (an image answered with `response_format: url`): its
/// bytes, kept in the database every hub process shares, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Random and unguessable: the URL is the capability to read it.
    pub id: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    /// The Stack whose request made it.
    pub stack: StackId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Registry rows written after a version, and the version to ask from next time. Every write to a
/// registry table stamps its row with the table's next version, so a hub that polls with the last
/// version it saw learns every change other processes made since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes<T> {
    pub records: Vec<T>,
    pub version: u64,
}

/// The price of one model, set by the admin; written into every contract for that model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub model: String,
    pub price: PriceTerms,
    pub updated_at: Timestamp,
}

/// An accepted paperwork, as appended to the log: the signed JSON as received and its Merkle leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperworkRecord {
    pub id: PaperworkId,
    pub contract: String,
    pub node_key: NodeKeyId,
    pub json: String,
    pub leaf_hash: [u8; 32],
    pub accepted_at: Timestamp,
    /// The escrow hold this task's cost is captured from (`None` for a free task).
    pub hold: Option<String>,
    /// The actual cost under the contract's price, captured from the hold.
    pub cost: Amount,
}

/// A paperwork in the log, with its place and settlement state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPaperwork {
    pub index: u64,
    pub record: PaperworkRecord,
    /// The actual cost was captured from escrow (set after the ledger write).
    pub captured: bool,
    pub filed_at: Option<Timestamp>,
}

/// Where a payout is: the API's type, so the store and the answers cannot drift apart.
pub use stacknet_api::types::PayoutState;

/// A payout as the store keeps it: exactly the API's payout (the redeem answer, a statement's
/// line), so the two cannot drift apart.
pub use stacknet_api::types::Payout as PayoutRecord;

/// What the hub keeps of an accepted text task for validators, for its challenge window (longer
/// while a validation of it is open, for good when it is a canary).
#[derive(Debug, Clone, PartialEq)]
pub struct KeptTask {
    pub paperwork: PaperworkId,
    pub node_key: NodeKeyId,
    pub accepted_at: Timestamp,
    /// The request as the task carried it.
    pub request: serde_json::Value,
    /// The `choices` the output digest covers.
    pub output: serde_json::Value,
    /// The token ids the commitment hashes (built-in text backends).
    pub tokens: Option<Vec<u32>>,
}

/// One validation case as stored: a few columns to find it by, and the case itself as JSON
/// (`crate::validate::Case`), which only the validation module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRecord {
    pub paperwork: PaperworkId,
    pub node_key: NodeKeyId,
    /// Still to be decided (a canary stays open: validators keep being handed it).
    pub open: bool,
    pub canary: bool,
    pub json: String,
}

/// A worker's counts, which set how often its tasks are sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks logged (and considered for sampling).
    pub tasks: u64,
    /// Checks decided `passed`.
    pub checks: u64,
    pub convictions: u64,
}

/// A validator the hub has heard from, and how many tasks it was handed since its last canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorRecord {
    pub key: stacknet_protocol::PublicKey,
    pub handed: u64,
    pub since_canary: u64,
}

/// A slash, as the API shows it.
pub use stacknet_api::types::Slash as SlashRecord;

/// Stake a key is unbonding: slashable until `withdrawable_at`, then the key's to withdraw. `id` is
/// the ledger transfer that moved it to the key's unbonding account; its withdrawal's transfer id
/// derives from it, so a withdrawal sent twice moves it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnbondingRecord {
    pub id: String,
    pub node_key: NodeKeyId,
    pub amount: Amount,
    pub created_at: Timestamp,
    pub withdrawable_at: Timestamp,
    /// When it went back to the key's earnings.
    pub withdrawn_at: Option<Timestamp>,
}

/// One bucket of a node's reputation evidence: how many times `kind` was observed of `node_key`
/// on UTC day `day` (days since the Unix epoch), and the sum of their milliseconds where the kind
/// has a duration (time to first output of a task served). The evidence a score is computed from
/// (see `crate::reputation`); buckets only grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRow {
    pub node_key: NodeKeyId,
    pub day: i64,
    /// A `crate::reputation::Kind`, as its snake_case name.
    pub kind: String,
    pub count: u64,
    pub sum_ms: u64,
}

/// The upper bounds, in milliseconds, of the latency buckets of a [`UsageRow`]; the last bucket
/// counts everything slower than the bound before it.
pub const LATENCY_BOUNDS_MS: [u64; LATENCY_BUCKETS - 1] =
    [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
pub const LATENCY_BUCKETS: usize = 12;

/// One minute (`minute`: minutes since the Unix epoch) of the tasks of one Stack on one node, for
/// one model and workload: the dashboard's figures (`crate::rollup`). Counts only grow, so replicas
/// add into the same rows, and every replica shows the same figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub minute: i64,
    pub stack: stacknet_protocol::StackId,
    pub node_key: NodeKeyId,
    pub model: String,
    /// A workload's name (`stacknet_api::metrics::workload_name`).
    pub workload: String,
    pub counts: UsageCounts,
}

/// What a [`UsageRow`] counts, and what rows add up to (a window's, a model's, a day's figures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: u64,
    /// Of `requests`, those that failed (for whatever reason: the node's, the client's, the hub's).
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the served ones cost their Stack, in micro-credits.
    pub cost_micros: u64,
    /// Requests by latency bucket ([`LATENCY_BOUNDS_MS`]): from the request's start to its end.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl UsageCounts {
    /// Adds `other`'s counts into these.
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a = a.saturating_add(b);
        }
    }
}
