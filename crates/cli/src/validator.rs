//! `stacknet validator`: check other nodes' tasks with your own copy of the models and attest.
//! Its key must be bonded as a validator first (`stacknet stake bond`), or the hub assigns it nothing.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use stacknet_node::models::ModelStore;
use stacknet_node::settlement::HubClient;
use stacknet_node::validator::load::{load_models, load_replayers};
use stacknet_node::validator::{Checker, SharedModel, Validator, ValidatorOptions};

use crate::keystore::default_data_dir;

#[derive(Args, Debug, Clone)]
pub struct ValidatorArgs {
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB")]
    pub hub: String,
    /// A built-in chat model to check tasks of (repeatable) [default: every pulled chat model].
    /// Tasks of a model this validator does not hold are answered INCONCLUSIVE. The built-in terrain
    /// model, when pulled, is always loaded to run image generations again.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Where the models are [default: where `stacknet models pull` puts them].
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// The validator's key file [default: <data-dir>/validator.key, created on first start].
    #[arg(long, env = "STACKNET_VALIDATOR_KEY")]
    pub key: Option<PathBuf>,
    /// llama.cpp threads per check [default: every core].
    #[arg(long)]
    pub threads: Option<usize>,
}

pub async fn run(args: ValidatorArgs) -> Result<()> {
    let key_path = args
        .key
        .unwrap_or_else(|| default_data_dir().join("validator.key"));
    let (key, warning) = stacknet_protocol::keystore::load_or_create(&key_path)
        .with_context(|| format!("cannot load the key {}", key_path.display()))?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let store = ModelStore::new(
        args.models_dir
            .unwrap_or_else(|| default_data_dir().join("models")),
    );
    let (names, threads) = (args.models.clone(), args.threads);
    let (models, media) = tokio::task::spawn_blocking(move || {
        let media = load_replayers(&store, threads)?;
        load_models(&store, &names, threads).map(|models| (models, media))
    })
    .await
    .context("loading the models")??;
    let models: Vec<SharedModel> = models.into_iter().map(|m| m as SharedModel).collect();
    let hub = HubClient::connect(&args.hub).await?;
    eprintln!(
        "validator {} checking for hub {} with {} chat model(s) and {} media model(s)",
        key.public_key().node_key_id(),
        hub.hub_key.to_hex(),
        models.len(),
        media.len()
    );
    let options = ValidatorOptions {
        // Beside the key: a restarted validator still reveals what it committed to.
        pending_file: Some(key_path.with_extension("pending.json")),
        ..ValidatorOptions::default()
    };
    let validator = Validator::new(key, hub, Checker { models, media }, options);
    validator.run(crate::serve::shutdown_signal()).await;
    Ok(())
}
