//! Built-in OCR: PP-OCRv6 tiny (text detection and recognition ONNX graphs, from the catalog) on
//! ONNX Runtime ([`super::onnx`]), answering chat requests that carry images with the text in them.
//!
//! The pipeline is PaddleOCR's as RapidOCR runs it with tinyocr's settings, written here: the image
//! (PNG or JPEG, [`super::image`]) is bounded to 2,000 pixels a side (and at least 30), padded above and
//! below when it is a thin strip, resized for the detector (at most 960 a side, sides multiples of
//! 32), normalized in BGR order with ImageNet's mean and deviation; the detector's probability map
//! becomes rotated text boxes ([`detect`]); each box is cropped upright, resized to 48 pixels high
//! (at least 320 wide, padded), and recognized; the recognizer's per-column classes are CTC-decoded
//! (best path: repeats merged, blanks dropped) with the 6,904-character dictionary the graph carries
//! in its `character` metadata (class 0 is the blank, the last class a space). Lines read below 0.5
//! mean confidence are dropped. Boxes are put in reading order: rows top to bottom (a box joins a row
//! when its centre is within half the smaller height of the row's), each row left to right, words of
//! a row joined by spaces, rows by newlines.
//!
//! A chat request's answer is the text of each of its images, in order, separated by a blank line;
//! the messages' text is not read (it is counted as input). Usage: input tokens are the messages'
//! estimated text tokens plus [`IMAGE_INPUT_TOKENS`] for each image; output tokens are the answer's
//! words and punctuation marks ([`crate::usage::count_words`]); an answer longer than the request's
//! `max_completion_tokens` is cut there (`finish_reason: "length"`). Deterministic: the same images
//! always give the same text.

pub mod detect;

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::{json, Value};
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::values::Sha256Digest;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokio::sync::mpsc;

use self::detect::{DbParams, TextBox};
use super::image::Rgb;
use super::onnx::Runtime;
use super::{ask_worker, serve_jobs, Backend, BackendError, BackendOutcome, BackendTask, Cancellation, Job};
use crate::fetch::Fetcher;
use crate::models::ModelSpec;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "onnxruntime-ppocr";
pub const DETECTION_FILE: &str = "PP-OCRv6_det_tiny.onnx";
/// The recognition graph: its SHA-256 names the model in offers and paperwork.
pub const RECOGNITION_FILE: &str = "PP-OCRv6_rec_tiny.onnx";
/// Requests that may wait for the worker; beyond this a task is refused as busy.
pub const QUEUE_CAPACITY: usize = 16;
/// Input tokens each image counts for (OpenAI's price of an image at `detail: low`).
pub const IMAGE_INPUT_TOKENS: u64 = 85;
/// Lines recognized with a lower mean confidence are dropped.
pub const MIN_LINE_SCORE: f32 = 0.5;

const DET_LIMIT_SIDE: usize = 960;
const MAX_SIDE: usize = 2000;
const MIN_SIDE: usize = 30;
const STRIP_RATIO: f32 = 8.0;
const REC_HEIGHT: usize = 48;
const REC_MIN_WIDTH: usize = 320;
const DET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const DET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One line of text found in an image.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub text: String,
    /// The box in the (bounded, padded) image the detector saw.
    pub quad: [[f32; 2]; 4],
    pub score: f32,
}

/// The two graphs and the dictionary: what the worker thread owns.
pub struct Engine {
    det: Session,
    rec: Session,
    /// Class i's text: 0 is the blank (empty), the last a space.
    classes: Vec<String>,
    params: DbParams,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("classes", &self.classes.len())
            .finish()
    }
}

fn setup(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what}: {e}"))
}

fn failed(e: ort::Error) -> BackendError {
    BackendError::Setup(format!("the OCR model failed: {e}"))
}

impl Engine {
    /// Loads both graphs from `dir` on `runtime`, each on `threads` threads.
    pub fn load(runtime: &Runtime, dir: &Path, threads: usize) -> Result<Self, BackendError> {
        let det = runtime.session(&dir.join(DETECTION_FILE), threads)?;
        let rec = runtime.session(&dir.join(RECOGNITION_FILE), threads)?;
        let characters = rec
            .metadata()
            .map_err(|e| setup("the recognition graph's metadata", e))?
            .custom("character")
            .ok_or_else(|| {
                BackendError::Setup("the recognition graph carries no `character` dictionary".to_owned())
            })?;
        let mut classes = vec![String::new()];
        classes.extend(characters.lines().map(str::to_owned));
        classes.push(" ".to_owned());
        Ok(Self {
            det,
            rec,
            classes,
            params: DbParams::default(),
        })
    }

    /// The dictionary's size, blank and space included (the recognizer's class count).
    pub fn classes(&self) -> usize {
        self.classes.len()
    }

    /// The lines of text in `image`, in reading order.
    pub fn read(&mut self, image: &Rgb) -> Result<Vec<Line>, BackendError> {
        let image = bounded(image);
        let image = match strip_padding(image.width, image.height) {
            0 => image,
            rows => image.pad_vertically(rows),
        };
        let boxes = self.detect(&image)?;
        let mut lines = Vec::with_capacity(boxes.len());
        for b in boxes {
            let crop = image.crop_quad(&b.quad);
            let (text, score) = self.recognize(&crop)?;
            if score >= MIN_LINE_SCORE && !text.trim().is_empty() {
                lines.push(Line {
                    text: text.trim().to_owned(),
                    quad: b.quad,
                    score,
                });
            }
        }
        Ok(lines)
    }

    fn detect(&mut self, image: &Rgb) -> Result<Vec<TextBox>, BackendError> {
        let ratio = if image.width.max(image.height) > DET_LIMIT_SIDE {
            DET_LIMIT_SIDE as f32 / image.width.max(image.height) as f32
        } else {
            1.0
        };
        let round32 =
            |side: usize| ((((side as f32 * ratio) as usize) as f32 / 32.0).round() as usize * 32).max(32);
        let (w, h) = (round32(image.width), round32(image.height));
        let input = image.resize(w, h).to_bgr_tensor(DET_MEAN, DET_STD);
        let tensor = Tensor::from_array(([1_usize, 3, h, w], input)).map_err(failed)?;
        let outputs = self.det.run(ort::inputs![tensor]).map_err(failed)?;
        let (shape, map) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        let (mh, mw) = match dims.as_slice() {
            [1, 1, mh, mw] => (*mh as usize, *mw as usize),
            other => {
                return Err(BackendError::Setup(format!(
                    "the detector answered a {other:?} map"
                )))
            }
        };
        Ok(detect::boxes(
            map,
            mw,
            mh,
            image.width,
            image.height,
            &self.params,
        ))
    }

    /// A cropped line's text and mean confidence.
    fn recognize(&mut self, crop: &Rgb) -> Result<(String, f32), BackendError> {
        let ratio = crop.width as f32 / crop.height as f32;
        let padded_width = ((REC_HEIGHT as f32 * ratio) as usize).max(REC_MIN_WIDTH);
        let width = ((REC_HEIGHT as f32 * ratio).ceil() as usize).clamp(1, padded_width);
        let resized = crop.resize(width, REC_HEIGHT);
        let plane = REC_HEIGHT * padded_width;
        let mut input = vec![0.0f32; plane * 3];
        let normalized = resized.to_bgr_tensor([0.5; 3], [0.5; 3]);
        for c in 0..3 {
            for y in 0..REC_HEIGHT {
                let from = c * REC_HEIGHT * width + y * width;
                let to = c * plane + y * padded_width;
                input[to..to + width].copy_from_slice(&normalized[from..from + width]);
            }
        }
        let tensor = Tensor::from_array(([1_usize, 3, REC_HEIGHT, padded_width], input)).map_err(failed)?;
        let outputs = self.rec.run(ort::inputs![tensor]).map_err(failed)?;
        let (shape, probs) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
        let classes = shape.last().copied().unwrap_or(0) as usize;
        if classes != self.classes.len() {
            return Err(BackendError::Setup(format!(
                "the recognizer has {classes} classes, its dictionary {}",
                self.classes.len()
            )));
        }
        Ok(ctc_decode(probs, classes, &self.classes))
    }
}

/// Best-path CTC decoding: each column's most likely class, repeats merged, blanks (class 0)
/// dropped; the text and the mean probability of the classes kept.
fn ctc_decode(probs: &[f32], classes: usize, names: &[String]) -> (String, f32) {
    let mut text = String::new();
    let (mut sum, mut kept) = (0.0f32, 0u32);
    let mut previous = usize::MAX;
    for column in probs.chunks_exact(classes) {
        let (best, p) =
            column.iter().copied().enumerate().fold(
                (0, f32::MIN),
                |(bi, bp), (i, p)| if p > bp { (i, p) } else { (bi, bp) },
            );
        if best != 0 && best != previous {
            text.push_str(names.get(best).map_or("", String::as_str));
            sum += p;
            kept += 1;
        }
        previous = best;
    }
    let score = if kept == 0 { 0.0 } else { sum / kept as f32 };
    (text, score)
}

/// The image within 2,000 pixels a side and at least 30 (sides rounded to multiples of 32 when
/// resized), as RapidOCR bounds it before detection.
fn bounded(image: &Rgb) -> Rgb {
    let (w, h) = (image.width, image.height);
    let round32 = |v: f32| (((v as usize) as f32 / 32.0).round() as usize * 32).max(32);
    if w.max(h) > MAX_SIDE {
        let ratio = MAX_SIDE as f32 / w.max(h) as f32;
        return image.resize(round32(w as f32 * ratio), round32(h as f32 * ratio));
    }
    if w.min(h) < MIN_SIDE {
        let ratio = MIN_SIDE as f32 / w.min(h) as f32;
        return image.resize(round32(w as f32 * ratio), round32(h as f32 * ratio));
    }
    image.clone()
}

/// Rows of padding above and below a thin strip (at most 30 high, or over 8 times as wide as
/// high), so the detector sees a line of text with room around it; 0 for other images.
fn strip_padding(width: usize, height: usize) -> usize {
    if height > MIN_SIDE && (width as f32 / height as f32) <= STRIP_RATIO {
        return 0;
    }
    let target = ((width as f32 / STRIP_RATIO) as usize).max(MIN_SIDE) * 2;
    target.abs_diff(height) / 2
}

/// The lines in reading order: rows top to bottom, each left to right; a row's words joined by
/// spaces, rows by newlines.
pub fn reading_order(lines: &[Line]) -> String {
    let bounds = |l: &Line| {
        let ys = l.quad.map(|p| p[1]);
        let xs = l.quad.map(|p| p[0]);
        let (y0, y1) = (
            ys.iter().copied().fold(f32::MAX, f32::min),
            ys.iter().copied().fold(f32::MIN, f32::max),
        );
        (
            xs.iter().copied().fold(f32::MAX, f32::min),
            (y0 + y1) / 2.0,
            y1 - y0,
        )
    };
    let mut sorted: Vec<&Line> = lines.iter().collect();
    sorted.sort_by(|a, b| {
        let (ax, ay, _) = bounds(a);
        let (bx, by, _) = bounds(b);
        ay.total_cmp(&by).then(ax.total_cmp(&bx))
    });
    // (centre y, height, the row's lines)
    let mut rows: Vec<(f32, f32, Vec<&Line>)> = Vec::new();
    for line in sorted {
        let (_, cy, h) = bounds(line);
        match rows.last_mut() {
            Some((ry, rh, row)) if (cy - *ry).abs() <= 0.5 * h.min(*rh) => row.push(line),
            _ => rows.push((cy, h, vec![line])),
        }
    }
    rows.into_iter()
        .map(|(_, _, mut row)| {
            row.sort_by(|a, b| bounds(a).0.total_cmp(&bounds(b).0));
            row.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The OCR model served from this machine's CPU. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ocr {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: String,
    model_sha256: Sha256Digest,
    version: String,
    images: Fetcher,
    jobs: mpsc::Sender<Job<Read, Vec<String>>>,
    loaded_at: Timestamp,
}

/// One request's images for the worker.
struct Read {
    images: Vec<Rgb>,
    cancel: Cancellation,
}

impl Ocr {
    /// Loads the catalog model `spec` from `dir` on `runtime` and starts its worker. Images given by
    /// URL are fetched by `images` (see [`super::images`]). Blocking.
    pub fn load(
        runtime: &Runtime,
        dir: &Path,
        spec: &ModelSpec,
        threads: usize,
        images: Fetcher,
    ) -> Result<Self, BackendError> {
        let model_sha256 = super::file_sha256(spec, RECOGNITION_FILE)?;
        let mut engine = Engine::load(runtime, dir, threads)?;
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let name = spec.name.clone();
        std::thread::Builder::new()
            .name("stacknet-ocr".to_owned())
            .spawn(move || {
                serve_jobs(queue, &name, |r: &Read| {
                    let mut texts = Vec::with_capacity(r.images.len());
                    for image in &r.images {
                        if r.cancel.is_cancelled() {
                            return Err(BackendError::Abandoned);
                        }
                        texts.push(reading_order(&engine.read(image)?));
                    }
                    Ok(texts)
                });
            })
            .map_err(|e| setup("cannot start the OCR thread", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model: spec.name.clone(),
                model_sha256,
                version: runtime.backend_version(),
                images,
                jobs,
                loaded_at: Timestamp::now(),
            }),
        })
    }

    pub fn model(&self) -> &str {
        &self.inner.model
    }

    /// The text of each image of a chat request (fetching those given by URL), in order. The same
    /// work a task does, without the task (the baseline of the benchmark).
    pub async fn read_request(
        &self,
        request: &Value,
        cancel: &Cancellation,
    ) -> Result<Vec<String>, BackendError> {
        let inlined = super::images::inline(&self.inner.images, request, cancel).await?;
        let request = inlined.as_ref().unwrap_or(request);
        let found = super::images::decoded(request)?;
        if found.is_empty() {
            return Err(BackendError::InvalidRequest(format!(
                "messages: {} reads the text in images, and these messages have no image_url part",
                self.inner.model
            )));
        }
        if found.len() > super::images::MAX_FETCHED_IMAGES {
            return Err(BackendError::InvalidRequest(format!(
                "messages: {} images, more than the {} {} reads for one request",
                found.len(),
                super::images::MAX_FETCHED_IMAGES,
                self.inner.model
            )));
        }
        let mut images = Vec::with_capacity(found.len());
        for f in found {
            images.push(
                Rgb::decode(&f.bytes)
                    .map_err(|e| BackendError::InvalidRequest(format!("{}: the image {e}", f.param)))?,
            );
        }
        let read = Read {
            images,
            cancel: cancel.clone(),
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(BackendError::Abandoned),
            texts = ask_worker(&self.inner.jobs, read, "OCR") => texts,
        }
    }

    async fn run(
        self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> Result<BackendOutcome, BackendError> {
        if task.workload != Workload::Chat || task.model != self.inner.model {
            return Err(task.unsupported());
        }
        let texts = self.read_request(&task.request, &task.cancel).await?;
        let images = texts.len() as u64;
        let mut answer = texts.join("\n\n");
        let limit = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| task.request.get(*k).and_then(Value::as_u64));
        let mut finish = "stop";
        if let Some(limit) = limit {
            if let Some(cut) = cut_at_tokens(&answer, limit) {
                answer.truncate(cut);
                finish = "length";
            }
        }
        let usage = Usage {
            input_tokens: crate::usage::estimate_input_tokens(&task.request)
                .saturating_add(IMAGE_INPUT_TOKENS.saturating_mul(images)),
            output_tokens: crate::usage::count_words(&answer),
            units: 0,
        };
        let id = format!("chatcmpl-{}", task.contract);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": task.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        for c in [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": answer}), None),
            chunk(json!({}), Some(finish)),
        ] {
            chunks.send(c).await.map_err(|_| BackendError::Abandoned)?;
        }
        let mut outcome = BackendOutcome::units(0, BACKEND_ID, self.inner.version.clone(), &task.model);
        outcome.usage = Some(usage);
        outcome.info.model_sha256 = Some(self.inner.model_sha256);
        Ok(outcome)
    }
}

/// Where to cut `text` so it keeps `limit` tokens as [`crate::usage::count_words`] counts them;
/// `None` when it has no more.
fn cut_at_tokens(text: &str, limit: u64) -> Option<usize> {
    let mut count = 0;
    let mut in_word = false;
    for (at, c) in text.char_indices() {
        let starts = if c.is_alphanumeric() {
            let starts = !in_word;
            in_word = true;
            starts
        } else {
            in_word = false;
            !c.is_whitespace()
        };
        if starts {
            if count == limit {
                return Some(text[..at].trim_end().len());
            }
            count += 1;
        }
    }
    None
}

impl Backend for Ocr {
    fn models(&self) -> Vec<ModelOffer> {
        super::loaded_offer(
            &self.inner.model,
            &[Workload::Chat],
            BACKEND_ID,
            self.inner.model_sha256,
        )
    }

    fn ready(&self) -> Vec<ModelReady> {
        super::ready_since(&self.inner.model, self.inner.loaded_at)
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        Box::pin(self.clone().run(task, chunks))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(text: &str, x: f32, y: f32, h: f32) -> Line {
        Line {
            text: text.to_owned(),
            quad: [[x, y], [x + 50.0, y], [x + 50.0, y + h], [x, y + h]],
            score: 0.9,
        }
    }

    #[test]
    fn lines_are_read_in_rows_top_to_bottom_and_left_to_right() {
        let lines = [
            line("world", 70.0, 12.0, 20.0),
            line("second", 10.0, 60.0, 20.0),
            line("Hello", 10.0, 10.0, 20.0),
        ];
        assert_eq!(reading_order(&lines), "Hello world\nsecond");
        assert_eq!(reading_order(&[]), "");
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let names: Vec<String> = ["", "a", "b", " "].map(str::to_owned).into();
        // Columns: a a blank a b b space  ->  "aab "
        let best = [1, 1, 0, 1, 2, 2, 3];
        let probs: Vec<f32> = best
            .iter()
            .flat_map(|&b| (0..4).map(move |i| if i == b { 0.8 } else { 0.05 }))
            .collect();
        let (text, score) = ctc_decode(&probs, 4, &names);
        assert_eq!(text, "aab ");
        assert!((score - 0.8).abs() < 1e-6);
        assert_eq!(ctc_decode(&[0.9, 0.1], 2, &names[..2]), (String::new(), 0.0));
    }

    #[test]
    fn answers_are_cut_at_the_token_limit() {
        assert_eq!(cut_at_tokens("Hello, world", 2), Some(6));
        assert_eq!(cut_at_tokens("Hello, world", 3), None);
        assert_eq!(cut_at_tokens("a b", 0), Some(0));
    }

    #[test]
    fn thin_strips_are_padded_and_big_images_bounded() {
        assert_eq!(strip_padding(800, 100), 0);
        // 900 x 60 is 15 times as wide as high: padded to 2 * 900/8 = 224 rows, 82 each side.
        assert_eq!(strip_padding(900, 60), 82);
        assert_eq!(strip_padding(100, 20), 20);
        let big = Rgb::new(4000, 1000);
        let b = bounded(&big);
        assert_eq!((b.width, b.height), (2016, 512));
        let small = Rgb::new(200, 10);
        let s = bounded(&small);
        assert_eq!((s.width, s.height), (608, 32));
    }
}
