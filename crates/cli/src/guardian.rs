//! `stacknet guardian`: probe the hub's nodes through the hub and hand in signed telemetry, which
//! the hub folds into its public reputation registry. The key must be bonded like a validator's
//! (`stacknet stake bond`), or the hub refuses its requests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use stacknet_node::guardian::{Guardian, GuardianOptions, Prompt};
use stacknet_node::models::ModelStore;
use stacknet_node::validator::load::load_models;

use crate::keystore::default_data_dir;

#[derive(Args, Debug, Clone)]
pub struct GuardianArgs {
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB")]
    pub hub: String,
    /// The guardian's key file [default: <data-dir>/guardian.key, created on first start].
    #[arg(long, env = "STACKNET_GUARDIAN_KEY")]
    pub key: Option<PathBuf>,
    /// Seconds between rounds of probes (one signed report per node per round).
    #[arg(long, default_value = "60")]
    pub window_secs: u64,
    /// Probes of each node per round.
    #[arg(long, default_value = "3")]
    pub probes_per_node: u32,
    /// A probe of a model the node named ready whose first token takes longer than this is a failed
    /// warm claim.
    #[arg(long, default_value = "10000")]
    pub warm_latency_ms: u64,
    /// The prompts, in turn: `echo` (repeat a random word), `arithmetic` (add two numbers), `exact`
    /// (a greedy question to a built-in model this guardian holds too, whose exact answer it
    /// computes itself; an echo for other models).
    #[arg(long, value_delimiter = ',', default_value = "echo,arithmetic,exact")]
    pub prompts: Vec<String>,
    /// A built-in model to compute exact answers with (repeatable) [default: every pulled chat model].
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Where the models are [default: where `stacknet models pull` puts them].
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// llama.cpp threads for the exact answers [default: every core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run one round, print the reports as JSON, and exit.
    #[arg(long)]
    pub once: bool,
}

pub async fn run(args: GuardianArgs) -> Result<()> {
    let key_path = args
        .key
        .unwrap_or_else(|| default_data_dir().join("guardian.key"));
    let (key, warning) = stacknet_protocol::keystore::load_or_create(&key_path)
        .with_context(|| format!("cannot load the key {}", key_path.display()))?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let prompts = args
        .prompts
        .iter()
        .map(|p| match p.as_str() {
            "echo" => Ok(Prompt::Echo),
            "arithmetic" => Ok(Prompt::Arithmetic),
            "exact" => Ok(Prompt::Exact),
            other => bail!("unknown prompt kind {other:?}: use echo, arithmetic or exact"),
        })
        .collect::<Result<Vec<_>>>()?;
    if prompts.is_empty() || args.probes_per_node == 0 || args.window_secs == 0 {
        bail!(
            "a guardian needs at least one prompt kind, one probe per node and a window of a second or more"
        );
    }
    let references = if prompts.contains(&Prompt::Exact) {
        let store = ModelStore::new(
            args.models_dir
                .unwrap_or_else(|| default_data_dir().join("models")),
        );
        let (names, threads) = (args.models.clone(), args.threads);
        tokio::task::spawn_blocking(move || load_models(&store, &names, threads))
            .await
            .context("loading the models")??
    } else {
        Vec::new()
    };
    if prompts.contains(&Prompt::Exact) && references.is_empty() {
        eprintln!("no built-in chat model is pulled (or named with --model): exact probes are echoes");
    }
    let options = GuardianOptions {
        window: Duration::from_secs(args.window_secs),
        probes_per_node: args.probes_per_node,
        warm_latency: Duration::from_millis(args.warm_latency_ms),
        prompts,
        references,
    };
    let id = key.public_key().node_key_id();
    let guardian = Guardian::connect(&args.hub, key, options).await?;
    eprintln!(
        "guardian {id} probing through {} as Stack {} (fund it to probe priced models)",
        args.hub,
        guardian.probes_stack()
    );
    if args.once {
        let reports: Vec<_> = guardian.window().await?.into_iter().map(|(r, _)| r).collect();
        return crate::print_json(&reports);
    }
    guardian.run(crate::serve::shutdown_signal()).await;
    Ok(())
}
