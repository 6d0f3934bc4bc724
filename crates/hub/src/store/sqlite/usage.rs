//! The dashboard's per-minute rollups on SQLite: one row per minute, Stack, node, model and
//! workload.

use rusqlite::params_from_iter;
use rusqlite::types::Value as Sql;
use stacknet_protocol::StackId;

use super::SqliteStore;
use crate::store::codec::{parse, to_i64, to_u64};
use crate::store::records::{UsageCounts, UsageRow, LATENCY_BUCKETS};
use crate::store::traits::{StoreFuture, UsageStore};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_minutes (
    minute INTEGER NOT NULL, stack TEXT NOT NULL, node_key TEXT NOT NULL, model TEXT NOT NULL,
    workload TEXT NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
    l0 INTEGER NOT NULL, l1 INTEGER NOT NULL, l2 INTEGER NOT NULL, l3 INTEGER NOT NULL, l4 INTEGER NOT NULL, l5 INTEGER NOT NULL, l6 INTEGER NOT NULL, l7 INTEGER NOT NULL, l8 INTEGER NOT NULL, l9 INTEGER NOT NULL, l10 INTEGER NOT NULL, l11 INTEGER NOT NULL,
    PRIMARY KEY (minute, stack, node_key, model, workload));
";

const TABLE: &str = "usage_minutes";

impl UsageStore for SqliteStore {
    fn add_usage(&self, rows: Vec<UsageRow>) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO usage_minutes (minute, stack, node_key, model, workload, requests, errors,
                     input_tokens, output_tokens, cost_micros, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
                     ON CONFLICT (minute, stack, node_key, model, workload) DO UPDATE SET
                     requests = requests + excluded.requests,
                     errors = errors + excluded.errors,
                     input_tokens = input_tokens + excluded.input_tokens,
                     output_tokens = output_tokens + excluded.output_tokens,
                     cost_micros = cost_micros + excluded.cost_micros,
                     l0 = l0 + excluded.l0,
                     l1 = l1 + excluded.l1,
                     l2 = l2 + excluded.l2,
                     l3 = l3 + excluded.l3,
                     l4 = l4 + excluded.l4,
                     l5 = l5 + excluded.l5,
                     l6 = l6 + excluded.l6,
                     l7 = l7 + excluded.l7,
                     l8 = l8 + excluded.l8,
                     l9 = l9 + excluded.l9,
                     l10 = l10 + excluded.l10,
                     l11 = l11 + excluded.l11",
                )?;
                for r in &rows {
                    add.execute(params_from_iter(values(r)))?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn usage_since(&self, since: i64, stack: Option<StackId>) -> StoreFuture<'_, Vec<UsageRow>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT minute, stack, node_key, model, workload, requests, errors, input_tokens,
                 output_tokens, cost_micros, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11
                 FROM usage_minutes WHERE minute >= ?1 AND (?2 IS NULL OR stack = ?2)
                 ORDER BY minute, stack, node_key, model, workload",
            )?;
            let mut rows = stmt.query(rusqlite::params![since, stack.map(|s| s.to_string())])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let mut latency = [0u64; LATENCY_BUCKETS];
                for (i, bucket) in latency.iter_mut().enumerate() {
                    *bucket = to_u64(TABLE, r.get(10 + i)?)?;
                }
                out.push(UsageRow {
                    minute: r.get(0)?,
                    stack: parse(TABLE, &r.get::<_, String>(1)?)?,
                    node_key: parse(TABLE, &r.get::<_, String>(2)?)?,
                    model: r.get(3)?,
                    workload: r.get(4)?,
                    counts: UsageCounts {
                        requests: to_u64(TABLE, r.get(5)?)?,
                        errors: to_u64(TABLE, r.get(6)?)?,
                        input_tokens: to_u64(TABLE, r.get(7)?)?,
                        output_tokens: to_u64(TABLE, r.get(8)?)?,
                        cost_micros: to_u64(TABLE, r.get(9)?)?,
                        latency,
                    },
                });
            }
            Ok(out)
        })
    }
}

/// A row's columns in the order of the insert.
fn values(r: &UsageRow) -> Vec<Sql> {
    let mut v = vec![
        Sql::Integer(r.minute),
        Sql::Text(r.stack.to_string()),
        Sql::Text(r.node_key.to_string()),
        Sql::Text(r.model.clone()),
        Sql::Text(r.workload.clone()),
    ];
    let c = &r.counts;
    let counts = [
        c.requests,
        c.errors,
        c.input_tokens,
        c.output_tokens,
        c.cost_micros,
    ];
    v.extend(counts.iter().chain(&c.latency).map(|&n| Sql::Integer(to_i64(n))));
    v
}
