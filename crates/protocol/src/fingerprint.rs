//! Fingerprints and the attribution block every response carries.
//!
//! `F = {stack, node_key, skills (sorted), injections (sorted), timestamp, contract}`; the node signs
//! `stacknet/fingerprint/v1\n` + JCS(F), and the fingerprint id is `fp_` + hex of the first 16 bytes of
//! the SHA-256 of those same bytes. The attribution is F plus `signed_by` and `signature`, so anyone can
//! check a response offline: the key hashes to `node_key`, the signature holds, the id matches.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::contract::is_sorted_unique;
use crate::ids::{ContractId, FingerprintId, InjectionId, NodeKeyId, SkillId, StackId};
use crate::keys::{PublicKey, SecretKey, Signature};
use crate::signing::{signing_bytes, Domain, SignError, SignedBody};
use crate::values::Timestamp;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FingerprintError {
    #[error("{field} must be sorted and without duplicates")]
    NotSorted { field: &'static str },
    #[error("signed_by key hashes to {actual}, but node_key says {claimed}")]
    KeyMismatch { claimed: NodeKeyId, actual: NodeKeyId },
    #[error("fingerprint id is {actual}, but the response says {claimed}")]
    IdMismatch {
        claimed: FingerprintId,
        actual: FingerprintId,
    },
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// The fingerprint object F.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub stack: StackId,
    pub node_key: NodeKeyId,
    pub skills: Vec<SkillId>,
    pub injections: Vec<InjectionId>,
    pub timestamp: Timestamp,
    pub contract: ContractId,
}

impl SignedBody for Fingerprint {
    const DOMAIN: Domain = Domain::Fingerprint;
}

impl Fingerprint {
    /// Builds F, sorting and de-duplicating skills and injections.
    pub fn new(
        stack: StackId,
        node_key: NodeKeyId,
        mut skills: Vec<SkillId>,
        mut injections: Vec<InjectionId>,
        timestamp: Timestamp,
        contract: ContractId,
    ) -> Self {
        skills.sort();
        skills.dedup();
        injections.sort();
        injections.dedup();
        Self {
            stack,
            node_key,
            skills,
            injections,
            timestamp,
            contract,
        }
    }

    pub fn signing_bytes(&self) -> Result<Vec<u8>, SignError> {
        signing_bytes(Domain::Fingerprint, self)
    }

    pub fn id(&self) -> Result<FingerprintId, SignError> {
        Ok(FingerprintId::derive(&self.signing_bytes()?))
    }

    /// Signs F with the node's key, giving the attribution block.
    pub fn sign(self, key: &SecretKey) -> Result<Attribution, SignError> {
        let signature = key.sign(&self.signing_bytes()?);
        Ok(Attribution {
            fingerprint: self,
            signed_by: SignedBy(key.public_key()),
            signature,
        })
    }
}

/// `ed25519:<public key hex>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignedBy(pub PublicKey);

impl fmt::Debug for SignedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_tagged())
    }
}

impl Serialize for SignedBy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_tagged())
    }
}

impl<'de> Deserialize<'de> for SignedBy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PublicKey::from_tagged(&s)
            .map(SignedBy)
            .map_err(serde::de::Error::custom)
    }
}

/// The attribution block of a response: every field of F, `signed_by` and `signature`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    pub signed_by: SignedBy,
    pub signature: Signature,
}

impl Attribution {
    /// Checks the attribution on its own and returns the fingerprint id it proves. The signer must
    /// be the id's first key (its id is `node_key`); for an id sold since, see [`Self::verify_bound`].
    pub fn verify(&self) -> Result<FingerprintId, FingerprintError> {
        self.verify_bound(None)
    }

    /// As [`Self::verify`], with the key that operated `node_key` when the task ran (from the id's
    /// bindings, `crate::binding::key_in_force`); `None`: the id's first key.
    pub fn verify_bound(
        &self,
        key_in_force: Option<&crate::keys::PublicKey>,
    ) -> Result<FingerprintId, FingerprintError> {
        let f = &self.fingerprint;
        if !is_sorted_unique(&f.skills) {
            return Err(FingerprintError::NotSorted { field: "skills" });
        }
        if !is_sorted_unique(&f.injections) {
            return Err(FingerprintError::NotSorted { field: "injections" });
        }
        let in_force = match key_in_force {
            Some(key) => *key == self.signed_by.0,
            None => self.signed_by.0.node_key_id() == f.node_key,
        };
        if !in_force {
            return Err(FingerprintError::KeyMismatch {
                claimed: f.node_key,
                actual: self.signed_by.0.node_key_id(),
            });
        }
        let bytes = f.signing_bytes()?;
        self.signed_by
            .0
            .verify(&bytes, &self.signature)
            .map_err(|_| SignError::BadSignature {
                domain: Domain::Fingerprint.tag(),
                key: self.signed_by.0.to_hex(),
            })?;
        Ok(FingerprintId::derive(&bytes))
    }

    /// Checks the attribution and that it proves the fingerprint id a response claims.
    pub fn verify_claim(&self, claimed: FingerprintId) -> Result<(), FingerprintError> {
        self.verify_claim_bound(claimed, None)
    }

    /// As [`Self::verify_claim`], with the key in force (see [`Self::verify_bound`]).
    pub fn verify_claim_bound(
        &self,
        claimed: FingerprintId,
        key_in_force: Option<&crate::keys::PublicKey>,
    ) -> Result<(), FingerprintError> {
        let actual = self.verify_bound(key_in_force)?;
        if actual != claimed {
            return Err(FingerprintError::IdMismatch { claimed, actual });
        }
        Ok(())
    }
}
