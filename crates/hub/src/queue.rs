//! The wait for a node's slot: one bounded queue per model, fair across Stacks, earliest deadline
//! first within a Stack.
//!
//! A request whose model is served by connected nodes that are all busy waits here instead of being
//! refused: the slot a finishing task frees is handed straight to the next waiter the node can run
//! (see [`crate::nodes::Nodes::lease`]), so a request arriving later never overtakes one already
//! waiting. Stacks take turns: the next waiter is the earliest-deadline one of the Stack whose turn
//! it is, and a Stack that was served goes to the back of the line, so one Stack's burst of a
//! thousand requests does not make another Stack's single request wait behind all of them.
//!
//! This module is the data structure only; [`crate::nodes`] owns the lock and the hand-off.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use stacknet_protocol::contract::Workload;
use stacknet_protocol::{NodeKeyId, StackId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::nodes::{Lease, Need};

/// Requests that may wait per model unless the hub is told otherwise (`--max-queued-per-model`).
pub const DEFAULT_MAX_QUEUED_PER_MODEL: usize = 1024;

/// The time a slot is assumed to be held before any task of the model has finished.
pub const FIRST_SERVICE_ESTIMATE: Duration = Duration::from_secs(1);

/// Weight of the newest observation in the mean time a slot is held (an exponential average).
const SERVICE_EWMA_WEIGHT: f64 = 0.1;

/// One request waiting for a slot.
#[derive(Debug)]
pub struct Waiter {
    pub stack: StackId,
    pub deadline: Instant,
    pub since: Instant,
    pub workload: Workload,
    pub file_bytes: u64,
    pub frame_bytes: u64,
    /// A node this request must not go to (it just failed the request).
    pub exclude: Option<NodeKeyId>,
    /// Where its slot is handed; a closed channel means the request has gone.
    pub tx: oneshot::Sender<Lease>,
}

impl Waiter {
    /// What the request needs of a node, `model` being its queue's.
    pub fn need<'a>(&self, model: &'a str) -> Need<'a> {
        Need {
            model,
            workload: self.workload,
            file_bytes: self.file_bytes,
            frame_bytes: self.frame_bytes,
        }
    }
}

/// The requests waiting for one model.
#[derive(Debug, Default)]
pub struct ModelQueue {
    waiters: HashMap<u64, Waiter>,
    /// Each Stack's waiters by deadline (then arrival).
    by_stack: HashMap<StackId, BTreeSet<(Instant, u64)>>,
    /// Stacks with waiters, whose turn comes first at the front.
    turn: VecDeque<StackId>,
    /// The mean time a slot of this model is held, in ms (for the wait estimate); `None` until a
    /// task of it has finished.
    mean_service_ms: Option<f64>,
}

impl ModelQueue {
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Queues `waiter` under the (unique) number `seq`.
    pub fn push(&mut self, seq: u64, waiter: Waiter) {
        let stack = self.by_stack.entry(waiter.stack).or_default();
        if stack.is_empty() {
            self.turn.push_back(waiter.stack);
        }
        stack.insert((waiter.deadline, seq));
        self.waiters.insert(seq, waiter);
    }

    /// Takes waiter `seq` out of the queue (its request went away); its Stack keeps its turn.
    pub fn remove(&mut self, seq: u64) -> Option<Waiter> {
        let waiter = self.waiters.remove(&seq)?;
        if let Some(stack) = self.by_stack.get_mut(&waiter.stack) {
            stack.remove(&(waiter.deadline, seq));
            if stack.is_empty() {
                self.by_stack.remove(&waiter.stack);
                self.turn.retain(|s| *s != waiter.stack);
            }
        }
        Some(waiter)
    }

    /// The waiter to serve next among those `fits` accepts: the first Stack in turn that has one,
    /// and of its waiters the one with the earliest deadline. Returns its number and since when it
    /// has waited.
    pub fn next(&self, fits: impl Fn(&Waiter) -> bool) -> Option<(u64, Instant)> {
        self.turn.iter().find_map(|stack| {
            self.by_stack.get(stack)?.iter().find_map(|(_, seq)| {
                let w = self.waiters.get(seq)?;
                fits(w).then_some((*seq, w.since))
            })
        })
    }

    /// Takes waiter `seq` out to serve it: its Stack goes to the back of the line.
    pub fn serve(&mut self, seq: u64) -> Option<Waiter> {
        let waiter = self.remove(seq)?;
        if self.by_stack.contains_key(&waiter.stack) {
            self.turn.retain(|s| *s != waiter.stack);
            self.turn.push_back(waiter.stack);
        }
        Some(waiter)
    }

    /// Counts a slot of this model held for `held`.
    pub fn observe(&mut self, held: Duration) {
        let ms = held.as_secs_f64() * 1e3;
        let mean = self.mean_service_ms.get_or_insert(ms);
        *mean += SERVICE_EWMA_WEIGHT * (ms - *mean);
    }

    /// How long a request joining now would wait, with `slots` slots serving the model: the
    /// waiters ahead of it and itself, each holding a slot for the mean time, spread over the slots.
    pub fn estimated_wait(&self, slots: u32) -> Duration {
        let ahead = (self.len() + 1) as f64;
        let mean = self
            .mean_service_ms
            .unwrap_or(FIRST_SERVICE_ESTIMATE.as_secs_f64() * 1e3);
        let ms = ahead * mean / f64::from(slots.max(1));
        Duration::from_secs_f64(ms.max(0.0) / 1e3)
    }
}

/// Every model's queue, under the one lock of [`crate::nodes::Nodes`].
#[derive(Debug, Default)]
pub struct Queues {
    pub models: HashMap<String, ModelQueue>,
    next_seq: u64,
}

impl Queues {
    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// How many requests wait for `model`.
    pub fn waiting(&self, model: &str) -> usize {
        self.models.get(model).map_or(0, ModelQueue::len)
    }
}

/// Whole seconds for a `Retry-After` header: at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(stack: u8, deadline_ms: u64) -> (Waiter, oneshot::Receiver<Lease>) {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let w = Waiter {
            stack: StackId::from_digest([stack; 16]),
            deadline: now + Duration::from_millis(deadline_ms),
            since: now,
            workload: Workload::Chat,
            file_bytes: 0,
            frame_bytes: 0,
            exclude: None,
            tx,
        };
        (w, rx)
    }

    #[test]
    fn stacks_take_turns_and_each_stack_goes_by_deadline() {
        let mut q = ModelQueue::default();
        let mut keep = Vec::new();
        // Stack 1 queues three, then stack 2 one: stack 2 is served second, not fourth.
        for (seq, (stack, deadline)) in [(1, 300), (1, 100), (1, 200), (2, 500)].into_iter().enumerate() {
            let (w, rx) = waiter(stack, deadline);
            keep.push(rx);
            q.push(seq as u64, w);
        }
        let mut order = Vec::new();
        while let Some((seq, _)) = q.next(|_| true) {
            order.push(seq);
            q.serve(seq);
        }
        assert_eq!(
            order,
            [1, 3, 2, 0],
            "1's earliest, then 2's, then 1's by deadline"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_waiter_that_does_not_fit_is_passed_over_and_keeps_its_place() {
        let mut q = ModelQueue::default();
        let (a, _ra) = waiter(1, 100);
        let (b, _rb) = waiter(2, 100);
        q.push(1, a);
        q.push(2, b);
        assert_eq!(
            q.next(|w| w.stack == StackId::from_digest([2; 16])).map(|x| x.0),
            Some(2)
        );
        q.serve(2);
        assert_eq!(q.next(|_| true).map(|x| x.0), Some(1));
        assert!(q.remove(1).is_some());
        assert!(q.remove(1).is_none());
        assert!(q.is_empty() && q.turn.is_empty() && q.by_stack.is_empty());
    }

    #[test]
    fn the_wait_estimate_follows_the_queue_and_the_service_time() {
        let mut q = ModelQueue::default();
        assert_eq!(q.estimated_wait(2), FIRST_SERVICE_ESTIMATE / 2);
        for _ in 0..3 {
            q.observe(Duration::from_millis(400));
        }
        let one = q.estimated_wait(4);
        assert!((one.as_secs_f64() - 0.1).abs() < 0.01, "{one:?}");
        let mut keep = Vec::new();
        for seq in 0..7 {
            let (w, rx) = waiter(1, 1000);
            keep.push(rx);
            q.push(seq, w);
        }
        let eight = q.estimated_wait(4);
        assert!((eight.as_secs_f64() - 0.8).abs() < 0.05, "{eight:?}");
        assert_eq!(retry_after_secs(eight), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2_001)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
