//! `POST /v1/images/generations`: a prompt in (JSON), generated images out, as OpenAI defines it,
//! with `seed` as an extra field (a seeded deterministic backend gives the same bytes for the same
//! seed, which a validator can re-run).

use serde_json::Value;
use stacknet_protocol::contract::Workload;

use super::fields::{self, integer, object};
use super::image_edit::{prompt, MAX_IMAGES, RESPONSE_FORMATS};
use super::{ApiRequest, RequestError};

/// The sizes a request may ask for: OpenAI's (DALL-E 2 and 3, GPT image), and 128x128, the built-in
/// model's own. `auto` lets the backend choose.
pub const SIZES: [&str; 9] = [
    "auto",
    "128x128",
    "256x256",
    "512x512",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "1792x1024",
    "1024x1792",
];
/// OpenAI's `quality` values, across its models.
pub const QUALITIES: [&str; 6] = ["auto", "standard", "hd", "low", "medium", "high"];
/// OpenAI's `output_format` values (GPT image).
pub const OUTPUT_FORMATS: [&str; 3] = ["png", "jpeg", "webp"];
/// The largest seed: what a JSON number holds exactly.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// What an image backend needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageGeneration {
    pub prompt: String,
    pub n: u64,
    /// One of [`SIZES`]; `None` when not given (the backend's default, as `auto`).
    pub size: Option<String>,
    pub quality: Option<String>,
    pub seed: Option<u64>,
    /// One of [`OUTPUT_FORMATS`]; `None` when not given (PNG).
    pub output_format: Option<String>,
}

impl ImageGeneration {
    /// The size asked for as (width, height); `None` for `auto` or none.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        dimensions(self.size.as_deref())
    }
}

/// A size of [`SIZES`] as (width, height); `None` for `auto` or none.
pub fn dimensions(size: Option<&str>) -> Option<(u32, u32)> {
    let (w, h) = size?.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

pub fn validate(body: Value) -> Result<(ApiRequest, ImageGeneration), RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let prompt = prompt(obj)?;
    let n = integer(obj, "n", 1, MAX_IMAGES)?.unwrap_or(1);
    let size = fields::one_of(obj, "size", &SIZES)?;
    let quality = fields::one_of(obj, "quality", &QUALITIES)?;
    let output_format = fields::one_of(obj, "output_format", &OUTPUT_FORMATS)?;
    let seed = integer(obj, "seed", 0, MAX_SEED)?;
    fields::one_of(obj, "response_format", &RESPONSE_FORMATS)?;
    if obj.get("stream").is_some_and(|s| s != &Value::Bool(false)) {
        return Err(RequestError::invalid(
            "stream",
            "streaming partial images is not supported; leave stream unset",
        ));
    }
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::ImageGeneration, model, user, n, body);
    Ok((
        request,
        ImageGeneration {
            prompt,
            n,
            size,
            quality,
            seed,
            output_format,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> String {
        match validate(body).unwrap_err() {
            RequestError::Invalid { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_is_read_as_openai_defines_it() {
        let (request, image) = validate(
            json!({"model": "m", "prompt": "a lake", "n": 2, "size": "256x256",
            "quality": "hd", "seed": 7, "response_format": "b64_json", "user": "u"}),
        )
        .unwrap();
        assert_eq!(
            (request.choices, request.workload),
            (2, Workload::ImageGeneration)
        );
        assert_eq!(image.dimensions(), Some((256, 256)));
        assert_eq!(image.seed, Some(7));
        let (_, defaults) = validate(json!({"model": "m", "prompt": "a lake"})).unwrap();
        assert_eq!(
            (defaults.n, defaults.dimensions(), defaults.seed),
            (1, None, None)
        );
    }

    #[test]
    fn what_it_cannot_do_is_refused_naming_the_field() {
        assert_eq!(refused(json!({"model": "m"})), "prompt");
        assert_eq!(refused(json!({"model": "m", "prompt": ""})), "prompt");
        let long = "x".repeat(super::super::image_edit::MAX_PROMPT_BYTES + 1);
        assert_eq!(refused(json!({"model": "m", "prompt": long})), "prompt");
        assert_eq!(
            refused(json!({"model": "m", "prompt": "p", "size": "100x100"})),
            "size"
        );
        assert_eq!(refused(json!({"model": "m", "prompt": "p", "n": 11})), "n");
        assert_eq!(refused(json!({"model": "m", "prompt": "p", "seed": -1})), "seed");
        assert_eq!(
            refused(json!({"model": "m", "prompt": "p", "quality": "best"})),
            "quality"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "p", "stream": true})),
            "stream"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "p", "output_format": "gif"})),
            "output_format"
        );
    }
}
