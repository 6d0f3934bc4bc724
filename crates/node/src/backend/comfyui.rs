//! Image generation through a ComfyUI server the operator runs: the operator's workflow (ComfyUI's
//! API format, "Save (API Format)") with placeholders, filled from each request, submitted, followed
//! over ComfyUI's websocket, and its output images fetched.
//!
//! Placeholders are JSON strings in the workflow: `"{{prompt}}"` (inside a string, replaced by the
//! prompt's text), and, as whole strings replaced by numbers, `"{{seed}}"`, `"{{width}}"`,
//! `"{{height}}"` and `"{{n}}"` (a batch size). Edits (`/v1/images/edits`) take a second workflow,
//! `edit_workflow`, whose `LoadImage` nodes name `"{{image}}"` (and `"{{mask}}"`): the node uploads
//! the task's image and mask to ComfyUI (`POST /upload/image`, type `input`) and puts the names
//! ComfyUI gives them there. The seed is the request's `seed`, else the first 8
//! bytes of the SHA-256 of the prompt, cut to 53 bits, so the same request gives the same workflow.
//! Sizes: the request's, else the workflow's own (`auto` or none leaves `{{width}}` and `{{height}}`
//! at [`DEFAULT_SIDE`]).
//!
//! The node connects to `/ws?clientId=...` first, then `POST /prompt` with that client id; it reads
//! the websocket's `progress`, `executed` and `execution_error` messages for its prompt until
//! `executing` with `node: null` (done) or an error, then lists the outputs in `/history/{id}` and
//! downloads every image with `/view`. A task the hub cancels interrupts ComfyUI (`POST /interrupt`).
//! A ComfyUI refusal of the workflow (`node_errors`), an execution error mid-job, or no image in the
//! outputs fails the task, named; nothing is paid for it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::{json, Value};
use stacknet_api::request::image_edit;
use stacknet_api::request::image_generation::{validate, ImageGeneration};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::ModelOffer;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::form::{Upload, UploadForm};
use super::images::{png_only, server_job, server_outcome};
use super::{Backend, BackendError, BackendOutcome, BackendTask, Cancellation, OutputFile};
use crate::config::ComfyUiConfig;

/// The backend id in Hello and paperwork.
pub const BACKEND_ID: &str = "comfyui";
/// The side `{{width}}` and `{{height}}` take when the request leaves the size to the backend.
pub const DEFAULT_SIDE: u32 = 512;
/// The most one job may take, images downloaded included, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A ComfyUI server as a backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ComfyUi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: String,
    model: String,
    workflow: Value,
    edit_workflow: Option<Value>,
    client: reqwest::Client,
    timeout: Duration,
}

fn setup(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what}: {e}"))
}

impl ComfyUi {
    /// Reads the workflow and checks that it names `{{prompt}}`.
    pub fn new(config: &ComfyUiConfig) -> Result<Self, BackendError> {
        let workflow = read_workflow(&config.workflow, &["{{prompt}}"])?;
        let edit_workflow = match &config.edit_workflow {
            Some(path) => Some(read_workflow(path, &["{{prompt}}", "{{image}}"])?),
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| setup("cannot build the HTTP client", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                base: config.base_url.trim_end_matches('/').to_owned(),
                model: config.model.clone(),
                workflow,
                edit_workflow,
                client,
                timeout: config.timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            }),
        })
    }
}

/// A workflow file: ComfyUI's API format (an object of nodes) naming every one of `placeholders`.
fn read_workflow(path: &std::path::Path, placeholders: &[&str]) -> Result<Value, BackendError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| setup(&format!("cannot read the workflow {}", path.display()), e))?;
    let workflow: Value = serde_json::from_str(&text)
        .map_err(|e| setup(&format!("the workflow {} is not JSON", path.display()), e))?;
    let missing: Vec<&str> = placeholders
        .iter()
        .copied()
        .filter(|p| !text.contains(p))
        .collect();
    if !workflow.is_object() || !missing.is_empty() {
        return Err(BackendError::Setup(format!(
            "the workflow {} must be ComfyUI's API format (an object of nodes) with the placeholders {}",
            path.display(),
            placeholders.join(", ")
        )));
    }
    Ok(workflow)
}

/// What a request fills a workflow's placeholders with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filling<'a> {
    pub prompt: &'a str,
    pub seed: Option<u64>,
    pub size: Option<(u32, u32)>,
    pub n: u64,
    /// The names ComfyUI gave the uploaded image and mask (edits).
    pub image: Option<&'a str>,
    pub mask: Option<&'a str>,
}

impl<'a> Filling<'a> {
    pub fn generation(image: &'a ImageGeneration) -> Self {
        Self {
            prompt: &image.prompt,
            seed: image.seed,
            size: image.dimensions(),
            n: image.n,
            image: None,
            mask: None,
        }
    }
}

/// The workflow with its placeholders filled.
pub fn fill(workflow: &Value, with: &Filling<'_>) -> Value {
    let (width, height) = with.size.unwrap_or((DEFAULT_SIDE, DEFAULT_SIDE));
    let seed = with.seed.unwrap_or_else(|| prompt_seed(with.prompt));
    let whole = [
        ("{{seed}}", Value::from(seed)),
        ("{{width}}", Value::from(width)),
        ("{{height}}", Value::from(height)),
        ("{{n}}", Value::from(with.n)),
        ("{{image}}", with.image.map_or(Value::Null, Value::from)),
        ("{{mask}}", with.mask.map_or(Value::Null, Value::from)),
    ];
    fn walk(v: &Value, prompt: &str, whole: &[(&str, Value)]) -> Value {
        match v {
            Value::String(s) => match whole.iter().find(|(p, _)| s == p) {
                Some((_, n)) => n.clone(),
                None => Value::String(s.replace("{{prompt}}", prompt)),
            },
            Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, prompt, whole)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, i)| (k.clone(), walk(i, prompt, whole)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    walk(workflow, with.prompt, &whole)
}

/// The seed of a prompt: the terrain model's ([`super::terrain::prompt_seed`]: the first 8 bytes
/// of its SHA-256), cut to 53 bits (what JSON holds exactly).
pub fn prompt_seed(prompt: &str) -> u64 {
    super::terrain::prompt_seed(prompt) >> 11
}

impl Inner {
    async fn run(&self, task: BackendTask) -> Result<BackendOutcome, BackendError> {
        if task.model != self.model {
            return Err(task.unsupported());
        }
        let cancel = task.cancel.clone();
        let workflow = match (task.workload, &self.edit_workflow) {
            (Workload::ImageGeneration, _) => {
                let (_, image) = validate(Value::clone(&task.request))?;
                png_only(image.output_format.as_deref(), &self.model)?;
                fill(&self.workflow, &Filling::generation(&image))
            }
            (Workload::ImageEdit, Some(edit_workflow)) => {
                let (_, edit) = image_edit::validate(Value::clone(&task.request))?;
                png_only(edit.output_format.as_deref(), &self.model)?;
                let image = self
                    .upload(task.file(&edit.image.sha256, "image")?, "image")
                    .await?;
                let mask = match &edit.mask {
                    Some(m) => Some(self.upload(task.file(&m.sha256, "mask")?, "mask").await?),
                    None => None,
                };
                let filling = Filling {
                    prompt: &edit.prompt,
                    seed: edit.seed,
                    size: edit.dimensions(),
                    n: edit.n,
                    image: Some(&image),
                    mask: mask.as_deref(),
                };
                fill(edit_workflow, &filling)
            }
            _ => return Err(task.unsupported()),
        };
        let n = task.request.get("n").and_then(Value::as_u64).unwrap_or(1);
        let job = self.job(workflow, n, &cancel);
        let interrupt = format!("{}/interrupt", self.base);
        let images = server_job(&self.client, interrupt, self.timeout, &cancel, job).await?;
        Ok(server_outcome(BACKEND_ID, &task.model, images))
    }

    /// Uploads an input image; the name ComfyUI gives it, as a `LoadImage` node names it.
    async fn upload(&self, bytes: &[u8], field: &str) -> Result<String, BackendError> {
        let content_type = stacknet_api::output::image_content_type(bytes).unwrap_or("image/png");
        let ext = content_type.trim_start_matches("image/");
        let filename = format!(
            "stacknet-{}.{ext}",
            &stacknet_protocol::Sha256Digest::of(bytes).to_string()[..16]
        );
        let form = UploadForm::new(
            &json!({"type": "input", "overwrite": "true"}),
            None,
            &[Upload {
                field: "image",
                filename: &filename,
                content_type,
                bytes,
            }],
            |_| None,
        );
        let response = self
            .client
            .post(format!("{}/upload/image", self.base))
            .header(reqwest::header::CONTENT_TYPE, form.content_type())
            .body(form.body)
            .send()
            .await
            .map_err(|e| BackendError::Connect(format!("ComfyUI: {e}")))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let name = answer["name"]
            .as_str()
            .filter(|_| status.is_success())
            .ok_or_else(|| BackendError::Status {
                status: status.as_u16(),
                message: format!("ComfyUI would not take the {field} upload"),
            })?;
        Ok(match answer["subfolder"].as_str() {
            Some(sub) if !sub.is_empty() => format!("{sub}/{name}"),
            _ => name.to_owned(),
        })
    }

    /// Submits the filled workflow, follows it to its end, and downloads its images (at most `n`).
    async fn job(
        &self,
        workflow: Value,
        n: u64,
        cancel: &Cancellation,
    ) -> Result<Vec<OutputFile>, BackendError> {
        let client_id = hex::encode(stacknet_protocol::Nonce::random().0);
        let ws_url = format!("{}/ws?clientId={client_id}", self.base.replacen("http", "ws", 1));
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .map_err(|e| BackendError::Connect(format!("ComfyUI's websocket: {e}")))?;
        let body = json!({"prompt": workflow, "client_id": client_id});
        let response = self
            .client
            .post(format!("{}/prompt", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| BackendError::Connect(format!("ComfyUI: {e}")))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success()
            || answer
                .get("node_errors")
                .is_some_and(|e| e.as_object().is_some_and(|m| !m.is_empty()))
        {
            return Err(BackendError::Status {
                status: status.as_u16(),
                message: format!("ComfyUI refused the workflow: {}", refusal(&answer)),
            });
        }
        let prompt_id = answer
            .get("prompt_id")
            .and_then(Value::as_str)
            .ok_or_else(|| BackendError::Malformed("ComfyUI's answer has no prompt_id".to_owned()))?
            .to_owned();
        while let Some(message) = ws.next().await {
            if cancel.is_cancelled() {
                return Err(BackendError::Abandoned);
            }
            let text = match message {
                Ok(Message::Text(t)) => t.as_str().to_owned(),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue, // previews (binary), pings
                Err(e) => return Err(BackendError::Stream(format!("ComfyUI's websocket: {e}"))),
            };
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let data = &event["data"];
            if data.get("prompt_id").and_then(Value::as_str) != Some(prompt_id.as_str()) {
                continue;
            }
            match event["type"].as_str() {
                Some("progress") => tracing::debug!(
                    value = data["value"].as_u64(),
                    max = data["max"].as_u64(),
                    "ComfyUI progress"
                ),
                Some("execution_error") => {
                    return Err(BackendError::Status {
                        status: 500,
                        message: format!(
                            "ComfyUI failed in node {} ({}): {}",
                            data["node_id"].as_str().unwrap_or("?"),
                            data["node_type"].as_str().unwrap_or("?"),
                            data["exception_message"].as_str().unwrap_or("no message")
                        ),
                    })
                }
                Some("execution_interrupted") => return Err(BackendError::Abandoned),
                Some("executing") if data["node"].is_null() => break,
                Some("execution_success") => break,
                _ => {}
            }
        }
        self.outputs(&prompt_id, n).await
    }

    /// The images of a finished prompt, downloaded, in the order of its output nodes.
    async fn outputs(&self, prompt_id: &str, n: u64) -> Result<Vec<OutputFile>, BackendError> {
        let history: Value = self
            .client
            .get(format!("{}/history/{prompt_id}", self.base))
            .send()
            .await
            .map_err(|e| BackendError::Connect(format!("ComfyUI: {e}")))?
            .json()
            .await
            .map_err(|e| BackendError::Malformed(format!("ComfyUI's history: {e}")))?;
        let outputs = history
            .pointer(&format!("/{prompt_id}/outputs"))
            .and_then(Value::as_object)
            .ok_or_else(|| {
                BackendError::Malformed("ComfyUI's history has no outputs for the prompt".to_owned())
            })?;
        let mut keys: Vec<&String> = outputs.keys().collect();
        keys.sort_by_key(|k| k.parse::<u64>().unwrap_or(u64::MAX));
        // (filename, subfolder) of every output image, in node order; previews are not outputs.
        let mut wanted: Vec<(String, String)> = Vec::new();
        for key in keys {
            for image in outputs[key]["images"].as_array().into_iter().flatten() {
                if image["type"] == "output" {
                    let text = |k: &str| image[k].as_str().unwrap_or_default().to_owned();
                    wanted.push((text("filename"), text("subfolder")));
                }
            }
        }
        wanted.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        let mut files = Vec::new();
        for (filename, subfolder) in wanted {
            let query = [
                ("filename", filename.as_str()),
                ("subfolder", subfolder.as_str()),
                ("type", "output"),
            ];
            let response = self
                .client
                .get(format!("{}/view", self.base))
                .query(&query)
                .send()
                .await
                .map_err(|e| BackendError::Connect(format!("ComfyUI: {e}")))?;
            if !response.status().is_success() {
                return Err(BackendError::Status {
                    status: response.status().as_u16(),
                    message: format!("ComfyUI would not give the image {:?}", query[0].1),
                });
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| BackendError::Stream(format!("ComfyUI's image: {e}")))?;
            let content_type = stacknet_api::output::image_content_type(&bytes).ok_or_else(|| {
                BackendError::Malformed(format!("ComfyUI's output {:?} is not an image", query[0].1))
            })?;
            files.push(OutputFile {
                content_type: content_type.to_owned(),
                bytes,
            });
        }
        if files.is_empty() {
            return Err(BackendError::Malformed(
                "the workflow saved no image (it needs a SaveImage node)".to_owned(),
            ));
        }
        Ok(files)
    }
}

/// What ComfyUI said when it refused a workflow.
fn refusal(answer: &Value) -> String {
    let error = answer["error"]["message"].as_str().unwrap_or("");
    let nodes: Vec<String> = answer["node_errors"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, e)| {
                    let first = e["errors"][0]["message"].as_str().unwrap_or("invalid");
                    format!("node {id}: {first}")
                })
                .collect()
        })
        .unwrap_or_default();
    [error.to_owned(), nodes.join("; ")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

impl Backend for ComfyUi {
    fn models(&self) -> Vec<ModelOffer> {
        let mut workloads = vec![Workload::ImageGeneration];
        if self.inner.edit_workflow.is_some() {
            workloads.push(Workload::ImageEdit);
        }
        super::server_offer(&self.inner.model, workloads, BACKEND_ID)
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

    #[test]
    fn placeholders_are_filled_from_the_request() {
        let workflow = json!({
            "3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}", "steps": 20}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": "{{n}}"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "photo of {{prompt}}, detailed"}},
        });
        let (_, image) =
            validate(json!({"model": "m", "prompt": "a cat", "n": 2, "size": "1024x1536", "seed": 9}))
                .unwrap();
        let filled = fill(&workflow, &Filling::generation(&image));
        assert_eq!(filled["3"]["inputs"]["seed"], 9);
        assert_eq!(
            filled["5"]["inputs"],
            json!({"width": 1024, "height": 1536, "batch_size": 2})
        );
        assert_eq!(filled["6"]["inputs"]["text"], "photo of a cat, detailed");
        let (_, unseeded) = validate(json!({"model": "m", "prompt": "a cat"})).unwrap();
        let a = fill(&workflow, &Filling::generation(&unseeded));
        assert_eq!(
            a,
            fill(&workflow, &Filling::generation(&unseeded)),
            "the prompt seeds it"
        );
        assert!(a["3"]["inputs"]["seed"].as_u64().unwrap() < 1 << 53);
        assert_eq!(a["5"]["inputs"]["width"], DEFAULT_SIDE);
    }

    #[test]
    fn an_edit_names_its_uploads() {
        let workflow = json!({"1": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
            "2": {"class_type": "LoadImageMask", "inputs": {"image": "{{mask}}", "channel": "alpha"}}});
        let filling = Filling {
            prompt: "p",
            seed: Some(1),
            size: None,
            n: 1,
            image: Some("input/a.png"),
            mask: Some("b.png"),
        };
        let filled = fill(&workflow, &filling);
        assert_eq!(filled["1"]["inputs"]["image"], "input/a.png");
        assert_eq!(filled["2"]["inputs"]["image"], "b.png");
    }

    #[test]
    fn refusals_name_the_nodes() {
        let answer = json!({"error": {"message": "Prompt outputs failed validation"},
            "node_errors": {"4": {"errors": [{"message": "Value not in list: ckpt_name"}]}}});
        assert_eq!(
            refusal(&answer),
            "Prompt outputs failed validation: node 4: Value not in list: ckpt_name"
        );
    }
}
