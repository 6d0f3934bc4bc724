//! Signed checkpoints of the paperwork log: a c2sp.org/tlog-checkpoint body inside a
//! c2sp.org/signed-note, signed with Ed25519 (signature type 0x01).
//!
//! ```text
//! stacknet.example/log
//! 8
//! XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=
//!
//! — stacknet.example/log <base64(key id || Ed25519 signature)>
//! ```
//!
//! The format is the one the Go ecosystem (golang.org/x/mod/sumdb/note, transparency-dev witnesses)
//! reads, so any witness or monitor built for it can follow our log without knowing Stacknet.
//!
//! Choices the specs leave open:
//! - Extension lines are accepted and kept in [`Checkpoint::extensions`] so that a body round-trips
//!   byte for byte; Stacknet writes none and gives them no meaning (the spec calls them unauditable).
//! - Signatures by other keys (witness cosignatures, a rotated key) are ignored, as the spec requires;
//!   every signature by the expected name and key id must verify, and at least one must be present.
//! - The signed-note checks (UTF-8, no control characters but newline, key names without spaces or
//!   `+`) apply on signing as well as on opening, so we never emit what we would refuse.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::keys::{
    decode_hex_array, KeyError, PublicKey, SecretKey, Signature, PUBLIC_KEY_LEN_BYTES, SIGNATURE_LEN_BYTES,
};
use crate::merkle::{self, Hash, MerkleError};

/// Signature type identifier byte of Ed25519 in c2sp.org/signed-note.
pub const ED25519_SIGNATURE_TYPE: u8 = 0x01;
/// Length of a note key id: the first bytes of SHA-256(name || 0x0A || type || public key).
pub const KEY_ID_LEN_BYTES: usize = 4;
/// Signature lines accepted in one note; the spec asks for at least 16, Go's reader stops at 100.
pub const MAX_NOTE_SIGNATURES: usize = 100;
/// Em dash (U+2014) and a space: the start of every signature line.
const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";

/// Why a note or checkpoint was refused. Every input, however mangled, ends here and never in a panic.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("control character {byte:#04x} at byte {at}; only newline is allowed")]
    ControlCharacter { byte: u8, at: usize },
    #[error("no blank line separates the note text from its signatures")]
    MissingBlankLine,
    #[error("note text must be non-empty, end in a newline and not end in a blank line")]
    BadText,
    #[error("note has no signature lines")]
    NoSignatures,
    #[error("signature line {line} is not `— <name> <base64>`")]
    MalformedSignatureLine { line: usize },
    #[error("note has {got} signature lines, more than the {max} accepted")]
    TooManySignatures { max: usize, got: usize },
    #[error("key name {name:?} is empty or contains a space or '+'")]
    BadKeyName { name: String },
    #[error("no signature by {name} with key id {key_id}")]
    NoMatchingSignature { name: String, key_id: String },
    #[error("signature by {name} with key id {key_id} does not verify")]
    BadSignature { name: String, key_id: String },
    #[error("checkpoint has {got} lines, needs at least 3 (origin, size, root hash)")]
    MissingLines { got: usize },
    #[error("origin {origin:?} is empty or contains a control character")]
    BadOrigin { origin: String },
    #[error("tree size {line:?} is not a canonical decimal u64")]
    BadSize { line: String },
    #[error("root hash {line:?} is not standard base64")]
    BadRootEncoding { line: String },
    #[error("root hash: {0}")]
    BadRoot(#[from] MerkleError),
    #[error("extension line {index} is empty or contains a control character")]
    BadExtension { index: usize },
    #[error("verifier key is malformed: {reason}")]
    BadVerifierKey { reason: &'static str },
    #[error("verifier key: {0}")]
    Key(#[from] KeyError),
}

/// A log's signed statement of its size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `stacknet.example/log`; by convention also the signing key's name.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 root hash of the first `size` leaves.
    pub root: Hash,
    /// Opaque, non-empty lines after the root hash (see the module documentation).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n`, then one line per extension.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Checks what the types cannot: the origin and extension lines are single non-empty lines.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if self.origin.is_empty() || has_control(&self.origin) {
            return Err(CheckpointError::BadOrigin {
                origin: self.origin.clone(),
            });
        }
        match self
            .extensions
            .iter()
            .position(|line| line.is_empty() || has_control(line))
        {
            Some(index) => Err(CheckpointError::BadExtension { index }),
            None => Ok(()),
        }
    }

    /// Parses a note text. This does not check any signature: use [`Checkpoint::open`] on input.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        check_controls(text)?;
        let content = text.strip_suffix('\n').ok_or(CheckpointError::BadText)?;
        let lines: Vec<&str> = content.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::MissingLines { got: lines.len() });
        };
        let root_bytes = STANDARD
            .decode(root)
            .map_err(|_| CheckpointError::BadRootEncoding {
                line: (*root).to_owned(),
            })?;
        let checkpoint = Self {
            origin: (*origin).to_owned(),
            size: parse_size(size)?,
            root: merkle::hash_from_slice(&root_bytes)?,
            extensions: extensions.iter().map(|line| (*line).to_owned()).collect(),
        };
        checkpoint.validate()?;
        Ok(checkpoint)
    }

    /// The whole signed note: body, blank line, one signature line by `name`.
    pub fn sign(&self, name: &str, key: &SecretKey) -> Result<String, CheckpointError> {
        self.validate()?;
        sign_note(&self.body(), name, key)
    }

    /// Verifies a signed note against the key the caller trusts for `name`, then parses its body.
    /// The caller still decides whether the origin is the log it expects.
    pub fn open(note: &str, name: &str, key: &PublicKey) -> Result<Self, CheckpointError> {
        Self::parse_body(open_note(note, name, key)?)
    }
}

/// Signs any note text (non-empty, newline-terminated) and returns text + blank line + signature line.
pub fn sign_note(text: &str, name: &str, key: &SecretKey) -> Result<String, CheckpointError> {
    check_name(name)?;
    check_text(text)?;
    let signature = key.sign(text.as_bytes()).to_bytes();
    let mut blob = Vec::with_capacity(KEY_ID_LEN_BYTES + signature.len());
    blob.extend_from_slice(&key_id(name, &key.public_key()));
    blob.extend_from_slice(&signature);
    Ok(format!(
        "{text}\n{SIGNATURE_LINE_PREFIX}{name} {}\n",
        STANDARD.encode(blob)
    ))
}

/// Checks a signed note's syntax and the signatures by (`name`, `key`); returns the verified text.
pub fn open_note<'a>(note: &'a str, name: &str, key: &PublicKey) -> Result<&'a str, CheckpointError> {
    check_name(name)?;
    check_controls(note)?;
    // Signature lines are never empty, so the last blank line is the separator.
    let split = note.rfind("\n\n").ok_or(CheckpointError::MissingBlankLine)?;
    let (text, rest) = note.split_at(split + 1);
    let signatures = rest.strip_prefix('\n').ok_or(CheckpointError::MissingBlankLine)?;
    check_text(text)?;
    if signatures.is_empty() {
        return Err(CheckpointError::NoSignatures);
    }
    let lines = signatures.split_inclusive('\n');
    let count = lines.clone().count();
    if count > MAX_NOTE_SIGNATURES {
        return Err(CheckpointError::TooManySignatures {
            max: MAX_NOTE_SIGNATURES,
            got: count,
        });
    }
    let want_id = key_id(name, key);
    let mut verified = false;
    for (index, line) in lines.enumerate() {
        let malformed = CheckpointError::MalformedSignatureLine { line: index + 1 };
        let (line_name, id, signature) = parse_signature_line(line).ok_or(malformed)?;
        if line_name != name || id != want_id {
            continue; // another key: a witness, or a rotated log key
        }
        let bad = || CheckpointError::BadSignature {
            name: name.to_owned(),
            key_id: hex::encode(want_id),
        };
        let signature: [u8; SIGNATURE_LEN_BYTES] = signature.try_into().map_err(|_| bad())?;
        key.verify(text.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| bad())?;
        verified = true;
    }
    if !verified {
        return Err(CheckpointError::NoMatchingSignature {
            name: name.to_owned(),
            key_id: hex::encode(want_id),
        });
    }
    Ok(text)
}

/// The signed-note key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || public key)[..4].
pub fn key_id(name: &str, key: &PublicKey) -> [u8; KEY_ID_LEN_BYTES] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ED25519_SIGNATURE_TYPE])
        .chain_update(key.as_bytes())
        .finalize();
    let mut id = [0u8; KEY_ID_LEN_BYTES];
    id.copy_from_slice(&digest[..KEY_ID_LEN_BYTES]);
    id
}

/// The verifier key string of golang.org/x/mod/sumdb/note: `<name>+<hex key id>+<base64(0x01 || key)>`.
pub fn vkey_string(name: &str, key: &PublicKey) -> String {
    let mut typed = Vec::with_capacity(1 + PUBLIC_KEY_LEN_BYTES);
    typed.push(ED25519_SIGNATURE_TYPE);
    typed.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, key)),
        STANDARD.encode(typed)
    )
}

/// A parsed note verifier key: the name and Ed25519 key that checkpoints are opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub key: PublicKey,
}

impl VerifierKey {
    /// Parses a [`vkey_string`], checking the key id against the name and key, as Go's reader does.
    pub fn parse(vkey: &str) -> Result<Self, CheckpointError> {
        let malformed = || CheckpointError::BadVerifierKey {
            reason: "expected <name>+<8 hex>+<base64 key>",
        };
        let (name, rest) = vkey.split_once('+').ok_or_else(malformed)?;
        let (id_hex, key_b64) = rest.split_once('+').ok_or_else(malformed)?;
        check_name(name)?;
        let id = decode_hex_array::<KEY_ID_LEN_BYTES>(id_hex).map_err(|_| malformed())?;
        let typed = STANDARD.decode(key_b64).map_err(|_| malformed())?;
        let Some((&ED25519_SIGNATURE_TYPE, key_bytes)) = typed.split_first() else {
            return Err(CheckpointError::BadVerifierKey {
                reason: "not an Ed25519 (type 0x01) key",
            });
        };
        let key_bytes = <[u8; PUBLIC_KEY_LEN_BYTES]>::try_from(key_bytes).map_err(|_| {
            CheckpointError::BadVerifierKey {
                reason: "Ed25519 key is not 32 bytes",
            }
        })?;
        let key = PublicKey::from_bytes(&key_bytes)?;
        if key_id(name, &key) != id {
            return Err(CheckpointError::BadVerifierKey {
                reason: "key id does not match name and key",
            });
        }
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&vkey_string(&self.name, &self.key))
    }
}

/// `— <name> <base64>\n` into (name, key id, signature bytes); `None` if any part is malformed.
fn parse_signature_line(line: &str) -> Option<(&str, [u8; KEY_ID_LEN_BYTES], Vec<u8>)> {
    let line = line.strip_suffix('\n')?.strip_prefix(SIGNATURE_LINE_PREFIX)?;
    let (name, b64) = line.split_once(' ')?;
    check_name(name).ok()?;
    let blob = STANDARD.decode(b64).ok()?;
    let (id, signature) = blob.split_first_chunk::<KEY_ID_LEN_BYTES>()?;
    if signature.is_empty() {
        return None;
    }
    Some((name, *id, signature.to_vec()))
}

/// Tree sizes have one spelling: ASCII digits, no sign, no leading zero except `0` itself.
fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    let bad = || CheckpointError::BadSize {
        line: line.to_owned(),
    };
    let canonical = !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && (line == "0" || !line.starts_with('0'));
    if !canonical {
        return Err(bad());
    }
    line.parse().map_err(|_| bad())
}

fn check_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) || has_control(name) {
        return Err(CheckpointError::BadKeyName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), CheckpointError> {
    // A text ending in a blank line would make the separator ambiguous.
    if text == "\n" || !text.ends_with('\n') || text.ends_with("\n\n") {
        return Err(CheckpointError::BadText);
    }
    check_controls(text)
}

fn check_controls(text: &str) -> Result<(), CheckpointError> {
    match text.bytes().enumerate().find(|&(_, b)| b < 0x20 && b != b'\n') {
        Some((at, byte)) => Err(CheckpointError::ControlCharacter { byte, at }),
        None => Ok(()),
    }
}

fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20)
}
