//! Validation on PostgreSQL: the tables of the SQLite store's `validate`, one statement per call.

use stacknet_protocol::{NodeKeyId, PaperworkId, PublicKey, Timestamp};
use tokio_postgres::Row;

use super::PgStore;
use crate::store::codec::{
    case_from, kept_from, material_json, parse, parse_json, suspended_at, to_i64, to_u64, validator_from,
};
use crate::store::records::{CaseRecord, KeptTask, SlashRecord, ValidatorRecord, WorkerStats};
use crate::store::traits::{StoreError, StoreFuture, ValidationStore};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS validation_kept (
    paperwork TEXT COLLATE "C" PRIMARY KEY, node_key TEXT NOT NULL, accepted_at BIGINT NOT NULL,
    material TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS validation_kept_by_time ON validation_kept (accepted_at);
CREATE TABLE IF NOT EXISTS validation_cases (
    paperwork TEXT COLLATE "C" PRIMARY KEY, node_key TEXT NOT NULL, open BOOLEAN NOT NULL,
    canary BOOLEAN NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS validation_cases_open ON validation_cases (paperwork) WHERE open;
CREATE INDEX IF NOT EXISTS validation_cases_by_node ON validation_cases (node_key);
CREATE TABLE IF NOT EXISTS validation_workers (
    node_key TEXT PRIMARY KEY, tasks BIGINT NOT NULL, checks BIGINT NOT NULL, convictions BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS validation_validators (
    node_key TEXT COLLATE "C" PRIMARY KEY, key TEXT NOT NULL, handed BIGINT NOT NULL,
    since_canary BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS validation_slashes (
    seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, node_key TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS validation_slashes_by_node ON validation_slashes (node_key, seq);
CREATE TABLE IF NOT EXISTS validation_suspended (node_key TEXT COLLATE "C" PRIMARY KEY, at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS validation_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
"#;

fn case_of(row: &Row) -> Result<CaseRecord, StoreError> {
    case_from(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
    )
}

impl ValidationStore for PgStore {
    fn keep_task(&self, task: KeptTask) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO validation_kept (paperwork, node_key, accepted_at, material)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (paperwork) DO UPDATE SET material = EXCLUDED.material";
            let (p, n, m) = (
                task.paperwork.to_string(),
                task.node_key.to_string(),
                material_json(&task),
            );
            self.execute(sql, &[&p, &n, &task.accepted_at.unix_ms(), &m])
                .await?;
            Ok(())
        })
    }

    fn kept_task(&self, paperwork: PaperworkId) -> StoreFuture<'_, Option<KeptTask>> {
        Box::pin(async move {
            let sql =
                "SELECT paperwork, node_key, accepted_at, material FROM validation_kept WHERE paperwork = $1";
            let rows = self.query(sql, &[&paperwork.to_string()]).await?;
            rows.first()
                .map(|r| kept_from(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
                .transpose()
        })
    }

    fn forget_kept(&self, before: Timestamp) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let sql = "DELETE FROM validation_kept WHERE accepted_at < $1 AND paperwork NOT IN
                   (SELECT paperwork FROM validation_cases WHERE open OR canary)";
            self.execute(sql, &[&before.unix_ms()]).await
        })
    }

    fn put_case(&self, case: CaseRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO validation_cases (paperwork, node_key, open, canary, json)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (paperwork) DO UPDATE
                 SET open = EXCLUDED.open, canary = EXCLUDED.canary, json = EXCLUDED.json";
            let (p, n) = (case.paperwork.to_string(), case.node_key.to_string());
            self.execute(sql, &[&p, &n, &case.open, &case.canary, &case.json])
                .await?;
            Ok(())
        })
    }

    fn case(&self, paperwork: PaperworkId) -> StoreFuture<'_, Option<CaseRecord>> {
        Box::pin(async move {
            const SQL: &str =
                "SELECT paperwork, node_key, open, canary, json FROM validation_cases WHERE paperwork = $1";
            let rows = self.query(SQL, &[&paperwork.to_string()]).await?;
            rows.first().map(case_of).transpose()
        })
    }

    fn cases_of(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<CaseRecord>>> {
        Box::pin(async move {
            const SQL: &str = "SELECT paperwork, node_key, open, canary, json FROM validation_cases WHERE paperwork = ANY($1)";
            let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
            let rows = self.query(SQL, &[&texts]).await?;
            let mut found = std::collections::HashMap::new();
            for row in &rows {
                let case = case_of(row)?;
                found.insert(case.paperwork, case);
            }
            Ok(ids.iter().map(|id| found.remove(id)).collect())
        })
    }

    fn open_cases(&self) -> StoreFuture<'_, Vec<CaseRecord>> {
        Box::pin(async move {
            const SQL: &str = "SELECT paperwork, node_key, open, canary, json FROM validation_cases WHERE open ORDER BY paperwork";
            self.query(SQL, &[]).await?.iter().map(case_of).collect()
        })
    }

    fn cases_about(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<CaseRecord>> {
        Box::pin(async move {
            const SQL: &str = "SELECT paperwork, node_key, open, canary, json FROM validation_cases
                 WHERE NOT canary AND ($1::TEXT IS NULL OR node_key = $1) ORDER BY paperwork";
            let node = node.map(|n| n.to_string());
            self.query(SQL, &[&node]).await?.iter().map(case_of).collect()
        })
    }

    fn bump_worker(&self, node: NodeKeyId, delta: WorkerStats) -> StoreFuture<'_, WorkerStats> {
        Box::pin(async move {
            let sql = "INSERT INTO validation_workers AS w (node_key, tasks, checks, convictions)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (node_key) DO UPDATE
                 SET tasks = w.tasks + EXCLUDED.tasks, checks = w.checks + EXCLUDED.checks,
                     convictions = w.convictions + EXCLUDED.convictions
                 RETURNING tasks, checks, convictions";
            let (t, c, v) = (
                to_i64(delta.tasks),
                to_i64(delta.checks),
                to_i64(delta.convictions),
            );
            let rows = self.query(sql, &[&node.to_string(), &t, &c, &v]).await?;
            let row = rows.first().ok_or_else(|| StoreError::Corrupt {
                table: "validation_workers",
                detail: "the upsert returned no row".into(),
            })?;
            let table = "validation_workers";
            Ok(WorkerStats {
                tasks: to_u64(table, row.try_get::<_, i64>(0)? - t)?,
                checks: to_u64(table, row.try_get::<_, i64>(1)? - c)?,
                convictions: to_u64(table, row.try_get::<_, i64>(2)? - v)?,
            })
        })
    }

    fn see_validator(&self, key: PublicKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO validation_validators (node_key, key, handed, since_canary)
                 VALUES ($1, $2, 0, 0) ON CONFLICT DO NOTHING";
            self.execute(sql, &[&key.node_key_id().to_string(), &key.to_tagged()])
                .await?;
            Ok(())
        })
    }

    fn validators(&self) -> StoreFuture<'_, Vec<ValidatorRecord>> {
        Box::pin(async move {
            let sql = "SELECT key, handed, since_canary FROM validation_validators ORDER BY node_key";
            self.query(sql, &[])
                .await?
                .iter()
                .map(|r| validator_from(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
                .collect()
        })
    }

    fn set_validator_counts(&self, node: NodeKeyId, handed: u64, since_canary: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "UPDATE validation_validators SET handed = $2, since_canary = $3 WHERE node_key = $1";
            self.execute(sql, &[&node.to_string(), &to_i64(handed), &to_i64(since_canary)])
                .await?;
            Ok(())
        })
    }

    fn add_slash(&self, id: String, slash: SlashRecord) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let json = serde_json::to_string(&slash).map_err(|e| StoreError::Corrupt {
                table: "validation_slashes",
                detail: e.to_string(),
            })?;
            let sql = "INSERT INTO validation_slashes (id, node_key, json) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING";
            Ok(self
                .execute(sql, &[&id, &slash.node_key.to_string(), &json])
                .await?
                == 1)
        })
    }

    fn slashes(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<SlashRecord>> {
        Box::pin(async move {
            let sql =
                "SELECT json FROM validation_slashes WHERE $1::TEXT IS NULL OR node_key = $1 ORDER BY seq";
            let node = node.map(|n| n.to_string());
            self.query(sql, &[&node])
                .await?
                .iter()
                .map(|r| parse_json("validation_slashes", r.try_get(0)?))
                .collect()
        })
    }

    fn suspend(&self, node: NodeKeyId, at: Timestamp) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO validation_suspended (node_key, at) VALUES ($1, $2)
                 ON CONFLICT (node_key) DO UPDATE SET at = GREATEST(validation_suspended.at, EXCLUDED.at)";
            self.execute(sql, &[&node.to_string(), &at.unix_ms()]).await?;
            Ok(())
        })
    }

    fn suspended(&self) -> StoreFuture<'_, Vec<(NodeKeyId, Timestamp)>> {
        Box::pin(async move {
            let sql = "SELECT node_key, at FROM validation_suspended ORDER BY node_key";
            self.query(sql, &[])
                .await?
                .iter()
                .map(|r| {
                    let node = parse("validation_suspended", r.try_get(0)?)?;
                    Ok((node, suspended_at(r.try_get(1)?)?))
                })
                .collect()
        })
    }

    fn sampled_through(&self) -> StoreFuture<'_, Option<u64>> {
        Box::pin(async move {
            let sql = "SELECT value FROM validation_meta WHERE name = 'sampled_through'";
            let rows = self.query(sql, &[]).await?;
            rows.first()
                .map(|r| to_u64("validation_meta", r.try_get(0)?))
                .transpose()
        })
    }

    fn set_sampled_through(&self, size: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO validation_meta AS m (name, value) VALUES ('sampled_through', $1)
                 ON CONFLICT (name) DO UPDATE SET value = GREATEST(m.value, EXCLUDED.value)";
            self.execute(sql, &[&to_i64(size)]).await?;
            Ok(())
        })
    }

    fn logged_since(&self, from: u64) -> StoreFuture<'_, Vec<(PaperworkId, NodeKeyId)>> {
        Box::pin(async move {
            let sql = "SELECT id, node_key FROM paperwork_log WHERE idx >= $1 ORDER BY idx";
            let rows = self.query(sql, &[&to_i64(from)]).await?;
            rows.iter()
                .map(|r| {
                    let (p, n): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                    Ok((parse("paperwork_log", &p)?, parse("paperwork_log", &n)?))
                })
                .collect()
        })
    }
}
