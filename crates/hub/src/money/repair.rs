//! Money that a failing ledger left where it should not stay, mended while the hub runs instead of
//! at its next start (by then a capture's hold has expired, and the capture lands at zero).
//!
//! Two layers. Each ledger write of the money path is retried with backoff when the store failed
//! underneath (never when it refused the batch): transfer ids are idempotency keys, so a batch that
//! did commit before its answer was lost is replayed, not applied twice. What still fails is left
//! in the store's own records (paperwork logged but not captured, settlements begun but not
//! finished), and the repair loop finishes it every [`REPAIR_INTERVAL_MS`] with the same ids as
//! the writer and filing use: whichever runs first applies it, the other replays.

use std::sync::Arc;
use std::time::Duration;

use stacknet_ledger::{Entry, LedgerError, LedgerStore, TransferOutcome};

use crate::store::Store;

/// Attempts of one ledger write before it is left to the repair loop.
pub const LEDGER_ATTEMPTS: u32 = 4;
/// Wait before the second attempt; doubled each time (50, 100, 200 ms).
pub const FIRST_RETRY_MS: u64 = 50;
/// How often the repair loop looks for uncaptured paperwork and unfinished settlements.
pub const REPAIR_INTERVAL_MS: u64 = 2_000;

/// Applies `batch`, retrying failures of the store underneath with backoff; a refusal is returned
/// at once (retrying it unchanged fails the same way).
pub async fn apply_retrying(
    ledger: &Arc<dyn LedgerStore>,
    batch: Vec<Entry>,
) -> Result<Vec<TransferOutcome>, LedgerError> {
    let mut delay = Duration::from_millis(FIRST_RETRY_MS);
    let mut attempt = 1;
    loop {
        match ledger.create_transfers(batch.clone()).await {
            Err(e) if !e.is_refusal() && attempt < LEDGER_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "a ledger write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Runs the repair loop until the hub shuts down.
pub fn start(
    store: Arc<dyn Store>,
    ledger: Arc<dyn LedgerStore>,
    mut shutting_down: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(REPAIR_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => repair(&store, &ledger).await,
                _ = shutting_down.changed() => return,
            }
        }
    });
}

async fn repair(store: &Arc<dyn Store>, ledger: &Arc<dyn LedgerStore>) {
    let ms = i64::try_from(REPAIR_INTERVAL_MS).unwrap_or(i64::MAX);
    let settled_by_writer = stacknet_protocol::Timestamp::now().plus_ms(-ms);
    if let Err(e) = super::capture_logged(store, ledger, settled_by_writer).await {
        tracing::warn!(error = %e, "could not capture logged paperwork yet; trying again");
    }
    if let Err(e) = crate::settle::recover(store, ledger).await {
        tracing::warn!(error = %e, "could not finish open settlements yet; trying again");
    }
}
