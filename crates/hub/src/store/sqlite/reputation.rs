//! Reputation evidence on SQLite: one row per node, day and kind.

use rusqlite::params;
use stacknet_protocol::{NodeKeyId, Timestamp};

use super::SqliteStore;
use crate::store::codec::{parse, to_i64, to_u64};
use crate::store::records::EvidenceRow;
use crate::store::traits::{ReputationStore, StoreFuture};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reputation_evidence (
    node_key TEXT NOT NULL, day INTEGER NOT NULL, kind TEXT NOT NULL, count INTEGER NOT NULL,
    sum_ms INTEGER NOT NULL, PRIMARY KEY (node_key, day, kind));
CREATE TABLE IF NOT EXISTS reputation_telemetry (
    id TEXT PRIMARY KEY, node_key TEXT NOT NULL, at INTEGER NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reputation_telemetry_by_node ON reputation_telemetry (node_key, at);
";

const TABLE: &str = "reputation_evidence";

impl ReputationStore for SqliteStore {
    fn add_evidence(&self, rows: Vec<EvidenceRow>) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO reputation_evidence (node_key, day, kind, count, sum_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (node_key, day, kind) DO UPDATE
                     SET count = count + excluded.count, sum_ms = sum_ms + excluded.sum_ms",
                )?;
                for r in &rows {
                    add.execute(params![
                        r.node_key.to_string(),
                        r.day,
                        r.kind,
                        to_i64(r.count),
                        to_i64(r.sum_ms)
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn evidence(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<EvidenceRow>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT node_key, day, kind, count, sum_ms FROM reputation_evidence
                 WHERE ?1 IS NULL OR node_key = ?1 ORDER BY node_key, day, kind",
            )?;
            let rows = stmt.query_map([node.map(|n| n.to_string())], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (node_key, day, kind, count, sum_ms) = row?;
                out.push(EvidenceRow {
                    node_key: parse(TABLE, &node_key)?,
                    day,
                    kind,
                    count: to_u64(TABLE, count)?,
                    sum_ms: to_u64(TABLE, sum_ms)?,
                });
            }
            Ok(out)
        })
    }

    fn add_telemetry(
        &self,
        id: String,
        node: NodeKeyId,
        at: Timestamp,
        json: String,
    ) -> StoreFuture<'_, bool> {
        self.with(move |c| {
            let added = c.execute(
                "INSERT OR IGNORE INTO reputation_telemetry (id, node_key, at, json) VALUES (?1, ?2, ?3, ?4)",
                params![id, node.to_string(), at.unix_ms(), json],
            )?;
            Ok(added == 1)
        })
    }

    fn telemetry(&self, node: NodeKeyId, limit: u32) -> StoreFuture<'_, Vec<String>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT json FROM reputation_telemetry WHERE node_key = ?1 ORDER BY at DESC, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![node.to_string(), limit], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
