//! The one ONNX runtime every ONNX model of the node runs on (the Piper voice, PP-OCR): ONNX Runtime,
//! loaded once per process from the shared library the catalog pins (`onnxruntime`, pulled like a
//! model from Microsoft's PyPI wheel and verified by its SHA-256), never downloaded or linked at
//! build time. A process loads one library, the first asked for; later loads must name the same file.
//!
//! Sessions are built for reproducibility first: deterministic kernels, sequential execution, a
//! fixed number of intra-op threads, so a validator re-running a task on the same library gets the
//! same numbers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use super::BackendError;
use crate::models::{self, ModelStore};

/// The `ort` crate version (the bindings); paperwork names it with the library's version.
pub const ORT_CRATE_VERSION: &str = "2.0.0-rc.15";

/// The runtime, once loaded.
#[derive(Debug)]
pub struct Runtime {
    env: Environment,
    library: PathBuf,
    /// The library's version (`1.31.1`): the catalog's pin, which the pulled file was verified against.
    version: String,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn setup(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("{what}: {e}"))
}

impl Runtime {
    /// The runtime of this process, loaded from `store`'s pulled `onnxruntime` on first use.
    pub fn from_store(store: &ModelStore) -> Result<&'static Runtime, BackendError> {
        let spec = models::find(models::ONNX_RUNTIME).ok_or_else(|| {
            BackendError::Setup("no ONNX Runtime build is pinned for this platform".to_owned())
        })?;
        let path = store.path_of(spec).ok_or_else(|| {
            BackendError::Setup(format!(
                "ONNX Runtime is not in {} (run `stacknet models pull {} --models-dir {}`)",
                store.dir().display(),
                models::ONNX_RUNTIME,
                store.dir().display()
            ))
        })?;
        Self::load(&path)
    }

    /// The runtime of this process, loaded from the library at `path` (the catalog's pinned build,
    /// as pulled) on first use. Every later call must name the same library: a process holds one.
    pub fn load(path: &Path) -> Result<&'static Runtime, BackendError> {
        let loaded = RUNTIME.get_or_init(|| {
            let builder = ort::init_from(path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            let env = builder
                .with_name("stacknet")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
            Ok(Runtime {
                env,
                library: path.to_owned(),
                version: models::ONNX_RUNTIME_VERSION.to_owned(),
            })
        });
        let runtime = loaded.as_ref().map_err(|e| BackendError::Setup(e.clone()))?;
        if runtime.library != path {
            return Err(BackendError::Setup(format!(
                "ONNX Runtime is already loaded from {}; this process cannot load {} as well",
                runtime.library.display(),
                path.display()
            )));
        }
        Ok(runtime)
    }

    /// The library's version (`1.31.1`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What paperwork names as the software: the runtime and the bindings.
    pub fn backend_version(&self) -> String {
        format!("onnxruntime {} (ort {ORT_CRATE_VERSION})", self.version)
    }

    /// A session of the ONNX graph at `path`, on `threads` intra-op threads, reproducible.
    pub fn session(&self, path: &Path, threads: usize) -> Result<Session, BackendError> {
        let failed = |e: &dyn std::fmt::Display| setup(&format!("cannot load {}", path.display()), e);
        let builder = Session::builder(&self.env).map_err(|e| failed(&e))?;
        let builder = builder
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| failed(&e))?;
        let builder = builder
            .with_intra_threads(threads.max(1))
            .map_err(|e| failed(&e))?;
        let builder = builder.with_inter_threads(1).map_err(|e| failed(&e))?;
        let builder = builder.with_parallel_execution(false).map_err(|e| failed(&e))?;
        let mut builder = builder.with_deterministic_compute(true).map_err(|e| failed(&e))?;
        builder.commit_from_file(path).map_err(|e| failed(&e))
    }
}
