//! `POST /v1/videos`: a prompt in (multipart, as OpenAI's SDKs send it, or JSON), a video job out,
//! as OpenAI's videos API defines it: `prompt`, `model`, `seconds`, `size`, an optional
//! `input_reference` image (an upload, named in the task's request by its descriptor, as image
//! edits name theirs), and `seed` as an extra field. A remix (`POST /v1/videos/{id}/remix`) is a
//! new job with the original's `model`, `seconds`, `size` and `seed` and a new prompt, carrying
//! `remix_of` (the original's id) so the node can know.

use serde_json::{Map, Value};
use stacknet_protocol::contract::Workload;

use super::fields::{self, integer, object};
use super::image_edit::{file_ref, prompt, FileRef};
use super::image_generation::MAX_SEED;
use super::{ApiRequest, RequestError};

/// OpenAI's video sizes, and the built-in model's (128x128, 256x256).
pub const SIZES: [&str; 6] = [
    "720x1280",
    "1280x720",
    "1024x1792",
    "1792x1024",
    "128x128",
    "256x256",
];
/// OpenAI's clip lengths, in seconds (it takes them as strings).
pub const SECONDS: [&str; 3] = ["4", "8", "12"];
/// The length when none is asked for (OpenAI's).
pub const DEFAULT_SECONDS: u64 = 4;
/// The multipart field that carries the input image.
pub const FILE_FIELDS: [&str; 1] = ["input_reference"];

/// What a video backend needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoRequest {
    pub prompt: String,
    pub seconds: u64,
    /// One of [`SIZES`]; `None` when not given (the backend's default).
    pub size: Option<String>,
    pub seed: Option<u64>,
    pub input_reference: Option<FileRef>,
    /// The video this one remixes.
    pub remix_of: Option<String>,
}

impl VideoRequest {
    /// The size asked for as (width, height); `None` when not given.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        super::image_generation::dimensions(self.size.as_deref())
    }
}

pub fn validate(body: Value) -> Result<(ApiRequest, VideoRequest), RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let prompt = prompt(obj)?;
    let seconds = seconds(obj)?;
    let size = fields::one_of(obj, "size", &SIZES)?;
    let seed = integer(obj, "seed", 0, MAX_SEED)?;
    let input_reference = file_ref(obj, "input_reference")?;
    let remix_of = match obj.get("remix_of") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.len() <= 64 => Some(id.clone()),
        Some(_) => return Err(RequestError::invalid("remix_of", "remix_of must be a video id")),
    };
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::VideoGeneration, model, user, 1, body);
    Ok((
        request,
        VideoRequest {
            prompt,
            seconds,
            size,
            seed,
            input_reference,
            remix_of,
        },
    ))
}

/// `seconds`: one of [`SECONDS`], as a string (OpenAI's type) or a number.
fn seconds(obj: &Map<String, Value>) -> Result<u64, RequestError> {
    let bad = || {
        RequestError::invalid(
            "seconds",
            format!("seconds must be one of {}", SECONDS.join(", ")),
        )
    };
    let text = match obj.get("seconds") {
        None | Some(Value::Null) => return Ok(DEFAULT_SECONDS),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(bad()),
    };
    if !SECONDS.contains(&text.as_str()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
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
    fn a_video_request_is_read_as_openai_defines_it() {
        let (request, video) =
            validate(json!({"model": "m", "prompt": "a lake", "seconds": "8", "size": "256x256", "seed": 3}))
                .unwrap();
        assert_eq!(
            (request.workload, request.choices),
            (Workload::VideoGeneration, 1)
        );
        assert_eq!(
            (video.seconds, video.dimensions(), video.seed),
            (8, Some((256, 256)), Some(3))
        );
        let (_, defaults) = validate(json!({"model": "m", "prompt": "a lake", "seconds": 4})).unwrap();
        assert_eq!(
            (defaults.seconds, defaults.size, defaults.input_reference),
            (4, None, None)
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "a lake", "seconds": "5"})),
            "seconds"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "a lake", "size": "100x100"})),
            "size"
        );
        assert_eq!(refused(json!({"model": "m", "prompt": ""})), "prompt");
        assert_eq!(
            refused(json!({"model": "m", "prompt": "p", "input_reference": "http://x/a.png"})),
            "input_reference"
        );
    }
}
