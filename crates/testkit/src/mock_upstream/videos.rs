//! The mock's OpenAI videos API, as an OpenAI-compatible video server answers it: `POST
//! /v1/videos` (multipart: `prompt`, `model`, `seconds`, `size`, an optional `input_reference`
//! file) creates a job, `GET /v1/videos/{id}` reports it, `GET /v1/videos/{id}/content` gives its
//! MP4 file once completed, `DELETE /v1/videos/{id}` deletes it.
//!
//! A job moves on each time it is polled: queued, then in progress 25, 50, 75, then completed (5
//! at a time, 20 polls in all, when its prompt contains `slow`). Its
//! prompt scripts it: one containing `fail` fails at 50 (`{"code": "video_generation_failed"}`),
//! one containing `hang` stays at 50 until deleted, and so does the first job whose prompt contains
//! `stall` (a later job with the same prompt runs as any other: a job run again after a hub stopped). The file is an MP4 of the `size` asked
//! (128x128 when not given) with 2 frames a second of `seconds` (4 when not given), each frame one
//! colour ([`colour`] of the prompt and the frame's index), written by the node's own MP4 writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use stacknet_node::backend::image::Rgb;
use stacknet_node::backend::mp4::Mp4Writer;

use super::error_response;
use super::images::colour;

/// Frames a second of the mock's videos.
pub const FPS: u32 = 2;

#[derive(Debug, Default)]
pub(super) struct Jobs {
    jobs: Mutex<HashMap<String, Job>>,
    pub(super) next: Mutex<u64>,
    pub(super) deleted: Mutex<Vec<String>>,
    /// The prompts containing `stall` that stalled a job already.
    stalled: Mutex<std::collections::HashSet<String>>,
}

#[derive(Debug, Clone)]
struct Job {
    prompt: String,
    seconds: u64,
    size: (usize, usize),
    progress: u64,
    /// Stays at 50 (`hang`, `fail`, a first `stall`).
    stuck: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Jobs {
    pub(super) fn create(&self, fields: &Map<String, Value>, files: &BTreeMap<String, Bytes>) -> Response {
        let text = |k: &str| fields.get(k).and_then(Value::as_str);
        let Some(prompt) = text("prompt").filter(|p| !p.is_empty()) else {
            return error_response(400, "prompt is required", None);
        };
        let seconds = match text("seconds").unwrap_or("4").parse::<u64>() {
            Ok(s @ (4 | 8 | 12)) => s,
            _ => return error_response(400, "seconds must be 4, 8 or 12", None),
        };
        let size = text("size").unwrap_or("128x128");
        let Some((w, h)) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        else {
            return error_response(400, &format!("Invalid size {size:?}"), None);
        };
        if let Some(reference) = files.get("input_reference") {
            if stacknet_api::output::image_dimensions(reference).is_none() {
                return error_response(400, "input_reference must be an image", None);
            }
        }
        let id = {
            let mut next = lock(&self.next);
            *next += 1;
            format!("video_mock_{next}")
        };
        let stuck = prompt.contains("hang")
            || prompt.contains("fail")
            || (prompt.contains("stall") && lock(&self.stalled).insert(prompt.to_owned()));
        let job = Job {
            prompt: prompt.to_owned(),
            seconds,
            size: (w, h),
            progress: 0,
            stuck,
        };
        let body = object(&id, &job, "queued");
        lock(&self.jobs).insert(id, job);
        axum::Json(body).into_response()
    }

    /// A poll: the job moves on, then is reported.
    pub(super) fn poll(&self, id: &str) -> Response {
        let mut jobs = lock(&self.jobs);
        let Some(job) = jobs.get_mut(id) else {
            return error_response(404, &format!("No video found with id {id:?}"), None);
        };
        job.progress = if job.stuck && job.progress >= 50 {
            50
        } else {
            let step = if job.prompt.contains("slow") { 5 } else { 25 };
            (job.progress + step).min(100)
        };
        let status = match job.progress {
            50 if job.prompt.contains("fail") => "failed",
            100 => "completed",
            _ => "in_progress",
        };
        let mut body = object(id, job, status);
        if status == "failed" {
            body["error"] =
                json!({"code": "video_generation_failed", "message": "the mock's renderer failed"});
        }
        axum::Json(body).into_response()
    }

    pub(super) fn content(&self, id: &str) -> Response {
        let job = lock(&self.jobs).get(id).cloned();
        let Some(job) = job.filter(|j| j.progress == 100) else {
            return error_response(404, "Video is not ready", None);
        };
        match mp4(&job.prompt, job.seconds, job.size.0, job.size.1) {
            Some(bytes) => ([(axum::http::header::CONTENT_TYPE, "video/mp4")], bytes).into_response(),
            None => error_response(500, "the mock could not write the video", None),
        }
    }

    pub(super) fn delete(&self, id: &str) -> Response {
        if lock(&self.jobs).remove(id).is_none() {
            return error_response(404, &format!("No video found with id {id:?}"), None);
        }
        lock(&self.deleted).push(id.to_owned());
        axum::Json(json!({"id": id, "object": "video.deleted", "deleted": true})).into_response()
    }
}

fn object(id: &str, job: &Job, status: &str) -> Value {
    json!({"id": id, "object": "video", "status": status, "progress": job.progress,
        "seconds": job.seconds.to_string(), "size": format!("{}x{}", job.size.0, job.size.1),
        "created_at": 1_700_000_000, "model": "mock-video"})
}

/// The MP4 the mock makes for `prompt`: [`FPS`] frames a second, frame `i` one colour.
pub fn mp4(prompt: &str, seconds: u64, width: usize, height: usize) -> Option<Vec<u8>> {
    let mut writer = Mp4Writer::new(width, height, FPS).ok()?;
    for i in 0..seconds * u64::from(FPS) {
        let mut frame = Rgb::new(width, height);
        let c = colour(prompt, i);
        frame
            .data
            .chunks_exact_mut(3)
            .for_each(|px| px.copy_from_slice(&c));
        writer.push(&frame).ok()?;
    }
    writer.finish().ok()
}
