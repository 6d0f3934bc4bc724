//! Stacknet protocol: pure types and crypto, no I/O.
//!
//! Layout, bottom up:
//! - [`keys`]: Ed25519 keys (strict verification, weak keys refused), [`keyfile`], their file format,
//!   and `keystore` (feature `fs`), key files on disk.
//! - [`ids`]: typed ids (`stk_`, `nk_`, `pw_`, ...); [`values`]: timestamps, amounts, digests, nonces.
//! - [`jcs`]: RFC 8785 canonical JSON; [`signing`]: the signing rule `<domain tag>\n<JCS>` and `Signed<T>`.
//! - The signed objects: [`contract`] (Prompt Contract), [`fingerprint`] (Fingerprint and Attribution),
//!   [`paperwork`], [`attestation`] (Attestation and Telemetry), [`filing`].
//! - [`merkle`]: RFC 6962/9162 tree hashing and proofs; [`checkpoint`]: C2SP signed checkpoints.
//! - [`wire`]: hub <-> node messages and their versioned framing, the limits both sides state in the
//!   handshake, and the binary frames that carry files.
//!
//! `docs/PROTOCOL.md` describes every object with a golden example; `tests/it/golden.rs` pins them.

pub mod attestation;
pub mod binding;
pub mod checkpoint;
pub mod contract;
pub mod examples;
pub mod filing;
pub mod fingerprint;
pub mod ids;
pub mod jcs;
pub mod keyfile;
pub mod keys;
#[cfg(feature = "fs")]
pub mod keystore;
pub mod merkle;
pub mod paperwork;
pub mod sampler;
pub mod signing;
pub mod values;
pub mod wire;

pub use ids::*;
pub use keys::{KeyError, PublicKey, SecretKey, Signature};
pub use signing::{Domain, SignError, Signed, SignedBody};
pub use values::{Amount, Nonce, Sha256Digest, Timestamp};
