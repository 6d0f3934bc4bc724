//! `stacknet-bench speech`: the built-in speech to text (Whisper tiny.en on candle) and text to
//! speech (the eSpeak NG fallback voice) called directly, against the same through a hub and a node,
//! in one process. Each round transcribes English speech once directly ([`Whisper::transcribe`],
//! the worker the node's tasks run on, given the WAV bytes) and once as a client would (`POST
//! /v1/audio/transcriptions`, multipart, timed at the client until the whole body is read), then
//! speaks the same text once directly ([`EspeakVoice::speak`]) and once through `POST
//! /v1/audio/speech`. The real-time factor is processing time over audio length; medians over the
//! rounds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use stacknet_node::backend::multi::MultiBackend;
use stacknet_node::backend::voice::EspeakVoice;
use stacknet_node::backend::whisper::Whisper;
use stacknet_node::models::{self as catalog, ModelStore, PullOptions};
use stacknet_node::Cancellation;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use crate::models::{default_models_dir, median, pull};

const MODEL: &str = "whisper-tiny-en";
const BOUNDARY: &str = "stacknet-bench-speech";
const SPEECH: &str =
    "The lighthouse keeper climbed the narrow stairs every evening to light the great lamp. \
    Ships far out at sea watched for its beam and steered away from the rocks.";

#[derive(clap::Args)]
pub struct SpeechArgs {
    /// Where models are stored; pulled there first when absent [default: stacknet's]
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Threads for candle, the same on both sides [default: this machine's cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Rounds of direct then hub runs; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

pub async fn run(args: SpeechArgs) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let store = ModelStore::new(args.models_dir.clone().unwrap_or_else(default_models_dir));
    let spec = catalog::find(MODEL).with_context(|| format!("{MODEL} is not in the catalog"))?;
    let dir = pull(&store, spec, &PullOptions::from_env()).await?;
    let whisper = tokio::task::spawn_blocking(move || Whisper::load(&dir, spec, threads)).await??;
    let out = std::process::Command::new("espeak-ng")
        .args(["--stdout", "-s", "150", SPEECH])
        .output()
        .context("cannot run espeak-ng (apt install espeak-ng)")?;
    ensure!(out.status.success(), "espeak-ng failed");
    let wav = bytes::Bytes::from(out.stdout);
    let seconds = stacknet_api::audio::probe(wav.clone(), Some("wav"))?.duration_ms as f64 / 1000.0;

    let voice = EspeakVoice::start(None).await?;
    let (_, speech) = stacknet_api::request::audio::validate_speech(serde_json::json!({
        "model": stacknet_node::backend::voice::MODEL, "input": SPEECH, "voice": "alloy", "response_format": "wav"}))?;
    let both = MultiBackend::new(vec![Arc::new(whisper.clone()), Arc::new(voice.clone())])?;
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(both)).await;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url = format!("{}/audio/transcriptions", net.base_url());
    let body = form(&wav);

    println!(
        "stacknet-bench speech: {MODEL} on candle, directly vs through hub + node ({} cores, {threads} threads, one process, loopback)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "audio: {seconds:.2} s of espeak-ng speech (WAV, 22.05 kHz), {} rounds\n",
        args.rounds
    );
    let (mut direct, mut hub) = (Vec::new(), Vec::new());
    let (mut spoken_direct, mut spoken_hub) = (Vec::new(), Vec::new());
    let speech_url = format!("{}/audio/speech", net.base_url());
    let mut spoken_seconds = 0.0;
    for _ in 0..args.rounds {
        let started = Instant::now();
        let audio = voice.speak(&speech, &Cancellation::never()).await?;
        spoken_direct.push(started.elapsed().as_secs_f64());
        spoken_seconds = stacknet_api::audio::probe(audio, Some("wav"))?.duration_ms as f64 / 1000.0;
        let started = Instant::now();
        let resp = client
            .post(&speech_url)
            .bearer_auth(&net.api_key)
            .json(
                &serde_json::json!({"model": stacknet_node::backend::voice::MODEL, "input": SPEECH,
                "voice": "alloy", "response_format": "wav"}),
            )
            .send()
            .await?;
        let status = resp.status();
        let audio = resp.bytes().await?;
        spoken_hub.push(started.elapsed().as_secs_f64());
        ensure!(
            status.is_success(),
            "HTTP {status}: {}",
            String::from_utf8_lossy(&audio)
        );

        let started = Instant::now();
        let heard = whisper.transcribe(wav.clone(), "wav").await?;
        direct.push(started.elapsed().as_secs_f64());
        ensure!(!heard.text().is_empty(), "nothing heard");

        let started = Instant::now();
        let resp = client
            .post(&url)
            .bearer_auth(&net.api_key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body.clone())
            .send()
            .await?;
        let status = resp.status();
        let answer = resp.bytes().await?;
        hub.push(started.elapsed().as_secs_f64());
        ensure!(
            status.is_success(),
            "HTTP {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let (d, h) = (median(direct), median(hub));
    let (sd, sh) = (median(spoken_direct), median(spoken_hub));
    println!("| path | median time | real-time factor |");
    println!("|---|---|---|");
    let row =
        |what: &str, t: f64, audio: f64| println!("| {what} | {:.1} ms | {:.3} |", t * 1000.0, t / audio);
    row("transcription, direct (Whisper::transcribe)", d, seconds);
    row("transcription, through hub + node (HTTP)", h, seconds);
    row(
        &format!("speech ({spoken_seconds:.2} s, wav), direct (EspeakVoice::speak)"),
        sd,
        spoken_seconds,
    );
    row(
        &format!("speech ({spoken_seconds:.2} s, wav), through hub + node (HTTP)"),
        sh,
        spoken_seconds,
    );
    println!(
        "\ntranscription hub / direct: {:.3}x; speech hub / direct: {:.3}x",
        h / d,
        sh / sd
    );
    Ok(())
}

/// The multipart body of a transcription of `wav`.
fn form(wav: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{MODEL}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(wav);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}
