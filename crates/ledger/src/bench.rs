//! A throughput measurement any front end can run (`examples/ledger_bench.rs`, `stacknet-bench money`):
//! posted transfers per second for a given batch size and number of concurrent callers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stacknet_protocol::{Amount, StackId};
use tokio::task::JoinSet;

use crate::error::LedgerError;
use crate::model::{AccountId, Entry, Reason, Transfer, TransferId};
use crate::store::LedgerStore;

/// Accounts the benchmark spreads its credits over, so that batches touch many rows, not one.
pub const BENCH_ACCOUNTS: usize = 1_000;

/// What to run: `callers` tasks, each sending `batches` batches of `batch_size` transfers.
#[derive(Clone, Debug)]
pub struct BenchPlan {
    pub batch_size: usize,
    pub batches: usize,
    pub callers: usize,
    /// Distinguishes this run's transfer ids from earlier runs' on the same database (idempotency
    /// would otherwise turn a rerun into replays).
    pub run: String,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub plan: BenchPlan,
    pub transfers: u64,
    pub elapsed: Duration,
}

impl BenchReport {
    pub fn transfers_per_second(&self) -> f64 {
        // Precision loss is irrelevant for a rate.
        #[allow(clippy::cast_precision_loss)]
        let transfers = self.transfers as f64;
        transfers / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Runs the plan: each transfer is a posted top-up from `external:bench` to one of `BENCH_ACCOUNTS`
/// stack accounts (the outside world has no floor, so none is refused). Every caller waits for each
/// batch before sending the next, so `callers` is the number of batches in flight.
pub async fn transfers(store: Arc<dyn LedgerStore>, plan: BenchPlan) -> Result<BenchReport, LedgerError> {
    let accounts: Arc<Vec<AccountId>> = Arc::new(
        (0..BENCH_ACCOUNTS)
            .map(|_| AccountId::stack(StackId::random()))
            .collect(),
    );
    let world = AccountId::external("bench")?;
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for caller in 0..plan.callers {
        let (store, accounts, world, plan) = (
            Arc::clone(&store),
            Arc::clone(&accounts),
            world.clone(),
            plan.clone(),
        );
        callers.spawn(async move {
            for batch_no in 0..plan.batches {
                let batch = (0..plan.batch_size)
                    .map(|i| {
                        let id = TransferId::new(&format!("bench:{}:{caller}:{batch_no}:{i}", plan.run))?;
                        let to = accounts[(caller * 7919 + batch_no * plan.batch_size + i) % accounts.len()]
                            .clone();
                        Ok(Entry::from(Transfer::posted(
                            id,
                            world.clone(),
                            to,
                            Amount::from_micros(1),
                            Reason::Topup,
                        )))
                    })
                    .collect::<Result<Vec<_>, LedgerError>>()?;
                store.create_transfers(batch).await?;
            }
            Ok::<(), LedgerError>(())
        });
    }
    while let Some(joined) = callers.join_next().await {
        joined.map_err(|_| LedgerError::Internal("a benchmark caller panicked"))??;
    }
    let transfers = (plan.batch_size * plan.batches * plan.callers) as u64;
    Ok(BenchReport {
        plan,
        transfers,
        elapsed: started.elapsed(),
    })
}
