//! The network's rules for stakes and validation: every number issue 11 calls a network setting,
//! in one place, so a private hub can change them (a minimum bond of 0, say) and tests can shorten
//! the periods.

use stacknet_protocol::values::MICROS_PER_CREDIT;
use stacknet_protocol::Amount;

/// Seven days: how long an unbonding amount stays slashable before its key can withdraw it.
pub const DEFAULT_UNBONDING_PERIOD_MS: u64 = 7 * 24 * 3_600_000;
/// Thirty days: how long a conviction keeps a key from tasks, attestations and probes.
pub const DEFAULT_SUSPENSION_MS: u64 = 30 * 24 * 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRules {
    /// A worker node is routed tasks only with at least this bonded.
    pub min_worker_bond: Amount,
    /// A validator's attestations count only with at least this bonded.
    pub min_validator_bond: Amount,
    pub unbonding_period_ms: u64,
    /// How long a conviction suspends the key, from its latest conviction. After it the key is
    /// routed again once it holds the minimum bond, sampled at the new-worker rate for good (a
    /// convicted worker never becomes established).
    pub suspension_ms: u64,
    /// Every one of a new worker's first tasks is checked.
    pub probation_tasks: u64,
    /// After probation: the share of tasks checked, in basis points, for a worker not yet
    /// established, and for one that is.
    pub new_sample_bps: u32,
    pub established_sample_bps: u32,
    /// The share of PASSed checks, in basis points, handed to a second validator: a FAIL there
    /// escalates to a committee as a first FAIL does, so a lazy or colluding checker's PASS is not
    /// the last word (canaries are what slash such a checker).
    pub second_opinion_bps: u32,
    /// A worker is established after this many checked tasks without a conviction.
    pub established_after_checks: u64,
    /// Validators in a committee, and the FAILs (citing an objective check) that convict.
    pub committee_size: usize,
    pub convict_threshold: usize,
    /// How long a validator has to commit to its verdict once assigned.
    pub commit_window_ms: u64,
    /// The share of the offender's bond a conviction (or a validator's fault) slashes, in basis points.
    pub slash_bps: u32,
    /// The share of a slashed amount paid to the validators whose verdicts convicted, split evenly;
    /// the rest goes to the treasury.
    pub convictor_reward_bps: u32,
    /// Paid from the treasury (the protocol share) to a validator for each check it reveals.
    pub verification_fee: Amount,
    /// Each validator is handed at least one canary (a task whose verdict the hub committed to in
    /// advance) per this many assignments.
    pub canary_every: u64,
}

/// Whole credits as an amount.
pub const fn credits(n: i64) -> Amount {
    Amount::from_micros(n * MICROS_PER_CREDIT)
}

impl Default for NetworkRules {
    fn default() -> Self {
        Self {
            min_worker_bond: credits(1_000),
            min_validator_bond: credits(10_000),
            unbonding_period_ms: DEFAULT_UNBONDING_PERIOD_MS,
            suspension_ms: DEFAULT_SUSPENSION_MS,
            probation_tasks: 20,
            new_sample_bps: 500,
            established_sample_bps: 200,
            second_opinion_bps: 1_000,
            established_after_checks: 100,
            committee_size: 5,
            convict_threshold: 3,
            commit_window_ms: 120_000,
            slash_bps: 1_000,
            convictor_reward_bps: 1_000,
            verification_fee: Amount::from_micros(1_000),
            canary_every: 50,
        }
    }
}
