//! Files served by URL on SQLite (see [`crate::store::FileStore`]).

use rusqlite::{params, OptionalExtension};
use stacknet_protocol::Timestamp;

use super::SqliteStore;
use crate::store::codec::parse;
use crate::store::records::FileRecord;
use crate::store::traits::{FileStore, StoreFuture};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS served_files (
    id TEXT PRIMARY KEY, content_type TEXT NOT NULL, bytes BLOB NOT NULL, stack TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS served_files_by_expiry ON served_files (expires_ms);
";

const TABLE: &str = "served_files";

/// A stored expiry (milliseconds since the epoch) as a time.
pub(crate) fn expiry(ms: i64) -> Result<Timestamp, crate::store::StoreError> {
    Timestamp::from_unix_ms(ms).map_err(|e| crate::store::StoreError::Corrupt {
        table: TABLE,
        detail: format!("expires_ms {ms}: {e}"),
    })
}

impl FileStore for SqliteStore {
    fn put_file(&self, file: FileRecord) -> StoreFuture<'_, ()> {
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO served_files (id, content_type, bytes, stack, created_at, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    file.id,
                    file.content_type,
                    file.bytes,
                    file.stack.to_string(),
                    file.created_at.to_string(),
                    file.expires_at.unix_ms()
                ],
            )?;
            Ok(())
        })
    }

    fn file(&self, id: String, now: Timestamp) -> StoreFuture<'_, Option<FileRecord>> {
        self.with(move |c| {
            let row: Option<(String, String, Vec<u8>, String, String, i64)> = c
                .query_row(
                    "SELECT id, content_type, bytes, stack, created_at, expires_ms FROM served_files
                     WHERE id = ?1 AND expires_ms > ?2",
                    params![id, now.unix_ms()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            row.map(|(id, content_type, bytes, stack, created, expires)| {
                Ok(FileRecord {
                    id,
                    content_type,
                    bytes,
                    stack: parse(TABLE, &stack)?,
                    created_at: parse(TABLE, &created)?,
                    expires_at: expiry(expires)?,
                })
            })
            .transpose()
        })
    }

    fn forget_files(&self, now: Timestamp) -> StoreFuture<'_, u64> {
        self.with(move |c| {
            let gone = c.execute("DELETE FROM served_files WHERE expires_ms <= ?1", [now.unix_ms()])?;
            Ok(gone as u64)
        })
    }
}
