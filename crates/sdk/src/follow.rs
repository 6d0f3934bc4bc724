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
//! Each checkpoint also commits to the hub's Node Key bindings (its `stacknet-bindings` line: how
//! many, and the root of their tree). The same rules hold for them: one count, one root
//! ([`Alarm::BindingsSplitView`]); a larger count must extend the bindings seen before, checked by
//! fetching them and recomputing both roots ([`Alarm::BindingsInconsistent`]).
//!
//! Roots are remembered for the last [`REMEMBERED_SIZES`] sizes seen.

use std::collections::BTreeMap;

use stacknet_api::proof::{bindings_root, checkpoint_bindings, log_origin, open_checkpoint};
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
    #[error("split view: the hub signed two checkpoints of {count} Node Key bindings with different roots {first} and {second}")]
    BindingsSplitView {
        count: u64,
        first: String,
        second: String,
    },
    #[error("the bindings of a checkpoint ({to}) do not extend those of an earlier one ({from}): {reason}")]
    BindingsInconsistent { from: u64, to: u64, reason: String },
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
    /// The bindings' roots seen, by count, and the largest count seen.
    binding_roots: BTreeMap<u64, Hash>,
    bindings: Option<u64>,
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
            binding_roots: BTreeMap::new(),
            bindings: None,
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
        self.check_bindings(&cp).await?;
        self.remember(cp, note);
        Ok(step)
    }

    /// The checkpoint's bindings line against the bindings seen before (see the module documentation).
    async fn check_bindings(&mut self, cp: &Checkpoint) -> Result<(), FollowError> {
        let Some((count, root)) = checkpoint_bindings(cp).map_err(|e| Alarm::BadCheckpoint(e.to_string()))?
        else {
            return Ok(());
        };
        if let Some(seen) = self.binding_roots.get(&count) {
            if *seen != root {
                return Err(Alarm::BindingsSplitView {
                    count,
                    first: hex::encode(seen),
                    second: hex::encode(root),
                }
                .into());
            }
            return Ok(());
        }
        // New: the hub's bindings up to the larger count must give both roots.
        let known = self.bindings.unwrap_or(0);
        let upto = count.max(known);
        let inconsistent = |reason: String| Alarm::BindingsInconsistent {
            from: known.min(count),
            to: upto,
            reason,
        };
        let list = match self.client.bindings(Some(upto)).await {
            Ok(list) => list,
            // A hub that signed a count of bindings it cannot serve.
            Err(Error::Api { message, .. }) => {
                return Err(inconsistent(format!("the hub does not serve them: {message}")).into())
            }
            Err(e) => return Err(e.into()),
        };
        let root_of = |n: u64| {
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(list.len());
            bindings_root(&list[..n]).map_err(|e| inconsistent(e.to_string()))
        };
        if list.len() as u64 != upto {
            return Err(inconsistent(format!("the hub served {} bindings", list.len())).into());
        }
        if root_of(count)? != root {
            return Err(inconsistent("the bindings served do not give the signed root".to_owned()).into());
        }
        if let Some(seen) = self.binding_roots.get(&known) {
            if root_of(known)? != *seen {
                return Err(
                    inconsistent("the bindings seen before are not a prefix of these".to_owned()).into(),
                );
            }
        }
        self.binding_roots.insert(count, root);
        while self.binding_roots.len() > REMEMBERED_SIZES {
            self.binding_roots.pop_first();
        }
        self.bindings = Some(upto.max(count));
        Ok(())
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
