//! The mock's OpenAI images endpoint, as an OpenAI-compatible images server answers it.
//!
//! `POST /v1/images/generations` answers `n` real PNG files of the `size` asked (256x256 when not
//! given), each filled with one colour taken from the SHA-256 of the prompt and the image's index
//! ([`colour`]), as `b64_json`; a size OpenAI does not list, or `n` over 10, is a 400 as OpenAI's.

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
    let prompt = request["prompt"].as_str().unwrap_or_default();
    let size = request["size"].as_str().unwrap_or("256x256");
    if !SIZES.contains(&size) {
        return error_response(
            400,
            &format!("Invalid size {size:?}; supported: {}", SIZES.join(", ")),
            None,
        );
    }
    let n = request["n"].as_u64().unwrap_or(1);
    if !(1..=10).contains(&n) {
        return error_response(400, "n must be between 1 and 10", None);
    }
    let side: usize = size.split('x').next().and_then(|s| s.parse().ok()).unwrap_or(256);
    let engine = base64::engine::general_purpose::STANDARD;
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"b64_json": engine.encode(png(prompt, i, side, side)), "revised_prompt": prompt}))
        .collect();
    axum::Json(json!({"created": 1_700_000_000, "data": data})).into_response()
}
