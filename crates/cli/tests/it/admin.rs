//! `stacknet hub` and `stacknet admin` as an operator runs them.

use crate::{spawn_hub, stacknet, text};

#[test]
fn an_operator_starts_a_hub_and_creates_a_stack_and_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, url) = spawn_hub(
        &["--listen", "127.0.0.1:0", "--admin-token", "t0ken"],
        &dir.path().join("hub"),
    );

    let created = stacknet(
        &[
            "admin",
            "--hub",
            &url,
            "--admin-token",
            "t0ken",
            "create-stack",
            "my app",
        ],
        dir.path(),
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let stack: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(stack["name"], "my app");
    let id = stack["id"].as_str().unwrap();

    let key = stacknet(
        &["admin", "--hub", &url, "--admin-token", "t0ken", "create-key", id],
        dir.path(),
    );
    let key: serde_json::Value = serde_json::from_slice(&key.stdout).unwrap();
    assert!(key["api_key"].as_str().unwrap().starts_with("sk_"));

    // Money: a top-up (idempotent by id) and the Stack's statement, read with its API key.
    let topup = [
        "admin",
        "--hub",
        &url,
        "--admin-token",
        "t0ken",
        "topup",
        id,
        "--amount",
        "5000",
        "--id",
        "inv-1",
    ];
    for _ in 0..2 {
        let out = stacknet(&topup, dir.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let api_key = key["api_key"].as_str().unwrap();
    let statement = stacknet(&["statement", "--hub", &url, "--api-key", api_key], dir.path());
    assert!(statement.status.success(), "{}", text(&statement.stderr));
    let statement: serde_json::Value = serde_json::from_slice(&statement.stdout).unwrap();
    assert_eq!(statement["balance"]["available"], "5000", "{statement}");
    assert_eq!(statement["transfers"].as_array().unwrap().len(), 1);
    let refused = stacknet(&["statement", "--hub", &url, "--api-key", "sk_wrong"], dir.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("401"), "{}", text(&refused.stderr));

    let listed = stacknet(
        &["admin", "--hub", &url, "--admin-token", "t0ken", "stacks"],
        dir.path(),
    );
    assert!(text(&listed.stdout).contains(id));

    let denied = stacknet(
        &["admin", "--hub", &url, "--admin-token", "wrong", "stacks"],
        dir.path(),
    );
    assert_eq!(denied.status.code(), Some(1));
    assert_eq!(
        text(&denied.stderr).trim(),
        "error: the hub refused (401 Unauthorized): Invalid admin token."
    );
    let _ = hub.kill();
    let _ = hub.wait();
}
