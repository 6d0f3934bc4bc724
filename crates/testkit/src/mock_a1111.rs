//! A scripted AUTOMATIC1111 server (its `--api`): `POST /sdapi/v1/txt2img` and `/img2img`,
//! `GET /sdapi/v1/progress` and `POST /sdapi/v1/interrupt`, as A1111 answers them, for the node's
//! AUTOMATIC1111 backend.
//!
//! A job answers `batch_size` one-colour PNGs of its `width` and `height`, drawn as the mock OpenAI
//! images server draws ([`colour`] of the prompt and the image's index), after a grid image when
//! the batch has more than one (as A1111 does with `return_grid`). An `img2img` job needs
//! `init_images` that decode as images, and a `mask` of the same size. A [`Mode::Fail`] answers
//! A1111's error body (`{"error", "detail", "body", "errors"}`) with status 500; [`Mode::Hang`]
//! never answers until interrupted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub use crate::mock_upstream::images::colour;
use crate::mock_upstream::images::png;

/// How a job goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Render,
    /// It fails with A1111's error body naming `message`.
    Fail {
        message: String,
    },
    /// It runs until interrupted, then answers what A1111 answers an interrupted job: no images.
    Hang,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    requests: Mutex<Vec<(String, Value)>>,
    interrupted: tokio::sync::Notify,
    interrupts: AtomicU64,
    progress_polls: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running mock; stops when dropped.
#[derive(Debug)]
pub struct MockA1111 {
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockA1111 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockA1111 {
    pub async fn start(mode: Mode) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            requests: Mutex::new(Vec::new()),
            interrupted: tokio::sync::Notify::new(),
            interrupts: AtomicU64::new(0),
            progress_polls: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/sdapi/v1/{endpoint}", post(job))
            .route("/sdapi/v1/progress", get(progress))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}"),
            addr,
            shared,
            server,
        })
    }

    /// Every job received: its endpoint (`txt2img`, `img2img`) and body.
    pub fn requests(&self) -> Vec<(String, Value)> {
        lock(&self.shared.requests).clone()
    }

    pub fn interrupts(&self) -> u64 {
        self.shared.interrupts.load(Ordering::SeqCst)
    }

    pub fn progress_polls(&self) -> u64 {
        self.shared.progress_polls.load(Ordering::SeqCst)
    }
}

fn error(status: StatusCode, error: &str, errors: &str) -> Response {
    let body = json!({"error": error, "detail": "", "body": "", "errors": errors});
    (status, axum::Json(body)).into_response()
}

/// A base64 field that decodes as an image; its size.
fn image_size(b64: &Value) -> Option<(u32, u32)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str()?)
        .ok()?;
    stacknet_api::output::image_dimensions(&bytes)
}

async fn job(
    State(shared): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if endpoint == "interrupt" {
        shared.interrupts.fetch_add(1, Ordering::SeqCst);
        shared.interrupted.notify_waiters();
        return axum::Json(json!({})).into_response();
    }
    if endpoint != "txt2img" && endpoint != "img2img" {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"detail": "Not Found"}))).into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "RequestValidationError",
            "invalid JSON",
        );
    };
    lock(&shared.requests).push((endpoint.clone(), request.clone()));
    if endpoint == "img2img" {
        let Some(size) = request["init_images"].get(0).and_then(image_size) else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UnidentifiedImageError",
                "cannot identify image file",
            );
        };
        if !request["mask"].is_null() && image_size(&request["mask"]) != Some(size) {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ValueError",
                "images do not match",
            );
        }
    }
    let mode = lock(&shared.mode).clone();
    match mode {
        Mode::Fail { message } => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "OutOfMemoryError", &message)
        }
        Mode::Hang => {
            shared.interrupted.notified().await;
            return axum::Json(json!({"images": [], "parameters": request, "info": "{}"})).into_response();
        }
        Mode::Render => {}
    }
    let number = |k: &str, default: u64| request[k].as_u64().unwrap_or(default);
    let (n, width, height) = (
        number("batch_size", 1),
        number("width", 512),
        number("height", 512),
    );
    let prompt = request["prompt"].as_str().unwrap_or_default();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut images: Vec<Value> = (0..n)
        .map(|i| json!(engine.encode(png(prompt, i, width as usize, height as usize))))
        .collect();
    if n > 1 {
        // The grid A1111 puts first: drawn as image "grid" of the prompt.
        images.insert(0, json!(engine.encode(png("grid", 0, 8, 8))));
    }
    let info = json!({"seed": request["seed"], "all_seeds": [request["seed"]]}).to_string();
    axum::Json(json!({"images": images, "parameters": request, "info": info})).into_response()
}

async fn progress(State(shared): State<Arc<Shared>>) -> Response {
    shared.progress_polls.fetch_add(1, Ordering::SeqCst);
    axum::Json(
        json!({"progress": 0.5, "eta_relative": 1.0, "state": {"job_count": 1}, "current_image": null}),
    )
    .into_response()
}
