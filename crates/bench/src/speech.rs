//! `stacknet-bench speech`: the built-in speech, vision and image models called directly, against
//! the same through a hub and a node, in one process: speech to text (Whisper tiny.en on candle),
//! text to speech (the Piper voice on ONNX Runtime, and the eSpeak NG fallback voice), OCR (PP-OCRv6
//! tiny) and image generation (the terrain model), both on ONNX Runtime. Each round runs every model
//! once directly (the call the node's task makes: [`Whisper::transcribe`], [`PiperVoice::speak`],
//! [`EspeakVoice::speak`], [`Ocr::read_request`], [`Terrain::generate`]) and once as a client would
//! (the OpenAI endpoint over HTTP, timed at the client until the whole body is read). Speech is
//! reported as a real-time factor (processing time over audio length), OCR and images as images per
//! second; medians over the rounds.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use stacknet_node::backend::multi::MultiBackend;
use stacknet_node::backend::ocr::Ocr;
use stacknet_node::backend::onnx::Runtime;
use stacknet_node::backend::piper::PiperVoice;
use stacknet_node::backend::terrain::Terrain;
use stacknet_node::backend::voice::EspeakVoice;
use stacknet_node::backend::whisper::Whisper;
use stacknet_node::models::{self as catalog, ModelStore, PullOptions};
use stacknet_node::{Backend, Cancellation};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use crate::models::{default_models_dir, median, pull};

const WHISPER: &str = "whisper-tiny-en";
const PIPER: &str = "piper-en-us-joe-medium";
const OCR: &str = "pp-ocrv6-tiny";
const TERRAIN: &str = "terrain-diffusion-128";
const BOUNDARY: &str = "stacknet-bench-speech";
const SPEECH: &str =
    "The lighthouse keeper climbed the narrow stairs every evening to light the great lamp. \
    Ships far out at sea watched for its beam and steered away from the rocks.";
/// Two lines of rendered text (the OCR tests' fixture).
const IMAGE: &[u8] = include_bytes!("../../testkit/tests/it/fixtures/two-lines.png");

#[derive(clap::Args)]
pub struct SpeechArgs {
    /// Where models are stored; pulled there first when absent [default: stacknet's]
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Threads for every model, the same on both sides [default: this machine's cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Rounds of direct then hub runs; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// How long `work` took, in seconds, and what it gave.
async fn timed<T>(work: impl Future<Output = Result<T>>) -> Result<(f64, T)> {
    let started = Instant::now();
    let out = work.await?;
    Ok((started.elapsed().as_secs_f64(), out))
}

/// The direct and the through-the-hub times of one model, over the rounds.
#[derive(Default)]
struct Pair {
    direct: Vec<f64>,
    hub: Vec<f64>,
}

pub async fn run(args: SpeechArgs) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let store = ModelStore::new(args.models_dir.clone().unwrap_or_else(default_models_dir));
    let options = PullOptions::from_env();
    let mut dirs = Vec::new();
    for name in [WHISPER, catalog::ONNX_RUNTIME, PIPER, OCR, TERRAIN] {
        let spec = catalog::find(name).with_context(|| format!("{name} is not in the catalog"))?;
        dirs.push((spec, pull(&store, spec, &options).await?));
    }
    let (whisper_spec, whisper_dir) = dirs[0].clone();
    let whisper =
        tokio::task::spawn_blocking(move || Whisper::load(&whisper_dir, whisper_spec, threads)).await??;
    let runtime = Runtime::from_store(&store)?;
    let (piper_spec, piper_dir) = dirs[2].clone();
    let piper = tokio::task::spawn_blocking(move || {
        PiperVoice::load(runtime, &piper_dir, piper_spec, threads, None, false)
    })
    .await??;
    let (ocr_spec, ocr_dir) = dirs[3].clone();
    let images = stacknet_node::backend::images::fetcher()?;
    let ocr = tokio::task::spawn_blocking(move || Ocr::load(runtime, &ocr_dir, ocr_spec, threads, images))
        .await??;
    let (terrain_spec, terrain_path) = dirs[4].clone();
    let terrain =
        tokio::task::spawn_blocking(move || Terrain::load(runtime, &terrain_path, terrain_spec, threads))
            .await??;
    let out = std::process::Command::new("espeak-ng")
        .args(["--stdout", "-s", "150", SPEECH])
        .output()
        .context("cannot run espeak-ng (apt install espeak-ng)")?;
    ensure!(out.status.success(), "espeak-ng failed");
    let wav = bytes::Bytes::from(out.stdout);
    let seconds = stacknet_api::audio::probe(wav.clone(), Some("wav"))?.duration_ms as f64 / 1000.0;
    let voice = EspeakVoice::start(None).await?;

    let all: Vec<Arc<dyn Backend>> = vec![
        Arc::new(whisper.clone()),
        Arc::new(voice.clone()),
        Arc::new(piper.clone()),
        Arc::new(ocr.clone()),
        Arc::new(terrain.clone()),
    ];
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(MultiBackend::new(all)?)).await;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let post_json = |path: &str, body: Value| {
        let request = client
            .post(format!("{}/{path}", net.base_url()))
            .bearer_auth(&net.api_key)
            .json(&body);
        async move { answer(request).await }
    };
    let form_body = form(&wav);
    let transcribe_over_http = || {
        let request = client
            .post(format!("{}/audio/transcriptions", net.base_url()))
            .bearer_auth(&net.api_key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(form_body.clone());
        async move { answer(request).await }
    };
    let speech_request =
        |model: &str| json!({"model": model, "input": SPEECH, "voice": "alloy", "response_format": "wav"});
    let (_, espeak_speech) =
        stacknet_api::request::audio::validate_speech(speech_request(stacknet_node::backend::voice::MODEL))?;
    let (_, piper_speech) = stacknet_api::request::audio::validate_speech(speech_request(PIPER))?;
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(IMAGE)
    );
    let read = json!({"model": OCR, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]});

    println!(
        "stacknet-bench speech: built-in models directly vs through hub + node ({} cores, {threads} threads, one process, loopback)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "transcribed: {seconds:.2} s of espeak-ng speech (WAV, 22.05 kHz); spoken: {} characters as WAV; read: a {} byte PNG with two lines of text; {} rounds\n",
        SPEECH.chars().count(),
        IMAGE.len(),
        args.rounds
    );
    let never = Cancellation::never();
    let draw = json!({"model": TERRAIN, "prompt": "a mountain lake", "size": "256x256", "seed": 1});
    let (_, drawing) = stacknet_api::request::image_generation::validate(draw.clone())?;
    let (mut stt, mut espeak, mut neural, mut vision, mut images) = (
        Pair::default(),
        Pair::default(),
        Pair::default(),
        Pair::default(),
        Pair::default(),
    );
    let (mut espeak_seconds, mut piper_seconds) = (0.0, 0.0);
    for _ in 0..args.rounds {
        let (t, heard) = timed(async { Ok(whisper.transcribe(wav.clone(), "wav").await?) }).await?;
        ensure!(!heard.text().is_empty(), "nothing heard");
        stt.direct.push(t);
        stt.hub.push(timed(transcribe_over_http()).await?.0);

        let (t, audio) = timed(async { Ok(voice.speak(&espeak_speech, &never).await?) }).await?;
        espeak_seconds = stacknet_api::audio::probe(audio, Some("wav"))?.duration_ms as f64 / 1000.0;
        espeak.direct.push(t);
        espeak.hub.push(
            timed(post_json(
                "audio/speech",
                speech_request(stacknet_node::backend::voice::MODEL),
            ))
            .await?
            .0,
        );

        let (t, audio) = timed(async { Ok(piper.speak(&piper_speech, &never).await?) }).await?;
        piper_seconds = stacknet_api::audio::probe(audio, Some("wav"))?.duration_ms as f64 / 1000.0;
        neural.direct.push(t);
        neural
            .hub
            .push(timed(post_json("audio/speech", speech_request(PIPER))).await?.0);

        let (t, texts) = timed(async { Ok(ocr.read_request(&read, &never).await?) }).await?;
        ensure!(texts.first().is_some_and(|t| !t.is_empty()), "nothing read");
        vision.direct.push(t);
        vision
            .hub
            .push(timed(post_json("chat/completions", read.clone())).await?.0);

        let (t, pngs) = timed(async { Ok(terrain.generate(&drawing, &never).await?) }).await?;
        ensure!(pngs.len() == 1, "no image");
        images.direct.push(t);
        images
            .hub
            .push(timed(post_json("images/generations", draw.clone())).await?.0);
    }
    println!("| model | path | median time | real-time factor / rate |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    for (name, pair, per) in [
        (format!("{WHISPER} ({seconds:.2} s of audio)"), stt, Some(seconds)),
        (
            format!("{PIPER} ({piper_seconds:.2} s spoken)"),
            neural,
            Some(piper_seconds),
        ),
        (
            format!("espeak-ng ({espeak_seconds:.2} s spoken)"),
            espeak,
            Some(espeak_seconds),
        ),
        (format!("{OCR} (one image)"), vision, None),
        (format!("{TERRAIN} (one 256x256 PNG)"), images, None),
    ] {
        let (d, h) = (median(pair.direct), median(pair.hub));
        for (path, t) in [("direct", d), ("hub + node (HTTP)", h)] {
            let rate = match per {
                Some(audio) => format!("RTF {:.3}", t / audio),
                None => format!("{:.1} images/s", 1.0 / t),
            };
            println!("| {name} | {path} | {:.1} ms | {rate} |", t * 1000.0);
        }
        ratios.push(format!("{name}: {:.3}x", h / d));
    }
    println!("\nhub / direct: {}", ratios.join("; "));
    Ok(())
}

/// Sends `request` and reads the whole body; a refusal is an error with its body.
async fn answer(request: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
    let resp = request.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    ensure!(
        status.is_success(),
        "HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}

/// The multipart body of a transcription of `wav`.
fn form(wav: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{WHISPER}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(wav);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}
