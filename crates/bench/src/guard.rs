//! `stacknet-bench guard`: the latencies the reputation tests leave out, each beside its baseline in
//! one run on this machine.
//!
//! - **Probe time to first token:** a bonded guardian's streamed probes through the hub and a node
//!   (signed probe request, ordinary contract, task over WebSocket), against the same streamed
//!   request sent straight to the mock upstream. The mock echoes the prompt in `--chunks` pieces,
//!   `--chunk-ms` apart.
//! - **Cancel to stop:** a streaming client that leaves after its first token, through the hub
//!   (the hub cancels the task at the node, the node drops its upstream request), against the same
//!   client leaving the mock upstream directly: the time from the client dropping its connection to
//!   the upstream seeing its request aborted.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use stacknet_node::guardian::{Guardian, GuardianOptions, Prompt};
use stacknet_node::settlement::HubClient;
use stacknet_protocol::SecretKey;
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;
use stacknet_testkit::validators::top_up_and_bond;

#[derive(clap::Args)]
pub struct GuardArgs {
    /// Probes (and cancellations) measured on each path.
    #[arg(long, default_value_t = 50)]
    trials: usize,
    /// Pieces of the mock's answer (it echoes the prompt; at most the probe's 32 output tokens, one
    /// per piece, or the hub refuses the paperwork).
    #[arg(long, default_value_t = 16)]
    chunks: usize,
    /// Milliseconds between them.
    #[arg(long, default_value_t = 20)]
    chunk_ms: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The p50 and p99 of `v`, in milliseconds.
pub(crate) fn quantiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len().saturating_sub(1)) as f64 * q).round() as usize;
        v.get(i).copied().map_or(f64::NAN, ms)
    };
    (at(0.5), at(0.99))
}

/// Time to the first content of a streamed chat request to `url`.
async fn first_token(client: &reqwest::Client, url: &str, key: &str) -> Result<Duration> {
    let started = Instant::now();
    let body = json!({"model": MOCK_MODEL, "stream": true,
        "messages": [{"role": "user", "content": "Repeat this word exactly, and nothing else: amber7"}]});
    let mut resp = client.post(url).bearer_auth(key).json(&body).send().await?;
    ensure!(resp.status().is_success(), "status {}", resp.status());
    while let Some(piece) = resp.chunk().await? {
        if String::from_utf8_lossy(&piece).contains("\"content\":\"") {
            return Ok(started.elapsed());
        }
    }
    anyhow::bail!("the stream ended without content")
}

/// A streamed request to `url` left after its first content; the time until the mock upstream
/// counts one more aborted request.
async fn cancel_to_stop(
    net: &TestNetwork,
    client: &reqwest::Client,
    url: &str,
    key: &str,
) -> Result<Duration> {
    let before = net.upstream.aborted();
    let body =
        json!({"model": MOCK_MODEL, "stream": true, "messages": [{"role": "user", "content": "go on"}]});
    let mut resp = client.post(url).bearer_auth(key).json(&body).send().await?;
    ensure!(resp.status().is_success(), "status {}", resp.status());
    while let Some(piece) = resp.chunk().await? {
        if String::from_utf8_lossy(&piece).contains("\"content\":\"") {
            break;
        }
    }
    let left = Instant::now();
    drop(resp);
    while net.upstream.aborted() == before {
        ensure!(
            left.elapsed() < Duration::from_secs(30),
            "the upstream never saw the abort"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(left.elapsed())
}

pub async fn run(args: GuardArgs) -> Result<()> {
    let script = Script::echo()
        .chunks(args.chunks)
        .chunk_delay(Duration::from_millis(args.chunk_ms));
    let mut net = TestNetwork::start_without_nodes(script, |_| {}).await;
    net.add_node().await;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let direct = format!("{}/chat/completions", net.upstream.base_url());
    let through = format!("{}/chat/completions", net.base_url());

    let key = SecretKey::generate();
    let hub = HubClient::connect(&net.hub.url()).await?;
    let bond = net.hub.hub.state.config.rules.min_validator_bond;
    top_up_and_bond(&hub, &net.hub.url(), &net.admin_token, &key, bond)
        .await
        .context("bonding the guardian")?;
    let options = GuardianOptions {
        window: Duration::from_secs(1),
        probes_per_node: 1,
        warm_latency: Duration::from_secs(10),
        prompts: vec![Prompt::Echo],
        references: Vec::new(),
    };
    let guardian = Guardian::connect(&net.hub.url(), key, options).await?;

    println!(
        "stacknet-bench guard: {} trials per path; the mock answers in {} pieces, {} ms apart; {} cores, one process on loopback\n",
        args.trials,
        args.chunks,
        args.chunk_ms,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let node = net.nodes[0].node.node_key_id();
    let (mut base, mut probe) = (Vec::new(), Vec::new());
    for _ in 0..args.trials {
        base.push(first_token(&client, &direct, "unused").await?);
        let ttft = guardian.probe_first_token(node, MOCK_MODEL).await?;
        probe.push(ttft.context("a probe was not answered with its word")?);
    }
    let (b50, b99) = quantiles(base);
    let (p50, p99) = quantiles(probe);
    println!("{:<34}{:>12}{:>12}", "time to first token", "p50 ms", "p99 ms");
    println!("{:<34}{b50:>12.2}{b99:>12.2}", "direct to the mock (baseline)");
    println!("{:<34}{p50:>12.2}{p99:>12.2}", "guardian probe through the hub");
    println!("{:<34}{:>12.2}{:>12.2}\n", "ratio", p50 / b50, p99 / b99);

    let (mut base, mut hub_path) = (Vec::new(), Vec::new());
    for _ in 0..args.trials {
        base.push(cancel_to_stop(&net, &client, &direct, "unused").await?);
        hub_path.push(cancel_to_stop(&net, &client, &through, &net.api_key).await?);
    }
    let (b50, b99) = quantiles(base);
    let (h50, h99) = quantiles(hub_path);
    println!(
        "{:<34}{:>12}{:>12}",
        "cancel to upstream stop", "p50 ms", "p99 ms"
    );
    println!("{:<34}{b50:>12.2}{b99:>12.2}", "client leaves the mock directly");
    println!("{:<34}{h50:>12.2}{h99:>12.2}", "client leaves the hub");
    println!("{:<34}{:>12.2}{:>12.2}", "ratio", h50 / b50, h99 / b99);
    Ok(())
}
