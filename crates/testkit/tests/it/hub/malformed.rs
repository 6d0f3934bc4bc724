//! Hostile requests over real HTTP, generated: bad JSON, wrong types, missing fields, huge numbers,
//! deep nesting, bad multipart, wrong content types, bad keys. Each gets a 4xx with an OpenAI error
//! body, the hub stays up, and no money moves.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use stacknet_ledger::{AccountId, Balance};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;

use super::money::{set_price, topup};
use super::{chat_body, client};

/// Enough to meet every kind of malformed request several times, few enough to run in seconds.
const CASES: u32 = 128;
/// The hub's body limit here: above the largest multipart text field, so that check is reached.
const MAX_BODY_BYTES: usize = 100_000;
const BOUNDARY: &str = "stacknet-test-boundary";
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

#[derive(Clone, Debug)]
enum Auth {
    Key,
    Missing,
    /// The whole `Authorization` header.
    Header(String),
}

/// One request: where it goes, how it is authenticated, its content type and its body.
#[derive(Clone, Debug)]
struct Call {
    method: reqwest::Method,
    /// Under `/v1`, or the whole path and query when it starts with `/stacknet`.
    path: String,
    auth: Auth,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Call {
    fn json(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: reqwest::Method::POST,
            path: path.to_owned(),
            auth: Auth::Key,
            content_type: Some("application/json".into()),
            body: body.into(),
        }
    }

    fn multipart(body: Vec<u8>) -> Self {
        Self {
            method: reqwest::Method::POST,
            path: "/images/edits".to_owned(),
            auth: Auth::Key,
            content_type: Some(format!("multipart/form-data; boundary={BOUNDARY}")),
            body,
        }
    }
}

fn json_path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("/chat/completions"),
        Just("/completions"),
        Just("/embeddings")
    ]
}

/// A well-formed body for each JSON endpoint, that the hub would take.
fn valid_body(path: &str) -> Value {
    match path {
        "/completions" => json!({"model": MOCK_MODEL, "prompt": "hello", "max_tokens": 16}),
        "/embeddings" => json!({"model": MOCK_MODEL, "input": "hello"}),
        _ => chat_body(false),
    }
}

/// Values no field of a request takes where a number, a flag, a list or a role is wanted.
fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!([])),
        Just(json!("")),
        Just(json!(true)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1.5)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!({"nested": [1, 2, {"x": null}]})),
        any::<i64>().prop_map(|n| json!(n.saturating_mul(1_000_000_000).min(-1))),
        "[a-z]{1,8}".prop_map(Value::from),
    ]
}

/// A field and a value it refuses: of the wrong type, out of range, or huge.
fn bad_field(path: &str) -> BoxedStrategy<(String, Value)> {
    let common = prop_oneof![
        (
            Just("model"),
            wrong_value().prop_filter("not a name", |v| v.as_str().is_none_or(str::is_empty))
        ),
        (Just("model"), "[a-z]{257,300}".prop_map(Value::from)),
        (
            Just("user"),
            wrong_value().prop_filter("not text", |v| !v.is_string())
        ),
    ];
    let text = prop_oneof![
        (
            Just("stream"),
            wrong_value().prop_filter("not a flag", |v| !v.is_boolean())
        ),
        (
            Just("temperature"),
            wrong_value().prop_filter("outside 0..=2", |v| !v
                .as_f64()
                .is_some_and(|f| (0.0..=2.0).contains(&f)))
        ),
        (
            Just("top_p"),
            wrong_value().prop_filter("outside 0..=1", |v| !v
                .as_f64()
                .is_some_and(|f| (0.0..=1.0).contains(&f)))
        ),
        (
            Just("max_tokens"),
            wrong_value().prop_filter("not 1..=2^32-1", |v| !v
                .as_u64()
                .is_some_and(|n| (1..=u64::from(u32::MAX)).contains(&n)))
        ),
        (
            Just("n"),
            wrong_value().prop_filter("not 1..=8", |v| !v.as_u64().is_some_and(|n| (1..=8).contains(&n)))
        ),
        (Just("n"), (9u64..).prop_map(Value::from)),
        (Just("max_tokens"), Just(json!(4_294_967_296u64))),
    ];
    let common = common.prop_map(|(f, v)| (f.to_owned(), v));
    let text = text.prop_map(|(f, v)| (f.to_owned(), v));
    match path {
        "/chat/completions" => prop_oneof![
            common,
            text,
            wrong_value().prop_map(|v| ("messages".to_owned(), v)),
            "[a-z]{1,12}"
                .prop_filter("not a role", |r| !ROLES.contains(&r.as_str()))
                .prop_map(|r| ("role".to_owned(), Value::from(r))),
            wrong_value()
                .prop_filter("not content", |v| !v.is_string() && !v.is_array())
                .prop_map(|v| ("content".to_owned(), v)),
        ]
        .boxed(),
        "/completions" => prop_oneof![
            common,
            text,
            wrong_value()
                .prop_filter("not a prompt", |v| !v.is_string() || v == "")
                .prop_map(|v| ("prompt".to_owned(), v)),
        ]
        .boxed(),
        _ => prop_oneof![
            common,
            wrong_value()
                .prop_filter("not an input", |v| !v.is_string() || v == "")
                .prop_map(|v| ("input".to_owned(), v)),
        ]
        .boxed(),
    }
}

/// Sets `field` (or, for `role` and `content`, that field of the first message) to `value`.
fn with_field(mut body: Value, field: &str, value: Value) -> Value {
    match field {
        "role" | "content" => body["messages"][0][field] = value,
        _ => body[field] = value,
    }
    body
}

/// `depth` arrays, one in the other.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn malformed_json() -> impl Strategy<Value = Call> {
    prop_oneof![
        // Bytes that are not a request (not JSON, not UTF-8, not an object).
        (json_path(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(p, b)| Call::json(p, b)),
        (
            json_path(),
            prop_oneof![Just("null"), Just("[]"), Just("\"text\""), Just("42"), Just("{")]
        )
            .prop_map(|(p, b)| Call::json(p, b)),
        // A good body cut short.
        (json_path(), any::<prop::sample::Index>()).prop_map(|(p, at)| {
            let body = valid_body(p).to_string();
            Call::json(p, body[..at.index(body.len() - 1)].to_owned())
        }),
        // A field of the wrong type, out of range, or huge.
        json_path()
            .prop_flat_map(|p| (Just(p), bad_field(p)))
            .prop_map(|(p, (field, value))| {
                Call::json(p, with_field(valid_body(p), &field, value).to_string())
            }),
        // A required field left out.
        json_path()
            .prop_flat_map(|p| {
                let required: &[&str] = if p == "/chat/completions" {
                    &["model", "messages"]
                } else if p == "/completions" {
                    &["model", "prompt"]
                } else {
                    &["model", "input"]
                };
                (Just(p), prop::sample::select(required))
            })
            .prop_map(|(p, field)| {
                let mut body = valid_body(p);
                body.as_object_mut().expect("an object").remove(field);
                Call::json(p, body.to_string())
            }),
        // Numbers beyond what JSON parsers hold, in a numeric field.
        json_path()
            .prop_flat_map(|p| {
                let fields = if p == "/embeddings" {
                    vec!["dimensions"]
                } else {
                    vec!["max_tokens", "n", "temperature"]
                };
                (Just(p), prop::sample::select(fields))
            })
            .prop_flat_map(|(p, field)| (
                Just(p),
                Just(field),
                prop::sample::select(vec![
                    "1e400",
                    "-1e400",
                    "18446744073709551616",
                    "-9223372036854775809",
                    "123456789012345678901234567890",
                ])
            ))
            .prop_map(|(p, field, number)| {
                let mut body = valid_body(p);
                body.as_object_mut().expect("an object").remove(field);
                let body = body.to_string();
                Call::json(p, format!("{{\"{field}\":{number},{}", &body[1..]))
            }),
        // Nesting past the limit, inside a field or as a field of its own.
        (json_path(), 33usize..300, any::<bool>()).prop_map(|(p, depth, inside)| {
            let body = valid_body(p).to_string();
            let body = if inside && p == "/chat/completions" {
                body.replacen("\"hello there\"", &nested(depth), 1)
            } else {
                format!("{{\"metadata\":{},{}", nested(depth), &body[1..])
            };
            Call::json(p, body)
        }),
    ]
}

/// A well-formed image edit's multipart body, as its parts.
fn edit_parts() -> Vec<(String, Option<&'static str>, Vec<u8>)> {
    vec![
        ("model".into(), None, MOCK_MODEL.as_bytes().to_vec()),
        ("prompt".into(), None, b"make it blue".to_vec()),
        ("n".into(), None, b"1".to_vec()),
        (
            "image".into(),
            Some("a.png"),
            stacknet_testkit::fixtures::mask_png(2, 2, |_, _| false),
        ),
    ]
}

fn multipart_body(parts: &[(String, Option<&'static str>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, bytes) in parts {
        let file = filename.map_or(String::new(), |f| {
            format!("; filename=\"{f}\"\r\nContent-Type: image/png")
        });
        out.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn malformed_multipart() -> impl Strategy<Value = Call> {
    let good = multipart_body(&edit_parts());
    let closing = format!("--{BOUNDARY}--\r\n").len();
    prop_oneof![
        // Cut before its closing boundary.
        (0..good.len() - closing).prop_map(move |at| Call::multipart(good[..at].to_vec())),
        // A part left out, repeated, or with a value the field refuses.
        // (`n`, the third, may be left out.)
        prop::sample::select(vec![0usize, 1, 3]).prop_map(|i| {
            let mut parts = edit_parts();
            parts.remove(i);
            Call::multipart(multipart_body(&parts))
        }),
        (0usize..4).prop_map(|i| {
            let mut parts = edit_parts();
            parts.push(parts[i].clone());
            Call::multipart(multipart_body(&parts))
        }),
        (
            prop::sample::select(vec!["n", "prompt", "model", "response_format", "size"]),
            prop::sample::select(vec![
                b"0".to_vec(),
                b"-1".to_vec(),
                b"99999999999999999999999".to_vec(),
                b"1e400".to_vec(),
                b"\xff\xfe not utf-8".to_vec(),
                vec![b'x'; 70_000],
                Vec::new(),
            ]),
        )
            .prop_filter("a value the field refuses", |(field, value)| refused(
                field, value
            ))
            .prop_map(|(field, value)| {
                let mut parts = edit_parts();
                match parts.iter_mut().find(|p| p.0 == field) {
                    Some(part) => part.2 = value,
                    None => parts.push((field.to_owned(), None, value)),
                }
                Call::multipart(multipart_body(&parts))
            }),
        // Bytes that are not multipart at all.
        prop::collection::vec(any::<u8>(), 0..128).prop_map(Call::multipart),
    ]
}

/// Whether the hub refuses `value` as the multipart text field `field` of an image edit.
fn refused(field: &str, value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return true;
    };
    match field {
        _ if text.len() > 64 * 1024 => true,
        "n" => !text.parse::<u64>().is_ok_and(|n| (1..=10).contains(&n)),
        "prompt" => text.is_empty() || text.len() > 32_000,
        "model" => text.is_empty() || text.len() > 256,
        "size" => !stacknet_api::request::image_generation::SIZES.contains(&text),
        "response_format" => text != "b64_json",
        _ => false,
    }
}

fn wrong_content_type() -> impl Strategy<Value = Call> {
    prop_oneof![
        // An image edit that is not multipart, or has no boundary.
        prop::sample::select(vec![
            None,
            Some("application/json"),
            Some("text/plain"),
            Some("multipart/form-data"),
            Some("multipart/form-data; boundary=something-else"),
        ])
        .prop_map(|ct| Call {
            content_type: ct.map(str::to_owned),
            ..Call::multipart(
                json!({"model": MOCK_MODEL, "prompt": "blue"})
                    .to_string()
                    .into_bytes()
            )
        }),
        // A JSON endpoint sent a form.
        json_path().prop_map(|p| Call {
            content_type: Some(format!("multipart/form-data; boundary={BOUNDARY}")),
            ..Call::json(p, multipart_body(&edit_parts()))
        }),
    ]
}

fn bad_auth() -> impl Strategy<Value = Call> {
    let header = prop_oneof![
        Just(Auth::Missing),
        "sk_[a-zA-Z0-9]{0,40}".prop_map(|k| Auth::Header(format!("Bearer {k}"))),
        "[ -~]{0,40}".prop_map(Auth::Header),
        "[a-zA-Z0-9]{1,20}".prop_map(|k| Auth::Header(format!("Basic {k}"))),
    ];
    (json_path(), header).prop_map(|(p, auth)| Call {
        auth,
        ..Call::json(p, valid_body(p).to_string())
    })
}

/// A method the endpoint does not take, a query string that does not parse, a body over the limit.
fn refused_by_the_router() -> impl Strategy<Value = Call> {
    let endpoint = prop_oneof![json_path(), Just("/images/edits")];
    prop_oneof![
        (
            endpoint,
            prop::sample::select(vec!["GET", "PUT", "DELETE", "PATCH"])
        )
            .prop_map(|(p, method)| Call {
                method: method.parse().expect("a method"),
                ..Call::json(p, valid_body(p).to_string())
            }),
        prop::sample::select(vec![
            "/stacknet/v1/log/proof/inclusion?paperwork=pw_00000000000000000000000000000000&tree_size=abc",
            "/stacknet/v1/log/proof/inclusion?tree_size=1",
            "/stacknet/v1/log/proof/inclusion?paperwork=nonsense",
            "/stacknet/v1/log/proof/consistency?from=-1",
            "/stacknet/v1/log/proof/consistency?from=1&to=18446744073709551616",
            "/stacknet/v1/log/proof/consistency",
            "/stacknet/v1/statement?limit=many",
        ])
        .prop_map(|path| Call {
            method: reqwest::Method::GET,
            ..Call::json(path, Vec::new())
        }),
        (json_path(), MAX_BODY_BYTES + 1..2 * MAX_BODY_BYTES).prop_map(|(p, len)| {
            let mut body = valid_body(p);
            body["user"] = Value::from("x".repeat(len));
            Call::json(p, body.to_string())
        }),
    ]
}

fn malformed() -> impl Strategy<Value = Call> {
    prop_oneof![
        4 => malformed_json(),
        2 => malformed_multipart(),
        1 => wrong_content_type(),
        1 => bad_auth(),
        2 => refused_by_the_router(),
    ]
}

/// The Stack's balance and how many transfers its statement has: what a request could move.
async fn money(net: &TestNetwork) -> (Balance, usize, bool) {
    let ledger = &net.hub.hub.state.ledger;
    let stack = AccountId::stack(net.stack);
    let balance = ledger.balance(stack.clone()).await.unwrap();
    let lines = ledger.transfers_of(stack, 1000, None).await.unwrap().len();
    let balanced = ledger.sum_check().await.unwrap().is_balanced();
    (balance, lines, balanced)
}

async fn send(net: &TestNetwork, call: &Call) -> Result<(u16, Value), String> {
    let url = if call.path.starts_with("/stacknet") {
        format!("{}{}", net.hub.url(), call.path)
    } else {
        format!("{}{}", net.base_url(), call.path)
    };
    let mut req = client().request(call.method.clone(), url).body(call.body.clone());
    if let Some(ct) = &call.content_type {
        req = req.header("content-type", ct);
    }
    req = match &call.auth {
        Auth::Key => req.bearer_auth(&net.api_key),
        Auth::Missing => req,
        Auth::Header(h) => req.header("authorization", h),
    };
    let resp = req
        .send()
        .await
        .map_err(|e| format!("the hub did not answer: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).map_err(|e| format!("{status}: not JSON ({e}): {text}"))?;
    Ok((status, body))
}

fn is_openai_error(body: &Value) -> bool {
    let error = &body["error"];
    body.as_object().is_some_and(|o| o.len() == 1)
        && error["message"].as_str().is_some_and(|m| !m.is_empty())
        && error["type"].is_string()
        && error.get("param").is_some_and(|p| p.is_null() || p.is_string())
        && error.get("code").is_some_and(|c| c.is_null() || c.is_string())
}

#[test]
fn any_malformed_request_gets_a_4xx_openai_error_and_moves_no_money() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = rt.block_on(async {
        let net = TestNetwork::start_with(Script::text("fine"), |c| c.max_body_bytes = MAX_BODY_BYTES).await;
        // Priced and funded, so a request that got as far as its hold would move money.
        set_price(&net).await;
        topup(&net, 1_000_000_000).await;
        net
    });
    let before = rt.block_on(money(&net));
    assert!(before.2, "the books balance");

    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&malformed(), |call| {
        rt.block_on(async {
            let (status, body) = send(&net, &call).await.map_err(TestCaseError::fail)?;
            prop_assert!((400..500).contains(&status), "{status} {body}");
            prop_assert!(
                is_openai_error(&body),
                "not an OpenAI error body: {status} {body}"
            );
            prop_assert_eq!(money(&net).await, before, "money moved");
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    // Still up, and still serving: a good request goes through and is charged.
    rt.block_on(async {
        let resp = client()
            .post(format!("{}/chat/completions", net.base_url()))
            .bearer_auth(&net.api_key)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        assert_ne!(money(&net).await.0.posted, before.0.posted);
    });
}
