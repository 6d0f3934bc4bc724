//! `stacknet market`: the Node Key market. A key's owner lists or unlists it with the Node Key's
//! signature; a Stack buys one with an owner API key and a new key file, which operates the id from
//! then on (`stacknet node --key NEW_FILE`: the hub knows which id it operates).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use stacknet_protocol::{Amount, NodeKeyId, PublicKey, SecretKey, StackId};
use stacknet_sdk::Client;

use crate::keystore::{default_data_dir, read_node_key};
use crate::paperwork::connect;

#[derive(Args, Debug)]
pub struct MarketArgs {
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    #[command(subcommand)]
    pub command: MarketCommand,
}

/// The Node Key that signs (the seller's).
#[derive(Args, Debug, Clone)]
pub struct SellerKey {
    /// The node's data directory, which holds its key [default: ~/.local/share/stacknet/node]
    #[arg(long, env = "STACKNET_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Node Key file [default: <data-dir>/node.key]
    #[arg(long, env = "STACKNET_KEY")]
    pub key: Option<PathBuf>,
    /// Refuse a hub whose key is not this (64 hex).
    #[arg(long, env = "STACKNET_HUB_KEY")]
    pub hub_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum MarketCommand {
    /// The open listings, with the transfer fee.
    Listings,
    /// A Node Key id's status (listed, connected, transferred, active, cold), operating key and sales.
    Show { node: NodeKeyId },
    /// Offer the Node Key id your key operates for sale (signed with it).
    List {
        /// Micro-credits.
        #[arg(long)]
        price: Amount,
        /// The Stack (stk_...) the price, less the transfer fee, and the key's filed earnings are paid to.
        #[arg(long)]
        proceeds: StackId,
        /// The id, when your key operates one it bought (your key's own id otherwise).
        #[arg(long)]
        node: Option<NodeKeyId>,
        #[command(flatten)]
        seller: SellerKey,
    },
    /// Withdraw your listing.
    Unlist {
        #[command(flatten)]
        seller: SellerKey,
    },
    /// Buy a listed Node Key id for your Stack: a new key is written to --new-key (never over an
    /// existing file), and operates the id from now on.
    Buy {
        node: NodeKeyId,
        /// Where to write the new key (mode 0600).
        #[arg(long)]
        new_key: PathBuf,
        /// An owner API key of the buying Stack (sk_...).
        #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
        api_key: String,
    },
}

fn print(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn seller(hub: &str, s: &SellerKey) -> Result<(stacknet_node::settlement::HubClient, SecretKey)> {
    let data_dir = s
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir().join("node"));
    let key_path = s
        .key
        .clone()
        .unwrap_or_else(|| data_dir.join(stacknet_node::config::KEY_FILE_NAME));
    let key = read_node_key(&key_path)?;
    let hub_key = s
        .hub_key
        .as_deref()
        .map(PublicKey::from_hex)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--hub-key: {e}"))?;
    Ok((connect(hub, hub_key, None).await?, key))
}

pub async fn run(args: MarketArgs) -> Result<()> {
    match args.command {
        MarketCommand::Listings => print(&Client::new(&args.hub)?.listings().await?),
        MarketCommand::Show { node } => print(&Client::new(&args.hub)?.key_state(node).await?),
        MarketCommand::List {
            price,
            proceeds,
            node,
            seller: s,
        } => {
            let (hub, key) = seller(&args.hub, &s).await?;
            print(&hub.list(&key, node, price, proceeds).await?)
        }
        MarketCommand::Unlist { seller: s } => {
            let (hub, key) = seller(&args.hub, &s).await?;
            print(&hub.unlist(&key).await?)
        }
        MarketCommand::Buy {
            node,
            new_key,
            api_key,
        } => {
            let client = Client::new(&args.hub)?.with_api_key(api_key);
            let listing = client
                .key_state(node)
                .await?
                .listing
                .filter(|l| l.state == "open")
                .with_context(|| format!("{node} is not listed"))?;
            // Written first: a purchase whose key was lost would buy nothing usable.
            let key = SecretKey::generate();
            stacknet_protocol::keystore::write_new(&new_key, &key)
                .with_context(|| format!("cannot write the new key to {}", new_key.display()))?;
            let sale = client.buy_key(&listing, &key).await?;
            eprintln!(
                "bought {node}: run it with `stacknet node --key {}` (the hub knows the id it operates)",
                new_key.display()
            );
            print(&sale)
        }
    }
}
