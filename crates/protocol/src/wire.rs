//! Hub <-> node messages over the node gateway's WebSocket: one JSON text frame per message,
//! `{"v": 1, "type": "...", ...}`.
//!
//! The handshake: the hub sends `challenge`; the node answers `hello`, a Hello signed by its Node Key
//! that binds the challenge and the hub's key (so it cannot be replayed to another hub or later); the
//! hub answers `welcome` or `error` and closes. Then `task` / `chunk` / `done` / `error` / `cancel`
//! flow, with `heartbeat` both ways. Decoding never panics: any frame that is too large, not JSON, of
//! another version or of an unknown shape gives a [`WireError`].
//!
//! Files (an uploaded image, generated audio) never travel as base64 inside JSON: a task lists its
//! input files as [`Attachment`]s (sha256, size, content type), a node announces each output file
//! with an `output` message, and the bytes follow in binary WebSocket frames ([`FilePart`]), each
//! at most the receiver's `max_frame_bytes`, so no file is bounded by the frame limit. Both sides
//! state their [`Limits`] in the handshake (the node in its Hello, the hub in its Welcome) and never
//! send more than the other accepts.

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
/// The largest file (input or output) of one task, unless the handshake says otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// File bytes per binary frame that senders use (under every receiver's `max_frame_bytes`).
pub const FILE_PART_BYTES: usize = 1024 * 1024;
/// The binary frame header: a version byte, the contract id, the file's sha256, the offset.
pub const FILE_PART_HEADER_BYTES: usize = 1 + 16 + 32 + 8;
/// The version byte that opens every binary frame.
pub const FILE_PART_VERSION: u8 = 1;

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
    #[error("binary frame: {0}")]
    BadFilePart(&'static str),
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
    /// For a tool (a `tool_call` model): what it does and the schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolSpec>,
}

/// The longest description of a tool a node may offer.
pub const MAX_TOOL_DESCRIPTION_BYTES: usize = 2048;
/// The largest input schema of a tool a node may offer (as compact JSON).
pub const MAX_TOOL_SCHEMA_BYTES: usize = 16 * 1024;

/// A tool an operator installed on a node (a tool of an MCP server the node runs in its sandbox),
/// offered as a model of the `tool_call` workload: what the hub lists it with at its MCP endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub description: String,
    /// The JSON Schema of the tool's arguments: an object schema.
    pub input_schema: serde_json::Map<String, Value>,
}

impl ToolSpec {
    /// Why the hub refuses this spec, if it does: a description or schema over its limit, or a
    /// schema that is not an object schema.
    pub fn refusal(&self) -> Option<String> {
        if self.description.len() > MAX_TOOL_DESCRIPTION_BYTES {
            return Some(format!(
                "a tool's description is at most {MAX_TOOL_DESCRIPTION_BYTES} bytes"
            ));
        }
        let schema_bytes = serde_json::to_vec(&self.input_schema).map_or(usize::MAX, |v| v.len());
        if schema_bytes > MAX_TOOL_SCHEMA_BYTES {
            return Some(format!(
                "a tool's input schema is at most {MAX_TOOL_SCHEMA_BYTES} bytes"
            ));
        }
        if self.input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Some("a tool's input schema must be of type \"object\"".to_owned());
        }
        None
    }
}

/// What one side accepts from the other; each side sends no frame and no file larger than the
/// other's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The largest WebSocket message (text or binary) accepted.
    pub max_frame_bytes: u64,
    /// The largest single file of one task accepted; 0: no files at all.
    pub max_file_bytes: u64,
}

impl Limits {
    /// What this implementation accepts.
    pub const OURS: Limits = Limits {
        max_frame_bytes: MAX_FRAME_BYTES as u64,
        max_file_bytes: DEFAULT_MAX_FILE_BYTES,
    };
    /// Assumed for a peer that states no limits (an older node): JSON frames only, no files.
    pub const LEGACY: Limits = Limits {
        max_frame_bytes: MAX_FRAME_BYTES as u64,
        max_file_bytes: 0,
    };

    /// File bytes to put in one binary frame for a receiver with these limits.
    pub fn part_bytes(&self) -> usize {
        let room = usize::try_from(self.max_frame_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(FILE_PART_HEADER_BYTES);
        room.clamp(1, FILE_PART_BYTES)
    }
}

/// A file that travels with a task (input) or as its output, in binary frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub sha256: Sha256Digest,
    pub size: u64,
    /// A MIME type such as `image/png`.
    pub content_type: String,
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
    /// What the node accepts; absent: [`Limits::LEGACY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
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

impl ErrorCode {
    /// The code as it is spelled on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::BadContract => "bad_contract",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::UpstreamFailed => "upstream_failed",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ContextLengthExceeded => "context_length_exceeded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
        }
    }
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

/// A task: the signed contract and the request to run, as the hub forwards it (OpenAI request JSON;
/// for a multipart upload, its fields, with each file replaced by its [`Attachment`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub contract: Signed<PromptContract>,
    pub request: Value,
    /// Input files, in the order their bytes follow in binary frames after this frame.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
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
        /// What the hub accepts from this node; absent: [`Limits::LEGACY`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<Limits>,
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
    /// An output file of the task; its bytes follow in binary frames, before `done`.
    Output {
        contract: ContractId,
        file: Attachment,
    },
    /// The task finished; the paperwork is already durable in the node's wallet.
    Done {
        contract: ContractId,
        paperwork: Box<Signed<Paperwork>>,
        /// The generated token ids the paperwork's commitment hashes (built-in text backends), so the
        /// hub can keep them for validators.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_tokens: Option<Vec<u32>>,
    },
    Heartbeat {
        at: Timestamp,
        active: u32,
        /// The models loaded and ready to answer now, each with when it became ready (the node's
        /// clock). The hub counts a task as warm, and pays the warm bonus on it, only when a
        /// heartbeat it received before assigning the task named the task's model (see
        /// [`MAX_READY_MODELS`]); a model left out is cold from then on.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ready: Vec<ModelReady>,
    },
    Error(ErrorFrame),
}

/// Most models one heartbeat may name as ready; the hub ignores the rest.
pub const MAX_READY_MODELS: usize = 256;

/// A model a node has loaded and ready to answer, in a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelReady {
    pub name: String,
    /// When it became ready, by the node's clock (shown, never trusted: the hub goes by when it
    /// received the heartbeat).
    pub since: Timestamp,
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

/// The contract id of a text frame that [`decode`] refused, when the frame is a `task` whose
/// `contract.id` can still be read (a signed contract is its body's fields with `signature` beside
/// them): a node answers such a task with an `error` frame instead of dropping it, so the hub frees
/// the slot it holds. Read leniently, into just those fields: everything else (the request above
/// all, which may be what broke the decode, too deep for a `Value`) is skipped unparsed, and
/// serde_json skips without a depth limit. Never panics.
pub fn undecodable_task(frame: &[u8]) -> Option<ContractId> {
    #[derive(Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        contract: Contract,
    }
    #[derive(Deserialize)]
    struct Contract {
        id: ContractId,
    }
    let frame: Frame = serde_json::from_slice(frame).ok()?;
    (frame.kind == "task").then_some(frame.contract.id)
}

/// One binary frame: a piece of a file that belongs to a task. Layout: the version byte
/// [`FILE_PART_VERSION`], the contract id (16 bytes), the file's sha256 (32 bytes), the offset of
/// this piece in the file (8 bytes, big-endian), then the bytes. Pieces of a file arrive in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePart<'a> {
    pub contract: ContractId,
    pub sha256: Sha256Digest,
    pub offset: u64,
    pub data: &'a [u8],
}

impl FilePart<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FILE_PART_HEADER_BYTES + self.data.len());
        out.push(FILE_PART_VERSION);
        out.extend_from_slice(self.contract.as_bytes());
        out.extend_from_slice(&self.sha256.0);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(self.data);
        out
    }
}

/// Splits a binary frame into its header and bytes; never panics.
pub fn decode_file_part(frame: &[u8]) -> Result<FilePart<'_>, WireError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge {
            len: frame.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    if frame.len() < FILE_PART_HEADER_BYTES {
        return Err(WireError::BadFilePart("shorter than its header"));
    }
    let (header, data) = frame.split_at(FILE_PART_HEADER_BYTES);
    if header[0] != FILE_PART_VERSION {
        return Err(WireError::BadFilePart("unknown version byte"));
    }
    let mut contract = [0u8; 16];
    contract.copy_from_slice(&header[1..17]);
    let mut sha = [0u8; 32];
    sha.copy_from_slice(&header[17..49]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&header[49..57]);
    if data.is_empty() {
        return Err(WireError::BadFilePart("no bytes"));
    }
    Ok(FilePart {
        contract: ContractId::from_digest(contract),
        sha256: Sha256Digest(sha),
        offset: u64::from_be_bytes(offset),
        data,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod error_code_tests {
    use super::ErrorCode;

    #[test]
    fn error_codes_name_themselves_as_on_the_wire() {
        let all = [
            ErrorCode::UnsupportedVersion,
            ErrorCode::MalformedFrame,
            ErrorCode::Unauthenticated,
            ErrorCode::BadContract,
            ErrorCode::Overloaded,
            ErrorCode::UnknownModel,
            ErrorCode::UpstreamFailed,
            ErrorCode::InvalidRequest,
            ErrorCode::ContextLengthExceeded,
            ErrorCode::Timeout,
            ErrorCode::Cancelled,
            ErrorCode::Internal,
        ];
        for code in all {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
