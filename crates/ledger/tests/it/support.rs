//! One fresh ledger per test, on either backend: SQLite in a temporary directory, PostgreSQL in a
//! schema of its own (dropped afterwards), so tests run in parallel and repeatedly without colliding.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use stacknet_ledger::{
    AccountId, Amount, Entry, LedgerStore, PgLedger, PgOptions, Reason, SqliteLedger, SqliteOptions,
    Synchronous, Timestamp, Transfer, TransferId,
};
use stacknet_protocol::StackId;
use tempfile::TempDir;

pub const DATABASE_URL_VAR: &str = "STACKNET_TEST_DATABASE_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How a test's database is set up.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Durable commits (the product default) or fast ones (property tests: same logic, no fsync).
    pub durable: bool,
    pub pool_size: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            durable: true,
            pool_size: 4,
        }
    }
}

/// A test's runtime and ledger.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub ctx: Ctx,
}

impl Harness {
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// A fresh ledger; fails for PostgreSQL when no database is configured (a test that did not run must
/// not pass).
pub fn harness(backend: Backend, setup: Setup) -> Harness {
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => match std::env::var(DATABASE_URL_VAR) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                panic!("{DATABASE_URL_VAR} is not set: this test needs PostgreSQL (scripts/test.sh sets it)")
            }
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = rt.block_on(Ctx::new(backend, url, setup));
    Harness { rt, ctx }
}

pub struct Ctx {
    pub backend: Backend,
    pub store: Arc<dyn LedgerStore>,
    setup: Setup,
    place: Place,
    wipes: AtomicU32,
}

/// How often `wipe` vacuums PostgreSQL's tables.
const VACUUM_EVERY_WIPES: u32 = 100;

enum Place {
    /// `wiper` empties the books between property-test cases.
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
        wiper: std::sync::Mutex<Option<rusqlite::Connection>>,
    },
    Postgres {
        url: String,
        schema: String,
        admin: tokio_postgres::Client,
    },
}

impl Ctx {
    async fn new(backend: Backend, url: Option<String>, setup: Setup) -> Self {
        let place = match url {
            None => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("ledger.sqlite");
                Place::Sqlite {
                    _dir: dir,
                    path,
                    wiper: std::sync::Mutex::new(None),
                }
            }
            Some(url) => {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let schema = format!(
                    "ledger_test_{}_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    &StackId::random().to_string()[4..12]
                );
                // Not durable: commits do not wait for the WAL flush. Only crash safety differs.
                let url = if setup.durable {
                    url
                } else {
                    with_option(&url, "synchronous_commit=off")
                };
                let admin = connect_admin(&url).await;
                Place::Postgres { url, schema, admin }
            }
        };
        let store = open_store(&place, setup, setup.pool_size).await;
        Self {
            backend,
            store,
            setup,
            place,
            wipes: AtomicU32::new(1),
        }
    }

    /// A second store on the same database: another hub sharing it.
    pub async fn open_another(&self, pool_size: usize) -> Arc<dyn LedgerStore> {
        open_store(&self.place, self.setup, pool_size).await
    }

    /// Empties the books (between property-test cases; nothing else may be running).
    pub async fn wipe(&self) {
        match &self.place {
            Place::Sqlite { path, wiper, .. } => {
                let mut wiper = wiper.lock().unwrap();
                let conn = wiper.get_or_insert_with(|| {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                    conn
                });
                conn.execute_batch("DELETE FROM ledger_transfers; DELETE FROM ledger_accounts;")
                    .unwrap();
            }
            Place::Postgres { schema, admin, .. } => {
                let tables = format!("\"{schema}\".ledger_transfers, \"{schema}\".ledger_accounts");
                let sql = format!(
                    "DELETE FROM \"{schema}\".ledger_transfers; DELETE FROM \"{schema}\".ledger_accounts;"
                );
                admin.batch_execute(&sql).await.unwrap();
                // Deleted rows stay in the tables until vacuumed, and every totals query would scan them.
                if self
                    .wipes
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(VACUUM_EVERY_WIPES)
                {
                    admin.batch_execute(&format!("VACUUM {tables}")).await.unwrap();
                }
            }
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if let Place::Postgres { url, schema, .. } = &self.place {
            let (url, schema) = (url.clone(), schema.clone());
            // Drop runs inside the test's runtime, which cannot block on another future: clean up from
            // a thread of its own with a runtime of its own.
            let cleanup = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let admin = connect_admin(&url).await;
                    let _ = admin
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                });
            });
            let _ = cleanup.join();
        }
    }
}

async fn open_store(place: &Place, setup: Setup, pool_size: usize) -> Arc<dyn LedgerStore> {
    match place {
        Place::Sqlite { path, .. } => {
            let synchronous = if setup.durable {
                Synchronous::Full
            } else {
                Synchronous::Normal
            };
            Arc::new(
                SqliteLedger::open(
                    path,
                    SqliteOptions {
                        synchronous,
                        ..SqliteOptions::default()
                    },
                )
                .unwrap(),
            )
        }
        Place::Postgres { url, schema, .. } => {
            let options = PgOptions {
                schema: schema.clone(),
                pool_size,
            };
            Arc::new(PgLedger::connect(url, options).await.unwrap())
        }
    }
}

async fn connect_admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn with_option(url: &str, option: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20{}", option.replace('=', "%3D"))
}

// Small helpers the suites share.

pub fn id(s: &str) -> TransferId {
    TransferId::new(s).unwrap()
}

pub fn micros(n: i64) -> Amount {
    Amount::from_micros(n)
}

pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms).unwrap()
}

pub fn world() -> AccountId {
    AccountId::external("topup").unwrap()
}

/// A top-up of `amount` from the outside world.
pub fn topup(tid: &str, to: &AccountId, amount: i64) -> Entry {
    Transfer::posted(id(tid), world(), to.clone(), micros(amount), Reason::Topup).into()
}

pub fn hold(tid: &str, from: &AccountId, amount: i64, expires_at: Option<i64>) -> Entry {
    Transfer::hold(
        id(tid),
        from.clone(),
        AccountId::escrow(),
        micros(amount),
        expires_at.map(at),
    )
    .into()
}

/// Asserts the books' invariants hold right now.
pub async fn assert_balanced(store: &dyn LedgerStore) {
    let totals = store.sum_check().await.unwrap();
    assert!(totals.is_balanced(), "books out of balance: {totals:?}");
}
