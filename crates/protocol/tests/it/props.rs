//! Property tests: round trips, tamper detection, order independence, no panics on hostile bytes.

use proptest::prelude::*;
use serde_json::Value;
use stacknet_protocol::attestation::Telemetry;
use stacknet_protocol::examples;
use stacknet_protocol::jcs;
use stacknet_protocol::paperwork::{check_paperwork, Paperwork};
use stacknet_protocol::wire::{self, HubMessage, NodeMessage};
use stacknet_protocol::{NodeKeyId, Nonce, SecretKey, Signed, Timestamp};

/// Every leaf of a JSON value, as a path of object keys and array indices.
fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                leaves(v, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn leaf_mut<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, key| match v {
        Value::Object(map) => map.get_mut(key).unwrap(),
        Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
        _ => unreachable!("paths only go through containers"),
    })
}

/// Changes one character (or the value) of a leaf so that it is different but often still parses.
fn mutate(leaf: &mut Value, pos: usize) {
    match leaf {
        Value::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            if chars.is_empty() {
                chars.push('x');
            } else {
                let i = pos % chars.len();
                chars[i] = match chars[i] {
                    '0'..='8' | 'a'..='e' => ((chars[i] as u8) + 1) as char,
                    '9' => '0',
                    'f' => 'a',
                    'z' => 'y',
                    c if c.is_ascii_lowercase() => ((c as u8) + 1) as char,
                    _ => 'q',
                };
            }
            *s = chars.into_iter().collect();
        }
        Value::Number(n) => *leaf = Value::from(n.as_u64().unwrap_or(0) + 1),
        Value::Bool(b) => *b = !*b,
        Value::Null => *leaf = Value::Bool(true),
        _ => {}
    }
}

/// Writes a JSON object with its members in the order `perm` gives, recursively.
fn write_shuffled(value: &Value, seed: u64, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            let n = members.len().max(1) as u64;
            members.rotate_left((seed % n) as usize);
            if seed % 2 == 1 {
                members.reverse();
            }
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(" :\n");
                write_shuffled(v, seed / 3 + i as u64, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_shuffled(v, seed + i as u64, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn telemetry_strategy() -> impl Strategy<Value = Telemetry> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        0i64..253_402_300_799_999,
        proptest::collection::vec(0u64..(1 << 53), 12),
    )
        .prop_map(|(seed, node, ms, n)| Telemetry {
            guardian: SecretKey::from_seed(&seed).public_key(),
            node_key: NodeKeyId::from_digest(node),
            window_start: Timestamp::from_unix_ms(ms).unwrap(),
            window_end: Timestamp::from_unix_ms(ms).unwrap().plus_ms(60_000),
            probes: n[0],
            successes: n[1],
            errors: n[2],
            timeouts: n[3],
            latency_p50_ms: n[4],
            latency_p99_ms: n[5],
            created_at: Timestamp::from_unix_ms(ms).unwrap(),
            nonce: Nonce(node),
            // Absent when 0: both shapes round trip.
            wrong: n[7] % 3,
            warm_failures: n[8],
            ttft_p50_ms: n[9],
            tokens_per_s_p50: n[10] % 2,
            uptime_ppm: n[11],
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn sign_then_verify_round_trips_through_json(body in telemetry_strategy(), seed in any::<[u8; 32]>()) {
        let key = SecretKey::from_seed(&seed);
        let signed = Signed::sign(body, &key).unwrap();
        let json = serde_json::to_string(&signed).unwrap();
        let back: Signed<Telemetry> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &signed);
        back.verify(&key.public_key()).unwrap();
        let other = SecretKey::from_seed(&[seed[0] ^ 1; 32]).public_key();
        prop_assert!(back.verify(&other).is_err());
    }

    #[test]
    fn changing_any_field_of_a_paperwork_fails_its_checks(pick in any::<prop::sample::Index>(), pos in any::<usize>()) {
        let pw = examples::paperwork().unwrap();
        let hub = examples::hub_key().public_key();
        let mut value = serde_json::to_value(&pw).unwrap();
        let mut paths = Vec::new();
        leaves(&value, &mut Vec::new(), &mut paths);
        let path = pick.get(&paths).clone();
        mutate(leaf_mut(&mut value, &path), pos);
        let outcome = serde_json::from_value::<Signed<Paperwork>>(value)
            .map_err(|e| e.to_string())
            .and_then(|p| check_paperwork(&p, &hub).map_err(|e| e.to_string()));
        prop_assert!(outcome.is_err(), "mutating {:?} went unnoticed", path);
    }

    #[test]
    fn flipping_any_bit_of_a_signature_fails(byte in 0usize..64, bit in 0u8..8) {
        let pw = examples::paperwork().unwrap();
        let mut sig = pw.signature.to_bytes();
        sig[byte] ^= 1 << bit;
        let tampered = Signed { body: pw.body.clone(), signature: stacknet_protocol::Signature::from_bytes(&sig) };
        prop_assert!(check_paperwork(&tampered, &examples::hub_key().public_key()).is_err());
    }

    #[test]
    fn canonical_form_does_not_depend_on_member_order(seed in any::<u64>()) {
        let pw = examples::paperwork().unwrap();
        let value = serde_json::to_value(&pw).unwrap();
        let mut text = String::new();
        write_shuffled(&value, seed, &mut text);
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(jcs::canonicalize(&reparsed).unwrap(), jcs::canonicalize(&value).unwrap());
        let back: Signed<Paperwork> = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back.signing_bytes().unwrap(), pw.signing_bytes().unwrap());
        check_paperwork(&back, &examples::hub_key().public_key()).unwrap();
    }

    #[test]
    fn decoding_arbitrary_bytes_as_a_wire_message_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode::<HubMessage>(&bytes);
        let _ = wire::decode::<NodeMessage>(&bytes);
        if let Ok(part) = wire::decode_file_part(&bytes) {
            prop_assert_eq!(part.encode(), bytes.clone());
        }
    }

    #[test]
    fn file_parts_round_trip(offset in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 1..256)) {
        let part = wire::FilePart {
            contract: stacknet_protocol::ContractId::random(),
            sha256: stacknet_protocol::Sha256Digest::of(&data),
            offset,
            data: &data,
        };
        let bytes = part.encode();
        prop_assert_eq!(bytes.len(), wire::FILE_PART_HEADER_BYTES + data.len());
        prop_assert_eq!(wire::decode_file_part(&bytes).unwrap(), part);
    }

    /// What a node does with a task frame: decode it, or read just its type and contract id to
    /// refuse it. Whatever the bytes, neither panics, and a frame that decodes is never refused.
    #[test]
    fn mutated_task_frames_decode_or_are_refused_without_panicking(pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = task_frame(serde_json::json!({"model": "m", "messages": []})).into_bytes();
        let i = pos % bytes.len();
        bytes[i] = byte;
        bytes.truncate(cut % (bytes.len() + 1));
        if wire::decode::<HubMessage>(&bytes).is_err() {
            let _ = wire::undecodable_task(&bytes);
        }
    }

    #[test]
    fn decoding_mutated_frames_never_panics(pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let frame = wire::encode(&NodeMessage::Hello(Box::new(examples::hello().unwrap()))).unwrap();
        let mut bytes = frame.into_bytes();
        let i = pos % bytes.len();
        bytes[i] = byte;
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = wire::decode::<NodeMessage>(&bytes);
        let _ = wire::decode::<HubMessage>(&bytes);
    }
}

fn task_frame(request: Value) -> String {
    let task = wire::Task {
        contract: examples::signed_contract().unwrap(),
        request,
        attachments: Vec::new(),
    };
    wire::encode(&HubMessage::Task(Box::new(task))).unwrap()
}

#[test]
fn a_task_too_deep_to_decode_is_still_named_by_its_contract_id() {
    let id = examples::signed_contract().unwrap().body.id;
    let frame = task_frame(serde_json::json!({"model": "m", "messages": "deep here"}));
    assert!(wire::decode::<HubMessage>(frame.as_bytes()).is_ok());
    // serde_json refuses a `Value` nested deeper than 128; the fallback never builds one.
    let deep = frame.replacen(
        "\"deep here\"",
        &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        1,
    );
    assert!(wire::decode::<HubMessage>(deep.as_bytes()).is_err());
    assert_eq!(wire::undecodable_task(deep.as_bytes()), Some(id));
    // Only a task is named, and only by a readable id.
    let cancel = wire::encode(&HubMessage::Cancel { contract: id }).unwrap();
    assert_eq!(wire::undecodable_task(cancel.as_bytes()), None);
    let no_id = deep.replacen(&id.to_string(), "ct_nonsense", 1);
    assert_eq!(wire::undecodable_task(no_id.as_bytes()), None);
}

#[test]
fn wire_frames_round_trip_and_refuse_other_versions() {
    let msg = NodeMessage::Hello(Box::new(examples::hello().unwrap()));
    let frame = wire::encode(&msg).unwrap();
    assert_eq!(wire::decode::<NodeMessage>(frame.as_bytes()).unwrap(), msg);
    let v2 = frame.replacen("\"v\":1", "\"v\":2", 1);
    assert_eq!(
        wire::decode::<NodeMessage>(v2.as_bytes())
            .unwrap_err()
            .to_string(),
        "unsupported protocol version 2; this side speaks 1"
    );
    let none = r#"{"type":"heartbeat","at":"2026-11-22T10:00:00.000Z","active":0}"#;
    assert_eq!(
        wire::decode::<NodeMessage>(none.as_bytes()),
        Err(wire::WireError::MissingVersion)
    );
    let unknown = r#"{"v":1,"type":"launch_missiles"}"#;
    assert!(matches!(
        wire::decode::<NodeMessage>(unknown.as_bytes()),
        Err(wire::WireError::Malformed(_))
    ));
    let huge = vec![b' '; wire::MAX_FRAME_BYTES + 1];
    assert!(matches!(
        wire::decode::<HubMessage>(&huge),
        Err(wire::WireError::TooLarge { .. })
    ));
}

#[test]
fn a_signature_for_one_domain_never_verifies_as_another() {
    let hello = examples::hello().unwrap();
    let bytes = hello.signing_bytes().unwrap();
    let body = &bytes[bytes.iter().position(|&b| b == b'\n').unwrap()..];
    let key = examples::node_key().public_key();
    for domain in stacknet_protocol::Domain::ALL {
        let mut other = domain.tag().as_bytes().to_vec();
        other.extend_from_slice(body);
        assert_eq!(
            key.verify(&other, &hello.signature).is_ok(),
            domain == stacknet_protocol::Domain::Hello
        );
    }
}
