//! Long tasks (video generation) whose work outlives the hub connection they came on.
//!
//! A task's backend work runs on a tokio task of its own (a [`Run`]), which the task joins: it
//! relays the run's progress and takes its outcome. When the connection ends, the session aborts
//! the task, but not the run: the run goes on, orphaned, keeping its last progress and, once done,
//! its outcome. A hub that lost the job (it stopped) runs it again when it finds its lease lapsed,
//! under a new contract, with the same request; that task, from the same Stack for the same model and
//! request, joins the orphaned run instead of starting the work over, and signs for the whole of it
//! (the old contract was never billed). So the node resumes reporting a job after reconnecting.
//!
//! Only an orphaned run is joined: two live tasks with the same request run separately. An orphan
//! nobody joins within [`ORPHAN_MS`] is cancelled (the backend stops, as for a cancel); a finished
//! one is forgotten after [`KEEP_FINISHED_MS`]. A cancel of the joining task cancels the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use stacknet_protocol::{Sha256Digest, StackId};
use tokio::sync::{mpsc, watch};

use crate::backend::{BackendError, BackendOutcome, Cancellation, Canceller};

/// How long an orphaned run waits for a task to join it before it is cancelled.
pub const ORPHAN_MS: u64 = 5 * 60 * 1000;
/// How long a finished run's outcome is kept for a task to join.
pub const KEEP_FINISHED_MS: u64 = 10 * 60 * 1000;

/// What identifies a run: the Stack that asked, the model, and the request's digest.
pub type Key = (StackId, String, Sha256Digest);

type Outcome = Result<BackendOutcome, BackendError>;

/// The runs of this node, by [`Key`].
pub(crate) struct Detached {
    runs: Mutex<HashMap<Key, Arc<Run>>>,
    /// How long an orphan waits to be joined ([`ORPHAN_MS`]).
    orphan: Duration,
}

impl Default for Detached {
    fn default() -> Self {
        Self {
            runs: Mutex::default(),
            orphan: Duration::from_millis(ORPHAN_MS),
        }
    }
}

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached")
            .field("runs", &self.lock().len())
            .finish()
    }
}

struct Run {
    /// The last chunk the backend sent (a video's `{"progress": n}`).
    progress: watch::Receiver<Option<Value>>,
    outcome: watch::Receiver<Option<Outcome>>,
    cancel: Canceller,
    /// A task is relaying it now.
    joined: Mutex<bool>,
    /// How long it waits to be joined once orphaned.
    orphan: Duration,
}

impl Run {
    fn set_joined(&self, joined: bool) {
        *self.joined.lock().unwrap_or_else(PoisonError::into_inner) = joined;
    }

    fn is_joined(&self) -> bool {
        *self.joined.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks the run joined while the task relaying it lives; dropped (the task ended or was aborted
/// with its connection), the run is an orphan, cancelled unless joined within [`ORPHAN_MS`].
struct Joined(Arc<Run>);

impl Drop for Joined {
    fn drop(&mut self) {
        self.0.set_joined(false);
        if self.0.outcome.borrow().is_some() {
            return;
        }
        let run = Arc::clone(&self.0);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(run.orphan).await;
                if !run.is_joined() {
                    run.cancel.cancel();
                }
            });
        }
    }
}

impl Detached {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Run>>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The outcome of the backend work for `key`: an orphaned run's if there is one, else a new
    /// run of `start` (given the run's own cancellation and chunk sender). `chunks` gets the run's
    /// progress (its last chunk at once, when joining); `cancel` cancels the run.
    pub fn run(
        self: &Arc<Self>,
        key: Key,
        cancel: Cancellation,
        chunks: mpsc::Sender<Value>,
        start: impl FnOnce(Cancellation, mpsc::Sender<Value>) -> BoxFuture<'static, Outcome>,
    ) -> BoxFuture<'static, Outcome> {
        let run = {
            let mut runs = self.lock();
            match runs.get(&key) {
                Some(run) if !run.is_joined() => {
                    tracing::info!(model = %key.1, "a task joins the run of its request left by a lost hub connection");
                    Arc::clone(run)
                }
                // A live task runs the same request: this one runs on its own.
                Some(_) => return start(cancel, chunks),
                None => {
                    let run = self.spawn(key.clone(), start);
                    runs.insert(key.clone(), Arc::clone(&run));
                    run
                }
            }
        };
        run.set_joined(true);
        let detached = Arc::clone(self);
        Box::pin(async move {
            let outcome = relay(Joined(Arc::clone(&run)), cancel, chunks).await;
            // Taken: no later task may sign for the same work again.
            detached.forget(&key, &run);
            outcome
        })
    }

    /// Starts `start` on a task of its own; it removes itself [`KEEP_FINISHED_MS`] after it ends.
    fn spawn(
        self: &Arc<Self>,
        key: Key,
        start: impl FnOnce(Cancellation, mpsc::Sender<Value>) -> BoxFuture<'static, Outcome>,
    ) -> Arc<Run> {
        let (cancel, cancellation) = Cancellation::pair();
        let (progress_tx, progress) = watch::channel(None);
        let (outcome_tx, outcome) = watch::channel(None);
        let (chunks_tx, mut chunks) = mpsc::channel(16);
        let work = start(cancellation, chunks_tx);
        let run = Arc::new(Run {
            progress,
            outcome,
            cancel,
            joined: Mutex::new(false),
            orphan: self.orphan,
        });
        let (runs, mine) = (Arc::clone(self), Arc::downgrade(&run));
        tokio::spawn(async move {
            tokio::pin!(work);
            let outcome = loop {
                tokio::select! {
                    Some(chunk) = chunks.recv() => {
                        progress_tx.send_replace(Some(chunk));
                    }
                    outcome = &mut work => break outcome,
                }
            };
            while let Ok(chunk) = chunks.try_recv() {
                progress_tx.send_replace(Some(chunk));
            }
            outcome_tx.send_replace(Some(outcome));
            tokio::time::sleep(Duration::from_millis(KEEP_FINISHED_MS)).await;
            let mut map = runs.lock();
            if map
                .get(&key)
                .is_some_and(|r| mine.upgrade().is_some_and(|m| Arc::ptr_eq(r, &m)))
            {
                map.remove(&key);
            }
        });
        run
    }

    /// Forgets the run of `key` (its outcome was taken).
    fn forget(&self, key: &Key, run: &Arc<Run>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|r| Arc::ptr_eq(r, run)) {
            map.remove(key);
        }
    }
}

/// Relays a run's progress to `chunks` until its outcome, cancelling it when `cancel` fires.
async fn relay(joined: Joined, cancel: Cancellation, chunks: mpsc::Sender<Value>) -> Outcome {
    let run = Arc::clone(&joined.0);
    let (mut progress, mut outcome) = (run.progress.clone(), run.outcome.clone());
    let current = progress.borrow_and_update().clone();
    if let Some(chunk) = current {
        let _ = chunks.send(chunk).await;
    }
    let mut cancelled = false;
    loop {
        let done = outcome.borrow_and_update().clone();
        if let Some(done) = done {
            drop(joined);
            return done;
        }
        tokio::select! {
            () = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                run.cancel.cancel();
            }
            Ok(()) = progress.changed() => {
                let chunk = progress.borrow_and_update().clone();
                if let Some(chunk) = chunk {
                    let _ = chunks.send(chunk).await;
                }
            }
            changed = outcome.changed() => {
                if changed.is_err() {
                    return Err(BackendError::Setup("the run ended without an outcome".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key() -> Key {
        (StackId::random(), "m".into(), Sha256Digest([7; 32]))
    }

    /// A backend's work: sends `{"progress": 50}`, then ends when `finish` fires (10 units) or
    /// when cancelled (5 units); counts its starts.
    fn work(
        starts: Arc<AtomicUsize>,
        finish: watch::Receiver<bool>,
    ) -> impl FnOnce(Cancellation, mpsc::Sender<Value>) -> BoxFuture<'static, Outcome> {
        move |cancel, chunks| {
            starts.fetch_add(1, Ordering::SeqCst);
            let mut finish = finish;
            Box::pin(async move {
                let _ = chunks.send(serde_json::json!({"progress": 50})).await;
                let units = tokio::select! {
                    _ = finish.wait_for(|f| *f) => 10,
                    () = cancel.cancelled() => 5,
                };
                Ok(BackendOutcome::units(units, "test", "1".into(), "m"))
            })
        }
    }

    fn units(outcome: &Outcome) -> Option<u64> {
        outcome.as_ref().ok()?.usage.as_ref().map(|u| u.units)
    }

    #[tokio::test]
    async fn work_left_by_a_lost_task_is_joined_by_the_next_and_taken_once() {
        let detached = Arc::new(Detached::default());
        let starts = Arc::new(AtomicUsize::new(0));
        let (finish, finished) = watch::channel(false);
        let k = key();
        let (tx, mut rx) = mpsc::channel(8);
        let first = detached.run(
            k.clone(),
            Cancellation::never(),
            tx,
            work(starts.clone(), finished.clone()),
        );
        let first = tokio::spawn(first);
        assert_eq!(rx.recv().await, Some(serde_json::json!({"progress": 50})));
        // The connection is lost: the task is aborted, the work is not.
        first.abort();
        let _ = first.await;
        let (tx, mut rx) = mpsc::channel(8);
        let second = detached.run(
            k.clone(),
            Cancellation::never(),
            tx,
            work(starts.clone(), finished.clone()),
        );
        let second = tokio::spawn(second);
        assert_eq!(
            rx.recv().await,
            Some(serde_json::json!({"progress": 50})),
            "the progress so far, at once"
        );
        finish.send_replace(true);
        assert_eq!(units(&second.await.unwrap()), Some(10));
        assert_eq!(starts.load(Ordering::SeqCst), 1, "joined, not started again");
        // Taken: the same request again is new work.
        let (tx, _rx) = mpsc::channel(8);
        let third = detached
            .run(k, Cancellation::never(), tx, work(starts.clone(), finished))
            .await;
        assert_eq!(units(&third), Some(10));
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_live_run_is_not_joined_and_a_cancel_reaches_the_work() {
        let detached = Arc::new(Detached::default());
        let starts = Arc::new(AtomicUsize::new(0));
        let (_finish, finished) = watch::channel(false);
        let k = key();
        let (cancel, cancellation) = Cancellation::pair();
        let (tx, _rx) = mpsc::channel(8);
        let live = tokio::spawn(detached.run(
            k.clone(),
            cancellation,
            tx,
            work(starts.clone(), finished.clone()),
        ));
        let (other_cancel, other) = Cancellation::pair();
        let (tx, _rx2) = mpsc::channel(8);
        let twin = tokio::spawn(detached.run(k, other, tx, work(starts.clone(), finished)));
        tokio::task::yield_now().await;
        cancel.cancel();
        assert_eq!(units(&live.await.unwrap()), Some(5), "cancelled part way");
        other_cancel.cancel();
        assert_eq!(units(&twin.await.unwrap()), Some(5));
        assert_eq!(starts.load(Ordering::SeqCst), 2, "the twin ran on its own");
    }

    #[tokio::test]
    async fn an_orphan_nobody_joins_is_cancelled() {
        let detached = Arc::new(Detached {
            orphan: Duration::from_millis(50),
            ..Detached::default()
        });
        let starts = Arc::new(AtomicUsize::new(0));
        let (_finish, finished) = watch::channel(false);
        let k = key();
        let (tx, mut rx) = mpsc::channel(8);
        let lost = tokio::spawn(detached.run(k.clone(), Cancellation::never(), tx, work(starts, finished)));
        assert!(rx.recv().await.is_some());
        lost.abort();
        let _ = lost.await;
        let run = Arc::clone(detached.lock().get(&k).unwrap());
        let mut outcome = run.outcome.clone();
        let done = tokio::time::timeout(Duration::from_secs(10), outcome.wait_for(Option::is_some))
            .await
            .expect("the orphan was cancelled")
            .unwrap()
            .clone()
            .unwrap();
        assert_eq!(units(&done), Some(5), "cancelled, as a cancel would");
    }
}
