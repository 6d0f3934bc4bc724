//! The outside world's test vectors (../shared/vectors): Wycheproof and RFC 8032 for Ed25519,
//! the RFC 8785 author's vectors for canonical JSON.

use std::path::PathBuf;

use serde_json::Value;
use stacknet_protocol::jcs;
use stacknet_protocol::keys::{PublicKey, SecretKey, Signature};

pub fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors"))
}

fn read(path: &str) -> String {
    let full = vectors_dir().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

#[test]
fn wycheproof_ed25519_every_case_gives_the_expected_result() {
    let doc: Value = serde_json::from_str(&read("wycheproof/ed25519_test.json")).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let pk_hex = group["publicKey"]["pk"].as_str().unwrap();
        let key = PublicKey::from_hex(pk_hex);
        for case in group["tests"].as_array().unwrap() {
            let id = case["tcId"].as_u64().unwrap();
            let want_valid = match case["result"].as_str().unwrap() {
                "valid" => true,
                "invalid" => false,
                other => panic!("tcId {id}: unexpected result {other:?}"),
            };
            let msg = hex::decode(case["msg"].as_str().unwrap()).unwrap();
            let sig_bytes = hex::decode(case["sig"].as_str().unwrap()).unwrap();
            let got_valid = match (&key, <[u8; 64]>::try_from(sig_bytes.as_slice())) {
                (Ok(key), Ok(sig)) => key.verify(&msg, &Signature::from_bytes(&sig)).is_ok(),
                _ => false,
            };
            if got_valid != want_valid {
                failures.push(format!(
                    "tcId {id} ({}): want {want_valid}, got {got_valid}",
                    case["comment"]
                ));
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        doc["numberOfTests"].as_u64().unwrap() as usize,
        "every case was run"
    );
    assert!(
        failures.is_empty(),
        "Wycheproof failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn rfc8032_every_line_signs_and_verifies_to_the_given_signature() {
    let text = read("rfc8032/sign.input.first128.txt");
    let mut lines = 0;
    for (n, line) in text.lines().filter(|l| !l.is_empty()).enumerate() {
        let fields: Vec<&str> = line.split(':').collect();
        assert_eq!(fields.len(), 5, "line {n} has 4 colon-terminated fields");
        let sk = hex::decode(fields[0]).unwrap();
        let pk = hex::decode(fields[1]).unwrap();
        let msg = hex::decode(fields[2]).unwrap();
        let sig_and_msg = hex::decode(fields[3]).unwrap();
        let seed: [u8; 32] = sk[..32].try_into().unwrap();
        let key = SecretKey::from_seed(&seed);
        assert_eq!(
            key.public_key().as_bytes().as_slice(),
            &pk[..],
            "line {n}: public key"
        );
        assert_eq!(&sk[32..], &pk[..], "line {n}: sk is seed||pk");
        let sig = key.sign(&msg);
        assert_eq!(
            sig.to_bytes().as_slice(),
            &sig_and_msg[..64],
            "line {n}: signature"
        );
        assert_eq!(&sig_and_msg[64..], &msg[..], "line {n}: sig||msg");
        let public = PublicKey::from_bytes(&pk.try_into().unwrap()).unwrap();
        public.verify(&msg, &sig).unwrap();
        lines += 1;
    }
    assert_eq!(lines, 128);
}

#[test]
fn rfc8785_every_input_canonicalises_to_the_expected_output() {
    let dir = vectors_dir().join("jcs/input");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 6, "found the vector files");
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let input: Value = serde_json::from_str(&read(&format!("jcs/input/{name}"))).unwrap();
        let expected = std::fs::read(vectors_dir().join(format!("jcs/output/{name}"))).unwrap();
        let got = jcs::canonicalize(&input).unwrap();
        assert_eq!(got.as_bytes(), &expected[..], "{name}");
        let outhex = read(&format!("jcs/outhex/{}", name.replace(".json", ".txt")));
        let hex_expected: String = outhex.split_whitespace().collect();
        assert_eq!(hex::encode(got.as_bytes()), hex_expected, "{name} (outhex)");
    }
}

#[test]
fn es6_number_serialisation_samples_from_the_rfc_8785_readme() {
    // The sample lines of the 100-million-value ES6 test file, as the vector README quotes them.
    let samples = [
        ("4340000000000001", "9007199254740994"),
        ("4340000000000002", "9007199254740996"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("8000000000000000", "0"),
        ("0", "0"),
    ];
    for (bits, want) in samples {
        let f = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        let value = serde_json::Number::from_f64(f).map(Value::Number).unwrap();
        assert_eq!(jcs::canonicalize(&value).unwrap(), want, "{bits}");
    }
}

#[test]
fn signed_json_refuses_numbers_that_canonical_json_would_change() {
    let big = serde_json::json!({"amount": 9_007_199_254_740_993u64});
    let err = jcs::canonicalize_signed(&big).unwrap_err();
    assert_eq!(
        err.to_string(),
        "number 9007199254740993 at /amount is not allowed in signed JSON: only integers up to 2^53-1 are"
    );
    let float = serde_json::json!({"a": [1, 2.5]});
    assert!(jcs::canonicalize_signed(&float).is_err());
    let ok = serde_json::json!({"n": 9_007_199_254_740_991u64, "m": -9_007_199_254_740_991i64});
    assert_eq!(
        jcs::canonicalize_signed(&ok).unwrap(),
        r#"{"m":-9007199254740991,"n":9007199254740991}"#
    );
    // Plain RFC 8785 silently rounds the same value to the nearest double.
    assert_eq!(jcs::canonicalize(&big).unwrap(), r#"{"amount":9007199254740992}"#);
}
