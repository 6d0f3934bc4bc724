//! The network's tools over MCP: `POST /mcp`, streamable HTTP with the official Rust SDK (`rmcp`),
//! stateless (no session lives in one replica), authenticated with a Stack API key like every
//! other endpoint.
//!
//! Tools: the network's own, `run_code` (sandboxed code execution), `web_fetch` (a page as
//! markdown), `web_search`; and the tools operators installed on their nodes (MCP servers each node
//! runs in its sandbox), offered by connected nodes as `tool_call` models named
//! `<server>__<tool>`, listed with the description and input schema their node gave (where several
//! nodes offer one name, the node with the lowest key id is the one listed).
//! A tool call is a task like any other: it goes through the same request path as the HTTP
//! endpoint (`task::respond`, with the caller's key), so it is routed to a node, held for, charged,
//! and answered with its fingerprint and paperwork, which the tool result carries (as text and as
//! structured content). A refused or failed call is a tool error whose text is the OpenAI-style
//! error body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler};
use serde_json::{json, Value};
use stacknet_protocol::contract::Workload;

use crate::AppState;

/// The largest answer a tool call reads back: the tools' answers are at most a frame (4 MiB of
/// result) with the proof around it.
const MAX_ANSWER_BYTES: usize = 2 * stacknet_protocol::wire::MAX_FRAME_BYTES;

/// The MCP service for the hub's router.
pub fn service(state: AppState) -> StreamableHttpService<Tools, NeverSessionManager> {
    let limit = state.config.max_body_bytes;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(limit)
        // Every request needs a Stack API key, which a page in a browser cannot add to a cross-origin
        // request: the DNS-rebinding guard for servers on a loopback address is not needed, and a hub
        // is reached by whatever name it is published under.
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(Tools { state: state.clone() }),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The network's tools, for one request.
#[derive(Clone)]
pub struct Tools {
    state: AppState,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tools")
    }
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(o) => Arc::new(o),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The tools, with their input schemas.
fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "run_code",
            "Run a program in a sandbox on a Stacknet node (no network; time, memory and output \
             limits) and get its stdout, stderr and exit code. Charged per second of sandbox time.",
            schema(json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": ["python", "bash", "javascript"]},
                    "code": {"type": "string", "description": "the program"},
                    "stdin": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "run_timeout": {"type": "integer", "description": "wall time, ms (default 10000)"}
                },
                "required": ["language", "code"]
            })),
        ),
        Tool::new(
            "web_fetch",
            "Fetch a public web page on a Stacknet node and get its readable content as markdown, \
             text or HTML. robots.txt is honoured; private addresses are refused. One page charged.",
            schema(json!({
                "type": "object",
                "properties": {
                    "url": {"type": "string"},
                    "format": {"type": "string", "enum": ["markdown", "text", "html"]}
                },
                "required": ["url"]
            })),
        ),
        Tool::new(
            "web_search",
            "Search the web through a Stacknet node's search engine: titles, URLs and snippets. \
             One query charged.",
            schema(json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 20}
                },
                "required": ["query"]
            })),
        ),
    ]
}

/// The network's own tools: no node's tool is listed or called under these names.
pub const NETWORK_TOOLS: [&str; 3] = ["run_code", "web_fetch", "web_search"];

/// The tools operators installed on the connected nodes, by name.
fn operator_tools(state: &AppState) -> Vec<Tool> {
    let mut nodes = state.nodes.connected();
    nodes.sort_by_key(|n| n.id);
    let mut tools = std::collections::BTreeMap::new();
    for node in &nodes {
        for offer in &node.models {
            if let Some(spec) = &offer.tool {
                if !NETWORK_TOOLS.contains(&offer.name.as_str()) {
                    tools.entry(offer.name.clone()).or_insert_with(|| {
                        Tool::new(
                            offer.name.clone(),
                            spec.description.clone(),
                            Arc::new(spec.input_schema.clone()),
                        )
                    });
                }
            }
        }
    }
    tools.into_values().collect()
}

/// The task a tool call is: its workload and the request body of the HTTP endpoint.
fn task_of(name: &str, args: JsonObject) -> Result<(Workload, Value), String> {
    match name {
        "run_code" => {
            let mut body = serde_json::Map::new();
            for field in ["language", "stdin", "args", "run_timeout"] {
                if let Some(v) = args.get(field) {
                    body.insert(field.to_owned(), v.clone());
                }
            }
            let code = args.get("code").cloned().unwrap_or(Value::Null);
            body.insert("files".to_owned(), json!([{"name": "main", "content": code}]));
            Ok((Workload::CodeExecution, Value::Object(body)))
        }
        "web_fetch" => Ok((Workload::WebFetch, Value::Object(args))),
        "web_search" => Ok((Workload::WebSearch, Value::Object(args))),
        other if stacknet_api::request::tool::is_tool_name(other) => Ok((
            Workload::ToolCall,
            json!({"name": other, "arguments": Value::Object(args)}),
        )),
        other => Err(format!("no tool {other:?}")),
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("stacknet-hub", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Stacknet's network tools: every call is a paid task run by a node, answered with its \
                 fingerprint and paperwork.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut all = tools();
        all.extend(operator_tools(&self.state));
        Ok(ListToolsResult::with_all_items(all))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (workload, body) = task_of(&request.name, request.arguments.unwrap_or_default())
            .map_err(|m| ErrorData::invalid_params(m, None))?;
        if workload == Workload::ToolCall && !self.state.nodes.knows_model(&request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool {:?}: no node offers it", request.name),
                None,
            ));
        }
        // The caller's key, from the HTTP request the call came in.
        let mut headers = HeaderMap::new();
        if let Some(auth) = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.headers.get(header::AUTHORIZATION))
        {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let response = crate::task::respond(self.state.clone(), headers, Ok(bytes), workload).await;
        let ok = response.status().is_success();
        let answer = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| ErrorData::internal_error(format!("the answer could not be read: {e}"), None))?;
        let value: Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).into_owned()));
        // An operator's tool answers with its own content (and says whether it failed); the
        // network's tools and every refusal with the whole answer as text.
        let own = (ok && workload == Workload::ToolCall)
            .then(|| value.get("content").cloned())
            .flatten()
            .and_then(|c| serde_json::from_value::<Vec<ContentBlock>>(c).ok());
        let failed = !ok || value.get("isError").and_then(Value::as_bool) == Some(true);
        let content = own.unwrap_or_else(|| vec![ContentBlock::text(value.to_string())]);
        let mut result = if failed {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        };
        result.structured_content = Some(value);
        Ok(result.into())
    }
}

/// `POST /mcp` (and the GET and DELETE of the transport), behind the Stack API key.
pub fn router(state: AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route_service(stacknet_api::paths::MCP, service(state.clone()))
        .layer(axum::middleware::from_fn_with_state(state, require_key))
}

/// Refuses a request without a valid Stack API key, as every endpoint does (401 `invalid_api_key`).
async fn require_key(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.api_keys.caller(request.headers()) {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}
