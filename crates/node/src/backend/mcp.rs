//! Tools operators install: an MCP server (stdio transport) the operator configures, run in the
//! sandbox ([`Jail`]) and talked to with the official Rust SDK's client (`rmcp`).
//!
//! At start the node runs the server once, in a sandbox, to list its tools; each becomes a model of
//! the `tool_call` workload named `<server>__<tool>`, offered with its description and input schema
//! (which the hub lists at its MCP endpoint). Every call runs the server in a fresh sandbox
//! (initialize, `tools/call`, end): nothing one caller did survives for the next, and the server
//! sees none of the node's files but the paths the operator binds, read-only, and no network. The
//! sandbox's limits hold (memory, processes, CPU, one wall time for the whole call, start
//! included); the server's stdout is read up to [`MAX_SERVER_OUTPUT_BYTES`], its stderr logged,
//! never sent to the caller.
//!
//! A call is one unit (`usage.units = 1`): a tool that answers `isError` was still called. As each
//! call starts its server, no tool is ever warm. A server
//! that fails (does not start, breaks the protocol, runs out of time) fails the task, and nothing is
//! charged; a call the server refuses as invalid (JSON-RPC `-32602`, `-32601`) is the caller's
//! `invalid_request`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, ErrorCode};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::ServiceExt;
use serde_json::Value;
use stacknet_api::request::{code, tool};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::{ModelOffer, ToolSpec, MAX_TOOL_DESCRIPTION_BYTES};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::sandbox::{Cell, Extras, Jail};
use super::{Backend, BackendError, BackendOutcome, BackendTask, Cancellation};
use crate::config::McpBackendConfig;

/// The backend id in offers and paperwork.
pub const BACKEND_ID: &str = "mcp-stdio";
/// One call at most, where the operator says nothing.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The most a server may write to its stdout in one call: its result must fit a frame.
pub const MAX_SERVER_OUTPUT_BYTES: u64 = 2 * 1024 * 1024;
/// The largest result a call may answer with (as JSON).
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
/// Tools offered of one server, at most.
pub const MAX_TOOLS: usize = 64;
/// The longest server name.
pub const MAX_SERVER_NAME_BYTES: usize = 32;
/// Bytes of a server's stderr kept for the log.
const STDERR_TAIL_BYTES: usize = 2048;

/// A tool of the server, as offered.
#[derive(Clone, Debug)]
struct Offered {
    /// `<server>__<tool>`: the model it is routed by.
    model: String,
    /// The server's own name for it.
    tool: String,
    spec: ToolSpec,
}

/// An operator's MCP server, its tools offered as `tool_call` models.
#[derive(Debug)]
pub struct McpTools {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jail: Jail,
    name: String,
    argv: Vec<String>,
    extras: Extras,
    timeout: Duration,
    /// The server's name and version (from its `initialize` answer) and the sandbox's software.
    version: String,
    tools: Vec<Offered>,
}

/// Why a server name, command, bind or variable is refused.
fn check_config(config: &McpBackendConfig) -> Result<(), String> {
    let name = &config.name;
    if name.is_empty()
        || name.len() > MAX_SERVER_NAME_BYTES
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "name {name:?} must be 1 to {MAX_SERVER_NAME_BYTES} of lowercase letters, digits and '-'"
        ));
    }
    match config.command.first() {
        Some(program) if program.starts_with('/') => {}
        _ => return Err("command must start with the program's absolute path".to_owned()),
    }
    for bind in &config.binds {
        if !bind.is_absolute() || !bind.exists() {
            return Err(format!(
                "bind {} must be an absolute path that exists",
                bind.display()
            ));
        }
    }
    for key in config.env.keys() {
        let ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!("env {key:?} is not a variable name"));
        }
    }
    Ok(())
}

/// What a tool is offered as, or why it is left out.
fn offer(server: &str, t: &rmcp::model::Tool) -> Result<Offered, String> {
    let model = tool::offered_name(server, &t.name);
    if !tool::is_tool_name(&model) {
        return Err(format!(
            "the name {model:?} is not a tool name (1 to 128 letters, digits, '_', '-', '.')"
        ));
    }
    let mut description = t
        .description
        .as_deref()
        .or(t.title.as_deref())
        .unwrap_or_default()
        .to_owned();
    if description.len() > MAX_TOOL_DESCRIPTION_BYTES {
        let mut end = MAX_TOOL_DESCRIPTION_BYTES;
        while !description.is_char_boundary(end) {
            end -= 1;
        }
        description.truncate(end);
    }
    let spec = ToolSpec {
        description,
        input_schema: (*t.input_schema).clone(),
    };
    if let Some(why) = spec.refusal() {
        return Err(why);
    }
    Ok(Offered {
        model,
        tool: t.name.to_string(),
        spec,
    })
}

impl McpTools {
    /// Checks the configuration and the sandbox, runs the server once to list its tools, and
    /// refuses, saying why, when it cannot or it has none to offer.
    pub async fn start(config: &McpBackendConfig) -> Result<McpTools, BackendError> {
        let setup = |why: String| BackendError::Setup(format!("mcp server {:?}: {why}", config.name));
        check_config(config).map_err(setup)?;
        let jail = Jail::new(&config.sandbox).await?;
        let timeout_ms = config
            .timeout_ms
            .unwrap_or(DEFAULT_TIMEOUT_MS)
            .min(jail.limits().max_run_timeout_ms);
        let mut inner = Inner {
            jail,
            name: config.name.clone(),
            argv: config.command.clone(),
            extras: Extras {
                binds: config.binds.clone(),
                env: config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            },
            timeout: Duration::from_millis(timeout_ms),
            version: String::new(),
            tools: Vec::new(),
        };
        let (version, listed) = inner
            .session(&Cancellation::never(), |client| async move {
                client.list_all_tools().await
            })
            .await
            .map_err(|e| setup(e.to_string()))?;
        inner.version = format!("{version}; {}", inner.jail.version());
        for t in listed.iter().take(MAX_TOOLS) {
            match offer(&inner.name, t) {
                Ok(o) => inner.tools.push(o),
                Err(why) => tracing::warn!(server = %inner.name, tool = %t.name, "tool left out: {why}"),
            }
        }
        if listed.len() > MAX_TOOLS {
            tracing::warn!(server = %inner.name, "only the first {MAX_TOOLS} of {} tools are offered", listed.len());
        }
        if inner.tools.is_empty() {
            return Err(setup("the server lists no tool that can be offered".to_owned()));
        }
        Ok(McpTools {
            inner: Arc::new(inner),
        })
    }

    /// The tools offered, by the names the network calls them.
    pub fn tools(&self) -> Vec<String> {
        self.inner.tools.iter().map(|t| t.model.clone()).collect()
    }
}

impl Backend for McpTools {
    fn models(&self) -> Vec<ModelOffer> {
        self.inner
            .tools
            .iter()
            .map(|t| ModelOffer {
                name: t.model.clone(),
                workloads: vec![Workload::ToolCall],
                backend: BACKEND_ID.to_owned(),
                model_sha256: None,
                tool: Some(t.spec.clone()),
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

/// An MCP error the server answered with, as the caller's error when it says the call was wrong.
fn call_error(e: ServiceError) -> BackendError {
    match e {
        ServiceError::McpError(data)
            if data.code == ErrorCode::INVALID_PARAMS || data.code == ErrorCode::METHOD_NOT_FOUND =>
        {
            BackendError::InvalidRequest(format!("the tool refused the call: {}", data.message))
        }
        other => BackendError::Malformed(format!("the tool's server failed: {other}")),
    }
}

impl Inner {
    async fn task(
        &self,
        task: BackendTask,
        chunks: mpsc::Sender<Value>,
    ) -> Result<BackendOutcome, BackendError> {
        let offered = self
            .tools
            .iter()
            .find(|t| t.model == task.model && task.workload == Workload::ToolCall)
            .ok_or_else(|| task.unsupported())?;
        let (_, call) = tool::validate((*task.request).clone())?;
        let name = offered.tool.clone();
        let (_, result) = self
            .session(&task.cancel, move |client| async move {
                client
                    .call_tool(CallToolRequestParams::new(name).with_arguments(call.arguments))
                    .await
            })
            .await?;
        let mut body = serde_json::to_value(&result)
            .map_err(|e| BackendError::Malformed(format!("the tool's result: {e}")))?;
        let obj = body
            .as_object_mut()
            .ok_or_else(|| BackendError::Malformed("the tool's result is not an object".into()))?;
        obj.remove("resultType");
        obj.remove("_meta");
        obj.insert("name".to_owned(), Value::String(offered.model.clone()));
        obj.entry("isError").or_insert(Value::Bool(false));
        let size = serde_json::to_vec(&body).map_or(usize::MAX, |v| v.len());
        if size > MAX_RESULT_BYTES {
            return Err(BackendError::Malformed(format!(
                "the tool's result of {size} bytes is over the limit of {MAX_RESULT_BYTES} bytes"
            )));
        }
        chunks.send(body).await.map_err(|_| BackendError::Abandoned)?;
        let mut outcome = BackendOutcome::units(1, BACKEND_ID, self.version.clone(), &offered.model);
        // Each call starts its server: never warm (and no tool is reported ready).
        outcome.warm = false;
        Ok(outcome)
    }

    /// Runs the server in a fresh sandbox, initializes an MCP client with it, runs `talk`, and ends
    /// it all, within the call's time; the server's name and version, and what `talk` got.
    async fn session<T, F, Fut>(&self, cancel: &Cancellation, talk: F) -> Result<(String, T), BackendError>
    where
        F: FnOnce(RunningService<RoleClient, ()>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let exec = code::Execute {
            language: String::new(),
            files: Vec::new(),
            stdin: Vec::new(),
            args: Vec::new(),
            run_timeout_ms: ms,
            cpu_time_ms: ms,
            memory_bytes: self.jail.limits().max_memory_bytes,
        };
        let mut cell = self.jail.open(&exec, &self.argv, &self.extras, cancel).await?;
        let stderr = drain(&mut cell);
        let outcome = tokio::select! {
            () = cancel.cancelled() => Err(BackendError::Abandoned),
            done = tokio::time::timeout(self.timeout, converse(&mut cell, talk)) => {
                done.unwrap_or(Err(BackendError::Timeout(self.timeout)))
            }
        };
        cell.close().await;
        if let Err(e) = &outcome {
            let tail = match stderr {
                Some(task) => task.await.unwrap_or_default(),
                None => String::new(),
            };
            tracing::warn!(server = %self.name, "{e}; the server's stderr ended with: {tail}");
        }
        outcome
    }
}

/// Reads the server's stderr (which must be read, or a chatty server blocks), keeping its tail.
fn drain(cell: &mut Cell<'_>) -> Option<tokio::task::JoinHandle<String>> {
    let mut stderr = cell.stderr.take()?;
    Some(tokio::spawn(async move {
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > STDERR_TAIL_BYTES {
                tail.drain(..tail.len() - STDERR_TAIL_BYTES);
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    }))
}

/// The MCP conversation over the cell's pipes: initialize, `talk`, close.
async fn converse<T, F, Fut>(cell: &mut Cell<'_>, talk: F) -> Result<(String, T), BackendError>
where
    F: FnOnce(RunningService<RoleClient, ()>) -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let (Some(stdout), Some(stdin)) = (cell.stdout.take(), cell.stdin.take()) else {
        return Err(BackendError::Setup(
            "sandbox: the server's pipes are missing".into(),
        ));
    };
    let limit = usize::try_from(MAX_SERVER_OUTPUT_BYTES).unwrap_or(usize::MAX);
    let transport =
        AsyncRwTransport::new_client(stdout.take(MAX_SERVER_OUTPUT_BYTES), stdin).with_max_line_length(limit);
    let client = ()
        .serve(transport)
        .await
        .map_err(|e| BackendError::Malformed(format!("the tool's server did not initialize: {e}")))?;
    let server = client
        .peer_info()
        .and_then(|i| {
            i.server_info
                .as_ref()
                .map(|s| format!("{} {}", s.name, s.version))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let got = talk(client).await.map_err(call_error)?;
    Ok((server, got))
}
