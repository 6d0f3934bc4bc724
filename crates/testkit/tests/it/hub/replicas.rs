//! Several hubs on one database are one network: one hub key, loaded from one file by every
//! replica; a hub with another key is refused at start, naming both.

use serde_json::Value;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::{TestHub, TestNetwork};

use super::client;
use super::money::{on_both_stores, Db};

on_both_stores!(a_database_keeps_its_hub_key_and_refuses_a_hub_with_another);

async fn hub_key(hub: &TestHub) -> String {
    let info: Value = client()
        .get(format!("{}/stacknet/v1/hub", hub.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    info["hub_key"].as_str().unwrap().to_owned()
}

async fn a_database_keeps_its_hub_key_and_refuses_a_hub_with_another(db: Db) {
    let net = TestNetwork::start_without_nodes(Script::echo(), |c| db.apply(c)).await;
    let first = &net.hub.hub.state.config;
    // A replica: its own data directory, the network's database and hub key file.
    let mut config = (**first).clone();
    config.data_dir = net.dir.path().join("replica");
    config.key_file = Some(first.data_dir.join("hub.key"));
    if matches!(db, Db::Sqlite) {
        config.database = Some(format!("sqlite://{}", first.data_dir.join("hub.db").display()));
    }
    let mut replica = TestHub::start(config.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(hub_key(&replica).await, hub_key(&net.hub).await);
    assert_eq!(
        replica.hub.state.hub_key.public_key(),
        net.hub.hub.state.hub_key.public_key()
    );
    replica.stop().await;

    // Its own key (made in its data directory): not this network's.
    config.key_file = None;
    let refused = stacknet_hub::Hub::open(config.clone()).await.unwrap_err();
    let (own, _) = stacknet_protocol::keystore::read(&config.data_dir.join("hub.key")).unwrap();
    let own = own.public_key();
    let message = refused.to_string();
    assert!(
        matches!(refused, stacknet_hub::HubError::OtherNetwork { .. }),
        "{message}"
    );
    assert!(
        message.contains(&net.hub.hub.state.hub_key.public_key().to_string()),
        "{message}"
    );
    assert!(message.contains(&own.to_string()), "{message}");
    assert!(message.contains("--hub-key-file"), "{message}");
}
