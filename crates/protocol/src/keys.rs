//! Ed25519 keys: the Node Key and the hub key share these types.
//!
//! Verification is always `verify_strict`, and a public key of small order (a "weak" key, for which
//! a signature can verify for many messages) or with a non-canonical encoding (y >= p, a second
//! spelling of a point) is refused when it is parsed, so it can never enter the system through any edge.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::ids::NodeKeyId;

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN_BYTES: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN_BYTES: usize = 64;
/// Length of an Ed25519 secret seed in bytes.
pub const SECRET_KEY_LEN_BYTES: usize = 32;

/// Why a key or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("expected {expected} hex characters, got {got}")]
    BadHexLength { expected: usize, got: usize },
    #[error("not lowercase hex")]
    NotHex,
    #[error("not a valid Ed25519 public key (not a point on the curve)")]
    InvalidPoint,
    #[error("public key encoding is not canonical: its y-coordinate is not below the field prime")]
    NonCanonical,
    #[error("weak public key refused: it has small order")]
    WeakKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// An Ed25519 secret key. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key for a 32-byte seed (RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; SECRET_KEY_LEN_BYTES]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed. Handle with care: this is the secret.
    pub fn seed(&self) -> [u8; SECRET_KEY_LEN_BYTES] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs raw bytes. Protocol objects are signed through [`crate::signing`], which adds the domain tag.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<redacted>, public {})", self.public_key().to_hex())
    }
}

/// An Ed25519 public key that is known to be a valid point of large order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes, refusing non-canonical encodings, invalid points and weak (small-order) keys.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN_BYTES]) -> Result<Self, KeyError> {
        // The decoder reduces y modulo p, so without this check a point with y < 19 would have a
        // second spelling (y + p), and one key two ids.
        if !has_canonical_y(bytes) {
            return Err(KeyError::NonCanonical);
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self(key))
    }

    /// Parses 64 lowercase hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_hex_array::<PUBLIC_KEY_LEN_BYTES>(s)?)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN_BYTES] {
        self.0.as_bytes()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// `ed25519:<hex>`, the form used in `attribution.signed_by`.
    pub fn to_tagged(&self) -> String {
        format!("ed25519:{}", self.to_hex())
    }

    /// Parses `ed25519:<hex>`.
    pub fn from_tagged(s: &str) -> Result<Self, KeyError> {
        let hex = s.strip_prefix("ed25519:").ok_or(KeyError::NotHex)?;
        Self::from_hex(hex)
    }

    /// The Node Key id: `nk_` + hex of the first 16 bytes of SHA-256(public key).
    pub fn node_key_id(&self) -> NodeKeyId {
        let digest = Sha256::digest(self.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        NodeKeyId::from_digest(first)
    }

    /// Strict verification (RFC 8032 with canonical encodings and no small-order components).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// The Ed25519 field prime p = 2^255 - 19, little-endian, as a y-coordinate is encoded.
const FIELD_PRIME_LE: [u8; PUBLIC_KEY_LEN_BYTES] = {
    let mut p = [0xff; PUBLIC_KEY_LEN_BYTES];
    p[0] = 0xed;
    p[PUBLIC_KEY_LEN_BYTES - 1] = 0x7f;
    p
};

/// Whether the encoded y-coordinate (the top bit, x's sign, masked off) is below p (RFC 8032 5.1.3).
fn has_canonical_y(bytes: &[u8; PUBLIC_KEY_LEN_BYTES]) -> bool {
    let mut y = *bytes;
    y[PUBLIC_KEY_LEN_BYTES - 1] &= 0x7f;
    // Compare as little-endian numbers: from the most significant byte down.
    y.iter().rev().lt(FIELD_PRIME_LE.iter().rev())
}

/// An Ed25519 signature (64 bytes), lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LEN_BYTES]);

impl Signature {
    pub fn from_bytes(bytes: &[u8; SIGNATURE_LEN_BYTES]) -> Self {
        Self(*bytes)
    }

    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN_BYTES] {
        self.0
    }

    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Ok(Self(decode_hex_array::<SIGNATURE_LEN_BYTES>(s)?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Decodes exactly `N` bytes of lowercase hex. Uppercase is refused so that every value has one spelling.
pub fn decode_hex_array<const N: usize>(s: &str) -> Result<[u8; N], KeyError> {
    if s.len() != 2 * N {
        return Err(KeyError::BadHexLength {
            expected: 2 * N,
            got: s.len(),
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(KeyError::NotHex);
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::NotHex)?;
    Ok(out)
}
