//! The Prompt Contract: the hub's signed promise of what a task is, who asked, what it may cost and who
//! gets paid. The node checks the hub's signature before it runs anything, and embeds the whole signed
//! contract in its paperwork, so settlement never has to trust the node about the terms.

use serde::{Deserialize, Serialize};

use crate::ids::{ContractId, InjectionId, NodeKeyId, SkillId, StackId, UserId};
use crate::keys::PublicKey;
use crate::signing::{Domain, SignedBody};
use crate::values::{Amount, Nonce, Timestamp};

/// Basis points in a whole: shares of a split add up to this.
pub const BPS_TOTAL: u32 = 10_000;
/// Tokens per price unit: prices are per million tokens.
pub const TOKENS_PER_PRICE_UNIT: i128 = 1_000_000;

/// The kind of work a task asks for; each maps to a backend on the node and an endpoint on the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Chat completions, including vision (images in messages), code generation and tool calling.
    Chat,
    /// Legacy text completions.
    Completion,
    Embedding,
    ImageGeneration,
    /// An image edited from an uploaded one (`/v1/images/edits`).
    ImageEdit,
    VideoGeneration,
    /// Text to speech.
    Speech,
    /// Speech to text.
    Transcription,
    CodeExecution,
    WebSearch,
    WebFetch,
    /// A call of a tool an operator installed on a node (an MCP server run in the node's sandbox).
    ToolCall,
}

/// Prices for one task, fixed when the contract is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTerms {
    /// Micro-credits per million input (prompt) tokens.
    pub input_per_mtok: Amount,
    /// Micro-credits per million output (completion) tokens.
    pub output_per_mtok: Amount,
    /// Micro-credits per request, whatever its size (embeddings are priced this way).
    pub per_request: Amount,
    /// Micro-credits per workload unit: an image, a second of audio or sandbox time, a page fetched.
    pub per_unit: Amount,
}

impl PriceTerms {
    /// The cost of `usage`: token charges rounded up to the next micro-credit (so a task never costs
    /// nothing by rounding), plus the fixed charges, capped at `max_cost`. `None` on overflow.
    ///
    /// Both sides are input (prices from a contract, usage from a node), and u64 counts times i64
    /// prices reach i128's limits when summed, so every step is checked.
    pub fn cost(&self, usage: &Usage, max_cost: Amount) -> Option<Amount> {
        let times = |count: u64, price: Amount| i128::from(count).checked_mul(i128::from(price.micros()));
        let token_micros = times(usage.input_tokens, self.input_per_mtok)?
            .checked_add(times(usage.output_tokens, self.output_per_mtok)?)?;
        let token_cost = token_micros
            .checked_add(TOKENS_PER_PRICE_UNIT - 1)?
            .div_euclid(TOKENS_PER_PRICE_UNIT);
        let total = token_cost
            .checked_add(i128::from(self.per_request.micros()))?
            .checked_add(times(usage.units, self.per_unit)?)?;
        let total = i64::try_from(total).ok()?;
        Some(Amount::from_micros(total.min(max_cost.micros())))
    }
}

/// What a task consumed. Counts stay far below 2^53, so they are plain JSON integers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Workload units (images, seconds of audio, pages); 0 for text.
    pub units: u64,
}

/// How the price of a task is shared, in basis points of the captured cost. Shares of parties that a
/// contract does not name (no referrer, no skills, no provider) go to the protocol treasury.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionSplit {
    /// The node that executed the task.
    pub node_bps: u32,
    /// The Stack the request came through (origination credit).
    pub stack_bps: u32,
    /// The Stack that brought the executing node to the network.
    pub node_referrer_bps: u32,
    /// Shared equally among the creators of the skills used.
    pub skills_bps: u32,
    pub model_provider_bps: u32,
    pub data_provider_bps: u32,
    pub protocol_bps: u32,
    /// Paid by the treasury on top of the node's share when the node served warm (1,000 = +10%).
    pub warm_bonus_bps: u32,
}

impl AttributionSplit {
    /// The network's default split, what a hub offers unless configured otherwise: 70% node, 10%
    /// originating stack, 5% node referrer, 5% skills, 4% model provider, 1% data provider, 5%
    /// protocol; +10% warm bonus.
    pub const DEFAULT: Self = Self {
        node_bps: 7_000,
        stack_bps: 1_000,
        node_referrer_bps: 500,
        skills_bps: 500,
        model_provider_bps: 400,
        data_provider_bps: 100,
        protocol_bps: 500,
        warm_bonus_bps: 1_000,
    };

    /// The shares (without the warm bonus) add up to exactly 100%.
    pub fn is_complete(&self) -> bool {
        let sum: u64 = [
            self.node_bps,
            self.stack_bps,
            self.node_referrer_bps,
            self.skills_bps,
            self.model_provider_bps,
            self.data_provider_bps,
            self.protocol_bps,
        ]
        .iter()
        .map(|&b| u64::from(b))
        .sum();
        sum == u64::from(BPS_TOTAL)
    }
}

/// Parties named by the contract besides the stack, the node and the skills' creators.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_referrer: Option<StackId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<StackId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_provider: Option<StackId>,
}

/// The body of a Prompt Contract, signed by the hub under `stacknet/contract/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptContract {
    pub id: ContractId,
    /// The hub key that signs this contract.
    pub hub: PublicKey,
    pub stack: StackId,
    pub user: UserId,
    /// The node the task is assigned to: paperwork for this contract from any other key is refused.
    pub node_key: NodeKeyId,
    pub workload: Workload,
    pub model: String,
    pub price: PriceTerms,
    /// The most this task may cost; held in escrow at admission.
    pub max_cost: Amount,
    pub split: AttributionSplit,
    pub parties: Parties,
    /// Sorted, without duplicates.
    pub skills: Vec<SkillId>,
    /// Each skill's royalty in basis points of the task's cost, in the order of `skills`; their sum
    /// is at most `split.skills_bps`, and what the royalties leave of the skills' share goes to the
    /// protocol treasury. Empty (and then left out of the JSON): the skills' share is divided equally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skill_royalties_bps: Vec<u32>,
    /// Sorted, without duplicates.
    pub injections: Vec<InjectionId>,
    pub created_at: Timestamp,
    /// After this the node must not start the task.
    pub expires_at: Timestamp,
    pub nonce: Nonce,
}

impl SignedBody for PromptContract {
    const DOMAIN: Domain = Domain::Contract;
}

/// True when `items` is strictly increasing: sorted with no duplicates.
pub fn is_sorted_unique<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] < w[1])
}
