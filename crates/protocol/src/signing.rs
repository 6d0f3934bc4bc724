//! The signing rule: every signed object is signed over `<domain tag>` + `\n` + the canonical JSON
//! (RFC 8785) of the object without its `signature` field.
//!
//! [`Signed<T>`] pairs a body with its signature and is written as one flat JSON object, the body's
//! fields plus `signature`. The signed bytes are recomputed from the *typed* body, and bodies refuse
//! unknown fields, so what gets verified is exactly what the reader understood.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::jcs::{self, JcsError};
use crate::keys::{KeyError, PublicKey, SecretKey, Signature};
use crate::values::Sha256Digest;

/// The name of the field that carries the signature; never part of the signed bytes.
pub const SIGNATURE_FIELD: &str = "signature";

/// What kind of object a signature is for. A signature for one domain never verifies as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    Contract,
    Paperwork,
    Fingerprint,
    Attestation,
    Telemetry,
    Filing,
    Checkpoint,
    Hello,
    NodeRequest,
    FilingVerdict,
    Binding,
}

impl Domain {
    pub const ALL: [Domain; 11] = [
        Domain::Contract,
        Domain::Paperwork,
        Domain::Fingerprint,
        Domain::Attestation,
        Domain::Telemetry,
        Domain::Filing,
        Domain::Checkpoint,
        Domain::Hello,
        Domain::NodeRequest,
        Domain::FilingVerdict,
        Domain::Binding,
    ];

    pub fn tag(&self) -> &'static str {
        match self {
            Domain::Contract => "stacknet/contract/v1",
            Domain::Paperwork => "stacknet/paperwork/v1",
            Domain::Fingerprint => "stacknet/fingerprint/v1",
            Domain::Attestation => "stacknet/attestation/v1",
            Domain::Telemetry => "stacknet/telemetry/v1",
            Domain::Filing => "stacknet/filing/v1",
            Domain::Checkpoint => "stacknet/checkpoint/v1",
            Domain::Hello => "stacknet/hello/v1",
            Domain::NodeRequest => "stacknet/node-request/v1",
            Domain::FilingVerdict => "stacknet/filing-verdict/v1",
            Domain::Binding => "stacknet/binding/v1",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("a signed object must encode as a JSON object")]
    NotAnObject,
    #[error("the body of a signed object must not have a field named `signature`")]
    ReservedField,
    #[error("cannot encode the object: {0}")]
    Encoding(String),
    #[error(transparent)]
    Canonical(#[from] JcsError),
    #[error("{domain} signature does not verify with key {key}")]
    BadSignature { domain: &'static str, key: String },
}

/// A type that is signed under one domain tag.
pub trait SignedBody: Serialize + DeserializeOwned {
    const DOMAIN: Domain;
}

/// `<tag>\n<JCS(body)>`: the exact bytes that get signed.
pub fn signing_bytes<T: Serialize>(domain: Domain, body: &T) -> Result<Vec<u8>, SignError> {
    let value = serde_json::to_value(body).map_err(|e| SignError::Encoding(e.to_string()))?;
    let map = value.as_object().ok_or(SignError::NotAnObject)?;
    if map.contains_key(SIGNATURE_FIELD) {
        return Err(SignError::ReservedField);
    }
    let canonical = jcs::canonicalize_signed(&value)?;
    let tag = domain.tag();
    let mut out = Vec::with_capacity(tag.len() + 1 + canonical.len());
    out.extend_from_slice(tag.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical.as_bytes());
    Ok(out)
}

/// A body with the signature over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<T> {
    pub body: T,
    pub signature: Signature,
}

impl<T: SignedBody> Signed<T> {
    pub fn sign(body: T, key: &SecretKey) -> Result<Self, SignError> {
        let bytes = signing_bytes(T::DOMAIN, &body)?;
        let signature = key.sign(&bytes);
        Ok(Self { body, signature })
    }

    pub fn signing_bytes(&self) -> Result<Vec<u8>, SignError> {
        signing_bytes(T::DOMAIN, &self.body)
    }

    /// SHA-256 of the signed bytes: the object's content hash, from which derived ids are taken.
    pub fn digest(&self) -> Result<Sha256Digest, SignError> {
        Ok(Sha256Digest::of(&self.signing_bytes()?))
    }

    /// Strict verification against `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignError> {
        let bytes = self.signing_bytes()?;
        key.verify(&bytes, &self.signature).map_err(|e| match e {
            KeyError::BadSignature => SignError::BadSignature {
                domain: T::DOMAIN.tag(),
                key: key.to_hex(),
            },
            other => SignError::Encoding(other.to_string()),
        })
    }
}

impl<T: Serialize> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let value = serde_json::to_value(&self.body).map_err(serde::ser::Error::custom)?;
        let Value::Object(mut map) = value else {
            return Err(serde::ser::Error::custom(SignError::NotAnObject));
        };
        map.insert(SIGNATURE_FIELD.to_owned(), Value::String(self.signature.to_hex()));
        map.serialize(s)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Signed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let signature = match map.remove(SIGNATURE_FIELD) {
            Some(Value::String(s)) => Signature::from_hex(&s).map_err(serde::de::Error::custom)?,
            Some(_) => return Err(serde::de::Error::custom("`signature` must be a hex string")),
            None => return Err(serde::de::Error::missing_field(SIGNATURE_FIELD)),
        };
        let body = T::deserialize(Value::Object(map)).map_err(serde::de::Error::custom)?;
        Ok(Self { body, signature })
    }
}
