//! Registry documents and counters on SQLite (see [`crate::store::DocStore`]).

use rusqlite::params;

use super::SqliteStore;
use crate::store::codec::{parse, to_i64, to_u64};
use crate::store::records::{Changes, DocRecord};
use crate::store::traits::{DocStore, StoreFuture};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registry_docs (
    kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, stack TEXT, json TEXT NOT NULL,
    created_at TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (kind, id, version));
CREATE INDEX IF NOT EXISTS registry_docs_by_seq ON registry_docs (seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
";

const TABLE: &str = "registry_docs";
const COLUMNS: &str = "kind, id, version, stack, json, created_at, seq";

type DocRow = (String, String, i64, Option<String>, String, String, i64);

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn doc_from((kind, id, version, stack, json, at, _): DocRow) -> Result<DocRecord, crate::store::StoreError> {
    Ok(DocRecord {
        kind,
        id,
        version: to_u64(TABLE, version)?,
        stack: stack.map(|s| parse(TABLE, &s)).transpose()?,
        json,
        created_at: parse(TABLE, &at)?,
    })
}

impl DocStore for SqliteStore {
    fn put_doc(&self, doc: DocRecord) -> StoreFuture<'_, bool> {
        self.with(move |c| {
            let added = c.execute(
                "INSERT OR IGNORE INTO registry_docs (kind, id, version, stack, json, created_at, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT COALESCE(MAX(seq), 0) + 1 FROM registry_docs))",
                params![
                    doc.kind,
                    doc.id,
                    to_i64(doc.version),
                    doc.stack.map(|s| s.to_string()),
                    doc.json,
                    doc.created_at.to_string()
                ],
            )?;
            Ok(added == 1)
        })
    }

    fn docs_since(&self, version: u64) -> StoreFuture<'_, Changes<DocRecord>> {
        self.with(move |c| {
            let since = i64::try_from(version).unwrap_or(i64::MAX);
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM registry_docs WHERE seq >= ?1 ORDER BY seq, kind, id, version"
            ))?;
            let rows = stmt.query_map([since], row_of)?;
            let mut changes = Changes {
                records: Vec::new(),
                version,
            };
            for row in rows {
                let row = row?;
                changes.version = changes.version.max(u64::try_from(row.6).unwrap_or(0));
                changes.records.push(doc_from(row)?);
            }
            Ok(changes)
        })
    }

    fn doc_versions(&self, kind: String, id: String) -> StoreFuture<'_, Vec<DocRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM registry_docs WHERE kind = ?1 AND id = ?2 ORDER BY version"
            ))?;
            let rows = stmt.query_map(params![kind, id], row_of)?;
            rows.map(|row| doc_from(row?)).collect()
        })
    }

    fn docs_of_kind(&self, kind: String) -> StoreFuture<'_, Vec<DocRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM registry_docs WHERE kind = ?1 ORDER BY seq, id, version"
            ))?;
            let rows = stmt.query_map([kind], row_of)?;
            rows.map(|row| doc_from(row?)).collect()
        })
    }

    fn add_counts(&self, rows: Vec<(String, u64)>) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO counters (name, count) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET count = count + excluded.count",
                )?;
                for (name, n) in &rows {
                    add.execute(params![name, to_i64(*n)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn counts(&self, names: Vec<String>) -> StoreFuture<'_, Vec<u64>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached("SELECT count FROM counters WHERE name = ?1")?;
            let mut out = Vec::with_capacity(names.len());
            for name in &names {
                let n: Option<i64> = stmt
                    .query_row([name], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                out.push(n.map_or(Ok(0), |n| to_u64("counters", n))?);
            }
            Ok(out)
        })
    }
}
