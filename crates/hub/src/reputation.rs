//! Reputation from evidence: one score per node, computed by a documented formula from evidence
//! the hub stores, so that anyone can recompute it from `GET /stacknet/v1/nodes/{id}`.
//!
//! **Evidence** is what the hub saw, never what a node said of itself: each task it sent to a node
//! ends as one [`Kind`] (served, or the node's fault, or nobody's fault of the node's: a client that
//! cancelled or read too slowly, a request that was invalid, a deadline the queue used up), the
//! validators' decided checks add `validation_passed` and `convicted`, and guardians' signed
//! telemetry ([`crate::guardian`]) adds `probe_passed`, `probe_failed`, `probe_wrong` and
//! `warm_claim_failed`, on the day its window ended. Evidence is counted in
//! buckets per node, UTC day and kind ([`EvidenceRow`]), kept in memory for at most
//! [`FLUSH_INTERVAL_MS`] and then added into the store's rows (replicas add into the same ones).
//! A hub that stops loses at most that last second of evidence, never money. Tasks the hub itself
//! ends (it shuts down; its node connections close) are not evidence at all.
//!
//! **The formula**, for a node on UTC day `today`, over its rows `(day, kind, count, sum_ms)`:
//! - each row weighs `w = DECAY_PER_DAY ^ (today - day)` (0.98 per day: a fault from 35 days ago
//!   counts half);
//! - `good = Σ w · count · good_weight(kind)`, `bad = Σ w · count · bad_weight(kind)` (the weights:
//!   [`Kind::weights`]; kinds that are no fault of the node's weigh 0 both ways);
//! - `quality = (good + 1) / (good + bad + 2)`: beta reputation (Jøsang and Ismail), 0.5 with no
//!   evidence;
//! - `ttft = Σ w · sum_ms / Σ w · count` over the `served` rows (its decayed mean time to first
//!   output), and `latency = TTFT_REFERENCE_MS / (TTFT_REFERENCE_MS + ttft)`, 1 with none;
//! - `score = quality · latency`.
//!
//! **Routing** ([`crate::nodes`]) picks among the nodes with a free slot at random, each weighted
//! by `score · (1 - load) · (WARM_WEIGHT if the model is ready on it)`: never a single favourite, and
//! a new node's prior (0.5) is its probation share. A node whose quality (the beta reputation,
//! speed left out) is below [`FLOOR`] gets no client task at all, only guardians' probes, whose
//! telemetry is how it earns its way back (besides the decay of old faults). Speed only weighs: a
//! slow model (a large one, a CPU under load) is picked less, never shut out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use stacknet_api::types::{Evidence, NodeList, NodeReport, ScoreComponents};
use stacknet_protocol::{NodeKeyId, Timestamp};

use crate::error::ApiError;
use crate::nodes::Nodes;
use crate::store::{EvidenceRow, Store, StoreError};
use crate::AppState;

/// A day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// How much a day-old bucket of evidence still counts (λ per day).
pub const DECAY_PER_DAY: f64 = 0.98;
/// The time to first output at which the latency factor is one half.
pub const TTFT_REFERENCE_MS: f64 = 1_000.0;
/// Below this quality a node gets no client task, only guardians' probes.
pub const FLOOR: f64 = 0.2;
/// How much more likely a node is picked when the hub has seen the task's model ready on it.
pub const WARM_WEIGHT: f64 = 1.5;
/// Evidence waits in memory at most this long before it is added to the store.
pub const FLUSH_INTERVAL_MS: u64 = 1_000;
/// How often every node's score is read back from the store (another replica's evidence).
pub const RELOAD_INTERVAL_MS: u64 = 30_000;
/// The score of a node without evidence.
pub const PRIOR: f64 = 0.5;
/// Guardians' telemetry reports shown with one node's record, newest first.
pub const SHOWN_TELEMETRY: u32 = 20;

/// What became of one task sent to a node, or one decided check of a validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The node answered and its paperwork was accepted.
    Served,
    /// A validators' check of one of its tasks was decided `passed`.
    ValidationPassed,
    /// The node answered with an error of its own (an upstream failure, an internal error).
    NodeError,
    /// The node held the task past the request's deadline, having had at least half of it.
    Timeout,
    /// The node's connection ended while it held the task.
    Dropped,
    /// The node said it was full while the hub counted a free slot on it.
    Overloaded,
    /// Its paperwork was refused (claims that do not match what the hub relayed).
    PaperworkRefused,
    /// It sent more output than the request could produce.
    OutputOverBound,
    /// A quorum of validators convicted one of its tasks.
    Convicted,
    /// The client went away, or cancelled: never the node's fault.
    ClientCancelled,
    /// The client read so slowly that the hub abandoned the task: never the node's fault.
    ClientSlow,
    /// The node refused the request as invalid (or too long for the model): the client's.
    ClientError,
    /// The deadline passed while the node had held the task for less than half of it (the queue
    /// used the rest): the hub's, not the node's.
    HubDeadline,
    /// A guardian's probe answered as asked (from its signed telemetry).
    ProbePassed,
    /// A guardian's probe failed or timed out.
    ProbeFailed,
    /// A guardian's probe was answered with something else than it asked for.
    ProbeWrong,
    /// A guardian's probe of a model the node named ready answered as slowly as a cold one.
    WarmClaimFailed,
}

/// Every kind, with its stored name and its weights (good, bad).
const KINDS: [(Kind, &str, f64, f64); 17] = [
    (Kind::Served, "served", 1.0, 0.0),
    (Kind::ValidationPassed, "validation_passed", 5.0, 0.0),
    (Kind::NodeError, "node_error", 0.0, 1.0),
    (Kind::Timeout, "timeout", 0.0, 1.0),
    (Kind::Dropped, "dropped", 0.0, 1.0),
    (Kind::Overloaded, "overloaded", 0.0, 1.0),
    (Kind::PaperworkRefused, "paperwork_refused", 0.0, 5.0),
    (Kind::OutputOverBound, "output_over_bound", 0.0, 5.0),
    (Kind::Convicted, "convicted", 0.0, 50.0),
    (Kind::ClientCancelled, "client_cancelled", 0.0, 0.0),
    (Kind::ClientSlow, "client_slow", 0.0, 0.0),
    (Kind::ClientError, "client_error", 0.0, 0.0),
    (Kind::HubDeadline, "hub_deadline", 0.0, 0.0),
    (Kind::ProbePassed, "probe_passed", 1.0, 0.0),
    (Kind::ProbeFailed, "probe_failed", 0.0, 1.0),
    // Less than a refused paperwork: a weak model may miss an echo or a sum honestly.
    (Kind::ProbeWrong, "probe_wrong", 0.0, 2.0),
    (Kind::WarmClaimFailed, "warm_claim_failed", 0.0, 5.0),
];

impl Kind {
    fn entry(self) -> &'static (Kind, &'static str, f64, f64) {
        KINDS
            .iter()
            .find(|(k, ..)| *k == self)
            .expect("every kind is in KINDS")
    }

    /// The machine-readable reason, as stored and served.
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    pub fn parse(name: &str) -> Option<Kind> {
        KINDS.iter().find(|(_, n, ..)| *n == name).map(|(k, ..)| *k)
    }

    /// How much one observation counts for the node (good) and against it (bad).
    pub fn weights(self) -> (f64, f64) {
        let (_, _, good, bad) = *self.entry();
        (good, bad)
    }
}

/// The UTC day (days since the Unix epoch) of `at`.
pub fn day_of(at: Timestamp) -> i64 {
    at.unix_ms().div_euclid(DAY_MS)
}

/// A score and its parts, as [`score`] computes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub score: f64,
    pub quality: f64,
    pub latency: f64,
    pub good: f64,
    pub bad: f64,
    pub ttft_ms: Option<f64>,
}

/// The formula of the module documentation, over one node's evidence, on day `today`. Rows of
/// kinds this hub does not know (a newer replica's) count for nothing.
pub fn score<'a>(rows: impl IntoIterator<Item = (i64, &'a str, u64, u64)>, today: i64) -> Score {
    let (mut good, mut bad, mut served, mut served_ms) = (0.0, 0.0, 0.0, 0.0);
    for (day, kind, count, sum_ms) in rows {
        let Some(kind) = Kind::parse(kind) else {
            continue;
        };
        let age = i32::try_from((today - day).max(0)).unwrap_or(i32::MAX);
        let w = DECAY_PER_DAY.powi(age);
        let (g, b) = kind.weights();
        good += w * count as f64 * g;
        bad += w * count as f64 * b;
        if kind == Kind::Served {
            served += w * count as f64;
            served_ms += w * sum_ms as f64;
        }
    }
    let quality = (good + 1.0) / (good + bad + 2.0);
    let ttft_ms = (served > 0.0).then(|| served_ms / served);
    let latency = ttft_ms.map_or(1.0, |t| TTFT_REFERENCE_MS / (TTFT_REFERENCE_MS + t));
    Score {
        score: quality * latency,
        quality,
        latency,
        good,
        bad,
        ttft_ms,
    }
}

/// [`score`] over stored rows.
pub fn score_rows(rows: &[EvidenceRow], today: i64) -> Score {
    score(
        rows.iter().map(|r| (r.day, r.kind.as_str(), r.count, r.sum_ms)),
        today,
    )
}

/// A stored bucket of `count` observations of `kind` of `node` on `day`.
fn row(node: NodeKeyId, day: i64, kind: Kind, count: u64, sum_ms: u64) -> EvidenceRow {
    EvidenceRow {
        node_key: node,
        day,
        kind: kind.as_str().to_owned(),
        count,
        sum_ms,
    }
}

/// Evidence counted in memory: (node, day, kind) -> (count, sum of milliseconds).
type Pending = HashMap<(NodeKeyId, i64, Kind), (u64, u64)>;

/// Evidence waiting to be stored, and the scores routing reads.
#[derive(Debug, Default)]
pub struct Reputation {
    pending: Mutex<Pending>,
    scores: RwLock<HashMap<NodeKeyId, Score>>,
}

impl Reputation {
    /// Counts one observation of `kind` of `node` today, with `ms` (time to first output, for
    /// [`Kind::Served`]; 0 otherwise).
    pub fn observe(&self, node: NodeKeyId, kind: Kind, ms: u64) {
        let day = day_of(Timestamp::now());
        if let Ok(mut pending) = self.pending.lock() {
            let (count, sum) = pending.entry((node, day, kind)).or_default();
            *count = count.saturating_add(1);
            *sum = sum.saturating_add(ms);
        }
    }

    /// The score routing uses for `node` (the prior until it has evidence).
    pub fn score_of(&self, node: &NodeKeyId) -> f64 {
        self.scores
            .read()
            .ok()
            .and_then(|s| s.get(node).map(|s| s.score))
            .unwrap_or(PRIOR)
    }

    /// Whether `node` may be given client tasks: its quality (the beta reputation, speed left out)
    /// is at least [`FLOOR`]. A slow model is weighed down in routing, never shut out for its speed.
    pub fn above_floor(&self, node: &NodeKeyId) -> bool {
        self.scores
            .read()
            .ok()
            .and_then(|s| s.get(node).map(|s| s.quality))
            .unwrap_or(PRIOR)
            >= FLOOR
    }

    /// Stores `counts` (kind, count, milliseconds) about `node` on `day` at once, and reads back its
    /// score (a guardian's telemetry, which arrives already counted).
    pub async fn record(
        &self,
        store: &dyn Store,
        node: NodeKeyId,
        day: i64,
        counts: &[(Kind, u64, u64)],
    ) -> Result<(), StoreError> {
        let rows: Vec<EvidenceRow> = counts
            .iter()
            .filter(|(_, count, _)| *count > 0)
            .map(|&(kind, count, sum_ms)| row(node, day, kind, count, sum_ms))
            .collect();
        if !rows.is_empty() {
            store.add_evidence(rows).await?;
        }
        self.refresh(store, node).await
    }

    /// Reads `node`'s evidence back from the store and sets its score from it.
    async fn refresh(&self, store: &dyn Store, node: NodeKeyId) -> Result<(), StoreError> {
        let rows = store.evidence(Some(node)).await?;
        self.set(node, score_rows(&rows, day_of(Timestamp::now())));
        Ok(())
    }

    /// Adds the evidence waiting into the store, then reads back the scores of the nodes it was
    /// about. Evidence a failed write could not store waits for the next flush.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let taken: Pending = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Err(StoreError::Poisoned),
        };
        if taken.is_empty() {
            return Ok(());
        }
        let rows: Vec<EvidenceRow> = taken
            .iter()
            .map(|(&(node, day, kind), &(count, sum_ms))| row(node, day, kind, count, sum_ms))
            .collect();
        if let Err(e) = store.add_evidence(rows).await {
            if let Ok(mut pending) = self.pending.lock() {
                for (key, (count, sum)) in taken {
                    let (c, s) = pending.entry(key).or_default();
                    *c = c.saturating_add(count);
                    *s = s.saturating_add(sum);
                }
            }
            return Err(e);
        }
        let touched: HashSet<NodeKeyId> = taken.keys().map(|(node, ..)| *node).collect();
        for node in touched {
            self.refresh(store, node).await?;
        }
        Ok(())
    }

    /// Reads every node's score from the store (at start, and now and then for what other
    /// replicas stored).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let today = day_of(Timestamp::now());
        let mut by_node: BTreeMap<NodeKeyId, Vec<EvidenceRow>> = BTreeMap::new();
        for row in store.evidence(None).await? {
            by_node.entry(row.node_key).or_default().push(row);
        }
        let scores: HashMap<NodeKeyId, Score> = by_node
            .iter()
            .map(|(node, rows)| (*node, score_rows(rows, today)))
            .collect();
        if let Ok(mut s) = self.scores.write() {
            *s = scores;
        }
        Ok(())
    }

    pub(crate) fn set(&self, node: NodeKeyId, score: Score) {
        if let Ok(mut s) = self.scores.write() {
            s.insert(node, score);
        }
    }
}

/// Flushes evidence every [`FLUSH_INTERVAL_MS`] and reloads every score every
/// [`RELOAD_INTERVAL_MS`], for as long as the hub runs; flushes once more when it stops.
pub fn start(
    store: Arc<dyn Store>,
    nodes: Arc<Nodes>,
    mut shutting_down: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut flush = tokio::time::interval(Duration::from_millis(FLUSH_INTERVAL_MS));
        let mut reload = tokio::time::interval(Duration::from_millis(RELOAD_INTERVAL_MS));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                _ = flush.tick() => nodes.reputation.flush(&*store).await,
                _ = reload.tick() => nodes.reputation.reload(&*store).await,
                _ = shutting_down.changed() => {
                    if let Err(e) = nodes.reputation.flush(&*store).await {
                        tracing::warn!(error = %e, "could not store the last reputation evidence");
                    }
                    return;
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not store or read reputation evidence; trying again");
            }
        }
    });
}

/// `GET /stacknet/v1/nodes`: every node connected now or with evidence, best score first.
pub async fn list(State(state): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    flushed(&state).await?;
    let mut rows: BTreeMap<NodeKeyId, Vec<EvidenceRow>> = BTreeMap::new();
    for row in state.store.evidence(None).await.map_err(ApiError::internal)? {
        rows.entry(row.node_key).or_default().push(row);
    }
    let mut slashes: BTreeMap<NodeKeyId, u64> = BTreeMap::new();
    for s in state.store.slashes(None).await.map_err(ApiError::internal)? {
        *slashes.entry(s.node_key).or_default() += 1;
    }
    let keys: BTreeSet<NodeKeyId> = rows
        .keys()
        .copied()
        .chain(state.nodes.connected().iter().map(|n| n.id))
        .collect();
    let today = day_of(Timestamp::now());
    let mut data: Vec<NodeReport> = keys
        .into_iter()
        .map(|id| {
            let evidence = rows.get(&id).map_or(&[][..], Vec::as_slice);
            let slashed = slashes.get(&id).copied().unwrap_or(0);
            report(&state.nodes, id, evidence, slashed, today, false)
        })
        .collect();
    data.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.node_key.cmp(&b.node_key)));
    Ok(Json(NodeList {
        object: "list".to_owned(),
        data,
    }))
}

/// `GET /stacknet/v1/nodes/{id}`: one node's record, with the evidence rows its score is computed
/// from.
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeReport>, ApiError> {
    let id: NodeKeyId = id
        .parse()
        .map_err(|e: stacknet_protocol::IdError| ApiError::invalid("id", e.to_string()))?;
    flushed(&state).await?;
    let rows = state.store.evidence(Some(id)).await.map_err(ApiError::internal)?;
    let slashes = state.store.slashes(Some(id)).await.map_err(ApiError::internal)?;
    if rows.is_empty() && slashes.is_empty() && state.nodes.get(&id).is_none() {
        return Err(ApiError::NotFound(format!(
            "node {id}: not connected, and no evidence about it"
        )));
    }
    let today = day_of(Timestamp::now());
    let mut report = report(&state.nodes, id, &rows, slashes.len() as u64, today, true);
    for json in state
        .store
        .telemetry(id, SHOWN_TELEMETRY)
        .await
        .map_err(ApiError::internal)?
    {
        report
            .telemetry
            .push(serde_json::from_str(&json).map_err(ApiError::internal)?);
    }
    Ok(Json(report))
}

/// Stores the evidence waiting, so that what is served is what is stored.
async fn flushed(state: &AppState) -> Result<(), ApiError> {
    state
        .nodes
        .reputation
        .flush(&*state.store)
        .await
        .map_err(ApiError::internal)
}

/// A node's public record from its evidence and what the hub knows of it now.
fn report(
    nodes: &Nodes,
    id: NodeKeyId,
    rows: &[EvidenceRow],
    slashes: u64,
    today: i64,
    with_rows: bool,
) -> NodeReport {
    let s = score_rows(rows, today);
    let handle = nodes.get(&id);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.kind.clone()).or_default() += r.count;
    }
    NodeReport {
        node_key: id,
        connected: handle.is_some(),
        connected_since: handle.as_ref().map(|n| n.connected_at),
        models: handle.as_ref().map(|n| n.models.clone()).unwrap_or_default(),
        ready: handle.as_ref().map(|n| n.ready_models()).unwrap_or_default(),
        in_flight: handle.as_ref().map_or(0, |n| n.in_flight()),
        max_concurrency: handle.as_ref().map_or(0, |n| n.max_concurrency),
        bonded: nodes.bond(&id),
        suspended: nodes.is_suspended(&id),
        slashes,
        score: s.score,
        below_floor: s.quality < FLOOR,
        components: ScoreComponents {
            quality: s.quality,
            latency: s.latency,
            good: s.good,
            bad: s.bad,
            ttft_ms: s.ttft_ms,
            as_of_day: today,
        },
        counts,
        evidence: if with_rows {
            rows.iter()
                .map(|r| Evidence {
                    day: r.day,
                    kind: r.kind.clone(),
                    count: r.count,
                    sum_ms: r.sum_ms,
                })
                .collect()
        } else {
            Vec::new()
        },
        telemetry: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_evidence_is_the_prior_and_every_kind_round_trips() {
        let s = score(std::iter::empty(), 100);
        assert_eq!(
            (s.score, s.quality, s.latency, s.ttft_ms),
            (PRIOR, 0.5, 1.0, None)
        );
        for (kind, name, ..) in KINDS {
            assert_eq!(Kind::parse(name), Some(kind));
            assert_eq!(kind.as_str(), name);
        }
        assert_eq!(Kind::parse("from_a_newer_hub"), None);
    }

    #[test]
    fn faults_lower_the_score_excuses_do_not_and_old_evidence_fades() {
        let today = 20_000;
        let clean = score([(today, "served", 100, 0)], today);
        let excused = score(
            [
                (today, "served", 100, 0),
                (today, "client_cancelled", 50, 0),
                (today, "hub_deadline", 50, 0),
            ],
            today,
        );
        assert_eq!(clean, excused);
        let faulty = score([(today, "served", 100, 0), (today, "dropped", 50, 0)], today);
        assert!(faulty.score < clean.score - 0.2, "{faulty:?} against {clean:?}");
        // The same faults 35 days ago count about half.
        let old = score([(today, "served", 100, 0), (today - 35, "dropped", 50, 0)], today);
        assert!(old.bad > 24.0 && old.bad < 26.0, "{old:?}");
        assert!(old.score > faulty.score);
        // Slow answers cost through the latency factor only.
        let slow = score([(today, "served", 100, 100 * 1_000)], today);
        assert_eq!(slow.quality, clean.quality);
        assert!((slow.latency - 0.5).abs() < 1e-12);
    }
}
