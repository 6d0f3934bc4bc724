//! `stacknet-bench sandbox`: a program's run in the code-execution sandbox, beside the same program
//! run bare, in one run on this machine: `python3 -c 'print(1)'` started directly; in a sandbox made
//! for the run (`warm = 0`); and in a sandbox made ahead of it (`warm = 1`, each run waiting until
//! one is ready, as a node with a free warm slot serves it). The sandbox figures are the backend's
//! whole task (validation, staging, the run, cleanup), without hub or node.
//!
//! Needs bubblewrap and cgroup limits (as the sandbox tests): run it as root on this machine kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use stacknet_api::request::code;
use stacknet_node::backend::sandbox::Sandbox;
use stacknet_node::config::SandboxBackendConfig;
use stacknet_node::{Backend, BackendTask, Cancellation};
use stacknet_protocol::contract::Workload;
use stacknet_protocol::ContractId;

use crate::guard::quantiles;

#[derive(clap::Args)]
pub struct SandboxArgs {
    /// Runs measured on each path.
    #[arg(long, default_value_t = 50)]
    trials: usize,
}

/// One run of `print(1)` in `sandbox`; whether its sandbox was made ahead.
async fn run_once(sandbox: &Sandbox) -> Result<(Duration, bool)> {
    let body = json!({"language": "python", "files": [{"name": "main.py", "content": "print(1)"}]});
    let (request, _) = code::validate(body.clone()).context("the request")?;
    let task = BackendTask {
        contract: ContractId::random(),
        workload: Workload::CodeExecution,
        model: request.model,
        request: Arc::new(body),
        files: Arc::new(Vec::new()),
        cancel: Cancellation::never(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let started = Instant::now();
    let outcome = sandbox.execute(task, tx).await.context("the run")?;
    let took = started.elapsed();
    let result = rx.recv().await.context("no result")?;
    ensure!(result["run"]["stdout"] == "1\n", "unexpected result: {result}");
    Ok((took, outcome.warm))
}

async fn sandbox(dir: &std::path::Path, warm: usize, first_uid: u32) -> Result<Sandbox> {
    let config = SandboxBackendConfig {
        languages: Some(vec!["python".to_owned()]),
        warm: Some(warm),
        first_uid: Some(first_uid),
        state_dir: Some(dir.join(format!("state-{warm}"))),
        ..Default::default()
    };
    Sandbox::start(&config)
        .await
        .context("the sandbox does not start on this machine")
}

pub async fn run(args: SandboxArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut bare = Vec::with_capacity(args.trials);
    for _ in 0..args.trials {
        let started = Instant::now();
        let out = tokio::process::Command::new("/usr/bin/python3")
            .args(["-E", "-s", "-B", "-c", "print(1)"])
            .output()
            .await?;
        ensure!(out.stdout == b"1\n", "python3 printed {:?}", out.stdout);
        bare.push(started.elapsed());
    }
    let cold_box = sandbox(dir.path(), 0, 61_200).await?;
    let mut cold = Vec::with_capacity(args.trials);
    for _ in 0..args.trials {
        let (took, warm) = run_once(&cold_box).await?;
        ensure!(!warm, "a run of a sandbox without a pool was warm");
        cold.push(took);
    }
    drop(cold_box);
    let warm_box = sandbox(dir.path(), 1, 61_210).await?;
    let mut warm = Vec::with_capacity(args.trials);
    for _ in 0..args.trials {
        let ready = Instant::now();
        while warm_box.waiting() == 0 {
            ensure!(
                ready.elapsed() < Duration::from_secs(10),
                "no sandbox was made ahead"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (took, was_warm) = run_once(&warm_box).await?;
        ensure!(was_warm, "the run did not take the sandbox made ahead");
        warm.push(took);
    }
    let (bare50, bare99) = quantiles(bare);
    let (cold50, cold99) = quantiles(cold);
    let (warm50, warm99) = quantiles(warm);
    println!("python3 print(1), {} runs each (ms, p50 / p99)", args.trials);
    println!("  bare (no sandbox)             {bare50:8.1} / {bare99:8.1}");
    println!(
        "  sandbox made for the run      {cold50:8.1} / {cold99:8.1}   {:.2}x bare at p50",
        cold50 / bare50
    );
    println!(
        "  sandbox made ahead (warm)     {warm50:8.1} / {warm99:8.1}   {:.2}x bare, {:.2}x made-for-the-run at p50",
        warm50 / bare50,
        warm50 / cold50
    );
    Ok(())
}
