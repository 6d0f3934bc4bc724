//! `stacknet paperwork`: what the operator sees of the wallet.

use stacknet_node::Wallet;
use stacknet_protocol::examples;

use crate::{spawn_hub, stacknet, text};

/// Defect #17 (the wallet's side): paperwork the hub refused for good shows as refused, with the
/// hub's reason, and is no longer listed as still to be filed.
#[tokio::test]
async fn paperwork_list_shows_refused_paperwork_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let pw = examples::paperwork().unwrap();
    {
        let wallet = Wallet::open(stacknet_node::config::wallet_path(&data)).unwrap();
        let id = wallet.store(&pw).await.unwrap();
        wallet
            .mark_refused(&[(id, "not in the paperwork log: this hub never accepted it".into())])
            .await
            .unwrap();
    }
    let data = data.to_str().unwrap();
    let out = stacknet(&["paperwork", "--data-dir", data, "list"], dir.path());
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{listed}{}", text(&out.stderr));
    assert!(
        listed.contains("refused: not in the paperwork log: this hub never accepted it"),
        "{listed}"
    );
    let out = stacknet(
        &["paperwork", "--data-dir", data, "list", "--unfiled"],
        dir.path(),
    );
    assert_eq!(text(&out.stdout), "", "refused paperwork is not due");
    let out = stacknet(&["paperwork", "--data-dir", data, "list", "--json"], dir.path());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        line["refused"],
        "not in the paperwork log: this hub never accepted it"
    );
}

/// Defect #14: `stacknet paperwork file` files only with the pinned hub key (`--hub-key`, the node
/// config's, or the wallet's pin from its first filing): a hub with another key gets nothing, and
/// the wallet keeps its paperwork due.
#[tokio::test]
async fn paperwork_is_filed_only_with_the_pinned_hub() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, url) = spawn_hub(
        &["--listen", "127.0.0.1:0", "--admin-token", "t0ken"],
        &dir.path().join("hub"),
    );
    let data = dir.path().join("node");
    let key = data.join("node.key");
    std::fs::create_dir_all(&data).unwrap();
    stacknet_protocol::keystore::write_new(&key, &examples::node_key()).unwrap();
    let elsewhere = stacknet_protocol::SecretKey::generate().public_key();
    {
        let wallet = Wallet::open(stacknet_node::config::wallet_path(&data)).unwrap();
        wallet.store(&examples::paperwork().unwrap()).await.unwrap();
    }
    let file = |extra: &[&str]| {
        let mut args = vec!["paperwork", "--data-dir", data.to_str().unwrap(), "--hub", &url];
        args.extend_from_slice(extra);
        args.push("file");
        stacknet(&args, dir.path())
    };
    let given = file(&["--hub-key", &elsewhere.to_hex()]);
    assert!(!given.status.success());
    assert!(
        text(&given.stderr).contains("--hub-key"),
        "{}",
        text(&given.stderr)
    );
    // That flag pinned the wallet to `elsewhere`: this hub is refused from now on, flag or not.
    let pinned = file(&[]);
    assert!(!pinned.status.success());
    assert!(
        text(&pinned.stderr).contains("pinned to hub key"),
        "{}",
        text(&pinned.stderr)
    );
    let due = stacknet(
        &[
            "paperwork",
            "--data-dir",
            data.to_str().unwrap(),
            "list",
            "--unfiled",
        ],
        dir.path(),
    );
    assert_eq!(text(&due.stdout).lines().count(), 1, "still due");
    hub.kill().unwrap();
    hub.wait().unwrap();
}
