//! A small connection pool: at most `size` connections, opened on demand, each with the ledger's
//! statements prepared once, returned to the pool when the lease ends unless the connection broke.
//!
//! Written here rather than taken from a crate because it is the only pooling the ledger needs
//! (no health checks, no recycling policy) and it keeps the prepared statements beside their client.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::error::LedgerError;
use crate::postgres::sql::STATEMENTS;

/// One connection and its prepared statements (indexed as `sql::STATEMENTS`).
#[derive(Debug)]
pub(crate) struct PgConn {
    pub client: Client,
    pub statements: Vec<Statement>,
    /// Set from BEGIN until COMMIT or ROLLBACK is confirmed. A connection dropped in between (its
    /// caller's future was cancelled) may still be inside a transaction, so the pool closes it, which
    /// makes the server roll back, instead of handing it to the next caller.
    pub in_transaction: bool,
}

#[derive(Debug)]
pub(crate) struct Pool {
    config: Config,
    /// Set on every new connection: the schema the ledger's tables live in.
    search_path: String,
    idle: Mutex<Vec<PgConn>>,
    permits: Semaphore,
}

/// A connection borrowed from the pool; goes back on drop.
#[derive(Debug)]
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<PgConn>,
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    pub fn new(config: Config, schema: &str, size: usize) -> Self {
        Self {
            config,
            search_path: format!("SET search_path TO \"{schema}\""),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    pub async fn get(&self) -> Result<Lease<'_>, LedgerError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LedgerError::Internal("pool permits closed"))?;
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match reused {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => self.connect().await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    /// A fresh connection without the ledger's statements, for setting up the schema they need.
    pub async fn connect_bare(&self) -> Result<Client, LedgerError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        // The connection task ends when its client is dropped (or the server goes away); a broken
        // connection surfaces as errors on the client, which is where callers look.
        tokio::spawn(async move {
            let _closed = connection.await;
        });
        client.batch_execute(&self.search_path).await?;
        Ok(client)
    }

    async fn connect(&self) -> Result<PgConn, LedgerError> {
        let client = self.connect_bare().await?;
        let mut statements = Vec::with_capacity(STATEMENTS.len());
        for sql in STATEMENTS {
            statements.push(client.prepare(sql).await?);
        }
        Ok(PgConn {
            client,
            statements,
            in_transaction: false,
        })
    }
}

impl Lease<'_> {
    pub fn conn(&mut self) -> Result<&mut PgConn, LedgerError> {
        self.conn
            .as_mut()
            .ok_or(LedgerError::Internal("a lease without a connection"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self
            .conn
            .take()
            .filter(|c| !c.client.is_closed() && !c.in_transaction)
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
        }
    }
}
