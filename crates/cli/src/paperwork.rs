//! `stacknet paperwork list | file | statement | redeem`: the operator's view of what the Node Key
//! did and earned, and getting paid for it. The work is in `stacknet_node::settlement`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use stacknet_node::settlement::{file_wallet, HubClient};
use stacknet_node::Wallet;
use stacknet_protocol::{Amount, PublicKey};

use crate::keystore::{default_data_dir, read_node_key};

#[derive(Args, Debug)]
pub struct PaperworkArgs {
    /// The node's data directory (wallet and key) [default: ~/.local/share/stacknet/node]
    #[arg(long, env = "STACKNET_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Node Key file [default: <data-dir>/node.key]
    #[arg(long, env = "STACKNET_KEY")]
    pub key: Option<PathBuf>,
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// The hub key (64 hex) to file with [default: the node config's `hub_key`]; without one the
    /// wallet files only with the hub key it pinned at its first filing.
    #[arg(long, env = "STACKNET_HUB_KEY")]
    pub hub_key: Option<String>,
    /// The node's TOML config, for its `hub_key` and `data_dir`.
    #[arg(long, env = "STACKNET_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: PaperworkCommand,
}

#[derive(Subcommand, Debug)]
pub enum PaperworkCommand {
    /// The wallet's paperwork: id, model, usage, cost, filed, unfiled or refused (with why).
    List {
        /// Only what is still to be filed.
        #[arg(long)]
        unfiled: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// File every unfiled paperwork with the hub, signed with the Node Key; paperwork still in its
    /// challenge window is refused and stays unfiled for the next run, paperwork the hub refuses for
    /// good is not filed again (`list` shows why).
    File,
    /// The Node Key's earnings, transfers and payouts, from the hub.
    Statement,
    /// Send earnings to your payment account through the hub's payout rail.
    Redeem {
        /// Micro-credits to redeem [default: everything available].
        #[arg(long)]
        amount: Option<String>,
        /// Your account at the payment provider.
        #[arg(long)]
        destination: String,
    },
}

pub async fn run(args: PaperworkArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let config = stacknet_node::config::NodeConfig::from_toml(&text)
                .with_context(|| format!("{} is not a valid node config", path.display()))?;
            Some(config)
        }
        None => None,
    };
    let data_dir = args
        .data_dir
        .or_else(|| config.as_ref().map(|c| c.data_dir.clone()))
        .unwrap_or_else(|| default_data_dir().join("node"));
    let key_path = args
        .key
        .unwrap_or_else(|| data_dir.join(stacknet_node::config::KEY_FILE_NAME));
    let load_key = || read_node_key(&key_path);
    let open_wallet = || -> Result<Wallet> {
        let path = stacknet_node::config::wallet_path(&data_dir);
        anyhow::ensure!(path.exists(), "no wallet at {}", path.display());
        Ok(Wallet::open(&path)?)
    };
    let hub_key = args
        .hub_key
        .as_deref()
        .map(PublicKey::from_hex)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--hub-key: {e}"))?
        .or_else(|| config.and_then(|c| c.hub_key));
    match args.command {
        PaperworkCommand::List { unfiled, json } => {
            let wallet = open_wallet()?;
            for e in wallet.entries().await? {
                if unfiled && !e.is_due() {
                    continue;
                }
                let pw = &e.paperwork.body;
                let c = &pw.contract.body;
                let cost = c.price.cost(&pw.usage, c.max_cost).unwrap_or(Amount::ZERO);
                let id = e.paperwork.id()?;
                if json {
                    let line = json!({
                        "paperwork": id, "contract": c.id, "model": c.model, "finished_at": pw.finished_at,
                        "input_tokens": pw.usage.input_tokens, "output_tokens": pw.usage.output_tokens,
                        "cost": cost, "warm": pw.resources.warm, "filed": e.filed,
                        "refused": e.refused,
                    });
                    println!("{line}");
                } else {
                    let state = match (&e.refused, e.filed) {
                        (_, true) => "filed".to_owned(),
                        (Some(why), false) => format!("refused: {why}"),
                        (None, false) => "unfiled".to_owned(),
                    };
                    println!(
                        "{id}  {}  {}  in {} out {}  cost {cost}  {state}",
                        pw.finished_at, c.model, pw.usage.input_tokens, pw.usage.output_tokens,
                    );
                }
            }
        }
        PaperworkCommand::File => {
            let key = load_key()?;
            let wallet = open_wallet()?;
            let hub = connect(&args.hub, hub_key, Some(&wallet)).await?;
            let verdicts = file_wallet(&hub, &key, &wallet).await?;
            let (mut settled, mut total, mut before, mut refused) = (0, 0i64, 0, 0);
            for v in &verdicts {
                match v.status() {
                    "settled" => {
                        settled += 1;
                        total += v.amount().map_or(0, |a| a.micros());
                    }
                    "already_filed" => before += 1,
                    _ => {
                        refused += 1;
                        let when = if v.verdict.is_final_refusal() {
                            "for good"
                        } else {
                            "for now"
                        };
                        println!(
                            "refused {} {when}: {}",
                            v.paperwork,
                            v.reason().unwrap_or("no reason given")
                        );
                    }
                }
            }
            println!(
                "filed {} paperwork: {settled} settled ({} micro-credits shared out), {before} filed before, {refused} refused",
                verdicts.len(),
                Amount::from_micros(total)
            );
        }
        PaperworkCommand::Statement => {
            let key = load_key()?;
            let hub = connect(&args.hub, hub_key, open_wallet().ok().as_ref()).await?;
            println!("{}", serde_json::to_string_pretty(&hub.statement(&key).await?)?);
        }
        PaperworkCommand::Redeem { amount, destination } => {
            let key = load_key()?;
            let amount = amount
                .map(|a| a.parse::<Amount>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--amount: {e}"))?;
            let hub = connect(&args.hub, hub_key, open_wallet().ok().as_ref()).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&hub.redeem(&key, amount, &destination).await?)?
            );
        }
    }
    Ok(())
}

/// The hub at `url`, if its key is the one given (`--hub-key`) and the one the wallet pinned (at
/// its first filing; pinned now where none is): earnings are filed with, and asked of, one hub only.
pub(crate) async fn connect(
    url: &str,
    hub_key: Option<PublicKey>,
    wallet: Option<&Wallet>,
) -> Result<HubClient> {
    if let (Some(key), Some(wallet)) = (&hub_key, wallet) {
        wallet.pin_hub_key(key).await?;
    }
    let hub = HubClient::connect(url).await?;
    if let Some(key) = hub_key {
        anyhow::ensure!(
            hub.hub_key == key,
            "the hub at {url} has key {}, not the --hub-key {}",
            hub.hub_key.to_hex(),
            key.to_hex()
        );
    }
    if let Some(wallet) = wallet {
        wallet.pin_hub_key(&hub.hub_key).await?;
    }
    Ok(hub)
}
