//! `stacknet guardian`: probes the hub's nodes and hands in signed telemetry.
//!
//! Every window ([`GuardianOptions::window`]) the guardian reads the hub's public node registry,
//! and for each connected node that serves chat sends [`GuardianOptions::probes_per_node`] probes
//! through the hub (`probe` requests signed with its key, run by the hub as ordinary tasks of the
//! guardian's probes Stack). Each probe asks for something the guardian can check: whatever the
//! model, to repeat a random word ([`Prompt::Echo`]) or to add two numbers ([`Prompt::Arithmetic`]);
//! of a built-in model it holds too (the same pinned sha256), a greedy question whose exact answer
//! it computes itself ([`Prompt::Exact`]), and only that: a small model fails an echo or a sum
//! honestly.
//! A probe is a success (answered with what it asked for), `wrong` (answered with something
//! else), an error (the node failed it) or a time-out; a probe the hub could not place (the node
//! was busy or gone, the probes Stack could not pay) counts for nothing. A probe of a model the node
//! named ready whose first token took longer than [`GuardianOptions::warm_latency`] is a warm
//! failure: a warm model starts answering a short prompt at once. Probes are streamed, so the
//! guardian times the first token and the decode rate as well as the whole answer. Then it signs
//! one Telemetry per node probed (successes, errors, time-outs, wrong answers, warm failures, the
//! latency's p50 and p99, the time to first token, tokens/s, and the share of its windows the node
//! was connected in) and hands it in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stacknet_api::paths;
use stacknet_api::types::{NodeList, NodeReport, TelemetryReceipt};
use stacknet_protocol::attestation::Telemetry;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::filing::{probes_stack, NodeAction};
use stacknet_protocol::{NodeKeyId, Nonce, SecretKey, Signed, StackId, Timestamp};
use tracing::{info, warn};

use crate::backend::llama::{Flow, LocalModel};
use crate::backend::sse::SseParser;
use crate::settlement::{HubClient, SettlementError};

/// Output tokens a probe asks for at most: enough for an echo or a sum, cheap to serve.
pub const PROBE_MAX_TOKENS: u32 = 32;

/// What a probe asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Repeat a random word: the answer must contain it.
    Echo,
    /// Add two random numbers: the answer must contain the sum.
    Arithmetic,
    /// A short question, greedy, of a built-in model the guardian holds too (the same pinned
    /// sha256): the answer must be exactly the one the guardian's copy gives. Of a model it does
    /// not hold, an echo instead.
    Exact,
}

/// The questions of [`Prompt::Exact`].
const QUESTIONS: [&str; 8] = [
    "Name a fruit that is red.",
    "What is the capital of Italy?",
    "Give one word for a large body of water.",
    "Which planet is closest to the sun?",
    "Name a color of the rainbow.",
    "What do bees make?",
    "Name an animal that can fly.",
    "What is frozen water called?",
];

/// Output tokens an exact probe asks for: its answer is computed again by the guardian.
pub const EXACT_MAX_TOKENS: u32 = 16;

impl Prompt {
    /// The prompt and the text its answer must contain, from random `bytes`.
    fn make(self, bytes: [u8; 16]) -> (String, String) {
        match self {
            Prompt::Echo => {
                const WORDS: [&str; 8] = [
                    "amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor",
                ];
                let word = format!(
                    "{}{}",
                    WORDS[usize::from(bytes[0]) % WORDS.len()],
                    u16::from_le_bytes([bytes[1], bytes[2]]) % 1000
                );
                (
                    format!("Repeat this word exactly, and nothing else: {word}"),
                    word,
                )
            }
            Prompt::Exact => (
                QUESTIONS[usize::from(bytes[5]) % QUESTIONS.len()].to_owned(),
                String::new(),
            ),
            Prompt::Arithmetic => {
                let a = u32::from(bytes[3]) % 90 + 10;
                let b = u32::from(bytes[4]) % 90 + 10;
                (
                    format!("What is {a} + {b}? Answer with the number only."),
                    (a + b).to_string(),
                )
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct GuardianOptions {
    /// How often a round of probes is run and reported.
    pub window: Duration,
    pub probes_per_node: u32,
    /// Slower than this, a probe of a model the node named ready is a warm failure.
    pub warm_latency: Duration,
    /// The prompts, taken in turn.
    pub prompts: Vec<Prompt>,
    /// Built-in models the guardian holds, for [`Prompt::Exact`].
    pub references: Vec<Arc<LocalModel>>,
}

impl Default for GuardianOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            probes_per_node: 3,
            warm_latency: Duration::from_secs(10),
            prompts: vec![Prompt::Echo, Prompt::Arithmetic],
            references: Vec::new(),
        }
    }
}

/// What one probe came to, and what it measured.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Probe {
    outcome: Outcome,
    /// Until the whole answer arrived.
    latency: Duration,
    /// Until its first piece of content arrived (answered probes).
    ttft: Option<Duration>,
    /// Output tokens per second after the first one (answered probes that reported usage).
    tokens_per_s: Option<f64>,
    /// Of a model the node named ready, and as slow as a cold one.
    warm_failure: bool,
}

/// What one probe came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Wrong,
    Error,
    Timeout,
    /// The hub could not place it (busy, gone, unpaid): no evidence either way.
    NotPlaced,
}

/// A guardian: its key and the hub it probes through.
#[derive(Debug)]
pub struct Guardian {
    key: SecretKey,
    hub: HubClient,
    options: GuardianOptions,
    /// Per node: windows it was listed in since this guardian first saw it, and in how many of
    /// those it was connected.
    uptime: std::sync::Mutex<std::collections::HashMap<stacknet_protocol::NodeKeyId, (u64, u64)>>,
}

impl Guardian {
    pub async fn connect(
        url: &str,
        key: SecretKey,
        options: GuardianOptions,
    ) -> Result<Self, SettlementError> {
        let hub = HubClient::connect(url).await?;
        Ok(Self {
            key,
            hub,
            options,
            uptime: std::sync::Mutex::default(),
        })
    }

    /// The Stack its probes run as (fund it to probe priced models).
    pub fn probes_stack(&self) -> StackId {
        probes_stack(&self.key.public_key())
    }

    /// Runs a window every [`GuardianOptions::window`] until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.options.window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => match self.window().await {
                    Ok(reports) => info!(nodes = reports.len(), "telemetry handed in"),
                    Err(e) => warn!(error = %e, "a probe window failed; trying again next window"),
                },
                () = &mut shutdown => return,
            }
        }
    }

    /// One window: probes every connected node that serves chat (except this key's own), and
    /// hands in a signed report for each node a probe reached. Returns the reports and the hub's
    /// receipts.
    pub async fn window(&self) -> Result<Vec<(Signed<Telemetry>, TelemetryReceipt)>, SettlementError> {
        let list: NodeList = self.hub.get(paths::NODES).await?;
        let own = self.key.public_key().node_key_id();
        if let Ok(mut uptime) = self.uptime.lock() {
            for node in &list.data {
                let (listed, up) = uptime.entry(node.node_key).or_default();
                *listed += 1;
                *up += u64::from(node.connected);
            }
        }
        let mut reports = Vec::new();
        let mut turn = 0usize;
        for node in list
            .data
            .iter()
            .filter(|n| n.connected && !n.suspended && n.node_key != own)
        {
            let Some(offer) = node.models.iter().find(|m| m.workloads.contains(&Workload::Chat)) else {
                continue;
            };
            let model = offer.name.clone();
            let reference = self
                .options
                .references
                .iter()
                .find(|r| offer.model_sha256 == Some(r.config().model_sha256))
                .cloned();
            let start = Timestamp::now();
            let mut seen = Vec::new();
            for _ in 0..self.options.probes_per_node {
                // Of a model it holds, only exact answers: a small model fails an echo or a sum
                // honestly, and exactness is the stronger check.
                let prompt = match &reference {
                    Some(_) if self.options.prompts.contains(&Prompt::Exact) => Prompt::Exact,
                    _ => self.options.prompts[turn % self.options.prompts.len().max(1)],
                };
                turn += 1;
                let mut probe = self
                    .probe(node.node_key, &model, prompt, reference.as_ref())
                    .await?;
                if probe.outcome != Outcome::NotPlaced {
                    // A warm model starts answering a short prompt at once.
                    probe.warm_failure = node.ready.contains(&model)
                        && probe.ttft.is_some_and(|t| t > self.options.warm_latency);
                    seen.push(probe);
                }
            }
            if seen.is_empty() {
                continue;
            }
            let report = self.report(node, start, &seen)?;
            let receipt: TelemetryReceipt = self
                .hub
                .node_request(
                    &self.key,
                    paths::GUARDIAN,
                    NodeAction::Telemetry {
                        report: Box::new(report.clone()),
                    },
                )
                .await?;
            reports.push((report, receipt));
        }
        Ok(reports)
    }

    /// One probe of `model` on `node`, streamed, timed to its first content and its end. `Err`
    /// only when the hub itself cannot be reached or refuses the guardian.
    async fn probe(
        &self,
        node: NodeKeyId,
        model: &str,
        prompt: Prompt,
        reference: Option<&Arc<LocalModel>>,
    ) -> Result<Probe, SettlementError> {
        // An exact probe needs the model itself; without it, an echo.
        let prompt = match (prompt, reference) {
            (Prompt::Exact, None) => Prompt::Echo,
            (p, _) => p,
        };
        let (text, expected) = prompt.make(Nonce::random().0);
        let max_tokens = if prompt == Prompt::Exact {
            EXACT_MAX_TOKENS
        } else {
            PROBE_MAX_TOKENS
        };
        let request = json!({
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let expected = match (prompt, reference) {
            (Prompt::Exact, Some(reference)) => Expected::Exactly(greedy_answer(reference, &request).await?),
            _ => Expected::Contains(expected),
        };
        let action = NodeAction::Probe { node, request };
        let started = Instant::now();
        let mut probe = Probe {
            outcome: Outcome::NotPlaced,
            latency: Duration::ZERO,
            ttft: None,
            tokens_per_s: None,
            warm_failure: false,
        };
        let resp = match self
            .hub
            .node_request_streamed(&self.key, paths::GUARDIAN, action)
            .await
        {
            Ok(resp) => resp,
            Err(SettlementError::Refused { status: 504, .. }) => {
                probe.outcome = Outcome::Timeout;
                return Ok(probe);
            }
            // The node failed it (its backend, its paperwork, its connection).
            Err(SettlementError::Refused { status: 502, .. }) => {
                probe.outcome = Outcome::Error;
                return Ok(probe);
            }
            // The guardian itself is refused: not bonded, a bad signature.
            Err(
                e @ SettlementError::Refused {
                    status: 401 | 403, ..
                },
            ) => return Err(e),
            Err(SettlementError::Refused { status: 400, message }) if message.contains("guardian") => {
                return Err(SettlementError::Refused { status: 400, message })
            }
            // Busy, gone, unpaid, or a request it would not take: nobody's evidence.
            Err(SettlementError::Refused { status, message }) => {
                warn!(%node, status, %message, "the hub could not place a probe");
                return Ok(probe);
            }
            Err(e) => return Err(e),
        };
        let streamed = read_stream(resp, started).await;
        probe.latency = started.elapsed();
        probe.outcome = match streamed {
            Streamed::Answer {
                content,
                ttft,
                output_tokens,
            } => {
                probe.ttft = ttft;
                probe.tokens_per_s = match (ttft, output_tokens) {
                    (Some(t), Some(n)) if n > 1 && probe.latency > t => {
                        Some((n - 1) as f64 / (probe.latency - t).as_secs_f64())
                    }
                    _ => None,
                };
                let right = match &expected {
                    // A model may capitalise the word it repeats.
                    Expected::Contains(part) => content.to_lowercase().contains(&part.to_lowercase()),
                    Expected::Exactly(answer) => content == *answer,
                };
                if right {
                    Outcome::Success
                } else {
                    let wanted = match &expected {
                        Expected::Contains(part) => format!("containing {part:?}"),
                        Expected::Exactly(answer) => format!("exactly {answer:?}"),
                    };
                    info!(%node, ?prompt, answer = %content, "a probe was answered wrong: wanted an answer {wanted}");
                    Outcome::Wrong
                }
            }
            Streamed::Failed { timeout: true } => Outcome::Timeout,
            Streamed::Failed { timeout: false } => Outcome::Error,
        };
        Ok(probe)
    }

    /// One echo probe of `model` on `node`: its time to first token, when it was answered with the
    /// word it asked for (the benchmark's measurement).
    pub async fn probe_first_token(
        &self,
        node: NodeKeyId,
        model: &str,
    ) -> Result<Option<Duration>, SettlementError> {
        let probe = self.probe(node, model, Prompt::Echo, None).await?;
        Ok(probe.ttft.filter(|_| probe.outcome == Outcome::Success))
    }

    /// The signed report of what the probes of `node` since `start` saw.
    fn report(
        &self,
        node: &NodeReport,
        start: Timestamp,
        seen: &[Probe],
    ) -> Result<Signed<Telemetry>, SettlementError> {
        let count = |o: Outcome| seen.iter().filter(|p| p.outcome == o).count() as u64;
        let answered = |p: &&Probe| matches!(p.outcome, Outcome::Success | Outcome::Wrong);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let latencies: Vec<u64> = seen.iter().filter(answered).map(|p| ms(p.latency)).collect();
        let ttfts: Vec<u64> = seen.iter().filter_map(|p| p.ttft.map(ms)).collect();
        let rates: Vec<u64> = seen
            .iter()
            .filter_map(|p| p.tokens_per_s.map(|r| r.round() as u64))
            .collect();
        let uptime_ppm = self.uptime.lock().ok().and_then(|u| {
            let (listed, up) = *u.get(&node.node_key)?;
            (listed > 0).then(|| up.saturating_mul(1_000_000) / listed)
        });
        let now = Timestamp::now();
        let body = Telemetry {
            guardian: self.key.public_key(),
            node_key: node.node_key,
            window_start: start,
            window_end: now,
            probes: seen.len() as u64,
            successes: count(Outcome::Success),
            errors: count(Outcome::Error),
            timeouts: count(Outcome::Timeout),
            latency_p50_ms: quantile(latencies.clone(), 0.5),
            latency_p99_ms: quantile(latencies, 0.99),
            created_at: now,
            nonce: Nonce::random(),
            wrong: count(Outcome::Wrong),
            warm_failures: seen.iter().filter(|p| p.warm_failure).count() as u64,
            ttft_p50_ms: quantile(ttfts, 0.5),
            tokens_per_s_p50: quantile(rates, 0.5),
            uptime_ppm: uptime_ppm.unwrap_or(0),
        };
        Signed::sign(body, &self.key).map_err(|e| SettlementError::Sign(e.to_string()))
    }
}

/// What a right answer holds.
enum Expected {
    Contains(String),
    Exactly(String),
}

/// The answer `reference` gives `request` (greedy), computed off the async threads.
async fn greedy_answer(reference: &Arc<LocalModel>, request: &Value) -> Result<String, SettlementError> {
    let (model, request) = (Arc::clone(reference), request.clone());
    let answer = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        model
            .generate(&request, Workload::Chat, |piece| {
                bytes.extend_from_slice(piece);
                Ok(Flow::Continue)
            })
            .map(|_| String::from_utf8_lossy(&bytes).into_owned())
    })
    .await
    .map_err(|e| SettlementError::Malformed(format!("the reference model stopped: {e}")))?;
    answer
        .map_err(|e| SettlementError::Malformed(format!("the reference model cannot answer the probe: {e}")))
}

/// The `q` quantile of `values` (0 when empty).
fn quantile(mut values: Vec<u64>, q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i.min(values.len() - 1)]
}

/// What a probe's stream came to.
enum Streamed {
    /// It ended with `[DONE]`: the content, when its first piece came, the output tokens counted.
    Answer {
        content: String,
        ttft: Option<Duration>,
        output_tokens: Option<u64>,
    },
    /// It ended with an error event, broke off, or stopped without `[DONE]`.
    Failed { timeout: bool },
}

/// Reads a probe's SSE answer to its end.
async fn read_stream(mut resp: reqwest::Response, started: Instant) -> Streamed {
    let mut parser = SseParser::new();
    let (mut content, mut ttft, mut output_tokens) = (String::new(), None, None);
    loop {
        let bytes = match resp.chunk().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) | Err(_) => return Streamed::Failed { timeout: false },
        };
        parser.push(&bytes);
        while let Ok(Some(data)) = parser.next_event() {
            if data == b"[DONE]" {
                return Streamed::Answer {
                    content,
                    ttft,
                    output_tokens,
                };
            }
            let Ok(event) = serde_json::from_slice::<Value>(&data) else {
                return Streamed::Failed { timeout: false };
            };
            if let Some(code) = event.pointer("/error/code") {
                return Streamed::Failed {
                    timeout: code == "timeout",
                };
            }
            if let Some(piece) = event.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                if !piece.is_empty() && ttft.is_none() {
                    ttft = Some(started.elapsed());
                }
                content.push_str(piece);
            }
            if let Some(n) = event.pointer("/usage/completion_tokens").and_then(Value::as_u64) {
                output_tokens = Some(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prompt_names_what_its_answer_must_hold() {
        for bytes in [[0u8; 16], [255u8; 16], [7u8; 16]] {
            let (text, word) = Prompt::Echo.make(bytes);
            assert!(text.ends_with(&word), "{text}");
            let (text, sum) = Prompt::Arithmetic.make(bytes);
            let numbers: Vec<u32> = text
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            assert_eq!(numbers.iter().sum::<u32>().to_string(), sum, "{text}");
        }
    }
}
