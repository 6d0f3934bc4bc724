//! What every Stacknet store on PostgreSQL shares (the ledger's and the hub's, re-exported as
//! `stacknet_ledger::pg`): a small connection pool, the schema-name check, the migration under one
//! advisory lock, and the loop that runs a transaction again when PostgreSQL aborted it to break a race.
//!
//! The pool holds at most `size` connections, opened on demand with the store's `search_path`. A
//! connection prepares the pool's fixed statements when it opens (the ledger's, by index) and any
//! other statement on first use (the hub's, by text). It goes back to the pool when its lease ends,
//! unless it broke or was left inside a transaction (its caller's future was dropped mid-way): that
//! one is closed, which makes the server roll back, and the next lease opens a fresh one.
//!
//! Written here rather than taken from a crate because it is the only pooling the stores need
//! (no health checks, no recycling policy) and it keeps the prepared statements beside their client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Statement};

/// Key of the advisory lock held while migrating. The hub and the ledger take the same one: they may
/// share a schema, and two `CREATE SCHEMA IF NOT EXISTS` of one name at once can fail, so their
/// migrations take turns.
pub const MIGRATION_LOCK_KEY: i64 = 0x5354_4b4e_4c44_4752; // "STKNLDGR"

/// Times a transaction is run again after PostgreSQL aborted it for a conflict.
pub const MAX_RETRIES: u32 = 8;

/// Whether `schema` can go into SQL as a quoted identifier as given: 1 to 63 characters of a-z, 0-9
/// and `_`, not starting with a digit (the driver does not quote schema names for us).
pub fn is_valid_schema_name(schema: &str) -> bool {
    (1..=63).contains(&schema.len())
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Whether PostgreSQL aborted a transaction to break a race with another (a deadlock, or a
/// serialization failure): running it again from the start is safe and will see the other's result.
pub fn is_conflict(error: &tokio_postgres::Error) -> bool {
    let retryable = [
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::T_R_SERIALIZATION_FAILURE,
    ];
    error.code().is_some_and(|code| retryable.contains(code))
}

/// Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or has been run again
/// `MAX_RETRIES` times. Each attempt must be a whole transaction (or one statement).
pub async fn retry<T, E, Fut>(
    retryable: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(e) if retryable(&e) && retries < MAX_RETRIES => retries += 1,
            result => return result,
        }
    }
}

/// One connection and its prepared statements.
#[derive(Debug)]
pub struct PgConn {
    pub client: Client,
    /// The pool's fixed statements, in the order given to [`Pool::with_statements`].
    pub statements: Vec<Statement>,
    /// Statements prepared on first use by [`Lease::prepare`], by their text.
    prepared: HashMap<&'static str, Statement>,
    /// Set from BEGIN until COMMIT or ROLLBACK is confirmed. A connection dropped in between (its
    /// caller's future was cancelled) may still be inside a transaction, so the pool closes it, which
    /// makes the server roll back, instead of handing it to the next caller.
    pub in_transaction: bool,
}

impl PgConn {
    /// After a transaction: on failure roll back, so that the connection can be reused; if even the
    /// ROLLBACK fails the connection stays marked as in a transaction and the pool closes it. On
    /// success the COMMIT went through.
    pub async fn end_transaction<T, E>(&mut self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() && self.in_transaction && self.client.batch_execute("ROLLBACK").await.is_err() {
            return result;
        }
        self.in_transaction = false;
        result
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Pool {
    config: Config,
    /// The schema the store's tables live in: `search_path` on every new connection.
    schema: String,
    statements: &'static [&'static str],
    idle: Mutex<Vec<PgConn>>,
    permits: Semaphore,
}

/// A connection borrowed from the pool; goes back on drop.
#[derive(Debug)]
pub struct Lease<'a> {
    pool: &'a Pool,
    /// Always `Some` until `drop` takes it.
    conn: Option<PgConn>,
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    /// A pool of at most `size` connections to `config`, working in `schema` (which must pass
    /// [`is_valid_schema_name`]: it is quoted as given).
    pub fn new(config: Config, schema: &str, size: usize) -> Self {
        Self {
            config,
            schema: schema.to_owned(),
            statements: &[],
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// Has every connection prepare `statements` when it opens (`PgConn::statements`, same order).
    pub fn with_statements(mut self, statements: &'static [&'static str]) -> Self {
        self.statements = statements;
        self
    }

    /// Creates the pool's schema and runs `tables` in it, in one transaction under
    /// [`MIGRATION_LOCK_KEY`] so that replicas starting together do not race on `CREATE ... IF NOT
    /// EXISTS`. The connection used then joins the pool.
    pub async fn migrate(&self, tables: &str) -> Result<(), tokio_postgres::Error> {
        let client = self.connect_bare().await?;
        let schema = &self.schema;
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});
                 CREATE SCHEMA IF NOT EXISTS \"{schema}\"; {tables} COMMIT;"
            ))
            .await?;
        let conn = self.prepared(client).await?;
        self.put_back(conn);
        Ok(())
    }

    pub async fn get(&self) -> Result<Lease<'_>, tokio_postgres::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool never closes its semaphore");
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match reused {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => self.prepared(self.connect_bare().await?).await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    /// A fresh connection in the pool's schema, without prepared statements.
    async fn connect_bare(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        // The connection task ends when its client is dropped (or the server goes away); a broken
        // connection surfaces as errors on the client (and `is_closed`), which is where the pool looks.
        tokio::spawn(async move {
            let _closed = connection.await;
        });
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .await?;
        Ok(client)
    }

    async fn prepared(&self, client: Client) -> Result<PgConn, tokio_postgres::Error> {
        let mut statements = Vec::with_capacity(self.statements.len());
        for sql in self.statements {
            statements.push(client.prepare(sql).await?);
        }
        Ok(PgConn {
            client,
            statements,
            prepared: HashMap::new(),
            in_transaction: false,
        })
    }

    fn put_back(&self, conn: PgConn) {
        if !conn.client.is_closed() && !conn.in_transaction {
            self.idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
        }
    }
}

impl Lease<'_> {
    pub fn conn(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("only drop takes the connection")
    }

    /// `sql` prepared on this connection (once per connection).
    pub async fn prepare(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        let conn = self.conn();
        if let Some(statement) = conn.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = conn.client.prepare(sql).await?;
        conn.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}
