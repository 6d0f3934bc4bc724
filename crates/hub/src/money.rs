//! Money on the request path: prices, the escrow hold taken at admission, and the writer that logs
//! accepted paperwork and captures its cost.
//!
//! A request's life in the ledger (account ids in `stacknet_ledger::AccountId`):
//! 1. Admission holds the contract's maximum cost: a pending transfer `hold:<ref>` from the Stack's
//!    balance to escrow, expiring a grace period after the request's deadline. The ledger refuses
//!    it if the balance cannot cover it, so N concurrent requests never spend more than the balance:
//!    the client gets 402 `insufficient_balance` before any node is asked.
//! 2. A task that fails, times out or is cancelled voids the hold (`release:<ref>`); a hub that
//!    crashes leaves it to expire, which releases it the same way.
//! 3. Accepted paperwork goes to the [`SettleWriter`]: one transaction appends a batch to the
//!    paperwork log, then one ledger batch posts each task's actual cost (`capture:<contract>`,
//!    at most the hold; the rest is released) and the batch is marked captured. The client is
//!    answered after that. The ledger writes are retried with backoff; what still fails (or a crash
//!    between the two steps) is mended by the repair loop ([`start_repair`]) and at start by
//!    [`recover`], which capture what the log holds and the ledger does not (the ids make it exactly
//!    once). While the task runs, its hold is renewed before it expires (`renew`); a capture that
//!    still finds its hold expired (the ledger failed past the grace period) takes the cost from
//!    the Stack's balance, if it covers it, so work the hub accepted is paid for.
//! 4. Filing later shares the captured cost out of escrow (`crate::settle`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use stacknet_ledger::{
    AccountId, Entry, LedgerError, LedgerStore, Post, Reason, Transfer, TransferId, TransferState, Void,
};
use stacknet_protocol::contract::{PriceTerms, Usage};
use stacknet_protocol::merkle::Hash;
use stacknet_protocol::{Amount, PaperworkId, StackId, Timestamp};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::ApiError;
use crate::log::MerkleLog;
use crate::store::{ModelPrice, PaperworkRecord, Store};

mod renew;
mod repair;

pub use repair::{apply_retrying, start as start_repair, LEDGER_ATTEMPTS, REPAIR_INTERVAL_MS};

/// How long after a request's deadline its hold expires if nothing resolved it (a crashed hub).
pub const DEFAULT_HOLD_GRACE_MS: u64 = 60_000;
/// How often expired holds are released.
pub const EXPIRY_SWEEP_MS: u64 = 1_000;

/// Per-model prices, served from memory; models without a price of their own use the default.
#[derive(Debug)]
pub struct Prices {
    default: PriceTerms,
    by_model: RwLock<HashMap<String, PriceTerms>>,
}

impl Prices {
    pub fn new(default: PriceTerms, stored: Vec<ModelPrice>) -> Self {
        Self {
            default,
            by_model: RwLock::new(stored.into_iter().map(|p| (p.model, p.price)).collect()),
        }
    }

    pub fn get(&self, model: &str) -> PriceTerms {
        self.by_model
            .read()
            .ok()
            .and_then(|m| m.get(model).cloned())
            .unwrap_or_else(|| self.default.clone())
    }

    pub fn set(&self, model: String, price: PriceTerms) {
        if let Ok(mut m) = self.by_model.write() {
            m.insert(model, price);
        }
    }

    /// Applies prices as read from the store.
    pub fn apply(&self, prices: &[ModelPrice]) {
        if let Ok(mut m) = self.by_model.write() {
            for p in prices {
                m.insert(p.model.clone(), p.price.clone());
            }
        }
    }

    pub fn default_price(&self) -> &PriceTerms {
        &self.default
    }
}

/// The most a request whose usage is bounded by `bound` can cost under `price` (the workload's
/// module bounds the usage). The node's charge is capped at this.
pub fn max_cost(price: &PriceTerms, bound: &Usage) -> Amount {
    price
        .cost(bound, Amount::from_micros(i64::MAX))
        .unwrap_or(Amount::from_micros(i64::MAX))
}

fn id(text: &str) -> Result<TransferId, ApiError> {
    TransferId::new(text).map_err(ApiError::internal)
}

/// The escrow of one request: the hold taken at admission, kept open while the task runs (the
/// hold is renewed before it expires: [`renew`]). Dropped without being handed to the writer, it
/// releases the hold (in the background: a drop cannot wait).
#[derive(Debug)]
pub struct Escrow {
    ledger: Arc<dyn LedgerStore>,
    /// The open hold: `None` for a free request, and once handed over or released. The renewer
    /// swaps it under this lock, so whoever takes it gets the hold that is open.
    held: Arc<Mutex<Option<TransferId>>>,
    /// Dropped with the escrow (handed over or not): stops the renewer at once.
    _renewing: Option<oneshot::Sender<()>>,
    pub max_cost: Amount,
}

impl Escrow {
    /// Holds `max_cost` of `stack`'s balance for `expires_in_ms` (the request's time-out plus a
    /// grace period), renewed to `grace_ms` from then on for as long as this lives; nothing for a
    /// free request. `insufficient_balance` when the balance cannot cover it.
    pub async fn hold(
        ledger: Arc<dyn LedgerStore>,
        stack: StackId,
        max_cost: Amount,
        expires_in_ms: i64,
        grace_ms: u64,
    ) -> Result<Self, ApiError> {
        if max_cost.micros() <= 0 {
            return Ok(Self {
                ledger,
                held: Arc::new(Mutex::new(None)),
                _renewing: None,
                max_cost: Amount::ZERO,
            });
        }
        let reference = stacknet_protocol::ContractId::random().to_string();
        let hold = id(&format!("hold:{reference}"))?;
        let expires = Timestamp::now().plus_ms(expires_in_ms);
        let transfer = stacknet_ledger::Transfer::hold(
            hold.clone(),
            AccountId::stack(stack),
            AccountId::escrow(),
            max_cost,
            Some(expires),
        );
        match ledger.create_transfers(vec![transfer.into()]).await {
            Ok(_) => {
                let held = Arc::new(Mutex::new(Some(hold)));
                let renewal = renew::Renewal::new(ledger.clone(), stack, max_cost, reference, grace_ms);
                let expires_in = Duration::from_millis(u64::try_from(expires_in_ms).unwrap_or(0));
                let (renewing, stopped) = oneshot::channel();
                tokio::spawn(renew::keep_alive(held.clone(), renewal, expires_in, stopped));
                Ok(Self {
                    ledger,
                    held,
                    _renewing: Some(renewing),
                    max_cost,
                })
            }
            Err(LedgerError::InsufficientFunds { available, .. }) => Err(ApiError::InsufficientBalance {
                available,
                needed: max_cost,
            }),
            Err(e) => Err(ApiError::internal(format!("cannot hold the maximum cost: {e}"))),
        }
    }

    /// The hold now belongs to the settle writer, which captures or releases it: renewals stop,
    /// and this is the hold open now (`None` for a free request).
    pub async fn hand_over(self) -> Option<TransferId> {
        self.held.lock().await.take()
    }
}

impl Drop for Escrow {
    fn drop(&mut self) {
        if self.held.try_lock().is_ok_and(|held| held.is_none()) {
            return;
        }
        let held = self.held.clone();
        let ledger = self.ledger.clone();
        let task = async move {
            let Some(hold) = held.lock().await.take() else {
                return;
            };
            let release = match release_id(&hold) {
                Ok(r) => r,
                Err(e) => return tracing::error!(error = %e, hold = %hold, "no release id for a hold"),
            };
            if let Err(e) = ledger.void(release, hold.clone()).await {
                // An expired hold was released already; anything else is logged, and expiry is the backstop.
                tracing::warn!(error = %e, hold = %hold, "could not release a hold; it will expire");
            }
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(task);
        }
    }
}

/// The id that releases `hold` (`hold:<ref>` is released by `release:<ref>`).
fn release_id(hold: &TransferId) -> Result<TransferId, ApiError> {
    let reference = hold.as_str().strip_prefix("hold:").unwrap_or(hold.as_str());
    id(&format!("release:{reference}"))
}

/// The ledger entry that settles a logged task's escrow: capture its cost, or release a hold whose
/// task cost nothing (or, with `release`, whose paperwork could not be logged).
fn capture_entry(record: &PaperworkRecord, release: bool) -> Result<Option<Entry>, String> {
    let Some(hold) = &record.hold else {
        return Ok(None);
    };
    let tid = |t: &str| TransferId::new(t).map_err(|e| e.to_string());
    let pending = tid(hold)?;
    let reference = hold.strip_prefix("hold:").unwrap_or(hold);
    Ok(Some(if record.cost.micros() > 0 && !release {
        Post::new(
            tid(&format!("capture:{}", record.contract))?,
            pending,
            record.cost,
        )
        .into()
    } else {
        Void::new(tid(&format!("release:{reference}"))?, pending).into()
    }))
}

/// Most paperwork logged and captured in one batch.
pub const MAX_SETTLE_BATCH: usize = 512;
/// Acceptances waiting for the writer before senders wait (back-pressure, bounded memory).
pub const SETTLE_QUEUE_LEN: usize = 8192;

enum Command {
    Accept(Box<PaperworkRecord>, oneshot::Sender<Result<(), String>>),
    Flush(oneshot::Sender<()>),
    CatchUp(oneshot::Sender<Result<(), String>>),
}

/// The one task that appends accepted paperwork to the log and captures its cost, a batch per
/// transaction, and answers each request once both are written. It is also the only one that
/// appends to the in-memory tree: readers that want it level with the database ask it
/// ([`SettleWriter::catch_up`]), so a tree read at one size is never appended to twice.
#[derive(Clone, Debug)]
pub struct SettleWriter {
    tx: mpsc::Sender<Command>,
}

impl SettleWriter {
    /// With `validation`, every logged batch is sampled for validators (see [`crate::validate::sample`]).
    pub fn start(
        store: Arc<dyn Store>,
        ledger: Arc<dyn LedgerStore>,
        log: Arc<MerkleLog>,
        validation: Option<Arc<crate::validate::Validation>>,
        metrics: Arc<crate::metrics::HubMetrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(SETTLE_QUEUE_LEN);
        tokio::spawn(run_writer(rx, store, ledger, log, validation, metrics));
        Self { tx }
    }

    /// Logs `record` and captures its cost; returns once both are durable.
    pub async fn accept(&self, record: PaperworkRecord) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Accept(Box::new(record), done))
            .await
            .map_err(|_| "the settle writer has stopped".to_owned())?;
        wait.await
            .map_err(|_| "the settle writer has stopped".to_owned())?
    }

    /// Brings the in-memory tree level with the stored log (another replica may have appended) and
    /// returns once it is: everything this hub logged before the call is in the tree. Callers that
    /// ask together share one read of the database.
    pub async fn catch_up(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::CatchUp(done))
            .await
            .map_err(|_| "the settle writer has stopped".to_owned())?;
        wait.await
            .map_err(|_| "the settle writer has stopped".to_owned())?
    }

    /// Waits until everything accepted before this call is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run_writer(
    mut rx: mpsc::Receiver<Command>,
    store: Arc<dyn Store>,
    ledger: Arc<dyn LedgerStore>,
    log: Arc<MerkleLog>,
    validation: Option<Arc<crate::validate::Validation>>,
    metrics: Arc<crate::metrics::HubMetrics>,
) {
    let mut batch = Vec::with_capacity(MAX_SETTLE_BATCH);
    let mut waiters = Vec::with_capacity(MAX_SETTLE_BATCH);
    let mut flushes = Vec::new();
    let mut catch_ups = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                Command::Accept(record, done) => {
                    batch.push(*record);
                    waiters.push(done);
                }
                Command::Flush(done) => flushes.push(done),
                Command::CatchUp(done) => catch_ups.push(done),
            }
            next = if batch.len() < MAX_SETTLE_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            let logged: Vec<_> = batch.iter().map(|r| (r.id, r.node_key)).collect();
            let outcome = write_batch(&store, &ledger, &log, std::mem::take(&mut batch)).await;
            if let Ok(Some(captured)) = &outcome {
                // Marked before the answer, so a filing right after it finds the cost captured.
                if let Err(e) = store.mark_captured(captured.clone()).await {
                    tracing::warn!(error = %e, "captured but could not mark it; the repair loop will replay (idempotent)");
                }
            }
            let answer = outcome.map(drop);
            if answer.is_ok() {
                metrics.logged(logged.len());
            }
            if let (Some(v), Ok(())) = (&validation, &answer) {
                // Sampled after the batch is logged: the root it is decided by exists only now.
                // Before the answer, so a task is under validation by the time its client hears.
                crate::validate::sample::on_logged(v, log.head(), &logged).await;
            }
            for done in waiters.drain(..) {
                let _ = done.send(answer.clone());
            }
        }
        if !catch_ups.is_empty() {
            let outcome = catch_up(&store, &log).await;
            for done in catch_ups.drain(..) {
                let _ = done.send(outcome.clone());
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Logs `batch` and captures its costs; returns what to mark captured (`None` when the captures
/// are left to the repair loop).
async fn write_batch(
    store: &Arc<dyn Store>,
    ledger: &Arc<dyn LedgerStore>,
    log: &MerkleLog,
    batch: Vec<PaperworkRecord>,
) -> Result<Option<Vec<(PaperworkId, Amount)>>, String> {
    // Planned before the records (with their documents) move into the store.
    let plan = CapturePlan::of(batch.iter())?;
    let leaves: Vec<Hash> = batch.iter().map(|r| r.leaf_hash).collect();
    let indexes = match store.append_paperwork(batch).await {
        Ok(indexes) => indexes,
        Err(e) => {
            // Not logged, so never payable: give the holds back (the requests get an error).
            apply_each(ledger, plan.releases).await;
            return Err(format!("cannot append to the paperwork log: {e}"));
        }
    };
    grow(store, log, &leaves, &indexes).await?;
    // From here on the paperwork is logged: a failure below is mended by the repair loop.
    capture(ledger, plan).await
}

/// Adds a batch just appended to the in-memory tree: its new leaves, when they follow the tree's
/// last (this hub is the only writer, the usual case), without reading them back; otherwise (another
/// replica appended meanwhile, or some were logged before) by catching up with the stored log.
async fn grow(
    store: &Arc<dyn Store>,
    log: &MerkleLog,
    leaves: &[Hash],
    indexes: &[u64],
) -> Result<(), String> {
    let size = log.size();
    let new: Vec<(u64, Hash)> = indexes
        .iter()
        .zip(leaves)
        .filter(|(i, _)| **i >= size)
        .map(|(i, l)| (*i, *l))
        .collect();
    if new.iter().enumerate().all(|(k, (i, _))| *i == size + k as u64) {
        let leaves: Vec<Hash> = new.into_iter().map(|(_, l)| l).collect();
        if log.append_at(size, &leaves).is_ok() {
            return Ok(());
        }
    }
    catch_up(store, log).await
}

/// Brings the in-memory Merkle tree level with the stored log (another replica may have appended).
/// Only the writer (and [`recover`], before the writer starts) calls it: the leaves read from index
/// `size` are appended at `size`, and the tree refuses them should it have grown meanwhile.
async fn catch_up(store: &Arc<dyn Store>, log: &MerkleLog) -> Result<(), String> {
    let size = log.size();
    let leaves = store
        .leaf_hashes(size)
        .await
        .map_err(|e| format!("cannot read the paperwork log: {e}"))?;
    log.append_at(size, &leaves)
        .map_err(|e| format!("cannot catch up with the paperwork log: {e}"))?;
    Ok(())
}

/// Captures the cost of every logged record, as one ledger batch; if the batch is refused (one
/// hold expired, say), entry by entry, so one bad hold never blocks the rest. Failures underneath
/// are retried ([`apply_retrying`]). Returns what each record really captured (zero where its
/// capture was refused for good), or `None` when the ledger kept failing and the captures are left
/// to the repair loop.
async fn capture(
    ledger: &Arc<dyn LedgerStore>,
    plan: CapturePlan,
) -> Result<Option<Vec<(PaperworkId, Amount)>>, String> {
    let CapturePlan {
        mut captured,
        entries,
        owners,
        ..
    } = plan;
    match apply_retrying(ledger, entries.clone()).await {
        Ok(_) => return Ok(Some(captured)),
        Err(e) if !e.is_refusal() => {
            tracing::error!(error = %e, "capture failed; the repair loop retries it");
            return Ok(None);
        }
        Err(_) => {}
    }
    for (entry, owner) in entries.into_iter().zip(owners) {
        let outcome = match apply_retrying(ledger, vec![entry.clone()]).await {
            Err(e) if e.is_refusal() => match &entry {
                Entry::Post(post) => late_capture(ledger, post).await.inspect_err(|_| {
                    tracing::warn!(error = %e, paperwork = %owner, "its hold could not be captured");
                }),
                _ => Err(e),
            },
            other => other.map(|_| ()),
        };
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_refusal() => {
                tracing::error!(error = %e, paperwork = %owner, "a capture was refused; its task is settled at zero");
                if let Some(c) = captured.iter_mut().find(|(id, _)| *id == owner) {
                    c.1 = Amount::ZERO;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "capture failed; the repair loop retries it");
                return Ok(None);
            }
        }
    }
    Ok(Some(captured))
}

/// A capture whose hold expired before it could be posted (the ledger kept failing until then, or
/// the hub stalled): the hub accepted the work, so its cost is taken from the Stack's balance
/// directly, if the balance still covers it, under the capture's own id (a replay of the post then
/// falls back here again and replays this). A hold in any other state is refused as before.
async fn late_capture(ledger: &Arc<dyn LedgerStore>, post: &Post) -> Result<(), LedgerError> {
    let hold =
        ledger
            .transfer(post.pending_id.clone())
            .await?
            .ok_or_else(|| LedgerError::PendingNotFound {
                id: post.id.clone(),
                pending_id: post.pending_id.clone(),
            })?;
    if hold.state != TransferState::Expired {
        return Err(LedgerError::AlreadyResolved {
            id: post.id.clone(),
            pending_id: post.pending_id.clone(),
            state: hold.state,
        });
    }
    let transfer = Transfer::posted(
        post.id.clone(),
        hold.debit,
        hold.credit,
        post.amount.min(hold.amount),
        Reason::Capture,
    );
    apply_retrying(ledger, vec![transfer.into()]).await?;
    tracing::warn!(capture = %post.id, "its hold had expired: captured from the Stack's balance instead");
    Ok(())
}

/// What settling a batch's escrow takes, computed from the records alone.
struct CapturePlan {
    /// Each record's cost: what it captures if its capture goes through.
    captured: Vec<(PaperworkId, Amount)>,
    /// The captures (or releases of holds whose task cost nothing), and whose each is.
    entries: Vec<Entry>,
    owners: Vec<PaperworkId>,
    /// Releases of every hold, should the batch not be logged.
    releases: Vec<Entry>,
}

impl CapturePlan {
    fn of<'a>(records: impl Iterator<Item = &'a PaperworkRecord>) -> Result<Self, String> {
        let mut plan = Self {
            captured: Vec::new(),
            entries: Vec::new(),
            owners: Vec::new(),
            releases: Vec::new(),
        };
        for r in records {
            plan.captured.push((r.id, r.cost));
            if let Some(e) = capture_entry(r, false)? {
                plan.entries.push(e);
                plan.owners.push(r.id);
            }
            if let Some(e) = capture_entry(r, true)? {
                plan.releases.push(e);
            }
        }
        Ok(plan)
    }
}

/// Applies entries one by one, logging (not failing on) refusals: releases are best effort, and
/// expiry is their backstop.
async fn apply_each(ledger: &Arc<dyn LedgerStore>, entries: Vec<Entry>) {
    for entry in entries {
        if let Err(e) = ledger.create_transfers(vec![entry]).await {
            tracing::warn!(error = %e, "could not release a hold; it will expire");
        }
    }
}

/// At start, before the writer runs: loads the Merkle tree and captures what the log holds and the ledger missed (a crash
/// between the two writes), then releases holds that expired while the hub was down.
pub async fn recover(
    store: &Arc<dyn Store>,
    ledger: &Arc<dyn LedgerStore>,
    log: &MerkleLog,
) -> Result<(), String> {
    catch_up(store, log).await?;
    capture_logged(store, ledger, Timestamp::now()).await?;
    expire_due(ledger).await;
    Ok(())
}

/// Captures what the log holds and the ledger does not: a crash between the writer's two writes,
/// or a ledger that kept failing through the writer's retries. The same ids as the writer's, so a
/// record the writer is capturing at the same time is captured once. Only paperwork accepted
/// before `accepted_before`: what is newer is the writer's to capture.
pub(crate) async fn capture_logged(
    store: &Arc<dyn Store>,
    ledger: &Arc<dyn LedgerStore>,
    accepted_before: Timestamp,
) -> Result<(), String> {
    let mut pending = store.uncaptured().await.map_err(|e| e.to_string())?;
    pending.retain(|p| p.record.accepted_at < accepted_before);
    if !pending.is_empty() {
        tracing::info!(
            count = pending.len(),
            "capturing logged paperwork the ledger missed"
        );
        for chunk in pending.chunks(MAX_SETTLE_BATCH) {
            let plan = CapturePlan::of(chunk.iter().map(|p| &p.record))?;
            match capture(ledger, plan).await? {
                Some(captured) => store.mark_captured(captured).await.map_err(|e| e.to_string())?,
                None => return Err("the ledger failed while capturing logged paperwork".into()),
            }
        }
    }
    Ok(())
}

async fn expire_due(ledger: &Arc<dyn LedgerStore>) {
    loop {
        match ledger.expire_due(Timestamp::now()).await {
            Ok(ids) if ids.len() >= stacknet_ledger::MAX_EXPIRED_PER_CALL => continue,
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(count = ids.len(), "released expired holds");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release expired holds");
                return;
            }
        }
    }
}

/// Releases expired holds every few seconds, for as long as the hub runs.
pub fn start_expiry(ledger: Arc<dyn LedgerStore>, mut shutting_down: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(EXPIRY_SWEEP_MS));
        loop {
            tokio::select! {
                _ = tick.tick() => expire_due(&ledger).await,
                _ = shutting_down.changed() => return,
            }
        }
    });
}
