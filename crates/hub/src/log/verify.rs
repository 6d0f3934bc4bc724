//! Tests of the client side of the log (`stacknet_api::proof`, re-exported by [`super`]) against
//! proofs this log builds.

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stacknet_protocol::checkpoint::{Checkpoint, CheckpointError};
    use stacknet_protocol::examples;
    use stacknet_protocol::merkle::MerkleError;
    use stacknet_protocol::SecretKey;

    use serde_json::Value;
    use stacknet_protocol::merkle::{self, Hash};

    use crate::log::{
        consistency_json, inclusion_json, log_origin, paperwork_leaf, verify_consistency_response,
        verify_inclusion_response, LogError, MerkleLog, VerifiedInclusion,
    };

    /// Index of the paperwork in [`fixture`]'s log of [`LOG_SIZE`] leaves.
    const PAPERWORK_INDEX: u64 = 5;
    const LOG_SIZE: u64 = 13;

    struct Fixture {
        log: MerkleLog,
        key: SecretKey,
        origin: String,
        leaf: Hash,
    }

    fn fixture() -> Fixture {
        let pw = examples::paperwork().expect("the example paperwork signs");
        let leaf = paperwork_leaf(&pw).expect("the example paperwork encodes");
        let leaves: Vec<Hash> = (0..LOG_SIZE)
            .map(|i| match i {
                PAPERWORK_INDEX => leaf,
                _ => merkle::leaf_hash(format!("other paperwork {i}").as_bytes()),
            })
            .collect();
        let key = examples::hub_key();
        let origin = log_origin(&key.public_key());
        Fixture {
            log: MerkleLog::from_leaves(leaves),
            key,
            origin,
            leaf,
        }
    }

    impl Fixture {
        fn note(&self) -> String {
            self.log.checkpoint(&self.origin, &self.key).expect("signs").note
        }

        fn proof_json(&self, index: u64, size: u64) -> Value {
            let proof = self.log.inclusion(index, size).expect("in range");
            let leaf = self.log.leaf(index).expect("in range");
            // Through text, as the CLI receives it.
            let text = serde_json::to_string(&inclusion_json(index, size, &leaf, &proof)).expect("encodes");
            serde_json::from_str(&text).expect("our own JSON parses")
        }

        fn verify(&self, leaf: &Hash, response: &Value, note: &str) -> Result<VerifiedInclusion, LogError> {
            verify_inclusion_response(leaf, response, note, &self.origin, &self.key.public_key())
        }
    }

    #[test]
    fn accepts_a_good_inclusion_proof() {
        let f = fixture();
        let verified = f
            .verify(&f.leaf, &f.proof_json(PAPERWORK_INDEX, LOG_SIZE), &f.note())
            .expect("a proof from the log verifies");
        assert_eq!(verified.leaf_index, PAPERWORK_INDEX);
        assert_eq!(verified.leaf_hash, f.leaf);
        assert_eq!(verified.checkpoint.size, LOG_SIZE);
        assert_eq!(verified.checkpoint.origin, f.origin);
        assert_eq!(
            verified.checkpoint.root,
            f.log.root_at(LOG_SIZE).expect("in range")
        );
    }

    #[test]
    fn refuses_a_proof_for_another_leaf() {
        let f = fixture();
        let other = f.proof_json(PAPERWORK_INDEX + 1, LOG_SIZE);
        let err = f
            .verify(&f.leaf, &other, &f.note())
            .expect_err("another leaf's proof");
        assert!(matches!(err, LogError::LeafMismatch { .. }), "{err}");

        // Claiming our leaf at the other index: the path leads to another root.
        let mut forged = other;
        forged["leaf_hash"] = json!(hex::encode(f.leaf));
        let err = f.verify(&f.leaf, &forged, &f.note()).expect_err("wrong position");
        assert!(
            matches!(err, LogError::Proof(MerkleError::MismatchedRoot { .. })),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_tampered_proof() {
        let f = fixture();
        let good = f.proof_json(PAPERWORK_INDEX, LOG_SIZE);
        let note = f.note();

        let mut flipped = good.clone();
        let first = flipped["proof"][0].as_str().expect("hex").to_owned();
        let changed = if first.starts_with('0') { "1" } else { "0" };
        flipped["proof"][0] = json!(format!("{changed}{}", &first[1..]));
        let err = f.verify(&f.leaf, &flipped, &note).expect_err("flipped hash");
        assert!(
            matches!(err, LogError::Proof(MerkleError::MismatchedRoot { .. })),
            "{err}"
        );

        let mut short = good.clone();
        short["proof"].as_array_mut().expect("array").pop();
        let err = f.verify(&f.leaf, &short, &note).expect_err("short proof");
        assert!(
            matches!(err, LogError::Proof(MerkleError::WrongProofLength { .. })),
            "{err}"
        );

        let mut truncated = good.clone();
        truncated["proof"][1] = json!("abcd");
        let err = f.verify(&f.leaf, &truncated, &note).expect_err("2-byte hash");
        assert_eq!(err.to_string(), "proof[1] is not a 32-byte hash in hex");

        let mut moved = good;
        moved["leaf_index"] = json!(PAPERWORK_INDEX + 2);
        let err = f.verify(&f.leaf, &moved, &note).expect_err("wrong index");
        assert!(matches!(err, LogError::Proof(_)), "{err}");

        let err = f
            .verify(&f.leaf, &json!({"proof": []}), &note)
            .expect_err("not a proof");
        assert!(matches!(err, LogError::MalformedResponse(_)), "{err}");
    }

    #[test]
    fn refuses_a_checkpoint_signed_by_another_key() {
        let f = fixture();
        let stranger = SecretKey::from_seed(&[9; 32]);
        let note = f.log.checkpoint(&f.origin, &stranger).expect("signs").note;
        let err = f
            .verify(&f.leaf, &f.proof_json(PAPERWORK_INDEX, LOG_SIZE), &note)
            .expect_err("not the hub's key");
        assert!(
            matches!(
                err,
                LogError::Checkpoint(CheckpointError::NoMatchingSignature { .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_checkpoint_of_another_log() {
        let f = fixture();
        let root = f.log.root_at(LOG_SIZE).expect("in range");
        // Signed by the right key under the right name, but for another origin line.
        let note = Checkpoint::new("stacknet.hub/elsewhere", LOG_SIZE, root)
            .sign(&f.origin, &f.key)
            .expect("signs");
        let err = f
            .verify(&f.leaf, &f.proof_json(PAPERWORK_INDEX, LOG_SIZE), &note)
            .expect_err("another origin");
        assert_eq!(
            err.to_string(),
            format!(
                "the checkpoint is for log \"stacknet.hub/elsewhere\", expected {:?}",
                f.origin
            )
        );
    }

    #[test]
    fn refuses_a_proof_at_another_size() {
        let f = fixture();
        let older = f.proof_json(PAPERWORK_INDEX, LOG_SIZE - 1);
        let err = f.verify(&f.leaf, &older, &f.note()).expect_err("size mismatch");
        assert_eq!(
            err.to_string(),
            "the proof is for a tree of size 12, the checkpoint for size 13"
        );
    }

    #[test]
    fn consistency_between_two_checkpoints() {
        let f = fixture();
        let old_note = f.note();
        f.log
            .append_at(
                LOG_SIZE,
                &[merkle::leaf_hash(b"later"), merkle::leaf_hash(b"later still")],
            )
            .expect("next index");
        let new_note = f.note();
        let (origin, hub) = (&f.origin, f.key.public_key());
        let proof = f.log.consistency(LOG_SIZE, LOG_SIZE + 2).expect("in range");
        let good = serde_json::to_value(consistency_json(LOG_SIZE, LOG_SIZE + 2, &proof)).expect("encodes");

        let verified =
            verify_consistency_response(&good, &old_note, &new_note, origin, &hub).expect("extends");
        assert_eq!((verified.old.size, verified.new.size), (LOG_SIZE, LOG_SIZE + 2));

        let err =
            verify_consistency_response(&good, &new_note, &old_note, origin, &hub).expect_err("swapped");
        assert!(matches!(err, LogError::ConsistencySizeMismatch { .. }), "{err}");

        let mut tampered = good;
        tampered["proof"][0] = json!(hex::encode([0u8; 32]));
        let err =
            verify_consistency_response(&tampered, &old_note, &new_note, origin, &hub).expect_err("tampered");
        assert!(matches!(err, LogError::Proof(_)), "{err}");
    }
}
