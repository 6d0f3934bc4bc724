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

    // Prices and the treasury, through the same typed client.
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--hub", &url, "--admin-token", "t0ken"];
        all.extend_from_slice(args);
        let out = stacknet(&all, dir.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let set = admin(&["set-price", "m1", "--input-per-mtok", "7", "--per-request", "2"]);
    assert_eq!(set["price"]["input_per_mtok"], "7", "{set}");
    assert_eq!(set["price"]["output_per_mtok"], "0", "{set}");
    let prices = admin(&["prices"]);
    assert_eq!(prices["data"][0]["model"], "m1", "{prices}");
    assert!(prices["default"].is_object(), "{prices}");
    let treasury = admin(&["topup", "--treasury", "--amount", "9"]);
    assert_eq!(treasury["account"], "treasury", "{treasury}");
    assert_eq!(treasury["balance"]["posted"], "9", "{treasury}");

    // A Node Key's statement, signed with the key: empty for a new key.
    let key_file = dir.path().join("node.key");
    let made = stacknet(&["key", "new", "--out", key_file.to_str().unwrap()], dir.path());
    assert!(made.status.success(), "{}", text(&made.stderr));
    let node = stacknet(
        &[
            "paperwork",
            "--key",
            key_file.to_str().unwrap(),
            "--hub",
            &url,
            "statement",
        ],
        dir.path(),
    );
    assert!(node.status.success(), "{}", text(&node.stderr));
    let node: serde_json::Value = serde_json::from_slice(&node.stdout).unwrap();
    assert_eq!(node["balance"]["available"], "0", "{node}");
    assert_eq!(node["payouts"], serde_json::json!([]), "{node}");

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

#[test]
fn an_operator_revokes_a_key_and_the_hub_refuses_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, url) = spawn_hub(
        &["--listen", "127.0.0.1:0", "--admin-token", "t0ken"],
        &dir.path().join("hub"),
    );
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--hub", &url, "--admin-token", "t0ken"];
        all.extend_from_slice(args);
        stacknet(&all, dir.path())
    };
    let json = |out: &std::process::Output| {
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let stack = json(&admin(&["create-stack", "my app"]));
    let id = stack["id"].as_str().unwrap();
    let key = json(&admin(&["create-key", id]));
    let (api_key, prefix) = (key["api_key"].as_str().unwrap(), key["prefix"].as_str().unwrap());
    let statement =
        |dir: &std::path::Path| stacknet(&["statement", "--hub", &url, "--api-key", api_key], dir);
    assert!(statement(dir.path()).status.success());

    let revoked = json(&admin(&["revoke-key", prefix]));
    assert_eq!(revoked["prefix"], prefix, "{revoked}");
    assert_eq!(revoked["stack"], id, "{revoked}");
    let refused = statement(dir.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("401"), "{}", text(&refused.stderr));

    let again = admin(&["revoke-key", prefix]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("404"), "{}", text(&again.stderr));
    let _ = hub.kill();
    let _ = hub.wait();
}
