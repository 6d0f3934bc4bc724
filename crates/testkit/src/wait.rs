//! Waiting on a condition with a deadline: how tests synchronise with what runs in the background
//! (a node connecting, a payout being delivered, a file being written), instead of fixed sleeps.

use std::future::Future;
use std::time::Duration;

/// How long helpers wait for a condition before failing the test.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(20);

/// How often a condition is checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `check` until it gives `Some`, and returns that value; fails the test, naming `what` (the
/// condition awaited, as "the node connected"), when `deadline` passes first.
///
/// `check` is called once more after the deadline, so a slow final step still counts.
#[allow(clippy::panic)] // Test support: a condition that never holds fails the test.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll(deadline, check).await {
        Some(value) => value,
        None => panic!("timed out after {deadline:?} waiting until {what}"),
    }
}

/// Polls `check` until it gives `Some` or `deadline` passes (then `None`).
pub(crate) async fn poll<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
