//! Sandboxed code execution: strangers' Python, shell and JavaScript, run on the operator's machine
//! without Docker, in the shape of Piston's `execute` (see `stacknet_api::request::code`).
//!
//! Each run is isolated by bubblewrap (`bwrap`): new user, pid, network, mount, ipc, uts and cgroup
//! namespaces, nested user namespaces disabled, no capabilities, a new session (no terminal
//! injection), and a root of its own: `/usr` read-only, the few `/etc` files the dynamic linker
//! needs, a private `/proc` and `/dev`, and size-limited tmpfs for `/work` (the program's files,
//! writable, its working directory), `/tmp` and `/dev/shm`; the rest of the root is read-only. Nothing of the node's (its key, wallet, data
//! directory, home) is in that root, and the network namespace has only its own loopback.
//!
//! A node running as root does not run bwrap as root (bwrap as root keeps root's file
//! permissions): each run gets an unprivileged uid of its own, one per concurrent slot
//! (`first_uid` + slot), dropped to with `setpriv` (no groups, no new privileges) before bwrap
//! starts. Limits: a cgroup per run ([`cgroup`]: memory without swap, processes, a CPU share), the
//! rlimits `prlimit` sets (CPU seconds, file size, open files, no core dumps), the wall time, the
//! bytes of stdout and stderr, and the tmpfs sizes. The chain that starts a run is
//! `sh` (joins the run's cgroup, before anything of the run exists) → `setpriv` → `prlimit` →
//! `bwrap` → `sh` (waits for `go`, copies the files in, sets the run's CPU limit) → the
//! interpreter: every step an `exec`, so the run's first process is in its cgroup before it can
//! fork.
//!
//! A sandbox can be made before its program is known ([`Jail`] keeps `warm` of them waiting): the
//! chain stops at the `sh` inside bwrap, reading stdin. A run gives it its memory limit, its files
//! and its `run.sh`, writes `go`, and then the program's stdin; a new one is made in the background.
//! Each sandbox serves one run. The same [`Jail`] runs an operator's MCP server ([`Jail::open`]),
//! talked to through its pipes.
//!
//! After a run, whatever is left in its cgroup is killed and the cgroup removed; the tmpfs went
//! with the mount namespace, and the host-side copy of the program's files (read-only to the run,
//! under a directory only root can list) is deleted. At start the node checks every piece (the
//! tools, the cgroup limits, each interpreter, by running it in the sandbox) and refuses to serve
//! code execution, saying why, when one is missing.

pub mod cgroup;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use stacknet_api::request::code::{self, CodeFile, Execute};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::values::Timestamp;
use stacknet_protocol::wire::{ModelOffer, ModelReady};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::{mpsc, Semaphore};

use self::cgroup::{Hierarchy, RunGroup, RunLimits, RunStats};
use super::{Backend, BackendError, BackendOutcome, BackendTask, Cancellation};
use crate::config::SandboxBackendConfig;

/// The backend id in offers and paperwork.
pub const BACKEND_ID: &str = "bubblewrap";

/// What runs start with where the operator says nothing.
pub mod defaults {
    pub const MAX_RUN_TIMEOUT_MS: u64 = 60_000;
    pub const MAX_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;
    pub const MAX_PROCESSES: u64 = 64;
    pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024;
    pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
    pub const WORK_DIR_BYTES: u64 = 64 * 1024 * 1024;
    pub const MILLICPUS: u64 = 1000;
    pub const SLOTS: usize = 4;
    /// Sandboxes made ahead of runs.
    pub const WARM: usize = 1;
    pub const FIRST_UID: u32 = 61_000;
}

/// The most bytes of stdout (and of stderr) a run may send, whatever the operator sets: the result,
/// with each stream twice (alone and in `output`) and JSON's worst escaping (6 bytes a byte), must
/// fit one frame.
pub const OUTPUT_BYTES_CEILING: u64 = 128 * 1024;
/// Open files per process in a run.
const MAX_OPEN_FILES: u64 = 256;
/// The exit code of the start chain when the run could not join its cgroup.
const JOIN_FAILED: i32 = 125;
/// Joins the cgroups whose `cgroup.procs` files are given (after their count), then becomes the
/// rest of the command line.
const JOIN_SCRIPT: &str = r#"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "stacknet-sandbox: cannot join the cgroup $1" >&2; exit 125; }; shift; n=$((n-1)); done; exec "$@""#;
/// Inside the sandbox: waits for `go` on stdin (a sandbox made ahead of its run waits here until
/// the run's program is given), copies the program's files into the work directory, and runs
/// `/in/run.sh` (the run's CPU limit, then `exec` of the program); the rest of stdin is the
/// program's.
const START_SCRIPT: &str = r#"read -r go && [ "$go" = go ] && cp -R /in/files/. /work/ && . /in/run.sh"#;
/// Where the files the dynamic linker (and interpreters' alternatives) need are.
const ETC_FILES: [&str; 5] = [
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
];
/// The top-level directories that are `/usr`'s on merged-/usr systems (symlinks there), bound
/// read-only otherwise.
const USR_DIRS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// The sandbox's limits, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    pub max_run_timeout_ms: u64,
    pub max_memory_bytes: u64,
    pub max_processes: u64,
    pub max_output_bytes: u64,
    pub max_file_bytes: u64,
    pub work_dir_bytes: u64,
    pub millicpus: u64,
}

impl SandboxLimits {
    fn from_config(c: &SandboxBackendConfig) -> Result<Self, BackendError> {
        let limits = Self {
            max_run_timeout_ms: c.max_run_timeout_ms.unwrap_or(defaults::MAX_RUN_TIMEOUT_MS),
            max_memory_bytes: c.max_memory_bytes.unwrap_or(defaults::MAX_MEMORY_BYTES),
            max_processes: c.max_processes.unwrap_or(defaults::MAX_PROCESSES),
            max_output_bytes: c.max_output_bytes.unwrap_or(defaults::MAX_OUTPUT_BYTES),
            max_file_bytes: c.max_file_bytes.unwrap_or(defaults::MAX_FILE_BYTES),
            work_dir_bytes: c.work_dir_bytes.unwrap_or(defaults::WORK_DIR_BYTES),
            millicpus: c.millicpus.unwrap_or(defaults::MILLICPUS),
        };
        let bad = |why: String| Err(BackendError::Setup(format!("sandbox: {why}")));
        if limits.max_output_bytes == 0 || limits.max_output_bytes > OUTPUT_BYTES_CEILING {
            return bad(format!("max_output_bytes must be 1 to {OUTPUT_BYTES_CEILING}"));
        }
        if limits.max_memory_bytes < code::MIN_MEMORY_BYTES {
            return bad(format!(
                "max_memory_bytes must be at least {}",
                code::MIN_MEMORY_BYTES
            ));
        }
        if limits.max_processes < 4 || limits.max_run_timeout_ms == 0 || limits.millicpus < 10 {
            return bad("max_processes must be at least 4, max_run_timeout_ms and millicpus above 0".into());
        }
        if limits.max_file_bytes < code::MAX_CODE_BYTES as u64
            || limits.work_dir_bytes < code::MAX_CODE_BYTES as u64
        {
            return bad(format!(
                "max_file_bytes and work_dir_bytes must be at least {} (a request's files)",
                code::MAX_CODE_BYTES
            ));
        }
        Ok(limits)
    }
}

/// A language the sandbox serves: its interpreter, checked at start.
#[derive(Clone, Debug)]
struct Runtime {
    language: &'static str,
    /// The interpreter and the flags before the program's file.
    argv: Vec<String>,
    version: String,
}

/// The interpreter of each language, looked for under `/usr` (the only program directory a run
/// sees), and the flags it runs a file with: Python ignoring `PYTHON*` variables and the user
/// site, writing no bytecode (not `-I`, which would also drop the program's directory from
/// `sys.path`, so its other files could not be imported).
fn interpreter(language: &str) -> Option<(&'static str, Vec<String>)> {
    let (names, flags): (&[&str], &[&str]) = match language {
        "python" => (&["python3"], &["-E", "-s", "-B"]),
        "bash" => (&["bash"], &[]),
        "javascript" => (&["node", "nodejs"], &[]),
        _ => return None,
    };
    let language = code::canonical_language(language)?;
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .flat_map(|dir| names.iter().map(move |n| Path::new(dir).join(n)))
        .find(|p| p.is_file())
        .map(|p| {
            let mut argv = vec![p.to_string_lossy().into_owned()];
            argv.extend(flags.iter().map(|f| (*f).to_owned()));
            (language, argv)
        })
}

/// The programs that start a run.
#[derive(Clone, Debug)]
struct Tools {
    sh: PathBuf,
    setpriv: PathBuf,
    prlimit: PathBuf,
    bwrap: PathBuf,
    bwrap_version: String,
}

/// The sandbox backend: code execution in a [`Jail`].
#[derive(Debug)]
pub struct Sandbox {
    inner: Arc<Inner>,
    ready_at: Timestamp,
}

#[derive(Debug)]
struct Inner {
    jail: Arc<Jail>,
    runtimes: Vec<Runtime>,
}

/// What runs programs in fresh sandboxes: the tools, the cgroup hierarchy, the limits and the slots.
/// Code execution runs a program to its end ([`Sandbox`]); an operator's MCP server is talked to
/// while it runs ([`Jail::open`]).
#[derive(Debug)]
pub struct Jail {
    tools: Tools,
    hierarchy: Hierarchy,
    limits: SandboxLimits,
    /// Free slots: the uid each runs as (`None`: the node's own, when it is not root).
    free: Arc<Mutex<Vec<Option<u32>>>>,
    slots: Arc<Semaphore>,
    /// Where the program's files wait for the run, under a directory only its owner can list.
    staging: PathBuf,
    /// Sandboxes made ahead of runs, waiting for their program.
    warm: Mutex<Vec<Waiting>>,
    /// How many to keep made ahead.
    warm_target: usize,
    /// Being made ahead now.
    filling: std::sync::atomic::AtomicUsize,
}

/// What a program sees of the host beyond the sandbox's own root: host paths bound read-only at
/// the same place, and environment variables (besides `PATH`, `HOME`, `TMPDIR` and `LANG`).
#[derive(Clone, Debug, Default)]
pub struct Extras {
    pub binds: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
}

/// A sandbox made for a run, before and after its program: its slot, cgroup and staging directory.
struct Prepared {
    slot: Slot,
    name: String,
    staging: PathBuf,
    group: RunGroup,
}

/// A sandbox started, waiting for `go` and its program (see [`START_SCRIPT`]).
struct Waiting {
    prepared: Prepared,
    child: tokio::process::Child,
    pid: Option<u32>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("run", &self.prepared.name)
            .finish()
    }
}

/// A program running in a fresh sandbox, talked to through its pipes; [`Cell::close`] ends it and
/// cleans up after it.
pub struct Cell<'a> {
    jail: &'a Jail,
    prepared: Prepared,
    child: tokio::process::Child,
    pid: Option<u32>,
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
}

impl std::fmt::Debug for Cell<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell").field("run", &self.prepared.name).finish()
    }
}

impl Drop for Jail {
    /// The sandboxes made ahead go with it: killed, their cgroups and files removed.
    fn drop(&mut self) {
        let pool = self.warm.get_mut().map(std::mem::take).unwrap_or_default();
        if pool.is_empty() {
            return;
        }
        for mut waiting in pool {
            let _ = waiting.child.start_kill();
            forget_child(waiting.pid);
            let Prepared {
                name, staging, group, ..
            } = waiting.prepared;
            if let Err(e) = group.remove_now() {
                tracing::error!(run = %name, "{e}");
            }
            let _ = fs::remove_dir_all(&staging);
        }
        Self::reap_orphans();
    }
}

impl Cell<'_> {
    /// Ends the program (if it is still running) and everything it started, and cleans up.
    pub async fn close(self) {
        let waiting = Waiting {
            prepared: self.prepared,
            child: self.child,
            pid: self.pid,
        };
        self.jail.end(waiting).await;
    }
}

/// Runs started by this process, numbering their cgroups and staging directories (process-wide: a
/// process may hold several sandboxes, whose runs must not share a name).
static RUNS: AtomicU64 = AtomicU64::new(0);

/// The pids of every sandbox's runs' first processes (bwrap) while tokio waits for them: never
/// reaped by [`Inner::reap_orphans`]. One set for the process, as a process may hold several
/// sandboxes (tests do) and a reaper must not take another's child.
fn children() -> &'static Mutex<HashSet<u32>> {
    static CHILDREN: std::sync::OnceLock<Mutex<HashSet<u32>>> = std::sync::OnceLock::new();
    CHILDREN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Whether `name` is a run (`run-<pid>-<n>`) of a node process that is gone.
fn stale_run(name: &str) -> bool {
    name.strip_prefix("run-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Takes a run's first process out of the set of waited-for children, once it has been waited for.
fn forget_child(pid: Option<u32>) {
    if let (Some(pid), Ok(mut waited)) = (pid, children().lock()) {
        waited.remove(&pid);
    }
}

/// How a run ended, before its status is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Exited(Option<i32>),
    TimedOut,
    StdoutLimit,
    StderrLimit,
    Cancelled,
}

/// A finished run, as the result reports it.
#[derive(Debug, Default)]
struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    output: Vec<u8>,
    code: Option<i32>,
    signal: Option<&'static str>,
    status: Option<&'static str>,
    message: Option<String>,
    wall_ms: u64,
    cpu_ms: u64,
    memory: u64,
    internal: bool,
    /// The sandbox was made ahead of the run.
    warm: bool,
}

impl Sandbox {
    /// Checks every piece the sandbox needs and each language's interpreter (by running it in the
    /// sandbox); refuses, saying what is missing, when one is.
    pub async fn start(config: &SandboxBackendConfig) -> Result<Sandbox, BackendError> {
        let setup = |why: String| BackendError::Setup(format!("sandbox: {why}"));
        let wanted: Vec<String> = match &config.languages {
            Some(list) => list.clone(),
            None => code::LANGUAGES.iter().map(|(l, _)| (*l).to_owned()).collect(),
        };
        let mut inner = Inner {
            jail: Arc::new(Jail::new(config).await?),
            runtimes: Vec::new(),
        };
        for name in &wanted {
            let canonical = code::canonical_language(name).ok_or_else(|| {
                setup(format!(
                    "no language {name:?}; the languages are python, bash, javascript"
                ))
            })?;
            let Some((language, argv)) = interpreter(canonical) else {
                if config.languages.is_some() {
                    return Err(setup(format!(
                        "no interpreter for {canonical} is installed under /usr"
                    )));
                }
                continue;
            };
            let version = inner
                .probe(&argv)
                .await
                .map_err(|e| setup(format!("{language}: {e}")))?;
            inner.runtimes.push(Runtime {
                language,
                argv,
                version,
            });
        }
        if inner.runtimes.is_empty() {
            return Err(setup(
                "no interpreter is installed under /usr (python3, bash or node)".into(),
            ));
        }
        inner.jail.refill();
        Ok(Sandbox {
            inner: Arc::new(inner),
            ready_at: Timestamp::now(),
        })
    }

    /// The languages served, with their versions: `python 3.11.2`.
    pub fn languages(&self) -> Vec<String> {
        self.inner
            .runtimes
            .iter()
            .map(|r| format!("{} {}", r.language, r.version))
            .collect()
    }

    /// Which cgroup version limits the runs.
    pub fn hierarchy(&self) -> &'static str {
        self.inner.jail.hierarchy.version()
    }

    /// Sandboxes made ahead, waiting for a run now.
    pub fn waiting(&self) -> usize {
        self.inner.jail.warm.lock().map_or(0, |w| w.len())
    }
}

impl Jail {
    /// Checks every piece a sandbox needs (the tools, the cgroup limits, the state directory);
    /// refuses, saying what is missing, when one is.
    pub async fn new(config: &SandboxBackendConfig) -> Result<Jail, BackendError> {
        let setup = |why: String| BackendError::Setup(format!("sandbox: {why}"));
        let limits = SandboxLimits::from_config(config)?;
        let tools = find_tools(config.bwrap.as_deref()).await.map_err(setup)?;
        let hierarchy = Hierarchy::detect().map_err(setup)?;
        let root = fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        let slots = config.slots.unwrap_or(defaults::SLOTS).max(1);
        let first_uid = config.first_uid.unwrap_or(defaults::FIRST_UID);
        let free: Vec<Option<u32>> = (0..slots)
            .rev()
            .map(|i| root.then(|| first_uid + u32::try_from(i).unwrap_or(0)))
            .collect();
        if root && first_uid == 0 {
            return Err(setup("first_uid must not be 0 (root)".into()));
        }
        let staging = config
            .state_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("stacknet-sandbox-{}", std::process::id())));
        fs::create_dir_all(&staging)
            .and_then(|()| fs::set_permissions(&staging, fs::Permissions::from_mode(0o711)))
            .map_err(|e| setup(format!("cannot make {}: {e}", staging.display())))?;
        // A directory someone else made (or a link to one) could be read or swapped under the
        // runs: it must be this process's own.
        let own = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
        match fs::symlink_metadata(&staging) {
            Ok(m) if m.is_dir() && m.uid() == own => {}
            _ => {
                return Err(setup(format!(
                    "{} is not a directory of this process's own user",
                    staging.display()
                )))
            }
        }
        // What node processes that are gone left: their runs' cgroups and staged files.
        hierarchy.sweep(stale_run);
        if let Ok(entries) = fs::read_dir(&staging) {
            for entry in entries.flatten() {
                if stale_run(&entry.file_name().to_string_lossy()) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        // bwrap's pid-1 process outlives the bwrap the node waits for, briefly, and is then an
        // orphan: reparented to the node rather than to a PID 1 that may never reap it (some
        // container inits do not), and reaped after each run.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| setup(format!("cannot become a child subreaper: {e}")))?;
        Ok(Jail {
            tools,
            hierarchy,
            limits,
            free: Arc::new(Mutex::new(free)),
            slots: Arc::new(Semaphore::new(slots)),
            staging,
            warm: Mutex::new(Vec::new()),
            warm_target: config.warm.unwrap_or(defaults::WARM).min(slots),
            filling: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The limits runs are held to.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// The sandbox's software, for paperwork: bwrap's version and the cgroup version.
    pub fn version(&self) -> String {
        format!("{}; {}", self.tools.bwrap_version, self.hierarchy.version())
    }
}

impl Backend for Sandbox {
    fn models(&self) -> Vec<ModelOffer> {
        self.inner
            .runtimes
            .iter()
            .map(|r| ModelOffer {
                name: r.language.to_owned(),
                workloads: vec![Workload::CodeExecution],
                backend: BACKEND_ID.to_owned(),
                model_sha256: None,
                tool: None,
            })
            .collect()
    }

    /// Every language is ready from start (its interpreter ran in the sandbox then) where sandboxes
    /// are made ahead of runs; none is where every run makes its own.
    fn ready(&self) -> Vec<ModelReady> {
        if self.inner.jail.warm_target == 0 {
            return Vec::new();
        }
        self.inner
            .runtimes
            .iter()
            .map(|r| ModelReady {
                name: r.language.to_owned(),
                since: self.ready_at,
            })
            .collect()
    }

    fn execute(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> BoxFuture<'static, Result<BackendOutcome, BackendError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.task(task, chunks).await })
    }
}

/// A slot held by a sandbox; returned when dropped.
struct Slot {
    free: Arc<Mutex<Vec<Option<u32>>>>,
    uid: Option<u32>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut free) = self.free.lock() {
            free.push(self.uid);
        }
    }
}

impl Inner {
    async fn task(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> Result<BackendOutcome, BackendError> {
        let runtime = self
            .runtimes
            .iter()
            .find(|r| r.language == task.model && task.workload == Workload::CodeExecution)
            .ok_or_else(|| task.unsupported())?;
        let (_, exec) = code::validate((*task.request).clone())?;
        let limits = self.jail.limits();
        if exec.run_timeout_ms > limits.max_run_timeout_ms {
            return Err(BackendError::InvalidRequest(format!(
                "run_timeout {} ms is over this node's limit of {} ms",
                exec.run_timeout_ms, limits.max_run_timeout_ms
            )));
        }
        if exec.memory_bytes > limits.max_memory_bytes {
            return Err(BackendError::InvalidRequest(format!(
                "run_memory_limit {} bytes is over this node's limit of {} bytes",
                exec.memory_bytes, limits.max_memory_bytes
            )));
        }
        let main = exec.files.first().map(|f| f.name.clone()).unwrap_or_default();
        let mut argv = runtime.argv.clone();
        argv.push(main);
        argv.extend(exec.args.iter().cloned());
        let run = self.jail.run(&exec, &argv, &task.cancel).await?;
        let seconds = run.wall_ms.div_ceil(1000).clamp(1, exec.max_seconds());
        let body = json!({
            "language": runtime.language,
            "version": runtime.version,
            "run": {
                "stdout": String::from_utf8_lossy(&run.stdout),
                "stderr": String::from_utf8_lossy(&run.stderr),
                "output": String::from_utf8_lossy(&run.output),
                "code": run.code,
                "signal": run.signal,
                "status": run.status,
                "message": run.message,
                "cpu_time": run.cpu_ms,
                "wall_time": run.wall_ms,
                "memory": run.memory,
            },
        });
        chunks.send(body).await.map_err(|_| BackendError::Abandoned)?;
        let version = format!(
            "{}; {} {}",
            self.jail.version(),
            runtime.language,
            runtime.version
        );
        let mut outcome = BackendOutcome::units(seconds, BACKEND_ID, version, runtime.language);
        // Warm only when the run's sandbox was made ahead of it.
        outcome.warm = run.warm;
        Ok(outcome)
    }

    /// Runs `argv --version` in the sandbox and returns the version it prints.
    async fn probe(&self, argv: &[String]) -> Result<String, String> {
        let exec = Execute {
            language: String::new(),
            files: Vec::new(),
            stdin: Vec::new(),
            args: Vec::new(),
            run_timeout_ms: 10_000,
            cpu_time_ms: 10_000,
            memory_bytes: code::DEFAULT_MEMORY_BYTES.min(self.jail.limits.max_memory_bytes),
        };
        let argv = [argv[0].clone(), "--version".to_owned()];
        let run = self
            .jail
            .run(&exec, &argv, &Cancellation::never())
            .await
            .map_err(|e| e.to_string())?;
        let printed = String::from_utf8_lossy(&run.output).into_owned();
        if run.code != Some(0) {
            return Err(format!(
                "`{} --version` failed in the sandbox ({}): {}",
                argv[0],
                run.message.unwrap_or_else(|| format!("exit code {:?}", run.code)),
                printed.trim()
            ));
        }
        Ok(version_in(&printed).unwrap_or_else(|| "unknown".to_owned()))
    }
}

impl Jail {
    async fn slot(&self, cancel: &Cancellation) -> Result<Slot, BackendError> {
        let permit = tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit.map_err(|_| BackendError::Setup("the sandbox is closed".into()))?,
            () = cancel.cancelled() => return Err(BackendError::Abandoned),
        };
        let uid = self
            .free
            .lock()
            .map_err(|_| BackendError::Setup("the sandbox's slots are poisoned".into()))?
            .pop()
            .ok_or_else(|| BackendError::Setup("no free sandbox slot under a permit".into()))?;
        Ok(Slot {
            free: Arc::clone(&self.free),
            uid,
            _permit: permit,
        })
    }

    /// Makes a sandbox's slot, empty staging directory and cgroup (with the most memory a run may
    /// have: a run sets its own when its program is given).
    async fn prepare(&self, cancel: &Cancellation) -> Result<Prepared, BackendError> {
        let slot = self.slot(cancel).await?;
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("run-{}-{n}", std::process::id());
        let staging = self.staging.join(&name);
        let setup = |why: String| BackendError::Setup(format!("sandbox: {why}"));
        let limits = RunLimits {
            memory_bytes: self.limits.max_memory_bytes,
            pids: self.limits.max_processes,
            millicpus: self.limits.millicpus,
        };
        let made = make_staging(&staging, slot.uid).map_err(setup);
        match made.and_then(|()| self.hierarchy.create(&name, limits).map_err(setup)) {
            Ok(group) => Ok(Prepared {
                slot,
                name,
                staging,
                group,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// After a run: kills whatever is left in its cgroup and removes it, reaps what the node
    /// inherited, deletes the staged files; the cgroup's figures, read before it went.
    async fn cleanup(&self, prepared: Prepared) -> RunStats {
        let Prepared {
            slot,
            name,
            staging,
            group,
        } = prepared;
        let stats = group.stats();
        if let Err(e) = group.remove().await {
            // The run's answer stands; the operator must see the leak.
            tracing::error!(run = %name, "{e}");
        }
        Self::reap_orphans();
        if let Err(e) = fs::remove_dir_all(&staging) {
            tracing::error!(run = %name, "cannot remove {}: {e}", staging.display());
        }
        drop(slot);
        stats
    }

    /// Starts a sandbox that waits for its program.
    async fn start(&self, extras: &Extras, cancel: &Cancellation) -> Result<Waiting, BackendError> {
        let prepared = self.prepare(cancel).await?;
        match self.spawn(extras, &prepared) {
            Ok(child) => Ok(Waiting {
                pid: child.id(),
                child,
                prepared,
            }),
            Err(e) => {
                self.cleanup(prepared).await;
                Err(e)
            }
        }
    }

    /// Gives a waiting sandbox its program: its memory limit, its files and `run.sh` (its CPU
    /// limit, then `argv`); the run starts when `go` is written to its stdin.
    fn give(&self, waiting: &Waiting, exec: &Execute, argv: &[String]) -> Result<(), BackendError> {
        let setup = |why: String| BackendError::Setup(format!("sandbox: {why}"));
        let prepared = &waiting.prepared;
        prepared.group.set_memory(exec.memory_bytes).map_err(setup)?;
        stage(
            &prepared.staging,
            &exec.files,
            &run_script(exec, argv),
            prepared.slot.uid,
        )
        .map_err(setup)
    }

    /// Ends a sandbox's program (if it still runs) and everything of it; its cgroup's figures.
    async fn end(&self, mut waiting: Waiting) -> RunStats {
        let _ = waiting.child.start_kill();
        let _ = waiting.child.wait().await;
        forget_child(waiting.pid);
        self.cleanup(waiting.prepared).await
    }

    /// A sandbox made ahead, still waiting; `None` when there is none.
    fn take_warm(self: &Arc<Self>) -> Option<Waiting> {
        loop {
            let mut waiting = self.warm.lock().ok()?.pop()?;
            if matches!(waiting.child.try_wait(), Ok(None)) {
                return Some(waiting);
            }
            // It died waiting (killed from outside): cleaned up, and the next one tried.
            let jail = Arc::clone(self);
            tokio::spawn(async move {
                jail.end(waiting).await;
            });
        }
    }

    /// Makes sandboxes ahead of runs, in the background, until `warm_target` wait.
    fn refill(self: &Arc<Self>) {
        let Ok(pool) = self.warm.lock() else { return };
        let have = pool.len() + self.filling.load(Ordering::Relaxed);
        let missing = self.warm_target.saturating_sub(have);
        self.filling.fetch_add(missing, Ordering::Relaxed);
        drop(pool);
        for _ in 0..missing {
            let jail = Arc::clone(self);
            tokio::spawn(async move {
                let made = jail.start(&Extras::default(), &Cancellation::never()).await;
                match (made, jail.warm.lock()) {
                    (Ok(waiting), Ok(mut pool)) => pool.push(waiting),
                    (Err(e), _) => tracing::warn!("a sandbox could not be made ahead of its run: {e}"),
                    (Ok(_), Err(_)) => {}
                }
                jail.filling.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// Starts `argv` in a fresh sandbox with `exec`'s files and limits and what `extras` adds, its
    /// stdin, stdout and stderr piped to the node; [`Cell::close`] ends it. `exec`'s wall time is
    /// not enforced here: the caller bounds the conversation.
    pub async fn open(
        &self,
        exec: &Execute,
        argv: &[String],
        extras: &Extras,
        cancel: &Cancellation,
    ) -> Result<Cell<'_>, BackendError> {
        let mut waiting = self.start(extras, cancel).await?;
        let given = self.give(&waiting, exec, argv);
        let mut stdin = waiting.child.stdin.take();
        let went = match (&given, stdin.as_mut()) {
            (Ok(()), Some(pipe)) => pipe
                .write_all(b"go\n")
                .await
                .map_err(|e| BackendError::Setup(format!("sandbox: cannot start the program: {e}"))),
            (Ok(()), None) => Err(BackendError::Setup(
                "sandbox: the program's stdin is missing".into(),
            )),
            (Err(e), _) => Err(e.clone()),
        };
        if let Err(e) = went {
            self.end(waiting).await;
            return Err(e);
        }
        let Waiting {
            prepared,
            mut child,
            pid,
        } = waiting;
        Ok(Cell {
            jail: self,
            prepared,
            stdin,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            pid,
        })
    }

    /// Runs `argv` with `exec`'s files, stdin and limits in a sandbox made ahead (when one waits)
    /// or a fresh one; cleans up after it whatever happened, and makes the next sandbox ahead.
    async fn run(
        self: &Arc<Self>,
        exec: &Execute,
        argv: &[String],
        cancel: &Cancellation,
    ) -> Result<Run, BackendError> {
        let (mut waiting, warm) = match self.take_warm() {
            Some(waiting) => (waiting, true),
            None => (self.start(&Extras::default(), cancel).await?, false),
        };
        let result = match self.give(&waiting, exec, argv) {
            Ok(()) => self.supervise(exec, &mut waiting, cancel).await,
            Err(e) => Err(e),
        };
        let stats = self.end(waiting).await;
        self.refill();
        let setup = |why: String| BackendError::Setup(format!("sandbox: {why}"));
        let mut run = result?;
        run.warm = warm;
        run.cpu_ms = stats.cpu_time_ms;
        run.memory = stats.memory_peak_bytes.unwrap_or(0);
        if run.status.is_none() || run.status == Some("SG") {
            if stats.oom_killed {
                run.status = Some("ML");
                run.message = Some(format!("memory limit of {} bytes exceeded", exec.memory_bytes));
            } else if run.signal == Some("SIGXCPU")
                || (run.signal == Some("SIGKILL") && stats.cpu_time_ms >= exec.cpu_time_ms)
            {
                run.status = Some("TO");
                run.message = Some(format!("CPU time limit of {} ms exceeded", exec.cpu_time_ms));
            } else if run.signal == Some("SIGXFSZ") {
                run.message = Some(format!(
                    "file size limit of {} bytes exceeded",
                    self.limits.max_file_bytes
                ));
            }
        }
        if run.internal {
            return Err(setup(run.message.unwrap_or_default()));
        }
        Ok(run)
    }

    /// Reaps the bwrap processes reparented to the node that have ended. Only zombies named bwrap
    /// among this process's children (listed per thread in `/proc/self/task/*/children`, not a scan
    /// of every process) which no run is waiting for: tokio reaps its own children.
    fn reap_orphans() {
        let Ok(waited) = children().lock() else { return };
        let Ok(threads) = fs::read_dir("/proc/self/task") else {
            return;
        };
        let pids: Vec<i32> = threads
            .flatten()
            .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|list| {
                list.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        for pid in pids {
            if u32::try_from(pid).is_ok_and(|p| waited.contains(&p)) {
                continue;
            }
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or("")
                    .to_owned()
            };
            if field("State:").starts_with('Z') && field("Name:") == "bwrap" {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
    }

    /// Starts the chain in `prepared`'s sandbox, its pid among the node's waited-for children.
    fn spawn(&self, extras: &Extras, prepared: &Prepared) -> Result<tokio::process::Child, BackendError> {
        let mut command = self.command(extras, prepared.slot.uid, &prepared.staging, &prepared.group);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The set is held across the spawn, so no reaper scans between the child's start and its
        // pid being in the set.
        let mut waited = children()
            .lock()
            .map_err(|_| BackendError::Setup("sandbox: the children's set is poisoned".into()))?;
        let child = command.spawn().map_err(|e| {
            BackendError::Setup(format!("sandbox: cannot start {}: {e}", self.tools.sh.display()))
        })?;
        if let Some(pid) = child.id() {
            waited.insert(pid);
        }
        Ok(child)
    }

    /// Starts the program given to a waiting sandbox and follows the run to its end: output
    /// (capped), wall time, cancellation.
    async fn supervise(
        &self,
        exec: &Execute,
        waiting: &mut Waiting,
        cancel: &Cancellation,
    ) -> Result<Run, BackendError> {
        let child = &mut waiting.child;
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(BackendError::Setup("sandbox: the run's pipes are missing".into()));
        };
        let mut input = b"go\n".to_vec();
        input.extend_from_slice(&exec.stdin);
        let started = Instant::now();
        // The program may never read its stdin (or exit first): a writer of its own, whose broken
        // pipe is no error.
        let feeding = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
        let cap = usize::try_from(self.limits.max_output_bytes).unwrap_or(usize::MAX);
        let deadline = tokio::time::Instant::from_std(started) + Duration::from_millis(exec.run_timeout_ms);
        let mut run = Run::default();
        let (mut out_open, mut err_open) = (true, true);
        let (mut out_buf, mut err_buf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
        let ended = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break Ended::Cancelled,
                () = tokio::time::sleep_until(deadline) => break Ended::TimedOut,
                read = stdout.read(&mut out_buf), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => if take(&mut run.stdout, &mut run.output, &out_buf[..n], cap) {
                        break Ended::StdoutLimit;
                    },
                },
                read = stderr.read(&mut err_buf), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => if take(&mut run.stderr, &mut run.output, &err_buf[..n], cap) {
                        break Ended::StderrLimit;
                    },
                },
                status = waiting.child.wait(), if !out_open && !err_open => {
                    break Ended::Exited(status.ok().and_then(|s| s.code()));
                }
            }
        };
        if !matches!(ended, Ended::Exited(_)) {
            // Killing bwrap ends the sandbox: its pid namespace dies with its first process
            // (`--die-with-parent`); the cgroup's removal is the backstop.
            let _ = waiting.child.start_kill();
            let _ = waiting.child.wait().await;
        }
        feeding.abort();
        run.wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tell(&mut run, ended, exec, cap);
        Ok(run)
    }

    /// `sh` (joins the cgroup) → `setpriv` (as root: the slot's uid) → `prlimit` → `bwrap` →
    /// `sh` (copies the files in) → the program.
    fn command(&self, extras: &Extras, uid: Option<u32>, staging: &Path, group: &RunGroup) -> Command {
        let t = &self.tools;
        let l = &self.limits;
        let mut c = Command::new(&t.sh);
        c.env_clear().env("PATH", "/usr/bin:/bin");
        let procs = group.procs_files();
        c.arg("-c")
            .arg(JOIN_SCRIPT)
            .arg("stacknet-sandbox")
            .arg(procs.len().to_string());
        c.args(&procs);
        if let Some(uid) = uid {
            let id = uid.to_string();
            c.arg(&t.setpriv)
                .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--no-new-privs"]);
        }
        // The most any run may have: a run's own limit is set by its `run.sh` (see [`run_script`]).
        let cpu_seconds = l.max_run_timeout_ms.div_ceil(1000).max(1);
        c.arg(&t.prlimit).args([
            format!("--cpu={cpu_seconds}:{}", cpu_seconds + 1),
            format!("--fsize={}", l.max_file_bytes),
            format!("--nofile={MAX_OPEN_FILES}"),
            "--core=0".to_owned(),
            "--".to_owned(),
        ]);
        c.arg(&t.bwrap).args([
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/local/bin:/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/work",
            "--setenv",
            "TMPDIR",
            "/tmp",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
        ]);
        for dir in USR_DIRS {
            match fs::read_link(dir) {
                Ok(target) => {
                    c.arg("--symlink").arg(target).arg(dir);
                }
                Err(_) if Path::new(dir).is_dir() => {
                    c.args(["--ro-bind", dir, dir]);
                }
                Err(_) => {}
            }
        }
        for file in ETC_FILES {
            c.args(["--ro-bind-try", file, file]);
        }
        let size = l.work_dir_bytes.to_string();
        c.args(["--proc", "/proc", "--dev", "/dev"])
            .args(["--size", &size, "--tmpfs", "/dev/shm"])
            .args(["--size", &size, "--tmpfs", "/tmp"])
            .args(["--size", &size, "--tmpfs", "/work"])
            .arg("--ro-bind")
            .arg(staging)
            .arg("/in");
        for (key, value) in &extras.env {
            c.arg("--setenv").arg(key).arg(value);
        }
        for path in &extras.binds {
            c.arg("--ro-bind").arg(path).arg(path);
        }
        // bwrap's root is a writable tmpfs of no set size: read-only once everything is in it.
        c.args(["--remount-ro", "/", "--chdir", "/work", "--"]);
        c.arg(&t.sh).arg("-c").arg(START_SCRIPT).arg("sh");
        c
    }
}

/// Appends `bytes` to a stream and to the interleaved output, each up to `cap` (the output: twice
/// it); true when the stream went over.
fn take(stream: &mut Vec<u8>, output: &mut Vec<u8>, bytes: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(stream.len());
    let kept = &bytes[..bytes.len().min(room)];
    stream.extend_from_slice(kept);
    let out_room = cap.saturating_mul(2).saturating_sub(output.len());
    output.extend_from_slice(&kept[..kept.len().min(out_room)]);
    bytes.len() > room
}

/// The status and message of a run, as Piston tells them: `null` (exit 0), `RE` (another exit
/// code), `SG` (a signal), `TO` (a time limit), `OL` / `EL` (stdout / stderr over its limit), and
/// ours: `ML` (the memory limit; set by the caller, which reads the cgroup) and `XX` (cancelled, or
/// the sandbox failed).
fn tell(run: &mut Run, ended: Ended, exec: &Execute, cap: usize) {
    let (status, message) = match ended {
        Ended::Cancelled => (Some("XX"), Some("cancelled: the client went away".to_owned())),
        Ended::TimedOut => (
            Some("TO"),
            Some(format!("wall time limit of {} ms exceeded", exec.run_timeout_ms)),
        ),
        Ended::StdoutLimit => (Some("OL"), Some(format!("stdout exceeded {cap} bytes"))),
        Ended::StderrLimit => (Some("EL"), Some(format!("stderr exceeded {cap} bytes"))),
        Ended::Exited(None) => (
            Some("XX"),
            Some("the sandbox ended without an exit code".to_owned()),
        ),
        Ended::Exited(Some(JOIN_FAILED)) if run.stderr.starts_with(b"stacknet-sandbox:") => {
            run.internal = true;
            (
                Some("XX"),
                Some(String::from_utf8_lossy(&run.stderr).trim().to_owned()),
            )
        }
        // bwrap exits with 128 + the signal that ended the program, as shells report it.
        Ended::Exited(Some(code)) if (129..=192).contains(&code) => {
            let signal = nix::sys::signal::Signal::try_from(code - 128)
                .map(|s| s.as_str())
                .unwrap_or("SIG?");
            run.signal = Some(signal);
            (Some("SG"), Some(format!("killed by {signal}")))
        }
        Ended::Exited(Some(0)) => {
            run.code = Some(0);
            (None, None)
        }
        Ended::Exited(Some(code)) => {
            run.code = Some(code);
            (Some("RE"), Some(format!("exited with code {code}")))
        }
    };
    run.status = status;
    run.message = message;
}

/// Makes a sandbox's staging directory, empty, owned by the run's uid, only the owner can read it.
fn make_staging(dir: &Path, uid: Option<u32>) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot make {}: {e}", dir.display());
    let _ = fs::remove_dir_all(dir);
    fs::create_dir(dir).map_err(err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    if let Some(uid) = uid {
        std::os::unix::fs::chown(dir, Some(uid), Some(uid)).map_err(err)?;
    }
    Ok(())
}

/// The script a run's sandbox runs once its files are in: the run's CPU limit (soft, then a second
/// more hard: lowered in that order, as a soft limit may never exceed the hard one), then `exec`
/// of the program, every word quoted.
fn run_script(exec: &Execute, argv: &[String]) -> String {
    let seconds = exec.cpu_time_ms.div_ceil(1000).max(1);
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    format!(
        "ulimit -S -t {seconds} && ulimit -H -t {} && exec {}\n",
        seconds + 1,
        quoted.join(" ")
    )
}

/// Writes the program's files under `dir/files` and its `run.sh` in `dir` (the sandbox sees `dir`
/// as `/in`), owned by the run's uid, so the sandbox can read them.
fn stage(dir: &Path, files: &[CodeFile], script: &str, uid: Option<u32>) -> Result<(), String> {
    let err = |path: &Path, e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let own = |path: &Path| match uid {
        Some(uid) => std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(|e| err(path, e)),
        None => Ok(()),
    };
    let root = dir.join("files");
    fs::create_dir(&root).map_err(|e| err(&root, e))?;
    own(&root)?;
    for file in files {
        // Names are checked relative paths of plain parts (no `..`, not absolute), and only this
        // function writes here: nothing can point outside `root`.
        let path = root.join(&file.name);
        let mut made = root.clone();
        for part in Path::new(&file.name)
            .parent()
            .into_iter()
            .flat_map(Path::components)
        {
            made.push(part);
            if !made.is_dir() {
                fs::create_dir(&made).map_err(|e| err(&made, e))?;
                own(&made)?;
            }
        }
        fs::write(&path, &file.content).map_err(|e| err(&path, e))?;
        own(&path)?;
    }
    let run = dir.join("run.sh");
    fs::write(&run, script).map_err(|e| err(&run, e))?;
    own(&run)
}

/// The first version number in an interpreter's `--version` output: `3.11.2` of
/// `Python 3.11.2`, `20.20.2` of `v20.20.2`, `5.2.15(1)-release` of GNU bash's banner.
fn version_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|w| w.trim_start_matches('v').trim_end_matches(','))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

/// Finds the programs a run needs and bwrap's version.
async fn find_tools(bwrap: Option<&Path>) -> Result<Tools, String> {
    let find = |name: &str| -> Option<PathBuf> {
        ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    let bwrap = match bwrap {
        Some(p) => p.to_owned(),
        None => find("bwrap").ok_or("bubblewrap is not installed (Debian: apt install bubblewrap)")?,
    };
    let sh = find("sh").ok_or("no /bin/sh")?;
    let setpriv = find("setpriv").ok_or("setpriv is not installed (Debian: util-linux)")?;
    let prlimit = find("prlimit").ok_or("prlimit is not installed (Debian: util-linux)")?;
    // Among the waited-for children like every run's bwrap (the set held across the spawn), so the
    // reaper of another sandbox in this process never takes it before its own wait does.
    let child = {
        let mut waited = children()
            .lock()
            .map_err(|_| "the sandbox children's set is poisoned".to_owned())?;
        let child = Command::new(&bwrap)
            .arg("--version")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
        if let Some(pid) = child.id() {
            waited.insert(pid);
        }
        child
    };
    let pid = child.id();
    let out = child.wait_with_output().await;
    forget_child(pid);
    let out = out.map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    let bwrap_version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Tools {
        sh,
        setpriv,
        prlimit,
        bwrap,
        bwrap_version,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_in_banners() {
        assert_eq!(version_in("Python 3.11.2\n").as_deref(), Some("3.11.2"));
        assert_eq!(version_in("v20.20.2\n").as_deref(), Some("20.20.2"));
        assert_eq!(
            version_in("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)").as_deref(),
            Some("5.2.15(1)-release")
        );
        assert_eq!(version_in("no digits here"), None);
    }

    #[test]
    fn output_is_capped_per_stream_and_interleaved() {
        let (mut out, mut err, mut all) = (Vec::new(), Vec::new(), Vec::new());
        assert!(!take(&mut out, &mut all, b"abc", 4));
        assert!(!take(&mut err, &mut all, b"XY", 4));
        assert!(take(&mut out, &mut all, b"def", 4));
        assert_eq!(
            (out.as_slice(), err.as_slice(), all.as_slice()),
            (&b"abcd"[..], &b"XY"[..], &b"abcXYd"[..])
        );
    }

    #[test]
    fn staged_files_stay_under_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let files = [
            CodeFile {
                name: "main.py".into(),
                content: b"print(1)".to_vec(),
            },
            CodeFile {
                name: "pkg/sub/util.py".into(),
                content: b"X = 1".to_vec(),
            },
        ];
        make_staging(&run, None).unwrap();
        stage(&run, &files, "exec true\n", None).unwrap();
        assert_eq!(fs::read(run.join("files/pkg/sub/util.py")).unwrap(), b"X = 1");
        assert_eq!(fs::read(run.join("run.sh")).unwrap(), b"exec true\n");
        assert_eq!(fs::metadata(&run).unwrap().permissions().mode() & 0o777, 0o700);
        // Made again, it starts empty.
        make_staging(&run, None).unwrap();
        assert!(!run.join("files").exists());
    }

    #[test]
    fn runs_of_gone_processes_are_stale() {
        assert!(stale_run("run-999999999-1"));
        assert!(!stale_run(&format!("run-{}-1", std::process::id())));
        assert!(!stale_run("stacknet-node"));
        assert!(!stale_run("run-x-1"));
    }

    #[test]
    fn the_run_script_quotes_every_word() {
        let exec = Execute {
            language: String::new(),
            files: Vec::new(),
            stdin: Vec::new(),
            args: Vec::new(),
            run_timeout_ms: 5000,
            cpu_time_ms: 2500,
            memory_bytes: 0,
        };
        let argv = ["/usr/bin/python3".to_owned(), "it's $HOME; `x`".to_owned()];
        assert_eq!(
            run_script(&exec, &argv),
            "ulimit -S -t 3 && ulimit -H -t 4 && exec '/usr/bin/python3' 'it'\\''s $HOME; `x`'\n"
        );
    }

    #[test]
    fn limits_refuse_what_cannot_fit_a_frame() {
        let mut config = SandboxBackendConfig::default();
        assert!(SandboxLimits::from_config(&config).is_ok());
        config.max_output_bytes = Some(OUTPUT_BYTES_CEILING + 1);
        assert!(SandboxLimits::from_config(&config)
            .unwrap_err()
            .to_string()
            .contains("max_output_bytes must be 1 to 131072"));
    }
}
