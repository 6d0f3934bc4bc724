//! The node's counters for `GET /metrics` (served by `stacknet node --metrics-listen`), from one
//! registry per node: the OpenTelemetry GenAI server metrics of the tasks it ran (its backend's time,
//! as the node saw it, with the usage its paperwork states), tasks by outcome, refusals by code,
//! whether it is connected, its slots and the tasks holding them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use stacknet_api::metrics::{workload_name, GenAi, Operation};
use stacknet_protocol::wire::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    workload: &'static str,
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

/// The `error_type` (and `outcome`) of a task whose end could not be reported: the hub connection
/// went away.
pub(crate) const DISCONNECTED: &str = "disconnected";

/// The node's metrics and the registry they are exported from.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    genai: GenAi,
    tasks: Family<TaskLabels, Counter>,
    refused: Family<CodeLabels, Counter>,
    connected: Gauge,
    sessions: Counter,
    active: Gauge,
}

impl NodeMetrics {
    pub(crate) fn new(slots: u32) -> Self {
        let mut registry = Registry::default();
        let genai = GenAi::register(&mut registry);
        let tasks = Family::default();
        registry.register(
            "stacknet_node_tasks",
            "Tasks this node ran, by workload, model and outcome (done, an error code, disconnected)",
            Family::clone(&tasks),
        );
        let refused = Family::default();
        registry.register(
            "stacknet_node_refusals",
            "Tasks refused before they ran, by error code",
            Family::clone(&refused),
        );
        let connected = Gauge::default();
        registry.register(
            "stacknet_node_connected",
            "1 while a session with the hub is up (after its handshake), else 0",
            connected.clone(),
        );
        let sessions = Counter::default();
        registry.register(
            "stacknet_node_sessions",
            "Sessions with the hub that passed the handshake",
            sessions.clone(),
        );
        let slot_gauge = Gauge::<i64>::default();
        slot_gauge.set(i64::from(slots));
        registry.register(
            "stacknet_node_slots",
            "Tasks this node runs at once (its max concurrency)",
            slot_gauge,
        );
        let active = Gauge::default();
        registry.register(
            "stacknet_node_active_tasks",
            "Tasks holding a slot now",
            active.clone(),
        );
        Self {
            registry,
            genai,
            tasks,
            refused,
            connected,
            sessions,
            active,
        }
    }

    /// A task ended: `op.error` is its error frame's code, [`DISCONNECTED`], or `None` once its
    /// paperwork went out (`done`).
    pub(crate) fn task(&self, op: Operation<'_>) {
        self.genai.record(op);
        let labels = TaskLabels {
            workload: workload_name(op.workload),
            model: op.model.to_owned(),
            outcome: op.error.unwrap_or("done").to_owned(),
        };
        self.tasks.get_or_create(&labels).inc();
    }

    pub(crate) fn refused(&self, code: ErrorCode) {
        let labels = CodeLabels { code: code.as_str() };
        self.refused.get_or_create(&labels).inc();
    }

    /// A session passed its handshake (`true`) or ended (`false`).
    pub(crate) fn connected(&self, up: bool) {
        if up {
            self.sessions.inc();
        }
        self.connected.set(i64::from(up));
    }

    /// The text Prometheus scrapes, with `active` tasks as of now.
    pub(crate) fn scrape(&self, active: u32) -> String {
        self.active.set(i64::from(active));
        stacknet_api::metrics::encode(&self.registry)
    }
}
