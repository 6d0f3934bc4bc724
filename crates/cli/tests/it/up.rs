//! `stacknet up` as a user runs it, and `stacknet verify` on what it answers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use stacknet_testkit::mock_upstream::{MockUpstream, Script};
use stacknet_testkit::{wait_until, WAIT_DEADLINE};

use crate::text;

/// How long `up` may take to load the built-in models (a debug build) before the test fails.
const MODEL_LOAD_DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct Up {
    child: Child,
    pub(crate) base_url: String,
    pub(crate) api_key: String,
    /// What `up` printed on stdout, up to and including its settings.
    printed: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stacknet up` on a free loopback port, its stdout piped.
fn spawn_up(data: &std::path::Path, upstream: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--model",
            "mock-model",
            // The mock also serves OpenAI's audio endpoints.
            "--speech-model",
            "mock-tts",
            "--transcription-model",
            "mock-stt",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("STACKNET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The API key `up` wrote to `<data>/up.env`, the only place it shows it.
fn api_key_in(data: &std::path::Path) -> String {
    let env = std::fs::read_to_string(data.join("up.env")).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix("OPENAI_API_KEY="))
        .expect("up.env holds the API key")
        .to_owned()
}

/// Reads `up`'s stdout through its settings (they end with a `#` comment line): the base URL, and
/// every line read.
fn read_settings(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> (String, Vec<String>) {
    let mut printed = Vec::new();
    let mut base_url = String::new();
    loop {
        let line = lines.next().expect("up prints its settings").unwrap();
        if let Some(v) = line.strip_prefix("OPENAI_BASE_URL=") {
            base_url = v.to_owned();
        }
        let done = line.starts_with('#') && !base_url.is_empty();
        printed.push(line);
        if done {
            return (base_url, printed);
        }
    }
}

/// `stacknet up` with no upstream, serving the built-in models from STACKNET_MODELS_DIR's cache
/// (which scripts/test.sh fills), with `extra` arguments. Its output after the settings is drained.
fn start_builtin_up(data: &std::path::Path, extra: &[&str]) -> Up {
    let models = std::env::var_os("STACKNET_MODELS_DIR").expect(
        "STACKNET_MODELS_DIR is not set: this test needs the models (scripts/test.sh pulls them and sets it)",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env("STACKNET_MODELS_DIR", models)
        .env("STACKNET_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (base_url, printed) = read_settings(&mut lines);
    std::thread::spawn(move || lines.for_each(drop));
    Up {
        child,
        base_url,
        api_key: api_key_in(data),
        printed,
    }
}

pub(crate) fn start_up(data: &std::path::Path, upstream: &str) -> Up {
    let mut child = spawn_up(data, upstream);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (base_url, printed) = read_settings(&mut lines);
    Up {
        child,
        base_url,
        // up.env is written before anything is printed.
        api_key: api_key_in(data),
        printed,
    }
}

pub(crate) async fn chat(up: &Up, stream: bool) -> String {
    let client = reqwest::Client::new();
    // The node connects just after the hub starts listening: retry the 503 of that first instant.
    let answered = || async {
        let resp = client
            .post(format!("{}/chat/completions", up.base_url))
            .bearer_auth(&up.api_key)
            .json(&serde_json::json!({
                "model": "mock-model", "stream": stream,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]
            }))
            .send()
            .await
            .unwrap();
        (resp.status() != 503 && resp.status() != 404).then_some(resp)
    };
    let resp = wait_until("the node is connected and answers", WAIT_DEADLINE, answered).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn verify(dir: &std::path::Path, input: &str) -> std::process::Output {
    verify_with(dir, input, &[])
}

/// `stacknet verify - ARGS` with `input` on stdin.
pub(crate) fn verify_with(dir: &std::path::Path, input: &str, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .args(["verify", "-"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_serves_chat_and_verify_checks_the_fingerprint_offline() {
    let upstream = MockUpstream::start(Script::text("The capital of France is Paris."))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path(), upstream.base_url());
    assert!(up.base_url.starts_with("http://127.0.0.1:") && up.base_url.ends_with("/v1"));
    assert!(up.api_key.starts_with("sk_"));
    let env = std::fs::read_to_string(dir.path().join("up.env")).unwrap();
    assert_eq!(
        env,
        format!("OPENAI_BASE_URL={}\nOPENAI_API_KEY={}\n", up.base_url, up.api_key)
    );

    let answer = chat(&up, false).await;
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );
    let ok = verify(dir.path(), &answer);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    let verdict = text(&ok.stdout);
    assert!(
        verdict.starts_with(&format!(
            "valid: {} signed by node nk_",
            v["fingerprint"].as_str().unwrap()
        )),
        "{verdict}"
    );

    // One byte changed anywhere in the attribution: refused, with the reason.
    let stack = v["attribution"]["stack"].as_str().unwrap();
    let (head, last) = stack.split_at(stack.len() - 1);
    let flipped = format!("{head}{}", if last == "0" { "1" } else { "0" });
    let tampered = answer.replace(stack, &flipped);
    let bad = verify(dir.path(), &tampered);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stdout).starts_with("invalid: stacknet/fingerprint/v1 signature does not verify with key "),
        "{}",
        text(&bad.stdout)
    );
    let other_fp = answer.replace(
        v["fingerprint"].as_str().unwrap(),
        "fp_00000000000000000000000000000000",
    );
    let bad = verify(dir.path(), &other_fp);
    assert!(
        text(&bad.stdout).starts_with("invalid: fingerprint id is fp_"),
        "{}",
        text(&bad.stdout)
    );

    // A streamed answer verifies from its SSE transcript.
    let stream = chat(&up, true).await;
    let ok = verify(dir.path(), &stream);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    let garbage = verify(dir.path(), "hello");
    assert_eq!(garbage.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn up_keeps_its_key_across_restarts() {
    let upstream = MockUpstream::start(Script::echo()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = start_up(dir.path(), upstream.base_url());
    let key = first.api_key.clone();
    drop(first);
    let second = start_up(dir.path(), upstream.base_url());
    assert_eq!(second.api_key, key);
    chat(&second, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn up_keeps_serving_when_nobody_reads_its_output() {
    let upstream = MockUpstream::start(Script::echo()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_up(dir.path(), upstream.base_url());
    drop(child.stdout.take()); // the reader goes away before `up` prints anything
    let env_file = dir.path().join("up.env");
    let written = || async {
        let env = std::fs::read_to_string(&env_file).unwrap_or_default();
        env.contains("OPENAI_API_KEY=").then_some(env)
    };
    let env = wait_until("up has written up.env", WAIT_DEADLINE, written).await;
    let field = |name: &str| env.lines().find_map(|l| l.strip_prefix(name)).unwrap().to_owned();
    let up = Up {
        child,
        base_url: field("OPENAI_BASE_URL="),
        api_key: field("OPENAI_API_KEY="),
        printed: Vec::new(),
    };
    chat(&up, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn up_prints_where_the_api_key_is_not_the_key() {
    let upstream = MockUpstream::start(Script::echo()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path(), upstream.base_url());
    assert!(up.api_key.starts_with("sk_"));
    let printed = up.printed.join("\n");
    assert!(!printed.contains(&up.api_key), "the key was printed: {printed}");
    assert!(!printed.contains("OPENAI_API_KEY="), "{printed}");
    let env_path = dir.path().join("up.env");
    assert!(
        printed.contains(&env_path.display().to_string()),
        "stdout says where the key is: {printed}"
    );
    chat(&up, false).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn secret_files_are_0600_even_when_they_existed_with_wider_modes() {
    use std::os::unix::fs::PermissionsExt;

    let upstream = MockUpstream::start(Script::echo()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (hub_dir, node_dir) = (dir.path().join("hub"), dir.path().join("node"));
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::create_dir_all(&node_dir).unwrap();
    // Left by an earlier version, an editor or a careless copy: readable by everyone. An empty file
    // is an empty SQLite database.
    let token = "11".repeat(32);
    let existing = [
        (hub_dir.join("admin.token"), format!("{token}\n")),
        (hub_dir.join("hub.db"), String::new()),
        (
            node_dir.join(stacknet_node::config::WALLET_FILE_NAME),
            String::new(),
        ),
        (dir.path().join("up.env.tmp"), "left over".to_owned()),
    ];
    for (path, text) in &existing {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let up = start_up(dir.path(), upstream.base_url());
    chat(&up, false).await;
    assert_eq!(
        std::fs::read_to_string(hub_dir.join("admin.token")).unwrap(),
        format!("{token}\n"),
        "the existing token is kept"
    );
    // Every file up keeps of the hub's and the node's (keys, token, databases and their WAL files)
    // and up.env: only the owner may read them.
    let mut files = vec![dir.path().join("up.env")];
    for sub in [&hub_dir, &node_dir] {
        for entry in std::fs::read_dir(sub).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    for name in ["admin.token", "hub.db", "hub.db-wal", "hub.key"] {
        assert!(files.contains(&hub_dir.join(name)), "{name} in {files:?}");
    }
    for path in &files {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    }
}

/// `stacknet up` with no upstream serves the built-in models (pulled from STACKNET_MODELS_DIR's cache,
/// which scripts/test.sh fills).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the models (STACKNET_MODELS_DIR); scripts/test.sh runs it"]
async fn up_serves_the_builtin_models_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_builtin_up(dir.path(), &[]);
    let client = reqwest::Client::new();
    let answered = || async {
        let resp = client
            .post(format!("{}/chat/completions", up.base_url))
            .bearer_auth(&up.api_key)
            .json(
                &serde_json::json!({"model": "smollm2-135m-instruct", "temperature": 0,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
            )
            .send()
            .await
            .unwrap();
        (resp.status() == 200).then_some(resp)
    };
    // Loading the models is part of starting up; the deadline bounds a hang, it is not a speed test.
    let answer: Value = wait_until("up serves the built-in chat model", MODEL_LOAD_DEADLINE, answered)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{answer}"
    );
    let embedded: Value = client
        .post(format!("{}/embeddings", up.base_url))
        .bearer_auth(&up.api_key)
        .json(&serde_json::json!({"model": "all-minilm-l6-v2", "input": ["The cat sits on the mat."]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        embedded["data"][0]["embedding"].as_array().unwrap().len(),
        384,
        "{embedded}"
    );
    assert!(embedded["fingerprint"].as_str().unwrap().starts_with("fp_"));

    // The round trip: `up`'s fallback voice speaks a sentence, its Whisper hears it back.
    let said = "Please open the window and let the fresh air in.";
    let spoken = client
        .post(format!("{}/audio/speech", up.base_url))
        .bearer_auth(&up.api_key)
        .json(&serde_json::json!({"model": "espeak-ng", "input": said, "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(spoken.status(), 200);
    let speech = spoken.bytes().await.unwrap();
    let mut form = b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-tiny-en\r\n\
        --b\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\ntext\r\n\
        --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n\r\n"
        .to_vec();
    form.extend_from_slice(&speech);
    form.extend_from_slice(b"\r\n--b--\r\n");
    let resp = client
        .post(format!("{}/audio/transcriptions", up.base_url))
        .bearer_auth(&up.api_key)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["stacknet-paperwork"]
        .to_str()
        .unwrap()
        .starts_with("pw_"));
    let heard = resp.text().await.unwrap();
    assert_eq!(heard.trim(), said, "{heard}");
}

/// The official OpenAI Python SDK, unmodified, against `stacknet up` (tests/openai_sdk_check.py).
/// `scripts/test.sh` provides the SDK and sets STACKNET_SDK_PYTHON; a bare `cargo test` ignores it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Python SDK (STACKNET_SDK_PYTHON); scripts/test.sh runs it"]
async fn the_official_openai_python_sdk_works_unmodified() {
    let python = std::env::var_os("STACKNET_SDK_PYTHON")
        .expect("STACKNET_SDK_PYTHON is not set: this test needs the OpenAI Python SDK (scripts/test.sh installs it and sets it)");
    let upstream = MockUpstream::start(Script::text("The capital of France is Paris."))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path(), upstream.base_url());
    chat(&up, false).await; // waits until the node is connected
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/openai_sdk_check.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", &up.base_url)
        .env("OPENAI_API_KEY", &up.api_key)
        .env("MODEL", "mock-model")
        .env("SPEECH_MODEL", "mock-tts")
        .env("TRANSCRIPTION_MODEL", "mock-stt")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("\"text\": \"The capital of France is Paris.\""));
    assert!(text(&out.stdout).contains("\"heard\": \"The quick brown fox jumps over the lazy dog.\""));
}

/// The official OpenAI Python SDK against `stacknet up`'s built-in speech and vision
/// (tests/openai_audio_check.py): the Piper voice and the fallback voice in every format they write,
/// Whisper hearing them back in every response format, the OCR model reading back text the script
/// renders, the terrain model's images, bad input refused with OpenAI's errors. `scripts/test.sh` provides the SDK (and Pillow),
/// the models and eSpeak NG.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Python SDK (STACKNET_SDK_PYTHON), the models (STACKNET_MODELS_DIR) and espeak-ng; scripts/test.sh runs it"]
async fn the_official_openai_python_sdk_speaks_transcribes_and_reads_with_the_builtin_models() {
    let python = std::env::var_os("STACKNET_SDK_PYTHON")
        .expect("STACKNET_SDK_PYTHON is not set: this test needs the OpenAI Python SDK (scripts/test.sh installs it and sets it)");
    let dir = tempfile::tempdir().unwrap();
    let up = start_builtin_up(dir.path(), &["--no-sandbox"]);
    let client = reqwest::Client::new();
    let models_listed = || async {
        let resp = client
            .get(format!("{}/models", up.base_url))
            .bearer_auth(&up.api_key)
            .send()
            .await
            .ok()?;
        let text = resp.text().await.ok()?;
        let all = [
            "espeak-ng",
            "whisper-tiny-en",
            "piper-en-us-joe-medium",
            "pp-ocrv6-tiny",
        ];
        all.iter().all(|m| text.contains(m)).then_some(())
    };
    wait_until(
        "up serves its voices, Whisper, OCR and images",
        MODEL_LOAD_DEADLINE,
        models_listed,
    )
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/openai_audio_check.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", &up.base_url)
        .env("OPENAI_API_KEY", &up.api_key)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("\"ok\": true"),
        "{}",
        text(&out.stdout)
    );
}

/// The official MCP Python SDK lists the network's tools at `stacknet up`'s `/mcp` and calls one: a
/// program runs in the sandbox of `up`'s node, and the tool result is the same answer as the HTTP
/// endpoint's, fingerprint and paperwork included; a refused fetch is a tool error with its reason.
/// A wrong key is refused before any tool. `scripts/test.sh` installs the SDK (and bubblewrap).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the MCP Python SDK (STACKNET_SDK_PYTHON) and bubblewrap; scripts/test.sh runs it"]
async fn the_official_mcp_python_sdk_calls_the_network_tools() {
    let python = std::env::var_os("STACKNET_SDK_PYTHON")
        .expect("STACKNET_SDK_PYTHON is not set: this test needs the MCP Python SDK (scripts/test.sh installs it and sets it)");
    let upstream = MockUpstream::start(Script::text("unused")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path(), upstream.base_url());
    chat(&up, false).await; // waits until the node is connected
    let mcp = format!("{}/mcp", up.base_url.trim_end_matches("/v1"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp_sdk_check.py");
    let calls = serde_json::json!([
        ["run_code", {"language": "python", "code": "print(6 * 7)"}],
        ["web_fetch", {"url": "http://169.254.169.254/latest/meta-data/"}]
    ])
    .to_string();
    let run = |key: String| {
        let (python, mcp, calls) = (python.clone(), mcp.clone(), calls.clone());
        async move {
            tokio::process::Command::new(python)
                .arg(script)
                .arg(mcp)
                .arg(key)
                .arg(calls)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(up.api_key.clone()).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let got: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        got["tools"],
        serde_json::json!(["run_code", "web_fetch", "web_search"])
    );
    let (result, refused) = (&got["calls"][0], &got["calls"][1]);
    assert_eq!(result["is_error"], false, "{got}");
    assert_eq!(result["structured"]["run"]["stdout"], "42\n", "{got}");
    assert!(
        result["structured"]["paperwork"]
            .as_str()
            .unwrap()
            .starts_with("pw_"),
        "{got}"
    );
    assert_eq!(refused["is_error"], true, "{got}");
    assert!(
        refused["structured"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("link-local"),
        "{got}"
    );
    let out = run("sk_not_a_key".to_owned()).await;
    assert!(
        !out.status.success(),
        "a wrong key is refused: {}",
        text(&out.stdout)
    );
}
