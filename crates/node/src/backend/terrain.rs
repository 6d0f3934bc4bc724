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

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::Value;
use sha2::{Digest, Sha256};
use stacknet_api::request::image_generation::{validate, ImageGeneration};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::values::Sha256Digest;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use stacknet_protocol::Timestamp;
use tokio::sync::mpsc;

use super::image::Rgb;
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

/// One request's heightmaps for the worker: a seed each.
struct Render {
    seeds: Vec<u64>,
    cancel: Cancellation,
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
        if image.output_format.as_deref().is_some_and(|f| f != "png") {
            return Err(BackendError::InvalidRequest(format!(
                "output_format: {} writes png only",
                self.inner.model
            )));
        }
        let (width, height) = image.dimensions().unwrap_or((NATIVE as u32, NATIVE as u32));
        let first = image.seed.unwrap_or_else(|| prompt_seed(&image.prompt));
        let render = Render {
            seeds: (0..image.n).map(|i| first.wrapping_add(i)).collect(),
            cancel: cancel.clone(),
        };
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

    async fn run(self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        if task.workload != Workload::ImageGeneration || task.model != self.inner.model {
            return Err(task.unsupported());
        }
        let (_, image) = validate(Value::clone(&task.request))?;
        let files = self.generate(&image, &task.cancel).await?;
        let mut outcome = BackendOutcome::units(image.n, BACKEND_ID, self.inner.version.clone(), &task.model);
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

/// Runs the model once for all the request's seeds: each one's heightmap, `NATIVE` squared.
fn heightmaps(session: &mut Session, r: &Render) -> Result<Vec<Vec<f32>>, BackendError> {
    let failed = |e: ort::Error| BackendError::Setup(format!("the terrain model failed: {e}"));
    if r.cancel.is_cancelled() {
        return Err(BackendError::Abandoned);
    }
    let n = r.seeds.len();
    let plane = NATIVE * NATIVE;
    let (mut noisy, mut labels) = (Vec::with_capacity(n * plane), Vec::with_capacity(n));
    for seed in &r.seeds {
        let mut rng = Rng::new(*seed);
        let difficulty = rng.next_u64() % DIFFICULTIES + 1;
        labels.push((difficulty - 1) as f32 / (DIFFICULTIES - 1) as f32);
        noisy.extend(rng.normals(plane).into_iter().map(|z| z * SIGMA_MAX));
    }
    let outputs = session
        .run(ort::inputs![
            "noisy" => Tensor::from_array(([n, 1, NATIVE, NATIVE], noisy)).map_err(failed)?,
            "sigma" => Tensor::from_array(([n], vec![SIGMA_MAX; n])).map_err(failed)?,
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
    Ok(values.chunks_exact(plane).map(heights).collect())
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

/// A heightmap drawn as a shaded relief map of `width` x `height` pixels.
fn relief(map: &[f32], width: usize, height: usize) -> Rgb {
    let h = resize(map, NATIVE, width, height);
    let (lo, hi) = h
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = (hi - lo).max(1e-6);
    // Heights in map pixels: a map pixel spans (NATIVE / width) of the model's cells.
    let scale = width.max(height) as f32 / NATIVE as f32;
    let light = [-0.5f32, -0.5, 0.707];
    let mut out = Rgb::new(width, height);
    for y in 0..height {
        for x in 0..width {
            let at = |x: usize, y: usize| h[y * width + x];
            let dx = (at((x + 1).min(width - 1), y) - at(x.saturating_sub(1), y)) * scale * 2.0;
            let dy = (at(x, (y + 1).min(height - 1)) - at(x, y.saturating_sub(1))) * scale * 2.0;
            let norm = (dx * dx + dy * dy + 1.0).sqrt();
            let shade = ((-dx * light[0] - dy * light[1] + light[2]) / norm).clamp(0.0, 1.0);
            let colour = ramp((at(x, y) - lo) / span);
            let i = (y * width + x) * 3;
            for (c, v) in colour.into_iter().enumerate() {
                out.data[i + c] = (v * (0.35 + 0.65 * shade) * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
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
            Workload::ImageGeneration,
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
        _chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        Box::pin(self.clone().run(task))
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
