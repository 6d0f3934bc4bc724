//! The two content hashes in paperwork. Their definitions live in the protocol crate (so the hub
//! recomputes them identically); this module adds a streaming form of the output hash.
//!
//! - `request_sha256` = SHA-256 of the RFC 8785 canonical JSON of the request exactly as the task
//!   carried it.
//! - `output_sha256` (text workloads) = SHA-256 of the RFC 8785 canonical JSON of the array of every
//!   chunk's `data`, in `seq` order. JCS writes an array as `[` + items joined by `,` + `]` with no
//!   whitespace, so [`OutputHasher`] hashes chunk by chunk as they stream, without keeping them.

use serde_json::Value;
use sha2::{Digest, Sha256};
use stacknet_protocol::jcs::{self, JcsError};
use stacknet_protocol::Sha256Digest;

pub use stacknet_protocol::paperwork::{output_digest, request_digest};

/// Incremental [`output_digest`]: push chunks in order, then finish; equal to the protocol's
/// definition (a unit test checks), without keeping the chunks.
#[derive(Clone, Debug)]
pub struct OutputHasher {
    sha: Sha256,
    chunks: u64,
}

impl Default for OutputHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputHasher {
    pub fn new() -> Self {
        let mut sha = Sha256::new();
        sha.update(b"[");
        Self { sha, chunks: 0 }
    }

    pub fn push(&mut self, chunk: &Value) -> Result<(), JcsError> {
        let canonical = jcs::canonicalize(chunk)?;
        if self.chunks > 0 {
            self.sha.update(b",");
        }
        self.sha.update(canonical.as_bytes());
        self.chunks += 1;
        Ok(())
    }

    /// Chunks pushed so far.
    pub fn len(&self) -> u64 {
        self.chunks
    }

    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    pub fn finish(mut self) -> Sha256Digest {
        self.sha.update(b"]");
        Sha256Digest(self.sha.finalize().into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn whole_array_digest(chunks: &[Value]) -> Sha256Digest {
        let canonical = jcs::canonicalize(&Value::Array(chunks.to_vec())).unwrap();
        Sha256Digest::of(canonical.as_bytes())
    }

    #[test]
    fn streaming_hash_equals_hash_of_the_canonical_array() {
        let chunks = [
            json!({"object": "chat.completion.chunk", "choices": [{"delta": {"content": "Hé \"x\"\n"}, "index": 0}]}),
            json!({"b": 1.5, "a": [1, 2, {"z": null, "y": true}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9007199254740993_u64}}),
        ];
        for n in 0..=chunks.len() {
            assert_eq!(
                output_digest(&chunks[..n]).unwrap(),
                whole_array_digest(&chunks[..n])
            );
        }
        assert_eq!(output_digest(&[]).unwrap(), Sha256Digest::of(b"[]"));
    }

    #[test]
    fn request_digest_ignores_member_order_and_whitespace() {
        let a: Value =
            serde_json::from_str(r#"{"model": "m", "messages": [{"role":"user","content":"Hi"}]}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"messages":[{"content":"Hi","role":"user"}],"model":"m"}"#).unwrap();
        assert_eq!(request_digest(&a).unwrap(), request_digest(&b).unwrap());
        // The golden paperwork's request hash is over exactly this canonical text.
        assert_eq!(
            request_digest(&a).unwrap(),
            Sha256Digest::of(br#"{"messages":[{"content":"Hi","role":"user"}],"model":"m"}"#)
        );
    }
}
