//! Image generation through hub and node to an upstream that serves OpenAI's images API (a scripted
//! mock drawing one-colour PNGs of the size asked): the answer's images are the upstream's bytes,
//! the paperwork signs their digest and counts one unit per image, and bad input is refused before
//! anything is held; the upstream's own refusal passes through as a 400. Images asked for by URL are
//! kept in the hub's store (SQLite and PostgreSQL) and served without a key until they expire. A
//! node in front of a ComfyUI server (a scripted mock) fills the operator's workflow, follows it over
//! the websocket and returns its output images; a refused workflow or a failure mid-job is named and
//! costs nothing. Edits (multipart `image` and `mask`) reach an OpenAI-compatible upstream as its
//! own multipart form, ComfyUI as uploaded inputs of the edit workflow, and AUTOMATIC1111 as
//! `img2img` with OpenAI's mask inverted into A1111's; an upload that is not an image, a mask of
//! another size, an unknown size, `n` over the limit or a prompt over the limit is a 400 before
//! anything is held.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_ledger::AccountId;
use stacknet_node::backend::automatic1111::Automatic1111;
use stacknet_node::backend::comfyui::ComfyUi;
use stacknet_node::backend::image::Rgb;
use stacknet_node::backend::upstream::OpenAiUpstream;
use stacknet_node::config::{Automatic1111Config, ComfyUiConfig, UpstreamConfig};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::Sha256Digest;
use stacknet_testkit::fixtures::mask_png;
use stacknet_testkit::mock_a1111::{self, MockA1111};
use stacknet_testkit::mock_comfyui::{self, MockComfyUi, Mode};
use stacknet_testkit::mock_upstream::images::{colour, png};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use super::files::{multipart_files, post_multipart, RefusedUpload};
use super::money::{on_both_stores, Db};
use super::{client, paperwork_of};

const IMAGES: &str = "mock-images";

async fn network() -> TestNetwork {
    network_on(&Db::Sqlite).await
}

async fn network_on(db: &Db) -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |config| db.apply(config)).await;
    let mut config = UpstreamConfig::new(net.upstream.base_url(), Vec::new());
    config.image_models = vec![IMAGES.to_owned()];
    net.add_backend_node(Arc::new(OpenAiUpstream::new(&config).unwrap()))
        .await;
    net
}

/// `POST /images/edits` of `fields` and `files` (field, bytes), as an SDK sends them.
async fn edit(net: &TestNetwork, fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> reqwest::Response {
    let files: Vec<(&str, &str, &str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (*name, "upload.png", "image/png", *bytes))
        .collect();
    post_multipart(net, "images/edits", multipart_files(fields, &files)).await
}

/// The images of an answer, decoded.
fn decoded_images(answer: &Value) -> Vec<Rgb> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d["b64_json"].as_str().unwrap())
                .unwrap();
            Rgb::decode(&bytes).unwrap()
        })
        .collect()
}

async fn generate(net: &TestNetwork, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/images/generations", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn generations_are_forwarded_and_their_images_signed_for() {
    let net = network().await;
    let resp = generate(
        &net,
        &json!({"model": IMAGES, "prompt": "a red fox", "n": 2, "size": "512x512", "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["b64_json"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            bytes,
            png("a red fox", i as u64, 512, 512),
            "the upstream's bytes, unchanged"
        );
        let img = Rgb::decode(&bytes).unwrap();
        assert_eq!(
            (img.width, img.height, img.pixel(7, 7)),
            (512, 512, colour("a red fox", i as u64))
        );
    }
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(
        (sent["model"].as_str(), sent["n"].as_u64()),
        (Some(IMAGES), Some(2))
    );
    let pw = paperwork_of(&net, &answer).await;
    assert_eq!(
        pw.body.output_sha256,
        digest_of_response(Workload::ImageGeneration, &answer).unwrap()
    );
    assert_eq!(pw.body.usage.units, 2);
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_held_and_upstream_refusals_pass_through() {
    let net = network().await;
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    for (body, param) in [
        (
            json!({"model": IMAGES, "prompt": "a fox", "size": "100x100"}),
            "size",
        ),
        (json!({"model": IMAGES, "prompt": "a fox", "n": 11}), "n"),
        (json!({"model": IMAGES, "prompt": ""}), "prompt"),
        (json!({"model": IMAGES, "prompt": "x".repeat(32_001)}), "prompt"),
        (
            json!({"model": IMAGES, "prompt": "a fox", "response_format": "base64"}),
            "response_format",
        ),
        (
            json!({"model": IMAGES, "prompt": "a fox", "seed": "seven"}),
            "seed",
        ),
    ] {
        let resp = generate(&net, &body).await;
        assert_eq!(resp.status(), 400, "{param}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    // A size the hub takes and this upstream does not: its 400, named, and nothing charged.
    let resp = generate(
        &net,
        &json!({"model": IMAGES, "prompt": "a fox", "size": "1792x1024"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("Invalid size"),
        "{err}"
    );
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
}

#[tokio::test]
async fn images_that_break_the_terms_asked_are_refused_and_cost_nothing() {
    let net = network().await;
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    for (prompt, why) in [
        ("short change", "1 images for the 2 asked"),
        ("small print", "image 0 is 256x256, not the 512x512 asked"),
    ] {
        let resp = generate(
            &net,
            &json!({"model": IMAGES, "prompt": prompt, "n": 2, "size": "512x512"}),
        )
        .await;
        assert_eq!(resp.status(), 502, "{prompt}");
        let err: Value = resp.json().await.unwrap();
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("breaks the request's terms"), "{err}");
        assert!(message.contains(why), "{err}");
    }
    assert_eq!(net.upstream.requests(), 2, "both reached the upstream");
    assert_eq!(
        ledger.balance(AccountId::stack(net.stack)).await.unwrap(),
        before,
        "nothing charged: the hold was released, no paperwork accepted"
    );
}

on_both_stores!(images_by_url_are_served_without_a_key_from_the_shared_store_until_they_expire);

async fn images_by_url_are_served_without_a_key_from_the_shared_store_until_they_expire(db: Db) {
    let net = network_on(&db).await;
    let resp = generate(
        &net,
        &json!({"model": IMAGES, "prompt": "a blue heron", "n": 2, "size": "256x256", "response_format": "url"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let now_s = stacknet_protocol::Timestamp::now().unix_ms() / 1000;
    let expires = answer["expires_at"].as_i64().unwrap();
    assert!((now_s + 3590..=now_s + 3610).contains(&expires), "{answer}");
    // The upstream was asked for the bytes.
    assert_eq!(
        net.upstream.last_request().unwrap()["response_format"],
        "b64_json"
    );
    let origin = net.base_url().trim_end_matches("/v1").to_owned();
    let mut fetched = Vec::new();
    for (i, d) in answer["data"].as_array().unwrap().iter().enumerate() {
        assert!(d.get("b64_json").is_none(), "{d}");
        let url = d["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{origin}/stacknet/v1/files/file_")),
            "{url}"
        );
        let got = client().get(url).send().await.unwrap();
        assert_eq!(got.status(), 200, "no key needed: the URL is the capability");
        assert_eq!(got.headers()["content-type"], "image/png");
        let bytes = got.bytes().await.unwrap().to_vec();
        assert_eq!(bytes, png("a blue heron", i as u64, 256, 256));
        fetched.push(json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(&bytes)}));
    }
    // The paperwork signed these very bytes.
    let pw = paperwork_of(&net, &answer).await;
    let as_inline = json!({"data": fetched});
    assert_eq!(
        pw.body.output_sha256,
        digest_of_response(Workload::ImageGeneration, &as_inline).unwrap()
    );

    // Unknown, malformed and expired ids: 404 with OpenAI's error body.
    let store = net.hub.hub.state.store.clone();
    let past = stacknet_protocol::Timestamp::now().plus_ms(-1);
    let expired = "file_0123456789abcdef0123456789abcdef";
    store
        .put_file(stacknet_hub::store::FileRecord {
            id: expired.to_owned(),
            content_type: "image/png".to_owned(),
            bytes: vec![1, 2, 3],
            stack: net.stack,
            created_at: past.plus_ms(-3_600_000),
            expires_at: past,
        })
        .await
        .unwrap();
    for id in [
        expired,
        "file_ffffffffffffffffffffffffffffffff",
        "file_..%2F..%2Fetc",
    ] {
        let got = client()
            .get(format!("{origin}/stacknet/v1/files/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 404, "{id}");
        let err: Value = got.json().await.unwrap();
        assert_eq!(err["error"]["code"], "not_found");
    }
    // The sweep deletes what expired, and nothing else.
    assert_eq!(
        store
            .forget_files(stacknet_protocol::Timestamp::now())
            .await
            .unwrap(),
        1
    );
    let first = answer["data"][0]["url"].as_str().unwrap();
    assert_eq!(client().get(first).send().await.unwrap().status(), 200);
}

const COMFY: &str = "comfy-sdxl";

/// The operator's workflow, in ComfyUI's API format, with placeholders.
fn workflow() -> Value {
    json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}", "steps": 4, "model": ["4", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl_turbo.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": "{{n}}"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}, cinematic", "clip": ["4", 1]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "stacknet"}},
    })
}

/// The operator's edit workflow: the upload loaded, encoded and redrawn.
fn edit_workflow() -> Value {
    json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
        "3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}", "denoise": 0.6, "latent_image": ["2", 0]}},
        "2": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "stacknet"}},
    })
}

async fn comfy_network(mode: Mode) -> (TestNetwork, MockComfyUi, tempfile::TempDir) {
    let comfy = MockComfyUi::start(mode).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("workflow.json");
    std::fs::write(&path, workflow().to_string()).unwrap();
    let edit_path = dir.path().join("edit.json");
    std::fs::write(&edit_path, edit_workflow().to_string()).unwrap();
    let config = ComfyUiConfig {
        base_url: comfy.base_url.clone(),
        model: COMFY.to_owned(),
        workflow: path,
        edit_workflow: Some(edit_path),
        timeout_secs: Some(30),
    };
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(ComfyUi::new(&config).unwrap()))
        .await;
    (net, comfy, dir)
}

#[tokio::test]
async fn a_comfyui_workflow_is_filled_followed_over_its_websocket_and_its_images_returned() {
    let (net, comfy, _dir) = comfy_network(Mode::Render).await;
    let resp = generate(
        &net,
        &json!({"model": COMFY, "prompt": "a lighthouse", "n": 2, "size": "1024x1536", "seed": 5}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let sent = &comfy.submitted()[0];
    assert_eq!(sent["3"]["inputs"]["seed"], 5);
    assert_eq!(
        sent["5"]["inputs"],
        json!({"width": 1024, "height": 1536, "batch_size": 2})
    );
    assert_eq!(sent["6"]["inputs"]["text"], "a lighthouse, cinematic");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "the outputs, not the preview");
    for (i, d) in data.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["b64_json"].as_str().unwrap())
            .unwrap();
        let img = Rgb::decode(&bytes).unwrap();
        assert_eq!((img.width, img.height), (1024, 1536));
        assert_eq!(
            img.pixel(0, 0),
            mock_comfyui::colour("a lighthouse, cinematic", i as u64)
        );
    }
    let pw = paperwork_of(&net, &answer).await;
    assert_eq!(pw.body.usage.units, 2);
    assert_eq!(
        pw.body.output_sha256,
        digest_of_response(Workload::ImageGeneration, &answer).unwrap()
    );
}

#[tokio::test]
async fn a_comfyui_failure_mid_job_or_a_refused_workflow_is_named_and_costs_nothing() {
    for (mode, says) in [
        (
            Mode::FailIn {
                node: "3".to_owned(),
                message: "CUDA out of memory".to_owned(),
            },
            "ComfyUI failed in node 3 (KSampler): CUDA out of memory",
        ),
        (Mode::Refuse, "node 4: Value not in list: ckpt_name"),
    ] {
        let (net, comfy, _dir) = comfy_network(mode).await;
        let ledger = &net.hub.hub.state.ledger;
        let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
        let resp = generate(&net, &json!({"model": COMFY, "prompt": "a lighthouse"})).await;
        assert!(!resp.status().is_success());
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"]["message"].as_str().unwrap().contains(says), "{err}");
        assert_eq!(comfy.submitted().len(), 1);
        assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
    }
}

#[tokio::test]
async fn edits_are_forwarded_to_an_upstream_as_its_own_multipart_form() {
    let net = network().await;
    let image = png("the input", 0, 256, 256);
    let mask = mask_png(256, 256, |x, _| x < 128);
    let resp = edit(
        &net,
        &[
            ("model", IMAGES),
            ("prompt", "a blue door"),
            ("n", "2"),
            ("response_format", "url"),
        ],
        &[("image", &image), ("mask", &mask)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let urls: Vec<&str> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2, "{answer}");
    for (i, url) in urls.iter().enumerate() {
        let bytes = client().get(*url).send().await.unwrap().bytes().await.unwrap();
        let img = Rgb::decode(&bytes).unwrap();
        assert_eq!(
            (img.width, img.height, img.pixel(0, 0)),
            (256, 256, colour("a blue door", i as u64)),
            "the upstream drew it at the upload's size"
        );
    }
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(
        (
            sent["model"].as_str(),
            sent["n"].as_str(),
            sent["response_format"].as_str()
        ),
        (Some(IMAGES), Some("2"), Some("b64_json")),
        "the bytes are asked for: the hub serves the URL"
    );
    assert_eq!(sent["image"]["sha256"], Sha256Digest::of(&image).to_string());
    assert_eq!(sent["mask"]["sha256"], Sha256Digest::of(&mask).to_string());
}

#[tokio::test]
async fn bad_edits_are_refused_before_anything_is_held() {
    let net = network().await;
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    let image = png("the input", 0, 64, 64);
    let wide_mask = mask_png(64, 32, |_, _| true);
    let long = "x".repeat(32_001);
    let cases: [RefusedUpload<'_>; 6] = [
        (&[("size", "100x100")], vec![("image", &image)], "size"),
        (&[("n", "11")], vec![("image", &image)], "n"),
        (&[], vec![("image", &image), ("mask", &wide_mask)], "mask"),
        (&[], vec![("image", b"GIF89a, not one we take")], "image"),
        (&[], vec![("image", &image), ("mask", &image[..20])], "mask"),
        (&[("prompt", long.as_str())], vec![("image", &image)], "prompt"),
    ];
    for (extra, files, param) in cases {
        let mut fields = vec![("model", IMAGES)];
        if !extra.iter().any(|(k, _)| *k == "prompt") {
            fields.push(("prompt", "a door"));
        }
        fields.extend_from_slice(extra);
        let resp = edit(&net, &fields, &files).await;
        assert_eq!(resp.status(), 400, "{param}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
}

#[tokio::test]
async fn a_comfyui_edit_uploads_its_input_and_fills_the_edit_workflow() {
    let (net, comfy, _dir) = comfy_network(Mode::Render).await;
    let image = png("the input", 0, 96, 64);
    let resp = edit(
        &net,
        &[("model", COMFY), ("prompt", "a red door"), ("seed", "3")],
        &[("image", &image)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let uploads = comfy.uploads();
    let (name, bytes) = uploads.iter().next().unwrap();
    assert_eq!(
        bytes.as_ref(),
        image.as_slice(),
        "the upload, as the client sent it"
    );
    let sent = &comfy.submitted()[0];
    assert_eq!(sent["1"]["inputs"]["image"], name.as_str());
    assert_eq!(sent["3"]["inputs"]["seed"], 3);
    let images = decoded_images(&answer);
    assert_eq!(
        (images.len(), images[0].width, images[0].height),
        (1, 96, 64),
        "drawn at the loaded image's size"
    );
    assert_eq!(images[0].pixel(0, 0), mock_comfyui::colour("a red door", 0));
}

const A1111: &str = "sd15";

async fn a1111_network(mode: mock_a1111::Mode) -> (TestNetwork, MockA1111) {
    let a1111 = MockA1111::start(mode).await.unwrap();
    let config = Automatic1111Config {
        base_url: a1111.base_url.clone(),
        model: A1111.to_owned(),
        checkpoint: Some("v1-5-pruned-emaonly.safetensors".to_owned()),
        steps: Some(8),
        sampler: None,
        denoising_strength: Some(0.5),
        timeout_secs: Some(30),
    };
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(Automatic1111::new(&config).unwrap()))
        .await;
    (net, a1111)
}

#[tokio::test]
async fn automatic1111_serves_txt2img_and_img2img_with_the_mask_inverted() {
    let (net, a1111) = a1111_network(mock_a1111::Mode::Render).await;
    let resp = generate(
        &net,
        &json!({"model": A1111, "prompt": "a harbour", "n": 2, "size": "256x256", "seed": 11}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let images = decoded_images(&answer);
    assert_eq!(images.len(), 2, "the grid is not an image asked for");
    for (i, img) in images.iter().enumerate() {
        assert_eq!(
            (img.width, img.height, img.pixel(3, 3)),
            (256, 256, mock_a1111::colour("a harbour", i as u64))
        );
    }
    let (endpoint, body) = &a1111.requests()[0];
    assert_eq!(endpoint, "txt2img");
    assert_eq!(
        (&body["seed"], &body["batch_size"], &body["steps"]),
        (&json!(11), &json!(2), &json!(8))
    );
    assert_eq!(
        body["override_settings"]["sd_model_checkpoint"],
        "v1-5-pruned-emaonly.safetensors"
    );
    assert_eq!(paperwork_of(&net, &answer).await.body.usage.units, 2);

    let image = png("the input", 0, 128, 128);
    let mask = mask_png(128, 128, |x, _| x < 64);
    let resp = edit(
        &net,
        &[("model", A1111), ("prompt", "a green boat"), ("size", "128x128")],
        &[("image", &image), ("mask", &mask)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        decoded_images(&answer)[0].pixel(0, 0),
        mock_a1111::colour("a green boat", 0)
    );
    let (endpoint, body) = &a1111.requests()[1];
    assert_eq!(
        (endpoint.as_str(), &body["denoising_strength"]),
        ("img2img", &json!(0.5))
    );
    let engine = base64::engine::general_purpose::STANDARD;
    let init = engine.decode(body["init_images"][0].as_str().unwrap()).unwrap();
    assert_eq!(init, image);
    let sent_mask = Rgb::decode(&engine.decode(body["mask"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(
        (sent_mask.pixel(10, 5), sent_mask.pixel(100, 5)),
        ([255; 3], [0; 3]),
        "white where OpenAI's mask is transparent: A1111 redraws there"
    );
}

#[tokio::test]
async fn an_automatic1111_failure_is_named_and_costs_nothing_and_a_cancel_interrupts_it() {
    let (net, a1111) = a1111_network(mock_a1111::Mode::Fail {
        message: "CUDA out of memory".to_owned(),
    })
    .await;
    let ledger = &net.hub.hub.state.ledger;
    let before = ledger.balance(AccountId::stack(net.stack)).await.unwrap();
    let resp = generate(&net, &json!({"model": A1111, "prompt": "a harbour"})).await;
    assert!(!resp.status().is_success());
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AUTOMATIC1111 failed: CUDA out of memory"),
        "{err}"
    );
    assert_eq!(ledger.balance(AccountId::stack(net.stack)).await.unwrap(), before);
    assert_eq!(a1111.requests().len(), 1);

    // A job that runs on: the client gives up, the hub cancels the task, the node interrupts A1111.
    let (net, a1111) = a1111_network(mock_a1111::Mode::Hang).await;
    let gave_up = client()
        .post(format!("{}/images/generations", net.base_url()))
        .bearer_auth(&net.api_key)
        .timeout(std::time::Duration::from_millis(1500))
        .json(&json!({"model": A1111, "prompt": "a harbour"}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the job never answers");
    stacknet_testkit::wait_until(
        "A1111 interrupted",
        std::time::Duration::from_secs(30),
        || async { (a1111.interrupts() > 0).then_some(()) },
    )
    .await;
    assert!(a1111.progress_polls() > 0, "progress was followed while it ran");
}
