//! Typed identifiers: a type prefix and 32 lowercase hex characters (16 bytes), parsed once at the edge.
//!
//! Random ids (`stk_`, `usr_`, `ct_`, `skill_`, `inj_`) come from the OS random number generator;
//! derived ids (`nk_`, `fp_`, `pw_`, `att_`) are the first 16 bytes of a SHA-256, so anyone can recompute
//! them from what they name.

use std::fmt;
use std::str::FromStr;

use rand_core::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Bytes of entropy or digest behind every id.
pub const ID_LEN_BYTES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("expected an id starting with {expected:?}, got {got:?}")]
    WrongPrefix { expected: &'static str, got: String },
    #[error("id {got:?} must be {expected:?} followed by 32 lowercase hex characters")]
    BadBody { expected: &'static str, got: String },
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; ID_LEN_BYTES]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn random() -> Self {
                let mut bytes = [0u8; ID_LEN_BYTES];
                rand_core::OsRng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// The id whose body is these 16 bytes (the first half of a SHA-256 for derived ids).
            pub fn from_digest(bytes: [u8; ID_LEN_BYTES]) -> Self {
                Self(bytes)
            }

            /// The id derived from arbitrary bytes: the first 16 bytes of their SHA-256.
            pub fn derive(data: &[u8]) -> Self {
                let digest = Sha256::digest(data);
                let mut bytes = [0u8; ID_LEN_BYTES];
                bytes.copy_from_slice(&digest[..ID_LEN_BYTES]);
                Self(bytes)
            }

            pub fn as_bytes(&self) -> &[u8; ID_LEN_BYTES] {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let body = s.strip_prefix($prefix).ok_or_else(|| IdError::WrongPrefix {
                    expected: $prefix,
                    got: truncate(s),
                })?;
                crate::keys::decode_hex_array::<ID_LEN_BYTES>(body)
                    .map(Self)
                    .map_err(|_| IdError::BadBody { expected: $prefix, got: truncate(s) })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($prefix)?;
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Error messages quote what they were given, but never an unbounded amount of it.
fn truncate(s: &str) -> String {
    const MAX_QUOTED_CHARS: usize = 80;
    s.chars().take(MAX_QUOTED_CHARS).collect()
}

typed_id!(
    /// A Stack (an app that holds API keys): `stk_`.
    StackId, "stk_"
);
typed_id!(
    /// An end user of a Stack: `usr_`.
    UserId, "usr_"
);
typed_id!(
    /// A Node Key: `nk_` + hex of the first 16 bytes of SHA-256(public key).
    NodeKeyId, "nk_"
);
typed_id!(
    /// A Prompt Contract: `ct_`, random.
    ContractId, "ct_"
);
typed_id!(
    /// A Paperwork: `pw_` + first 16 bytes of SHA-256 of its signed bytes.
    PaperworkId, "pw_"
);
typed_id!(
    /// A Fingerprint: `fp_` + first 16 bytes of SHA-256 of its signed bytes.
    FingerprintId, "fp_"
);
typed_id!(
    /// A skill whose creator is credited when it is used: `skill_`.
    SkillId, "skill_"
);
typed_id!(
    /// A Stack injection (system prompt or tools): `inj_`.
    InjectionId, "inj_"
);
typed_id!(
    /// An Attestation: `att_` + first 16 bytes of SHA-256 of its signed bytes.
    AttestationId, "att_"
);
