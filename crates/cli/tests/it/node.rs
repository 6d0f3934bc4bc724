//! `stacknet node` as an operator runs it next to a separate `stacknet hub`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{spawn_hub, stacknet, text};

/// How long a node may take to load its models and connect.
const CONNECT_DEADLINE: Duration = Duration::from_secs(120);

/// Kills a child process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_without_an_upstream_or_pulled_models_says_what_to_pull() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let out = stacknet(
        &[
            "node",
            "--hub",
            "http://127.0.0.1:9",
            "--models-dir",
            models.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "no built-in model pulled into {0}; pull one with `stacknet models pull <name> --models-dir {0}` \
             (the catalog: smollm2-135m-instruct, all-minilm-l6-v2, whisper-tiny-en, gemma-3-270m, \
             piper-en-us-joe-medium, pp-ocrv6-tiny, terrain-diffusion-128)",
            models.display()
        )),
        "{err}"
    );
}

#[test]
fn a_node_config_naming_a_model_not_pulled_says_how_to_pull_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "hub = \"http://127.0.0.1:9\"\ndata_dir = {:?}\n\n[[backend]]\nkind = \"embeddings\"\nmodel = \"all-minilm-l6-v2\"\n",
            dir.path().join("node")
        ),
    )
    .unwrap();
    let out = stacknet(&["node", "--config", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // The helper's STACKNET_DATA_DIR overrides the file's data_dir, as the environment does.
    let models = dir.path().join("data/models");
    assert!(
        err.contains(&format!(
            "model all-minilm-l6-v2 is not in {0} (run `stacknet models pull all-minilm-l6-v2 --models-dir {0}`)",
            models.display()
        )),
        "{err}"
    );
}

/// A hub and a node run apart, as an operator runs them; the node has no upstream and serves the
/// built-in models it finds pulled, which the official OpenAI SDK then uses for chat and embeddings.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built-in models (STACKNET_MODELS_DIR) and the OpenAI SDK (STACKNET_SDK_PYTHON); scripts/test.sh runs it"]
async fn a_node_with_no_upstream_serves_the_pulled_builtin_models_to_the_openai_sdk() {
    let models =
        PathBuf::from(std::env::var_os("STACKNET_MODELS_DIR").expect(
            "STACKNET_MODELS_DIR names a directory holding smollm2-135m-instruct and all-minilm-l6-v2",
        ));
    let python = std::env::var_os("STACKNET_SDK_PYTHON")
        .expect("STACKNET_SDK_PYTHON names a python with the openai package");
    for model in ["smollm2-135m-instruct", "all-minilm-l6-v2"] {
        assert!(
            models.join(model).is_dir(),
            "{model} is not in {} (stacknet models pull {model})",
            models.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // A private hub (no minimum bond): this test is about the node's built-in models.
    let (hub, url) = spawn_hub(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            "t0ken",
            "--min-worker-bond",
            "0",
        ],
        &dir.path().join("hub"),
    );
    let _hub = Killed(hub);
    let node = Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .args(["node", "--hub", &url])
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .arg("--models-dir")
        .arg(&models)
        .env("STACKNET_LOG", "warn")
        .env_remove("STACKNET_UPSTREAM")
        .env_remove("STACKNET_MODELS")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _node = Killed(node);

    let api_key = create_key(&url, dir.path());
    let base_url = format!("{url}/v1");
    wait_for_models(
        &base_url,
        &api_key,
        &["smollm2-135m-instruct", "all-minilm-l6-v2"],
    )
    .await;

    let sdk = |args: &[&str], model: &str| {
        let run = tokio::process::Command::new(&python)
            .args(args)
            .env("OPENAI_BASE_URL", &base_url)
            .env("OPENAI_API_KEY", &api_key)
            .env("MODEL", model)
            .output();
        async move {
            let out = run.await.unwrap();
            assert!(
                out.status.success(),
                "{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            serde_json::from_str::<Value>(text(&out.stdout).trim()).unwrap()
        }
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/openai_sdk_check.py");
    let chat = sdk(&[script], "smollm2-135m-instruct").await;
    assert!(chat["text"].as_str().unwrap().contains("Paris"), "{chat}");
    let embedded = sdk(&["-c", EMBEDDINGS_CHECK], "all-minilm-l6-v2").await;
    assert_eq!(embedded["dimensions"], 384, "{embedded}");
    assert!(
        embedded["fingerprint"].as_str().unwrap().starts_with("fp_"),
        "{embedded}"
    );
}

/// Embeddings through the SDK: two inputs, unit vectors, and a related pair closer than an unrelated one.
const EMBEDDINGS_CHECK: &str = r#"
import json, math, os
import openai
client = openai.OpenAI()
texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Quarterly revenue grew by 4%."]
resp = client.embeddings.create(model=os.environ["MODEL"], input=texts)
vectors = [d.embedding for d in resp.data]
assert len(vectors) == 3 and resp.usage.prompt_tokens > 0, resp
for v in vectors:
    assert abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]), "similar texts are not closer"
print(json.dumps({"dimensions": len(vectors[0]), "fingerprint": (resp.model_extra or {}).get("fingerprint", "")}))
"#;

/// A Stack and an API key, made with `stacknet admin` as an operator would.
fn create_key(hub: &str, dir: &Path) -> String {
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--hub", hub, "--admin-token", "t0ken"];
        all.extend_from_slice(args);
        let out = stacknet(&all, dir);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let stack = admin(&["create-stack", "node test"]);
    let key = admin(&["create-key", stack["id"].as_str().unwrap()]);
    key["api_key"].as_str().unwrap().to_owned()
}

/// Waits until the hub lists every one of `models` (the node has loaded them and connected).
async fn wait_for_models(base_url: &str, api_key: &str, models: &[&str]) {
    let started = Instant::now();
    let client = reqwest::Client::new();
    let mut listed = Value::Null;
    while started.elapsed() < CONNECT_DEADLINE {
        if let Ok(resp) = client
            .get(format!("{base_url}/models"))
            .bearer_auth(api_key)
            .send()
            .await
        {
            listed = resp.json().await.unwrap_or(Value::Null);
            let ids: Vec<&str> = listed["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["id"].as_str())
                .collect();
            if models.iter().all(|m| ids.contains(m)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node did not offer {models:?} within {CONNECT_DEADLINE:?}; the hub lists {listed}");
}

/// `stacknet node --metrics-listen` serves the node's Prometheus metrics over HTTP, and a node whose
/// stderr is not a terminal logs one JSON object a line (`--log-format auto`).
#[tokio::test(flavor = "multi_thread")]
async fn a_node_serves_its_metrics_and_logs_json_off_a_terminal() {
    use stacknet_testkit::mock_upstream::{MockUpstream, Script, MOCK_MODEL};
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start(Script::text("metrics")).await.unwrap();
    let (hub, url) = spawn_hub(&["--listen", "127.0.0.1:0"], &dir.path().join("hub"));
    let _hub = Killed(hub);
    let mut node = Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .args([
            "node",
            "--hub",
            &url,
            "--upstream",
            upstream.base_url(),
            "--model",
            MOCK_MODEL,
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("node"))
        .env("STACKNET_LOG", "info")
        .env_remove("STACKNET_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = node.stdout.take().unwrap();
    let stderr = node.stderr.take().unwrap();
    let _node = Killed(node);
    let mut lines = BufReader::new(stdout).lines();
    let said = lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let metrics = said
        .strip_prefix("node metrics on ")
        .unwrap_or_else(|| panic!("unexpected first line {said:?}"))
        .to_owned();

    // The first log line (`node starting`) is one JSON object with the event's fields at its top.
    let mut logs = BufReader::new(stderr).lines();
    let first = logs.next().unwrap().unwrap();
    std::thread::spawn(move || logs.for_each(drop));
    let line: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["message"], "node starting", "{line}");
    assert!(line["node_key"].is_string(), "{line}");

    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let resp = http.get(&metrics).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
        let body = resp.text().await.unwrap();
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(body.contains("# TYPE stacknet_node_connected gauge"), "{body}");
        if body.lines().any(|l| l == "stacknet_node_connected 1") {
            break;
        }
        assert!(start.elapsed() < CONNECT_DEADLINE, "never connected:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = http
        .get(metrics.replace("/metrics", "/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
