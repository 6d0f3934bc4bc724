//! Keeps the in-memory API keys and prices in step with the store when other processes (hub
//! replicas on one PostgreSQL database, or an admin on another hub) change them: every
//! [`REFRESH_INTERVAL_MS`] the hub asks the store for the rows written since the versions it last
//! saw, one indexed query per table, and applies them. A revoked key is forgotten within a tick.

use std::sync::Arc;
use std::time::Duration;

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
}

/// Applies the keys and prices written since `seen`, and returns the versions now seen.
pub async fn catch_up(
    store: &dyn Store,
    api_keys: &ApiKeys,
    prices: &Prices,
    seen: Seen,
) -> Result<Seen, StoreError> {
    let keys = store.api_keys_since(seen.keys).await?;
    api_keys.apply(&keys.records);
    let changed = store.prices_since(seen.prices).await?;
    prices.apply(&changed.records);
    Ok(Seen {
        keys: keys.version,
        prices: changed.version,
    })
}

/// Catches up every [`REFRESH_INTERVAL_MS`] until the hub shuts down.
pub fn start(
    store: Arc<dyn Store>,
    api_keys: Arc<ApiKeys>,
    prices: Arc<Prices>,
    mut seen: Seen,
    mut shutting_down: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(REFRESH_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => match catch_up(&*store, &api_keys, &prices, seen).await {
                    Ok(now) => seen = now,
                    Err(e) => tracing::warn!(error = %e, "could not refresh API keys and prices"),
                },
                _ = shutting_down.changed() => return,
            }
        }
    });
}
