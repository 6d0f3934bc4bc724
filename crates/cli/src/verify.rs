//! `stacknet verify`: checks of what the network hands out.
//!
//! Accepts a chat/completion response (JSON), a streamed response (the SSE text, whose last data
//! chunk carries the fingerprint and the paperwork id), a bytes answer (speech audio, a
//! transcription: the saved body, with `--headers` its saved response headers, which carry the
//! proof), or a paperwork (signed JSON), and for a paperwork, its inclusion proof against a signed
//! checkpoint of the hub's log.
//!
//! An answer's fingerprint alone does not cover its content: the content is checked against the
//! `output_sha256` of the answer's paperwork, given as a file (`--paperwork`, offline) or fetched
//! with its inclusion proof and checkpoint from the hub (`--hub`). The verdict names every check it
//! made and every check it could not make. The checks themselves are the SDK's
//! (`stacknet_sdk::verify`), as is the light node of `--follow` (`stacknet_sdk::follow`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use stacknet_api::types::{InclusionProof, LogCheckpoint};
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{PublicKey, Signed};
use stacknet_sdk::follow::{FollowError, Follower, Step};
use stacknet_sdk::verify::{self as check, Content};
use stacknet_sdk::Client;

/// The largest document read (a file, stdin or a hub's answer): long answers are far below this.
pub const MAX_VERIFY_INPUT_BYTES: u64 = stacknet_sdk::client::MAX_ANSWER_BYTES;
/// A paperwork's inclusion proof (`GET /stacknet/v1/log/proof/inclusion`) and the checkpoint
/// (`GET /stacknet/v1/log/checkpoint`, or its signed note alone) it is checked against.
#[derive(Debug, Clone, Default)]
pub struct LogProof {
    pub inclusion: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
}

/// What `stacknet verify` was asked to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The document; `None` or `-` for stdin.
    pub input: Option<PathBuf>,
    /// The response headers of a bytes answer (then `input` is its body).
    pub headers: Option<PathBuf>,
    /// The hub key (hex) contracts and checkpoints must be signed by.
    pub hub_key: Option<String>,
    pub proof: LogProof,
    /// For an answer: its paperwork, as a file.
    pub paperwork: Option<PathBuf>,
    /// For an answer: the hub to fetch its paperwork, inclusion proof and checkpoint from.
    pub hub: Option<String>,
}

/// Whose hub key the signatures were checked against, for the verdict.
#[derive(Debug, Clone, Copy)]
enum Trust {
    Pinned,
    Announced,
    Named,
}

impl Trust {
    fn words(self) -> &'static str {
        match self {
            Trust::Pinned => "the hub key you gave",
            Trust::Announced => "the hub key the hub announced (not pinned: pass --hub-key)",
            Trust::Named => "the hub key it names (pass --hub-key to pin one)",
        }
    }
}

/// A paperwork and, when there is one, its inclusion proof and checkpoint note.
struct Evidence {
    paperwork: Signed<Paperwork>,
    log: Option<(InclusionProof, String)>,
    hub_key: Option<(PublicKey, Trust)>,
    /// The paperwork's Node Key id's rebindings (fetched with `--hub`; none offline).
    chain: Vec<stacknet_protocol::binding::Rebinding>,
}

fn read_limited(reader: impl Read, what: &str) -> Result<String> {
    String::from_utf8(read_bytes(reader, what)?).with_context(|| format!("{what} is not UTF-8"))
}

fn read_bytes(reader: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_VERIFY_INPUT_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > MAX_VERIFY_INPUT_BYTES {
        bail!("{what} is larger than {MAX_VERIFY_INPUT_BYTES} bytes");
    }
    Ok(bytes)
}

/// A bytes answer: its body (the input) and the proof its saved headers carry. Header lines are
/// `name: value` (a status line and anything else without a colon is skipped); names are matched
/// without regard to case, and the last of a repeated name counts.
fn bytes_answer(input: Option<&Path>, headers: &Path) -> Result<Content> {
    let body = match input {
        Some(p) if p.as_os_str() != "-" => {
            let file = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
            read_bytes(file, &p.display().to_string())?
        }
        _ => read_bytes(std::io::stdin(), "stdin")?,
    };
    let text = read_small(headers)?;
    let mut lines = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(':') {
            lines.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let proof = stacknet_api::output::proof_of_headers(|name| lines.get(name).cloned())
        .map_err(|e| anyhow!("{}: {e}", headers.display()))?;
    Ok(Content::Bytes { body, proof })
}

fn read_small(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    read_limited(file, &path.display().to_string())
}

fn json_file(path: &Path) -> Result<Value> {
    serde_json::from_str(&read_small(path)?).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The checkpoint endpoint's JSON, or the signed note on its own.
fn checkpoint_note(text: String) -> Result<String> {
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => Ok(serde_json::from_value::<LogCheckpoint>(v)
            .map_err(|e| anyhow!("checkpoint: {e}"))?
            .note),
        Err(_) => Ok(text),
    }
}

fn hub_key(options: &VerifyOptions) -> Result<Option<PublicKey>> {
    options
        .hub_key
        .as_deref()
        .map(PublicKey::from_hex)
        .transpose()
        .map_err(|e| anyhow!("--hub-key: {e}"))
}

/// Returns the one-line verdict for a valid document; an error says why it is not.
pub async fn verify(options: &VerifyOptions) -> Result<String> {
    if let Some(headers) = &options.headers {
        let content = bytes_answer(options.input.as_deref(), headers)?;
        let doc = content.proof_fields().cloned().unwrap_or_default();
        return verify_answer(&doc, &content, hub_key(options)?, options).await;
    }
    let text = match options.input.as_deref() {
        Some(p) if p.as_os_str() != "-" => read_small(p)?,
        _ => read_limited(std::io::stdin(), "stdin")?,
    };
    let hub_key = hub_key(options)?;
    let content = Content::parse(&text)
        .map_err(|_| anyhow!("input is neither JSON nor an event stream with an attribution chunk"))?;
    let doc = content
        .proof_fields()
        .cloned()
        .ok_or_else(|| anyhow!("input is neither JSON nor an event stream with an attribution chunk"))?;
    if doc.get("attribution").is_some() {
        verify_answer(&doc, &content, hub_key, options).await
    } else if doc.get("contract").is_some() && doc.get("node_key").is_some() {
        if options.paperwork.is_some() || options.hub.is_some() {
            bail!("--paperwork and --hub are for an answer; this is a paperwork");
        }
        verify_paperwork(&doc, hub_key, &options.proof)
    } else {
        bail!("not a response with a fingerprint and attribution, nor a paperwork")
    }
}

async fn verify_answer(
    doc: &Value,
    content: &Content,
    hub_key: Option<PublicKey>,
    options: &VerifyOptions,
) -> Result<String> {
    let verified = check::fingerprint(content)?;
    let f = &verified.fingerprint;
    let head = format!(
        "valid: {} signed by node {} ({}) for stack {}, contract {}, at {}",
        verified.id,
        f.node_key,
        verified.signed_by.to_tagged(),
        f.stack,
        f.contract,
        f.timestamp
    );
    let named = doc.get("paperwork").and_then(Value::as_str);
    let evidence = match (&options.paperwork, &options.hub) {
        (Some(_), Some(_)) => bail!("give --paperwork or --hub, not both"),
        (Some(file), None) => Some(Evidence {
            paperwork: serde_json::from_value(json_file(file)?)
                .map_err(|e| anyhow!("{}: not a paperwork: {e}", file.display()))?,
            log: log_files(&options.proof)?,
            hub_key: hub_key.map(|k| (k, Trust::Pinned)),
            chain: Vec::new(),
        }),
        (None, Some(hub)) => {
            if options.proof.inclusion.is_some() {
                bail!("--inclusion and --checkpoint are fetched from --hub; give them with --paperwork");
            }
            let named = named.ok_or_else(|| anyhow!("the answer names no paperwork to fetch"))?;
            Some(fetch(hub, named, hub_key).await?)
        }
        (None, None) => {
            if options.proof.inclusion.is_some() {
                bail!("--inclusion and --checkpoint need the answer's paperwork (--paperwork)");
            }
            None
        }
    };
    let Some(evidence) = evidence else {
        return Ok(format!(
            "{head}; content not checked: no paperwork given (pass --paperwork FILE or --hub URL)"
        ));
    };
    if named.is_none() {
        bail!("the answer names no paperwork (no \"paperwork\" field)");
    }
    Ok(format!("{head}; {}", check_content(content, &evidence)?))
}

/// The checks that bind an answer's content to its paperwork; returns what they established.
fn check_content(content: &Content, evidence: &Evidence) -> Result<String> {
    let pw = &evidence.paperwork;
    let (hub, trust) = evidence
        .hub_key
        .unwrap_or((pw.body.contract.body.hub, Trust::Named));
    let checked = check::answer_bound(content, pw, &hub, &evidence.chain)?;
    let log = match &evidence.log {
        Some((inclusion, note)) => inclusion_clause(pw, inclusion, note, &hub, trust)?,
        None => "; log inclusion not checked: no --inclusion and --checkpoint given".to_owned(),
    };
    Ok(format!(
        "content checked: output digest {} equals the output_sha256 of paperwork {} \
         (paperwork signed by the node, fingerprint bound, contract signed by {}){log}",
        checked.output_sha256,
        checked.paperwork,
        trust.words()
    ))
}

fn log_files(proof: &LogProof) -> Result<Option<(InclusionProof, String)>> {
    match (&proof.inclusion, &proof.checkpoint) {
        (None, None) => Ok(None),
        (Some(inclusion), Some(checkpoint)) => Ok(Some((
            serde_json::from_value(json_file(inclusion)?)
                .map_err(|e| anyhow!("{}: not an inclusion proof: {e}", inclusion.display()))?,
            checkpoint_note(read_small(checkpoint)?)?,
        ))),
        _ => bail!("--inclusion and --checkpoint go together"),
    }
}

/// `; in the hub's paperwork log at ...`, or why the proof fails.
fn inclusion_clause(
    pw: &Signed<Paperwork>,
    inclusion: &InclusionProof,
    note: &str,
    hub: &PublicKey,
    trust: Trust,
) -> Result<String> {
    let v = check::inclusion(pw, inclusion, note, hub)?;
    Ok(format!(
        "; in the hub's paperwork log at index {} of the checkpoint of size {} signed by {}",
        v.leaf_index,
        v.checkpoint.size,
        trust.words()
    ))
}

/// The answer's paperwork, the checkpoint and the paperwork's inclusion proof at its size, from
/// the hub; its key from `/stacknet/v1/hub` (with a warning) when none is pinned.
async fn fetch(hub: &str, named: &str, pinned: Option<PublicKey>) -> Result<Evidence> {
    let client = Client::new(hub)?;
    let base = client.base().to_owned();
    let hub_key = match pinned {
        Some(k) => (k, Trust::Pinned),
        None => (announced(&client).await?, Trust::Announced),
    };
    let id: stacknet_protocol::PaperworkId = named
        .parse()
        .map_err(|e| anyhow!("the answer's paperwork id {named:?}: {e}"))?;
    let paperwork = client
        .paperwork(id)
        .await
        .with_context(|| format!("{base}: paperwork {id}"))?;
    let checkpoint: LogCheckpoint = client.checkpoint().await?;
    // Proved against the size of the checkpoint just read, so later appends cannot race it.
    let inclusion = client.inclusion(id, Some(checkpoint.size)).await?;
    let chain = client
        .key_state(paperwork.body.contract.body.node_key)
        .await?
        .bindings;
    Ok(Evidence {
        paperwork,
        log: Some((inclusion, checkpoint.note)),
        hub_key: Some(hub_key),
        chain,
    })
}

/// The key the hub announces, with a warning that it was not pinned.
async fn announced(client: &Client) -> Result<PublicKey> {
    let info = client.hub_info().await?;
    eprintln!(
        "warning: hub key {} is the one {} announced, not one you pinned: pass --hub-key",
        info.hub_key.to_hex(),
        client.base()
    );
    Ok(info.hub_key)
}

fn verify_paperwork(doc: &Value, hub_key: Option<PublicKey>, proof: &LogProof) -> Result<String> {
    let pw: Signed<Paperwork> = serde_json::from_value(doc.clone()).map_err(|e| anyhow!("paperwork: {e}"))?;
    let (hub, trust) = match hub_key {
        Some(k) => (k, Trust::Pinned),
        None => (pw.body.contract.body.hub, Trust::Named),
    };
    let id = check::paperwork(&pw, &hub, &[])?;
    let included = match log_files(proof)? {
        None => String::new(),
        Some((inclusion, note)) => {
            let v = check::inclusion(&pw, &inclusion, &note, &hub)?;
            format!(
                "; in the hub's paperwork log at index {} of the signed checkpoint of size {}",
                v.leaf_index, v.checkpoint.size
            )
        }
    };
    Ok(format!(
        "valid: paperwork {id} by node {} for contract {}, {} in / {} out tokens, contract signed by {}{included}",
        pw.body.contract.body.node_key,
        pw.body.contract.body.id,
        pw.body.usage.input_tokens,
        pw.body.usage.output_tokens,
        trust.words()
    ))
}

/// `stacknet verify --follow HUB`: a light node. Polls the hub's checkpoint every `interval`,
/// checks each against the last (a consistency proof from the hub), prints what it established,
/// and stops with an error on the first alarm (a split view, a log that does not extend the last).
/// `rounds` bounds the polls (`None`: until stopped). A hub that cannot be reached is reported and
/// polled again: it proves nothing either way.
pub async fn follow(hub: &str, hub_key: Option<&str>, interval: Duration, rounds: Option<u64>) -> Result<()> {
    let client = Client::new(hub)?;
    let key = match hub_key {
        Some(k) => PublicKey::from_hex(k).map_err(|e| anyhow!("--hub-key: {e}"))?,
        None => announced(&client).await?,
    };
    let mut follower = Follower::new(client, key);
    let mut round = 0u64;
    loop {
        match follower.poll().await {
            Ok(Step::First { size, root }) => println!("checkpoint: size {size}, root {root}"),
            Ok(Step::Grew { from, to, root }) => {
                println!("consistent: size {from} -> {to}, root {root}")
            }
            Ok(Step::Same { .. } | Step::Older { .. }) => {}
            Err(FollowError::Alarm(alarm)) => bail!("ALARM: {alarm}"),
            Err(FollowError::Hub(e)) => eprintln!("warning: {e}"),
        }
        round += 1;
        if rounds.is_some_and(|r| round >= r) {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}
