//! The terms of a media task that its output files show by themselves: how many files, their
//! format, their size in pixels, a video's length. The hub checks them when it accepts the node's
//! paperwork (a node that breaks them is refused and paid nothing), and a validator checks them
//! again on the files the hub kept; no model is needed, only the files' headers.
//!
//! - Images (generations and edits): exactly `n` files (at most `n` of a task the hub cancelled),
//!   each of the `output_format` asked (PNG when none), each of the `size` asked (any size a header
//!   declares for `auto` or none).
//! - Videos: one MP4 file (none allowed of a cancelled task) whose picture is the `size` asked, with
//!   at least one frame, and at least nine tenths of the `seconds` asked unless cancelled (the
//!   seconds billed are bounded by the file's own duration elsewhere).

use serde_json::Value;
use stacknet_protocol::contract::Workload;

use crate::output::{image_content_type, image_dimensions, mp4_description};
use crate::request::{image_edit, image_generation, video};

/// What breaks the terms of a `workload` task asked by `body` (as the task carries it) whose output
/// is `files`; `None` when the files keep them, and for workloads this module has no terms for.
/// `cancelled`: the hub cancelled the task, so fewer files than asked are within its terms.
pub fn broken(workload: Workload, body: &Value, files: &[&[u8]], cancelled: bool) -> Option<String> {
    match workload {
        Workload::ImageGeneration => match image_generation::validate(body.clone()) {
            Ok((_, r)) => images(files, r.n, r.dimensions(), r.output_format.as_deref(), cancelled),
            Err(e) => Some(format!("the request does not parse: {e}")),
        },
        Workload::ImageEdit => match image_edit::validate(body.clone()) {
            Ok((_, r)) => images(files, r.n, r.dimensions(), r.output_format.as_deref(), cancelled),
            Err(e) => Some(format!("the request does not parse: {e}")),
        },
        Workload::VideoGeneration => match video::validate(body.clone()) {
            Ok((_, r)) => videos(files, r.seconds, r.dimensions(), cancelled),
            Err(e) => Some(format!("the request does not parse: {e}")),
        },
        _ => None,
    }
}

fn images(
    files: &[&[u8]],
    n: u64,
    size: Option<(u32, u32)>,
    format: Option<&str>,
    cancelled: bool,
) -> Option<String> {
    let count = files.len() as u64;
    if count > n || (count < n && !cancelled) {
        return Some(format!("{count} images for the {n} asked"));
    }
    let format = format.unwrap_or("png");
    let wanted = format!("image/{format}");
    for (i, file) in files.iter().enumerate() {
        match image_content_type(file) {
            Some(t) if t == wanted => {}
            Some(t) => return Some(format!("image {i} is {t}, not the {format} asked")),
            None => return Some(format!("image {i} is not a PNG, JPEG or WebP file")),
        }
        match (image_dimensions(file), size) {
            (None, _) => return Some(format!("image {i} declares no size in its header")),
            (Some(got), Some(asked)) if got != asked => {
                return Some(format!(
                    "image {i} is {}x{}, not the {}x{} asked",
                    got.0, got.1, asked.0, asked.1
                ))
            }
            _ => {}
        }
    }
    None
}

fn videos(files: &[&[u8]], seconds: u64, size: Option<(u32, u32)>, cancelled: bool) -> Option<String> {
    let file = match files {
        [] if cancelled => return None,
        [file] => file,
        many => return Some(format!("{} files for the one video asked", many.len())),
    };
    let Some((w, h, frames, ms)) = mp4_description(file) else {
        return Some("the video is not an MP4 file with one video track".into());
    };
    if let Some(asked) = size {
        if (w, h) != asked {
            return Some(format!(
                "the video is {w}x{h}, not the {}x{} asked",
                asked.0, asked.1
            ));
        }
    }
    if frames == 0 {
        return Some("the video has no frames".into());
    }
    let asked_ms = seconds.saturating_mul(1000);
    if !cancelled && u64::from(ms).saturating_mul(10) < asked_ms.saturating_mul(9) {
        return Some(format!("the video lasts {ms} ms of the {seconds} s asked"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A PNG header (signature and IHDR) declaring `w` x `h`: all [`image_dimensions`] reads.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    fn ask(extra: Value) -> Value {
        let mut body = json!({"model": "m", "prompt": "a lake"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    #[test]
    fn images_must_be_as_many_of_the_format_and_size_asked() {
        let (a, b) = (png(256, 256), png(256, 256));
        let body = ask(json!({"n": 2, "size": "256x256"}));
        let gen = Workload::ImageGeneration;
        assert_eq!(broken(gen, &body, &[&a, &b], false), None);
        assert!(broken(gen, &body, &[&a], false)
            .unwrap()
            .contains("1 images for the 2"));
        assert_eq!(
            broken(gen, &body, &[&a], true),
            None,
            "a cancelled task may deliver fewer"
        );
        assert!(broken(gen, &body, &[&a, &b, &a], true).is_some(), "never more");
        let small = png(128, 128);
        let why = broken(gen, &body, &[&a, &small], false).unwrap();
        assert!(why.contains("image 1 is 128x128, not the 256x256"), "{why}");
        let auto = ask(json!({"size": "auto"}));
        assert_eq!(broken(gen, &auto, &[&small], false), None);
        let jpeg = ask(json!({"output_format": "jpeg"}));
        assert!(broken(gen, &jpeg, &[&small], false)
            .unwrap()
            .contains("not the jpeg asked"));
        assert!(broken(gen, &auto, &[b"GIF89a".as_slice()], false).is_some());
        let cut = &small[..16];
        assert!(broken(gen, &auto, &[cut], false).unwrap().contains("no size"));
    }

    #[test]
    fn a_video_must_be_one_mp4_of_the_size_asked() {
        let body = ask(json!({"seconds": "4", "size": "128x128"}));
        let v = Workload::VideoGeneration;
        assert_eq!(broken(v, &body, &[], true), None, "cancelled before its file");
        assert!(broken(v, &body, &[], false).is_some());
        let why = broken(v, &body, &[&png(128, 128)], false).unwrap();
        assert!(why.contains("not an MP4"), "{why}");
        assert_eq!(broken(Workload::Chat, &body, &[], false), None);
    }
}
