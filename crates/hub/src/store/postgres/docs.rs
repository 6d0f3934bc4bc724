//! Registry documents and counters on PostgreSQL: the tables of the SQLite store's `docs`;
//! replicas add into the same counters.

use tokio_postgres::Row;

use super::PgStore;
use crate::store::codec::{parse, to_i64, to_u64};
use crate::store::records::{Changes, DocRecord};
use crate::store::traits::{DocStore, StoreError, StoreFuture};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS registry_docs (
    kind TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, stack TEXT,
    json TEXT NOT NULL, created_at TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (kind, id, version));
CREATE INDEX IF NOT EXISTS registry_docs_by_seq ON registry_docs (seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT COLLATE "C" PRIMARY KEY, count BIGINT NOT NULL);
"#;

const TABLE: &str = "registry_docs";

fn doc_of(r: &Row) -> Result<DocRecord, StoreError> {
    let stack: Option<String> = r.try_get(3)?;
    Ok(DocRecord {
        kind: r.try_get(0)?,
        id: r.try_get(1)?,
        version: to_u64(TABLE, r.try_get(2)?)?,
        stack: stack.map(|s| parse(TABLE, &s)).transpose()?,
        json: r.try_get(4)?,
        created_at: parse(TABLE, r.try_get(5)?)?,
    })
}

impl DocStore for PgStore {
    fn put_doc(&self, doc: DocRecord) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let sql = "INSERT INTO registry_docs (kind, id, version, stack, json, created_at, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, (SELECT COALESCE(MAX(seq), 0) + 1 FROM registry_docs))
                 ON CONFLICT (kind, id, version) DO NOTHING";
            let stack = doc.stack.map(|s| s.to_string());
            let added = self
                .execute(
                    sql,
                    &[
                        &doc.kind,
                        &doc.id,
                        &to_i64(doc.version),
                        &stack,
                        &doc.json,
                        &doc.created_at.to_string(),
                    ],
                )
                .await?;
            Ok(added == 1)
        })
    }

    fn docs_since(&self, version: u64) -> StoreFuture<'_, Changes<DocRecord>> {
        Box::pin(async move {
            let sql = "SELECT kind, id, version, stack, json, created_at, seq FROM registry_docs
                 WHERE seq >= $1 ORDER BY seq, kind, id, version";
            let since = i64::try_from(version).unwrap_or(i64::MAX);
            let rows = self.query(sql, &[&since]).await?;
            let mut changes = Changes {
                records: Vec::with_capacity(rows.len()),
                version,
            };
            for r in &rows {
                changes.version = changes
                    .version
                    .max(u64::try_from(r.try_get::<_, i64>(6)?).unwrap_or(0));
                changes.records.push(doc_of(r)?);
            }
            Ok(changes)
        })
    }

    fn doc_versions(&self, kind: String, id: String) -> StoreFuture<'_, Vec<DocRecord>> {
        Box::pin(async move {
            let sql = "SELECT kind, id, version, stack, json, created_at, seq FROM registry_docs
                 WHERE kind = $1 AND id = $2 ORDER BY version";
            self.query(sql, &[&kind, &id]).await?.iter().map(doc_of).collect()
        })
    }

    fn docs_of_kind(&self, kind: String) -> StoreFuture<'_, Vec<DocRecord>> {
        Box::pin(async move {
            let sql = "SELECT kind, id, version, stack, json, created_at, seq FROM registry_docs
                 WHERE kind = $1 ORDER BY seq, id, version";
            self.query(sql, &[&kind]).await?.iter().map(doc_of).collect()
        })
    }

    fn add_counts(&self, rows: Vec<(String, u64)>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Summed per name first: ON CONFLICT needs the batch's names distinct.
            let mut sums: std::collections::BTreeMap<String, i64> = Default::default();
            for (name, n) in rows {
                *sums.entry(name).or_default() += to_i64(n);
            }
            let names: Vec<&str> = sums.keys().map(String::as_str).collect();
            let counts: Vec<i64> = sums.values().copied().collect();
            let sql = "INSERT INTO counters AS c (name, count)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[])
                 ON CONFLICT (name) DO UPDATE SET count = c.count + EXCLUDED.count";
            self.execute(sql, &[&names, &counts]).await?;
            Ok(())
        })
    }

    fn counts(&self, names: Vec<String>) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(async move {
            let sql = "SELECT name, count FROM counters WHERE name = ANY($1)";
            let rows = self.query(sql, &[&names]).await?;
            let mut found = std::collections::HashMap::new();
            for r in &rows {
                let name: String = r.try_get(0)?;
                found.insert(name, to_u64("counters", r.try_get(1)?)?);
            }
            Ok(names.iter().map(|n| found.get(n).copied().unwrap_or(0)).collect())
        })
    }
}
