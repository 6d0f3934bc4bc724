//! Stack API keys: `sk_` + 48 hex characters, shown once, stored as SHA-256. Lookups come from an
//! in-memory map kept in step with the store, so authenticating never touches the database.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::http::HeaderMap;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use stacknet_protocol::StackId;

use crate::error::ApiError;
use crate::store::ApiKeyRecord;

/// Random bytes in a key: 192 bits, so a plain SHA-256 is enough to store it (no password hashing needed).
pub const API_KEY_RANDOM_BYTES: usize = 24;
pub const API_KEY_PREFIX: &str = "sk_";
/// The part of a key kept in clear to recognise it in listings.
pub const API_KEY_SHOWN_CHARS: usize = 10;

pub fn new_api_key() -> String {
    let mut bytes = [0u8; API_KEY_RANDOM_BYTES];
    rand_core::OsRng.fill_bytes(&mut bytes);
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[derive(Debug, Default)]
pub struct ApiKeys {
    by_hash: RwLock<HashMap<[u8; 32], StackId>>,
}

impl ApiKeys {
    pub fn insert(&self, hash: [u8; 32], stack: StackId) {
        if let Ok(mut map) = self.by_hash.write() {
            map.insert(hash, stack);
        }
    }

    /// Forgets a key: it authenticates nothing from now on.
    pub fn remove(&self, hash: &[u8; 32]) {
        if let Ok(mut map) = self.by_hash.write() {
            map.remove(hash);
        }
    }

    /// Applies keys as read from the store: live ones become usable, revoked ones are forgotten.
    pub fn apply(&self, keys: &[ApiKeyRecord]) {
        if let Ok(mut map) = self.by_hash.write() {
            for key in keys {
                if key.revoked_at.is_some() {
                    map.remove(&key.hash);
                } else {
                    map.insert(key.hash, key.stack);
                }
            }
        }
    }

    /// The Stack a request's `Authorization: Bearer sk_...` belongs to.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<StackId, ApiError> {
        let key = bearer(headers).ok_or(ApiError::MissingKey)?;
        self.stack_of(key).ok_or(ApiError::InvalidKey)
    }

    /// The Stack an API key belongs to, if it is a live key.
    pub fn stack_of(&self, key: &str) -> Option<StackId> {
        self.by_hash.read().ok()?.get(&hash_key(key)).copied()
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}
