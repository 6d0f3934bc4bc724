//! The registry of connected nodes: what it remembers of nodes that left.

use std::sync::Arc;
use std::time::Duration;

use stacknet_hub::nodes::{NodeHandle, Nodes, PickError, MAX_REMEMBERED_MODELS};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::wire::{Limits, ModelOffer};
use stacknet_protocol::{PublicKey, SecretKey};

fn node(key: PublicKey, conn_id: u64, models: impl IntoIterator<Item = String>) -> Arc<NodeHandle> {
    let offers = models
        .into_iter()
        .map(|name| ModelOffer {
            name,
            workloads: vec![Workload::Chat],
            backend: "upstream".into(),
            model_sha256: None,
            tool: None,
        })
        .collect();
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_file_bytes: 0,
    };
    let (outbox, _) = tokio::sync::mpsc::channel(1);
    Arc::new(NodeHandle::new(key, offers, 1, limits, conn_id, outbox))
}

fn ask(nodes: &Arc<Nodes>, model: &str) -> Result<(), PickError> {
    let need = stacknet_hub::nodes::Need {
        model,
        workload: Workload::Chat,
        file_bytes: 0,
        frame_bytes: 0,
    };
    nodes.pick(&need, None).map(drop)
}

/// Defect #11: every hello may name 256 models, and the hub remembered every name ever offered.
/// One key reconnecting with new names each time must not grow the hub's memory without bound, and
/// the names of nodes gone (or changed) are forgotten once the model memory has passed.
#[test]
fn model_names_of_nodes_gone_or_changed_are_pruned() {
    let nodes = Arc::new(Nodes::default());
    let key = SecretKey::generate().public_key();
    let rounds = MAX_REMEMBERED_MODELS / 256 + 4;
    for round in 0..rounds {
        let names = (0..256).map(|i| format!("m-{round}-{i}"));
        nodes.register(node(key, round as u64 + 1, names));
    }
    assert!(nodes.remembered_models() <= MAX_REMEMBERED_MODELS);
    assert_eq!(
        ask(&nodes, "m-0-0"),
        Err(PickError::UnknownModel),
        "the oldest names are forgotten"
    );
    let last = rounds - 2;
    assert_eq!(
        ask(&nodes, &format!("m-{last}-0")),
        Err(PickError::NoCapacity),
        "recent ones are not"
    );
    assert!(
        ask(&nodes, &format!("m-{}-0", rounds - 1)).is_ok(),
        "the connected node serves its own"
    );

    // With no memory, a model is known exactly while a connected node offers it.
    let nodes = Arc::new(Nodes::with_model_memory(Duration::ZERO));
    nodes.register(node(key, 1, ["old".to_owned(), "kept".to_owned()]));
    nodes.register(node(key, 2, ["kept".to_owned(), "new".to_owned()]));
    assert_eq!(
        ask(&nodes, "old"),
        Err(PickError::UnknownModel),
        "a changed node's dropped name"
    );
    assert!(ask(&nodes, "kept").is_ok());
    nodes.unregister(&key.node_key_id(), 2);
    assert_eq!(
        ask(&nodes, "new"),
        Err(PickError::UnknownModel),
        "a gone node's names"
    );
    assert_eq!(nodes.remembered_models(), 0);
}
