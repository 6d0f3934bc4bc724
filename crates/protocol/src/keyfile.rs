//! The Node Key file format (pure encode/decode; reading and writing files with the right mode is the
//! caller's job, see the CLI's key store).
//!
//! A small JSON document, so that an operator can read which key a file holds without a tool:
//! `{"type":"stacknet-node-key","version":1,"node_key":"nk_...","public_key":"<hex>","secret_key":"<hex seed>"}`.
//! On load, the public key and id must match the secret, so a corrupted or hand-edited file is caught.

use serde::{Deserialize, Serialize};

use crate::ids::NodeKeyId;
use crate::keys::{decode_hex_array, PublicKey, SecretKey};

/// The `type` field of a key file.
pub const KEY_FILE_TYPE: &str = "stacknet-node-key";
/// The `version` field this crate writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;
/// A key file is a few hundred bytes; anything much larger is not one.
pub const MAX_KEY_FILE_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("key file is {0} bytes, larger than any key file")]
    TooLarge(usize),
    #[error("key file is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("key file type is {0:?}, expected \"stacknet-node-key\"")]
    WrongType(String),
    #[error("key file version {0} is not supported (expected 1)")]
    UnsupportedVersion(u32),
    #[error("secret_key is not 64 lowercase hex characters")]
    BadSecret,
    #[error("public_key in the file does not match its secret key")]
    PublicKeyMismatch,
    #[error("node_key in the file does not match its secret key")]
    NodeKeyMismatch,
    #[error("the key derived from the secret is refused: {0}")]
    Key(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    node_key: String,
    public_key: String,
    secret_key: String,
}

/// The text of a key file for `key` (ends with a newline).
pub fn encode(key: &SecretKey) -> String {
    let public = key.public_key();
    let file = KeyFileJson {
        kind: KEY_FILE_TYPE.to_owned(),
        version: KEY_FILE_VERSION,
        node_key: public.node_key_id().to_string(),
        public_key: public.to_hex(),
        secret_key: hex::encode(key.seed()),
    };
    // Serialising a struct of strings cannot fail.
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// Parses a key file and checks that it is self-consistent.
pub fn decode(bytes: &[u8]) -> Result<SecretKey, KeyFileError> {
    if bytes.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge(bytes.len()));
    }
    let file: KeyFileJson =
        serde_json::from_slice(bytes).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    if file.kind != KEY_FILE_TYPE {
        return Err(KeyFileError::WrongType(file.kind.chars().take(40).collect()));
    }
    if file.version != KEY_FILE_VERSION {
        return Err(KeyFileError::UnsupportedVersion(file.version));
    }
    let seed = decode_hex_array::<32>(&file.secret_key).map_err(|_| KeyFileError::BadSecret)?;
    let key = SecretKey::from_seed(&seed);
    let public = key.public_key();
    // Refuse a seed whose key is weak, however unlikely, with the same rule as everywhere else.
    PublicKey::from_bytes(public.as_bytes()).map_err(|e| KeyFileError::Key(e.to_string()))?;
    if file.public_key != public.to_hex() {
        return Err(KeyFileError::PublicKeyMismatch);
    }
    if file.node_key.parse::<NodeKeyId>().ok() != Some(public.node_key_id()) {
        return Err(KeyFileError::NodeKeyMismatch);
    }
    Ok(key)
}
