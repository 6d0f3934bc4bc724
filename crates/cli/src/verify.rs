//! `stacknet verify`: checks of what the network hands out.
//!
//! Accepts a chat/completion response (JSON), a streamed response (the SSE text, whose last data
//! chunk carries the fingerprint and the paperwork id), or a paperwork (signed JSON), and for a
//! paperwork, its inclusion proof against a signed checkpoint of the hub's log.
//!
//! An answer's fingerprint alone does not cover its content: the content is checked against the
//! `output_sha256` of the answer's paperwork, given as a file (`--paperwork`, offline) or fetched
//! with its inclusion proof and checkpoint from the hub (`--hub`). The verdict names every check it
//! made and every check it could not make.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use stacknet_api::output::{digest_of_response, digest_of_stream};
use stacknet_api::paths;
use stacknet_api::types::{ErrorBody, HubInfo, LogCheckpoint};
use stacknet_hub::log::{log_origin, paperwork_leaf, verify_inclusion_response};
use stacknet_protocol::fingerprint::Attribution;
use stacknet_protocol::paperwork::{check_paperwork, Paperwork};
use stacknet_protocol::{FingerprintId, PublicKey, Signed};

/// The largest document read (a file, stdin or a hub's answer): long answers are far below this.
pub const MAX_VERIFY_INPUT_BYTES: u64 = 64 * 1024 * 1024;

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

/// The content of an answer as the client received it.
enum Content {
    Whole(Value),
    Stream(Vec<Value>),
}

/// A paperwork and, when there is one, its inclusion proof and checkpoint note.
struct Evidence {
    paperwork: Signed<Paperwork>,
    log: Option<(Value, String)>,
    hub_key: Option<(PublicKey, Trust)>,
}

fn read_limited(reader: impl Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_VERIFY_INPUT_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > MAX_VERIFY_INPUT_BYTES {
        bail!("{what} is larger than {MAX_VERIFY_INPUT_BYTES} bytes");
    }
    String::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8"))
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

/// Returns the one-line verdict for a valid document; an error says why it is not.
pub async fn verify(options: &VerifyOptions) -> Result<String> {
    let text = match options.input.as_deref() {
        Some(p) if p.as_os_str() != "-" => read_small(p)?,
        _ => read_limited(std::io::stdin(), "stdin")?,
    };
    let hub_key = options
        .hub_key
        .as_deref()
        .map(PublicKey::from_hex)
        .transpose()
        .map_err(|e| anyhow!("--hub-key: {e}"))?;
    let (doc, content) = document(&text)?;
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

/// The JSON document, or from an SSE transcript the last `data:` chunk that has an attribution
/// and every chunk, to recompute the output digest from.
fn document(text: &str) -> Result<(Value, Content)> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok((v.clone(), Content::Whole(v)));
    }
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect();
    let last = chunks
        .iter()
        .rfind(|c| c.get("attribution").is_some())
        .cloned()
        .ok_or_else(|| anyhow!("input is neither JSON nor an event stream with an attribution chunk"))?;
    Ok((last, Content::Stream(chunks)))
}

async fn verify_answer(
    doc: &Value,
    content: &Content,
    hub_key: Option<PublicKey>,
    options: &VerifyOptions,
) -> Result<String> {
    let claimed: FingerprintId = doc
        .get("fingerprint")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the response has no \"fingerprint\""))?
        .parse()
        .map_err(|e| anyhow!("fingerprint: {e}"))?;
    let attribution: Attribution =
        serde_json::from_value(doc["attribution"].clone()).map_err(|e| anyhow!("attribution: {e}"))?;
    attribution.verify_claim(claimed).map_err(|e| anyhow!("{e}"))?;
    let f = &attribution.fingerprint;
    let head = format!(
        "valid: {claimed} signed by node {} ({}) for stack {}, contract {}, at {}",
        f.node_key,
        attribution.signed_by.0.to_tagged(),
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
    let named = named.ok_or_else(|| anyhow!("the answer names no paperwork (no \"paperwork\" field)"))?;
    Ok(format!(
        "{head}; {}",
        check_content(claimed, named, content, &evidence)?
    ))
}

/// The checks that bind an answer's content to its paperwork; returns what they established.
fn check_content(
    claimed: FingerprintId,
    named: &str,
    content: &Content,
    evidence: &Evidence,
) -> Result<String> {
    let pw = &evidence.paperwork;
    let (hub, trust) = evidence
        .hub_key
        .unwrap_or((pw.body.contract.body.hub, Trust::Named));
    let checked = check_paperwork(pw, &hub).map_err(|e| anyhow!("paperwork: {e}"))?;
    if checked.id.to_string() != named {
        bail!("the paperwork is {}, but the answer names {named}", checked.id);
    }
    if checked.fingerprint != claimed {
        bail!(
            "paperwork {} carries fingerprint {}, but the answer's is {claimed}",
            checked.id,
            checked.fingerprint
        );
    }
    let workload = pw.body.contract.body.workload;
    let got = match content {
        Content::Whole(body) => digest_of_response(workload, body),
        Content::Stream(chunks) => digest_of_stream(workload, chunks),
    }
    .map_err(|e| anyhow!("cannot compute the output digest: {e}"))?;
    let signed = pw.body.output_sha256;
    if got != signed {
        bail!(
            "the content's output digest {got} differs from the output_sha256 {signed} of paperwork {}: \
             the content is not what the node produced",
            checked.id
        );
    }
    let log = match &evidence.log {
        Some((inclusion, note)) => inclusion_clause(pw, inclusion, note, &hub, trust)?,
        None => "; log inclusion not checked: no --inclusion and --checkpoint given".to_owned(),
    };
    Ok(format!(
        "content checked: output digest {got} equals the output_sha256 of paperwork {} \
         (paperwork signed by the node, fingerprint bound, contract signed by {}){log}",
        checked.id,
        trust.words()
    ))
}

fn log_files(proof: &LogProof) -> Result<Option<(Value, String)>> {
    match (&proof.inclusion, &proof.checkpoint) {
        (None, None) => Ok(None),
        (Some(inclusion), Some(checkpoint)) => Ok(Some((
            json_file(inclusion)?,
            checkpoint_note(read_small(checkpoint)?)?,
        ))),
        _ => bail!("--inclusion and --checkpoint go together"),
    }
}

/// `; in the hub's paperwork log at ...`, or why the proof fails.
fn inclusion_clause(
    pw: &Signed<Paperwork>,
    inclusion: &Value,
    note: &str,
    hub: &PublicKey,
    trust: Trust,
) -> Result<String> {
    let leaf = paperwork_leaf(pw).map_err(|e| anyhow!("{e}"))?;
    let v = verify_inclusion_response(&leaf, inclusion, note, &log_origin(hub), hub)
        .map_err(|e| anyhow!("inclusion proof: {e}"))?;
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
    let base = hub.trim_end_matches('/');
    let http = reqwest::Client::new();
    let hub_key = match pinned {
        Some(k) => (k, Trust::Pinned),
        None => {
            let info: HubInfo =
                serde_json::from_value(get_json(&http, &format!("{base}{}", paths::HUB_INFO)).await?)
                    .map_err(|e| anyhow!("{base}{}: {e}", paths::HUB_INFO))?;
            eprintln!(
                "warning: hub key {} is the one {base} announced, not one you pinned: pass --hub-key",
                info.hub_key.to_hex()
            );
            (info.hub_key, Trust::Announced)
        }
    };
    let id: stacknet_protocol::PaperworkId = named
        .parse()
        .map_err(|e| anyhow!("the answer's paperwork id {named:?}: {e}"))?;
    let pw_url = format!("{base}{}", paths::paperwork(&id));
    let paperwork = serde_json::from_value(get_json(&http, &pw_url).await?)
        .map_err(|e| anyhow!("{pw_url}: not a paperwork: {e}"))?;
    let cp_url = format!("{base}{}", paths::LOG_CHECKPOINT);
    let checkpoint: LogCheckpoint =
        serde_json::from_value(get_json(&http, &cp_url).await?).map_err(|e| anyhow!("{cp_url}: {e}"))?;
    // Proved against the size of the checkpoint just read, so later appends cannot race it.
    let inclusion = get_json(
        &http,
        &format!(
            "{base}{}?paperwork={id}&tree_size={}",
            paths::LOG_INCLUSION,
            checkpoint.size
        ),
    )
    .await?;
    Ok(Evidence {
        paperwork,
        log: Some((inclusion, checkpoint.note)),
        hub_key: Some(hub_key),
    })
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading {url}"))? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_VERIFY_INPUT_BYTES {
            bail!("{url} answered more than {MAX_VERIFY_INPUT_BYTES} bytes");
        }
    }
    let v: Value =
        serde_json::from_slice(&body).with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            ErrorBody::message_of(&v).unwrap_or_else(|| "no error message".to_owned())
        );
    }
    Ok(v)
}

fn verify_paperwork(doc: &Value, hub_key: Option<PublicKey>, proof: &LogProof) -> Result<String> {
    let pw: Signed<Paperwork> = serde_json::from_value(doc.clone()).map_err(|e| anyhow!("paperwork: {e}"))?;
    let (hub, trust) = match hub_key {
        Some(k) => (k, Trust::Pinned),
        None => (pw.body.contract.body.hub, Trust::Named),
    };
    let id = check_paperwork(&pw, &hub).map_err(|e| anyhow!("{e}"))?.id;
    let included = match log_files(proof)? {
        None => String::new(),
        Some((inclusion, note)) => {
            let leaf = paperwork_leaf(&pw).map_err(|e| anyhow!("{e}"))?;
            let v = verify_inclusion_response(&leaf, &inclusion, &note, &log_origin(&hub), &hub)
                .map_err(|e| anyhow!("inclusion proof: {e}"))?;
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
