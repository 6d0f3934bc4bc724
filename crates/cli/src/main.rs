//! `stacknet`: one binary for every role. `main` parses arguments and dispatches; the work lives in
//! the libraries.

mod keystore;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stacknet_protocol::SecretKey;

#[derive(Parser)]
#[command(
    name = "stacknet",
    version = concat!(env!("CARGO_PKG_VERSION"), " (protocol v1)"),
    about = "Stacknet: serve AI on your GPU or model server and get paid, with cryptographic proof of who did what.",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage Node Keys (Ed25519): the identity your paperwork and earnings accrue to.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a new Node Key file (mode 0600). Never overwrites an existing file.
    New {
        /// Where to write the key [default: $STACKNET_DATA_DIR/node.key, i.e. ~/.local/share/stacknet/node.key]
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Print a key file's Node Key id and public key (never the secret).
    Show {
        /// The key file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Key(KeyCommand::New { out }) => {
            let path = out.unwrap_or_else(|| keystore::default_data_dir().join("node.key"));
            let key = SecretKey::generate();
            stacknet_protocol::keystore::write_new(&path, &key)?;
            let public = key.public_key();
            println!("created Node Key {}", public.node_key_id());
            println!("public key: {}", public.to_hex());
            println!(
                "key file:   {} (mode 0600; back it up, it holds your earnings)",
                path.display()
            );
        }
        Command::Key(KeyCommand::Show { file, json }) => {
            let (key, warning) = stacknet_protocol::keystore::read(&file)?;
            if let Some(w) = warning {
                eprintln!("warning: {w}");
            }
            let public = key.public_key();
            if json {
                let v = serde_json::json!({
                    "node_key": public.node_key_id().to_string(),
                    "public_key": public.to_hex(),
                });
                println!("{v}");
            } else {
                println!("node_key:   {}", public.node_key_id());
                println!("public_key: {}", public.to_hex());
            }
        }
    }
    Ok(())
}
