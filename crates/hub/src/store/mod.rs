//! What the hub keeps besides the ledger: the registry (Stacks, hashed API keys, model prices), the
//! paperwork log (accepted paperwork in log order, with its Merkle leaf and capture state), filing
//! (settlements, and events already seen: webhook ids, signed-request nonces, for replay protection)
//! and payouts, and unbonding stake.
//!
//! Layout: [`records`] are the rows as the hub uses them; [`traits`] is the seam, one trait per
//! domain ([`RegistryStore`], [`LogStore`], [`SettlementStore`], [`PayoutStore`]) and [`Store`], all
//! of them, which the hub holds as `Arc<dyn Store>`; `codec` decodes rows for both implementations,
//! [`SqliteStore`] (the embedded default, [`sqlite`]) and [`PgStore`] (several replicas,
//! [`postgres`], on the ledger's PostgreSQL pool); one test suite runs against both. Reads that gate
//! requests (API keys, prices) are served from memory, loaded at start and written through.
//! Paperwork is appended by [`crate::money::SettleWriter`], which groups appends into one
//! transaction per batch.

mod codec;
pub mod postgres;
pub mod records;
pub mod sqlite;
pub mod traits;

use std::path::Path;
use std::sync::Arc;

pub use postgres::{PgStore, POOL_SIZE};
pub use records::{
    ApiKeyRecord, CaseRecord, Changes, DocRecord, EvidenceRow, FileRecord, KeptTask, KeyRole,
    LoggedPaperwork, ModelPrice, PaperworkRecord, PayoutRecord, PayoutState, SlashRecord, StackRecord,
    UnbondingRecord, UsageCounts, UsageRow, ValidatorRecord, WorkerStats, LATENCY_BOUNDS_MS, LATENCY_BUCKETS,
};
pub use sqlite::SqliteStore;
pub use traits::{
    DocStore, FileStore, LogStore, PayoutStore, RegistryStore, ReputationStore, SettlementStore, StakeStore,
    Store, StoreError, StoreFuture, UsageStore, ValidationStore,
};

/// Opens the store a `--database` URL names: `sqlite://PATH` or `postgres://...`.
pub async fn open(database: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = database.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteStore::open(Path::new(path))?));
    }
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let (url, schema) = pg_schema(database);
        return PgStore::connect(&url, &schema).await;
    }
    let scheme = database.split_once("://").map_or("", |(s, _)| s);
    Err(StoreError::BadUrl(scheme.chars().take(16).collect()))
}

/// Splits our own `schema=NAME` query parameter off a PostgreSQL URL (default `public`): the
/// schema the hub's tables and the ledger's live in, so that several hubs (or tests) can share one
/// database. Everything else in the URL goes to the driver as given.
pub fn pg_schema(url: &str) -> (String, String) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), "public".to_owned());
    };
    let mut schema = "public".to_owned();
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(name) => {
                schema = name.to_owned();
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}
