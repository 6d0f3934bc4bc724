//! Files between client, hub and node: an upload larger than the wire's frame limit travels to the
//! node in binary frames, the node's output bytes come back the same way, and the paperwork's
//! digests are what anyone recomputes from the request and the response.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_api::output::{digest_of_response, digest_of_stream};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::paperwork::request_digest;
use stacknet_protocol::Sha256Digest;
use stacknet_testkit::fixtures::{inverted, InvertImages, INVERT_MODEL};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use super::{chat_body, client, paperwork_of, post_chat, sse_events};

pub(crate) const BOUNDARY: &str = "stacknet-test-boundary-7f3a";

/// A refused upload's case: its text fields, its files (field, bytes), and the field refused.
pub(crate) type RefusedUpload<'a> = (&'a [(&'a str, &'a str)], Vec<(&'a str, &'a [u8])>, &'a str);

/// A multipart/form-data body: text fields, then one file field.
pub(crate) fn multipart(fields: &[(&str, &str)], file: (&str, &str, &str, &[u8])) -> Vec<u8> {
    multipart_files(fields, &[file])
}

/// A multipart/form-data body: text fields, then file fields (name, file name, type, bytes).
pub(crate) fn multipart_files(fields: &[(&str, &str)], files: &[(&str, &str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    for (name, filename, content_type, bytes) in files {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// `POST` of a multipart `body` (made by [`multipart`]) to `path` of the network's OpenAI API.
pub(crate) async fn post_multipart(net: &TestNetwork, path: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{}/{path}", net.base_url()))
        .bearer_auth(&net.api_key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Pseudo-random bytes (no two frames alike), deterministic.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn a_file_larger_than_a_frame_travels_to_the_node_and_bytes_come_back() {
    let mut net =
        TestNetwork::start_without_nodes(Script::echo(), |c| c.max_body_bytes = 32 * 1024 * 1024).await;
    net.add_backend_node(Arc::new(InvertImages)).await;
    // Over the 4 MiB frame limit both ways: only binary frames in pieces can carry it.
    // A PNG's header (the hub reads the size an upload declares), then noise.
    let mut image = stacknet_testkit::fixtures::mask_png(4, 4, |_, _| false);
    image.extend(noise(6 * 1024 * 1024 + 123));
    let body = multipart(
        &[("model", INVERT_MODEL), ("prompt", "invert it"), ("n", "2")],
        ("image", "in.png", "image/png", &image),
    );
    let resp = post_multipart(&net, "images/edits", body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let images: Vec<Vec<u8>> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| engine.decode(d["b64_json"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0], inverted(&image, 0));
    assert_eq!(images[1], inverted(&image, 1));
    // The paperwork binds the bytes the client got and the file the node was given.
    let pw = paperwork_of(&net, &answer).await;
    assert_eq!(
        pw.body.output_sha256,
        digest_of_response(Workload::ImageEdit, &answer).unwrap()
    );
    assert_eq!(pw.body.usage.units, 2);
    let descriptor = json!({
        "sha256": Sha256Digest::of(&image).to_string(), "size": image.len(),
        "content_type": "image/png", "filename": "in.png",
    });
    let request = json!({"model": INVERT_MODEL, "prompt": "invert it", "n": 2, "image": descriptor});
    assert_eq!(pw.body.request_sha256, request_digest(&request).unwrap());
}

#[tokio::test]
async fn an_upload_without_its_file_or_with_a_bad_field_is_refused_by_name() {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(InvertImages)).await;
    let post = |body: Vec<u8>| {
        client()
            .post(format!("{}/images/edits", net.base_url()))
            .bearer_auth(&net.api_key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
    };
    let no_image = multipart(
        &[("model", INVERT_MODEL), ("prompt", "x")],
        ("other", "a.bin", "image/png", b"abc"),
    );
    let resp = post(no_image).await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "image");
    let bad_n = multipart(
        &[("model", INVERT_MODEL), ("prompt", "x"), ("n", "99")],
        ("image", "a.png", "image/png", b"abc"),
    );
    let v: Value = post(bad_n).await.unwrap().json().await.unwrap();
    assert_eq!(v["error"]["param"], "n");
    let resp = client()
        .post(format!("{}/images/edits", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(&json!({"model": INVERT_MODEL, "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json", "{v}");
}

#[tokio::test]
async fn the_output_digest_is_recomputed_from_the_client_response_streamed_or_not() {
    let net = TestNetwork::start(Script::text("The capital of France is Paris.").chunks(5)).await;
    let whole: Value = post_chat(&net, &chat_body(false)).await.json().await.unwrap();
    let pw = paperwork_of(&net, &whole).await;
    let digest = digest_of_response(Workload::Chat, &whole).unwrap();
    assert_eq!(pw.body.output_sha256, digest);

    let text = post_chat(&net, &chat_body(true)).await.text().await.unwrap();
    let events = sse_events(&text);
    let chunks: Vec<Value> = events.into_iter().filter(Value::is_object).collect();
    let last = chunks.last().unwrap().clone();
    let pw = paperwork_of(&net, &last).await;
    assert_eq!(
        pw.body.output_sha256,
        digest_of_stream(Workload::Chat, &chunks).unwrap()
    );
    // The same content streamed or not: the same digest.
    assert_eq!(pw.body.output_sha256, digest);
}
