//! `POST /stacknet/v1/tools/call`: a call of a tool an operator installed on a node (a tool of an
//! MCP server the node runs in its sandbox), in the shape of MCP's `tools/call`:
//! `{"name": "notes__add", "arguments": {...}}` in, MCP's `CallToolResult`
//! (`{"name", "content", "structuredContent"?, "isError"}`) out. The tool's name is the model the
//! task is routed by: `<server>__<tool>`, the operator's name for the server and the server's for
//! the tool. The hub's MCP endpoint lists these tools beside the network's own.

use serde_json::Value;
use stacknet_protocol::contract::Workload;

use super::fields::{self, object};
use super::{ApiRequest, RequestError};

/// The longest tool name (MCP's limit).
pub const MAX_NAME_BYTES: usize = 128;
/// What separates the operator's name for a server from the server's name for a tool.
pub const SEPARATOR: &str = "__";

/// What a tool backend needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: serde_json::Map<String, Value>,
}

/// Whether `name` is a tool name as MCP allows them: 1 to 128 of ASCII letters, digits, `_`, `-`
/// and `.`.
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// The name a node offers `tool` of its server `server` under.
pub fn offered_name(server: &str, tool: &str) -> String {
    format!("{server}{SEPARATOR}{tool}")
}

pub fn validate(body: Value) -> Result<(ApiRequest, ToolCall), RequestError> {
    let obj = object(&body)?;
    let name = match obj.get("name") {
        Some(Value::String(n)) if is_tool_name(n) => n.clone(),
        Some(_) => {
            return Err(RequestError::invalid(
                "name",
                format!("name must be a tool name: 1 to {MAX_NAME_BYTES} letters, digits, '_', '-' or '.'"),
            ))
        }
        None => return Err(RequestError::invalid("name", "you must provide a name parameter")),
    };
    let arguments = match obj.get("arguments") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(RequestError::invalid("arguments", "arguments must be an object")),
    };
    fields::fixed_model(obj, &name)?;
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::ToolCall, name.clone(), user, 1, body);
    Ok((request, ToolCall { name, arguments }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_call_is_routed_by_its_tool_name_and_bad_fields_are_named() {
        let (request, call) = validate(json!({"name": "notes__add", "arguments": {"a": 1}})).unwrap();
        assert_eq!(request.model, "notes__add");
        assert_eq!(request.workload, Workload::ToolCall);
        assert_eq!(call.arguments["a"], 1);
        let (_, call) = validate(json!({"name": "x"})).unwrap();
        assert!(call.arguments.is_empty());
        let param = |body: Value| match validate(body).unwrap_err() {
            RequestError::Invalid { param, .. } => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(param(json!({})), "name");
        assert_eq!(param(json!({"name": "a b"})), "name");
        assert_eq!(param(json!({"name": "a".repeat(129)})), "name");
        assert_eq!(param(json!({"name": "t", "arguments": [1]})), "arguments");
        assert_eq!(param(json!({"name": "t", "model": "other"})), "model");
        assert_eq!(offered_name("notes", "add"), "notes__add");
    }
}
