//! `stacknet stake bond | unbond | withdraw | status`: the Node Key's bond at a hub, each a request
//! signed with the key (`POST /stacknet/v1/stake`); every command prints where the stake stands.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use stacknet_protocol::filing::NodeAction;
use stacknet_protocol::{Amount, PublicKey};

use crate::keystore::{default_data_dir, read_node_key};
use crate::paperwork::connect;

#[derive(Args, Debug)]
pub struct StakeArgs {
    /// The node's data directory, which holds its key [default: ~/.local/share/stacknet/node]
    #[arg(long, env = "STACKNET_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Node Key file [default: <data-dir>/node.key]
    #[arg(long, env = "STACKNET_KEY")]
    pub key: Option<PathBuf>,
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// Refuse a hub whose key is not this (64 hex).
    #[arg(long, env = "STACKNET_HUB_KEY")]
    pub hub_key: Option<String>,
    #[command(subcommand)]
    pub command: StakeCommand,
}

#[derive(Subcommand, Debug)]
pub enum StakeCommand {
    /// Move micro-credits of the key's earnings to its stake.
    Bond { amount: Amount },
    /// Start unbonding micro-credits of the stake; they stay slashable for the unbonding period.
    Unbond { amount: Amount },
    /// Move every unbonding amount whose period has ended back to the key's earnings.
    Withdraw,
    /// Bonded, unbonding (and from when each can be withdrawn), earnings, slashes.
    Status,
}

pub async fn run(args: StakeArgs) -> Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| default_data_dir().join("node"));
    let key_path = args
        .key
        .unwrap_or_else(|| data_dir.join(stacknet_node::config::KEY_FILE_NAME));
    let key = read_node_key(&key_path)?;
    let hub_key = args
        .hub_key
        .as_deref()
        .map(PublicKey::from_hex)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--hub-key: {e}"))?;
    // No wallet to pin: a stake request is answered by the hub it names, which checks the key.
    let hub = connect(&args.hub, hub_key, None).await?;
    let action = match args.command {
        StakeCommand::Bond { amount } => NodeAction::Bond { amount },
        StakeCommand::Unbond { amount } => NodeAction::Unbond { amount },
        StakeCommand::Withdraw => NodeAction::Withdraw,
        StakeCommand::Status => NodeAction::Stake,
    };
    let status = hub.stake(&key, action).await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}
