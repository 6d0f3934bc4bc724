//! What hub and node both export at `GET /metrics` (Prometheus text, OpenMetrics flavour): the
//! OpenTelemetry GenAI server metrics, with the semantic conventions' names, attributes and bucket
//! boundaries, so dashboards built for other model servers read ours unchanged.
//!
//! Each instance keeps its own [`Registry`] (no global recorder): two hubs in one test process, or a
//! hub and a node in `stacknet up`, count apart.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use stacknet_protocol::contract::{Usage, Workload};

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `gen_ai.provider.name`: who served the operation, as the conventions ask of every GenAI metric.
pub const PROVIDER: &str = "stacknet";

/// `gen_ai.server.time_to_first_token`'s boundaries, in seconds, as the conventions give them.
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `gen_ai.server.time_per_output_token`'s boundaries, in seconds.
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// The registry as Prometheus scrapes it.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a metric's labels.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        text = format!("# the metrics could not be encoded: {e}\n# EOF\n");
    }
    text
}

/// A workload's name as a label value (its name in contracts).
pub fn workload_name(workload: Workload) -> &'static str {
    match workload {
        Workload::Chat => "chat",
        Workload::Completion => "completion",
        Workload::Embedding => "embedding",
        Workload::ImageGeneration => "image_generation",
        Workload::ImageEdit => "image_edit",
        Workload::VideoGeneration => "video_generation",
        Workload::Speech => "speech",
        Workload::Transcription => "transcription",
        Workload::CodeExecution => "code_execution",
        Workload::WebSearch => "web_search",
        Workload::WebFetch => "web_fetch",
        Workload::ToolCall => "tool_call",
    }
}

/// `gen_ai.operation.name`: the conventions' well-known values where one fits (`chat`,
/// `text_completion`, `embeddings`, `execute_tool`), else the workload's own name.
pub fn operation_name(workload: Workload) -> &'static str {
    match workload {
        Workload::Chat => "chat",
        Workload::Completion => "text_completion",
        Workload::Embedding => "embeddings",
        Workload::ToolCall => "execute_tool",
        other => workload_name(other),
    }
}

/// The attributes of an operation's duration: `error_type` is empty for a success.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    pub error_type: String,
}

/// The attributes of a token count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    /// `input` or `output`.
    pub gen_ai_token_type: &'static str,
}

/// One finished operation, as [`GenAi::record`] takes it.
#[derive(Clone, Copy, Debug)]
pub struct Operation<'a> {
    pub workload: Workload,
    pub model: &'a str,
    /// Why it failed (`None`: it succeeded).
    pub error: Option<&'a str>,
    pub duration: Duration,
    /// When its first output came, from its start.
    pub first_output: Option<Duration>,
    /// Its usage, for a success.
    pub usage: Option<&'a Usage>,
}

/// The GenAI server metrics.
#[derive(Clone, Debug)]
pub struct GenAi {
    duration: Histograms<OperationLabels>,
    first_token: Histograms<OperationLabels>,
    per_output_token: Histograms<OperationLabels>,
    tokens: Histograms<TokenLabels>,
}

/// Histograms by label set, each made with the boundaries of its metric.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// A family of histograms with the boundaries `buckets` makes.
pub fn histograms<L>(buckets: fn() -> Histogram) -> Histograms<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(buckets)
}

impl GenAi {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let duration = histograms(|| Histogram::new(exponential_buckets(0.01, 2.0, 14)));
        let first_token = histograms(|| Histogram::new(TTFT_BUCKETS));
        let per_output_token = histograms(|| Histogram::new(TPOT_BUCKETS));
        let tokens = histograms(|| Histogram::new(exponential_buckets(1.0, 4.0, 14)));
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "Time to last byte of a GenAI operation, success or failure",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from the start of a GenAI operation to its first output",
            Unit::Seconds,
            first_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first, for operations that produced more than one",
            Unit::Seconds,
            per_output_token.clone(),
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens used per GenAI operation, input and output, as its signed paperwork states them",
            tokens.clone(),
        );
        Self {
            duration,
            first_token,
            per_output_token,
            tokens,
        }
    }

    /// Records one operation: its duration; for a success its time to first output, its time per
    /// output token after the first, and its tokens.
    pub fn record(&self, op: Operation<'_>) {
        let operation = operation_name(op.workload);
        let labels = OperationLabels {
            gen_ai_operation_name: operation,
            gen_ai_provider_name: PROVIDER,
            gen_ai_request_model: op.model.to_owned(),
            error_type: op.error.unwrap_or("").to_owned(),
        };
        self.duration
            .get_or_create(&labels)
            .observe(op.duration.as_secs_f64());
        if op.error.is_some() {
            return;
        }
        if let Some(first) = op.first_output {
            self.first_token
                .get_or_create(&labels)
                .observe(first.as_secs_f64());
        }
        let Some(usage) = op.usage else {
            return;
        };
        if let (Some(first), true) = (op.first_output, usage.output_tokens > 1) {
            let after_first = op.duration.saturating_sub(first).as_secs_f64();
            let per = after_first / (usage.output_tokens - 1) as f64;
            self.per_output_token.get_or_create(&labels).observe(per);
        }
        for (kind, count) in [("input", usage.input_tokens), ("output", usage.output_tokens)] {
            if count == 0 {
                continue;
            }
            let labels = TokenLabels {
                gen_ai_operation_name: operation,
                gen_ai_provider_name: PROVIDER,
                gen_ai_request_model: op.model.to_owned(),
                gen_ai_token_type: kind,
            };
            self.tokens.get_or_create(&labels).observe(count as f64);
        }
    }
}
