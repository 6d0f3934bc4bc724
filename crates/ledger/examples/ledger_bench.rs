//! Ledger throughput: posted transfers per second on SQLite and PostgreSQL, for batches of 1, 100 and
//! 1,000 transfers, from one caller and from many at once.
//!
//!     cargo run --release -p stacknet-ledger --example ledger_bench [-- postgres://postgres@127.0.0.1:5432/test]
//!
//! PostgreSQL is measured when a URL is given or `STACKNET_TEST_DATABASE_URL` is set; it runs in a
//! schema of its own, dropped afterwards. SQLite runs in a temporary directory, once with
//! `synchronous=FULL` (the default: every commit survives power loss) and once with `NORMAL`.

use std::sync::Arc;

use stacknet_ledger::bench::{self, BenchPlan};
use stacknet_ledger::{
    LedgerError, LedgerStore, PgLedger, PgOptions, SqliteLedger, SqliteOptions, Synchronous,
};

/// (batch size, batches per caller, callers): about the same number of transfers per row where the
/// batch size allows, fewer for single transfers from one caller (one commit each).
const PLANS: [(usize, usize, usize); 5] = [
    (1, 2_000, 1),
    (1, 200, 32),
    (100, 200, 1),
    (1_000, 40, 1),
    (100, 25, 16),
];

#[tokio::main]
async fn main() -> Result<(), LedgerError> {
    let postgres = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("STACKNET_TEST_DATABASE_URL").ok());
    println!(
        "{:<24} {:>6} {:>8} {:>10} {:>10} {:>12}",
        "store", "batch", "callers", "transfers", "seconds", "transfers/s"
    );
    for synchronous in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().map_err(|_| LedgerError::Internal("no temporary directory"))?;
        let options = SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        };
        let store: Arc<dyn LedgerStore> =
            Arc::new(SqliteLedger::open(dir.path().join("bench.sqlite"), options)?);
        run_all(&format!("sqlite ({synchronous:?})"), store).await?;
    }
    if let Some(url) = postgres {
        let schema = format!("ledger_bench_{}", std::process::id());
        let options = PgOptions {
            schema: schema.clone(),
            pool_size: 32,
        };
        let store: Arc<dyn LedgerStore> = Arc::new(PgLedger::connect(&url, options).await?);
        let result = run_all("postgres", store).await;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await?;
        result?;
    } else {
        println!("postgres: skipped (pass a URL or set STACKNET_TEST_DATABASE_URL)");
    }
    Ok(())
}

async fn run_all(name: &str, store: Arc<dyn LedgerStore>) -> Result<(), LedgerError> {
    for (n, (batch_size, batches, callers)) in PLANS.into_iter().enumerate() {
        let plan = BenchPlan {
            batch_size,
            batches,
            callers,
            run: format!("r{n}"),
        };
        let report = bench::transfers(Arc::clone(&store), plan).await?;
        println!(
            "{:<24} {:>6} {:>8} {:>10} {:>10.2} {:>12.0}",
            name,
            batch_size,
            callers,
            report.transfers,
            report.elapsed.as_secs_f64(),
            report.transfers_per_second()
        );
    }
    let totals = store.sum_check().await?;
    assert!(
        totals.is_balanced(),
        "the books must balance after the benchmark: {totals:?}"
    );
    Ok(())
}
