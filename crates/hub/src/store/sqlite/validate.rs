//! Validation on SQLite: kept tasks, cases, validators, workers' counts, slashes, suspensions.

use rusqlite::{params, OptionalExtension};
use stacknet_protocol::{NodeKeyId, PaperworkId, PublicKey, Timestamp};

use super::SqliteStore;
use crate::store::codec::{
    case_from, kept_from, material_json, parse, parse_json, suspended_at, to_i64, to_u64, validator_from,
};
use crate::store::records::{CaseRecord, KeptTask, SlashRecord, ValidatorRecord, WorkerStats};
use crate::store::traits::{StoreError, StoreFuture, ValidationStore};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS validation_kept (
    paperwork TEXT PRIMARY KEY, node_key TEXT NOT NULL, accepted_at INTEGER NOT NULL, material TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS validation_kept_by_time ON validation_kept (accepted_at);
CREATE TABLE IF NOT EXISTS validation_cases (
    paperwork TEXT PRIMARY KEY, node_key TEXT NOT NULL, open INTEGER NOT NULL, canary INTEGER NOT NULL,
    json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS validation_cases_open ON validation_cases (open) WHERE open = 1;
CREATE INDEX IF NOT EXISTS validation_cases_by_node ON validation_cases (node_key);
CREATE TABLE IF NOT EXISTS validation_workers (
    node_key TEXT PRIMARY KEY, tasks INTEGER NOT NULL, checks INTEGER NOT NULL, convictions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS validation_validators (
    node_key TEXT PRIMARY KEY, key TEXT NOT NULL, handed INTEGER NOT NULL, since_canary INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS validation_slashes (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, node_key TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS validation_slashes_by_node ON validation_slashes (node_key, seq);
CREATE TABLE IF NOT EXISTS validation_suspended (node_key TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS validation_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

const CASE_COLUMNS: &str = "paperwork, node_key, open, canary, json";

fn case_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, bool, bool, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn cases(rows: Vec<(String, String, bool, bool, String)>) -> Result<Vec<CaseRecord>, StoreError> {
    rows.into_iter()
        .map(|(p, n, o, c, j)| case_from(&p, &n, o, c, j))
        .collect()
}

impl ValidationStore for SqliteStore {
    fn keep_task(&self, task: KeptTask) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO validation_kept (paperwork, node_key, accepted_at, material)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    task.paperwork.to_string(),
                    task.node_key.to_string(),
                    task.accepted_at.unix_ms(),
                    material_json(&task)
                ],
            )?;
            Ok(())
        })
    }

    fn kept_task(&self, paperwork: PaperworkId) -> StoreFuture<'_, Option<KeptTask>> {
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT paperwork, node_key, accepted_at, material FROM validation_kept WHERE paperwork = ?1",
                    [paperwork.to_string()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?)),
                )
                .optional()?;
            row.map(|(p, n, at, m)| kept_from(&p, &n, at, &m)).transpose()
        })
    }

    fn forget_kept(&self, before: Timestamp) -> StoreFuture<'_, u64> {
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM validation_kept WHERE accepted_at < ?1 AND paperwork NOT IN
                   (SELECT paperwork FROM validation_cases WHERE open = 1 OR canary = 1)",
                [before.unix_ms()],
            )?;
            Ok(n as u64)
        })
    }

    fn put_case(&self, case: CaseRecord) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO validation_cases (paperwork, node_key, open, canary, json)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    case.paperwork.to_string(),
                    case.node_key.to_string(),
                    case.open,
                    case.canary,
                    case.json
                ],
            )?;
            Ok(())
        })
    }

    fn case(&self, paperwork: PaperworkId) -> StoreFuture<'_, Option<CaseRecord>> {
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!("SELECT {CASE_COLUMNS} FROM validation_cases WHERE paperwork = ?1"),
                    [paperwork.to_string()],
                    case_of,
                )
                .optional()?;
            row.map(|(p, n, o, ca, j)| case_from(&p, &n, o, ca, j))
                .transpose()
        })
    }

    fn cases_of(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<CaseRecord>>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {CASE_COLUMNS} FROM validation_cases WHERE paperwork = ?1"
            ))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row = stmt.query_row([id.to_string()], case_of).optional()?;
                out.push(
                    row.map(|(p, n, o, ca, j)| case_from(&p, &n, o, ca, j))
                        .transpose()?,
                );
            }
            Ok(out)
        })
    }

    fn open_cases(&self) -> StoreFuture<'_, Vec<CaseRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {CASE_COLUMNS} FROM validation_cases WHERE open = 1 ORDER BY paperwork"
            ))?;
            let rows = stmt.query_map([], case_of)?.collect::<Result<Vec<_>, _>>()?;
            cases(rows)
        })
    }

    fn cases_about(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<CaseRecord>> {
        self.with(move |c| {
            let node = node.map(|n| n.to_string());
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {CASE_COLUMNS} FROM validation_cases
                 WHERE canary = 0 AND (?1 IS NULL OR node_key = ?1) ORDER BY paperwork"
            ))?;
            let rows = stmt.query_map([node], case_of)?.collect::<Result<Vec<_>, _>>()?;
            cases(rows)
        })
    }

    fn bump_worker(&self, node: NodeKeyId, delta: WorkerStats) -> StoreFuture<'_, WorkerStats> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let before = tx
                .query_row(
                    "SELECT tasks, checks, convictions FROM validation_workers WHERE node_key = ?1",
                    [node.to_string()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()?
                .unwrap_or((0, 0, 0));
            let table = "validation_workers";
            let before = WorkerStats {
                tasks: to_u64(table, before.0)?,
                checks: to_u64(table, before.1)?,
                convictions: to_u64(table, before.2)?,
            };
            tx.execute(
                "INSERT OR REPLACE INTO validation_workers (node_key, tasks, checks, convictions)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    node.to_string(),
                    to_i64(before.tasks.saturating_add(delta.tasks)),
                    to_i64(before.checks.saturating_add(delta.checks)),
                    to_i64(before.convictions.saturating_add(delta.convictions))
                ],
            )?;
            tx.commit()?;
            Ok(before)
        })
    }

    fn see_validator(&self, key: PublicKey) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO validation_validators (node_key, key, handed, since_canary)
                 VALUES (?1, ?2, 0, 0)",
                params![key.node_key_id().to_string(), key.to_tagged()],
            )?;
            Ok(())
        })
    }

    fn validators(&self) -> StoreFuture<'_, Vec<ValidatorRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, handed, since_canary FROM validation_validators ORDER BY node_key",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(k, h, s)| validator_from(&k, h, s))
                .collect()
        })
    }

    fn set_validator_counts(&self, node: NodeKeyId, handed: u64, since_canary: u64) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            c.execute(
                "UPDATE validation_validators SET handed = ?2, since_canary = ?3 WHERE node_key = ?1",
                params![node.to_string(), to_i64(handed), to_i64(since_canary)],
            )?;
            Ok(())
        })
    }

    fn add_slash(&self, id: String, slash: SlashRecord) -> StoreFuture<'_, bool> {
        self.with(move |c| {
            let json = serde_json::to_string(&slash).map_err(|e| StoreError::Corrupt {
                table: "validation_slashes",
                detail: e.to_string(),
            })?;
            let n = c.execute(
                "INSERT OR IGNORE INTO validation_slashes (id, node_key, json) VALUES (?1, ?2, ?3)",
                params![id, slash.node_key.to_string(), json],
            )?;
            Ok(n == 1)
        })
    }

    fn slashes(&self, node: Option<NodeKeyId>) -> StoreFuture<'_, Vec<SlashRecord>> {
        self.with(move |c| {
            let node = node.map(|n| n.to_string());
            let mut stmt = c.prepare_cached(
                "SELECT json FROM validation_slashes WHERE ?1 IS NULL OR node_key = ?1 ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([node], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.iter().map(|j| parse_json("validation_slashes", j)).collect()
        })
    }

    fn suspend(&self, node: NodeKeyId, at: Timestamp) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO validation_suspended (node_key, at) VALUES (?1, ?2)
                 ON CONFLICT (node_key) DO UPDATE SET at = MAX(at, excluded.at)",
                params![node.to_string(), at.unix_ms()],
            )?;
            Ok(())
        })
    }

    fn suspended(&self) -> StoreFuture<'_, Vec<(NodeKeyId, Timestamp)>> {
        self.with(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT node_key, at FROM validation_suspended ORDER BY node_key")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.iter()
                .map(|(n, at)| Ok((parse("validation_suspended", n)?, suspended_at(*at)?)))
                .collect()
        })
    }

    fn sampled_through(&self) -> StoreFuture<'_, Option<u64>> {
        self.with(move |c| {
            let v = c
                .query_row(
                    "SELECT value FROM validation_meta WHERE name = 'sampled_through'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?;
            v.map(|v| to_u64("validation_meta", v)).transpose()
        })
    }

    fn set_sampled_through(&self, size: u64) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO validation_meta (name, value) VALUES ('sampled_through', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                [to_i64(size)],
            )?;
            Ok(())
        })
    }

    fn logged_since(&self, from: u64) -> StoreFuture<'_, Vec<(PaperworkId, NodeKeyId)>> {
        self.with(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT id, node_key FROM paperwork_log WHERE idx >= ?1 ORDER BY idx")?;
            let rows = stmt
                .query_map([to_i64(from)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.iter()
                .map(|(p, n)| Ok((parse("paperwork_log", p)?, parse("paperwork_log", n)?)))
                .collect()
        })
    }
}
