//! Signed checkpoints: a pinned golden note, Go's own sumdb/note examples, and every way to mangle one.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use stacknet_protocol::checkpoint::{
    key_id, open_note, sign_note, vkey_string, Checkpoint, CheckpointError, VerifierKey, MAX_NOTE_SIGNATURES,
};
use stacknet_protocol::merkle::{hash_from_slice, Hash, MerkleError};
use stacknet_protocol::{PublicKey, SecretKey};

const ORIGIN: &str = "stacknet.example/log";
/// RFC 6962 root of transparency-dev's reference tree at size 8 (see the merkle tests).
const REFERENCE_ROOT_8_HEX: &str = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";

/// Seed [7; 32], origin and key name `stacknet.example/log`, size 8, reference root. Ed25519 is
/// deterministic, so these bytes change only if the format or the key derivation does.
const GOLDEN_NOTE: &str = "stacknet.example/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} stacknet.example/log a9qyjSLzwWeW/v9RFE4j9wNmYhznREXxtTBin6OYRsI72Bhv3JwXKBkBqQKTX4+H5Jkq/ZEywy6+flSVPkIMgfo9Cg8=\n";
const GOLDEN_VKEY: &str = "stacknet.example/log+6bdab28d+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs";

/// golang.org/x/mod/sumdb/note's test keys and signatures (note_test.go), produced by Go.
const PETER_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn golden_key() -> SecretKey {
    SecretKey::from_seed(&[7u8; 32])
}

fn golden_checkpoint() -> Checkpoint {
    let root = hash_from_slice(&hex::decode(REFERENCE_ROOT_8_HEX).expect("hex")).expect("32 bytes");
    Checkpoint::new(ORIGIN, 8, root)
}

/// The seed inside a Go `PRIVATE+KEY+<name>+<id>+base64(0x01 || seed)` signer key.
fn go_signer_seed(skey: &str) -> [u8; 32] {
    // The base64 itself may contain '+', so split off exactly the four leading fields.
    let b64 = skey.splitn(5, '+').nth(4).expect("key part");
    let typed = STANDARD.decode(b64).expect("base64");
    assert_eq!(typed[0], 0x01, "Ed25519 type byte");
    typed[1..].try_into().expect("32-byte seed")
}

#[test]
fn golden_checkpoint_note_is_pinned() {
    let key = golden_key();
    let note = golden_checkpoint().sign(ORIGIN, &key).expect("valid checkpoint");
    assert_eq!(note, GOLDEN_NOTE);
    assert_eq!(vkey_string(ORIGIN, &key.public_key()), GOLDEN_VKEY);
    let vkey = VerifierKey::parse(GOLDEN_VKEY).expect("our own vkey parses");
    assert_eq!(
        Checkpoint::open(GOLDEN_NOTE, &vkey.name, &vkey.key),
        Ok(golden_checkpoint())
    );
}

#[test]
fn key_id_vkey_and_signature_match_go_sumdb_note() {
    let key = SecretKey::from_seed(&go_signer_seed(PETER_SKEY));
    assert_eq!(vkey_string("PeterNeumann", &key.public_key()), PETER_VKEY);
    assert_eq!(
        key_id("PeterNeumann", &key.public_key()),
        [0xc7, 0x4f, 0x20, 0xa3]
    );
    assert_eq!(
        sign_note(GO_TEXT, "PeterNeumann", &key),
        Ok(format!("{GO_TEXT}\n{PETER_SIG}"))
    );

    // Enoch's secret is not published: opening his Go-made signature checks our verifier alone.
    let both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    for vkey in [PETER_VKEY, ENOCH_VKEY] {
        let v = VerifierKey::parse(vkey).expect("Go vkey parses");
        assert_eq!(v.to_string(), vkey);
        assert_eq!(open_note(&both, &v.name, &v.key), Ok(GO_TEXT), "{vkey}");
    }
}

#[test]
fn go_malformed_notes_are_refused() {
    let peter = VerifierKey::parse(PETER_VKEY).expect("Go vkey parses");
    let bad_name_sig = "\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";
    let bad = [
        GO_TEXT.to_owned(),
        format!("{GO_TEXT}\n"),
        format!("{GO_TEXT}\n{}", PETER_SIG.trim_end_matches('\n')),
        format!("\x01{GO_TEXT}\n{PETER_SIG}"),
        format!("{GO_TEXT}\n{bad_name_sig}"),
        format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{GO_TEXT}\n{}", PETER_SIG.repeat(MAX_NOTE_SIGNATURES + 1)),
        format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]),
    ];
    for note in &bad {
        assert!(
            open_note(note, &peter.name, &peter.key).is_err(),
            "accepted {note:?}"
        );
    }
    assert_eq!(
        open_note(&bad[6], &peter.name, &peter.key),
        Err(CheckpointError::TooManySignatures {
            max: MAX_NOTE_SIGNATURES,
            got: MAX_NOTE_SIGNATURES + 1
        })
    );
}

#[test]
fn mangled_verifier_keys_are_refused() {
    // As Go's TestNewVerifier: every proper substring and every single-byte increment fails.
    let bytes = GOLDEN_VKEY.as_bytes();
    for i in 0..=bytes.len() {
        for j in i + 1..=bytes.len() {
            if (i, j) != (0, bytes.len()) {
                let part = &GOLDEN_VKEY[i..j];
                assert!(VerifierKey::parse(part).is_err(), "accepted {part:?}");
            }
        }
    }
    for i in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[i] = changed[i].wrapping_add(1);
        if let Ok(s) = String::from_utf8(changed) {
            assert!(VerifierKey::parse(&s).is_err(), "accepted {s:?}");
        }
    }
}

#[test]
fn tampering_wrong_keys_and_truncation_are_refused() {
    let (key, cp) = (golden_key(), golden_checkpoint());
    let public = key.public_key();
    let note = cp.sign(ORIGIN, &key).expect("valid");
    let bad_sig = |e| matches!(e, Err(CheckpointError::BadSignature { .. }));

    let tampered = note.replacen("\n8\n", "\n9\n", 1);
    assert!(bad_sig(Checkpoint::open(&tampered, ORIGIN, &public)));

    let other = SecretKey::from_seed(&[8u8; 32]).public_key();
    assert!(matches!(
        Checkpoint::open(&note, ORIGIN, &other),
        Err(CheckpointError::NoMatchingSignature { .. })
    ));
    assert!(matches!(
        Checkpoint::open(&note, "stacknet.example/other", &public),
        Err(CheckpointError::NoMatchingSignature { .. })
    ));

    // Right name and key id but a 63-byte signature.
    let mut short = key_id(ORIGIN, &public).to_vec();
    short.extend_from_slice(&[0u8; 63]);
    let short_note = format!("{}\n\u{2014} {ORIGIN} {}\n", cp.body(), STANDARD.encode(short));
    assert!(bad_sig(Checkpoint::open(&short_note, ORIGIN, &public)));

    for cut in 1..note.len() {
        if let Some(prefix) = note.get(..cut) {
            assert!(
                Checkpoint::open(prefix, ORIGIN, &public).is_err(),
                "accepted prefix {prefix:?}"
            );
        }
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    let key = golden_key();
    let note = golden_checkpoint().sign(ORIGIN, &key).expect("valid");
    for i in 0..note.len() {
        for bit in 0..8 {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 1 << bit;
            if let Ok(s) = String::from_utf8(bytes) {
                assert!(
                    Checkpoint::open(&s, ORIGIN, &key.public_key()).is_err(),
                    "accepted {s:?}"
                );
            }
        }
    }
}

#[test]
fn malformed_bodies_are_refused_precisely() {
    let root = STANDARD.encode(golden_checkpoint().root);
    let parse = |text: String| Checkpoint::parse_body(&text);
    assert_eq!(
        parse(format!("\n8\n{root}\n")),
        Err(CheckpointError::BadOrigin {
            origin: String::new()
        })
    );
    for size in [
        "08",
        "+8",
        "-1",
        " 8",
        "8 ",
        "",
        "0x8",
        "18446744073709551616",
        "\u{0668}",
    ] {
        let want = Err(CheckpointError::BadSize {
            line: size.to_owned(),
        });
        assert_eq!(
            parse(format!("{ORIGIN}\n{size}\n{root}\n")),
            want,
            "size {size:?}"
        );
    }
    assert!(parse(format!("{ORIGIN}\n18446744073709551615\n{root}\n")).is_ok());
    assert!(parse(format!("{ORIGIN}\n0\n{root}\n")).is_ok());
    let short_root = STANDARD.encode([0u8; 31]);
    assert_eq!(
        parse(format!("{ORIGIN}\n8\n{short_root}\n")),
        Err(CheckpointError::BadRoot(MerkleError::BadHashLength { got: 31 }))
    );
    let unpadded = root.trim_end_matches('=').to_owned();
    assert_eq!(
        parse(format!("{ORIGIN}\n8\n{unpadded}\n")),
        Err(CheckpointError::BadRootEncoding { line: unpadded })
    );
    assert_eq!(
        parse(format!("{ORIGIN}\n8\n")),
        Err(CheckpointError::MissingLines { got: 2 })
    );
    assert_eq!(
        parse(format!("{ORIGIN}\n8\n{root}")),
        Err(CheckpointError::BadText)
    );
    assert_eq!(
        parse(format!("{ORIGIN}\n8\n{root}\n\n")),
        Err(CheckpointError::BadExtension { index: 0 })
    );
    assert_eq!(
        parse(format!("{ORIGIN}\r\n8\n{root}\n")),
        Err(CheckpointError::ControlCharacter {
            byte: b'\r',
            at: ORIGIN.len()
        })
    );
}

#[test]
fn extensions_round_trip_and_invalid_fields_cannot_be_signed() {
    let key = golden_key();
    let mut cp = golden_checkpoint();
    cp.extensions = vec!["ext one".to_owned(), "— two".to_owned()];
    let note = cp.sign(ORIGIN, &key).expect("valid");
    assert_eq!(Checkpoint::open(&note, ORIGIN, &key.public_key()), Ok(cp.clone()));

    cp.extensions.push(String::new());
    assert_eq!(
        cp.sign(ORIGIN, &key),
        Err(CheckpointError::BadExtension { index: 2 })
    );
    let cp = Checkpoint::new("two\nlines", 1, [0; 32]);
    assert_eq!(
        cp.sign(ORIGIN, &key),
        Err(CheckpointError::BadOrigin {
            origin: "two\nlines".to_owned()
        })
    );
    for name in ["", "a b", "a+b", "tab\tname", "nbsp\u{a0}name"] {
        let want = Err(CheckpointError::BadKeyName {
            name: name.to_owned(),
        });
        assert_eq!(golden_checkpoint().sign(name, &key), want, "name {name:?}");
    }
    assert_eq!(
        sign_note("no newline", ORIGIN, &key),
        Err(CheckpointError::BadText)
    );
    assert_eq!(
        sign_note("ends blank\n\n", ORIGIN, &key),
        Err(CheckpointError::BadText)
    );
}

#[test]
fn witness_cosignatures_by_other_keys_are_ignored() {
    let (key, witness) = (golden_key(), SecretKey::from_seed(&[9u8; 32]));
    let body = golden_checkpoint().body();
    let by_log = sign_note(&body, ORIGIN, &key).expect("valid");
    let by_witness = sign_note(&body, "witness.example", &witness).expect("valid");
    let witness_line = by_witness
        .strip_prefix(&format!("{body}\n"))
        .expect("body prefix");
    let cosigned = format!("{by_log}{witness_line}");
    assert_eq!(
        Checkpoint::open(&cosigned, ORIGIN, &key.public_key()),
        Ok(golden_checkpoint())
    );
    assert_eq!(
        open_note(&cosigned, "witness.example", &witness.public_key()),
        Ok(body.as_str())
    );
}

fn origin_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9.\\-/ +é—]{1,40}"
}

proptest! {
    #[test]
    fn sign_then_open_round_trips(origin in origin_strategy(), size: u64, root: Hash, seed: [u8; 32]) {
        let key = SecretKey::from_seed(&seed);
        let cp = Checkpoint::new(origin, size, root);
        let note = cp.sign("log.example/key", &key).expect("valid");
        prop_assert_eq!(Checkpoint::open(&note, "log.example/key", &key.public_key()), Ok(cp));
    }

    #[test]
    fn arbitrary_input_never_panics(input in "(?s).{0,300}", seed: [u8; 32]) {
        let public: PublicKey = SecretKey::from_seed(&seed).public_key();
        let golden = golden_checkpoint().sign(ORIGIN, &golden_key()).expect("valid");
        let _ = Checkpoint::open(&input, ORIGIN, &public);
        let _ = Checkpoint::parse_body(&input);
        let _ = VerifierKey::parse(&input);
        let spliced = format!("{}{input}", &golden[..golden.len() / 2]);
        prop_assert!(Checkpoint::open(&spliced, ORIGIN, &public).is_err());
    }
}
