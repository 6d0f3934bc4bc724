//! Golden vectors: the exact bytes of every signed object, pinned in docs/golden/*.json and quoted in
//! docs/PROTOCOL.md. An accidental change of any format fails here. After a deliberate change, run
//! `STACKNET_BLESS=1 cargo test -p stacknet-protocol --test it golden` and update docs/PROTOCOL.md.

use std::path::PathBuf;

use stacknet_protocol::examples;
use stacknet_protocol::paperwork::check_paperwork;

fn docs_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs"))
}

#[test]
fn golden_vectors_match_the_pinned_files_and_the_protocol_doc() {
    let bless = std::env::var_os("STACKNET_BLESS").is_some();
    let protocol_md = std::fs::read_to_string(docs_dir().join("PROTOCOL.md")).unwrap_or_default();
    for g in examples::all().unwrap() {
        let path = docs_dir().join(format!("golden/{}.json", g.name));
        let text = serde_json::to_string_pretty(&g).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let pinned = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text, pinned, "golden vector {} changed", g.name);
        assert!(
            protocol_md.contains(&g.signature),
            "docs/PROTOCOL.md quotes the {} signature",
            g.name
        );
        assert!(
            protocol_md.contains(&g.signed_bytes_hex),
            "docs/PROTOCOL.md quotes the {} bytes",
            g.name
        );
    }
}

#[test]
fn golden_signatures_verify_from_the_pinned_hex_alone() {
    // What a second implementation does: take the key, bytes and signature from the file and verify.
    for g in examples::all().unwrap() {
        let key = stacknet_protocol::PublicKey::from_hex(&g.public_key).unwrap();
        let bytes = hex::decode(&g.signed_bytes_hex).unwrap();
        let sig = stacknet_protocol::Signature::from_hex(&g.signature).unwrap();
        key.verify(&bytes, &sig).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with(&format!("{}\n{{", g.domain)),
            "{}: tag, newline, JSON object",
            g.name
        );
    }
}

#[test]
fn the_golden_paperwork_passes_every_check() {
    let pw = examples::paperwork().unwrap();
    let checked = check_paperwork(&pw, &examples::hub_key().public_key()).unwrap();
    let (id, digest) = (checked.id, checked.digest);
    assert_eq!(id, pw.id().unwrap());
    assert_eq!(&digest.0[..16], id.as_bytes());
    let json = serde_json::to_string(&pw).unwrap();
    let back: stacknet_protocol::Signed<stacknet_protocol::paperwork::Paperwork> =
        serde_json::from_str(&json).unwrap();
    assert_eq!(back, pw);
}

#[test]
fn the_issuing_hub_may_skip_its_own_signature_but_only_for_the_exact_contract() {
    use stacknet_protocol::paperwork::{check_paperwork_for, PaperworkError};
    let pw = examples::paperwork().unwrap();
    let issued = examples::signed_contract().unwrap();
    let node = examples::node_key().public_key();
    let checked = check_paperwork_for(&pw, &issued, &node).unwrap();
    assert_eq!(
        checked,
        check_paperwork(&pw, &examples::hub_key().public_key()).unwrap()
    );
    let mut other = issued.clone();
    other.body.max_cost = stacknet_protocol::Amount::from_micros(1);
    assert_eq!(
        check_paperwork_for(&pw, &other, &node),
        Err(PaperworkError::NotIssuedContract)
    );
    // Sent to another key (the one a sale bound the id to): this one's signature is not it.
    let stranger = stacknet_protocol::SecretKey::generate().public_key();
    assert!(matches!(
        check_paperwork_for(&pw, &issued, &stranger),
        Err(PaperworkError::NotAssignedNode { .. })
    ));
}

/// The hub's default split shares out exactly the whole captured cost (the golden contracts carry it,
/// so its values are pinned above).
#[test]
fn the_default_split_is_complete() {
    use stacknet_protocol::contract::AttributionSplit;
    assert!(AttributionSplit::DEFAULT.is_complete());
    assert_eq!(examples::default_split(), AttributionSplit::DEFAULT);
}
