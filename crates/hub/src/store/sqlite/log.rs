//! The paperwork log and filing on SQLite. Documents live in `paperwork_json`, apart from their
//! small, often-updated state in `paperwork_log` (see the schema).

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Timestamp};

use super::SqliteStore;
use crate::store::codec::{hash32, logged, to_i64, to_u64, LogRow};
use crate::store::records::{LoggedPaperwork, PaperworkRecord};
use crate::store::traits::{LogStore, SettlementStore, StoreError, StoreFuture};

const LOG_COLUMNS: &str = "l.idx, l.id, l.contract, l.node_key, j.json, l.leaf_hash, l.accepted_at, \
    l.hold, l.cost, l.captured, l.filed_at";
const LOG_FROM: &str = "paperwork_log l JOIN paperwork_json j ON j.idx = l.idx";
/// The columns of `LOG_COLUMNS` without the document (`json` comes back empty).
const LOG_STATE_COLUMNS: &str = "l.idx, l.id, l.contract, l.node_key, '' AS json, l.leaf_hash, \
    l.accepted_at, l.hold, l.cost, l.captured, l.filed_at";

fn log_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogRow> {
    Ok(LogRow {
        idx: r.get(0)?,
        id: r.get(1)?,
        contract: r.get(2)?,
        node_key: r.get(3)?,
        json: r.get(4)?,
        leaf: r.get(5)?,
        accepted_at: r.get(6)?,
        hold: r.get(7)?,
        cost: r.get(8)?,
        captured: r.get::<_, i64>(9)? != 0,
        filed_at: r.get(10)?,
    })
}

impl LogStore for SqliteStore {
    fn append_paperwork(&self, batch: Vec<PaperworkRecord>) -> StoreFuture<'_, Vec<u64>> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut indexes = Vec::with_capacity(batch.len());
            {
                let mut next: i64 =
                    tx.query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM paperwork_log", [], |r| {
                        r.get(0)
                    })?;
                let mut existing = tx.prepare_cached("SELECT idx FROM paperwork_log WHERE id = ?1")?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO paperwork_log
                     (idx, id, contract, node_key, leaf_hash, accepted_at, hold, cost)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                let mut insert_json =
                    tx.prepare_cached("INSERT INTO paperwork_json (idx, json) VALUES (?1, ?2)")?;
                for p in &batch {
                    let id = p.id.to_string();
                    let found: Option<i64> = existing.query_row([&id], |r| r.get(0)).optional()?;
                    let idx = match found {
                        Some(idx) => idx,
                        None => {
                            insert.execute(params![
                                next,
                                id,
                                p.contract,
                                p.node_key.to_string(),
                                p.leaf_hash.as_slice(),
                                p.accepted_at.to_string(),
                                p.hold,
                                p.cost.micros()
                            ])?;
                            insert_json.execute(params![next, p.json])?;
                            next += 1;
                            next - 1
                        }
                    };
                    indexes.push(to_u64("paperwork_log", idx)?);
                }
            }
            tx.commit()?;
            Ok(indexes)
        })
    }

    fn paperwork(&self, id: PaperworkId) -> StoreFuture<'_, Option<LoggedPaperwork>> {
        self.with(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {LOG_COLUMNS} FROM {LOG_FROM} WHERE l.id = ?1"),
                    [id.to_string()],
                    log_row,
                )
                .optional()?;
            row.map(logged).transpose()
        })
    }

    fn leaf_hashes(&self, from: u64) -> StoreFuture<'_, Vec<[u8; 32]>> {
        self.with(move |conn| {
            let mut stmt =
                conn.prepare("SELECT leaf_hash FROM paperwork_log WHERE idx >= ?1 ORDER BY idx")?;
            let rows = stmt.query_map([to_i64(from)], |r| r.get::<_, Vec<u8>>(0))?;
            rows.map(|r| hash32("paperwork_log", &r?)).collect()
        })
    }

    fn uncaptured(&self) -> StoreFuture<'_, Vec<LoggedPaperwork>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {LOG_COLUMNS} FROM {LOG_FROM} WHERE l.captured = 0 ORDER BY l.idx"
            ))?;
            let rows = stmt.query_map([], log_row)?;
            rows.map(|r| logged(r?)).collect()
        })
    }

    fn mark_captured(&self, captured: Vec<(PaperworkId, Amount)>) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE paperwork_log SET captured = 1, cost = ?2 WHERE id = ?1")?;
                for (id, cost) in &captured {
                    stmt.execute(params![id.to_string(), cost.micros()])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn logged_of(&self, node: NodeKeyId, from: u64, to: u64) -> StoreFuture<'_, Vec<LoggedPaperwork>> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {LOG_COLUMNS} FROM {LOG_FROM} WHERE l.idx >= ?1 AND l.idx < ?2 AND l.node_key = ?3 ORDER BY l.idx"
            ))?;
            let rows = stmt.query_map(params![to_i64(from), to_i64(to), node.to_string()], log_row)?;
            rows.map(|r| logged(r?)).collect()
        })
    }

    fn paperwork_many(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<LoggedPaperwork>>> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {LOG_STATE_COLUMNS} FROM paperwork_log l WHERE l.id = ?1"
            ))?;
            ids.iter()
                .map(|id| {
                    stmt.query_row([id.to_string()], log_row)
                        .optional()?
                        .map(logged)
                        .transpose()
                })
                .collect()
        })
    }
}

impl SettlementStore for SqliteStore {
    fn begin_settlement(
        &self,
        settlement: String,
        ids: Vec<PaperworkId>,
        at: Timestamp,
    ) -> StoreFuture<'_, Vec<PaperworkId>> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut claimed = Vec::with_capacity(ids.len());
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE paperwork_log SET filed_at = ?2, settlement = ?3 WHERE id = ?1 AND filed_at IS NULL",
                )?;
                for id in ids {
                    if stmt.execute(params![id.to_string(), at.to_string(), settlement])? == 1 {
                        claimed.push(id);
                    }
                }
            }
            if !claimed.is_empty() {
                tx.execute(
                    "INSERT INTO settlements (id, created_at, done) VALUES (?1, ?2, 0)",
                    params![settlement, at.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    fn finish_settlement(&self, settlement: String) -> StoreFuture<'_, ()> {
        self.with(move |conn| {
            conn.execute("UPDATE settlements SET done = 1 WHERE id = ?1", [settlement])?;
            Ok(())
        })
    }

    fn open_settlements(&self) -> StoreFuture<'_, Vec<(String, Vec<LoggedPaperwork>)>> {
        self.with(|conn| {
            let open: Vec<String> = {
                let mut stmt =
                    conn.prepare("SELECT id FROM settlements WHERE done = 0 ORDER BY created_at, id")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut stmt = conn.prepare(&format!(
                "SELECT {LOG_COLUMNS} FROM {LOG_FROM} WHERE l.settlement = ?1 ORDER BY l.idx"
            ))?;
            open.into_iter()
                .map(|id| {
                    let rows = stmt.query_map([&id], log_row)?;
                    let logged = rows.map(|r| logged(r?)).collect::<Result<Vec<_>, StoreError>>()?;
                    Ok((id, logged))
                })
                .collect()
        })
    }

    fn claim_event(&self, kind: &'static str, id: String, at: Timestamp) -> StoreFuture<'_, bool> {
        self.with(move |conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO events (kind, id, seen_at) VALUES (?1, ?2, ?3)",
                params![kind, id, at.to_string()],
            )?;
            Ok(n == 1)
        })
    }

    fn claim_nonce(
        &self,
        kind: &'static str,
        nonce: String,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreFuture<'_, bool> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM events WHERE kind = ?1 AND expires_at < ?2",
                params![kind, at.to_string()],
            )?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO events (kind, id, seen_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![kind, nonce, at.to_string(), expires_at.to_string()],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn events_held(&self, kind: &'static str) -> StoreFuture<'_, u64> {
        self.with(move |conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM events WHERE kind = ?1", [kind], |r| {
                r.get(0)
            })?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
