//! The SQLite writer: one thread that owns the only writing connection and commits several callers'
//! batches in one transaction (group commit).
//!
//! Why a thread and not `spawn_blocking` per call: SQLite has one writer at a time anyway, and an
//! fsync per transaction is what limits throughput. Draining whatever callers queued while the last
//! commit ran, and committing it as one transaction, pays one fsync for many batches. Each caller's
//! batch runs in its own savepoint, so a refused batch rolls back alone and the others still commit.
//! Replies go out only after the commit, so a caller told "applied" is durable (against a power
//! cut too, for the batches [`Entry::must_sync`] names; holds and expiries survive a crash of the
//! process, and are made durable by the next commit that waits for the disk).

use rusqlite::{Connection, TransactionBehavior};
use stacknet_protocol::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::error::LedgerError;
use crate::model::{Entry, TransferId, TransferOutcome};
use crate::sqlite::{sql, Synchronous};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, LedgerError>>;

/// What callers ask of the writer.
#[derive(Debug)]
pub(crate) enum Command {
    Apply {
        batch: Vec<Entry>,
        reply: Reply<Vec<TransferOutcome>>,
    },
    Expire {
        now: Timestamp,
        reply: Reply<Vec<TransferId>>,
    },
}

/// A command's result, held until the group commits.
enum Done {
    Apply(
        Reply<Vec<TransferOutcome>>,
        Result<Vec<TransferOutcome>, LedgerError>,
    ),
    Expire(Reply<Vec<TransferId>>, Result<Vec<TransferId>, LedgerError>),
}

/// Runs until every sender is gone (the ledger was dropped), finishing what was queued.
/// With the ledger opened `synchronous=FULL`, a group that must survive a power cut
/// ([`Entry::must_sync`]) commits with `FULL` and any other with `NORMAL`: holds and expiries
/// do not wait for the disk (an expiry lost to a power cut is done again by the next sweep).
pub(crate) fn run(
    mut conn: Connection,
    mut commands: mpsc::Receiver<Command>,
    max_group: usize,
    opened: Synchronous,
) {
    let mut current = opened;
    while let Some(first) = commands.blocking_recv() {
        let mut group = vec![first];
        while group.len() < max_group {
            match commands.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let must_sync = group.iter().any(|c| match c {
            Command::Apply { batch, .. } => Entry::must_sync(batch),
            Command::Expire { .. } => false,
        });
        let wanted = if opened == Synchronous::Full && must_sync {
            Synchronous::Full
        } else {
            Synchronous::Normal
        };
        if wanted != current {
            if let Err(e) = conn.pragma_update(None, "synchronous", wanted.pragma()) {
                fail_all(group.into_iter().map(pending_reply).collect(), &e);
                continue;
            }
            current = wanted;
        }
        commit_group(&mut conn, group);
    }
}

fn commit_group(conn: &mut Connection, group: Vec<Command>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(group.into_iter().map(pending_reply).collect(), &e),
    };
    let now = Timestamp::now();
    let mut done = Vec::with_capacity(group.len());
    for command in group {
        done.push(match command {
            Command::Apply { batch, reply } => {
                Done::Apply(reply, in_savepoint(&tx, |c| sql::apply(c, &batch, now)))
            }
            Command::Expire { now, reply } => Done::Expire(reply, in_savepoint(&tx, |c| sql::expire(c, now))),
        });
    }
    match tx.commit() {
        Ok(()) => done.into_iter().for_each(Done::send),
        Err(e) => fail_all(done.into_iter().map(Done::into_reply).collect(), &e),
    }
}

/// Runs `f` in a savepoint that is released on success and rolled back on any error.
fn in_savepoint<T>(
    tx: &rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    // `Transaction` derefs to `Connection`; a savepoint on it needs `&mut`, so use SQL directly.
    tx.execute_batch("SAVEPOINT batch")?;
    let result = f(tx);
    let end = if result.is_ok() {
        "RELEASE batch"
    } else {
        "ROLLBACK TO batch; RELEASE batch"
    };
    tx.execute_batch(end)?;
    result
}

/// A reply channel whose command has not produced a result (yet, or ever).
enum PendingReply {
    Apply(Reply<Vec<TransferOutcome>>),
    Expire(Reply<Vec<TransferId>>),
}

fn pending_reply(command: Command) -> PendingReply {
    match command {
        Command::Apply { reply, .. } => PendingReply::Apply(reply),
        Command::Expire { reply, .. } => PendingReply::Expire(reply),
    }
}

impl Done {
    fn send(self) {
        // A caller that stopped waiting (its future was dropped) needs no answer.
        match self {
            Done::Apply(reply, result) => drop(reply.send(result)),
            Done::Expire(reply, result) => drop(reply.send(result)),
        }
    }

    fn into_reply(self) -> PendingReply {
        match self {
            Done::Apply(reply, _) => PendingReply::Apply(reply),
            Done::Expire(reply, _) => PendingReply::Expire(reply),
        }
    }
}

/// The whole group failed to begin or to commit: nothing of it was applied, and every caller is told
/// so with the database's error.
fn fail_all(replies: Vec<PendingReply>, error: &rusqlite::Error) {
    for reply in replies {
        let error = LedgerError::Sqlite(copy_error(error));
        match reply {
            PendingReply::Apply(reply) => drop(reply.send(Err(error))),
            PendingReply::Expire(reply) => drop(reply.send(Err(error))),
        }
    }
}

/// `rusqlite::Error` is not `Clone`; keep the SQLite code where there is one, the message otherwise.
fn copy_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}
