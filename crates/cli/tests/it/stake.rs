//! `stacknet stake`: the operator bonds, unbonds and withdraws the Node Key's stake at a real hub.

use serde_json::{json, Value};

use crate::{spawn_hub, stacknet, text};

/// Runs `stacknet stake` with the node's data directory and the hub; stdout as JSON on success.
fn stake(dir: &std::path::Path, url: &str, command: &[&str]) -> Result<Value, String> {
    let data = dir.join("node");
    let mut args = vec!["stake", "--data-dir", data.to_str().unwrap(), "--hub", url];
    args.extend_from_slice(command);
    let out = stacknet(&args, dir);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(text(&out.stderr))
    }
}

#[tokio::test]
async fn the_operator_bonds_unbonds_and_withdraws_with_the_node_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, url) = spawn_hub(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            "t0ken",
            "--min-worker-bond",
            "1000",
            "--unbonding-period-ms",
            "0",
        ],
        &dir.path().join("hub"),
    );
    let key = stacknet_protocol::SecretKey::generate();
    let data = dir.path().join("node");
    std::fs::create_dir_all(&data).unwrap();
    stacknet_protocol::keystore::write_new(&data.join("node.key"), &key).unwrap();
    let nk = key.public_key().node_key_id();

    let short = stake(dir.path(), &url, &["bond", "1000"]).unwrap_err();
    assert!(short.contains("Insufficient earnings"), "{short}");
    let resp = reqwest::Client::new()
        .post(format!("{url}/stacknet/v1/admin/nodes/{nk}/topup"))
        .bearer_auth("t0ken")
        .json(&json!({"amount": "1500", "reference": "bank-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let bonded = stake(dir.path(), &url, &["bond", "1000"]).unwrap();
    assert_eq!(bonded["bonded"], "1000", "{bonded}");
    assert_eq!(bonded["earnings"], "500", "{bonded}");
    assert_eq!(bonded["min_worker_bond"], "1000", "{bonded}");
    let unbonding = stake(dir.path(), &url, &["unbond", "400"]).unwrap();
    assert_eq!(unbonding["bonded"], "600", "{unbonding}");
    assert_eq!(unbonding["unbonding"][0]["amount"], "400", "{unbonding}");
    let withdrawn = stake(dir.path(), &url, &["withdraw"]).unwrap();
    assert_eq!(withdrawn["earnings"], "900", "{withdrawn}");
    assert_eq!(withdrawn["unbonding"], json!([]), "{withdrawn}");
    let status = stake(dir.path(), &url, &["status"]).unwrap();
    assert_eq!(status, withdrawn);
    let nothing = stake(dir.path(), &url, &["withdraw"]).unwrap_err();
    assert!(nothing.contains("nothing is unbonding"), "{nothing}");
    hub.kill().unwrap();
    hub.wait().unwrap();
}
