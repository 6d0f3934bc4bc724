//! `POST /stacknet/v1/execute`: sandboxed code execution, in the shape of Piston's `execute`
//! (`language`, `version`, `files`, `stdin`, `args`, `run_timeout`, `run_cpu_time`,
//! `run_memory_limit`). The language is the model: a node offers `python`, `bash` or `javascript`
//! as models of the `CodeExecution` workload, and the request is routed like any other.
//!
//! Piston's aliases are taken (`py`, `python3`, `sh`, `node`, `js`, ...) and the request's
//! `model` is the canonical name. The compile fields Piston has are refused: every language served
//! is interpreted.

use base64::Engine as _;
use serde_json::{Map, Value};
use stacknet_protocol::contract::Workload;

use super::fields::{self, integer, object};
use super::{ApiRequest, RequestError};

/// The languages a node may offer, each with the aliases a request may name it by.
pub const LANGUAGES: [(&str, &[&str]); 3] = [
    ("python", &["python", "python3", "py"]),
    ("bash", &["bash", "sh", "shell"]),
    ("javascript", &["javascript", "js", "node", "nodejs"]),
];
/// Most files in one request.
pub const MAX_FILES: usize = 32;
/// Most bytes of all files together, decoded, and of stdin.
pub const MAX_CODE_BYTES: usize = 1024 * 1024;
/// The longest file name (a relative path, `/`-separated).
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Most program arguments, and the longest one.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_BYTES: usize = 4096;
/// The wall-time limit when the request names none, and the most any request may ask for.
pub const DEFAULT_RUN_TIMEOUT_MS: u64 = 10_000;
pub const MAX_RUN_TIMEOUT_MS: u64 = 300_000;
/// The memory limit when the request names none, and the least and most a request may ask for.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
pub const MIN_MEMORY_BYTES: u64 = 16 * 1024 * 1024;
pub const MAX_MEMORY_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// A file of the program, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeFile {
    /// A relative path: `/`-separated parts, none empty, `.` or `..`.
    pub name: String,
    pub content: Vec<u8>,
}

/// What a sandbox needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execute {
    /// The canonical language name (the request's model).
    pub language: String,
    /// The files; the first is run.
    pub files: Vec<CodeFile>,
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    pub run_timeout_ms: u64,
    /// CPU time allowed, at most the wall time (`run_cpu_time`, or the wall time).
    pub cpu_time_ms: u64,
    pub memory_bytes: u64,
}

impl Execute {
    /// Sandbox seconds the request may use: the wall-time limit, rounded up. What the escrow holds
    /// units for, and what a node's paperwork may claim at most.
    pub fn max_seconds(&self) -> u64 {
        seconds_of(self.run_timeout_ms)
    }
}

/// Sandbox seconds a wall-time limit holds: the limit in seconds, rounded up, at least 1.
pub fn seconds_of(run_timeout_ms: u64) -> u64 {
    run_timeout_ms.div_ceil(1000).max(1)
}

/// [`Execute::max_seconds`] of a request the validator has taken, read from its body without
/// validating (and decoding its files) again.
pub fn held_seconds(body: &Value) -> u64 {
    seconds_of(
        body.get("run_timeout")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_RUN_TIMEOUT_MS),
    )
}

/// The canonical name of a language or alias; `None` if no node can serve it.
pub fn canonical_language(name: &str) -> Option<&'static str> {
    LANGUAGES
        .iter()
        .find(|(_, aliases)| aliases.contains(&name.to_ascii_lowercase().as_str()))
        .map(|(canonical, _)| *canonical)
}

pub fn validate(body: Value) -> Result<(ApiRequest, Execute), RequestError> {
    let obj = object(&body)?;
    for field in ["compile_timeout", "compile_cpu_time", "compile_memory_limit"] {
        if obj.get(field).is_some_and(|v| !v.is_null()) {
            return Err(RequestError::invalid(
                field,
                format!("{field} is not supported: every language served is interpreted"),
            ));
        }
    }
    let language = match obj.get("language") {
        Some(Value::String(l)) => canonical_language(l).ok_or_else(|| {
            RequestError::invalid(
                "language",
                format!(
                    "language {l:?} is not served; the languages are {}",
                    LANGUAGES.map(|(name, _)| name).join(", ")
                ),
            )
        })?,
        Some(_) => return Err(RequestError::invalid("language", "language must be a string")),
        None => {
            return Err(RequestError::invalid(
                "language",
                "you must provide a language parameter",
            ))
        }
    };
    match obj.get("version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v.len() <= 64 => {}
        Some(_) => {
            return Err(RequestError::invalid(
                "version",
                "version must be a string such as \"*\" or \"3.11\"",
            ))
        }
    }
    let files = files(obj)?;
    let stdin = match obj.get("stdin") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.len() <= MAX_CODE_BYTES => s.clone().into_bytes(),
        Some(_) => {
            return Err(RequestError::invalid(
                "stdin",
                format!("stdin must be a string of at most {MAX_CODE_BYTES} bytes"),
            ))
        }
    };
    let args = args(obj)?;
    let run_timeout_ms =
        integer(obj, "run_timeout", 1, MAX_RUN_TIMEOUT_MS)?.unwrap_or(DEFAULT_RUN_TIMEOUT_MS);
    let cpu_time_ms = integer(obj, "run_cpu_time", 1, MAX_RUN_TIMEOUT_MS)?
        .unwrap_or(run_timeout_ms)
        .min(run_timeout_ms);
    let memory_bytes = match obj.get("run_memory_limit") {
        // Piston's "no limit".
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => DEFAULT_MEMORY_BYTES,
        _ => integer(obj, "run_memory_limit", MIN_MEMORY_BYTES, MAX_MEMORY_BYTES)?
            .unwrap_or(DEFAULT_MEMORY_BYTES),
    };
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::CodeExecution, language.to_owned(), user, 1, body);
    Ok((
        request,
        Execute {
            language: language.to_owned(),
            files,
            stdin,
            args,
            run_timeout_ms,
            cpu_time_ms,
            memory_bytes,
        },
    ))
}

fn files(obj: &Map<String, Value>) -> Result<Vec<CodeFile>, RequestError> {
    let items = match obj.get("files") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_FILES => items,
        Some(_) => {
            return Err(RequestError::invalid(
                "files",
                format!("files must be an array of 1 to {MAX_FILES} files"),
            ))
        }
        None => {
            return Err(RequestError::invalid(
                "files",
                "you must provide files: [{\"name\": \"main.py\", \"content\": \"...\"}]",
            ))
        }
    };
    let mut total = 0usize;
    let mut files: Vec<CodeFile> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = |member: &str| format!("files[{i}]{member}");
        let file = item
            .as_object()
            .ok_or_else(|| RequestError::invalid(&param(""), "each file must be an object"))?;
        let content = match file.get("content") {
            Some(Value::String(c)) => c,
            _ => {
                return Err(RequestError::invalid(
                    &param(".content"),
                    "a file's content must be a string",
                ))
            }
        };
        let content = match file.get("encoding").and_then(Value::as_str) {
            None | Some("utf8") => content.clone().into_bytes(),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(content)
                .map_err(|_| RequestError::invalid(&param(".content"), "content is not valid base64"))?,
            Some("hex") => hex::decode(content)
                .map_err(|_| RequestError::invalid(&param(".content"), "content is not valid hex"))?,
            Some(_) => {
                return Err(RequestError::invalid(
                    &param(".encoding"),
                    "encoding must be one of utf8, base64, hex",
                ))
            }
        };
        total = total.saturating_add(content.len());
        if total > MAX_CODE_BYTES {
            return Err(RequestError::invalid(
                "files",
                format!("the files come to more than {MAX_CODE_BYTES} bytes"),
            ));
        }
        let name = match file.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) => Some(n.as_str()),
            Some(_) => {
                return Err(RequestError::invalid(
                    &param(".name"),
                    "a file's name must be a string",
                ))
            }
        };
        // Piston names an unnamed file itself; so do we, per position.
        let name = match name {
            Some(n) => checked_name(n).map_err(|why| RequestError::invalid(&param(".name"), why))?,
            None => format!("file{i}.code"),
        };
        if files.iter().any(|f| f.name == name) {
            return Err(RequestError::invalid(
                &param(".name"),
                format!("two files are named {name:?}"),
            ));
        }
        files.push(CodeFile { name, content });
    }
    Ok(files)
}

/// A file name as the sandbox writes it: a relative path whose parts are plain names. Refuses what
/// could name a place outside the work directory (absolute paths, `..`) and what is not a name.
pub fn checked_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES {
        return Err(format!("a file name must be 1 to {MAX_FILE_NAME_BYTES} bytes"));
    }
    if name.starts_with('/') {
        return Err(format!(
            "{name:?} is absolute; file names are relative to the work directory"
        ));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "{name:?} has an empty, \".\" or \"..\" part; file names stay inside the work directory"
            ));
        }
        if part.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!("{name:?} holds a control character or a backslash"));
        }
    }
    Ok(name.to_owned())
}

fn args(obj: &Map<String, Value>) -> Result<Vec<String>, RequestError> {
    let items = match obj.get("args") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_ARGS => items,
        Some(_) => {
            return Err(RequestError::invalid(
                "args",
                format!("args must be an array of at most {MAX_ARGS} strings"),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Value::String(s) if s.len() <= MAX_ARG_BYTES && !s.contains('\0') => Ok(s.clone()),
            _ => Err(RequestError::invalid(
                &format!("args[{i}]"),
                format!("each argument must be a string of at most {MAX_ARG_BYTES} bytes without NUL"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(body: Value) -> (String, String) {
        match validate(body).unwrap_err() {
            RequestError::Invalid { param, message } => (param, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_piston_request_is_read_with_its_defaults() {
        let (request, run) = validate(json!({
            "language": "py", "version": "3.11", "files": [{"name": "main.py", "content": "print(1)"}],
        }))
        .unwrap();
        assert_eq!(request.model, "python");
        assert_eq!(request.workload, Workload::CodeExecution);
        assert_eq!(run.files[0].content, b"print(1)");
        assert_eq!(run.run_timeout_ms, DEFAULT_RUN_TIMEOUT_MS);
        assert_eq!(run.cpu_time_ms, DEFAULT_RUN_TIMEOUT_MS);
        assert_eq!(run.memory_bytes, DEFAULT_MEMORY_BYTES);
        assert_eq!(run.max_seconds(), 10);
        let (_, run) = validate(json!({
            "language": "bash", "files": [{"content": "ZWNobyBoaQ==", "encoding": "base64"}],
            "run_timeout": 1500, "run_cpu_time": 9000, "run_memory_limit": -1, "args": ["a"], "stdin": "x",
        }))
        .unwrap();
        assert_eq!(run.files[0].name, "file0.code");
        assert_eq!(run.files[0].content, b"echo hi");
        assert_eq!(
            (run.run_timeout_ms, run.cpu_time_ms, run.max_seconds()),
            (1500, 1500, 2)
        );
        assert_eq!(held_seconds(&json!({"run_timeout": 1500})), 2);
        assert_eq!(held_seconds(&json!({"language": "python"})), 10);
    }

    #[test]
    fn names_that_leave_the_work_directory_are_refused() {
        for name in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
            "",
            "a\nb",
        ] {
            let (param, _) = refused(json!({"language": "python", "files": [{"name": name, "content": ""}]}));
            assert_eq!(param, "files[0].name", "{name:?}");
        }
        assert!(checked_name("pkg/util.py").is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        let ok = json!({"language": "python", "files": [{"content": "1"}]});
        let with = |field: &str, v: Value| {
            let mut b = ok.clone();
            b[field] = v;
            b
        };
        assert_eq!(refused(with("language", json!("cobol"))).0, "language");
        assert_eq!(refused(with("compile_timeout", json!(5))).0, "compile_timeout");
        assert_eq!(refused(with("run_timeout", json!(0))).0, "run_timeout");
        assert_eq!(refused(with("run_memory_limit", json!(1))).0, "run_memory_limit");
        assert_eq!(refused(with("args", json!([1]))).0, "args[0]");
        assert_eq!(refused(with("files", json!([]))).0, "files");
        assert_eq!(
            refused(with(
                "files",
                json!([{"name": "a", "content": "1"}, {"name": "a", "content": "2"}])
            ))
            .0,
            "files[1].name"
        );
        assert_eq!(
            refused(with("files", json!([{"content": "1", "encoding": "rot13"}]))).0,
            "files[0].encoding"
        );
    }
}
