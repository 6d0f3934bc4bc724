//! Image generation and edits through an AUTOMATIC1111 Stable Diffusion web UI (or a server with
//! its API, such as Forge or SD.Next) the operator runs with `--api`.
//!
//! A generation is `POST /sdapi/v1/txt2img`, an edit `POST /sdapi/v1/img2img` with the upload as
//! its `init_images` and, for a mask, OpenAI's mask turned into A1111's: OpenAI redraws where the
//! mask is transparent, A1111 where it is white, so the mask's alpha is inverted into a grey PNG.
//! Both ask for `n` images in one batch at the size asked ([`DEFAULT_SIDE`] square for `auto` or
//! none), with the request's `seed` (else the prompt's, as for ComfyUI) and the operator's
//! checkpoint (`override_settings.sd_model_checkpoint`), steps and denoising strength. The answer's
//! images are base64 PNGs; with a batch A1111 may put a grid of them first, so the last `n` are
//! taken. While a job runs the node polls `GET /sdapi/v1/progress` (logged); a task the hub cancels
//! interrupts it (`POST /sdapi/v1/interrupt`). An error answer is named with A1111's own message;
//! nothing is paid for it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use stacknet_api::request::{image_edit, image_generation};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::ModelOffer;
use tokio::sync::mpsc;

use super::image::Rgb;
use super::images::{png_only, server_job, server_outcome};
use super::{Backend, BackendError, BackendOutcome, BackendTask, OutputFile};
use crate::config::Automatic1111Config;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "automatic1111";
/// The side of `auto` or no size (Stable Diffusion 1.5's).
pub const DEFAULT_SIDE: u32 = 512;
/// How much of an edit's input is redrawn unless configured otherwise (A1111's default).
pub const DEFAULT_DENOISING: f64 = 0.75;
/// How often progress is asked for while a job runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// An AUTOMATIC1111 server as a backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Automatic1111 {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: String,
    config: Automatic1111Config,
    client: reqwest::Client,
    timeout: Duration,
}

impl Automatic1111 {
    pub fn new(config: &Automatic1111Config) -> Result<Self, BackendError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| BackendError::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                base: config.base_url.trim_end_matches('/').to_owned(),
                timeout: config
                    .timeout_secs
                    .map_or(super::comfyui::DEFAULT_TIMEOUT, Duration::from_secs),
                config: config.clone(),
                client,
            }),
        })
    }
}

/// The fields both endpoints share.
fn common(
    config: &Automatic1111Config,
    prompt: &str,
    seed: Option<u64>,
    size: Option<(u32, u32)>,
    n: u64,
) -> Map<String, Value> {
    let (width, height) = size.unwrap_or((DEFAULT_SIDE, DEFAULT_SIDE));
    let mut body = Map::new();
    body.insert("prompt".into(), json!(prompt));
    body.insert(
        "seed".into(),
        json!(seed.unwrap_or_else(|| super::comfyui::prompt_seed(prompt))),
    );
    body.insert("width".into(), json!(width));
    body.insert("height".into(), json!(height));
    body.insert("batch_size".into(), json!(n));
    body.insert("n_iter".into(), json!(1));
    body.insert("send_images".into(), json!(true));
    body.insert("save_images".into(), json!(false));
    if let Some(steps) = config.steps {
        body.insert("steps".into(), json!(steps));
    }
    if let Some(sampler) = &config.sampler {
        body.insert("sampler_name".into(), json!(sampler));
    }
    if let Some(checkpoint) = &config.checkpoint {
        body.insert(
            "override_settings".into(),
            json!({"sd_model_checkpoint": checkpoint}),
        );
        body.insert("override_settings_restore_afterwards".into(), json!(false));
    }
    body
}

/// OpenAI's mask (transparent: redraw) as A1111's (white: redraw), a grey PNG.
pub fn a1111_mask(mask: &[u8]) -> Result<Vec<u8>, BackendError> {
    let mut alpha =
        Rgb::decode_alpha(mask).map_err(|e| BackendError::InvalidRequest(format!("mask: the upload {e}")))?;
    alpha.data.iter_mut().for_each(|v| *v = 255 - *v);
    alpha
        .encode_png()
        .map_err(|e| BackendError::Setup(format!("cannot write the mask: {e}")))
}

impl Inner {
    /// The endpoint and body of a task, and how many images it asks for.
    fn request(&self, task: &BackendTask) -> Result<(&'static str, Value, u64), BackendError> {
        match task.workload {
            Workload::ImageGeneration => {
                let (_, image) = image_generation::validate(Value::clone(&task.request))?;
                png_only(image.output_format.as_deref(), &self.config.model)?;
                let body = common(
                    &self.config,
                    &image.prompt,
                    image.seed,
                    image.dimensions(),
                    image.n,
                );
                Ok(("txt2img", Value::Object(body), image.n))
            }
            Workload::ImageEdit => {
                let (_, edit) = image_edit::validate(Value::clone(&task.request))?;
                png_only(edit.output_format.as_deref(), &self.config.model)?;
                let engine = base64::engine::general_purpose::STANDARD;
                let mut body = common(&self.config, &edit.prompt, edit.seed, edit.dimensions(), edit.n);
                let image = task.file(&edit.image.sha256, "image")?;
                body.insert("init_images".into(), json!([engine.encode(image)]));
                body.insert(
                    "denoising_strength".into(),
                    json!(self.config.denoising_strength.unwrap_or(DEFAULT_DENOISING)),
                );
                if let Some(mask) = &edit.mask {
                    let mask = a1111_mask(task.file(&mask.sha256, "mask")?)?;
                    body.insert("mask".into(), json!(engine.encode(mask)));
                }
                Ok(("img2img", Value::Object(body), edit.n))
            }
            _ => Err(task.unsupported()),
        }
    }

    async fn run(&self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        if task.model != self.config.model {
            return Err(task.unsupported());
        }
        let (endpoint, body, n) = self.request(&task)?;
        let job = async {
            let response = self
                .client
                .post(format!("{}/sdapi/v1/{endpoint}", self.base))
                .json(&body)
                .send()
                .await
                .map_err(|e| BackendError::Connect(format!("AUTOMATIC1111: {e}")))?;
            let status = response.status();
            let answer: Value = response.json().await.map_err(|e| {
                BackendError::Malformed(format!("AUTOMATIC1111's {endpoint} answer is not JSON: {e}"))
            })?;
            if !status.is_success() {
                return Err(refusal(status.as_u16(), &answer));
            }
            images(&answer, n)
        };
        // Progress is followed for as long as the job runs.
        let followed = async {
            tokio::select! {
                done = job => done,
                never = self.follow_progress() => match never {},
            }
        };
        let interrupt = format!("{}/sdapi/v1/interrupt", self.base);
        let files = server_job(&self.client, interrupt, self.timeout, &task.cancel, followed).await?;
        Ok(server_outcome(BACKEND_ID, &task.model, files))
    }

    /// Logs the server's progress every [`PROGRESS_EVERY`]; never ends.
    async fn follow_progress(&self) -> std::convert::Infallible {
        let url = format!("{}/sdapi/v1/progress?skip_current_image=true", self.base);
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let progress = match self.client.get(&url).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if let Some(p) = progress {
                tracing::debug!(
                    progress = p["progress"].as_f64(),
                    eta = p["eta_relative"].as_f64(),
                    "AUTOMATIC1111 progress"
                );
            }
        }
    }
}

/// The last `n` images of an answer (a batch's grid, if any, comes first).
fn images(answer: &Value, n: u64) -> Result<Vec<OutputFile>, BackendError> {
    let all = answer["images"]
        .as_array()
        .ok_or_else(|| BackendError::Malformed("AUTOMATIC1111's answer has no images".to_owned()))?;
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if all.is_empty() {
        return Err(BackendError::Malformed(
            "AUTOMATIC1111 answered no image".to_owned(),
        ));
    }
    all.iter()
        .enumerate()
        .skip(all.len().saturating_sub(n))
        .map(|(i, b64)| {
            let b64 = b64.as_str().ok_or_else(|| {
                BackendError::Malformed(format!("AUTOMATIC1111's images[{i}] is not a string"))
            })?;
            super::images::output_image(b64, &format!("AUTOMATIC1111's images[{i}]"))
        })
        .collect()
}

/// What A1111 said when it failed: its `errors`, `detail` or `error`.
fn refusal(status: u16, answer: &Value) -> BackendError {
    let said = ["errors", "detail", "error"]
        .iter()
        .filter_map(|k| answer[*k].as_str())
        .find(|m| !m.is_empty())
        .unwrap_or("no message");
    let message = format!("AUTOMATIC1111 failed: {said}");
    if status == 422 {
        BackendError::InvalidRequest(message)
    } else {
        BackendError::Status { status, message }
    }
}

impl Backend for Automatic1111 {
    fn models(&self) -> Vec<ModelOffer> {
        super::server_offer(
            &self.inner.config.model,
            vec![Workload::ImageGeneration, Workload::ImageEdit],
            BACKEND_ID,
        )
    }

    fn execute(
        &self,
        task: BackendTask,
        _chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.run(task).await })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> Automatic1111Config {
        Automatic1111Config {
            base_url: "http://127.0.0.1:7860".into(),
            model: "sd15".into(),
            checkpoint: Some("v1-5-pruned-emaonly.safetensors".into()),
            steps: Some(4),
            sampler: None,
            denoising_strength: None,
            timeout_secs: None,
        }
    }

    #[test]
    fn a_request_becomes_a1111_fields() {
        let body = common(&config(), "a lake", None, Some((256, 128)), 2);
        assert_eq!(
            (
                &body["width"],
                &body["height"],
                &body["batch_size"],
                &body["steps"]
            ),
            (&json!(256), &json!(128), &json!(2), &json!(4))
        );
        assert_eq!(
            body["override_settings"]["sd_model_checkpoint"],
            "v1-5-pruned-emaonly.safetensors"
        );
        assert_eq!(body["seed"], json!(super::super::comfyui::prompt_seed("a lake")));
        let seeded = common(&config(), "a lake", Some(7), None, 1);
        assert_eq!(
            (&seeded["seed"], &seeded["width"]),
            (&json!(7), &json!(DEFAULT_SIDE))
        );
    }

    #[test]
    fn the_mask_is_inverted_and_a_grid_is_skipped() {
        let mut mask = Rgb::new(2, 1);
        mask.data = vec![0; 6];
        // An RGB PNG has no alpha: all kept, so A1111 redraws nothing (black).
        let inverted = Rgb::decode(&a1111_mask(&mask.encode_png().unwrap()).unwrap()).unwrap();
        assert_eq!(inverted.data, vec![0; 6]);
        let png = |v: u8| {
            let mut i = Rgb::new(1, 1);
            i.data = vec![v; 3];
            base64::engine::general_purpose::STANDARD.encode(i.encode_png().unwrap())
        };
        let answer = json!({"images": [png(1), png(2), png(3)]});
        let got = images(&answer, 2).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(Rgb::decode(&got[0].bytes).unwrap().data, vec![2; 3]);
        assert!(images(&json!({"images": ["bm90IGFuIGltYWdl"]}), 1).is_err());
        let failed = refusal(
            500,
            &json!({"error": "OutOfMemoryError", "errors": "CUDA out of memory"}),
        );
        assert_eq!(
            failed.to_string(),
            "upstream answered HTTP 500: AUTOMATIC1111 failed: CUDA out of memory"
        );
    }
}
