//! Connected nodes and the scheduler that picks one for a task.
//!
//! A node is registered by the gateway after it proved its key; each holds an outbox (to its
//! WebSocket writer) and the event channels of the tasks running on it. The scheduler chooses among
//! nodes that serve the model and have free capacity at random, weighted by reputation, free
//! capacity and warmth ([`crate::reputation`]), which spreads tasks by evidence and never makes one
//! node everyone's favourite. Warmth is what the hub saw: the models a node's heartbeats named as
//! ready ([`NodeHandle::set_ready`]) before the task was assigned.
//!
//! When every node that could run a task is busy, the request waits in its model's queue
//! ([`crate::queue`]) until a slot frees or its deadline passes ([`Nodes::lease`]). A slot is handed
//! from the task that held it straight to the next waiter the node can run, under the queue's lock,
//! so a slot never sits free while a request that fits it waits, and no later request overtakes it.
//!
//! Tasks belong to the node key, not to one connection: each key has a [`NodeRecord`] that outlives
//! its connections, holding the marks against it (frames for tasks that are not its own) and the
//! tasks the hub recently ended without the node (its connection closed, the client went away), so
//! that a node reconnecting with late frames for those is not marked for them.
//!
//! The gateway's reader hands a task its events without ever waiting for it ([`NodeHandle::deliver`]):
//! a task's queue is bounded in bytes, not in events, and a task with more output waiting than that
//! (its client reads slower than the node writes) is abandoned, cancelled at the node and failed, so
//! one slow client never stops the reader and the node's other tasks.
//!
//! The scheduler routes only to nodes whose bonded stake reaches the network's minimum worker bond
//! ([`Nodes::set_min_bond`]; zero turns the gate off): a node with less stays connected but gets no
//! task. The bonded amounts are kept here, set from the ledger when a node connects and on every
//! stake move ([`crate::stake`]). Counting bytes lets a burst
//! of small chunks wait while a client catches up, and bounds what a stuck client can pin in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use stacknet_protocol::contract::Workload;
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::wire::{
    Attachment, ErrorCode, FilePart, HubMessage, Limits, ModelOffer, ModelReady, MAX_READY_MODELS,
};
use stacknet_protocol::StackId;
use stacknet_protocol::{Amount, ContractId, NodeKeyId, PublicKey, Signed, Timestamp};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::capped::{self, CappedReceiver, CappedSender, Offer};
use crate::queue::{self, ModelQueue, Queues, Waiter};
use crate::reputation::{Reputation, WARM_WEIGHT};

/// Events of one task, from the gateway to the request handler.
#[derive(Debug)]
pub enum TaskEvent {
    Chunk(Value),
    /// An output file, whole and checked against its sha256.
    File(Attachment, Bytes),
    /// The paperwork, and the output token ids its commitment hashes (built-in text backends).
    Done(Box<Signed<Paperwork>>, Option<Vec<u32>>),
    Error(ErrorCode, String),
    /// The node's connection ended before the task did.
    Gone,
}

/// What became of an event the gateway handed a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the task (or dropped because its request has just ended).
    Queued,
    /// The task had too much output waiting: it was abandoned (see [`NodeHandle::deliver`]).
    Abandoned,
    /// No such task is running on this node.
    NotRunning,
}

/// A running task as the gateway sees it: where its events go, and how it is told it was abandoned.
#[derive(Debug, Clone)]
struct TaskSlot {
    /// Weighed by their frames' sizes, at most the hub's `max_queued_output_bytes` waiting.
    events: CappedSender<TaskEvent>,
    abandoned: Arc<Notify>,
}

impl TaskSlot {
    /// Queues `event` of `bytes`; false when that would put more than the cap in wait.
    fn offer(&self, event: TaskEvent, bytes: u64) -> bool {
        // A closed queue: the request has just ended, and the event is not needed.
        self.events.offer(event, bytes) != Offer::Full
    }
}

/// The events of one task, in the order the node sent them; what the request handler reads.
#[derive(Debug)]
pub struct TaskEvents {
    rx: CappedReceiver<TaskEvent>,
}

impl TaskEvents {
    /// The next event; `None` once the gateway has let go of the task.
    pub async fn recv(&mut self) -> Option<TaskEvent> {
        self.rx.recv().await
    }
}

/// What the gateway's writer sends to a node: a message, or a binary frame of a file.
#[derive(Debug)]
pub enum Outbound {
    Message(HubMessage),
    /// A message already encoded (a task, whose size was checked against the node's limit).
    Encoded(String),
    FilePart(Vec<u8>),
}

impl From<HubMessage> for Outbound {
    fn from(m: HubMessage) -> Self {
        Outbound::Message(m)
    }
}

/// How long the hub remembers a task it ended without the node, so late frames for it are not marks.
pub const ENDED_TASK_MEMORY_MS: u64 = 300_000;
/// Most ended tasks remembered per node key (a whole connection's worth at the highest concurrency).
pub const MAX_ENDED_TASKS_PER_NODE: usize = 4096;
/// Records of node keys without a connection kept at most; beyond it, every idle one goes.
pub const MAX_IDLE_NODE_RECORDS: usize = 16_384;

/// What the hub keeps about one node key across its connections.
#[derive(Debug, Default)]
pub struct NodeRecord {
    /// Frames for tasks that were not running on this node (another node's, finished, unknown).
    stray_frames: AtomicU64,
    /// Paperwork refused for claiming more usage than the hub relayed (see `WorkloadApi::usage_bound`).
    refused_usage: AtomicU64,
    /// Tasks of this key the hub ended without the node saying so, newest last.
    ended: Mutex<VecDeque<(ContractId, Instant)>>,
}

impl NodeRecord {
    /// The marks against this node for frames about tasks that were not its own.
    pub fn stray_frames(&self) -> u64 {
        self.stray_frames.load(Ordering::Relaxed)
    }

    fn mark_stray(&self) {
        self.stray_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// The marks against this node for paperwork whose usage exceeded what the hub relayed.
    pub fn refused_usage(&self) -> u64 {
        self.refused_usage.load(Ordering::Relaxed)
    }

    fn mark_refused_usage(&self) {
        self.refused_usage.fetch_add(1, Ordering::Relaxed);
    }

    fn remember_ended(&self, contracts: impl IntoIterator<Item = ContractId>) {
        let now = Instant::now();
        if let Ok(mut ended) = self.ended.lock() {
            for c in contracts {
                if ended.len() >= MAX_ENDED_TASKS_PER_NODE {
                    ended.pop_front();
                }
                ended.push_back((c, now));
            }
        }
    }

    /// Whether the hub ended this task of the node's recently (and not at the node's word).
    pub fn ended_recently(&self, contract: &ContractId) -> bool {
        let Ok(mut ended) = self.ended.lock() else {
            return false;
        };
        forget_old(&mut ended);
        ended.iter().any(|(c, _)| c == contract)
    }

    /// Nothing worth keeping once no connection uses it.
    fn idle_and_clean(&self) -> bool {
        self.stray_frames() == 0
            && self.refused_usage() == 0
            && self.ended.lock().is_ok_and(|mut ended| {
                forget_old(&mut ended);
                ended.is_empty()
            })
    }
}

fn forget_old(ended: &mut VecDeque<(ContractId, Instant)>) {
    let memory = Duration::from_millis(ENDED_TASK_MEMORY_MS);
    while ended.front().is_some_and(|(_, at)| at.elapsed() > memory) {
        ended.pop_front();
    }
}

#[derive(Debug)]
pub struct NodeHandle {
    pub id: NodeKeyId,
    pub key: PublicKey,
    pub models: Vec<ModelOffer>,
    pub max_concurrency: u32,
    /// What the node accepts (from its Hello).
    pub limits: Limits,
    /// Distinguishes this connection from an earlier or later one of the same key.
    pub conn_id: u64,
    in_flight: AtomicU32,
    pub outbox: mpsc::Sender<Outbound>,
    tasks: Mutex<HashMap<ContractId, TaskSlot>>,
    /// The key's record, shared with its other connections (see [`Nodes::record_for`]).
    pub record: Arc<NodeRecord>,
    /// The models its latest heartbeat named as ready, with when it says they became ready.
    ready: Mutex<HashMap<String, Timestamp>>,
    /// When this connection was made.
    pub connected_at: Timestamp,
}

impl NodeHandle {
    pub fn new(
        key: PublicKey,
        models: Vec<ModelOffer>,
        max_concurrency: u32,
        limits: Limits,
        conn_id: u64,
        outbox: mpsc::Sender<Outbound>,
    ) -> Self {
        Self {
            id: key.node_key_id(),
            key,
            models,
            max_concurrency,
            limits,
            conn_id,
            in_flight: AtomicU32::new(0),
            outbox,
            tasks: Mutex::new(HashMap::new()),
            record: Arc::new(NodeRecord::default()),
            ready: Mutex::new(HashMap::new()),
            connected_at: Timestamp::now(),
        }
    }

    /// The same handle, running as `id`: the id a sale bound its key to.
    pub fn with_id(mut self, id: NodeKeyId) -> Self {
        self.id = id;
        self
    }

    /// Takes the models a heartbeat named as ready: only models this connection offers count (at
    /// most [`MAX_READY_MODELS`]), and a model left out is cold from now on.
    pub fn set_ready(&self, ready: &[ModelReady]) {
        let now = Timestamp::now();
        let named: HashMap<String, Timestamp> = ready
            .iter()
            .take(MAX_READY_MODELS)
            .filter(|r| self.serves(&r.name))
            // A time in the future is the node's clock, not a fact: shown as now.
            .map(|r| (r.name.clone(), r.since.min(now)))
            .collect();
        if let Ok(mut r) = self.ready.lock() {
            *r = named;
        }
    }

    /// Whether a heartbeat received before now named `model` as ready on this node.
    pub fn is_ready(&self, model: &str) -> bool {
        self.ready.lock().is_ok_and(|r| r.contains_key(model))
    }

    /// The models seen ready, sorted.
    pub fn ready_models(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ready
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// This handle with the key's record shared with its earlier and later connections.
    pub fn with_record(mut self, record: Arc<NodeRecord>) -> Self {
        self.record = record;
        self
    }

    /// The marks against this node's key for frames about tasks that were not its own.
    pub fn stray_frames(&self) -> u64 {
        self.record.stray_frames()
    }

    /// Counts a frame for a task that is not running on this node.
    pub fn mark_stray(&self) {
        self.record.mark_stray();
    }

    /// Marks this node's key for paperwork refused for its usage.
    pub fn mark_refused_usage(&self) {
        self.record.mark_refused_usage();
    }

    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m.name == model)
    }

    /// Serves `model` for `workload` and takes files of `file_bytes`.
    pub fn can_run(&self, need: &Need<'_>) -> bool {
        self.models
            .iter()
            .any(|m| m.name == need.model && m.workloads.contains(&need.workload))
            && need.file_bytes <= self.limits.max_file_bytes
            && need.frame_bytes < self.limits.max_frame_bytes
    }

    /// Sends a message, then the files that follow it in binary frames of the node's size.
    pub async fn send_with_files(
        &self,
        message: impl Into<Outbound>,
        contract: ContractId,
        files: &[(Attachment, Bytes)],
    ) -> Result<(), ()> {
        self.outbox.send(message.into()).await.map_err(|_| ())?;
        let part = self.limits.part_bytes();
        for (meta, bytes) in files {
            let mut offset = 0usize;
            for data in bytes.chunks(part) {
                let frame = FilePart {
                    contract,
                    sha256: meta.sha256,
                    offset: offset as u64,
                    data,
                };
                self.outbox
                    .send(Outbound::FilePart(frame.encode()))
                    .await
                    .map_err(|_| ())?;
                offset += data.len();
            }
        }
        Ok(())
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Claims one slot of capacity, if there is one.
    fn try_reserve(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_concurrency).then_some(n + 1)
            })
            .is_ok()
    }

    /// Whether the task runs on this node as far as the hub knows (it waits for its events).
    pub fn is_running(&self, contract: &ContractId) -> bool {
        self.tasks.lock().is_ok_and(|t| t.contains_key(contract))
    }

    /// Hands a running task an event of `bytes` (its frame's size) without waiting. A task with
    /// more than its limit of output waiting is abandoned: its client reads slower than the node
    /// writes, and waiting for it would stop this node's connection, and so every other task on it.
    /// It is forgotten here (later frames for it are dropped without a mark), cancelled at the
    /// node, and its request is told to fail, which releases its slot and its hold.
    pub fn deliver(&self, contract: &ContractId, event: TaskEvent, bytes: u64) -> Delivery {
        let Some(slot) = self.tasks.lock().ok().and_then(|t| t.get(contract).cloned()) else {
            return Delivery::NotRunning;
        };
        match slot.offer(event, bytes) {
            true => Delivery::Queued,
            false => {
                let ours = self
                    .tasks
                    .lock()
                    .is_ok_and(|mut tasks| tasks.remove(contract).is_some());
                if ours {
                    self.record.remember_ended([*contract]);
                    let _ = self
                        .outbox
                        .try_send(HubMessage::Cancel { contract: *contract }.into());
                    slot.abandoned.notify_one();
                }
                Delivery::Abandoned
            }
        }
    }

    /// Hands a task its last event from the node (done, or failed) without waiting: it is no
    /// longer running, so any later frame for it is not the node's to send. A task with too much
    /// output waiting is abandoned as in [`Self::deliver`] (the node has already ended it).
    pub fn finish(&self, contract: &ContractId, event: TaskEvent, bytes: u64) -> Delivery {
        let Some(slot) = self.tasks.lock().ok().and_then(|mut t| t.remove(contract)) else {
            return Delivery::NotRunning;
        };
        if slot.offer(event, bytes) {
            return Delivery::Queued;
        }
        slot.abandoned.notify_one();
        Delivery::Abandoned
    }

    /// Tells every running task that the connection is gone; they are remembered as ended by the
    /// hub, so the node may still send their last frames on a new connection without a mark.
    pub fn fail_all(&self) {
        let tasks: Vec<_> = match self.tasks.lock() {
            Ok(mut t) => t.drain().collect(),
            Err(_) => return,
        };
        self.record.remember_ended(tasks.iter().map(|(c, _)| *c));
        for (_, slot) in tasks {
            slot.events.push(TaskEvent::Gone, 0);
        }
    }
}

/// A claimed slot on a node for one task; when dropped, it releases the task's channel and hands
/// the slot to the next request waiting for it (or frees it).
#[derive(Debug)]
pub struct Lease {
    pub node: Arc<NodeHandle>,
    contract: Option<ContractId>,
    abandoned: Arc<Notify>,
    nodes: Arc<Nodes>,
    /// The model it was leased for: its queue is served first when the slot comes free.
    model: String,
    since: Instant,
    /// False for a lease that never reached its waiter: the slot went on to another.
    armed: bool,
}

impl Lease {
    /// A lease of a slot on `node` already claimed (its `in_flight` counts it).
    fn claimed(nodes: &Arc<Nodes>, node: &Arc<NodeHandle>, model: &str) -> Self {
        Self {
            node: Arc::clone(node),
            contract: None,
            abandoned: Arc::new(Notify::new()),
            nodes: Arc::clone(nodes),
            model: model.to_owned(),
            since: Instant::now(),
            armed: true,
        }
    }

    /// Registers the task's event channel under its contract id; at most `max_queued_bytes` of its
    /// output may wait in it (see [`NodeHandle::deliver`]).
    pub fn open_task(&mut self, contract: ContractId, max_queued_bytes: u64) -> TaskEvents {
        let (events, rx) = capped::channel(max_queued_bytes);
        if let Ok(mut tasks) = self.node.tasks.lock() {
            let slot = TaskSlot {
                events,
                abandoned: Arc::clone(&self.abandoned),
            };
            tasks.insert(contract, slot);
        }
        self.contract = Some(contract);
        TaskEvents { rx }
    }

    /// Resolves once the gateway has abandoned the task for its output waiting too long (see
    /// [`NodeHandle::deliver`]); never otherwise.
    pub async fn abandoned(&self) {
        self.abandoned.notified().await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(c) = self.contract.take() {
            // Still running on the node: the hub ended it (time-out, client gone), not the node.
            let ended_by_hub = self
                .node
                .tasks
                .lock()
                .is_ok_and(|mut tasks| tasks.remove(&c).is_some());
            if ended_by_hub {
                self.node.record.remember_ended([c]);
            }
        }
        self.nodes.release(&self.node, &self.model, self.since.elapsed());
    }
}

/// What a task needs of a node.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    pub model: &'a str,
    pub workload: Workload,
    /// The largest input file the node must accept (0: none).
    pub file_bytes: u64,
    /// The task frame's size without its contract (which is signed for the chosen node): the node's
    /// `max_frame_bytes` must exceed it.
    pub frame_bytes: u64,
}

/// Why no node could be leased.
#[derive(Debug, PartialEq, Eq)]
pub enum PickError {
    /// No connected node offers this model, nor did one within the model memory.
    UnknownModel,
    /// Nodes serve it, but none is connected with free capacity now.
    NoCapacity,
    /// Nodes serve it, but its task frame is larger than any of them accepts (`limit`: the largest
    /// `max_frame_bytes` among them).
    FrameTooLarge { limit: u64 },
    /// Nodes serve it, but none has bonded the minimum worker bond (`min`).
    Unbonded { min: Amount },
    /// Every node that serves it is busy and `waiting` requests already wait for it, the most
    /// its queue holds; a request joining would wait about `wait`.
    QueueFull { waiting: usize, wait: Duration },
    /// The request waited `waited` in the queue and its deadline passed; one joining now would
    /// wait about `wait`.
    QueueTimeout { waited: Duration, wait: Duration },
    /// The node a task was pinned to (a guardian's probe) is not connected, may not be routed
    /// tasks, or cannot run it.
    NotOnNode(NodeKeyId),
}

/// How long the models of nodes that left (or stopped offering them) stay known: asking for one
/// meanwhile is 503 (a node restarting will be back), after it 404.
pub const MODEL_MEMORY_MS: u64 = 600_000;
/// Most models remembered of nodes that left; the oldest go first. Each hello may name 256 models,
/// so without a bound reconnecting with new names would grow the hub's memory without end.
pub const MAX_REMEMBERED_MODELS: usize = 4_096;

#[derive(Debug)]
pub struct Nodes {
    by_id: RwLock<HashMap<NodeKeyId, Arc<NodeHandle>>>,
    /// Models no connected node offers now, with when the last one stopped offering them: asking
    /// for one of these is 503 (try again), for one not served now nor remembered 404.
    departed_models: Mutex<HashMap<String, Instant>>,
    model_memory: Duration,
    next_conn: AtomicU64,
    rng: AtomicU64,
    /// Every node key's record, for as long as it is connected or has something worth keeping.
    records: Mutex<HashMap<NodeKeyId, Arc<NodeRecord>>>,
    /// Keys suspended after a conviction, until when: not picked before then (persisted by
    /// validation, loaded at start).
    suspended: RwLock<BTreeMap<NodeKeyId, Timestamp>>,
    /// Bonded stake per key (only keys with a non-zero bond).
    bonds: RwLock<HashMap<NodeKeyId, Amount>>,
    /// The bond a node needs to be routed tasks, in micro-credits; 0: no gate.
    min_bond: AtomicI64,
    /// Requests waiting for a slot, per model. Its lock is taken before any other of these, and
    /// is held wherever a slot is claimed or freed (see [`Nodes::lease`]).
    queues: Mutex<Queues>,
    max_queued: AtomicUsize,
    /// The evidence about nodes, and the scores routing weighs them by.
    pub reputation: Reputation,
}

impl Default for Nodes {
    fn default() -> Self {
        Self::with_model_memory(Duration::from_millis(MODEL_MEMORY_MS))
    }
}

impl Nodes {
    /// Nodes that remember the models of departed nodes for `model_memory`.
    pub fn with_model_memory(model_memory: Duration) -> Self {
        Self {
            by_id: RwLock::default(),
            departed_models: Mutex::default(),
            model_memory,
            next_conn: AtomicU64::default(),
            rng: AtomicU64::default(),
            records: Mutex::default(),
            suspended: RwLock::default(),
            bonds: RwLock::default(),
            min_bond: AtomicI64::new(0),
            queues: Mutex::default(),
            max_queued: AtomicUsize::new(queue::DEFAULT_MAX_QUEUED_PER_MODEL),
            reputation: Reputation::default(),
        }
    }

    /// At most `max` requests wait per model (0: none wait; a busy model is refused at once).
    pub fn set_max_queued(&self, max: usize) {
        self.max_queued.store(max, Ordering::Relaxed);
    }

    /// How many requests wait for `model` now.
    pub fn waiting(&self, model: &str) -> usize {
        self.queues.lock().map_or(0, |q| q.waiting(model))
    }

    /// Routes tasks only to nodes with at least `min` bonded (zero: to every node).
    pub fn set_min_bond(&self, min: Amount) {
        self.min_bond.store(min.micros(), Ordering::Relaxed);
    }

    pub fn min_bond(&self) -> Amount {
        Amount::from_micros(self.min_bond.load(Ordering::Relaxed))
    }

    /// Records what `id` has bonded now (from the ledger); a node that now reaches the minimum
    /// takes waiting requests at once.
    pub fn set_bond(self: &Arc<Self>, id: NodeKeyId, bonded: Amount) {
        if let Ok(mut bonds) = self.bonds.write() {
            if bonded.micros() > 0 {
                bonds.insert(id, bonded);
            } else {
                bonds.remove(&id);
            }
        }
        if let Some(node) = self.get(&id) {
            self.offer_slots(&node);
        }
    }

    /// The connected node of key `id`.
    pub fn get(&self, id: &NodeKeyId) -> Option<Arc<NodeHandle>> {
        self.by_id.read().ok()?.get(id).cloned()
    }

    /// What `id` has bonded, as last recorded.
    pub fn bond(&self, id: &NodeKeyId) -> Amount {
        self.bonds
            .read()
            .ok()
            .and_then(|b| b.get(id).copied())
            .unwrap_or(Amount::ZERO)
    }

    /// Whether `id` may be routed tasks: it has bonded the minimum (or there is none).
    pub fn is_bonded(&self, id: &NodeKeyId) -> bool {
        let min = self.min_bond.load(Ordering::Relaxed);
        min <= 0 || self.bond(id).micros() >= min
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The record of a node key, shared by all its connections; records of keys without a
    /// connection are dropped once they hold nothing, or when there are too many.
    pub fn record_for(&self, id: NodeKeyId) -> Arc<NodeRecord> {
        let Ok(mut records) = self.records.lock() else {
            return Arc::new(NodeRecord::default());
        };
        records.retain(|k, r| *k == id || Arc::strong_count(r) > 1 || !r.idle_and_clean());
        let idle = records.iter().filter(|(_, r)| Arc::strong_count(r) == 1).count();
        if idle > MAX_IDLE_NODE_RECORDS {
            records.retain(|k, r| *k == id || Arc::strong_count(r) > 1);
        }
        records.entry(id).or_default().clone()
    }

    /// The record of a node key, if the hub holds one.
    pub fn record(&self, id: &NodeKeyId) -> Option<Arc<NodeRecord>> {
        self.records.lock().ok()?.get(id).cloned()
    }

    /// Registers a node; an earlier connection of the same key is replaced (and told so by its
    /// outbox closing). Requests waiting for its models take its slots at once.
    pub fn register(self: &Arc<Self>, node: Arc<NodeHandle>) -> Option<Arc<NodeHandle>> {
        let replaced = self.by_id.write().ok()?.insert(node.id, Arc::clone(&node));
        if let Some(old) = &replaced {
            self.remember_models(old);
        }
        self.offer_slots(&node);
        replaced
    }

    /// Removes the node if this connection is still the registered one.
    pub fn unregister(&self, id: &NodeKeyId, conn_id: u64) {
        let removed = match self.by_id.write() {
            Ok(mut map) if map.get(id).is_some_and(|n| n.conn_id == conn_id) => map.remove(id),
            _ => None,
        };
        if let Some(node) = removed {
            self.remember_models(&node);
        }
    }

    /// Remembers the models `gone` offered that no connected node offers now, and forgets those
    /// remembered too long (or beyond [`MAX_REMEMBERED_MODELS`], oldest first).
    fn remember_models(&self, gone: &NodeHandle) {
        let served = self.served_models();
        let Ok(mut departed) = self.departed_models.lock() else {
            return;
        };
        let now = Instant::now();
        for m in &gone.models {
            if !served.contains(&m.name) {
                departed.insert(m.name.clone(), now);
            }
        }
        let memory = self.model_memory;
        departed.retain(|name, at| now.duration_since(*at) < memory && !served.contains(name));
        if departed.len() > MAX_REMEMBERED_MODELS {
            let mut by_age: Vec<(Instant, String)> =
                departed.iter().map(|(name, at)| (*at, name.clone())).collect();
            by_age.sort();
            let excess = departed.len() - MAX_REMEMBERED_MODELS;
            for (_, name) in by_age.into_iter().take(excess) {
                departed.remove(&name);
            }
        }
    }

    /// Whether asking for `model` is worth a retry: a connected node offers it, or one did within
    /// the model memory.
    pub fn knows_model(&self, model: &str) -> bool {
        if self.connected().iter().any(|n| n.serves(model)) {
            return true;
        }
        self.departed_models
            .lock()
            .is_ok_and(|d| d.get(model).is_some_and(|at| at.elapsed() < self.model_memory))
    }

    /// How many models the hub remembers of nodes that left.
    pub fn remembered_models(&self) -> usize {
        self.departed_models.lock().map_or(0, |d| d.len())
    }

    pub fn connected(&self) -> Vec<Arc<NodeHandle>> {
        self.by_id
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Models that connected nodes serve now, sorted.
    pub fn served_models(&self) -> BTreeSet<String> {
        self.connected()
            .iter()
            .flat_map(|n| n.models.iter().map(|m| m.name.clone()))
            .collect()
    }

    fn random(&self) -> u64 {
        // splitmix64 over a counter: cheap, lock-free, good enough to break ties.
        let mut z = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `node` is not picked until `until` (a later time than one set before wins).
    pub fn suspend(&self, node: NodeKeyId, until: Timestamp) {
        if let Ok(mut s) = self.suspended.write() {
            let t = s.entry(node).or_insert(until);
            if until.unix_ms() > t.unix_ms() {
                *t = until;
            }
        }
    }

    /// Until when `node` is suspended, if it is now.
    pub fn suspended_until(&self, node: &NodeKeyId) -> Option<Timestamp> {
        let now = Timestamp::now().unix_ms();
        match self.suspended.read() {
            Ok(s) => s.get(node).filter(|t| t.unix_ms() > now).copied(),
            // A poisoned map: treat every key as suspended rather than route to a convicted one.
            Err(_) => Some(Timestamp::now()),
        }
    }

    pub fn is_suspended(&self, node: &NodeKeyId) -> bool {
        self.suspended_until(node).is_some()
    }

    /// Leases a slot on a node that can run `need` (not `exclude`, a node that just failed it) at
    /// once, or waits in the model's queue for one until `deadline`. Only a model whose nodes are
    /// all busy is waited for; every other refusal is at once. `stack` is whose request it is: the
    /// queue takes Stacks in turn.
    pub async fn lease(
        self: &Arc<Self>,
        need: &Need<'_>,
        exclude: Option<NodeKeyId>,
        stack: StackId,
        deadline: tokio::time::Instant,
    ) -> Result<Lease, PickError> {
        let since = tokio::time::Instant::now();
        let (seq, rx) = {
            let Ok(mut queues) = self.queues.lock() else {
                return Err(PickError::NoCapacity);
            };
            let slots = match self.pick_now(need, exclude) {
                Err(PickError::NoCapacity) => self.slots_for(need, exclude),
                other => return other,
            };
            if slots == 0 {
                return Err(PickError::NoCapacity);
            }
            let max = self.max_queued.load(Ordering::Relaxed);
            let seq = queues.next_seq();
            let model = queues.models.entry(need.model.to_owned()).or_default();
            if model.len() >= max {
                return Err(PickError::QueueFull {
                    waiting: model.len(),
                    wait: model.estimated_wait(slots),
                });
            }
            let (tx, rx) = oneshot::channel();
            let waiter = Waiter {
                stack,
                deadline,
                since,
                workload: need.workload,
                file_bytes: need.file_bytes,
                frame_bytes: need.frame_bytes,
                exclude,
                tx,
            };
            model.push(seq, waiter);
            (seq, rx)
        };
        // Leaves the queue however this ends: served, timed out, or the request dropped.
        let _queued = Queued {
            nodes: self,
            model: need.model,
            seq,
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(lease)) => Ok(lease),
            // The queue let go of it without a slot (it cannot, but a request is never left hanging).
            Ok(Err(_)) => Err(PickError::NoCapacity),
            Err(_) => Err(PickError::QueueTimeout {
                waited: since.elapsed(),
                wait: self.estimated_wait(need, exclude),
            }),
        }
    }

    /// How long a request for `need` joining its queue now would wait.
    pub fn estimated_wait(&self, need: &Need<'_>, exclude: Option<NodeKeyId>) -> Duration {
        let slots = self.slots_for(need, exclude);
        self.queues.lock().map_or(queue::FIRST_SERVICE_ESTIMATE, |q| {
            q.models.get(need.model).map_or_else(
                || ModelQueue::default().estimated_wait(slots),
                |m| m.estimated_wait(slots),
            )
        })
    }

    /// Who can serve `model` now and how long a request would wait: the nodes that serve it and
    /// may be routed tasks, their slots, and its queue. No wait when a slot is free and nobody
    /// waits; otherwise the queue's estimate ([`ModelQueue::estimated_wait`]).
    pub fn availability(&self, model: &str) -> stacknet_api::types::Availability {
        let serving: Vec<Arc<NodeHandle>> = self
            .connected()
            .into_iter()
            .filter(|n| n.serves(model) && self.eligible(n))
            .collect();
        let slots: u32 = serving.iter().map(|n| n.max_concurrency).sum();
        let free: u32 = serving
            .iter()
            .map(|n| n.max_concurrency.saturating_sub(n.in_flight()))
            .sum();
        let (waiting, wait) = self.queues.lock().map_or((0, Duration::ZERO), |q| {
            let queue = q.models.get(model);
            let waiting = queue.map_or(0, ModelQueue::len);
            let wait = match (free, waiting) {
                (1.., 0) => Duration::ZERO,
                _ => queue.map_or_else(
                    || ModelQueue::default().estimated_wait(slots),
                    |m| m.estimated_wait(slots),
                ),
            };
            (waiting, wait)
        });
        stacknet_api::types::Availability {
            nodes: serving.len() as u64,
            slots: u64::from(slots),
            free_slots: u64::from(free),
            waiting: waiting as u64,
            estimated_wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The slots of connected, eligible nodes that could run `need` (busy or not).
    fn slots_for(&self, need: &Need<'_>, exclude: Option<NodeKeyId>) -> u32 {
        self.connected()
            .iter()
            .filter(|n| n.can_run(need) && Some(n.id) != exclude && self.eligible(n))
            .map(|n| n.max_concurrency)
            .sum()
    }

    /// Whether `node` may be given client tasks: it may be probed, and its score is at least the
    /// floor (below it, only guardians' probes reach it, and are how it earns its way back).
    fn eligible(&self, node: &NodeHandle) -> bool {
        self.probeable(node) && self.reputation.above_floor(&node.id)
    }

    /// Whether `node` may be given a guardian's probe: its connection is the registered one, it is
    /// not suspended, and it has bonded the minimum.
    fn probeable(&self, node: &NodeHandle) -> bool {
        let current = self
            .by_id
            .read()
            .is_ok_and(|m| m.get(&node.id).is_some_and(|n| n.conn_id == node.conn_id));
        current && !self.is_suspended(&node.id) && self.is_bonded(&node.id)
    }

    /// A slot of `node` that held a task of `model` for `held` is free: it goes to the next
    /// request waiting that the node can run, or back to the node.
    fn release(self: &Arc<Self>, node: &Arc<NodeHandle>, model: &str, held: Duration) {
        let Ok(mut queues) = self.queues.lock() else {
            node.in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        match queues.models.get_mut(model) {
            Some(q) => q.observe(held),
            None => {
                let mut q = ModelQueue::default();
                q.observe(held);
                queues.models.insert(model.to_owned(), q);
            }
        }
        if !self.hand_off(&mut queues, node) {
            node.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Gives `node`'s free slots to the requests waiting for them (a node that just connected or
    /// bonded).
    fn offer_slots(self: &Arc<Self>, node: &Arc<NodeHandle>) {
        let Ok(mut queues) = self.queues.lock() else {
            return;
        };
        while node.try_reserve() {
            if !self.hand_off(&mut queues, node) {
                node.in_flight.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }

    /// Hands one slot of `node`, already claimed, to the request that has waited longest among
    /// the next in line of each of its models' queues; false when none waits that it can run.
    fn hand_off(self: &Arc<Self>, queues: &mut Queues, node: &Arc<NodeHandle>) -> bool {
        if !self.eligible(node) {
            return false;
        }
        loop {
            let next = node
                .models
                .iter()
                .filter_map(|m| {
                    let q = queues.models.get(&m.name)?;
                    let fits = |w: &Waiter| w.exclude != Some(node.id) && node.can_run(&w.need(&m.name));
                    let (seq, since) = q.next(fits)?;
                    Some((since, seq, m.name.as_str()))
                })
                .min();
            let Some((_, seq, model)) = next else {
                return false;
            };
            let Some(waiter) = queues.models.get_mut(model).and_then(|q| q.serve(seq)) else {
                return false;
            };
            match waiter.tx.send(Lease::claimed(self, node, model)) {
                Ok(()) => return true,
                // Its request went away meanwhile: the slot goes on to the next.
                Err(mut lease) => lease.armed = false,
            }
        }
    }

    /// Leases a free slot on a node that can run `need` now, avoiding `exclude`, without waiting.
    pub fn pick(self: &Arc<Self>, need: &Need<'_>, exclude: Option<NodeKeyId>) -> Result<Lease, PickError> {
        let _queues = self.queues.lock();
        self.pick_now(need, exclude)
    }

    /// Leases a free slot on node `id` for `need` now (a guardian's probe of that node), without
    /// waiting: `NoCapacity` when its slots are all taken.
    pub fn pick_on(self: &Arc<Self>, need: &Need<'_>, id: NodeKeyId) -> Result<Lease, PickError> {
        let _queues = self.queues.lock();
        let node = self
            .get(&id)
            .filter(|n| n.can_run(need) && self.probeable(n))
            .ok_or(PickError::NotOnNode(id))?;
        if node.try_reserve() {
            Ok(Lease::claimed(self, &node, need.model))
        } else {
            Err(PickError::NoCapacity)
        }
    }

    /// [`Self::pick`] under the queues' lock.
    fn pick_now(self: &Arc<Self>, need: &Need<'_>, exclude: Option<NodeKeyId>) -> Result<Lease, PickError> {
        let model = need.model;
        let candidates: Vec<Arc<NodeHandle>> = self
            .connected()
            .into_iter()
            .filter(|n| n.can_run(need) && Some(n.id) != exclude && n.in_flight() < n.max_concurrency)
            .filter(|n| !self.is_suspended(&n.id))
            .filter(|n| self.is_bonded(&n.id))
            // Below the floor: only guardians' probes.
            .filter(|n| self.reputation.above_floor(&n.id))
            .collect();
        if candidates.is_empty() {
            let any_size = Need {
                frame_bytes: 0,
                ..*need
            };
            let serving: Vec<Arc<NodeHandle>> = self
                .connected()
                .into_iter()
                .filter(|n| n.can_run(&any_size))
                .collect();
            if !serving.is_empty() && !serving.iter().any(|n| self.is_bonded(&n.id)) {
                return Err(PickError::Unbonded { min: self.min_bond() });
            }
            let limit = self
                .connected()
                .iter()
                .filter(|n| n.can_run(&any_size))
                .map(|n| n.limits.max_frame_bytes)
                .max();
            if let Some(limit) = limit.filter(|l| need.frame_bytes >= *l) {
                return Err(PickError::FrameTooLarge { limit });
            }
            return Err(if self.knows_model(model) {
                PickError::NoCapacity
            } else {
                PickError::UnknownModel
            });
        }
        let score = |n: &NodeHandle| self.reputation.score_of(&n.id);
        let weights: Vec<f64> = candidates
            .iter()
            .map(|n| {
                let free = 1.0 - f64::from(n.in_flight()) / f64::from(n.max_concurrency.max(1));
                let warm = if n.is_ready(model) { WARM_WEIGHT } else { 1.0 };
                score(n) * free.max(0.0) * warm
            })
            .collect();
        // Try one drawn by weight, then everyone in order, until a slot is claimed.
        let first = weighted_index(&weights, self.random());
        let order = std::iter::once(first).chain((0..candidates.len()).filter(|&i| i != first));
        for i in order {
            let node = &candidates[i];
            if node.try_reserve() {
                return Ok(Lease::claimed(self, node, model));
            }
        }
        Err(PickError::NoCapacity)
    }
}

/// The index drawn from `weights` (each one's chance in proportion to it) by the random `draw`;
/// uniform when no weight is positive.
fn weighted_index(weights: &[f64], draw: u64) -> usize {
    let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    if !total.is_finite() || total <= 0.0 {
        return (draw % weights.len().max(1) as u64) as usize;
    }
    // 53 random bits as a fraction of the total.
    let mut at = (draw >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (i, w) in weights.iter().enumerate() {
        if w.is_finite() && *w > 0.0 {
            if at < *w {
                return i;
            }
            at -= w;
        }
    }
    weights
        .iter()
        .rposition(|w| w.is_finite() && *w > 0.0)
        .unwrap_or(0)
}

/// A request's place in its model's queue, given up when dropped.
struct Queued<'a> {
    nodes: &'a Nodes,
    model: &'a str,
    seq: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        // A model's queue stays (with its service time) once made: only served models get one.
        if let Ok(mut queues) = self.nodes.queues.lock() {
            if let Some(q) = queues.models.get_mut(self.model) {
                q.remove(self.seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacknet_protocol::SecretKey;

    fn node(nodes: &Arc<Nodes>, max_frame_bytes: u64) -> Arc<NodeHandle> {
        node_with(nodes, max_frame_bytes, 4)
    }

    fn node_with(nodes: &Arc<Nodes>, max_frame_bytes: u64, slots: u32) -> Arc<NodeHandle> {
        let (outbox, _) = mpsc::channel(1);
        let offer = ModelOffer {
            name: "m".into(),
            workloads: vec![Workload::Chat],
            backend: "test".into(),
            model_sha256: None,
            tool: None,
        };
        let limits = Limits {
            max_frame_bytes,
            ..Limits::OURS
        };
        let handle = Arc::new(NodeHandle::new(
            SecretKey::generate().public_key(),
            vec![offer],
            slots,
            limits,
            nodes.next_conn_id(),
            outbox,
        ));
        nodes.register(handle.clone());
        handle
    }

    fn need(frame_bytes: u64) -> Need<'static> {
        Need {
            model: "m",
            workload: Workload::Chat,
            file_bytes: 0,
            frame_bytes,
        }
    }

    #[test]
    fn only_a_node_with_the_minimum_bond_is_picked() {
        let nodes = Arc::new(Nodes::default());
        nodes.set_min_bond(Amount::from_micros(1_000));
        let poor = node(&nodes, 10_000);
        nodes.set_bond(poor.id, Amount::from_micros(999));
        assert_eq!(
            nodes.pick(&need(10), None).err(),
            Some(PickError::Unbonded {
                min: Amount::from_micros(1_000)
            })
        );
        let rich = node(&nodes, 10_000);
        nodes.set_bond(rich.id, Amount::from_micros(1_000));
        for _ in 0..8 {
            assert_eq!(nodes.pick(&need(10), None).unwrap().node.id, rich.id);
        }
        nodes.set_min_bond(Amount::ZERO);
        assert!(nodes
            .pick(&need(10), Some(rich.id))
            .is_ok_and(|l| l.node.id == poor.id));
    }

    #[test]
    fn a_task_goes_to_a_node_whose_frame_limit_fits_it_or_nowhere() {
        let nodes = Arc::new(Nodes::default());
        let small = node(&nodes, 1_000);
        for _ in 0..4 {
            let lease = nodes.pick(&need(5_000), None);
            assert_eq!(lease.err(), Some(PickError::FrameTooLarge { limit: 1_000 }));
        }
        let big = node(&nodes, 10_000);
        for _ in 0..4 {
            let lease = nodes.pick(&need(5_000), None).unwrap();
            assert_eq!(lease.node.id, big.id);
        }
        assert!(nodes
            .pick(&need(10), Some(big.id))
            .is_ok_and(|l| l.node.id == small.id));
    }

    fn stack(n: u8) -> StackId {
        StackId::from_digest([n; 16])
    }

    fn soon(ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_waiter_not_back_to_the_node() {
        let nodes = Arc::new(Nodes::default());
        let busy = node_with(&nodes, 10_000, 1);
        let held = nodes.lease(&need(10), None, stack(1), soon(1_000)).await.unwrap();
        let waiter = {
            let nodes = nodes.clone();
            tokio::spawn(async move { nodes.lease(&need(10), None, stack(2), soon(60_000)).await })
        };
        while nodes.waiting("m") == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        // Handed over under the lock: the slot was never free for a newcomer to take.
        assert_eq!(busy.in_flight(), 1);
        assert_eq!(nodes.pick(&need(10), None).err(), Some(PickError::NoCapacity));
        let lease = waiter.await.unwrap().unwrap();
        assert_eq!(lease.node.id, busy.id);
        drop(lease);
        assert_eq!(busy.in_flight(), 0);
        assert_eq!(nodes.waiting("m"), 0);
    }

    #[tokio::test]
    async fn a_waiter_past_its_deadline_leaves_with_a_queue_timeout() {
        let nodes = Arc::new(Nodes::default());
        let busy = node_with(&nodes, 10_000, 1);
        let _held = nodes.lease(&need(10), None, stack(1), soon(1_000)).await.unwrap();
        match nodes.lease(&need(10), None, stack(1), soon(20)).await.err() {
            Some(PickError::QueueTimeout { waited, wait }) => {
                assert!(waited >= Duration::from_millis(20), "{waited:?}");
                assert!(wait > Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(nodes.waiting("m"), 0);
        assert_eq!(busy.in_flight(), 1);
    }

    #[tokio::test]
    async fn a_queue_at_its_bound_refuses_and_a_node_that_connects_serves_the_waiters() {
        let nodes = Arc::new(Nodes::default());
        nodes.set_max_queued(1);
        let first = node_with(&nodes, 10_000, 1);
        let _held = nodes
            .lease(&need(10), None, stack(1), soon(60_000))
            .await
            .unwrap();
        let waiter = {
            let nodes = nodes.clone();
            tokio::spawn(async move { nodes.lease(&need(10), None, stack(1), soon(60_000)).await })
        };
        while nodes.waiting("m") == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            nodes.lease(&need(10), None, stack(2), soon(60_000)).await,
            Err(PickError::QueueFull { waiting: 1, .. })
        ));
        // A second node connecting takes the waiter at once.
        let second = node_with(&nodes, 10_000, 1);
        assert_eq!(waiter.await.unwrap().unwrap().node.id, second.id);
        assert_eq!(first.in_flight(), 1);
    }

    /// A score of `q`, all of it quality.
    fn scored(q: f64) -> crate::reputation::Score {
        crate::reputation::Score {
            score: q,
            quality: q,
            latency: 1.0,
            good: 0.0,
            bad: 0.0,
            ttft_ms: None,
        }
    }

    #[test]
    fn a_slow_node_is_weighed_down_but_never_shut_out_for_its_speed() {
        let nodes = Arc::new(Nodes::default());
        let slow = node(&nodes, 10_000);
        let s = crate::reputation::Score {
            latency: 0.05,
            score: 0.045,
            ..scored(0.9)
        };
        nodes.reputation.set(slow.id, s);
        assert!(nodes.pick(&need(10), None).is_ok_and(|l| l.node.id == slow.id));
    }

    #[test]
    fn routing_follows_reputation_and_warmth_and_gives_a_node_below_the_floor_only_probes() {
        let nodes = Arc::new(Nodes::default());
        let (good, poor) = (node(&nodes, 10_000), node(&nodes, 10_000));
        nodes.reputation.set(good.id, scored(0.9));
        nodes.reputation.set(poor.id, scored(0.3));
        let share = |n: &Arc<NodeHandle>| {
            (0..4_000)
                .filter(|_| nodes.pick(&need(10), None).unwrap().node.id == n.id)
                .count()
        };
        // 0.9 : 0.3, so 3/4 of the tasks, with room for chance.
        let to_good = share(&good);
        assert!((2_800..3_200).contains(&to_good), "{to_good}");
        // Warm on the poor node: 0.9 : 0.45.
        poor.set_ready(&[ModelReady {
            name: "m".into(),
            since: Timestamp::now(),
        }]);
        poor.set_ready(&[
            ModelReady {
                name: "m".into(),
                since: Timestamp::now(),
            },
            ModelReady {
                name: "not offered".into(),
                since: Timestamp::now(),
            },
        ]);
        assert_eq!(poor.ready_models(), vec!["m".to_owned()]);
        let to_good = share(&good);
        assert!((2_470..2_870).contains(&to_good), "{to_good}");
        // Below the floor: no client task, even alone; a guardian's probe still reaches it.
        nodes.reputation.set(poor.id, scored(0.1));
        assert_eq!(share(&good), 4_000);
        assert_eq!(
            nodes.pick(&need(10), Some(good.id)).err(),
            Some(PickError::NoCapacity)
        );
        assert!(nodes
            .pick_on(&need(10), poor.id)
            .is_ok_and(|l| l.node.id == poor.id));
    }

    #[test]
    fn a_weighted_draw_never_picks_a_zero_weight_and_survives_none_positive() {
        for draw in [0, 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(weighted_index(&[0.0, 1.0, 0.0], draw), 1);
            assert!(weighted_index(&[0.0, 0.0], draw) < 2);
            assert!(weighted_index(&[f64::NAN, 2.0], draw) == 1);
        }
    }

    #[tokio::test]
    async fn a_slot_is_not_handed_to_a_waiter_that_excluded_its_node() {
        let nodes = Arc::new(Nodes::default());
        let a = node_with(&nodes, 10_000, 1);
        let b = node_with(&nodes, 10_000, 1);
        let on_a = nodes.pick(&need(10), Some(b.id)).unwrap();
        let on_b = nodes.pick(&need(10), Some(a.id)).unwrap();
        let waiter = {
            let nodes = nodes.clone();
            let not_a = a.id;
            tokio::spawn(async move { nodes.lease(&need(10), Some(not_a), stack(1), soon(60_000)).await })
        };
        while nodes.waiting("m") == 0 {
            tokio::task::yield_now().await;
        }
        drop(on_a);
        assert_eq!(a.in_flight(), 0, "a's slot is free: the waiter refused a");
        assert_eq!(nodes.waiting("m"), 1);
        drop(on_b);
        assert_eq!(waiter.await.unwrap().unwrap().node.id, b.id);
    }
}
