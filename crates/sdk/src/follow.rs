//! A light node: [`Follower`] follows a hub's signed checkpoints and checks that each one extends
//! what it saw before, so a hub cannot rewrite its paperwork log or show different logs to
//! different people without being caught by anyone who follows it.
//!
//! Each checkpoint it observes (polled from the hub, or handed in from elsewhere: another replica,
//! another follower's gossip) is opened against the pinned hub key and its origin, then:
//! - a checkpoint of a size already seen must have the root seen for it: otherwise the hub signed
//!   two different logs of one size, a split view ([`Alarm::SplitView`]);
//! - a larger one must come with a consistency proof from the last one ([`Alarm::Inconsistent`]
//!   when the hub cannot give one that verifies);
//! - a smaller one than the last must be a prefix of it (a consistency proof from it to the last).
//!
//! Roots are remembered for the last [`REMEMBERED_SIZES`] sizes seen.

use std::collections::BTreeMap;

use stacknet_api::proof::{log_origin, open_checkpoint};
use stacknet_protocol::checkpoint::Checkpoint;
use stacknet_protocol::merkle::Hash;
use stacknet_protocol::PublicKey;

use crate::client::{Client, Error};
use crate::verify;

/// How many sizes' roots a follower remembers.
pub const REMEMBERED_SIZES: usize = 4_096;

/// What observing a checkpoint established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The first checkpoint seen.
    First { size: u64, root: String },
    /// The same checkpoint as the last one.
    Same { size: u64 },
    /// A larger log, proven to extend the last one.
    Grew { from: u64, to: u64, root: String },
    /// An older checkpoint, proven to be a prefix of the last one.
    Older { size: u64 },
}

/// Evidence that the hub misbehaved: two views of its log that cannot both be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Alarm {
    #[error(
        "split view: the hub signed two checkpoints of size {size} with different roots {first} and {second}"
    )]
    SplitView {
        size: u64,
        first: String,
        second: String,
    },
    #[error("the checkpoint of size {to} does not extend the one of size {from}: {reason}")]
    Inconsistent { from: u64, to: u64, reason: String },
    #[error("a checkpoint that does not verify against the hub key: {0}")]
    BadCheckpoint(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The hub misbehaved.
    #[error("ALARM: {0}")]
    Alarm(#[from] Alarm),
    /// The hub could not be asked (down, refusing): nothing is known either way.
    #[error(transparent)]
    Hub(#[from] Error),
}

/// Follows one hub's log; see the module documentation.
#[derive(Debug)]
pub struct Follower {
    client: Client,
    hub_key: PublicKey,
    origin: String,
    /// The largest checkpoint seen, as its note.
    last: Option<(Checkpoint, String)>,
    roots: BTreeMap<u64, Hash>,
}

impl Follower {
    /// A follower of the hub `client` calls, whose checkpoints must be signed by `hub_key`.
    pub fn new(client: Client, hub_key: PublicKey) -> Self {
        Self {
            origin: log_origin(&hub_key),
            client,
            hub_key,
            last: None,
            roots: BTreeMap::new(),
        }
    }

    /// The largest checkpoint seen so far.
    pub fn last(&self) -> Option<&Checkpoint> {
        self.last.as_ref().map(|(c, _)| c)
    }

    /// Asks the hub for its checkpoint and observes it.
    pub async fn poll(&mut self) -> Result<Step, FollowError> {
        let checkpoint = self.client.checkpoint().await?;
        self.observe(&checkpoint.note).await
    }

    /// Observes a checkpoint note from anywhere; asks the hub for the consistency proof it needs.
    pub async fn observe(&mut self, note: &str) -> Result<Step, FollowError> {
        let cp = open_checkpoint(note, &self.origin, &self.hub_key)
            .map_err(|e| Alarm::BadCheckpoint(e.to_string()))?;
        if let Some(root) = self.roots.get(&cp.size) {
            if *root != cp.root {
                return Err(Alarm::SplitView {
                    size: cp.size,
                    first: hex::encode(root),
                    second: hex::encode(cp.root),
                }
                .into());
            }
        }
        let step = match &self.last {
            None => Step::First {
                size: cp.size,
                root: hex::encode(cp.root),
            },
            Some((last, _)) if last.size == cp.size => Step::Same { size: cp.size },
            Some((last, last_note)) if last.size < cp.size => {
                let (from, to) = (last.size, cp.size);
                self.prove(from, last_note, to, note).await?;
                Step::Grew {
                    from,
                    to,
                    root: hex::encode(cp.root),
                }
            }
            Some((last, last_note)) => {
                let (from, to) = (cp.size, last.size);
                self.prove(from, note, to, last_note).await?;
                Step::Older { size: cp.size }
            }
        };
        self.remember(cp, note);
        Ok(step)
    }

    /// Fetches and checks the proof that the log of `new_note` extends that of `old_note`.
    async fn prove(&self, from: u64, old_note: &str, to: u64, new_note: &str) -> Result<(), FollowError> {
        if from == 0 {
            // Every log extends the empty one.
            return Ok(());
        }
        let proof = match self.client.consistency(from, to).await {
            Ok(p) => p,
            // A hub that refuses the proof between two of its own checkpoints cannot show one.
            Err(Error::Api { message, .. }) => {
                return Err(Alarm::Inconsistent {
                    from,
                    to,
                    reason: format!("the hub gives no proof: {message}"),
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        verify::consistency(&proof, old_note, new_note, &self.hub_key).map_err(|e| Alarm::Inconsistent {
            from,
            to,
            reason: e.to_string(),
        })?;
        Ok(())
    }

    fn remember(&mut self, cp: Checkpoint, note: &str) {
        self.roots.insert(cp.size, cp.root);
        while self.roots.len() > REMEMBERED_SIZES {
            self.roots.pop_first();
        }
        if self.last.as_ref().is_none_or(|(last, _)| last.size < cp.size) {
            self.last = Some((cp, note.to_owned()));
        }
    }
}
