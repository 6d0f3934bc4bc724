#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The hub's one integration-test binary. `store` is the `Store` suite, written once and run against
//! SQLite always and PostgreSQL in tests marked `#[ignore]` (they need `STACKNET_TEST_DATABASE_URL`;
//! `scripts/test.sh` runs them with `--include-ignored`, and one run without the variable fails).

mod nodes;
mod store;

use std::future::Future;
use std::sync::Arc;

use stacknet_hub::store::{PgStore, SqliteStore, Store};
use stacknet_protocol::StackId;
use stacknet_testkit::{wait_until, WAIT_DEADLINE};
use tempfile::TempDir;

pub const DATABASE_URL_VAR: &str = "STACKNET_TEST_DATABASE_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One `#[test]` per backend for each suite function `module::name(&TestDb)`.
macro_rules! on_every_backend {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                crate::run(crate::Backend::Sqlite, |db| async move { crate::$module::$name(&db).await });
            })*
        }
        mod postgres {
            $(#[test]
            #[ignore = "needs PostgreSQL (STACKNET_TEST_DATABASE_URL); scripts/test.sh runs it"]
            fn $name() {
                crate::run(crate::Backend::Postgres, |db| async move { crate::$module::$name(&db).await });
            })*
        }
    };
}

on_every_backend! {
    store::stacks_and_api_keys_round_trip,
    store::set_price_replaces_and_prices_sort_bytewise,
    store::append_gives_contiguous_indexes_and_a_logged_id_keeps_its_first,
    store::a_batch_with_a_conflicting_contract_appends_nothing,
    store::leaf_hashes_start_at_the_index_asked_for,
    store::uncaptured_lists_until_marked_captured_with_the_amount_moved,
    store::paperwork_many_answers_in_the_order_asked,
    store::a_settlement_claims_only_unfiled_paperwork_and_stays_open_until_finished,
    store::racing_settlements_claim_each_paperwork_once,
    store::claim_event_is_true_only_the_first_time,
    store::nonces_are_held_until_they_expire,
    store::payout_updates_only_from_the_states_named,
    store::payouts_by_state_and_by_node_oldest_first,
    store::unbondings_are_recorded_once_listed_by_maturity_and_leave_when_withdrawn,
    store::a_suspension_keeps_the_time_of_the_latest_conviction,
    store::concurrent_appends_from_two_replicas_fill_the_log_without_gaps,
    store::a_broken_connection_is_replaced,
    store::evidence_adds_into_its_node_day_and_kind_and_lists_in_order,
    store::usage_adds_into_its_minute_and_reads_by_time_and_stack,
    store::documents_keep_every_version_once_and_counters_add_up,
}

/// A test's database: SQLite in a temporary directory, or PostgreSQL in a schema of its own, dropped
/// when the test ends (passed or not).
#[derive(Debug)]
pub struct TestDb {
    pub store: Arc<dyn Store>,
    place: Place,
}

#[derive(Debug)]
enum Place {
    Sqlite { _dir: TempDir },
    Postgres { url: String, schema: String },
}

/// Runs `test` on a fresh database of `backend` on a runtime of its own; for PostgreSQL without
/// `STACKNET_TEST_DATABASE_URL`, fails: a test that did not run must not pass.
pub fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
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
    let db = rt.block_on(TestDb::new(url));
    rt.block_on(test(db));
}

impl TestDb {
    async fn new(url: Option<String>) -> Self {
        match url {
            None => {
                let dir = tempfile::tempdir().unwrap();
                let store = Arc::new(SqliteStore::open(&dir.path().join("hub.sqlite")).unwrap());
                Self {
                    store,
                    place: Place::Sqlite { _dir: dir },
                }
            }
            Some(url) => {
                let schema = format!("hub_test_{}", &StackId::random().to_string()[4..20]);
                // Named after the schema, so that a test can find its own connections.
                let separator = if url.contains('?') { '&' } else { '?' };
                let url = format!("{url}{separator}application_name={schema}");
                let store = PgStore::connect(&url, &schema).await.unwrap();
                Self {
                    store,
                    place: Place::Postgres { url, schema },
                }
            }
        }
    }

    /// A second handle on the same data, as another hub replica would have: another `PgStore` on
    /// PostgreSQL; the same store on SQLite, which serves one hub process.
    pub async fn replica(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Sqlite { .. } => self.store.clone(),
            Place::Postgres { url, schema } => PgStore::connect(url, schema).await.unwrap(),
        }
    }

    /// Has the server close every connection the test's stores hold (a restart, a failover), and
    /// waits until they are gone; nothing to break on SQLite.
    pub async fn break_connections(&self) {
        let Place::Postgres { url, schema } = &self.place else {
            return;
        };
        let admin = connect_admin(url).await;
        let ours = "FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()";
        let killed = admin
            .query(&format!("SELECT pg_terminate_backend(pid) {ours}"), &[schema])
            .await
            .unwrap();
        assert!(!killed.is_empty(), "the store had no connection open");
        let gone = || async {
            let left: i64 = admin
                .query_one(&format!("SELECT COUNT(*) {ours}"), &[schema])
                .await
                .unwrap()
                .get(0);
            (left == 0).then_some(())
        };
        wait_until("every connection of the store is terminated", WAIT_DEADLINE, gone).await;
    }
}

async fn connect_admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Place::Postgres { url, schema } = &self.place else {
            return;
        };
        let (url, schema) = (url.clone(), schema.clone());
        // Drop may run inside the test's runtime, which cannot block on a future: clean up from a
        // thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                connect_admin(&url)
                    .await
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .unwrap();
            });
        });
        let _ = cleanup.join();
    }
}
