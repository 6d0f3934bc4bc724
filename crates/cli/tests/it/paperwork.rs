//! `stacknet paperwork`: what the operator sees of the wallet.

use stacknet_node::Wallet;
use stacknet_protocol::examples;

use crate::{stacknet, text};

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
