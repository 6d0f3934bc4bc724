//! `stacknet`: one binary for every role. `main` parses arguments and dispatches; the work lives in
//! the libraries (protocol, hub, node).

mod admin;
mod guardian;
mod keystore;
mod market;
mod models;
mod nodes;
mod paperwork;
mod serve;
mod stack;
mod stake;
mod validator;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stacknet_protocol::{Amount, SecretKey, StackId};

#[derive(Parser)]
#[command(
    name = "stacknet",
    version = concat!(env!("CARGO_PKG_VERSION"), " (protocol v1)"),
    about = "Stacknet: serve AI on your GPU or model server and get paid, with cryptographic proof of who did what.",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object a line) for log
    /// collectors; `auto` is text on a terminal and JSON otherwise. `STACKNET_LOG` sets the level
    /// (`info` by default; `debug`, `stacknet_hub=debug,warn`...).
    #[arg(long, global = true, env = "STACKNET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole local network in one process: a hub and a node, on SQLite; prints OPENAI_BASE_URL/OPENAI_API_KEY.
    Up(serve::UpArgs),
    /// Run a hub: the OpenAI-compatible API, the node gateway, the paperwork store.
    Hub(serve::HubArgs),
    /// Run a node: connect to a hub and serve its tasks from your model server or the built-in models.
    Node(serve::NodeArgs),
    /// Manage Node Keys (Ed25519): the identity your paperwork and earnings accrue to.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Administer a hub: Stacks and API keys (needs the admin token).
    Admin(AdminArgs),
    /// The catalog of pinned real models: list, pull (verified, resumable), rm.
    Models(models::ModelsArgs),
    /// A Stack's balance and transfers (holds, captures, top-ups), read with one of its API keys.
    Statement {
        /// The hub's URL.
        #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
        hub: String,
        /// The Stack's API key (sk_...).
        #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
        api_key: String,
        /// One of the Stack's skills: the statement of its royalties account instead.
        #[arg(long)]
        skill: Option<stacknet_protocol::SkillId>,
    },
    /// Manage a Stack with an owner API key: injections, the skills it publishes, referral codes.
    Stack(stack::StackArgs),
    /// The Node Key market: list your key for sale, buy one for your Stack, see a key's state.
    Market(market::MarketArgs),
    /// The public skills registry: every published skill with its usage and earnings.
    Skills {
        /// The hub's URL.
        #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
        hub: String,
    },
    /// Your Node Key's paperwork and earnings: list the wallet, file with the hub, statement, redeem.
    Paperwork(paperwork::PaperworkArgs),
    /// Your Node Key's bond: bond earnings, unbond, withdraw after the unbonding period, status.
    Stake(stake::StakeArgs),
    /// Guard: probe the hub's nodes through it and hand in signed telemetry (bond first, like a validator).
    Guardian(guardian::GuardianArgs),
    /// The hub's nodes: reputation scores with their components and evidence, stake, warm models.
    Nodes(nodes::NodesArgs),
    /// Validate: re-check sampled tasks of other nodes with your own models, and attest (bond first).
    Validator(validator::ValidatorArgs),
    /// Check a response (its fingerprint, and its content against its paperwork), or a paperwork.
    Verify {
        /// A JSON response, an SSE transcript, or a paperwork; `-` or nothing for stdin. With
        /// --headers: the body of a bytes answer (speech audio, a transcription), as saved.
        file: Option<PathBuf>,
        /// For a bytes answer: its response headers, as `curl -D FILE` saves them (`name: value`
        /// lines), which carry its proof.
        #[arg(long, conflicts_with = "follow")]
        headers: Option<PathBuf>,
        /// Require paperwork contracts and checkpoints to be signed by this hub key (hex).
        #[arg(long)]
        hub_key: Option<String>,
        /// For a response: its paperwork (JSON from /stacknet/v1/paperwork/{id}), to check the content offline.
        #[arg(long, conflicts_with = "hub")]
        paperwork: Option<PathBuf>,
        /// For a response: fetch its paperwork, inclusion proof and checkpoint from this hub's URL.
        #[arg(long)]
        hub: Option<String>,
        /// For a paperwork: its inclusion proof (JSON from /stacknet/v1/log/proof/inclusion).
        #[arg(long, requires = "checkpoint")]
        inclusion: Option<PathBuf>,
        /// The signed checkpoint the proof is checked against (JSON from /stacknet/v1/log/checkpoint, or its note).
        #[arg(long, requires = "inclusion")]
        checkpoint: Option<PathBuf>,
        /// Run as a light node of this hub: follow its checkpoints, check each extends the last, and
        /// stop with an alarm on a split view (pin the hub with --hub-key).
        #[arg(long, conflicts_with_all = ["file", "paperwork", "hub", "inclusion"])]
        follow: Option<String>,
        /// With --follow: milliseconds between polls.
        #[arg(long, default_value = "5000", requires = "follow")]
        interval_ms: u64,
        /// With --follow: stop after this many polls (default: never).
        #[arg(long, requires = "follow")]
        rounds: Option<u64>,
    },
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

#[derive(clap::Args)]
struct AdminArgs {
    /// The hub's URL.
    #[arg(long, env = "STACKNET_HUB", default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// The admin token [default: <data-dir>/hub/admin.token on this machine]
    #[arg(long, env = "STACKNET_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a Stack (an app with its own API keys).
    CreateStack {
        name: String,
        /// The referral code (ref_...) of the Stack that brought this one: it earns a share of this one's top-ups.
        #[arg(long)]
        referral_code: Option<String>,
    },
    /// List Stacks.
    Stacks,
    /// Create an API key for a Stack; it is shown once.
    CreateKey {
        stack: StackId,
        /// `owner` manages the Stack (injections, skills, referral codes); `client` only makes requests.
        #[arg(long, default_value = "client")]
        role: stacknet_api::types::KeyRole,
    },
    /// Revoke an API key by its prefix (as create-key showed it); hubs refuse it within a second.
    RevokeKey { prefix: String },
    /// Credit a Stack's balance (or, with --treasury, the protocol treasury) in micro-credits.
    Topup {
        /// The Stack (stk_...); leave out with --treasury.
        stack: Option<StackId>,
        /// Micro-credits (1 credit = 1000000).
        #[arg(long)]
        amount: Amount,
        /// Idempotency id: the same id is credited once.
        #[arg(long)]
        id: Option<String>,
        /// Fund the protocol treasury, which pays warm-pool bonuses.
        #[arg(long, conflicts_with = "stack")]
        treasury: bool,
    },
    /// Set a model's price (micro-credits per million tokens, or per request).
    SetPrice {
        model: String,
        #[arg(long, default_value = "0")]
        input_per_mtok: Amount,
        #[arg(long, default_value = "0")]
        output_per_mtok: Amount,
        #[arg(long, default_value = "0")]
        per_request: Amount,
        #[arg(long, default_value = "0")]
        per_unit: Amount,
        /// The Stack credited as the model's provider in every contract for it.
        #[arg(long)]
        model_provider: Option<StackId>,
        /// The Stack credited as the provider of the model's data.
        #[arg(long)]
        data_provider: Option<StackId>,
    },
    /// List model prices.
    Prices,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACKNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // One object a line: time, level, target, the message and the event's fields at the top.
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => runtime()?.block_on(serve::up(args))?,
        Command::Hub(args) => runtime()?.block_on(serve::hub(args))?,
        Command::Node(args) => runtime()?.block_on(serve::node(args))?,
        Command::Key(cmd) => key(cmd)?,
        Command::Admin(args) => runtime()?.block_on(admin(args))?,
        Command::Statement { hub, api_key, skill } => {
            runtime()?.block_on(stack_statement(&hub, &api_key, skill))?
        }
        Command::Stack(args) => runtime()?.block_on(stack::run(args))?,
        Command::Market(args) => runtime()?.block_on(market::run(args))?,
        Command::Skills { hub } => runtime()?.block_on(stack::registry(&hub))?,
        Command::Paperwork(args) => runtime()?.block_on(paperwork::run(args))?,
        Command::Stake(args) => runtime()?.block_on(stake::run(args))?,
        Command::Validator(args) => runtime()?.block_on(validator::run(args))?,
        Command::Nodes(args) => runtime()?.block_on(nodes::run(args))?,
        Command::Guardian(args) => runtime()?.block_on(guardian::run(args))?,
        Command::Models(args) => runtime()?.block_on(models::run(args, keystore::default_data_dir()))?,
        Command::Verify {
            file,
            headers,
            hub_key,
            paperwork,
            hub,
            inclusion,
            checkpoint,
            follow,
            interval_ms,
            rounds,
        } => {
            if let Some(hub) = follow {
                let interval = std::time::Duration::from_millis(interval_ms);
                return match runtime()?.block_on(verify::follow(&hub, hub_key.as_deref(), interval, rounds)) {
                    Ok(()) => Ok(ExitCode::SUCCESS),
                    Err(e) => {
                        println!("{e:#}");
                        Ok(ExitCode::FAILURE)
                    }
                };
            }
            let options = verify::VerifyOptions {
                input: file,
                headers,
                hub_key,
                proof: verify::LogProof {
                    inclusion,
                    checkpoint,
                },
                paperwork,
                hub,
            };
            return match runtime()?.block_on(verify::verify(&options)) {
                Ok(verdict) => {
                    println!("{verdict}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("invalid: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            };
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::New { out } => {
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
        KeyCommand::Show { file, json } => {
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

async fn stack_statement(
    hub: &str,
    api_key: &str,
    skill: Option<stacknet_protocol::SkillId>,
) -> anyhow::Result<()> {
    let client = stacknet_sdk::Client::new(hub)?.with_api_key(api_key);
    let query = stacknet_api::types::StatementQuery {
        skill,
        ..Default::default()
    };
    print_json(&client.statement(&query).await?)
}

/// GETs `url` (with `bearer`, if any) and reads its JSON as `T`; a refusal is an error with the
/// hub's message.
async fn get_json<T: serde::de::DeserializeOwned>(url: &str, bearer: Option<&str>) -> anyhow::Result<T> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let resp = request
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {url}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("the hub answered {status} without JSON"))?;
    if !status.is_success() {
        anyhow::bail!(
            "the hub refused ({status}): {}",
            stacknet_api::types::ErrorBody::message_of(&v).unwrap_or_else(|| "unknown error".to_owned())
        );
    }
    serde_json::from_value(v).with_context(|| format!("the hub's answer from {url} is malformed"))
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let token = match args.admin_token {
        Some(t) => t,
        None => {
            let path = keystore::default_data_dir().join("hub/admin.token");
            std::fs::read_to_string(&path)
                .with_context(|| format!("no --admin-token given and cannot read {}", path.display()))?
                .trim()
                .to_owned()
        }
    };
    let client = admin::AdminClient::new(&args.hub, token);
    match args.command {
        AdminCommand::CreateStack { name, referral_code } => {
            print_json(&client.create_stack(&name, referral_code).await?)
        }
        AdminCommand::Stacks => print_json(&client.list_stacks().await?),
        AdminCommand::CreateKey { stack, role } => print_json(&client.create_key(stack, role).await?),
        AdminCommand::RevokeKey { prefix } => print_json(&client.revoke_key(&prefix).await?),
        AdminCommand::Topup {
            stack,
            amount,
            id,
            treasury,
        } => {
            if stack.is_none() && !treasury {
                anyhow::bail!("name a Stack (stk_...) or pass --treasury");
            }
            print_json(&client.topup(stack, amount, id).await?)
        }
        AdminCommand::SetPrice {
            model,
            input_per_mtok,
            output_per_mtok,
            per_request,
            per_unit,
            model_provider,
            data_provider,
        } => {
            let price = stacknet_api::types::SetPrice {
                model,
                input_per_mtok: Some(input_per_mtok),
                output_per_mtok: Some(output_per_mtok),
                per_request: Some(per_request),
                per_unit: Some(per_unit),
                model_provider,
                data_provider,
            };
            print_json(&client.set_price(&price).await?)
        }
        AdminCommand::Prices => print_json(&client.prices().await?),
    }
}
