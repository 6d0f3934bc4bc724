//! Files served by URL on PostgreSQL: the table of the SQLite store's `files`, so every replica
//! serves every file.

use stacknet_protocol::Timestamp;

use super::PgStore;
use crate::store::codec::parse;
use crate::store::records::FileRecord;
use crate::store::sqlite::files::expiry;
use crate::store::traits::{FileStore, StoreFuture};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS served_files (
    id TEXT COLLATE "C" PRIMARY KEY, content_type TEXT NOT NULL, bytes BYTEA NOT NULL, stack TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS served_files_by_expiry ON served_files (expires_ms);
"#;

const TABLE: &str = "served_files";

impl FileStore for PgStore {
    fn put_file(&self, file: FileRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO served_files (id, content_type, bytes, stack, created_at, expires_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";
            self.execute(
                sql,
                &[
                    &file.id,
                    &file.content_type,
                    &file.bytes,
                    &file.stack.to_string(),
                    &file.created_at.to_string(),
                    &file.expires_at.unix_ms(),
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn file(&self, id: String, now: Timestamp) -> StoreFuture<'_, Option<FileRecord>> {
        Box::pin(async move {
            let sql = "SELECT id, content_type, bytes, stack, created_at, expires_ms FROM served_files
                 WHERE id = $1 AND expires_ms > $2";
            let rows = self.query(sql, &[&id, &now.unix_ms()]).await?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let stack: String = r.try_get(3)?;
            let created: String = r.try_get(4)?;
            Ok(Some(FileRecord {
                id: r.try_get(0)?,
                content_type: r.try_get(1)?,
                bytes: r.try_get(2)?,
                stack: parse(TABLE, &stack)?,
                created_at: parse(TABLE, &created)?,
                expires_at: expiry(r.try_get(5)?)?,
            }))
        })
    }

    fn forget_files(&self, now: Timestamp) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            self.execute(
                "DELETE FROM served_files WHERE expires_ms <= $1",
                &[&now.unix_ms()],
            )
            .await
        })
    }
}
