//! `cheat-node`: a worker node whose backend cheats (a test fixture; the real `stacknet node` has no
//! such switch). It serves the built-in SmolLM2 through [`CheatBackend`] and lies as `--cheat` says,
//! so a hub's validators can be watched catching it.
//!
//! ```text
//! cargo run -p stacknet-testkit --bin cheat-node -- --hub http://127.0.0.1:8080 --cheat truncate-eos \
//!     [--models-dir DIR] [--model smollm2-135m-instruct] [--data-dir DIR] [--threads N]
//! ```
//!
//! `--cheat honest` runs the same backend without lying. The node's key is `<data-dir>/node.key`
//! (created on first start), so `stacknet stake --data-dir DIR bond ...` bonds it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use stacknet_node::{Node, NodeOptions, Wallet};
use stacknet_testkit::cheats::{self, Cheat, CheatBackend};

const USAGE: &str = "usage: cheat-node --hub URL --cheat NAME|honest [--models-dir DIR] [--model NAME] [--data-dir DIR] [--threads N]
cheats: wrong-sha, other-model, truncate-stop, truncate-eos, short-length, fabricate, splice, inflate-usage, hash-mismatch";

#[derive(Debug)]
struct Args {
    hub: String,
    cheat: Option<Cheat>,
    models_dir: PathBuf,
    model: String,
    data_dir: PathBuf,
    threads: Option<usize>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args> {
    let (mut hub, mut cheat, mut threads) = (None, None, None);
    let mut models_dir = std::env::var_os("STACKNET_MODELS_DIR").map(PathBuf::from);
    let mut model = "smollm2-135m-instruct".to_owned();
    let mut data_dir = PathBuf::from("cheat-node");
    while let Some(flag) = argv.next() {
        let mut value = || {
            argv.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--hub" => hub = Some(value()?),
            "--cheat" => {
                let name = value()?;
                cheat = Some(if name == "honest" {
                    None
                } else {
                    Some(name.parse::<Cheat>()?)
                });
            }
            "--models-dir" => models_dir = Some(value()?.into()),
            "--model" => model = value()?,
            "--data-dir" => data_dir = value()?.into(),
            "--threads" => threads = Some(value()?.parse().context("--threads")?),
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        hub: hub.with_context(|| format!("--hub is required\n{USAGE}"))?,
        cheat: cheat.with_context(|| format!("--cheat is required\n{USAGE}"))?,
        models_dir: models_dir
            .with_context(|| format!("--models-dir (or STACKNET_MODELS_DIR) is required\n{USAGE}"))?,
        model,
        data_dir,
        threads,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse(std::env::args().skip(1))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let key_path = args.data_dir.join(stacknet_node::config::KEY_FILE_NAME);
    let (key, warning) = stacknet_protocol::keystore::load_or_create(&key_path)
        .with_context(|| format!("cannot load the key {}", key_path.display()))?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let (dir, name, threads) = (args.models_dir.clone(), args.model.clone(), args.threads);
    let model = tokio::task::spawn_blocking(move || cheats::load_model(&dir, &name, threads))
        .await
        .context("loading the model")??;
    let backend = CheatBackend {
        model: Arc::new(model),
        name: args.model.clone(),
        cheat: args.cheat,
        other_sha: cheats::other_sha(),
    };
    let wallet = Wallet::open(args.data_dir.join(stacknet_node::config::WALLET_FILE_NAME))?;
    let node = Node::new(key, wallet, Arc::new(backend), NodeOptions::new(&args.hub))?;
    eprintln!(
        "cheat-node {} serving {} at {} as {}",
        node.node_key_id(),
        args.model,
        args.hub,
        args.cheat.map_or("honest", Cheat::name)
    );
    node.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
