//! The dashboard's per-minute rollups on PostgreSQL: the table of the SQLite store's `usage`;
//! replicas add into the same rows.

use stacknet_protocol::StackId;

use super::PgStore;
use crate::store::codec::{parse, to_i64, to_u64};
use crate::store::records::{UsageCounts, UsageRow, LATENCY_BUCKETS};
use crate::store::traits::{StoreFuture, UsageStore};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS usage_minutes (
    minute BIGINT NOT NULL, stack TEXT COLLATE "C" NOT NULL, node_key TEXT COLLATE "C" NOT NULL,
    model TEXT COLLATE "C" NOT NULL, workload TEXT COLLATE "C" NOT NULL, requests BIGINT NOT NULL,
    errors BIGINT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL, l0 BIGINT NOT NULL, l1 BIGINT NOT NULL, l2 BIGINT NOT NULL, l3 BIGINT NOT NULL, l4 BIGINT NOT NULL, l5 BIGINT NOT NULL, l6 BIGINT NOT NULL, l7 BIGINT NOT NULL, l8 BIGINT NOT NULL, l9 BIGINT NOT NULL, l10 BIGINT NOT NULL, l11 BIGINT NOT NULL,
    PRIMARY KEY (minute, stack, node_key, model, workload));
"#;

const TABLE: &str = "usage_minutes";

impl UsageStore for PgStore {
    fn add_usage(&self, rows: Vec<UsageRow>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // One statement for the batch: its keys are distinct, as ON CONFLICT needs.
            let sql = "INSERT INTO usage_minutes AS u (minute, stack, node_key, model, workload,
                 requests, errors, input_tokens, output_tokens, cost_micros, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::BIGINT[], $17::BIGINT[], $18::BIGINT[], $19::BIGINT[], $20::BIGINT[], $21::BIGINT[], $22::BIGINT[])
                 ON CONFLICT (minute, stack, node_key, model, workload) DO UPDATE SET
                 requests = u.requests + EXCLUDED.requests,
                 errors = u.errors + EXCLUDED.errors,
                 input_tokens = u.input_tokens + EXCLUDED.input_tokens,
                 output_tokens = u.output_tokens + EXCLUDED.output_tokens,
                 cost_micros = u.cost_micros + EXCLUDED.cost_micros,
                 l0 = u.l0 + EXCLUDED.l0,
                 l1 = u.l1 + EXCLUDED.l1,
                 l2 = u.l2 + EXCLUDED.l2,
                 l3 = u.l3 + EXCLUDED.l3,
                 l4 = u.l4 + EXCLUDED.l4,
                 l5 = u.l5 + EXCLUDED.l5,
                 l6 = u.l6 + EXCLUDED.l6,
                 l7 = u.l7 + EXCLUDED.l7,
                 l8 = u.l8 + EXCLUDED.l8,
                 l9 = u.l9 + EXCLUDED.l9,
                 l10 = u.l10 + EXCLUDED.l10,
                 l11 = u.l11 + EXCLUDED.l11";
            let minutes: Vec<i64> = rows.iter().map(|r| r.minute).collect();
            let stacks: Vec<String> = rows.iter().map(|r| r.stack.to_string()).collect();
            let nodes: Vec<String> = rows.iter().map(|r| r.node_key.to_string()).collect();
            let models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
            let workloads: Vec<&str> = rows.iter().map(|r| r.workload.as_str()).collect();
            let column =
                |f: &dyn Fn(&UsageRow) -> u64| -> Vec<i64> { rows.iter().map(|r| to_i64(f(r))).collect() };
            let counts: Vec<Vec<i64>> = vec![
                column(&|r| r.counts.requests),
                column(&|r| r.counts.errors),
                column(&|r| r.counts.input_tokens),
                column(&|r| r.counts.output_tokens),
                column(&|r| r.counts.cost_micros),
            ];
            let buckets: Vec<Vec<i64>> = (0..LATENCY_BUCKETS)
                .map(|i| column(&|r| r.counts.latency[i]))
                .collect();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                vec![&minutes, &stacks, &nodes, &models, &workloads];
            params.extend(
                counts
                    .iter()
                    .chain(&buckets)
                    .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync)),
            );
            self.execute(sql, &params).await?;
            Ok(())
        })
    }

    fn usage_since(&self, since: i64, stack: Option<StackId>) -> StoreFuture<'_, Vec<UsageRow>> {
        Box::pin(async move {
            let sql = "SELECT minute, stack, node_key, model, workload, requests, errors, input_tokens,
                 output_tokens, cost_micros, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11
                 FROM usage_minutes WHERE minute >= $1 AND ($2::TEXT IS NULL OR stack = $2)
                 ORDER BY minute, stack, node_key, model, workload";
            let stack = stack.map(|s| s.to_string());
            self.query(sql, &[&since, &stack])
                .await?
                .iter()
                .map(|r| {
                    let mut latency = [0u64; LATENCY_BUCKETS];
                    for (i, bucket) in latency.iter_mut().enumerate() {
                        *bucket = to_u64(TABLE, r.try_get(10 + i)?)?;
                    }
                    Ok(UsageRow {
                        minute: r.try_get(0)?,
                        stack: parse(TABLE, r.try_get(1)?)?,
                        node_key: parse(TABLE, r.try_get(2)?)?,
                        model: r.try_get(3)?,
                        workload: r.try_get(4)?,
                        counts: UsageCounts {
                            requests: to_u64(TABLE, r.try_get(5)?)?,
                            errors: to_u64(TABLE, r.try_get(6)?)?,
                            input_tokens: to_u64(TABLE, r.try_get(7)?)?,
                            output_tokens: to_u64(TABLE, r.try_get(8)?)?,
                            cost_micros: to_u64(TABLE, r.try_get(9)?)?,
                            latency,
                        },
                    })
                })
                .collect()
        })
    }
}
