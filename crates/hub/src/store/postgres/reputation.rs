//! Reputation evidence on PostgreSQL: the table of the SQLite store's `reputation`; replicas add
//! into the same rows.

use stacknet_protocol::{NodeKeyId, Timestamp};

use super::PgStore;
use crate::store::codec::{parse, to_i64, to_u64};
use crate::store::records::EvidenceRow;
use crate::store::traits::{ReputationStore, StoreFuture};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS reputation_evidence (
    node_key TEXT COLLATE "C" NOT NULL, day BIGINT NOT NULL, kind TEXT COLLATE "C" NOT NULL,
    count BIGINT NOT NULL, sum_ms BIGINT NOT NULL, PRIMARY KEY (node_key, day, kind));
CREATE TABLE IF NOT EXISTS reputation_telemetry (
    id TEXT COLLATE "C" PRIMARY KEY, node_key TEXT NOT NULL, at BIGINT NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reputation_telemetry_by_node ON reputation_telemetry (node_key, at);
"#;

const TABLE: &str = "reputation_evidence";

impl ReputationStore for PgStore {
    fn add_evidence(&self, rows: Vec<EvidenceRow>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // One statement for the batch: its (node, day, kind) are distinct, as ON CONFLICT needs.
            let sql = "INSERT INTO reputation_evidence AS e (node_key, day, kind, count, sum_ms)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
                 ON CONFLICT (node_key, day, kind) DO UPDATE
                 SET count = e.count + EXCLUDED.count, sum_ms = e.sum_ms + EXCLUDED.sum_ms";
            let nodes: Vec<String> = rows.iter().map(|r| r.node_key.to_string()).collect();
            let days: Vec<i64> = rows.iter().map(|r| r.day).collect();
            let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
            let counts: Vec<i64> = rows.iter().map(|r| to_i64(r.count)).collect();
            let sums: Vec<i64> = rows.iter().map(|r| to_i64(r.sum_ms)).collect();
            self.execute(sql, &[&nodes, &days, &kinds, &counts, &sums])
                .await?;
            Ok(())
        })
    }

    fn evidence(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<EvidenceRow>> {
        Box::pin(async move {
            let sql = "SELECT node_key, day, kind, count, sum_ms FROM reputation_evidence
                 WHERE $1::TEXT IS NULL OR node_key = $1 ORDER BY node_key, day, kind";
            let node = node.map(|n| n.to_string());
            self.query(sql, &[&node])
                .await?
                .iter()
                .map(|r| {
                    Ok(EvidenceRow {
                        node_key: parse(TABLE, r.try_get(0)?)?,
                        day: r.try_get(1)?,
                        kind: r.try_get(2)?,
                        count: to_u64(TABLE, r.try_get(3)?)?,
                        sum_ms: to_u64(TABLE, r.try_get(4)?)?,
                    })
                })
                .collect()
        })
    }

    fn add_telemetry(
        &self,
        id: String,
        node: NodeKeyId,
        at: Timestamp,
        json: String,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let sql = "INSERT INTO reputation_telemetry (id, node_key, at, json) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING";
            let added = self
                .execute(sql, &[&id, &node.to_string(), &at.unix_ms(), &json])
                .await?;
            Ok(added == 1)
        })
    }

    fn telemetry(&self, node: NodeKeyId, limit: u32) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let sql =
                "SELECT json FROM reputation_telemetry WHERE node_key = $1 ORDER BY at DESC, id LIMIT $2";
            self.query(sql, &[&node.to_string(), &i64::from(limit)])
                .await?
                .iter()
                .map(|r| Ok(r.try_get::<_, String>(0)?))
                .collect()
        })
    }
}
