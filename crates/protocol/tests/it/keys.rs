//! Keys, ids, key files and the small value types: parsed once, strictly.

use stacknet_protocol::keyfile::{self, KeyFileError};
use stacknet_protocol::keys::{KeyError, PublicKey, SecretKey};
use stacknet_protocol::values::{Amount, Timestamp, ValueError};
use stacknet_protocol::{NodeKeyId, StackId};

/// The eight small-order points of edwards25519 (as Ed25519 encodings), plus a non-canonical
/// encoding of the identity, from the "Taming the many EdDSAs" paper's table.
const SMALL_ORDER_KEYS: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
];

#[test]
fn weak_small_order_public_keys_are_refused_when_parsed() {
    for hex in SMALL_ORDER_KEYS {
        assert_eq!(PublicKey::from_hex(hex), Err(KeyError::WeakKey), "{hex}");
    }
    // Through serde too: a weak key cannot enter inside a JSON object.
    let json = format!("\"{}\"", SMALL_ORDER_KEYS[0]);
    assert!(serde_json::from_str::<PublicKey>(&json).is_err());
}

/// The little-endian encoding of y = p + `above` (p = 2^255 - 19, the field prime), with the sign
/// bit of x set or not. Every such y is >= p, so the encoding is not canonical: the same point
/// (if any) has a shorter spelling, y - p.
fn encoding_of_p_plus(above: u8, sign: bool) -> String {
    let mut bytes = [0xffu8; 32];
    bytes[0] = 0xed + above;
    bytes[31] = if sign { 0xff } else { 0x7f };
    hex::encode(bytes)
}

#[test]
fn non_canonical_key_encodings_are_refused_at_parse() {
    // y in p..2^255 are the only non-canonical y values: p + 0 ..= p + 18.
    for above in 0..=18u8 {
        for sign in [false, true] {
            let hex = encoding_of_p_plus(above, sign);
            assert_eq!(
                PublicKey::from_hex(&hex),
                Err(KeyError::NonCanonical),
                "y = p + {above}, sign bit {sign}: {hex}"
            );
            let json = format!("\"{hex}\"");
            let refused = serde_json::from_str::<PublicKey>(&json).unwrap_err();
            assert!(
                refused.to_string().contains("not canonical"),
                "y = p + {above}, sign bit {sign}: {refused}"
            );
            let tagged = format!("ed25519:{hex}");
            assert_eq!(PublicKey::from_tagged(&tagged), Err(KeyError::NonCanonical));
        }
    }
    // The largest canonical y, p - 1, is still judged on its merits (it is a small-order point).
    let mut below = [0xffu8; 32];
    below[0] = 0xec;
    below[31] = 0x7f;
    assert_eq!(PublicKey::from_bytes(&below), Err(KeyError::WeakKey));
}

#[test]
fn public_keys_parse_only_as_lowercase_hex_of_the_right_length() {
    let key = SecretKey::from_seed(&[9; 32]).public_key();
    let hex = key.to_hex();
    assert_eq!(PublicKey::from_hex(&hex), Ok(key));
    assert_eq!(PublicKey::from_hex(&hex.to_uppercase()), Err(KeyError::NotHex));
    assert_eq!(
        PublicKey::from_hex(&hex[..62]),
        Err(KeyError::BadHexLength {
            expected: 64,
            got: 62
        })
    );
    assert_eq!(PublicKey::from_tagged(&key.to_tagged()), Ok(key));
}

#[test]
fn node_key_id_is_nk_and_the_first_16_bytes_of_sha256_of_the_public_key() {
    // RFC 8032 test 1's public key.
    let key =
        PublicKey::from_hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    let expected = format!("nk_{}", hex::encode(&digest[..16]));
    assert_eq!(key.node_key_id().to_string(), expected);
    assert_eq!(expected.parse::<NodeKeyId>().unwrap(), key.node_key_id());
}

#[test]
fn ids_refuse_wrong_prefixes_and_bodies() {
    let id = StackId::random();
    assert_eq!(id.to_string().parse::<StackId>(), Ok(id));
    assert!("usr_00000000000000000000000000000000".parse::<StackId>().is_err());
    assert!("stk_0000".parse::<StackId>().is_err());
    assert!("stk_0000000000000000000000000000000G".parse::<StackId>().is_err());
    assert!(
        "stk_0000000000000000000000000000000A".parse::<StackId>().is_err(),
        "uppercase refused"
    );
}

#[test]
fn secret_keys_never_print() {
    let key = SecretKey::from_seed(&[0xab; 32]);
    let shown = format!("{key:?}");
    assert!(!shown.contains("abab"), "{shown}");
    assert!(shown.contains("redacted"));
}

#[test]
fn key_files_round_trip_and_refuse_corruption_precisely() {
    let key = SecretKey::from_seed(&[5; 32]);
    let text = keyfile::encode(&key);
    assert_eq!(keyfile::decode(text.as_bytes()).unwrap().seed(), key.seed());
    let other = SecretKey::from_seed(&[6; 32]).public_key().to_hex();
    let swapped = text.replace(&key.public_key().to_hex(), &other);
    assert_eq!(
        keyfile::decode(swapped.as_bytes()).unwrap_err(),
        KeyFileError::PublicKeyMismatch
    );
    assert!(matches!(keyfile::decode(b"{"), Err(KeyFileError::Malformed(_))));
    assert_eq!(
        keyfile::decode(&[b' '; 5000]).unwrap_err(),
        KeyFileError::TooLarge(5000)
    );
    let wrong_type = text.replace("stacknet-node-key", "ssh-key");
    assert_eq!(
        keyfile::decode(wrong_type.as_bytes()).unwrap_err(),
        KeyFileError::WrongType("ssh-key".into())
    );
}

#[test]
fn timestamps_have_exactly_one_spelling() {
    let t: Timestamp = "2026-11-22T10:15:30.123Z".parse().unwrap();
    assert_eq!(t.to_string(), "2026-11-22T10:15:30.123Z");
    for bad in [
        "2026-11-22T10:15:30Z",
        "2026-11-22T10:15:30.123+00:00",
        "2026-11-22 10:15:30.123Z",
        "2026-02-30T10:15:30.123Z",
        "2026-11-22T24:00:00.000Z",
        "2026-11-22T10:15:30.1234Z",
    ] {
        assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
    }
    assert_eq!(
        Timestamp::from_unix_ms(0).unwrap().to_string(),
        "1970-01-01T00:00:00.000Z"
    );
}

#[test]
fn amounts_are_canonical_decimal_strings() {
    assert_eq!("0".parse::<Amount>(), Ok(Amount::ZERO));
    assert_eq!("-15".parse::<Amount>(), Ok(Amount::from_micros(-15)));
    assert_eq!(
        serde_json::to_string(&Amount::from_micros(i64::MAX)).unwrap(),
        "\"9223372036854775807\""
    );
    for bad in [
        "",
        "-",
        "-0",
        "007",
        "+1",
        "1.0",
        "1e3",
        "9223372036854775808",
        " 1",
    ] {
        assert!(
            matches!(bad.parse::<Amount>(), Err(ValueError::BadAmount(_))),
            "{bad:?}"
        );
    }
    assert!(
        serde_json::from_str::<Amount>("5").is_err(),
        "a JSON number is refused"
    );
}
