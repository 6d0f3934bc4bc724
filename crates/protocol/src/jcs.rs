//! Canonical JSON, RFC 8785 (JCS).
//!
//! Two entry points:
//! - [`canonicalize`] is RFC 8785 as written: numbers are IEEE-754 doubles printed the ECMAScript way,
//!   so an integer above 2^53 - 1 comes out changed. It is used to hash foreign JSON (a client's request).
//! - [`canonicalize_signed`] is what every signed object goes through: it refuses any number that is not
//!   an integer of magnitude at most 2^53 - 1, so a signed value can never be silently altered by the
//!   encoding. Amounts travel as decimal strings for that reason.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// The largest integer a double represents exactly together with all smaller ones: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JcsError {
    #[error("number {number} at {path} is not allowed in signed JSON: only integers up to 2^53-1 are")]
    UnsafeNumber { path: String, number: String },
    #[error("JSON number {0} cannot be represented as a double")]
    NotRepresentable(String),
}

/// RFC 8785 canonical form of `value`.
pub fn canonicalize(value: &Value) -> Result<String, JcsError> {
    let mut out = String::new();
    write_value(value, &mut out, &mut Path::default(), false)?;
    Ok(out)
}

/// RFC 8785 canonical form, refusing numbers that are not safe integers (see the module docs).
pub fn canonicalize_signed(value: &Value) -> Result<String, JcsError> {
    let mut out = String::new();
    write_value(value, &mut out, &mut Path::default(), true)?;
    Ok(out)
}

/// A JSON pointer to where we are, built only when an error needs it.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn render(&self) -> String {
        if self.0.is_empty() {
            "/".to_owned()
        } else {
            self.0.iter().fold(String::new(), |acc, p| acc + "/" + p)
        }
    }
}

fn write_value(value: &Value, out: &mut String, path: &mut Path, strict: bool) -> Result<(), JcsError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out, path, strict)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                path.0.push(i.to_string());
                write_value(item, out, path, strict)?;
                path.0.pop();
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out, path, strict)?,
    }
    Ok(())
}

fn write_object(
    map: &Map<String, Value>,
    out: &mut String,
    path: &mut Path,
    strict: bool,
) -> Result<(), JcsError> {
    // RFC 8785 3.2.3: members sorted by the UTF-16 code units of their names, not by UTF-8 bytes
    // (the two orders differ for characters above U+FFFF against U+E000..U+FFFF).
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|a, b| cmp_utf16(a.0, b.0));
    out.push('{');
    for (i, (key, item)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(key, out);
        out.push(':');
        path.0.push(key.clone());
        write_value(item, out, path, strict)?;
        path.0.pop();
    }
    out.push('}');
    Ok(())
}

fn cmp_utf16(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn write_number(n: &Number, out: &mut String, path: &Path, strict: bool) -> Result<(), JcsError> {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE_INTEGER {
            let _ = write!(out, "{u}");
            return Ok(());
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_SAFE_INTEGER {
            let _ = write!(out, "{i}");
            return Ok(());
        }
    }
    if strict {
        return Err(JcsError::UnsafeNumber {
            path: path.render(),
            number: n.to_string(),
        });
    }
    let f = n
        .as_f64()
        .ok_or_else(|| JcsError::NotRepresentable(n.to_string()))?;
    if !f.is_finite() {
        return Err(JcsError::NotRepresentable(n.to_string()));
    }
    if f == 0.0 {
        // ECMAScript prints -0 as "0".
        out.push('0');
    } else {
        let mut buf = ryu_js::Buffer::new();
        out.push_str(buf.format_finite(f));
    }
    Ok(())
}

/// RFC 8785 3.2.2.2: only `"`, `\` and control characters are escaped; the short forms where JSON has
/// them, else `\u00xx` in lowercase hex. Everything else, including non-ASCII, is written as is.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{09}' => out.push_str("\\t"),
            '\u{0a}' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0d}' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
