//! `stacknet nodes`: the hub's public registry of nodes, with each one's reputation and the
//! evidence it is computed from.

use std::fmt::Write as _;

use anyhow::Result;
use stacknet_api::paths;
use stacknet_api::types::{NodeList, NodeReport};
use stacknet_protocol::NodeKeyId;

use crate::{get_json, print_json};

#[derive(clap::Args)]
pub struct NodesArgs {
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// One node (nk_...): its record with every evidence row its score is computed from.
    node: Option<NodeKeyId>,
    /// Print the hub's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: NodesArgs) -> Result<()> {
    let base = args.hub.trim_end_matches('/');
    match args.node {
        Some(id) => {
            let report: NodeReport = get_json(&format!("{base}{}", paths::node(&id)), None).await?;
            if args.json {
                return print_json(&report);
            }
            print!("{}", table(std::slice::from_ref(&report)));
            println!(
                "\nevidence (day, kind, count, sum_ms), as of day {}:",
                report.components.as_of_day
            );
            for e in &report.evidence {
                println!("  {:>6}  {:<20}{:>8}{:>12}", e.day, e.kind, e.count, e.sum_ms);
            }
            Ok(())
        }
        None => {
            let list: NodeList = get_json(&format!("{base}{}", paths::NODES), None).await?;
            if args.json {
                return print_json(&list);
            }
            print!("{}", table(&list.data));
            Ok(())
        }
    }
}

/// One line per node: score and its parts, state, stake, ready models, evidence counts.
fn table(nodes: &[NodeReport]) -> String {
    let mut out = format!(
        "{:<36}{:>7}{:>9}{:>9}{:>10}  {:<12}{:>14}  {:<20} {}\n",
        "NODE", "SCORE", "QUALITY", "LATENCY", "TTFT_MS", "STATE", "BONDED", "READY", "EVIDENCE"
    );
    for n in nodes {
        let state = if n.suspended {
            "suspended"
        } else if !n.connected {
            "offline"
        } else if n.below_floor {
            "below-floor"
        } else {
            "serving"
        };
        let ttft = n
            .components
            .ttft_ms
            .map_or_else(|| "-".to_owned(), |t| format!("{t:.0}"));
        let counts: Vec<String> = n.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let ready = if n.ready.is_empty() {
            "-".to_owned()
        } else {
            n.ready.join(",")
        };
        let _ = writeln!(
            out,
            "{:<36}{:>7.3}{:>9.3}{:>9.3}{:>10}  {:<12}{:>14}  {:<20} {}",
            n.node_key.to_string(),
            n.score,
            n.components.quality,
            n.components.latency,
            ttft,
            state,
            n.bonded.to_string(),
            ready,
            counts.join(" ")
        );
    }
    out
}
