//! `stacknet-bench money`: the ledger and the settlement path on SQLite or PostgreSQL.
//!
//! 1. Ledger transfers/s: `stacknet_ledger::bench::transfers`, batched by concurrent callers.
//! 2. Paperwork appends/s: real signed paperwork (contracts signed by the hub's key) pushed through
//!    the hub's settle writer by many concurrent tasks, as accepted tasks are: each batch is one
//!    transaction of log appends plus the in-memory Merkle tree.
//! 3. Filing: the same paperwork filed by its node through the hub's HTTP API (`HubClient::file`),
//!    every signature checked and the split settled; the time from the first request to the last
//!    answer.
//!
//! The database is a temporary SQLite file, or `--database postgres://...` in a fresh schema that is
//! dropped afterwards.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use stacknet_hub::store::PaperworkRecord;
use stacknet_hub::{Hub, HubConfig};
use stacknet_ledger::{AccountId, Reason, Transfer, TransferId};
use stacknet_node::settlement::HubClient;
use stacknet_protocol::contract::{AttributionSplit, Parties, PromptContract, Usage, Workload};
use stacknet_protocol::fingerprint::Fingerprint;
use stacknet_protocol::paperwork::{BackendInfo, Paperwork, Resources};
use stacknet_protocol::{
    Amount, ContractId, Nonce, SecretKey, Sha256Digest, Signed, StackId, Timestamp, UserId,
};

#[derive(clap::Args, Debug)]
pub struct MoneyArgs {
    /// sqlite (a temporary file) or a postgres://... URL (a fresh schema, dropped afterwards).
    #[arg(long, default_value = "sqlite")]
    pub database: String,
    /// Paperwork appended and then filed.
    #[arg(long, default_value_t = 100_000)]
    pub paperwork: usize,
    /// Concurrent tasks pushing appends.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

pub async fn run(args: MoneyArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let schema = format!("bench_{}", hex::encode(&Nonce::random().0[..6]));
    let database = if args.database == "sqlite" {
        format!("sqlite://{}", dir.path().join("hub.db").display())
    } else {
        let sep = if args.database.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={schema}", args.database)
    };
    let mut config = HubConfig::new(dir.path().join("hub"), "bench".into());
    config.database = Some(database.clone());
    config.challenge_window_ms = 0;
    config.max_body_bytes = 8 * 1024 * 1024;
    let hub = Hub::open(config).await?;
    let result = measure(&hub, &args).await;
    if !database.starts_with("sqlite://") {
        drop_schema(&args.database, &schema).await?;
    }
    result
}

async fn measure(hub: &Hub, args: &MoneyArgs) -> Result<()> {
    let backend = if args.database == "sqlite" {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    println!(
        "stacknet-bench money on {backend}, {} paperwork\n",
        args.paperwork
    );

    let plan = stacknet_ledger::bench::BenchPlan {
        batch_size: 100,
        batches: 400,
        callers: 8,
        run: hex::encode(Nonce::random().0),
    };
    let report = stacknet_ledger::bench::transfers(hub.state.ledger.clone(), plan).await?;
    println!(
        "ledger transfers, batches of 100 from 8 callers: {:>9.0} transfers/s ({} in {:.2} s)",
        report.transfers_per_second(),
        report.transfers,
        report.elapsed.as_secs_f64()
    );

    let node = SecretKey::generate();
    let started = Instant::now();
    let docs = make_paperwork(&hub.state.hub_key, &node, args.paperwork)?;
    println!(
        "(setup: {} signed paperwork made in {:.1} s)",
        docs.len(),
        started.elapsed().as_secs_f64()
    );
    let cost = Amount::from_micros(1_000);
    let records: Vec<PaperworkRecord> = docs
        .iter()
        .map(|pw| {
            Ok(PaperworkRecord {
                id: pw.id()?,
                contract: pw.body.contract.body.id.to_string(),
                node_key: node.public_key().node_key_id(),
                json: serde_json::to_string(pw)?,
                leaf_hash: stacknet_hub::log::paperwork_leaf(pw)?,
                accepted_at: Timestamp::now(),
                hold: None,
                cost,
            })
        })
        .collect::<Result<_>>()?;
    // The captured costs the filing will share out (the bench skips the holds themselves).
    let total = Amount::from_micros(cost.micros() * i64::try_from(records.len())?);
    hub.state
        .ledger
        .create_transfers(vec![Transfer::posted(
            TransferId::new("bench:escrow")?,
            AccountId::external("bench")?,
            AccountId::escrow(),
            total,
            Reason::Capture,
        )
        .into()])
        .await?;

    let records = Arc::new(std::sync::Mutex::new(records));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (records, writer) = (records.clone(), hub.state.writer.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = records.lock().ok().and_then(|mut r| r.pop());
                let Some(record) = next else {
                    return Ok::<_, String>(());
                };
                writer.accept(record).await?;
            }
        }));
    }
    for w in workers {
        w.await?.map_err(anyhow::Error::msg)?;
    }
    let elapsed = started.elapsed();
    ensure!(
        hub.state.log.size() == u64::try_from(docs.len())?,
        "every paperwork is logged"
    );
    println!(
        "paperwork appends, {} concurrent:               {:>9.0} appends/s ({} in {:.2} s; target >= 20,000/s on SQLite)",
        args.concurrency,
        docs.len() as f64 / elapsed.as_secs_f64(),
        docs.len(),
        elapsed.as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hub.clone();
    let server = tokio::spawn(async move {
        stacknet_hub::serve(listener, served, async move {
            let _ = stopped.await;
        })
        .await
    });
    let client = HubClient::connect(&url).await?;
    let started = Instant::now();
    let verdicts = client.file(&node, docs).await?;
    let elapsed = started.elapsed();
    let settled = verdicts.iter().filter(|v| v.status() == "settled").count();
    ensure!(
        settled == verdicts.len(),
        "every paperwork settles ({settled} of {})",
        verdicts.len()
    );
    let earned = hub
        .state
        .ledger
        .balance(AccountId::node(node.public_key().node_key_id()))
        .await?;
    println!(
        "filing {} paperwork, signatures checked, split settled: {:.2} s ({:.0}/s; target < 5 s for 100,000); node earned {}",
        verdicts.len(),
        elapsed.as_secs_f64(),
        verdicts.len() as f64 / elapsed.as_secs_f64(),
        earned.posted
    );
    let totals = hub.state.ledger.sum_check().await?;
    ensure!(totals.is_balanced(), "books balance after the bench");
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

/// `n` paperwork for `node`, each with its own contract signed by `hub`.
fn make_paperwork(hub: &SecretKey, node: &SecretKey, n: usize) -> Result<Vec<Signed<Paperwork>>> {
    let stack = StackId::random();
    let now = Timestamp::now();
    let split = AttributionSplit::DEFAULT;
    (0..n)
        .map(|i| {
            let contract = PromptContract {
                id: ContractId::random(),
                hub: hub.public_key(),
                stack,
                user: UserId::random(),
                node_key: node.public_key().node_key_id(),
                workload: Workload::Chat,
                model: "bench-model".into(),
                price: stacknet_protocol::contract::PriceTerms {
                    input_per_mtok: Amount::from_micros(1_000_000),
                    output_per_mtok: Amount::from_micros(1_000_000),
                    per_request: Amount::ZERO,
                    per_unit: Amount::ZERO,
                },
                max_cost: Amount::from_micros(10_000),
                split: split.clone(),
                parties: Parties::default(),
                skills: Vec::new(),
                skill_royalties_bps: Vec::new(),
                injections: Vec::new(),
                created_at: now,
                expires_at: now.plus_ms(60_000),
                nonce: Nonce::random(),
            };
            let contract = Signed::sign(contract, hub)?;
            let fingerprint = Fingerprint {
                stack,
                node_key: node.public_key().node_key_id(),
                skills: Vec::new(),
                injections: Vec::new(),
                timestamp: now,
                contract: contract.body.id,
            };
            let body = Paperwork {
                node_key: node.public_key(),
                request_sha256: Sha256Digest::of(format!("request {i}").as_bytes()),
                output_sha256: Sha256Digest::of(format!("output {i}").as_bytes()),
                usage: Usage {
                    input_tokens: 400,
                    output_tokens: 600,
                    units: 0,
                },
                backend: BackendInfo {
                    id: "bench".into(),
                    version: "1".into(),
                    model: "bench-model".into(),
                    model_sha256: None,
                },
                resources: Resources {
                    duration_ms: 10,
                    warm: i % 2 == 0,
                    hardware: "cpu".into(),
                },
                fingerprint: fingerprint.sign(node)?,
                finished_at: now,
                cancelled: false,
                commitment: None,
                contract,
            };
            Ok(Signed::sign(body, node)?)
        })
        .collect()
}

async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to drop the bench schema")?;
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    drop(client);
    let _ = task.await;
    Ok(())
}
