//! The dashboard's figures: per-minute rollups of the tasks this hub ran (by Stack, node, model and
//! workload), added into the database every [`FLUSH_INTERVAL_MS`] and when the hub stops. Counts
//! only grow and replicas add into the same rows, so every replica's dashboard shows the same
//! figures, and a restart loses at most the last few seconds of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::{Amount, NodeKeyId, StackId, Timestamp};

use crate::store::{Store, StoreError, UsageCounts, UsageRow, LATENCY_BOUNDS_MS, LATENCY_BUCKETS};

/// How often the rollups waiting in memory are added into the database.
pub const FLUSH_INTERVAL_MS: u64 = 5_000;

type Key = (i64, StackId, NodeKeyId, String, &'static str);

/// One task that ended, as [`Rollups::record`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Ended<'a> {
    pub stack: StackId,
    pub node: NodeKeyId,
    pub model: &'a str,
    pub workload: Workload,
    pub ok: bool,
    /// From the request's start to the task's end.
    pub duration: Duration,
    pub usage: Option<&'a Usage>,
    pub cost: Amount,
}

/// Rollups waiting to be stored.
#[derive(Debug, Default)]
pub struct Rollups {
    pending: Mutex<HashMap<Key, UsageRow>>,
}

/// The minute (since the Unix epoch) of `at`.
pub fn minute_of(at: Timestamp) -> i64 {
    at.unix_ms().div_euclid(60_000)
}

/// The latency bucket of `duration` ([`LATENCY_BOUNDS_MS`]).
fn bucket(duration: Duration) -> usize {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(LATENCY_BUCKETS - 1)
}

impl Rollups {
    /// Counts one ended task in its minute's row.
    pub fn record(&self, task: Ended<'_>) {
        let minute = minute_of(Timestamp::now());
        let workload = stacknet_api::metrics::workload_name(task.workload);
        let key = (minute, task.stack, task.node, task.model.to_owned(), workload);
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let row = pending.entry(key).or_insert_with(|| UsageRow {
            minute,
            stack: task.stack,
            node_key: task.node,
            model: task.model.to_owned(),
            workload: workload.to_owned(),
            counts: UsageCounts::default(),
        });
        let mut one = UsageCounts {
            requests: 1,
            errors: u64::from(!task.ok),
            cost_micros: u64::try_from(task.cost.micros()).unwrap_or(0),
            ..UsageCounts::default()
        };
        if let Some(usage) = task.usage {
            one.input_tokens = usage.input_tokens;
            one.output_tokens = usage.output_tokens;
        }
        one.latency[bucket(task.duration)] = 1;
        row.counts.add(&one);
    }

    /// Adds the rollups waiting into the store; what a failed write could not store waits for the
    /// next flush.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let taken = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Err(StoreError::Poisoned),
        };
        if taken.is_empty() {
            return Ok(());
        }
        let rows: Vec<UsageRow> = taken.values().cloned().collect();
        if let Err(e) = store.add_usage(rows).await {
            if let Ok(mut pending) = self.pending.lock() {
                for (key, row) in taken {
                    match pending.get_mut(&key) {
                        Some(newer) => newer.counts.add(&row.counts),
                        None => {
                            pending.insert(key, row);
                        }
                    }
                }
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Flushes every [`FLUSH_INTERVAL_MS`] for as long as the hub runs, and once more when it stops.
pub fn start(
    store: Arc<dyn Store>,
    rollups: Arc<Rollups>,
    mut shutting_down: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut flush = tokio::time::interval(Duration::from_millis(FLUSH_INTERVAL_MS));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Err(e) = rollups.flush(&*store).await {
                        tracing::warn!(error = %e, "could not store the dashboard's rollups; trying again");
                    }
                }
                _ = shutting_down.changed() => {
                    if let Err(e) = rollups.flush(&*store).await {
                        tracing::warn!(error = %e, "could not store the dashboard's last rollups");
                    }
                    return;
                }
            }
        }
    });
}

/// Rows added up: a window's, a model's, a day's figures.
pub type Totals = UsageCounts;

impl UsageCounts {
    /// The counts of `rows` added up.
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a UsageRow>) -> Self {
        let mut t = UsageCounts::default();
        for r in rows {
            t.add(&r.counts);
        }
        t
    }

    /// The upper bound (ms) of the bucket holding the `q` quantile of latency; `None` with no
    /// requests, `Some(None)` when it is in the last bucket (slower than every bound).
    pub fn quantile_ms(&self, q: f64) -> Option<Option<u64>> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BOUNDS_MS.get(i).copied());
            }
        }
        Some(None)
    }

    /// Failed requests over all, in [0, 1]; `None` with no requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(latency_ms: &[u64]) -> UsageRow {
        let mut counts = UsageCounts {
            requests: latency_ms.len() as u64,
            errors: 1,
            ..UsageCounts::default()
        };
        for &ms in latency_ms {
            counts.latency[bucket(Duration::from_millis(ms))] += 1;
        }
        UsageRow {
            minute: 0,
            stack: StackId::random(),
            node_key: stacknet_protocol::SecretKey::generate()
                .public_key()
                .node_key_id(),
            model: "m".into(),
            workload: "chat".into(),
            counts,
        }
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        assert_eq!(Totals::default().quantile_ms(0.5), None);
        // 98 fast, 2 slow: p50 in the first bucket, p99 in the slow one's.
        let mut ms = vec![3; 98];
        ms.extend([700, 40_000]);
        let t = Totals::of([&row(&ms)]);
        assert_eq!(t.quantile_ms(0.5), Some(Some(5)));
        assert_eq!(t.quantile_ms(0.99), Some(Some(1_000)));
        assert_eq!(t.quantile_ms(1.0), Some(None));
        assert_eq!(t.error_rate(), Some(0.01));
    }

    #[test]
    fn rows_add_into_each_other() {
        let a = row(&[1]);
        let mut b = row(&[2]);
        b.counts.add(&a.counts);
        assert_eq!(b.counts.requests, 2);
        assert_eq!(b.counts.latency[0], 2);
    }
}
