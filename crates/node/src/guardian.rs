//! `stacknet guardian`: probes the hub's nodes and hands in signed telemetry.
//!
//! Every window ([`GuardianOptions::window`]) the guardian reads the hub's public node registry,
//! and for each connected node that serves chat sends [`GuardianOptions::probes_per_node`] probes
//! through the hub (`probe` requests signed with its key, run by the hub as ordinary tasks of the
//! guardian's probes Stack). Each probe asks for something the guardian can check whatever the
//! model: to repeat a random word ([`Prompt::Echo`]) or to add two numbers ([`Prompt::Arithmetic`]).
//! A probe is a success (answered with what it asked for), `wrong` (answered with something
//! else), an error (the node failed it) or a time-out; a probe the hub could not place (the node
//! was busy or gone, the probes Stack could not pay) counts for nothing. A probe of a model the node
//! named ready that took longer than [`GuardianOptions::warm_latency`] is a warm failure: a warm
//! model answers a short prompt quickly. Then it signs one Telemetry per node probed (successes,
//! errors, time-outs, wrong answers, warm failures, the latency's p50 and p99) and hands it in.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stacknet_api::paths;
use stacknet_api::types::{NodeList, NodeReport, TelemetryReceipt};
use stacknet_protocol::attestation::Telemetry;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::filing::{probes_stack, NodeAction};
use stacknet_protocol::{Nonce, SecretKey, Signed, StackId, Timestamp};
use tracing::{info, warn};

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
}

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
}

impl Default for GuardianOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            probes_per_node: 3,
            warm_latency: Duration::from_secs(10),
            prompts: vec![Prompt::Echo, Prompt::Arithmetic],
        }
    }
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
}

impl Guardian {
    pub async fn connect(
        url: &str,
        key: SecretKey,
        options: GuardianOptions,
    ) -> Result<Self, SettlementError> {
        let hub = HubClient::connect(url).await?;
        Ok(Self { key, hub, options })
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
        let mut reports = Vec::new();
        let mut turn = 0usize;
        for node in list
            .data
            .iter()
            .filter(|n| n.connected && !n.suspended && n.node_key != own)
        {
            let Some(model) = node
                .models
                .iter()
                .find(|m| m.workloads.contains(&Workload::Chat))
                .map(|m| m.name.clone())
            else {
                continue;
            };
            let start = Timestamp::now();
            let mut seen = Vec::new();
            for _ in 0..self.options.probes_per_node {
                let prompt = self.options.prompts[turn % self.options.prompts.len().max(1)];
                turn += 1;
                let (outcome, latency) = self.probe(node, &model, prompt).await?;
                if outcome != Outcome::NotPlaced {
                    let warm_failure = node.ready.contains(&model)
                        && matches!(outcome, Outcome::Success | Outcome::Wrong)
                        && latency > self.options.warm_latency;
                    seen.push((outcome, latency, warm_failure));
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

    /// One probe of `model` on `node`, and how long it took. `Err` only when the hub itself cannot
    /// be reached or refuses the guardian.
    async fn probe(
        &self,
        node: &NodeReport,
        model: &str,
        prompt: Prompt,
    ) -> Result<(Outcome, Duration), SettlementError> {
        let (text, expected) = prompt.make(Nonce::random().0);
        let request = json!({
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": PROBE_MAX_TOKENS,
            "temperature": 0,
        });
        let action = NodeAction::Probe {
            node: node.node_key,
            request,
        };
        let started = Instant::now();
        let answer: Result<Value, SettlementError> =
            self.hub.node_request(&self.key, paths::GUARDIAN, action).await;
        let latency = started.elapsed();
        let outcome = match answer {
            Ok(v) => {
                let content = v
                    .pointer("/choices/0/message/content")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if content.contains(&expected) {
                    Outcome::Success
                } else {
                    Outcome::Wrong
                }
            }
            Err(SettlementError::Refused { status: 504, .. }) => Outcome::Timeout,
            // The node failed it (its backend, its paperwork, its connection).
            Err(SettlementError::Refused { status: 502, .. }) => Outcome::Error,
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
                warn!(node = %node.node_key, status, %message, "the hub could not place a probe");
                Outcome::NotPlaced
            }
            Err(e) => return Err(e),
        };
        Ok((outcome, latency))
    }

    /// The signed report of what the probes of `node` since `start` saw.
    fn report(
        &self,
        node: &NodeReport,
        start: Timestamp,
        seen: &[(Outcome, Duration, bool)],
    ) -> Result<Signed<Telemetry>, SettlementError> {
        let count = |o: Outcome| seen.iter().filter(|(x, ..)| *x == o).count() as u64;
        let mut answered: Vec<u64> = seen
            .iter()
            .filter(|(o, ..)| matches!(o, Outcome::Success | Outcome::Wrong))
            .map(|(_, d, _)| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .collect();
        answered.sort_unstable();
        let quantile = |q: f64| {
            if answered.is_empty() {
                return 0;
            }
            let i = ((answered.len() - 1) as f64 * q).round() as usize;
            answered[i.min(answered.len() - 1)]
        };
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
            latency_p50_ms: quantile(0.5),
            latency_p99_ms: quantile(0.99),
            created_at: now,
            nonce: Nonce::random(),
            wrong: count(Outcome::Wrong),
            warm_failures: seen.iter().filter(|(.., warm)| *warm).count() as u64,
        };
        Signed::sign(body, &self.key).map_err(|e| SettlementError::Sign(e.to_string()))
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
