//! A PEP 503 index on `127.0.0.1:0` serving wheels the test builds, with switches for the ways a
//! real index or network misbehaves: a wrong advertised hash, a connection dropped mid-body, a
//! server that ignores `Range`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use zip::write::SimpleFileOptions;

/// How often a body about to be cut yields first (see `wheel_file`).
const YIELDS_BEFORE_DROP: usize = 16;

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Wheel file name -> (normalized project, bytes).
    wheels: Mutex<BTreeMap<String, (String, Bytes)>>,
    seen: Mutex<Vec<Seen>>,
    switches: Mutex<Switches>,
}

#[derive(Clone, Debug, Default)]
pub struct Switches {
    /// The index page advertises a hash that is not the wheel's.
    pub wrong_hash: bool,
    /// The next wheel response breaks the connection after this many body bytes (once).
    pub drop_once_after: Option<usize>,
    /// Wheels are always served whole with 200, whatever `Range` asks.
    pub ignore_range: bool,
}

#[derive(Debug)]
pub struct FakePypi {
    /// The index URL, as pip's `--index-url` takes it: `http://127.0.0.1:PORT/simple`.
    pub index_url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakePypi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakePypi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/simple/{project}/", get(index_page))
            .route("/files/{file}", get(wheel_file))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            index_url: format!("http://{addr}/simple"),
            shared,
            server,
        }
    }

    /// Builds and publishes `project==version` as a wheel holding `members` (deflated, as real
    /// wheels are); returns the wheel's file name.
    pub fn publish(&self, project: &str, version: &str, members: &[(&str, &[u8])]) -> String {
        let dist = project.replace('-', "_");
        let filename = format!("{dist}-{version}-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.start_file(format!("{dist}-{version}.dist-info/METADATA"), options)
            .unwrap();
        zip.write_all(format!("Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n").as_bytes())
            .unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        self.shared
            .wheels
            .lock()
            .unwrap()
            .insert(filename.clone(), (project.to_owned(), Bytes::from(bytes)));
        filename
    }

    pub fn set(&self, switches: Switches) {
        *self.shared.switches.lock().unwrap() = switches;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests for wheel files (not index pages).
    pub fn wheel_requests(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.starts_with("/files/"))
            .collect()
    }

    pub fn wheel_len(&self, filename: &str) -> usize {
        self.shared.wheels.lock().unwrap()[filename].1.len()
    }
}

fn record(shared: &Shared, path: String, headers: &HeaderMap) {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    shared.seen.lock().unwrap().push(Seen { path, range });
}

async fn index_page(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&shared, format!("/simple/{project}/"), &headers);
    let wrong_hash = shared.switches.lock().unwrap().wrong_hash;
    let wheels = shared.wheels.lock().unwrap();
    let mut links = String::new();
    for (file, (p, bytes)) in wheels.iter() {
        if *p != project {
            continue;
        }
        let mut sha = hex::encode(Sha256::digest(bytes));
        if wrong_hash {
            sha = hex::encode(Sha256::digest(b"not this wheel"));
        }
        // Relative links, as some mirrors write them: the client must resolve them.
        links.push_str(&format!(
            "<a href=\"../../files/{file}#sha256={sha}\">{file}</a><br/>\n"
        ));
    }
    if links.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let html = format!("<!DOCTYPE html><html><body><h1>Links for {project}</h1>\n{links}</body></html>");
    ([(header::CONTENT_TYPE, "text/html")], html).into_response()
}

async fn wheel_file(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&shared, format!("/files/{file}"), &headers);
    let Some((_, bytes)) = shared.wheels.lock().unwrap().get(&file).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (ignore_range, drop_after) = {
        let mut switches = shared.switches.lock().unwrap();
        (switches.ignore_range, switches.drop_once_after.take())
    };
    let len = bytes.len();
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|_| !ignore_range);
    let (status, body, content_range) = match start {
        None => (StatusCode::OK, bytes, None),
        Some(s) if s >= len => {
            let range = format!("bytes */{len}");
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, range)],
            )
                .into_response();
        }
        Some(s) => (
            StatusCode::PARTIAL_CONTENT,
            bytes.slice(s..),
            Some(format!("bytes {s}-{}/{len}", len - 1)),
        ),
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(range) = content_range {
        response = response.header(header::CONTENT_RANGE, range);
    }
    let body = match drop_after {
        // The declared length stays the whole body; the stream fails part-way, so the connection
        // is cut and the client sees a short body, as with a real network failure. Before failing
        // the stream yields to the server a few times, so that hyper writes out what it holds
        // (an error in the same poll would discard it); how much gets through is up to the socket.
        Some(n) if n < body.len() => {
            let head = body.slice(..n);
            let s = futures_util::stream::unfold(0, move |step| {
                let head = head.clone();
                async move {
                    match step {
                        0 => Some((Ok(head), 1)),
                        1 => {
                            for _ in 0..YIELDS_BEFORE_DROP {
                                tokio::task::yield_now().await;
                            }
                            Some((Err(std::io::Error::other("connection dropped by the test")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(s)
        }
        _ => Body::from(body),
    };
    response.body(body).unwrap()
}
