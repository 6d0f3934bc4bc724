//! `GET /metrics` on hub and node: Prometheus text (OpenMetrics flavour) that counts the traffic
//! sent, read by a small parser here and by Prometheus' own Python client, whose OpenMetrics parser
//! is strict (types, `_total` suffixes, histogram buckets in order, `# EOF`).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use super::{chat_body, client, money, post_chat};

/// One sample line: its metric name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text exposition (comments skipped). Label values here never hold `,` or `"`.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a numeric value"),
            }
        })
        .collect()
}

/// The sum of the samples named `name` that carry every label of `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn hub_metrics(net: &TestNetwork) -> String {
    let resp = client()
        .get(format!("{}/metrics", net.hub.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    resp.text().await.unwrap()
}

/// What [`traffic`] sent and got back.
struct Sent {
    /// Answered 200 (whole and streamed).
    served: u64,
    /// The output tokens of the answers' usage, in all.
    output_tokens: u64,
}

/// Three answers whole and two streamed, priced (so each is held and captured), then three
/// refused: an unknown model, malformed JSON, no API key.
async fn traffic(net: &TestNetwork) -> Sent {
    money::set_price(net).await;
    money::topup(net, 10_000_000).await;
    let mut output_tokens = 0;
    for _ in 0..3 {
        let resp = post_chat(net, &chat_body(false)).await;
        assert_eq!(resp.status(), 200);
        let answer: Value = resp.json().await.unwrap();
        output_tokens += answer["usage"]["completion_tokens"].as_u64().unwrap();
    }
    for _ in 0..2 {
        let mut body = chat_body(true);
        body["stream_options"] = json!({"include_usage": true});
        let resp = post_chat(net, &body).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let usage = super::sse_events(&text)
            .into_iter()
            .find_map(|e| e.get("usage").filter(|u| u.is_object()).cloned())
            .expect("a usage chunk");
        output_tokens += usage["completion_tokens"].as_u64().unwrap();
    }
    let unknown = post_chat(
        net,
        &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    let malformed = client()
        .post(format!("{}/chat/completions", net.base_url()))
        .bearer_auth(&net.api_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let anonymous = client()
        .post(format!("{}/chat/completions", net.base_url()))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    Sent {
        served: 5,
        output_tokens,
    }
}

#[tokio::test]
async fn hub_and_node_metrics_count_the_traffic_sent() {
    let net = TestNetwork::start(Script::text("one two three four")).await;
    let sent = traffic(&net).await;
    let served = sent.served as f64;
    let s = samples(&hub_metrics(&net).await);

    let chat = [("workload", "chat")];
    let ok = [("workload", "chat"), ("model", MOCK_MODEL), ("status", "200")];
    assert_eq!(value(&s, "stacknet_requests_total", &ok), served);
    // Refused before any node: labelled `other`, so invented model names add no series.
    for status in ["404", "400", "401"] {
        let refused = [("workload", "chat"), ("model", "other"), ("status", status)];
        assert_eq!(value(&s, "stacknet_requests_total", &refused), 1.0, "{status}");
    }
    assert!(!s.iter().any(|x| x.labels.values().any(|v| v == "no-such-model")));

    let op = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "stacknet"),
        ("gen_ai_request_model", MOCK_MODEL),
        ("error_type", ""),
    ];
    assert_eq!(
        value(&s, "gen_ai_server_request_duration_seconds_count", &op),
        served
    );
    assert_eq!(
        value(&s, "gen_ai_server_time_to_first_token_seconds_count", &op),
        served
    );
    // Every request is counted in the last bucket (+Inf) and the sum is of real durations.
    let inf = [op.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(
        value(&s, "gen_ai_server_request_duration_seconds_bucket", &inf),
        served
    );
    assert!(value(&s, "gen_ai_server_request_duration_seconds_sum", &op) > 0.0);
    let output = [
        ("gen_ai_request_model", MOCK_MODEL),
        ("gen_ai_token_type", "output"),
    ];
    assert_eq!(value(&s, "gen_ai_client_token_usage_count", &output), served);
    assert_eq!(
        value(&s, "gen_ai_client_token_usage_sum", &output),
        sent.output_tokens as f64
    );
    assert_eq!(value(&s, "stacknet_hub_overhead_seconds_count", &chat), served);

    // The money path: each answer held, logged and captured once.
    assert_eq!(value(&s, "stacknet_log_appends_total", &[]), served);
    assert_eq!(value(&s, "stacknet_log_leaves", &[]), served);
    assert_eq!(
        value(&s, "stacknet_ledger_entries_total", &[("kind", "hold")]),
        served
    );
    assert_eq!(
        value(&s, "stacknet_ledger_entries_total", &[("kind", "capture")]),
        served
    );

    let model = [("model", MOCK_MODEL)];
    assert_eq!(value(&s, "stacknet_nodes_connected", &[]), 1.0);
    assert_eq!(value(&s, "stacknet_model_nodes", &model), 1.0);
    assert_eq!(value(&s, "stacknet_queue_depth", &model), 0.0);

    // The node records a task once its `done` is out, which may be just after the hub answered.
    let node = net.nodes[0].node.clone();
    let done = [("workload", "chat"), ("model", MOCK_MODEL), ("outcome", "done")];
    let n = wait_until("the node counted every task", WAIT_DEADLINE, || {
        let s = samples(&node.metrics());
        std::future::ready((value(&s, "stacknet_node_tasks_total", &done) == served).then_some(s))
    })
    .await;
    assert_eq!(
        value(&n, "gen_ai_server_request_duration_seconds_count", &op),
        served
    );
    assert_eq!(
        value(&n, "gen_ai_client_token_usage_sum", &output),
        sent.output_tokens as f64
    );
    assert_eq!(value(&n, "stacknet_node_connected", &[]), 1.0);
    assert_eq!(value(&n, "stacknet_node_sessions_total", &[]), 1.0);
    assert_eq!(value(&n, "stacknet_node_active_tasks", &[]), 0.0);
    assert!(value(&n, "stacknet_node_slots", &[]) >= 1.0);
}

/// The families Prometheus' official Python client reads from `text`, as `{name: [[sample name,
/// labels, value], ...]}`.
fn parse_with_prometheus_client(text: &str) -> Value {
    use std::io::Write;
    let python = std::env::var_os("STACKNET_SDK_PYTHON").expect(
        "STACKNET_SDK_PYTHON is not set: this test needs Python with prometheus-client (scripts/test.sh installs it and sets it)",
    );
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    families[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(families))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `sample` of family `family` with labels including `with`.
fn parsed(families: &Value, family: &str, sample: &str, with: &[(&str, &str)]) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter()
        .filter(|s| s[0] == sample)
        .filter(|s| with.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

#[tokio::test]
#[ignore = "needs Python with prometheus-client (STACKNET_SDK_PYTHON); scripts/test.sh runs it"]
async fn metrics_parse_with_prometheus_official_openmetrics_parser() {
    let net = TestNetwork::start(Script::text("one two three four")).await;
    let sent = traffic(&net).await;
    let served = sent.served as f64;
    let hub = parse_with_prometheus_client(&hub_metrics(&net).await);
    assert_eq!(hub["stacknet_requests"]["type"], "counter");
    assert_eq!(hub["gen_ai_server_request_duration_seconds"]["type"], "histogram");
    let ok = [("workload", "chat"), ("model", MOCK_MODEL), ("status", "200")];
    assert_eq!(
        parsed(&hub, "stacknet_requests", "stacknet_requests_total", &ok),
        served
    );
    let op = [("gen_ai_request_model", MOCK_MODEL), ("error_type", "")];
    assert_eq!(
        parsed(
            &hub,
            "gen_ai_server_time_to_first_token_seconds",
            "gen_ai_server_time_to_first_token_seconds_count",
            &op
        ),
        served
    );
    let node = net.nodes[0].node.clone();
    let done = [("outcome", "done")];
    wait_until("the node counted every task", WAIT_DEADLINE, || {
        let s = samples(&node.metrics());
        std::future::ready((value(&s, "stacknet_node_tasks_total", &done) == served).then_some(()))
    })
    .await;
    let n = parse_with_prometheus_client(&node.metrics());
    assert_eq!(
        parsed(&n, "stacknet_node_tasks", "stacknet_node_tasks_total", &done),
        served
    );
    assert_eq!(n["stacknet_node_connected"]["type"], "gauge");
}
