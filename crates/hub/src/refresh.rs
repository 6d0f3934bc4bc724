//! Keeps the in-memory API keys and prices in step with the store when other processes (hub
//! replicas on one PostgreSQL database, or an admin on another hub) change them: every
//! [`REFRESH_INTERVAL_MS`] the hub asks the store for the rows written since the versions it last
//! saw, one indexed query per table, and applies them. A revoked key is forgotten within a tick.
//! The attribution registry's documents come the same way, and each tick adds the skill usage this
//! hub counted to the store's counters.

use std::sync::Arc;
use std::time::Duration;

use crate::attribution;
use crate::auth::ApiKeys;
use crate::money::Prices;
use crate::store::{Store, StoreError};

/// How often the registry is re-read for changes made by other processes.
pub const REFRESH_INTERVAL_MS: u64 = 500;

/// The registry versions a hub has applied; the next refresh asks from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub keys: u64,
    pub prices: u64,
    pub docs: u64,
}

/// What the hub serves from memory and keeps in step with the store.
#[derive(Clone, Debug)]
pub struct Registry {
    pub api_keys: Arc<ApiKeys>,
    pub prices: Arc<Prices>,
    pub attribution: Arc<attribution::Registry>,
}

/// Applies the keys, prices and documents written since `seen`, and returns the versions now seen.
pub async fn catch_up(store: &dyn Store, registry: &Registry, seen: Seen) -> Result<Seen, StoreError> {
    let keys = store.api_keys_since(seen.keys).await?;
    registry.api_keys.apply(&keys.records);
    let changed = store.prices_since(seen.prices).await?;
    registry.prices.apply(&changed.records);
    let docs = store.docs_since(seen.docs).await?;
    registry.attribution.apply(&docs.records);
    Ok(Seen {
        keys: keys.version,
        prices: changed.version,
        docs: docs.version,
    })
}

/// Catches up every [`REFRESH_INTERVAL_MS`] until the hub shuts down.
pub fn start(
    store: Arc<dyn Store>,
    registry: Registry,
    mut seen: Seen,
    mut shutting_down: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(REFRESH_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match catch_up(&*store, &registry, seen).await {
                        Ok(now) => seen = now,
                        Err(e) => tracing::warn!(error = %e, "could not refresh API keys, prices and the registry"),
                    }
                    if let Err(e) = registry.attribution.flush_usage(&*store).await {
                        tracing::warn!(error = %e, "could not add skill usage to the store");
                    }
                }
                _ = shutting_down.changed() => return,
            }
        }
    });
}
