//! Hostile proofs: verifying arbitrary inclusion and consistency proofs must never panic, and a proof
//! made by the library must always verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacknet_protocol::merkle;

fn hashes(data: &[u8]) -> Vec<merkle::Hash> {
    data.chunks_exact(32)
        .map(|c| merkle::hash_from_slice(c).expect("chunks are 32 bytes"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let a = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let rest = hashes(&data[16..]);
    let (root, proof) = match rest.split_first() {
        Some((root, proof)) => (*root, proof.to_vec()),
        None => ([0u8; 32], Vec::new()),
    };
    let _ = merkle::verify_inclusion(a, b, &root, &proof, &root);
    let _ = merkle::verify_consistency(a, b, &root, &root, &proof);

    // Made by us, a proof verifies: a small tree from the input's hashes.
    let leaves: Vec<merkle::Hash> = rest.iter().take(64).copied().collect();
    if !leaves.is_empty() {
        let n = leaves.len() as u64;
        let index = a % n;
        let r = merkle::root(&leaves);
        let p = merkle::inclusion_proof(&leaves, index).expect("index in range");
        merkle::verify_inclusion(index, n, &leaves[index as usize], &p, &r).expect("own proof verifies");
        let old = b % (n + 1);
        let c = merkle::consistency_proof(&leaves, old).expect("old size in range");
        merkle::verify_consistency(old, n, &merkle::root(&leaves[..old as usize]), &r, &c)
            .expect("own consistency proof verifies");
    }
});
