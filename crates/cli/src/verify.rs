//! `stacknet verify`: offline checks of what the network hands out.
//!
//! Accepts a chat/completion response (JSON), a streamed response (the SSE text, whose last data
//! chunk carries the fingerprint), or a paperwork (signed JSON), and for a paperwork, its inclusion
//! proof against a signed checkpoint of the hub's log. Nothing is fetched: every check uses only the
//! files given and, optionally, the hub key you trust.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use stacknet_api::types::LogCheckpoint;
use stacknet_hub::log::{log_origin, paperwork_leaf, verify_inclusion_response};
use stacknet_protocol::fingerprint::Attribution;
use stacknet_protocol::paperwork::{check_paperwork, Paperwork};
use stacknet_protocol::{FingerprintId, PublicKey, Signed};

/// The largest document read: responses with long answers are still far below this.
pub const MAX_VERIFY_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// A paperwork's inclusion proof (`GET /stacknet/v1/log/proof/inclusion`) and the checkpoint
/// (`GET /stacknet/v1/log/checkpoint`, or its signed note alone) it is checked against.
#[derive(Debug, Clone, Default)]
pub struct LogProof {
    pub inclusion: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
}

fn read_small(path: &std::path::Path) -> Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .take(MAX_VERIFY_INPUT_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text)
}

/// Returns the one-line verdict for a valid document; an error says why it is not.
pub fn verify(input: Option<PathBuf>, hub_key: Option<&str>, proof: &LogProof) -> Result<String> {
    let mut text = String::new();
    match input.as_deref() {
        None => std::io::stdin()
            .take(MAX_VERIFY_INPUT_BYTES)
            .read_to_string(&mut text)
            .context("reading stdin")?,
        Some(p) if p.as_os_str() == "-" => std::io::stdin()
            .take(MAX_VERIFY_INPUT_BYTES)
            .read_to_string(&mut text)
            .context("reading stdin")?,
        Some(p) => std::fs::File::open(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .take(MAX_VERIFY_INPUT_BYTES)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", p.display()))?,
    };
    let hub_key = hub_key
        .map(PublicKey::from_hex)
        .transpose()
        .map_err(|e| anyhow!("--hub-key: {e}"))?;
    let doc = document(&text)?;
    if doc.get("attribution").is_some() {
        verify_response(&doc)
    } else if doc.get("contract").is_some() && doc.get("node_key").is_some() {
        verify_paperwork(&doc, hub_key, proof)
    } else {
        bail!("not a response with a fingerprint and attribution, nor a paperwork")
    }
}

/// The JSON document, or from an SSE transcript the last `data:` chunk that has an attribution.
fn document(text: &str) -> Result<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    let mut chunks = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok());
    chunks
        .rfind(|c| c.get("attribution").is_some())
        .ok_or_else(|| anyhow!("input is neither JSON nor an event stream with an attribution chunk"))
}

fn verify_response(doc: &Value) -> Result<String> {
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
    Ok(format!(
        "valid: {claimed} signed by node {} ({}) for stack {}, contract {}, at {}",
        f.node_key,
        attribution.signed_by.0.to_tagged(),
        f.stack,
        f.contract,
        f.timestamp
    ))
}

fn verify_paperwork(doc: &Value, hub_key: Option<PublicKey>, proof: &LogProof) -> Result<String> {
    let pw: Signed<Paperwork> = serde_json::from_value(doc.clone()).map_err(|e| anyhow!("paperwork: {e}"))?;
    let hub = hub_key.unwrap_or(pw.body.contract.body.hub);
    let id = check_paperwork(&pw, &hub).map_err(|e| anyhow!("{e}"))?.id;
    let trust = if hub_key.is_some() {
        "the hub key you gave"
    } else {
        "the hub key it names (pass --hub-key to pin one)"
    };
    let included = match (&proof.inclusion, &proof.checkpoint) {
        (None, None) => String::new(),
        (Some(inclusion), Some(checkpoint)) => {
            let leaf = paperwork_leaf(&pw).map_err(|e| anyhow!("{e}"))?;
            let response: Value = serde_json::from_str(&read_small(inclusion)?)
                .map_err(|e| anyhow!("{}: {e}", inclusion.display()))?;
            let text = read_small(checkpoint)?;
            // The endpoint's JSON, or the signed note on its own.
            let note = match serde_json::from_str::<Value>(&text) {
                Ok(v) => {
                    serde_json::from_value::<LogCheckpoint>(v)
                        .map_err(|e| anyhow!("{}: {e}", checkpoint.display()))?
                        .note
                }
                Err(_) => text,
            };
            let v = verify_inclusion_response(&leaf, &response, &note, &log_origin(&hub), &hub)
                .map_err(|e| anyhow!("inclusion proof: {e}"))?;
            format!(
                "; in the hub's paperwork log at index {} of the signed checkpoint of size {}",
                v.leaf_index, v.checkpoint.size
            )
        }
        _ => bail!("--inclusion and --checkpoint go together"),
    };
    Ok(format!(
        "valid: paperwork {id} by node {} for contract {}, {} in / {} out tokens, contract signed by {trust}{included}",
        pw.body.contract.body.node_key,
        pw.body.contract.body.id,
        pw.body.usage.input_tokens,
        pw.body.usage.output_tokens
    ))
}
