//! The mock's OpenAI images endpoint, as an OpenAI-compatible images server answers it.
//!
//! `POST /v1/images/generations` answers `n` real PNG files of the `size` asked (256x256 when not
//! given), each filled with one colour taken from the SHA-256 of the prompt and the image's index
//! ([`colour`]), as `b64_json`; a size OpenAI does not list, or `n` over 10, is a 400 as OpenAI's.
//! `POST /v1/images/edits` (multipart: `image`, optional `mask`) answers the same way, at the
//! `size` asked or else the uploaded image's; an upload that is not a PNG, JPEG or WebP image, or a
//! mask of another size, is a 400 as OpenAI's.
//!
//! A dishonest server, scripted by the prompt: `short change` answers one image fewer than asked,
//! `small print` every image at half the width and height asked.

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stacknet_node::backend::image::Rgb;

use super::error_response;

/// The sizes the mock draws (OpenAI's DALL-E 2 sizes and the square of 1024).
pub const SIZES: [&str; 3] = ["256x256", "512x512", "1024x1024"];

/// The colour of image `index` of `prompt`.
pub fn colour(prompt: &str, index: u64) -> [u8; 3] {
    let digest = Sha256::digest(format!("{index}:{prompt}").as_bytes());
    [digest[0], digest[1], digest[2]]
}

/// The PNG the mock draws for image `index` of `prompt` at `width` x `height`.
pub fn png(prompt: &str, index: u64, width: usize, height: usize) -> Vec<u8> {
    let mut image = Rgb::new(width, height);
    let c = colour(prompt, index);
    image
        .data
        .chunks_exact_mut(3)
        .for_each(|px| px.copy_from_slice(&c));
    image.encode_png().unwrap_or_default()
}

pub fn generations(request: &Value) -> Response {
    answer(request, |size| {
        SIZES.contains(&size).then(|| {
            let side = size.split('x').next().and_then(|s| s.parse().ok()).unwrap_or(256);
            (side, side)
        })
    })
}

/// `n` images of the request's `size` (256x256 when not given), read by `dimensions`.
fn answer(request: &Value, dimensions: impl Fn(&str) -> Option<(usize, usize)>) -> Response {
    let prompt = request["prompt"].as_str().unwrap_or_default();
    let size = request["size"].as_str().unwrap_or("256x256");
    let Some((width, height)) = dimensions(size) else {
        return error_response(
            400,
            &format!("Invalid size {size:?}; supported: {}", SIZES.join(", ")),
            None,
        );
    };
    let n = request["n"].as_u64().unwrap_or(1);
    if !(1..=10).contains(&n) {
        return error_response(400, "n must be between 1 and 10", None);
    }
    let (n, width, height) = match prompt {
        "short change" => (n - 1, width, height),
        "small print" => (n, width / 2, height / 2),
        _ => (n, width, height),
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"b64_json": engine.encode(png(prompt, i, width, height)), "revised_prompt": prompt}))
        .collect();
    axum::Json(json!({"created": 1_700_000_000, "data": data})).into_response()
}

pub fn edits(
    fields: &serde_json::Map<String, Value>,
    files: &std::collections::BTreeMap<String, axum::body::Bytes>,
) -> Response {
    use stacknet_api::output::image_dimensions;
    let Some(image) = files.get("image") else {
        return error_response(400, "image is required", None);
    };
    let Some((w, h)) = image_dimensions(image) else {
        return error_response(
            400,
            "Invalid input image - format must be in ['png', 'jpeg', 'webp']",
            None,
        );
    };
    if let Some(mask) = files.get("mask") {
        if image_dimensions(mask) != Some((w, h)) {
            return error_response(400, "Invalid mask image: it must be the image's size", None);
        }
    }
    let mut request = Value::Object(fields.clone());
    // Form fields are text: `n` as the number it spells.
    if let Some(n) = fields
        .get("n")
        .and_then(Value::as_str)
        .and_then(|n| n.parse::<u64>().ok())
    {
        request["n"] = json!(n);
    }
    if request.get("size").is_none() {
        request["size"] = json!(format!("{w}x{h}"));
    }
    answer(&request, |size| {
        size.split_once('x')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
    })
}
