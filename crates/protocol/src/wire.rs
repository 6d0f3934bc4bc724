//! Hub <-> node messages over the node gateway's WebSocket: one JSON text frame per message,
//! `{"v": 1, "type": "...", ...}`.
//!
//! The handshake: the hub sends `challenge`; the node answers `hello`, a Hello signed by its Node Key
//! that binds the challenge and the hub's key (so it cannot be replayed to another hub or later); the
//! hub answers `welcome` or `error` and closes. Then `task` / `chunk` / `done` / `error` / `cancel`
//! flow, with `heartbeat` both ways. Decoding never panics: any frame that is too large, not JSON, of
//! another version or of an unknown shape gives a [`WireError`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::{PromptContract, Workload};
use crate::ids::{ContractId, NodeKeyId};
use crate::keys::PublicKey;
use crate::paperwork::Paperwork;
use crate::signing::{Domain, Signed, SignedBody};
use crate::values::{Nonce, Sha256Digest, Timestamp};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// The largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame is not a JSON object: {0}")]
    NotJson(String),
    #[error("frame has no protocol version field `v`")]
    MissingVersion,
    #[error("unsupported protocol version {got}; this side speaks {supported}")]
    UnsupportedVersion { got: String, supported: u64 },
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl WireError {
    /// The machine-readable code carried in an error frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::MalformedFrame,
        }
    }
}

/// A model a node serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOffer {
    pub name: String,
    pub workloads: Vec<Workload>,
    /// The backend id, as in paperwork.
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<Sha256Digest>,
}

/// The body of a Hello, signed by the Node Key under `stacknet/hello/v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub node_key: PublicKey,
    /// The hub key from the challenge.
    pub hub: PublicKey,
    /// The nonce from the challenge.
    pub challenge: Nonce,
    pub models: Vec<ModelOffer>,
    /// Tasks the node runs at once.
    pub max_concurrency: u32,
    /// The node software, e.g. `stacknet/0.1.0`.
    pub software: String,
    pub created_at: Timestamp,
}

impl SignedBody for Hello {
    const DOMAIN: Domain = Domain::Hello;
}

/// Error codes carried by error frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnsupportedVersion,
    MalformedFrame,
    Unauthenticated,
    BadContract,
    Overloaded,
    UnknownModel,
    UpstreamFailed,
    InvalidRequest,
    ContextLengthExceeded,
    Timeout,
    Cancelled,
    Internal,
}

/// An error, about one task (`contract` set) or about the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractId>,
    pub code: ErrorCode,
    pub message: String,
}

/// A task: the signed contract and the request to run, as the hub forwards it (OpenAI request JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub contract: Signed<PromptContract>,
    pub request: Value,
}

/// Messages the hub sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HubMessage {
    Challenge {
        nonce: Nonce,
        hub: PublicKey,
    },
    Welcome {
        node_key: NodeKeyId,
        heartbeat_interval_ms: u64,
    },
    Task(Box<Task>),
    Cancel {
        contract: ContractId,
    },
    Heartbeat {
        at: Timestamp,
    },
    Error(ErrorFrame),
}

/// Messages the node sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeMessage {
    Hello(Box<Signed<Hello>>),
    /// A piece of output: an OpenAI streaming chunk (or a whole response for non-streaming workloads).
    Chunk {
        contract: ContractId,
        seq: u64,
        data: Value,
    },
    /// The task finished; the paperwork is already durable in the node's wallet.
    Done {
        contract: ContractId,
        paperwork: Box<Signed<Paperwork>>,
    },
    Heartbeat {
        at: Timestamp,
        active: u32,
    },
    Error(ErrorFrame),
}

/// Encodes a message as a frame with the protocol version.
pub fn encode<M: Serialize>(msg: &M) -> Result<String, WireError> {
    let mut value = serde_json::to_value(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| WireError::Malformed("not an object".to_owned()))?;
    map.insert("v".to_owned(), Value::from(PROTOCOL_VERSION));
    serde_json::to_string(&value).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Decodes one frame; checks size, shape and version before the message itself.
pub fn decode<M: DeserializeOwned>(frame: &[u8]) -> Result<M, WireError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge {
            len: frame.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let value: Value = serde_json::from_slice(frame).map_err(|e| WireError::NotJson(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(WireError::NotJson("top level is not an object".to_owned()));
    };
    match map.remove("v") {
        None => return Err(WireError::MissingVersion),
        Some(v) if v.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            let got: String = v.to_string().chars().take(40).collect();
            return Err(WireError::UnsupportedVersion {
                got,
                supported: PROTOCOL_VERSION,
            });
        }
    }
    M::deserialize(Value::Object(map)).map_err(|e| WireError::Malformed(e.to_string()))
}
