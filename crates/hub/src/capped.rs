//! A channel bounded in bytes, not in items: a sender never waits, and refuses what would put more
//! than its cap of bytes in wait. The gateway queues a task's events this way (so its reader never
//! waits on one task), and a stream's pump its client's frames (so a task never waits on its client).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// A channel of items weighing `bytes` each, at most `cap` of them waiting.
pub fn channel<T>(cap: u64) -> (CappedSender<T>, CappedReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicU64::new(0));
    let sender = CappedSender {
        tx,
        queued: Arc::clone(&queued),
        cap,
    };
    (sender, CappedReceiver { rx, queued })
}

/// What became of an offered item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// It would have put more than the cap in wait: not queued.
    Full,
    /// The receiver is gone: not queued.
    Closed,
}

#[derive(Debug)]
pub struct CappedSender<T> {
    tx: mpsc::UnboundedSender<(T, u64)>,
    queued: Arc<AtomicU64>,
    cap: u64,
}

impl<T> Clone for CappedSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queued: Arc::clone(&self.queued),
            cap: self.cap,
        }
    }
}

impl<T> CappedSender<T> {
    /// Queues `item` of `bytes` unless that would put more than the cap in wait.
    pub fn offer(&self, item: T, bytes: u64) -> Offer {
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.cap {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return Offer::Full;
        }
        self.send(item, bytes)
    }

    /// Queues `item` whatever waits already (a last item, such as an error); `Full` never.
    pub fn push(&self, item: T, bytes: u64) -> Offer {
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        self.send(item, bytes)
    }

    fn send(&self, item: T, bytes: u64) -> Offer {
        match self.tx.send((item, bytes)) {
            Ok(()) => Offer::Queued,
            Err(_) => Offer::Closed,
        }
    }

    /// Resolves once the receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

#[derive(Debug)]
pub struct CappedReceiver<T> {
    rx: mpsc::UnboundedReceiver<(T, u64)>,
    queued: Arc<AtomicU64>,
}

impl<T> CappedReceiver<T> {
    /// The next item; `None` once every sender is gone and nothing waits.
    pub async fn recv(&mut self) -> Option<T> {
        let (item, bytes) = self.rx.recv().await?;
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_the_cap_waits_and_taking_frees_room() {
        let (tx, mut rx) = channel::<&str>(10);
        assert_eq!(tx.offer("a", 6), Offer::Queued);
        assert_eq!(tx.offer("b", 6), Offer::Full);
        assert_eq!(tx.offer("c", 4), Offer::Queued);
        assert_eq!(rx.recv().await, Some("a"));
        assert_eq!(tx.offer("d", 6), Offer::Queued);
        assert_eq!(tx.push("last", 100), Offer::Queued);
        assert_eq!(rx.recv().await, Some("c"));
        assert_eq!(rx.recv().await, Some("d"));
        assert_eq!(rx.recv().await, Some("last"));
        drop(rx);
        assert_eq!(tx.offer("e", 1), Offer::Closed);
    }
}
