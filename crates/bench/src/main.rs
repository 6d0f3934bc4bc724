//! `stacknet-bench`: the hub + node path measured against its baselines, side by side in one process
//! on this machine's cores. A binary of its own, apart from `stacknet`, because it runs everything
//! through the test kit (mock upstream, in-process network), which the shipped binary must not link.
//!
//! - `core` (the default, [`mock`]): the scripted mock upstream called directly and through a hub and
//!   a node: closed-loop latency and the open-loop rate within a p99 bound.
//! - `models` ([`models`]): the built-in models (SmolLM2 on llama.cpp, MiniLM on candle) called
//!   directly and through a hub and a node.
//! - `money` ([`money`]): the ledger and settlement path on SQLite or PostgreSQL.
//! - `validate` ([`validate`]): the validator's check against generation (cost), honest
//!   calibration of the C3 thresholds, and detection rates per cheat and of a cheaper quantisation.
//! - `guard` ([`guard`]): a guardian probe's time to first token, and cancel-to-stop, each through
//!   the hub against the mock upstream directly.
//! - `sandbox` ([`sandbox`]): a program run bare, in a sandbox made for the run, and in one made
//!   ahead of it.
//! - `speech` ([`speech`]): the built-in speech and vision models (Whisper tiny.en, the Piper and
//!   eSpeak NG voices, PP-OCR) directly and through a hub and a node: real-time factors, images/s.
//!
//! Run it optimised: `cargo run --release -p stacknet-bench -- [core|models|money|validate]`.

mod guard;
mod mock;
mod models;
mod money;
mod sandbox;
mod speech;
mod validate;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stacknet-bench",
    version,
    about = "Measure Stacknet's hub + node path against its baselines (mock upstream, built-in models, money path)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    core: mock::CoreArgs,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The mock upstream, called directly and through a hub and a node (the default).
    Core(mock::CoreArgs),
    /// The built-in models (SmolLM2 on llama.cpp, MiniLM on candle), called directly and through
    /// a hub and a node: decode tokens/s, concurrent tokens/s, embeddings/s.
    Models(models::ModelsArgs),
    /// The ledger and settlement path: transfers/s, paperwork appends/s, filing 100,000 paperwork.
    Money(money::MoneyArgs),
    /// The validator: the check's cost against generation, an honest calibration of the C3
    /// thresholds (at least 1,000 tasks), detection rates per cheat and of a cheaper quantisation.
    Validate(validate::ValidateArgs),
    /// A guardian probe's time to first token and a cancelled stream's time to stop its upstream,
    /// through the hub against the mock upstream directly.
    Guard(guard::GuardArgs),
    /// `print(1)` in Python: bare, in a sandbox made for the run, in one made ahead of it.
    Sandbox(sandbox::SandboxArgs),
    /// Speech to text (Whisper tiny.en on candle) directly and through a hub and a node: the
    /// real-time factor of each.
    Speech(speech::SpeechArgs),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACKNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            None => mock::run(cli.core).await,
            Some(BenchCommand::Core(args)) => mock::run(args).await,
            Some(BenchCommand::Models(args)) => models::run(args).await,
            Some(BenchCommand::Money(args)) => money::run(args).await,
            Some(BenchCommand::Guard(args)) => guard::run(args).await,
            Some(BenchCommand::Sandbox(args)) => sandbox::run(args).await,
            Some(BenchCommand::Speech(args)) => speech::run(args).await,
            // llama.cpp blocks: off the async threads.
            Some(BenchCommand::Validate(args)) => tokio::task::spawn_blocking(move || validate::run(args))
                .await
                .context("the validation benchmark panicked")?,
        }
    })
}

#[cfg(test)]
mod tests {
    /// clap checks the subcommands and the flattened default's flags against each other.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
