//! An operator's MCP server (the official MCP Python SDK's, `tests/mcp_stdio_server.py`) run by a
//! node in its sandbox: its tools are listed at the hub's MCP endpoint beside the network's own and
//! called through the hub by the SDK's client; each call is a task charged one call, with paperwork
//! that verifies; the sandbox holds (no read of the node's secrets or `/etc/shadow`, no write outside
//! the work directory, no network, an unprivileged uid, nothing left behind); a tool's own error is
//! a tool error, and a call of a tool no node offers is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use stacknet_api::output::digest_of_response;
use stacknet_node::backend::mcp::McpTools;
use stacknet_node::config::{McpBackendConfig, SandboxBackendConfig};
use stacknet_protocol::contract::Workload;
use stacknet_sdk::verify::{self, Content};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use crate::hub::{client, paperwork_of};
use crate::sandbox::nothing_left;

const FIRST_UID: u32 = 61_100;

/// The SDK's Python path (`STACKNET_SDK_PYTHON`).
fn sdk_python() -> PathBuf {
    std::env::var_os("STACKNET_SDK_PYTHON")
        .expect("STACKNET_SDK_PYTHON is not set: this test needs the MCP Python SDK (scripts/test.sh installs it and sets it)")
        .into()
}

/// The server as an operator installs it: its script and the SDK (hard links of the SDK's
/// site-packages, or a copy) under `dir/server`, readable by the sandbox's uids, run by Debian's
/// `python3` with the SDK on its path.
fn install_server(dir: &Path) -> McpBackendConfig {
    let out = std::process::Command::new(sdk_python())
        .args([
            "-c",
            "import mcp, os; print(os.path.dirname(os.path.dirname(mcp.__file__)))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let site = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let server = dir.join("server");
    std::fs::create_dir(&server).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    let linked = std::process::Command::new("cp")
        .arg("-al")
        .arg(&site)
        .arg(server.join("site"))
        .status()
        .unwrap();
    if !linked.success() {
        let copied = std::process::Command::new("cp")
            .arg("-R")
            .arg(&site)
            .arg(server.join("site"))
            .status()
            .unwrap();
        assert!(copied.success());
    }
    let script = server.join("server.py");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp_stdio_server.py"),
        &script,
    )
    .unwrap();
    McpBackendConfig {
        name: "testtools".into(),
        command: vec!["/usr/bin/python3".into(), script.display().to_string()],
        binds: vec![server.clone()],
        env: [("PYTHONPATH".to_owned(), server.join("site").display().to_string())].into(),
        timeout_ms: Some(15_000),
        sandbox: SandboxBackendConfig {
            first_uid: Some(FIRST_UID),
            state_dir: Some(dir.join("state")),
            ..Default::default()
        },
    }
}

/// The SDK's client against the hub's `/mcp`: the tools listed and the calls' results.
async fn mcp_client(net: &TestNetwork, key: &str, calls: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp_sdk_check.py");
    let out = tokio::process::Command::new(sdk_python())
        .arg(script)
        .arg(format!("{}/mcp", net.hub.url()))
        .arg(key)
        .arg(calls.to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// An answer's paperwork: signed by the node, over the answer's digest, one call.
async fn check_paperwork(net: &TestNetwork, answer: &Value) {
    let paperwork = paperwork_of(net, answer).await;
    assert_eq!(paperwork.body.usage.units, 1, "{answer}");
    assert_eq!(
        digest_of_response(Workload::ToolCall, answer).unwrap(),
        paperwork.body.output_sha256
    );
    let hub_key = net.hub.hub.state.hub_key.public_key();
    verify::answer(&Content::Whole(answer.clone()), &paperwork, &hub_key).expect("the answer verifies");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the MCP Python SDK (STACKNET_SDK_PYTHON) and bubblewrap; scripts/test.sh runs it"]
async fn an_operators_mcp_server_is_called_through_a_node_in_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = install_server(dir.path());
    let tools = McpTools::start(&config)
        .await
        .expect("the server starts in the sandbox and lists its tools");
    assert_eq!(
        tools.tools(),
        [
            "testtools__add",
            "testtools__probe",
            "testtools__fail",
            "testtools__flood",
            "testtools__hang"
        ]
    );
    nothing_left(dir.path(), FIRST_UID);

    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(tools)).await;
    // A secret of the node's: only root reads it, and it is not in the sandbox.
    let secret = dir.path().join("node.key");
    std::fs::write(&secret, "secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hub_port = net.hub.url().rsplit(':').next().unwrap().parse::<u16>().unwrap();

    let got = mcp_client(
        &net,
        &net.api_key,
        json!([
            ["testtools__add", {"a": 2, "b": 3}],
            ["testtools__probe", {"secret": secret, "port": hub_port}],
            ["testtools__fail", {"message": "no luck today"}],
            ["testtools__flood", {"n": 3_000_000}],
            ["testtools__hang", {"seconds": 120}]
        ]),
    )
    .await;
    let names: Vec<&str> = got["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "run_code",
            "testtools__add",
            "testtools__fail",
            "testtools__flood",
            "testtools__hang",
            "testtools__probe",
            "web_fetch",
            "web_search"
        ]
    );
    assert_eq!(
        got["schemas"]["testtools__add"]["properties"]["a"]["type"], "integer",
        "{got}"
    );

    let add = &got["calls"][0];
    assert_eq!(add["is_error"], false, "{got}");
    assert_eq!(add["content"][0]["text"], "5", "{got}");
    assert_eq!(add["structured"]["usage"]["calls"], 1, "{got}");
    check_paperwork(&net, &add["structured"]).await;

    let probe = &got["calls"][1];
    assert_eq!(probe["is_error"], false, "{got}");
    let seen: Value = serde_json::from_str(probe["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen,
        json!({
            "uid": seen["uid"],
            "secret": false,
            "shadow": false,
            "write_outside": false,
            "write_work": true,
            "network": false,
        }),
        "{got}"
    );
    assert!(
        (FIRST_UID..FIRST_UID + 4).contains(&(seen["uid"].as_u64().unwrap() as u32)),
        "{seen}"
    );
    assert!(!dir.path().join("server/planted").exists());

    // The tool's own failure is a tool error, and the call (which happened) is charged.
    let fail = &got["calls"][2];
    assert_eq!(fail["is_error"], true, "{got}");
    assert!(
        fail["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("no luck today"),
        "{got}"
    );
    check_paperwork(&net, &fail["structured"]).await;

    // Too much output, or no answer in time: the call fails, and nothing is charged.
    let flood = &got["calls"][3];
    assert_eq!(flood["is_error"], true, "{got}");
    assert_eq!(flood["structured"]["error"]["code"], "upstream_error", "{got}");
    let hang = &got["calls"][4];
    assert_eq!(hang["is_error"], true, "{got}");
    assert_eq!(hang["structured"]["error"]["code"], "timeout", "{got}");
    assert!(
        hang["structured"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within 15s"),
        "the node's own limit is named: {got}"
    );
    for failed in [flood, hang] {
        assert!(failed["structured"].get("paperwork").is_none(), "{got}");
    }

    // The same tool over plain HTTP; a tool no node offers is refused.
    let url = format!("{}/stacknet/v1/tools/call", net.hub.url());
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&json!({"name": "testtools__add", "arguments": {"a": 40, "b": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], "42", "{answer}");
    assert_eq!(answer["name"], "testtools__add", "{answer}");
    check_paperwork(&net, &answer).await;
    let resp = client()
        .post(&url)
        .bearer_auth(&net.api_key)
        .json(&json!({"name": "nobody__x"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "model_not_found", "{err}");
    nothing_left(dir.path(), FIRST_UID);
}
