//! What every session and task of a node shares, apart from the connect loop that owns it (so
//! sessions and tasks depend on this module, not on `node`).

use std::sync::{Arc, Mutex};

use stacknet_protocol::wire::{ModelOffer, NodeMessage};
use stacknet_protocol::{NodeKeyId, SecretKey, Timestamp};
use tokio::sync::{watch, Semaphore};

use crate::backend::Backend;
use crate::config::NodeOptions;
use crate::detached::Detached;
use crate::metrics::NodeMetrics;
use crate::wallet::Wallet;

/// What every session and task of this node shares.
pub(crate) struct Shared {
    pub key: SecretKey,
    pub id: NodeKeyId,
    pub wallet: Wallet,
    pub backend: Arc<dyn Backend>,
    /// Taken once at startup: what the Hello advertises is exactly what tasks are checked against.
    pub offers: Vec<ModelOffer>,
    pub options: NodeOptions,
    pub gateway_url: String,
    /// One permit per task slot; a running task holds one until it is dropped (finished or aborted).
    pub permits: Arc<Semaphore>,
    /// The models the last heartbeat named as ready, sorted.
    pub announced: Mutex<Vec<String>>,
    /// Long tasks' work, which outlives a lost hub connection (see [`crate::detached`]).
    pub detached: Arc<Detached>,
    /// What `GET /metrics` exports.
    pub metrics: NodeMetrics,
}

impl Shared {
    /// Tasks holding a slot right now.
    pub fn active_tasks(&self) -> u32 {
        let free = u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX);
        self.options.max_concurrency.saturating_sub(free)
    }

    /// A heartbeat: the tasks running and the models ready now (remembered as announced).
    pub fn heartbeat(&self) -> NodeMessage {
        let ready = self.backend.ready();
        let mut names: Vec<String> = ready.iter().map(|r| r.name.clone()).collect();
        names.sort();
        if let Ok(mut announced) = self.announced.lock() {
            *announced = names;
        }
        NodeMessage::Heartbeat {
            at: Timestamp::now(),
            active: self.active_tasks(),
            ready,
        }
    }

    /// Whether the models ready now differ from those the last heartbeat named (a model that just
    /// answered for the first time): worth a heartbeat at once, so the hub sees it warm for the
    /// next task.
    pub fn ready_changed(&self) -> bool {
        let mut names: Vec<String> = self.backend.ready().into_iter().map(|r| r.name).collect();
        names.sort();
        self.announced.lock().map_or(true, |a| *a != names)
    }
}

/// Resolves when shutdown has been requested (or the signal is gone, which means the same).
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
