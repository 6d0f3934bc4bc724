//! Keeping a request's hold open while its task runs.
//!
//! A hold expires a grace period after the request's deadline, so that the holds of a hub that
//! crashed go back to their Stacks. A task can outlive that: a streaming client that stops reading
//! keeps the end of its answer (and the node's paperwork) queued behind it. Were the hold to expire
//! under it, the paperwork the hub then accepts would capture nothing: a free answer, and a node
//! unpaid for work the hub took. So while the escrow lives, its hold is renewed with half the grace
//! left: one ledger batch voids it and holds the same amount again under the next id
//! (`hold:<ref>.<n>`, released by `release:<ref>.<n>`), until a grace period from now. The batch is
//! atomic, so the Stack never has the amount held twice or not at all, and the new deadline is in the
//! ledger, where every replica's expiry sweep sees it. A hub that crashes stops renewing, and its last
//! hold expires a grace period later, as before.

use std::sync::Arc;
use std::time::Duration;

use stacknet_ledger::{AccountId, Entry, LedgerError, LedgerStore, Transfer, TransferId, Void};
use stacknet_protocol::{Amount, StackId, Timestamp};
use tokio::sync::{oneshot, Mutex};
use tokio::time::Instant;

/// The shortest life a renewed hold gets, whatever the configured grace (a grace of 0 would
/// otherwise renew it into an already expired hold).
pub const MIN_RENEWED_HOLD_MS: u64 = 200;

/// What renewing one request's hold takes.
#[derive(Debug)]
pub(super) struct Renewal {
    ledger: Arc<dyn LedgerStore>,
    stack: StackId,
    amount: Amount,
    /// The request's reference: its holds are `hold:<reference>`, then `hold:<reference>.<n>`.
    reference: String,
    /// How long each renewed hold lasts.
    life: Duration,
}

impl Renewal {
    pub(super) fn new(
        ledger: Arc<dyn LedgerStore>,
        stack: StackId,
        amount: Amount,
        reference: String,
        grace_ms: u64,
    ) -> Self {
        Self {
            ledger,
            stack,
            amount,
            reference,
            life: Duration::from_millis(grace_ms.max(MIN_RENEWED_HOLD_MS)),
        }
    }

    /// The `n`-th renewal's new hold, expiring one life from now.
    fn next_hold(&self, n: u32) -> Result<Transfer, LedgerError> {
        let ms = i64::try_from(self.life.as_millis()).unwrap_or(i64::MAX);
        Ok(Transfer::hold(
            TransferId::new(&format!("hold:{}.{n}", self.reference))?,
            AccountId::stack(self.stack),
            AccountId::escrow(),
            self.amount,
            Some(Timestamp::now().plus_ms(ms)),
        ))
    }

    /// Replaces `old` by `new` in one batch. If `old` was resolved already (it expired while the
    /// hub could not renew it), `new` is held on its own, if the balance still covers it.
    async fn replace(&self, old: &TransferId, new: &Transfer) -> Result<(), LedgerError> {
        let reference = old.as_str().strip_prefix("hold:").unwrap_or(old.as_str());
        let void = Void::new(TransferId::new(&format!("release:{reference}"))?, old.clone());
        let batch: Vec<Entry> = vec![void.into(), new.clone().into()];
        match self.ledger.create_transfers(batch).await {
            Err(LedgerError::AlreadyResolved { .. }) => {
                self.ledger.create_transfers(vec![new.clone().into()]).await?;
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

/// Renews the hold in `held` until `stopped` (the escrow is gone) or its hold is taken (handed over
/// or released). `expires_in` is how long the first hold lasts.
pub(super) async fn keep_alive(
    held: Arc<Mutex<Option<TransferId>>>,
    r: Renewal,
    expires_in: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut expires = Instant::now() + expires_in;
    let mut n = 1u32;
    // A renewal that failed underneath is retried unchanged (same ids, same deadline), so one that
    // did commit is replayed, never applied twice.
    let mut pending: Option<(Transfer, Instant)> = None;
    loop {
        let retry = Instant::now() + r.life / 8;
        let at = expires.checked_sub(r.life / 2).unwrap_or(expires);
        tokio::select! {
            () = tokio::time::sleep_until(if pending.is_some() { retry } else { at }) => {}
            _ = &mut stopped => return,
        }
        let mut current = held.lock().await;
        let Some(old) = current.clone() else { return };
        let (new, made) = match pending.take() {
            Some(p) => p,
            None => match r.next_hold(n) {
                Ok(t) => (t, Instant::now()),
                Err(e) => return tracing::error!(error = %e, "cannot name a renewed hold"),
            },
        };
        match r.replace(&old, &new).await {
            Ok(()) => {
                *current = Some(new.id);
                expires = made + r.life;
                n = n.saturating_add(1);
            }
            Err(e) if e.is_refusal() => {
                // The old hold is gone and the balance no longer covers a new one: the task's
                // capture will be refused, and logged there.
                return tracing::error!(error = %e, hold = %old, "could not renew a hold");
            }
            Err(e) => {
                tracing::warn!(error = %e, hold = %old, "could not renew a hold; retrying");
                pending = Some((new, made));
            }
        }
    }
}
