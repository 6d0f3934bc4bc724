//! `stacknet guardian`: probe the hub's nodes through the hub and hand in signed telemetry, which
//! the hub folds into its public reputation registry. The key must be bonded like a validator's
//! (`stacknet stake bond`), or the hub refuses its requests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use stacknet_node::guardian::{Guardian, GuardianOptions, Prompt};

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
    /// A probe of a model the node named ready that takes longer than this is a failed warm claim.
    #[arg(long, default_value = "10000")]
    pub warm_latency_ms: u64,
    /// The prompts, in turn: `echo` (repeat a random word), `arithmetic` (add two numbers).
    #[arg(long, value_delimiter = ',', default_value = "echo,arithmetic")]
    pub prompts: Vec<String>,
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
            other => bail!("unknown prompt kind {other:?}: use echo or arithmetic"),
        })
        .collect::<Result<Vec<_>>>()?;
    if prompts.is_empty() || args.probes_per_node == 0 || args.window_secs == 0 {
        bail!(
            "a guardian needs at least one prompt kind, one probe per node and a window of a second or more"
        );
    }
    let options = GuardianOptions {
        window: Duration::from_secs(args.window_secs),
        probes_per_node: args.probes_per_node,
        warm_latency: Duration::from_millis(args.warm_latency_ms),
        prompts,
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
