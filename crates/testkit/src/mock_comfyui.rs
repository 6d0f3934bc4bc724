//! A scripted ComfyUI server: `POST /prompt`, the `/ws` websocket, `GET /history/{id}`, `GET /view`
//! and `POST /interrupt`, as ComfyUI answers them, for the node's ComfyUI backend.
//!
//! A submitted workflow "runs" on a task of its own: `execution_start`, four `progress` messages and,
//! depending on the [`Mode`], either an `execution_error` or, for each image of its
//! `EmptyLatentImage` (its `batch_size`, `width`, `height`), a one-colour PNG of its `CLIPTextEncode`
//! text and the image's index, drawn as the mock OpenAI images server draws ([`colour`]), listed in its history as outputs
//! of node `9` and announced with `executed`, then `executing` with `node: null`.
//!
//! `POST /upload/image` keeps an uploaded input image under the name ComfyUI would give it. A
//! workflow with a `LoadImage` node (an edit) draws one image of the loaded image's size unless an
//! `EmptyLatentImage` says otherwise; a `LoadImage` of a name never uploaded fails as ComfyUI's
//! does ("Invalid image file").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mock_upstream::images::png;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How a submitted workflow goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// It renders its images.
    Render,
    /// It fails in node `node` after its progress messages.
    FailIn { node: String, message: String },
    /// `POST /prompt` refuses it with a node error.
    Refuse,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    submitted: Mutex<Vec<Value>>,
    sockets: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
    history: Mutex<HashMap<String, Value>>,
    images: Mutex<HashMap<String, Vec<u8>>>,
    uploads: Mutex<HashMap<String, axum::body::Bytes>>,
    interrupts: AtomicU64,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running mock; stops when dropped.
#[derive(Debug)]
pub struct MockComfyUi {
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockComfyUi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The colour of image `index` of a workflow whose prompt text is `text`: drawn as the mock OpenAI
/// images server draws its images.
pub use crate::mock_upstream::images::colour;

impl MockComfyUi {
    pub async fn start(mode: Mode) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            submitted: Mutex::new(Vec::new()),
            sockets: Mutex::new(HashMap::new()),
            history: Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
            interrupts: AtomicU64::new(0),
            next: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/prompt", post(prompt))
            .route("/ws", get(socket))
            .route("/history/{id}", get(history))
            .route("/view", get(view))
            .route("/interrupt", post(interrupt))
            .route("/upload/image", post(upload))
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

    /// Every workflow submitted, as received.
    pub fn submitted(&self) -> Vec<Value> {
        lock(&self.shared.submitted).clone()
    }

    /// The input images uploaded, by the name given them.
    pub fn uploads(&self) -> HashMap<String, axum::body::Bytes> {
        lock(&self.shared.uploads).clone()
    }

    pub fn interrupts(&self) -> u64 {
        self.shared.interrupts.load(Ordering::SeqCst)
    }
}

async fn prompt(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "invalid JSON"}})),
        )
            .into_response();
    };
    let workflow = request["prompt"].clone();
    lock(&shared.submitted).push(workflow.clone());
    let mode = lock(&shared.mode).clone();
    if mode == Mode::Refuse {
        let body = json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
            "node_errors": {"4": {"errors": [{"message": "Value not in list: ckpt_name: 'missing.safetensors'"}]}},
        });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let id = format!("prompt-{}", shared.next.fetch_add(1, Ordering::SeqCst));
    let client = request["client_id"].as_str().unwrap_or_default().to_owned();
    tokio::spawn(run(Arc::clone(&shared), id.clone(), client, workflow, mode));
    axum::Json(json!({"prompt_id": id, "number": 1, "node_errors": {}})).into_response()
}

/// The workflow's node of `class`, if any.
fn node<'a>(workflow: &'a Value, class: &str) -> Option<&'a Value> {
    workflow.as_object()?.values().find(|n| n["class_type"] == class)
}

async fn run(shared: Arc<Shared>, id: String, client: String, workflow: Value, mode: Mode) {
    // The node connects its websocket before it submits; wait for it to be registered.
    let mut socket = None;
    for _ in 0..100 {
        socket = lock(&shared.sockets).get(&client).cloned();
        if socket.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(socket) = socket else { return };
    let send = |v: Value| {
        let _ = socket.send(v.to_string());
    };
    send(json!({"type": "execution_start", "data": {"prompt_id": id}}));
    for value in 1..=4 {
        send(json!({"type": "progress", "data": {"value": value, "max": 4, "prompt_id": id, "node": "3"}}));
    }
    let fail = |node: &str, node_type: &str, message: &str| {
        send(
            json!({"type": "execution_error", "data": {"prompt_id": id, "node_id": node,
            "node_type": node_type, "exception_message": message, "exception_type": "RuntimeError"}}),
        );
    };
    if let Mode::FailIn { node, message } = mode {
        return fail(&node, "KSampler", &message);
    }
    // An edit's input: its size is the output's default.
    let mut loaded = (64, 64);
    if let Some(load) = node(&workflow, "LoadImage") {
        let name = load["inputs"]["image"].as_str().unwrap_or_default();
        let upload = lock(&shared.uploads).get(name).cloned();
        match upload.and_then(|b| stacknet_api::output::image_dimensions(&b)) {
            Some((w, h)) => loaded = (u64::from(w), u64::from(h)),
            None => return fail("1", "LoadImage", &format!("Invalid image file: {name}")),
        }
    }
    let latent = node(&workflow, "EmptyLatentImage").map(|n| &n["inputs"]);
    let number = |k: &str, default: u64| latent.and_then(|l| l[k].as_u64()).unwrap_or(default);
    let (n, width, height) = (
        number("batch_size", 1),
        number("width", loaded.0),
        number("height", loaded.1),
    );
    let text = node(&workflow, "CLIPTextEncode")
        .and_then(|n| n["inputs"]["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut listed = Vec::new();
    for i in 0..n {
        let name = format!("stacknet_{id}_{i:05}_.png");
        lock(&shared.images).insert(name.clone(), png(&text, i, width as usize, height as usize));
        listed.push(json!({"filename": name, "subfolder": "", "type": "output"}));
    }
    // A preview image, which is not an output.
    listed.push(json!({"filename": "preview.png", "subfolder": "", "type": "temp"}));
    lock(&shared.history).insert(
        id.clone(),
        json!({"outputs": {"9": {"images": listed}}, "status": {"status_str": "success", "completed": true}}),
    );
    send(json!({"type": "executed", "data": {"node": "9", "prompt_id": id, "output": {"images": listed}}}));
    send(json!({"type": "executing", "data": {"node": null, "prompt_id": id}}));
}

async fn socket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let client = query.get("clientId").cloned().unwrap_or_default();
    upgrade.on_upgrade(move |ws| serve_socket(shared, client, ws))
}

async fn serve_socket(shared: Arc<Shared>, client: String, mut ws: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    lock(&shared.sockets).insert(client.clone(), tx);
    let hello =
        json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client}});
    if ws.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    while let Some(text) = rx.recv().await {
        if ws.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
}

async fn history(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let entry = lock(&shared.history).get(&id).cloned();
    match entry {
        Some(h) => axum::Json(json!({id: h})).into_response(),
        None => axum::Json(json!({})).into_response(),
    }
}

async fn view(State(shared): State<Arc<Shared>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let name = query.get("filename").cloned().unwrap_or_default();
    match lock(&shared.images).get(&name).cloned() {
        Some(bytes) if query.get("type").map(String::as_str) == Some("output") => {
            ([(axum::http::header::CONTENT_TYPE, "image/png")], bytes).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `POST /upload/image`: the multipart `image` file kept under its file name (in `subfolder`, if
/// given), answered as ComfyUI answers.
async fn upload(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok((fields, files)) = crate::mock_upstream::read_form(&headers, body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(image) = files.get("image") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let name = format!(
        "upload-{}.png",
        &stacknet_protocol::Sha256Digest::of(image).to_string()[..12]
    );
    let subfolder = fields
        .get("subfolder")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = if subfolder.is_empty() {
        name.clone()
    } else {
        format!("{subfolder}/{name}")
    };
    lock(&shared.uploads).insert(key, image.clone());
    axum::Json(json!({"name": name, "subfolder": subfolder, "type": "input"})).into_response()
}

async fn interrupt(State(shared): State<Arc<Shared>>) -> Response {
    shared.interrupts.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK.into_response()
}
