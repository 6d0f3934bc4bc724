//! Stack API keys: `sk_` + 48 hex characters, shown once, stored as SHA-256. Lookups come from an
//! in-memory map kept in step with the store, so authenticating never touches the database.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::http::HeaderMap;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use stacknet_protocol::StackId;

use crate::error::ApiError;
use crate::store::{ApiKeyRecord, KeyRole};

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

/// Who a request comes from: a live API key's Stack, role and listed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub stack: StackId,
    pub role: KeyRole,
    /// The key's prefix as listed (what an injection's `keys` names it by).
    pub prefix: String,
}

impl Caller {
    /// Refused (403) unless the key is its Stack's `owner` key.
    pub fn owner(self) -> Result<Self, ApiError> {
        match self.role {
            KeyRole::Owner => Ok(self),
            KeyRole::Client => Err(ApiError::Forbidden(
                "this needs an owner API key of the Stack; a client key only makes requests".to_owned(),
            )),
        }
    }
}

#[derive(Debug, Default)]
pub struct ApiKeys {
    by_hash: RwLock<HashMap<[u8; 32], Caller>>,
}

impl ApiKeys {
    pub fn insert(&self, record: &ApiKeyRecord) {
        if let Ok(mut map) = self.by_hash.write() {
            map.insert(record.hash, caller_of(record));
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
                    map.insert(key.hash, caller_of(key));
                }
            }
        }
    }

    /// The Stack a request's `Authorization: Bearer sk_...` belongs to.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<StackId, ApiError> {
        Ok(self.caller(headers)?.stack)
    }

    /// Who a request's `Authorization: Bearer sk_...` is.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let key = bearer(headers).ok_or(ApiError::MissingKey)?;
        self.caller_of(key).ok_or(ApiError::InvalidKey)
    }

    /// The Stack an API key belongs to, if it is a live key.
    pub fn stack_of(&self, key: &str) -> Option<StackId> {
        Some(self.caller_of(key)?.stack)
    }

    fn caller_of(&self, key: &str) -> Option<Caller> {
        self.by_hash.read().ok()?.get(&hash_key(key)).cloned()
    }
}

fn caller_of(record: &ApiKeyRecord) -> Caller {
    Caller {
        stack: record.stack,
        role: record.role,
        prefix: record.prefix.clone(),
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
