//! Deterministic example objects, signed with fixed keys: the golden vectors of docs/PROTOCOL.md.
//!
//! Kept in the library (not only in tests) so that the docs, the golden tests and other crates' tests
//! build the very same objects. Every key here is public knowledge: never use them for anything real.

use serde::Serialize;
use serde_json::Value;

use crate::attestation::{Attestation, CheckResult, Telemetry, Verdict};
use crate::contract::{AttributionSplit, Parties, PriceTerms, PromptContract, Usage, Workload};
use crate::filing::{self, Filing, FilingVerdict, NodeAction, NodeRequest};
use crate::fingerprint::{Attribution, Fingerprint};
use crate::ids::{ContractId, InjectionId, PaperworkId, SkillId, StackId, UserId};
use crate::keys::SecretKey;
use crate::paperwork::{BackendInfo, Paperwork, Resources};
use crate::signing::{signing_bytes, Domain, SignError, Signed, SignedBody};
use crate::values::{Amount, Nonce, Sha256Digest, Timestamp};
use crate::wire::{Hello, Limits, ModelOffer};

/// The hub key of the examples: seed of 32 bytes 0x01.
pub fn hub_key() -> SecretKey {
    SecretKey::from_seed(&[1; 32])
}

/// The Node Key of the examples: seed of 32 bytes 0x02.
pub fn node_key() -> SecretKey {
    SecretKey::from_seed(&[2; 32])
}

/// A validator key: seed of 32 bytes 0x03.
pub fn validator_key() -> SecretKey {
    SecretKey::from_seed(&[3; 32])
}

/// A guardian key: seed of 32 bytes 0x04.
pub fn guardian_key() -> SecretKey {
    SecretKey::from_seed(&[4; 32])
}

fn at(ms: i64) -> Timestamp {
    // 2026-11-22T10:00:00.000Z plus `ms`; in range by construction.
    Timestamp::from_unix_ms(1_795_341_600_000 + ms).expect("example times are in range")
}

fn id_bytes(b: u8) -> [u8; 16] {
    [b; 16]
}

/// The network's default split, [`AttributionSplit::DEFAULT`].
pub fn default_split() -> AttributionSplit {
    AttributionSplit::DEFAULT
}

pub fn contract() -> PromptContract {
    PromptContract {
        id: ContractId::from_digest(id_bytes(0xc7)),
        hub: hub_key().public_key(),
        stack: StackId::from_digest(id_bytes(0x5a)),
        user: UserId::from_digest(id_bytes(0x0e)),
        node_key: node_key().public_key().node_key_id(),
        workload: Workload::Chat,
        model: "smollm2-135m-instruct".to_owned(),
        price: PriceTerms {
            input_per_mtok: Amount::from_micros(100_000),
            output_per_mtok: Amount::from_micros(400_000),
            per_request: Amount::ZERO,
            per_unit: Amount::ZERO,
        },
        max_cost: Amount::from_micros(2_000),
        split: default_split(),
        parties: Parties {
            node_referrer: Some(StackId::from_digest(id_bytes(0x6b))),
            ..Parties::default()
        },
        skills: vec![SkillId::from_digest(id_bytes(0x51))],
        skill_royalties_bps: Vec::new(),
        injections: vec![InjectionId::from_digest(id_bytes(0x1a))],
        created_at: at(0),
        expires_at: at(60_000),
        nonce: Nonce([0x9c; 16]),
    }
}

pub fn signed_contract() -> Result<Signed<PromptContract>, SignError> {
    Signed::sign(contract(), &hub_key())
}

pub fn attribution() -> Result<Attribution, SignError> {
    let c = contract();
    Fingerprint::new(c.stack, c.node_key, c.skills, c.injections, at(1_250), c.id).sign(&node_key())
}

/// The canonical JSON (RFC 8785) of the `choices` of the golden paperwork's answer, whose SHA-256
/// is its `output_sha256`.
pub const GOLDEN_CHAT_CHOICES: &str = r#"[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hello! How can I help you today?","role":"assistant"}}]"#;

pub fn paperwork() -> Result<Signed<Paperwork>, SignError> {
    let body = Paperwork {
        contract: signed_contract()?,
        node_key: node_key().public_key(),
        request_sha256: Sha256Digest::of(
            br#"{"messages":[{"content":"Hi","role":"user"}],"model":"smollm2-135m-instruct"}"#,
        ),
        // The chat output digest: SHA-256 of the canonical JSON of the answer's `choices`.
        output_sha256: Sha256Digest::of(GOLDEN_CHAT_CHOICES.as_bytes()),
        usage: Usage {
            input_tokens: 31,
            output_tokens: 9,
            units: 0,
        },
        backend: BackendInfo {
            id: "llama.cpp".to_owned(),
            version: "b4000".to_owned(),
            model: "smollm2-135m-instruct".to_owned(),
            model_sha256: Some(Sha256Digest([0xb1; 32])),
        },
        resources: Resources {
            duration_ms: 412,
            warm: true,
            hardware: "cpu-x86_64-v3".to_owned(),
        },
        fingerprint: attribution()?,
        finished_at: at(1_300),
        cancelled: false,
        commitment: None,
    };
    Signed::sign(body, &node_key())
}

pub fn attestation() -> Result<Signed<Attestation>, SignError> {
    let pw = paperwork()?;
    let body = Attestation {
        paperwork: pw.id()?,
        contract: pw.body.contract.body.id,
        node_key: pw.body.contract.body.node_key,
        validator: validator_key().public_key(),
        verdict: Verdict::Pass,
        checks: vec![CheckResult {
            name: "teacher_forced_score".to_owned(),
            passed: true,
            score_ppm: Some(981_000),
            detail: "9 of 9 tokens within the model's top-8".to_owned(),
            inconclusive: false,
            code: None,
            evidence: Vec::new(),
        }],
        created_at: at(90_000),
    };
    Signed::sign(body, &validator_key())
}

pub fn telemetry() -> Result<Signed<Telemetry>, SignError> {
    let body = Telemetry {
        guardian: guardian_key().public_key(),
        node_key: node_key().public_key().node_key_id(),
        window_start: at(0),
        window_end: at(3_600_000),
        probes: 60,
        successes: 59,
        errors: 0,
        timeouts: 1,
        latency_p50_ms: 180,
        latency_p99_ms: 950,
        created_at: at(3_600_500),
        nonce: Nonce([0x7e; 16]),
        wrong: 0,
        warm_failures: 0,
        ttft_p50_ms: 0,
        tokens_per_s_p50: 0,
        uptime_ppm: 0,
    };
    Signed::sign(body, &guardian_key())
}

pub fn filing() -> Result<Signed<Filing>, SignError> {
    let mut paperwork = vec![paperwork()?.id()?, PaperworkId::from_digest(id_bytes(0xf0))];
    paperwork.sort();
    let body = Filing {
        node_key: node_key().public_key(),
        hub: hub_key().public_key(),
        paperwork,
        created_at: at(7_200_000),
        nonce: Nonce([0x3d; 16]),
    };
    Signed::sign(body, &node_key())
}

/// The hub's signed verdict on the golden paperwork of the golden filing: refused for now.
pub fn filing_verdict() -> Result<Signed<FilingVerdict>, SignError> {
    let body = FilingVerdict {
        hub: hub_key().public_key(),
        node_key: node_key().public_key(),
        filing: filing()?.digest()?,
        paperwork: paperwork()?.id()?,
        verdict: filing::Verdict::Refused {
            reason: "still in its challenge window: it can be filed from 2026-11-22T12:10:00.000Z".to_owned(),
            retry: true,
        },
    };
    Signed::sign(body, &hub_key())
}

pub fn node_request() -> Result<Signed<NodeRequest>, SignError> {
    let body = NodeRequest {
        acts_for: None,
        node_key: node_key().public_key(),
        hub: hub_key().public_key(),
        action: NodeAction::Redeem {
            amount: Some(Amount::from_micros(12_500_000)),
            destination: "acct_operator_42".to_owned(),
        },
        created_at: at(7_300_000),
        nonce: Nonce([0x5a; 16]),
    };
    Signed::sign(body, &node_key())
}

pub fn hello() -> Result<Signed<Hello>, SignError> {
    let body = Hello {
        node_key: node_key().public_key(),
        hub: hub_key().public_key(),
        challenge: Nonce([0x42; 16]),
        models: vec![ModelOffer {
            name: "smollm2-135m-instruct".to_owned(),
            workloads: vec![Workload::Chat, Workload::Completion],
            backend: "llama.cpp".to_owned(),
            model_sha256: Some(Sha256Digest([0xb1; 32])),
            tool: None,
        }],
        max_concurrency: 4,
        software: "stacknet/0.1.0".to_owned(),
        created_at: at(500),
        limits: Some(Limits::OURS),
    };
    Signed::sign(body, &node_key())
}

/// The key that bought the example Node Key: seed of 32 bytes 0x05.
pub fn buyer_key() -> SecretKey {
    SecretKey::from_seed(&[5; 32])
}

/// The example Node Key's offer: a `list` request signed by it.
pub fn offer() -> Result<Signed<NodeRequest>, SignError> {
    let body = NodeRequest {
        acts_for: None,
        node_key: node_key().public_key(),
        hub: hub_key().public_key(),
        action: NodeAction::List {
            price: Amount::from_micros(250_000_000),
            proceeds: StackId::from_digest(id_bytes(0x5e)),
        },
        created_at: at(8_000_000),
        nonce: Nonce([0x6b; 16]),
    };
    Signed::sign(body, &node_key())
}

/// The example Node Key's first sale: the buyer's key accepts [`offer`].
pub fn binding() -> Result<Signed<crate::binding::KeyBinding>, SignError> {
    let body = crate::binding::KeyBinding {
        node: node_key().public_key().node_key_id(),
        seq: 1,
        from_key: node_key().public_key(),
        to_key: buyer_key().public_key(),
        offer: offer()?.digest()?,
        hub: hub_key().public_key(),
        created_at: at(8_100_000),
    };
    Signed::sign(body, &buyer_key())
}

/// One golden example: what a second implementation needs to check its encoder and signer.
#[derive(Debug, Clone, Serialize)]
pub struct Golden {
    pub name: &'static str,
    pub domain: &'static str,
    pub public_key: String,
    pub signed_bytes_hex: String,
    pub signature: String,
    /// The signed object as it travels (body fields plus `signature`).
    pub object: Value,
}

fn golden<T: SignedBody>(name: &'static str, s: &Signed<T>, key: &SecretKey) -> Result<Golden, SignError> {
    Ok(Golden {
        name,
        domain: T::DOMAIN.tag(),
        public_key: key.public_key().to_hex(),
        signed_bytes_hex: hex::encode(s.signing_bytes()?),
        signature: s.signature.to_hex(),
        object: serde_json::to_value(s).map_err(|e| SignError::Encoding(e.to_string()))?,
    })
}

/// Every golden example, in the order docs/PROTOCOL.md lists them.
pub fn all() -> Result<Vec<Golden>, SignError> {
    let a = attribution()?;
    let fingerprint = Golden {
        name: "fingerprint",
        domain: Domain::Fingerprint.tag(),
        public_key: node_key().public_key().to_hex(),
        signed_bytes_hex: hex::encode(signing_bytes(Domain::Fingerprint, &a.fingerprint)?),
        signature: a.signature.to_hex(),
        object: serde_json::to_value(&a).map_err(|e| SignError::Encoding(e.to_string()))?,
    };
    Ok(vec![
        golden("contract", &signed_contract()?, &hub_key())?,
        fingerprint,
        golden("paperwork", &paperwork()?, &node_key())?,
        golden("attestation", &attestation()?, &validator_key())?,
        golden("telemetry", &telemetry()?, &guardian_key())?,
        golden("filing", &filing()?, &node_key())?,
        golden("hello", &hello()?, &node_key())?,
        golden("node-request", &node_request()?, &node_key())?,
        golden("filing-verdict", &filing_verdict()?, &hub_key())?,
        golden("binding", &binding()?, &buyer_key())?,
    ])
}
