//! Fixture backends: scripted stand-ins for model servers that a node runs like any backend, so
//! tests exercise the real hub, node and wire with inputs and outputs a test can predict.
//!
//! - [`InvertImages`]: serves `/v1/images/edits` for [`INVERT_MODEL`]: it takes the uploaded image
//!   (a PNG header, then any bytes) and returns `n` files, the i-th with every byte after the header
//!   XOR `0xff - i` (the header kept, so each is still the PNG the request's terms ask for). It
//!   proves that files travel between hub and node as bytes, in binary frames, both ways.
//! - [`InflatedUsage`]: any backend, with the usage it reports replaced: a dishonest node's billing,
//!   for the hub's usage bound to refuse.
//! - [`WideEmbeddings`]: serves `/v1/embeddings` for [`WIDE_EMBED_MODEL`]: for each text input a
//!   vector of [`WIDE_EMBED_DIMENSIONS`] numbers written with every digit they have, so an answer of
//!   a few hundred inputs is larger than one WebSocket frame. It proves that large outputs travel in
//!   several chunks and come back whole.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use serde_json::Value;
use stacknet_api::request::embeddings::{self, EmbeddingInput};
use stacknet_api::request::image_edit;
use stacknet_node::backend::{Backend, BackendError, BackendOutcome, BackendTask, OutputFile};
use stacknet_protocol::contract::{Usage, Workload};
use stacknet_protocol::paperwork::BackendInfo;
use stacknet_protocol::wire::ModelOffer;
use tokio::sync::mpsc;

/// The model name [`InvertImages`] serves.
pub const INVERT_MODEL: &str = "invert-image";

/// See the module docs.
#[derive(Debug, Default)]
pub struct InvertImages;

/// The bytes of a PNG's signature and IHDR chunk, which [`InvertImages`] keeps.
const PNG_HEADER: usize = 33;

/// What [`InvertImages`] returns as its `i`-th image for `input`.
pub fn inverted(input: &[u8], i: u64) -> Vec<u8> {
    let mask = 0xffu8.wrapping_sub(u8::try_from(i % 256).unwrap_or(0));
    let kept = input.len().min(PNG_HEADER);
    let (header, rest) = input.split_at(kept);
    header
        .iter()
        .copied()
        .chain(rest.iter().map(|b| b ^ mask))
        .collect()
}

impl Backend for InvertImages {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: INVERT_MODEL.to_owned(),
            workloads: vec![Workload::ImageEdit],
            backend: "fixture-invert".to_owned(),
            model_sha256: None,
            tool: None,
        }]
    }

    fn execute(
        &self,
        task: BackendTask,
        _chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        Box::pin(async move {
            let (_, edit) = image_edit::validate((*task.request).clone())
                .map_err(|e| BackendError::InvalidRequest(e.to_string()))?;
            let image = task
                .files
                .iter()
                .find(|f| f.meta.sha256 == edit.image.sha256)
                .ok_or_else(|| BackendError::InvalidRequest("the image file is missing".into()))?;
            let files = (0..edit.n)
                .map(|i| OutputFile {
                    content_type: image.meta.content_type.clone(),
                    bytes: inverted(&image.bytes, i).into(),
                })
                .collect();
            Ok(BackendOutcome {
                usage: Some(Usage {
                    input_tokens: 0,
                    output_tokens: 0,
                    units: edit.n,
                }),
                info: BackendInfo {
                    id: "fixture-invert".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    model: task.model,
                    model_sha256: None,
                },
                warm: true,
                files,
                committed: None,
            })
        })
    }
}

/// See the module docs: `inner`'s answers, each claiming the usage last set.
pub struct InflatedUsage {
    inner: Arc<dyn Backend>,
    usage: Mutex<Usage>,
}

impl InflatedUsage {
    pub fn new(inner: Arc<dyn Backend>, usage: Usage) -> Self {
        Self {
            inner,
            usage: Mutex::new(usage),
        }
    }

    /// What the next answers claim.
    pub fn claim(&self, usage: Usage) {
        *self.usage.lock().unwrap_or_else(PoisonError::into_inner) = usage;
    }
}

impl std::fmt::Debug for InflatedUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InflatedUsage")
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl Backend for InflatedUsage {
    fn models(&self) -> Vec<ModelOffer> {
        self.inner.models()
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let answer = self.inner.execute(task, chunks);
        let usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Box::pin(async move {
            let mut outcome = answer.await?;
            outcome.usage = Some(usage);
            Ok(outcome)
        })
    }
}

/// The model name [`WideEmbeddings`] serves.
pub const WIDE_EMBED_MODEL: &str = "wide-embed";
/// The dimensions of a [`WideEmbeddings`] vector.
pub const WIDE_EMBED_DIMENSIONS: usize = 384;

/// See the module docs.
#[derive(Debug, Default)]
pub struct WideEmbeddings;

/// The `j`-th number of [`WideEmbeddings`]' vector for the `i`-th input: in (-0.5, 0.5), with
/// about 17 significant digits.
pub fn wide_number(i: usize, j: usize) -> f64 {
    let n = (i as u64)
        .wrapping_mul(7_919)
        .wrapping_add((j as u64).wrapping_mul(104_729))
        % 1_000_003;
    (n as f64 + 0.123_456_789) / 1_000_003.0 - 0.5
}

impl Backend for WideEmbeddings {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            name: WIDE_EMBED_MODEL.to_owned(),
            workloads: vec![Workload::Embedding],
            backend: "fixture-wide-embed".to_owned(),
            model_sha256: None,
            tool: None,
        }]
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        Box::pin(async move {
            let (_, checked) = embeddings::validate((*task.request).clone())
                .map_err(|e| BackendError::InvalidRequest(e.to_string()))?;
            let EmbeddingInput::Texts(texts) = checked.input else {
                return Err(BackendError::InvalidRequest("send strings".into()));
            };
            let data: Vec<Value> = (0..texts.len())
                .map(|i| {
                    let vector: Vec<f64> = (0..WIDE_EMBED_DIMENSIONS).map(|j| wide_number(i, j)).collect();
                    serde_json::json!({"object": "embedding", "index": i, "embedding": vector})
                })
                .collect();
            let tokens: u64 = texts.iter().map(|t| t.len() as u64).sum();
            let body = serde_json::json!({
                "object": "list",
                "data": data,
                "model": task.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            });
            chunks
                .send(body)
                .await
                .map_err(|_| BackendError::Setup("the task was dropped".into()))?;
            Ok(BackendOutcome {
                usage: Some(Usage {
                    input_tokens: tokens,
                    output_tokens: 0,
                    units: 0,
                }),
                info: BackendInfo {
                    id: "fixture-wide-embed".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    model: task.model,
                    model_sha256: None,
                },
                warm: true,
                files: Vec::new(),
                committed: None,
            })
        })
    }
}

/// An image edit's mask: a `width` x `height` PNG, black, transparent (redraw) where `redraw` says
/// and opaque (keep) elsewhere, as OpenAI's masks are.
pub fn mask_png(width: u32, height: u32, redraw: impl Fn(u32, u32) -> bool) -> Vec<u8> {
    let mut data = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            data.extend_from_slice(&[0, 0, 0, if redraw(x, y) { 0 } else { 255 }]);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    if let Ok(mut writer) = encoder.write_header() {
        let _ = writer.write_image_data(&data);
        let _ = writer.finish();
    }
    out
}
