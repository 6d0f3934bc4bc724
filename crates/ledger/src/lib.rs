//! Stacknet's double-entry ledger: who holds how much, and every transfer that moved it.
//!
//! Layout:
//! - `model` (pure, no I/O): `AccountId` and the floor of each `AccountKind`; `Transfer`, `Post`,
//!   `Void` and the `Entry` enum a batch is made of; `Balance` and `Totals`; and `books`, the one place
//!   where the rules live (floors, holds, idempotent ids, overflow checks).
//! - `store`: the `LedgerStore` trait every caller programs against.
//! - `sqlite` (`SqliteLedger`, the embedded default) and `postgres` (`PgLedger`, for several hub
//!   replicas): how each loads, locks and persists what `books` needs. `codec` is their shared row layout.
//!   `pg` (`postgres::pool`) is the PostgreSQL plumbing the hub's store uses too: the connection pool,
//!   the schema-name check, the migration lock and the retry loop.
//! - `bench`: a throughput run for `stacknet-bench money` and `examples/ledger_bench.rs`.
//!
//! Flow of a batch: the store opens a transaction, loads (PostgreSQL: locks) the transfers the batch
//! names and the accounts it touches, applies the batch to them in memory with `books`, writes back
//! what changed and commits; any refusal rolls the whole batch back. Balances follow TigerBeetle:
//! `posted` plus separate `debits_pending` / `credits_pending` for holds, `available = posted -
//! debits_pending`; a hold is resolved once, by a post (capture of at most the held amount, the rest
//! released), a void, or `expire_due`. Invariants any caller can check with `sum_check`: the posted
//! balances sum to zero, pending debits equal pending credits equal the open holds, and no account
//! is below its floor.
//!
//! Concurrency: SQLite has one writer thread that commits the batches queued meanwhile as one
//! transaction (`BEGIN IMMEDIATE`, a savepoint per batch, replies after the commit) and reads on
//! tokio's blocking pool; PostgreSQL runs one transaction per batch on a small pool and locks the
//! rows it reads, always in id order, so no two batches can spend the same balance.

pub mod bench;
mod codec;
mod error;
pub mod model;
pub mod postgres;
pub mod sqlite;
mod store;

pub use error::{LedgerError, ParseError};
pub use model::*;
/// The PostgreSQL plumbing the hub's store shares with the ledger: pool, retries, migration lock.
pub use postgres::pool as pg;
pub use postgres::{PgLedger, PgOptions};
pub use sqlite::{SqliteLedger, SqliteOptions, Synchronous};
/// The protocol's money and time types, which every ledger call takes.
pub use stacknet_protocol::{Amount, Timestamp};
pub use store::{LedgerStore, StoreFuture, MAX_BATCH_ENTRIES, MAX_EXPIRED_PER_CALL, MAX_STATEMENT_LINES};

/// Opens the store a `--database` URL names: `sqlite://PATH` (a file, created if missing) or
/// `postgres://...` / `postgresql://...` (tables in the `public` schema), with default options.
pub async fn open(database: &str) -> Result<std::sync::Arc<dyn LedgerStore>, LedgerError> {
    if let Some(path) = database.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(LedgerError::BadDatabaseUrl {
                scheme: "sqlite".into(),
            });
        }
        return Ok(std::sync::Arc::new(SqliteLedger::open(
            path,
            SqliteOptions::default(),
        )?));
    }
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(
            PgLedger::connect(database, PgOptions::default()).await?,
        ));
    }
    let scheme = database.split_once("://").map_or("", |(scheme, _)| scheme);
    Err(LedgerError::BadDatabaseUrl {
        scheme: scheme.chars().take(16).collect(),
    })
}
