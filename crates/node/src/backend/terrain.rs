//! Built-in image generation: **terrain, not text to image.** A one-step consistency UNet (from the
//! catalog: PyPI `adaptive-terrain-diffusion`, ONNX, 128 x 128) on ONNX Runtime ([`super::onnx`])
//! turns seeded noise and a difficulty label into a heightmap, drawn here as a shaded relief map.
//! The prompt only seeds it: it exists so that a node with no GPU server serves a real image
//! workload, deterministically, and a validator can re-run a task and compare the bytes.
//!
//! The seed is the request's `seed` (an extra field), else the first 8 bytes of the SHA-256 of the
//! prompt; image `i` of `n` uses seed + i. From each seed, a xoshiro256** generator (seeded by
//! splitmix64) draws the difficulty (1 to 100), then the noise (standard normal by Box-Muller, scaled
//! by sigma 80). The model's output is mapped back to heights as the package does (asinh space,
//! floor at zero), resized bilinearly to the size asked (128 x 128 for `auto`), and drawn: a colour
//! ramp from water to snow by relative height, lit from the north-west. Written as PNG; other
//! `output_format`s are refused. Each image is one unit.
//!
//! Edits take the uploaded picture's brightness as heights, add noise of sigma [`SIGMA_EDIT`] and let
//! the model redraw it (SDEdit), keeping what the mask's opaque pixels cover. Videos (MP4, H.264) morph
//! the seed's map into the next seed's over their length at [`VIDEO_FPS`], one run of the model a
//! frame (from an input reference image, as an edit does); each second is one unit.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::Value;
use sha2::{Digest, Sha256};
use stacknet_api::request::image_edit::{self, ImageEdit};
use stacknet_api::request::image_generation::{validate, ImageGeneration};
use stacknet_api::request::video::{self, VideoRequest};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::values::Sha256Digest;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokio::sync::mpsc;

use super::image::Rgb;
use super::mp4::Mp4Writer;
use super::onnx::Runtime;
use super::{
    ask_worker, serve_jobs, Backend, BackendError, BackendOutcome, BackendTask, Cancellation, Job, OutputFile,
};
use crate::models::ModelSpec;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "onnxruntime-terrain";
/// The model's own size, and what `auto` gives.
pub const NATIVE: usize = 128;
/// Requests that may wait for the worker; beyond this a task is refused as busy.
pub const QUEUE_CAPACITY: usize = 16;
const SIGMA_MAX: f32 = 80.0;
/// The noise an edit adds to its input before the model denoises it (SDEdit): enough to redraw
/// the detail, little enough to keep the input's large shapes.
const SIGMA_EDIT: f32 = 1.0;
const HEIGHT_RANGE: f32 = 22.168_64;
const ASINH_SCALE: f32 = 0.1;
const DIFFICULTIES: u64 = 100;

/// The terrain model served from this machine's CPU. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Terrain {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: String,
    model_sha256: Sha256Digest,
    version: String,
    jobs: mpsc::Sender<Job<Render, Vec<Vec<f32>>>>,
    loaded_at: Timestamp,
}

/// One request's heightmaps for the worker: the model's inputs for each, and where an edit starts
/// from.
struct Render {
    maps: Vec<Draw>,
    start: Option<Arc<Start>>,
    cancel: Cancellation,
}

/// The model's inputs for one heightmap: its difficulty label and its noise (standard normal, to
/// be scaled by sigma).
#[derive(Clone)]
struct Draw {
    label: f32,
    noise: Vec<f32>,
}

impl Draw {
    /// The inputs a seed gives: a xoshiro256** generator draws the difficulty, then the noise.
    fn of(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let difficulty = rng.next_u64() % DIFFICULTIES + 1;
        Self {
            label: (difficulty - 1) as f32 / (DIFFICULTIES - 1) as f32,
            noise: rng.normals(NATIVE * NATIVE),
        }
    }

    /// `t` of the way (0 to 1) from `self` to `other` along the great circle between their noises
    /// (each a Gaussian, so every step is one too), with `self`'s label.
    fn towards(&self, other: &Draw, t: f32) -> Self {
        let angle = t * std::f32::consts::FRAC_PI_2;
        let (a, b) = (angle.cos(), angle.sin());
        Self {
            label: self.label,
            noise: self
                .noise
                .iter()
                .zip(&other.noise)
                .map(|(x, y)| a * x + b * y)
                .collect(),
        }
    }
}

/// Frames a second of the built-in model's videos.
pub const VIDEO_FPS: u32 = 8;
/// The sides (square) the built-in model renders videos at; `auto` or none gives the first. Its
/// frames are lossless PCM, 1.5 bytes a pixel, so larger videos would be hundreds of megabytes.
pub const VIDEO_SIDES: [u32; 2] = [128, 256];
/// Frames rendered per run of the model while making a video.
const VIDEO_BATCH: u32 = 8;

/// What [`Terrain::video`] made: the MP4 file (none when cancelled first) and the seconds rendered.
#[derive(Debug)]
pub struct Video {
    pub file: Option<Vec<u8>>,
    pub seconds: u64,
}

/// An edit's start: the input picture's brightness as heights (model space, -1 to 1, `NATIVE`
/// squared) and how much of each cell is kept as given (1, the mask's opaque pixels) or redrawn (0).
struct Start {
    heights: Vec<f32>,
    keep: Vec<f32>,
}

fn setup(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what}: {e}"))
}

impl Terrain {
    /// Loads the catalog model `spec` from `path` (its one ONNX file) on `runtime` and starts its
    /// worker. Blocking.
    pub fn load(
        runtime: &Runtime,
        path: &Path,
        spec: &ModelSpec,
        threads: usize,
    ) -> Result<Self, BackendError> {
        let file = spec
            .files
            .first()
            .ok_or_else(|| BackendError::Setup(format!("model {} has no file", spec.name)))?;
        let model_sha256 = super::file_sha256(spec, &file.path)?;
        let mut session = runtime.session(path, threads)?;
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let name = spec.name.clone();
        std::thread::Builder::new()
            .name("stacknet-terrain".to_owned())
            .spawn(move || serve_jobs(queue, &name, |r: &Render| heightmaps(&mut session, r)))
            .map_err(|e| setup("cannot start the terrain thread", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model: spec.name.clone(),
                model_sha256,
                version: runtime.backend_version(),
                jobs,
                loaded_at: Timestamp::now(),
            }),
        })
    }

    pub fn model(&self) -> &str {
        &self.inner.model
    }

    /// The PNG files of a request. The same work a task does, without the task (the baseline of the
    /// benchmark).
    pub async fn generate(
        &self,
        image: &ImageGeneration,
        cancel: &Cancellation,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        super::images::png_only(image.output_format.as_deref(), &self.inner.model)?;
        let first = image.seed.unwrap_or_else(|| prompt_seed(&image.prompt));
        let render = Render {
            maps: (0..image.n).map(|i| Draw::of(first.wrapping_add(i))).collect(),
            start: None,
            cancel: cancel.clone(),
        };
        self.render(render, image.dimensions()).await
    }

    /// The PNG files of an edit: the image's brightness taken as heights, noised and redrawn by
    /// the model where the mask is transparent (everywhere without a mask), kept where it is
    /// opaque; seeded as generations are.
    pub async fn edit(
        &self,
        edit: &ImageEdit,
        image: Bytes,
        mask: Option<Bytes>,
        cancel: &Cancellation,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        super::images::png_only(edit.output_format.as_deref(), &self.inner.model)?;
        let start = tokio::task::spawn_blocking(move || start(&image, mask.as_deref()))
            .await
            .map_err(|e| setup("the decoding did not finish", e))??;
        let first = edit.seed.unwrap_or_else(|| prompt_seed(&edit.prompt));
        let render = Render {
            maps: (0..edit.n).map(|i| Draw::of(first.wrapping_add(i))).collect(),
            start: Some(Arc::new(start)),
            cancel: cancel.clone(),
        };
        self.render(render, edit.dimensions()).await
    }

    /// A video of `request.seconds` at [`VIDEO_FPS`]: the model's map morphing from the seed's to
    /// the next seed's (their noises joined along a great circle, one run of the model a frame),
    /// or, with an input reference image, that image's brightness redrawn as for an edit. Progress
    /// (`{"progress": percent}`) goes to `progress` as frames are rendered. Cancelled, it stops
    /// between batches of frames and says how many whole seconds it rendered, with no file.
    pub async fn video(
        &self,
        request: &VideoRequest,
        reference: Option<Bytes>,
        progress: &mpsc::Sender<Value>,
        cancel: &Cancellation,
    ) -> Result<Video, BackendError> {
        let (width, height) = request.dimensions().unwrap_or((VIDEO_SIDES[0], VIDEO_SIDES[0]));
        if width != height || !VIDEO_SIDES.contains(&width) {
            return Err(BackendError::InvalidRequest(format!(
                "size: {} renders videos of {}",
                self.inner.model,
                VIDEO_SIDES.map(|s| format!("{s}x{s}")).join(" or ")
            )));
        }
        let start = match reference {
            Some(image) => Some(Arc::new(
                tokio::task::spawn_blocking(move || start(&image, None))
                    .await
                    .map_err(|e| setup("the decoding did not finish", e))??,
            )),
            None => None,
        };
        let seed = request.seed.unwrap_or_else(|| prompt_seed(&request.prompt));
        let (from, to) = (Draw::of(seed), Draw::of(seed.wrapping_add(1)));
        let frames = u32::try_from(request.seconds.saturating_mul(u64::from(VIDEO_FPS)))
            .map_err(|_| BackendError::InvalidRequest("seconds: too long".to_owned()))?;
        let side = width as usize;
        let mut writer = Some(Mp4Writer::new(side, side, VIDEO_FPS).map_err(|e| setup("the video", e))?);
        let mut done = 0u32;
        let partial = |done: u32| Video {
            file: None,
            seconds: u64::from(done / VIDEO_FPS),
        };
        while done < frames {
            let batch: Vec<Draw> = (done..(done + VIDEO_BATCH).min(frames))
                .map(|k| from.towards(&to, k as f32 / (frames.max(2) - 1) as f32))
                .collect();
            let count = batch.len() as u32;
            let render = Render {
                maps: batch,
                start: start.clone(),
                cancel: cancel.clone(),
            };
            let maps = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(partial(done)),
                maps = ask_worker(&self.inner.jobs, render, "terrain") => match maps {
                    Err(BackendError::Abandoned) => return Ok(partial(done)),
                    other => other?,
                },
            };
            let mut w = writer.take().ok_or_else(|| setup("the video", "no writer"))?;
            writer = Some(
                tokio::task::spawn_blocking(move || {
                    for m in &maps {
                        w.push(&Relief::new(m, side, side).draw(LIGHT))?;
                    }
                    Ok::<_, super::mp4::Mp4Error>(w)
                })
                .await
                .map_err(|e| setup("the drawing did not finish", e))?
                .map_err(|e| setup("the video", e))?,
            );
            done += count;
            let _ = progress
                .send(serde_json::json!({"progress": u64::from(done) * 100 / u64::from(frames)}))
                .await;
        }
        let writer = writer.ok_or_else(|| setup("the video", "no writer"))?;
        let file = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| setup("the video did not finish", e))?
            .map_err(|e| setup("the video", e))?;
        Ok(Video {
            file: Some(file),
            seconds: request.seconds,
        })
    }

    /// Runs `render` on the worker and draws its maps at `size` (the model's own for none).
    async fn render(&self, render: Render, size: Option<(u32, u32)>) -> Result<Vec<Vec<u8>>, BackendError> {
        let (width, height) = size.unwrap_or((NATIVE as u32, NATIVE as u32));
        let cancel = render.cancel.clone();
        let maps = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Abandoned),
            maps = ask_worker(&self.inner.jobs, render, "terrain") => maps?,
        };
        let (w, h) = (width as usize, height as usize);
        tokio::task::spawn_blocking(move || {
            maps.iter()
                .map(|m| {
                    relief(m, w, h)
                        .encode_png()
                        .map_err(|e| setup("cannot write the PNG", e))
                })
                .collect()
        })
        .await
        .map_err(|e| setup("the drawing did not finish", e))?
    }

    async fn run(
        self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> Result<BackendOutcome, BackendError> {
        if task.model != self.inner.model {
            return Err(task.unsupported());
        }
        if task.workload == Workload::VideoGeneration {
            let (_, request) = video::validate(Value::clone(&task.request))?;
            let reference = match &request.input_reference {
                Some(r) => Some(task.file(&r.sha256, "input_reference")?.clone()),
                None => None,
            };
            let made = self.video(&request, reference, &chunks, &task.cancel).await?;
            let mut outcome =
                BackendOutcome::units(made.seconds, BACKEND_ID, self.inner.version.clone(), &task.model);
            outcome.info.model_sha256 = Some(self.inner.model_sha256);
            outcome.files = made
                .file
                .into_iter()
                .map(|bytes| OutputFile {
                    content_type: "video/mp4".to_owned(),
                    bytes: bytes.into(),
                })
                .collect();
            return Ok(outcome);
        }
        let files = match task.workload {
            Workload::ImageGeneration => {
                let (_, image) = validate(Value::clone(&task.request))?;
                self.generate(&image, &task.cancel).await?
            }
            Workload::ImageEdit => {
                let (_, edit) = image_edit::validate(Value::clone(&task.request))?;
                let image = task.file(&edit.image.sha256, "image")?.clone();
                let mask = match &edit.mask {
                    Some(m) => Some(task.file(&m.sha256, "mask")?.clone()),
                    None => None,
                };
                self.edit(&edit, image, mask, &task.cancel).await?
            }
            _ => return Err(task.unsupported()),
        };
        let mut outcome = BackendOutcome::units(
            files.len() as u64,
            BACKEND_ID,
            self.inner.version.clone(),
            &task.model,
        );
        outcome.info.model_sha256 = Some(self.inner.model_sha256);
        outcome.files = files
            .into_iter()
            .map(|bytes| OutputFile {
                content_type: "image/png".to_owned(),
                bytes: bytes.into(),
            })
            .collect();
        Ok(outcome)
    }
}

/// A validator runs an image generation again (M1): the same seed makes the same noise on every
/// machine, and ONNX Runtime's sequential kernels the same heights up to the last bits of another
/// CPU's arithmetic. Edits and videos are not replayed: their uploads are not kept for validators.
impl crate::validator::Replayer for Terrain {
    fn backend_id(&self) -> &str {
        BACKEND_ID
    }

    fn sha256(&self) -> Sha256Digest {
        self.inner.model_sha256
    }

    fn replay(&self, workload: Workload, request: &Value) -> Option<Result<Vec<Vec<u8>>, BackendError>> {
        if workload != Workload::ImageGeneration {
            return None;
        }
        let run = || -> Result<Vec<Vec<u8>>, BackendError> {
            let (_, image) = validate(request.clone())?;
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|e| setup("a replay needs the validator's runtime", e))?;
            runtime.block_on(self.generate(&image, &super::Cancellation::never()))
        };
        Some(run())
    }
}

/// An edit's start from its uploads: the picture's brightness as heights, the mask's alpha as
/// what is kept (each at the model's size).
fn start(image: &[u8], mask: Option<&[u8]>) -> Result<Start, BackendError> {
    let refused = |field: &str, e: super::image::ImageError| {
        BackendError::InvalidRequest(format!("{field}: the upload {e}"))
    };
    let grey = |img: &Rgb| -> Vec<f32> {
        img.resize(NATIVE, NATIVE)
            .data
            .chunks_exact(3)
            .map(|p| (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) / 255.0)
            .collect()
    };
    let picture = Rgb::decode(image).map_err(|e| refused("image", e))?;
    let heights = grey(&picture).into_iter().map(|v| v * 2.0 - 1.0).collect();
    let keep = match mask {
        Some(m) => grey(&Rgb::decode_alpha(m).map_err(|e| refused("mask", e))?),
        None => vec![0.0; NATIVE * NATIVE],
    };
    Ok(Start { heights, keep })
}

/// The seed of a prompt: the first 8 bytes of its SHA-256.
pub fn prompt_seed(prompt: &str) -> u64 {
    let digest = Sha256::digest(prompt.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// xoshiro256**, seeded by splitmix64: a small, exactly specified generator, so a seed means the
/// same noise on every machine.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in (0, 1]: 53 random bits.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal pairs, by Box-Muller.
    fn normals(&mut self, count: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(count + 1);
        while out.len() < count {
            let (u, v) = (self.unit(), self.unit());
            let r = (-2.0 * u.ln()).sqrt();
            let angle = std::f64::consts::TAU * v;
            out.push((r * angle.cos()) as f32);
            out.push((r * angle.sin()) as f32);
        }
        out.truncate(count);
        out
    }
}

/// Runs the model once for all the render's maps: each one's heightmap, `NATIVE` squared.
fn heightmaps(session: &mut Session, r: &Render) -> Result<Vec<Vec<f32>>, BackendError> {
    let failed = |e: ort::Error| BackendError::Setup(format!("the terrain model failed: {e}"));
    if r.cancel.is_cancelled() {
        return Err(BackendError::Abandoned);
    }
    let n = r.maps.len();
    let plane = NATIVE * NATIVE;
    let sigma = if r.start.is_some() { SIGMA_EDIT } else { SIGMA_MAX };
    let (mut noisy, mut labels) = (Vec::with_capacity(n * plane), Vec::with_capacity(n));
    for draw in &r.maps {
        labels.push(draw.label);
        match &r.start {
            None => noisy.extend(draw.noise.iter().map(|z| z * sigma)),
            Some(start) => noisy.extend(draw.noise.iter().zip(&start.heights).map(|(z, x)| x + z * sigma)),
        }
    }
    let outputs = session
        .run(ort::inputs![
            "noisy" => Tensor::from_array(([n, 1, NATIVE, NATIVE], noisy)).map_err(failed)?,
            "sigma" => Tensor::from_array(([n], vec![sigma; n])).map_err(failed)?,
            "difficulty" => Tensor::from_array(([n], labels)).map_err(failed)?,
        ])
        .map_err(failed)?;
    let (_, values) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
    if values.len() != n * plane {
        return Err(BackendError::Setup(format!(
            "the terrain model answered {} values for {n} maps",
            values.len()
        )));
    }
    Ok(values
        .chunks_exact(plane)
        .map(|drawn| match &r.start {
            None => heights(drawn),
            Some(start) => {
                let blended: Vec<f32> = drawn
                    .iter()
                    .zip(&start.heights)
                    .zip(&start.keep)
                    .map(|((d, x), k)| x * k + d * (1.0 - k))
                    .collect();
                heights(&blended)
            }
        })
        .collect())
}

/// Model space (-1..1, asinh-compressed) to heights, floored at zero, as the package does.
fn heights(values: &[f32]) -> Vec<f32> {
    let normalizer = (HEIGHT_RANGE / ASINH_SCALE).asinh();
    let mut h: Vec<f32> = values
        .iter()
        .map(|v| {
            let unit = ((v + 1.0) * 0.5).clamp(0.0, 1.0);
            (ASINH_SCALE * (unit * normalizer).sinh()).clamp(0.0, HEIGHT_RANGE)
        })
        .collect();
    let floor = h.iter().copied().fold(f32::MAX, f32::min);
    h.iter_mut().for_each(|v| *v -= floor);
    h
}

/// Colour stops from water to snow, by relative height.
const RAMP: [(f32, [f32; 3]); 6] = [
    (0.0, [0.16, 0.26, 0.55]),
    (0.18, [0.20, 0.55, 0.80]),
    (0.25, [0.30, 0.62, 0.30]),
    (0.55, [0.80, 0.75, 0.45]),
    (0.80, [0.52, 0.40, 0.30]),
    (1.0, [0.97, 0.97, 0.97]),
];

fn ramp(t: f32) -> [f32; 3] {
    for pair in RAMP.windows(2) {
        let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
        if t <= t1 {
            let a = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0);
            return [0, 1, 2].map(|i| c0[i] + (c1[i] - c0[i]) * a);
        }
    }
    RAMP[RAMP.len() - 1].1
}

/// The light of still images: from the north-west, 45 degrees up.
const LIGHT: [f32; 3] = [-0.5, -0.5, 0.707];

/// A heightmap drawn as a shaded relief map of `width` x `height` pixels, lit from the north-west.
fn relief(map: &[f32], width: usize, height: usize) -> Rgb {
    Relief::new(map, width, height).draw(LIGHT)
}

/// A heightmap resized for drawing, drawn under any light (a video draws one map many times).
struct Relief {
    h: Vec<f32>,
    width: usize,
    height: usize,
    lo: f32,
    span: f32,
    /// Heights in map pixels: a map pixel spans (NATIVE / width) of the model's cells.
    scale: f32,
}

impl Relief {
    fn new(map: &[f32], width: usize, height: usize) -> Self {
        let h = resize(map, NATIVE, width, height);
        let (lo, hi) = h
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        Self {
            h,
            width,
            height,
            lo,
            span: (hi - lo).max(1e-6),
            scale: width.max(height) as f32 / NATIVE as f32,
        }
    }

    /// Drawn with a colour ramp by height, shaded by the light from `light` (a unit vector).
    fn draw(&self, light: [f32; 3]) -> Rgb {
        let (width, height, scale) = (self.width, self.height, self.scale);
        let mut out = Rgb::new(width, height);
        for y in 0..height {
            for x in 0..width {
                let at = |x: usize, y: usize| self.h[y * width + x];
                let dx = (at((x + 1).min(width - 1), y) - at(x.saturating_sub(1), y)) * scale * 2.0;
                let dy = (at(x, (y + 1).min(height - 1)) - at(x, y.saturating_sub(1))) * scale * 2.0;
                let norm = (dx * dx + dy * dy + 1.0).sqrt();
                let shade = ((-dx * light[0] - dy * light[1] + light[2]) / norm).clamp(0.0, 1.0);
                let colour = ramp((at(x, y) - self.lo) / self.span);
                let i = (y * width + x) * 3;
                for (c, v) in colour.into_iter().enumerate() {
                    out.data[i + c] = (v * (0.35 + 0.65 * shade) * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }
}

/// Bilinear resize of a `side` x `side` map (half-pixel centres, edges clamped).
fn resize(map: &[f32], side: usize, width: usize, height: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(width * height);
    let coord = |i: usize, to: usize| {
        let f = ((i as f32 + 0.5) * side as f32 / to as f32 - 0.5).clamp(0.0, (side - 1) as f32);
        let i0 = f.floor() as usize;
        (i0, (i0 + 1).min(side - 1), f - i0 as f32)
    };
    for y in 0..height {
        let (y0, y1, wy) = coord(y, height);
        for x in 0..width {
            let (x0, x1, wx) = coord(x, width);
            let top = map[y0 * side + x0] * (1.0 - wx) + map[y0 * side + x1] * wx;
            let bottom = map[y1 * side + x0] * (1.0 - wx) + map[y1 * side + x1] * wx;
            out.push(top * (1.0 - wy) + bottom * wy);
        }
    }
    out
}

impl Backend for Terrain {
    fn models(&self) -> Vec<ModelOffer> {
        super::loaded_offer(
            &self.inner.model,
            &[
                Workload::ImageGeneration,
                Workload::ImageEdit,
                Workload::VideoGeneration,
            ],
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

    #[test]
    fn the_generator_is_the_specified_xoshiro256_starstar() {
        // splitmix64 from 0 gives the published first outputs; xoshiro256** over them is fixed.
        let mut rng = Rng::new(0);
        assert_eq!(rng.0[0], 0xE220_A839_7B1D_CDAF);
        let a: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(0);
        assert_eq!((0..3).map(|_| again.next_u64()).collect::<Vec<_>>(), a);
        assert_ne!(Rng::new(1).next_u64(), a[0]);
    }

    #[test]
    fn noise_is_standard_normal() {
        let z = Rng::new(42).normals(100_001);
        assert_eq!(z.len(), 100_001);
        let mean = z.iter().map(|v| f64::from(*v)).sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{mean} {var}");
    }

    #[test]
    fn heights_are_floored_at_zero_and_drawn_at_the_size_asked() {
        let h = heights(&[-1.0, 0.0, 1.0, 2.0]);
        assert_eq!(h[0], 0.0);
        assert!(h[1] > 0.0 && h[2] > h[1] && (h[3] - h[2]).abs() < 1e-6);
        let map: Vec<f32> = (0..NATIVE * NATIVE).map(|i| (i % NATIVE) as f32).collect();
        let img = relief(&map, 256, 64);
        assert_eq!((img.width, img.height, img.data.len()), (256, 64, 256 * 64 * 3));
        assert_ne!(img.pixel(0, 0), img.pixel(255, 0), "low and high ground differ");
        assert_eq!(prompt_seed("a lake"), prompt_seed("a lake"));
        assert_ne!(prompt_seed("a lake"), prompt_seed("a hill"));
    }
}
