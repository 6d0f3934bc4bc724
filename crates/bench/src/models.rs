//! `stacknet-bench models`: the built-in models called directly, against the same models through a
//! hub and a node, in one process.
//!
//! Chat: the baseline is [`LocalModel`], the very generation loop the node's llama.cpp worker runs
//! (same GGUF, threads, context and greedy sampling), fed the same OpenAI request; it only records
//! when each token arrives. The measured path is a streaming chat completion through a
//! [`TestNetwork`] hub to a node serving [`LlamaChat`], timed at the client from the first content
//! chunk to the last. Decode tokens/s = (tokens - 1) / (last token - first token), so prompt
//! processing is left out (time to first token is reported on its own). Raw and hub runs alternate,
//! so the machine's noise falls on both alike, and medians are reported. Then four streams at once
//! through the hub, and embeddings: [`CandleEmbeddings::embed`] against `/v1/embeddings`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use stacknet_node::backend::embed::{self, CandleEmbeddings};
use stacknet_node::backend::llama::{self, Flow, LlamaChat, LlamaConfig, LocalModel};
use stacknet_node::backend::multi::MultiBackend;
use stacknet_node::models::{self as catalog, ModelSpec, ModelStore, PullOptions};
use stacknet_protocol::contract::Workload;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

const CHAT_MODEL: &str = "smollm2-135m-instruct";
const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
/// A request that SmolLM2 answers at length, so both sides decode the full `max_tokens`.
const DEFAULT_PROMPT: &str = "Write a long story about a lighthouse keeper.";
/// Simultaneous streams in the aggregate measurement.
const CONCURRENT_STREAMS: usize = 4;
/// Requests per embeddings measurement with one input each.
const EMBED_SINGLE_REQUESTS: usize = 32;
/// Inputs per request in the batched embeddings measurement, and how many such requests.
const EMBED_BATCH_INPUTS: usize = 32;
const EMBED_BATCH_REQUESTS: usize = 4;

#[derive(clap::Args)]
pub struct ModelsArgs {
    /// Where models are stored; pulled there first when absent [default: stacknet's, i.e.
    /// ~/.local/share/stacknet/models]
    #[arg(long, env = "STACKNET_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Threads for llama.cpp and candle, the same on both sides [default: this machine's cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Tokens each chat generation asks for (max_tokens).
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Rounds of raw then hub runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The user message of every chat request.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
}

/// Where `stacknet models pull` puts models by default (the rule of the CLI's `keystore.rs`), so a
/// benchmark finds what `stacknet up` already pulled.
pub(crate) fn default_models_dir() -> PathBuf {
    let data = if let Some(dir) = std::env::var_os("STACKNET_DATA_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        PathBuf::from(dir).join("stacknet")
    } else {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".local/share/stacknet")
    };
    data.join("models")
}

/// Pulls a model unless it is present and verified (no progress bar: `stacknet models pull` has one).
pub(crate) async fn pull(store: &ModelStore, spec: &ModelSpec, options: &PullOptions) -> Result<PathBuf> {
    if let Some(path) = store.path_of(spec) {
        return Ok(path);
    }
    eprintln!("pulling {} into {}", spec.name, store.dir().display());
    store
        .pull(spec, options, |_| {})
        .await
        .with_context(|| format!("cannot pull {}", spec.name))
}

/// What the benchmark runs against: the raw models and a network serving the same ones.
struct Bench {
    raw_chat: Arc<LocalModel>,
    embeddings: CandleEmbeddings,
    net: TestNetwork,
    client: reqwest::Client,
    threads: usize,
}

pub async fn run(args: ModelsArgs) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.max_tokens >= 2,
        "--max-tokens must be at least 2 to time decoding"
    );
    let bench = Bench::start(&args).await?;
    let config = bench.raw_chat.config();
    println!(
        "stacknet-bench models: built-in models called directly vs through hub + node ({} cores, {} threads, one process, loopback)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bench.threads
    );
    println!(
        "chat: {CHAT_MODEL} on llama.cpp (llama-cpp-2 {}), context {}, temperature 0, max_tokens {}, streaming",
        llama::LLAMA_CPP_2_VERSION,
        config.context_tokens,
        args.max_tokens
    );
    println!("prompt: {:?} (chat template applied)\n", args.prompt);
    let body = Arc::new(json!({
        "model": CHAT_MODEL, "temperature": 0, "max_tokens": args.max_tokens, "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": args.prompt}],
    }));
    let raw_decode = bench.chat(&body, args.rounds).await?;
    bench.concurrent(&body, raw_decode).await?;
    bench.embeddings(args.rounds).await
}

impl Bench {
    async fn start(args: &ModelsArgs) -> Result<Self> {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        ensure!(threads > 0, "--threads must be at least 1");
        let dir = args.models_dir.clone().unwrap_or_else(default_models_dir);
        let store = ModelStore::new(dir);
        let options = PullOptions::from_env();
        let find = |name: &str| catalog::find(name).with_context(|| format!("{name} is not in the catalog"));
        let chat_spec = find(CHAT_MODEL)?;
        let gguf = pull(&store, chat_spec, &options).await?;
        let sha = chat_spec.files[0]
            .sha256
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut config = LlamaConfig::new(CHAT_MODEL, gguf, sha);
        config.threads = threads;
        let embed_spec = find(EMBEDDING_MODEL)?;
        pull(&store, embed_spec, &options).await?;

        // Two loads of one file: the raw side runs on this process's blocking threads, the node's
        // on its own worker, as in production; the weights are mapped, so they share the page cache.
        let raw_config = config.clone();
        let raw_chat = tokio::task::spawn_blocking(move || LocalModel::load(raw_config)).await??;
        let node_chat = tokio::task::spawn_blocking(move || LlamaChat::load(config)).await??;
        let embeddings =
            tokio::task::spawn_blocking(move || CandleEmbeddings::from_store(&store, embed_spec, threads))
                .await??;
        let backend = MultiBackend::new(vec![Arc::new(node_chat), Arc::new(embeddings.clone())])?;
        let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
        net.add_backend_node(Arc::new(backend)).await;
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        Ok(Self {
            raw_chat: Arc::new(raw_chat),
            embeddings,
            net,
            client,
            threads,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.net.base_url())
    }

    /// Alternating raw and hub generations; prints the table and returns the raw median decode rate.
    async fn chat(&self, body: &Arc<Value>, rounds: usize) -> Result<f64> {
        // Warm-up, unreported: first contexts, page faults of the mapped weights, the connection.
        raw_stream(&self.raw_chat, body).await?;
        self.hub_stream(body).await?;
        println!(
            "{:<28}{:>14}{:>14}{:>10}",
            "decode tokens/s", "raw llama.cpp", "hub + node", "hub/raw"
        );
        let (mut raw, mut hub) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let r = raw_stream(&self.raw_chat, body).await?;
            let h = self.hub_stream(body).await?;
            if r.tokens != h.tokens || r.text != h.text {
                println!(
                    "  warning: round {round}: raw and hub outputs differ ({} vs {} tokens)",
                    r.tokens, h.tokens
                );
            }
            let (rd, hd) = (r.decode_rate(), h.decode_rate());
            println!(
                "{:<28}{rd:>14.1}{hd:>14.1}{:>9.1}%",
                format!("  round {round}"),
                100.0 * hd / rd
            );
            raw.push(r);
            hub.push(h);
        }
        let rate = |runs: &[Stream]| median(runs.iter().map(Stream::decode_rate).collect());
        let first = |runs: &[Stream]| median(runs.iter().map(|s| ms(s.first_token)).collect());
        let (rd, hd) = (rate(&raw), rate(&hub));
        println!("{:<28}{rd:>14.1}{hd:>14.1}{:>9.1}%", "  median", 100.0 * hd / rd);
        println!(
            "{:<28}{:>14.1}{:>14.1}{:>+8.1}ms",
            "first token, ms (median)",
            first(&raw),
            first(&hub),
            first(&hub) - first(&raw)
        );
        println!(
            "{:<28}{:>14}{:>14}",
            "tokens generated (last)",
            raw.last().map_or(0, |s| s.tokens),
            hub.last().map_or(0, |s| s.tokens)
        );
        Ok(rd)
    }

    /// Four streams at once through the hub; the node's one llama.cpp worker takes them in turn.
    async fn concurrent(&self, body: &Arc<Value>, raw_decode: f64) -> Result<()> {
        let started = Instant::now();
        let mut streams = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENT_STREAMS {
            let (client, url, key, body) = (
                self.client.clone(),
                self.url("chat/completions"),
                self.net.api_key.clone(),
                Arc::clone(body),
            );
            streams.spawn(async move { hub_stream(&client, &url, &key, &body).await });
        }
        let mut tokens = 0;
        while let Some(stream) = streams.join_next().await {
            tokens += stream??.tokens;
        }
        let wall = started.elapsed().as_secs_f64();
        let rate = tokens as f64 / wall;
        println!(
            "\nconcurrency {CONCURRENT_STREAMS} through hub + node: {tokens} tokens in {wall:.2} s = {rate:.1} tokens/s aggregate ({:.0}% of one raw stream's decode rate; prompts included)",
            100.0 * rate / raw_decode
        );
        Ok(())
    }

    async fn hub_stream(&self, body: &Value) -> Result<Stream> {
        hub_stream(
            &self.client,
            &self.url("chat/completions"),
            &self.net.api_key,
            body,
        )
        .await
    }

    async fn embeddings(&self, rounds: usize) -> Result<()> {
        println!(
            "\nembeddings: {EMBEDDING_MODEL} on candle {}, {} threads",
            embed::CANDLE_VERSION,
            self.embeddings.threads()
        );
        println!(
            "{:<28}{:>14}{:>14}{:>10}",
            "embeddings/s (median)", "raw candle", "hub + node", "hub/raw"
        );
        let single: Vec<Vec<String>> = (0..EMBED_SINGLE_REQUESTS).map(|i| sentences(i, 1)).collect();
        let batches: Vec<Vec<String>> = (0..EMBED_BATCH_REQUESTS)
            .map(|i| sentences(i * EMBED_BATCH_INPUTS, EMBED_BATCH_INPUTS))
            .collect();
        // Warm-up, unreported.
        self.raw_embed(&batches[..1]).await?;
        self.hub_embed(&batches[..1]).await?;
        for (label, requests) in [("  single input", &single), ("  batch of 32", &batches)] {
            let (mut raw, mut hub) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                raw.push(self.raw_embed(requests).await?);
                hub.push(self.hub_embed(requests).await?);
            }
            let (r, h) = (median(raw), median(hub));
            println!("{label:<28}{r:>14.1}{h:>14.1}{:>9.1}%", 100.0 * h / r);
        }
        Ok(())
    }

    /// Embeddings per second over `requests`, sent one after another.
    async fn raw_embed(&self, requests: &[Vec<String>]) -> Result<f64> {
        let started = Instant::now();
        let mut count = 0;
        for inputs in requests {
            let embedded = self.embeddings.embed(inputs.clone()).await?;
            ensure!(embedded.vectors.len() == inputs.len(), "one vector per input");
            count += inputs.len();
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    }

    async fn hub_embed(&self, requests: &[Vec<String>]) -> Result<f64> {
        let url = self.url("embeddings");
        let started = Instant::now();
        let mut count = 0;
        for inputs in requests {
            let resp = self
                .client
                .post(&url)
                .bearer_auth(&self.net.api_key)
                .json(&json!({"model": EMBEDDING_MODEL, "input": inputs}))
                .send()
                .await?;
            let status = resp.status();
            let answer: Value = resp.json().await?;
            ensure!(status.is_success(), "embeddings: HTTP {status}: {answer}");
            let vectors = answer["data"].as_array().map_or(0, Vec::len);
            ensure!(
                vectors == inputs.len(),
                "embeddings: {vectors} vectors for {} inputs",
                inputs.len()
            );
            count += inputs.len();
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    }
}

/// `count` distinct sentences of similar length, numbered from `from`.
fn sentences(from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|i| format!("At dusk on day {i}, the lighthouse keeper climbed the stairs and lit the lamp."))
        .collect()
}

/// One generation as its reader saw it.
#[derive(Debug, Default)]
struct Stream {
    /// From the request to the first token.
    first_token: Duration,
    /// From the first token to the last.
    decoding: Duration,
    /// Generated tokens, as the model counted them.
    tokens: u64,
    text: String,
}

impl Stream {
    fn new(started: Instant, arrivals: &[Instant], tokens: u64, text: String) -> Self {
        let (first, last) = match (arrivals.first(), arrivals.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => (started, started),
        };
        Self {
            first_token: first - started,
            decoding: last - first,
            tokens,
            text,
        }
    }

    fn decode_rate(&self) -> f64 {
        self.tokens.saturating_sub(1) as f64 / self.decoding.as_secs_f64()
    }
}

/// The baseline: the node's generation loop called on a blocking thread, timing each token.
async fn raw_stream(model: &Arc<LocalModel>, body: &Arc<Value>) -> Result<Stream> {
    let (model, body) = (Arc::clone(model), Arc::clone(body));
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (mut arrivals, mut bytes) = (Vec::new(), Vec::new());
        let done = model.generate(&body, Workload::Chat, |piece| {
            arrivals.push(Instant::now());
            bytes.extend_from_slice(piece);
            Ok(Flow::Continue)
        })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Stream::new(started, &arrivals, done.usage.output_tokens, text))
    })
    .await?
}

/// A streaming chat completion through the hub, timing each content chunk as it arrives.
async fn hub_stream(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> Result<Stream> {
    let started = Instant::now();
    let mut resp = client.post(url).bearer_auth(key).json(body).send().await?;
    let status = resp.status();
    if !status.is_success() {
        bail!("chat: HTTP {status}: {}", resp.text().await.unwrap_or_default());
    }
    let (mut pending, mut arrivals, mut text, mut tokens) = (Vec::new(), Vec::new(), String::new(), None);
    while let Some(bytes) = resp.chunk().await? {
        let now = Instant::now();
        pending.extend_from_slice(&bytes);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(data) = std::str::from_utf8(&line)?.trim_end().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                continue;
            }
            let event: Value = serde_json::from_str(data).context("a stream event")?;
            if let Some(error) = event.get("error") {
                bail!("chat stream: {error}");
            }
            if let Some(content) = event["choices"][0]["delta"]["content"].as_str() {
                if !content.is_empty() {
                    arrivals.push(now);
                    text.push_str(content);
                }
            }
            if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n);
            }
        }
    }
    let tokens = tokens.context("the stream carried no usage")?;
    Ok(Stream::new(started, &arrivals, tokens, text))
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}
