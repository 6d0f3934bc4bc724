//! `stacknet verify` checks an answer's content against its paperwork's `output_sha256` (#19): the
//! fingerprint alone does not cover the content.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stacknet_testkit::mock_upstream::{MockUpstream, Script};

use crate::text;
use crate::up::{chat, start_up, verify_with, Up};

/// The hub's root URL (`up` prints the OpenAI base URL, `.../v1`).
fn hub_url(up: &Up) -> String {
    up.base_url.trim_end_matches("/v1").to_owned()
}

/// The answer with one letter of its first non-empty text content changed.
fn alter_content(answer: &str) -> String {
    let marker = "\"content\":\"";
    let mut from = 0;
    while let Some(at) = answer[from..].find(marker) {
        let i = from + at + marker.len();
        let c = answer.as_bytes()[i];
        if c.is_ascii_alphabetic() {
            let other = if c == b'X' { "Y" } else { "X" };
            return format!("{}{other}{}", &answer[..i], &answer[i + 1..]);
        }
        from = i;
    }
    panic!("no text content in {answer}");
}

/// The paperwork id an answer (JSON or SSE) names.
fn paperwork_id(answer: &str) -> String {
    let marker = "\"paperwork\":\"";
    let at = answer.rfind(marker).expect("the answer names its paperwork") + marker.len();
    let rest = &answer[at..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn get(url: &str) -> String {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.text().await.unwrap()
}

/// Saves `url`'s answer in `dir/name` and returns its path.
async fn save(url: &str, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, get(url).await).unwrap();
    path
}

async fn hub_key(hub: &str) -> String {
    let info: Value =
        serde_json::from_str(&get(&format!("{hub}{}", stacknet_api::paths::HUB_INFO)).await).unwrap();
    info["hub_key"].as_str().unwrap().to_owned()
}

/// `stacknet up` in a temporary directory over a mock upstream, its hub's URL and key.
struct Network {
    _upstream: MockUpstream,
    dir: tempfile::TempDir,
    up: Up,
    hub: String,
    key: String,
}

impl Network {
    async fn start() -> Self {
        let upstream = MockUpstream::start(Script::text("The capital of France is Paris."))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let up = start_up(dir.path(), upstream.base_url());
        let hub = hub_url(&up);
        let key = hub_key(&hub).await;
        Self {
            _upstream: upstream,
            dir,
            up,
            hub,
            key,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_refuses_an_answer_whose_content_was_altered() {
    let Network {
        _upstream,
        dir,
        up,
        hub,
        key,
    } = Network::start().await;
    for stream in [false, true] {
        let answer = chat(&up, stream).await;
        let altered = alter_content(&answer);
        assert_ne!(altered, answer);

        // Without paperwork the fingerprint still verifies, and the verdict says the content was not checked.
        let unchecked = verify_with(dir.path(), &altered, &[]);
        assert_eq!(unchecked.status.code(), Some(0), "{}", text(&unchecked.stdout));
        assert!(
            text(&unchecked.stdout).contains("; content not checked: no paperwork given"),
            "{}",
            text(&unchecked.stdout)
        );

        // With the paperwork fetched from the hub, or given as a file: refused, naming the output digest.
        let id = paperwork_id(&answer);
        let pw = save(
            &format!("{hub}{}", stacknet_api::paths::paperwork(&id)),
            dir.path(),
            "pw.json",
        )
        .await;
        let pw = pw.to_str().unwrap();
        for args in [
            vec!["--hub", hub.as_str()],
            vec!["--hub", hub.as_str(), "--hub-key", key.as_str()],
            vec!["--paperwork", pw],
        ] {
            let bad = verify_with(dir.path(), &altered, &args);
            let said = text(&bad.stdout);
            assert_eq!(bad.status.code(), Some(1), "stream {stream}, {args:?}: {said}");
            assert!(
                said.starts_with("invalid: the content's output digest ")
                    && said.contains(&format!(
                        "of paperwork {id}: the content is not what the node produced"
                    )),
                "stream {stream}, {args:?}: {said}"
            );
        }
    }

    // An untouched answer with another answer's paperwork: refused too.
    let first = chat(&up, false).await;
    let second = chat(&up, false).await;
    let other = save(
        &format!("{hub}{}", stacknet_api::paths::paperwork(&paperwork_id(&first))),
        dir.path(),
        "other.json",
    )
    .await;
    let bad = verify_with(dir.path(), &second, &["--paperwork", other.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stdout).contains(&format!("but the answer names {}", paperwork_id(&second))),
        "{}",
        text(&bad.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_the_content_of_an_untouched_answer_streamed_and_not() {
    let Network {
        _upstream,
        dir,
        up,
        hub,
        key,
    } = Network::start().await;
    for stream in [false, true] {
        let answer = chat(&up, stream).await;
        let id = paperwork_id(&answer);

        // Fetched from the hub, against the pinned hub key: content and log inclusion checked.
        let ok = verify_with(
            dir.path(),
            &answer,
            &["--hub", hub.as_str(), "--hub-key", key.as_str()],
        );
        let said = text(&ok.stdout);
        assert_eq!(ok.status.code(), Some(0), "stream {stream}: {said}");
        assert!(said.starts_with("valid: fp_"), "{said}");
        assert!(
            said.contains("; content checked: output digest ")
                && said.contains(&format!("equals the output_sha256 of paperwork {id}")),
            "{said}"
        );
        assert!(
            said.contains("; in the hub's paperwork log at index ")
                && said.contains("signed by the hub key you gave"),
            "{said}"
        );
        assert!(!text(&ok.stderr).contains("warning"), "{}", text(&ok.stderr));

        // Without a pinned key the hub's own is used, and the user is told.
        let unpinned = verify_with(dir.path(), &answer, &["--hub", hub.as_str()]);
        assert_eq!(unpinned.status.code(), Some(0), "{}", text(&unpinned.stdout));
        assert!(
            text(&unpinned.stdout).contains("not pinned"),
            "{}",
            text(&unpinned.stdout)
        );
        assert!(
            text(&unpinned.stderr).starts_with(&format!("warning: hub key {key} is the one {hub} announced")),
            "{}",
            text(&unpinned.stderr)
        );

        // Offline: the paperwork, its inclusion proof and a checkpoint saved as files.
        let pw = save(
            &format!("{hub}{}", stacknet_api::paths::paperwork(&id)),
            dir.path(),
            "pw.json",
        )
        .await;
        let checkpoint = save(
            &format!("{hub}{}", stacknet_api::paths::LOG_CHECKPOINT),
            dir.path(),
            "cp.json",
        )
        .await;
        let size: Value = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
        let inclusion = save(
            &format!(
                "{hub}{}?paperwork={id}&tree_size={}",
                stacknet_api::paths::LOG_INCLUSION,
                size["size"]
            ),
            dir.path(),
            "proof.json",
        )
        .await;
        let args = [
            "--paperwork",
            pw.to_str().unwrap(),
            "--inclusion",
            inclusion.to_str().unwrap(),
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--hub-key",
            key.as_str(),
        ];
        let ok = verify_with(dir.path(), &answer, &args);
        let said = text(&ok.stdout);
        assert_eq!(ok.status.code(), Some(0), "stream {stream}: {said}");
        assert!(
            said.contains(&format!("equals the output_sha256 of paperwork {id}"))
                && said.contains("; in the hub's paperwork log at index "),
            "{said}"
        );

        // The paperwork alone: content checked, and the verdict says the log was not.
        let ok = verify_with(dir.path(), &answer, &["--paperwork", pw.to_str().unwrap()]);
        let said = text(&ok.stdout);
        assert_eq!(ok.status.code(), Some(0), "{said}");
        assert!(
            said.contains("content checked: output digest ")
                && said.contains("; log inclusion not checked: no --inclusion and --checkpoint given"),
            "{said}"
        );
    }
}

/// `stacknet ARGS` with the Stack's key of `up` in the environment.
fn stacknet(up: &Up, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .args(args)
        .env("OPENAI_API_KEY", &up.api_key)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_follow_checks_each_checkpoint_and_the_stack_commands_publish_a_skill() {
    let net = Network::start().await;
    let (up, hub, key) = (&net.up, net.hub.clone(), net.key.clone());
    chat(up, false).await;
    // A skill published with `stacknet stack` (up's key is its Stack's owner key), then listed.
    let out = stacknet(
        up,
        &[
            "stack",
            "--hub",
            &hub,
            "skill",
            "publish",
            "--name",
            "cli",
            "--instructions",
            "Be kind.",
            "--royalty-bps",
            "100",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let skill: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = skill["id"].as_str().unwrap();
    let out = stacknet(up, &["skills", "--hub", &hub]);
    assert!(
        out.status.success() && text(&out.stdout).contains(id),
        "{}",
        text(&out.stdout)
    );
    let out = stacknet(up, &["statement", "--hub", &hub, "--skill", id]);
    assert!(
        text(&out.stdout).contains(&format!("\"skill\": \"{id}\"")),
        "{}",
        text(&out.stdout)
    );

    // Two polls: the first checkpoint, then (after one more answer) one proven to extend it.
    let follow = {
        let (hub, key) = (hub.clone(), key.clone());
        let api_key = up.api_key.clone();
        std::thread::spawn(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_stacknet"))
                .args([
                    "verify",
                    "--follow",
                    &hub,
                    "--hub-key",
                    &key,
                    "--rounds",
                    "2",
                    "--interval-ms",
                    "3000",
                ])
                .env("OPENAI_API_KEY", api_key)
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    chat(up, false).await;
    let out = follow.join().unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said} {}", text(&out.stderr));
    assert!(said.starts_with("checkpoint: size 1, root "), "{said}");
    assert!(said.contains("consistent: size 1 -> 2, root "), "{said}");
    // A wrong hub key: every checkpoint is an alarm.
    let stranger = stacknet_protocol::SecretKey::generate().public_key().to_hex();
    let out = stacknet(
        up,
        &[
            "verify",
            "--follow",
            &hub,
            "--hub-key",
            &stranger,
            "--rounds",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("ALARM: a checkpoint that does not verify"),
        "{}",
        text(&out.stdout)
    );
}

/// A bytes answer (speech) saved as `curl -D headers -o body` would: `verify BODY --headers FILE`
/// checks its fingerprint and its content against the paperwork the headers name; one byte of the
/// audio changed is refused.
#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_a_saved_speech_answer_with_its_headers() {
    let Network {
        _upstream,
        dir,
        up,
        hub,
        key,
    } = Network::start().await;
    chat(&up, false).await; // waits until the node is connected
    let resp = reqwest::Client::new()
        .post(format!("{}/audio/speech", up.base_url))
        .bearer_auth(&up.api_key)
        .json(&serde_json::json!({"model": "mock-tts", "input": "Bonjour.", "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut headers = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in resp.headers() {
        // As curl writes them: the case the server sent, CRLF line ends.
        headers.push_str(&format!(
            "{}: {}\r\n",
            name.as_str().to_ascii_uppercase(),
            value.to_str().unwrap()
        ));
    }
    let audio = resp.bytes().await.unwrap().to_vec();
    let (body, saved) = (dir.path().join("speech.wav"), dir.path().join("headers.txt"));
    std::fs::write(&body, &audio).unwrap();
    std::fs::write(&saved, &headers).unwrap();
    let verify = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stacknet"))
            .arg("verify")
            .arg(file)
            .arg("--headers")
            .arg(&saved)
            .args(["--hub", hub.as_str(), "--hub-key", key.as_str()])
            .output()
            .unwrap()
    };
    let ok = verify(&body);
    let said = text(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{said}");
    assert!(
        said.starts_with("valid: fp_") && said.contains("; content checked: output digest "),
        "{said}"
    );

    let mut altered = audio.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let changed = dir.path().join("changed.wav");
    std::fs::write(&changed, &altered).unwrap();
    let bad = verify(&changed);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stdout));
    assert!(
        text(&bad.stdout).contains("the content is not what the node produced"),
        "{}",
        text(&bad.stdout)
    );
}
