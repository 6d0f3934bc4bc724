//! `GET /metrics`: the hub's counters in Prometheus text (OpenMetrics flavour), from one registry per
//! hub (no global recorder).
//!
//! - The OpenTelemetry GenAI server metrics (`gen_ai_server_request_duration_seconds`,
//!   `gen_ai_server_time_to_first_token_seconds`, `gen_ai_server_time_per_output_token_seconds`,
//!   `gen_ai_client_token_usage`) per task sent to a node, as the client saw it, with the tokens of
//!   the node's accepted paperwork ([`stacknet_api::metrics::GenAi`]).
//! - `stacknet_requests_total{workload, model, status}`: every API request by the status it was
//!   answered with (a stream counts when its headers go out; a stream that fails later shows in the
//!   GenAI duration's `error_type`). `model` is the request's only when some node served it
//!   recently, else `other`: a client cannot add series by inventing model names.
//! - `stacknet_hub_overhead_seconds`: the hub's own time in a served request (admission, hold,
//!   contract and node choice before the task went out; checks, log and capture after the node's
//!   paperwork came in), i.e. the request's time less the node's.
//! - Ledger entries applied (by kind, replays not counted), paperwork logged, payouts by outcome,
//!   validations decided, slashes; and, read when scraped, nodes connected, nodes and queued
//!   requests per model, the log's size.
//!
//! Nothing is labelled by API key, request, contract or node: per-node figures live in the registry
//! (`GET /stacknet/v1/nodes`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use stacknet_api::metrics::{histograms, workload_name, GenAi, Histograms, Operation};
use stacknet_ledger::{
    AccountId, Balance, Entry, LedgerStore, StatementLine, StoreFuture, Totals, TransferId, TransferOutcome,
    TransferRecord,
};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::Timestamp;

use crate::nodes::Nodes;
use crate::AppState;

/// The `model` label of a request for a model no node serves.
pub const OTHER_MODEL: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    workload: &'static str,
    model: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    workload: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The hub's metrics and the registry they are exported from.
#[derive(Debug)]
pub struct HubMetrics {
    registry: Registry,
    pub genai: GenAi,
    requests: Family<RequestLabels, Counter>,
    overhead: Histograms<WorkloadLabels>,
    nodes_connected: Gauge,
    model_nodes: Family<ModelLabels, Gauge>,
    queued: Family<ModelLabels, Gauge>,
    log_leaves: Gauge,
    logged: Counter,
    ledger_entries: Family<KindLabels, Counter>,
    payouts: Family<OutcomeLabels, Counter>,
    validations: Family<OutcomeLabels, Counter>,
    slashes: Family<OutcomeLabels, Counter>,
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HubMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let genai = GenAi::register(&mut registry);
        let requests = Family::default();
        registry.register(
            "stacknet_requests",
            "API requests by workload, model (`other`: one no node serves) and the HTTP status answered",
            Family::clone(&requests),
        );
        // 0.1 ms to 1.6 s, doubling.
        let overhead = histograms(|| Histogram::new(exponential_buckets(0.0001, 2.0, 15)));
        registry.register_with_unit(
            "stacknet_hub_overhead",
            "The hub's own time in a served request: before the task went to its node, and from the node's paperwork to the answer",
            Unit::Seconds,
            overhead.clone(),
        );
        let nodes_connected = Gauge::default();
        registry.register(
            "stacknet_nodes_connected",
            "Nodes connected to this hub now",
            nodes_connected.clone(),
        );
        let model_nodes = Family::default();
        registry.register(
            "stacknet_model_nodes",
            "Connected nodes serving each model",
            Family::clone(&model_nodes),
        );
        let queued = Family::default();
        registry.register(
            "stacknet_queue_depth",
            "Requests waiting for a node's slot, per model",
            Family::clone(&queued),
        );
        let log_leaves = Gauge::default();
        registry.register(
            "stacknet_log_leaves",
            "Paperwork in the Merkle log",
            log_leaves.clone(),
        );
        let logged = Counter::default();
        registry.register(
            "stacknet_log_appends",
            "Paperwork appended to the Merkle log by this hub",
            logged.clone(),
        );
        let ledger_entries = Family::default();
        registry.register(
            "stacknet_ledger_entries",
            "Ledger entries applied by this hub (replays not counted): transfer, hold, capture, release, expiry",
            Family::clone(&ledger_entries),
        );
        let payouts = Family::default();
        registry.register(
            "stacknet_payouts",
            "Payouts that reached a final state, by state: confirmed, failed",
            Family::clone(&payouts),
        );
        let validations = Family::default();
        registry.register(
            "stacknet_validations",
            "Validations of sampled tasks decided, by status",
            Family::clone(&validations),
        );
        let slashes = Family::default();
        registry.register(
            "stacknet_slashes",
            "Slashes recorded, by reason",
            Family::clone(&slashes),
        );
        Self {
            registry,
            genai,
            requests,
            overhead,
            nodes_connected,
            model_nodes,
            queued,
            log_leaves,
            logged,
            ledger_entries,
            payouts,
            validations,
            slashes,
        }
    }

    /// An API request answered with `status`; `model` as [`label_model`] gave it.
    pub fn request(&self, workload: Workload, model: String, status: u16) {
        let labels = RequestLabels {
            workload: workload_name(workload),
            model,
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// A task on a node ended: the GenAI metrics, and for a success the hub's own share of its time.
    pub fn task(&self, op: Operation<'_>, overhead: Option<Duration>) {
        self.genai.record(op);
        if let Some(overhead) = overhead {
            let labels = WorkloadLabels {
                workload: workload_name(op.workload),
            };
            self.overhead
                .get_or_create(&labels)
                .observe(overhead.as_secs_f64());
        }
    }

    /// `count` paperwork appended to the log.
    pub fn logged(&self, count: usize) {
        self.logged.inc_by(count as u64);
    }

    /// A ledger batch applied: its entries that moved something, by kind.
    pub fn ledger(&self, kinds: &[&'static str], outcomes: &[TransferOutcome]) {
        for (&kind, outcome) in kinds.iter().zip(outcomes) {
            if !outcome.replayed {
                self.ledger_entries.get_or_create(&KindLabels { kind }).inc();
            }
        }
    }

    /// `count` holds released by expiry.
    pub fn expired(&self, count: usize) {
        let labels = KindLabels { kind: "expiry" };
        self.ledger_entries.get_or_create(&labels).inc_by(count as u64);
    }

    /// A payout reached the final state `outcome`.
    pub fn payout(&self, outcome: &str) {
        self.count(&self.payouts, outcome);
    }

    /// A validation was decided with `status`.
    pub fn validation(&self, status: &str) {
        self.count(&self.validations, status);
    }

    /// A slash was recorded for `reason`.
    pub fn slash(&self, reason: &str) {
        self.count(&self.slashes, reason);
    }

    fn count(&self, family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        let labels = OutcomeLabels {
            outcome: outcome.to_owned(),
        };
        family.get_or_create(&labels).inc();
    }

    /// The text Prometheus scrapes, with the figures read now from `state` (nodes, queues, log).
    pub fn scrape(&self, state: &AppState) -> String {
        let connected = state.nodes.connected();
        self.nodes_connected.set(gauge(connected.len()));
        self.model_nodes.clear();
        self.queued.clear();
        for model in state.nodes.served_models() {
            let serving = connected.iter().filter(|n| n.serves(&model)).count();
            let labels = ModelLabels { model };
            self.model_nodes.get_or_create(&labels).set(gauge(serving));
            self.queued
                .get_or_create(&labels)
                .set(gauge(state.nodes.waiting(&labels.model)));
        }
        self.log_leaves
            .set(i64::try_from(state.log.size()).unwrap_or(i64::MAX));
        stacknet_api::metrics::encode(&self.registry)
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `model` label of a request for `model`: itself when some node serves it (or did recently),
/// else [`OTHER_MODEL`] (also for a request whose body could not be read).
pub fn label_model(nodes: &Nodes, model: Option<&str>) -> String {
    match model {
        Some(model) if nodes.knows_model(model) => model.to_owned(),
        _ => OTHER_MODEL.to_owned(),
    }
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.scrape(&state);
    (
        [(header::CONTENT_TYPE, stacknet_api::metrics::CONTENT_TYPE)],
        text,
    )
}

/// An entry's kind as `stacknet_ledger_entries_total` labels it.
fn entry_kind(entry: &Entry) -> &'static str {
    match entry {
        Entry::Transfer(t) if t.pending => "hold",
        Entry::Transfer(_) => "transfer",
        Entry::Post(_) => "capture",
        Entry::Void(_) => "release",
    }
}

/// The hub's ledger, counting what it applies ([`HubMetrics::ledger`], [`HubMetrics::expired`]).
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn LedgerStore>,
    metrics: Arc<HubMetrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn LedgerStore>, metrics: Arc<HubMetrics>) -> Self {
        Self { inner, metrics }
    }
}

impl LedgerStore for Metered {
    fn create_transfers(&self, batch: Vec<Entry>) -> StoreFuture<'_, Vec<TransferOutcome>> {
        Box::pin(async move {
            let kinds: Vec<&'static str> = batch.iter().map(entry_kind).collect();
            let outcomes = self.inner.create_transfers(batch).await?;
            self.metrics.ledger(&kinds, &outcomes);
            Ok(outcomes)
        })
    }

    fn expire_due(&self, now: Timestamp) -> StoreFuture<'_, Vec<TransferId>> {
        Box::pin(async move {
            let expired = self.inner.expire_due(now).await?;
            self.metrics.expired(expired.len());
            Ok(expired)
        })
    }

    fn balances(&self, accounts: Vec<AccountId>) -> StoreFuture<'_, Vec<Balance>> {
        self.inner.balances(accounts)
    }

    fn transfer(&self, id: TransferId) -> StoreFuture<'_, Option<TransferRecord>> {
        self.inner.transfer(id)
    }

    fn transfers_of(
        &self,
        account: AccountId,
        limit: u32,
        after: Option<u64>,
    ) -> StoreFuture<'_, Vec<StatementLine>> {
        self.inner.transfers_of(account, limit, after)
    }

    fn sum_check(&self) -> StoreFuture<'_, Totals> {
        self.inner.sum_check()
    }
}
