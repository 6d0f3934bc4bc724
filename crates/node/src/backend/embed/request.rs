//! The OpenAI embeddings request as this backend reads it, and the response it writes.
//!
//! Parsing happens on the async side, before a task takes a place in the worker's queue, so a bad
//! request costs no inference time and gets a message that names the field at fault.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::backend::BackendError;

/// The most inputs one request may carry (OpenAI's own limit for `/v1/embeddings`).
pub const MAX_INPUTS: usize = 2048;

/// How the vectors are written in the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// The little-endian `f32` bytes of the vector, base64 (standard alphabet, padded), as OpenAI
    /// sends it: a quarter of the size of the decimal text.
    Base64,
}

/// A checked embeddings request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingRequest {
    /// The texts, in the order their vectors are returned; at least one, none empty.
    pub inputs: Vec<String>,
    pub encoding: EncodingFormat,
}

impl EmbeddingRequest {
    /// Reads an OpenAI embeddings body for a model of `dimensions` dimensions. `model`, `user` and
    /// fields this backend does not know are ignored, as OpenAI-compatible servers do.
    pub fn parse(body: &Value, dimensions: usize) -> Result<Self, BackendError> {
        let fields = body
            .as_object()
            .ok_or_else(|| invalid("the request body must be a JSON object"))?;
        check_dimensions(fields, dimensions)?;
        Ok(Self {
            inputs: parse_input(fields.get("input"))?,
            encoding: parse_encoding(fields.get("encoding_format"))?,
        })
    }
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest(message.into())
}

fn parse_input(input: Option<&Value>) -> Result<Vec<String>, BackendError> {
    let inputs = match input {
        None | Some(Value::Null) => return Err(invalid("'input' is required")),
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => array_input(items)?,
        Some(_) => return Err(invalid("'input' must be a string or an array of strings")),
    };
    if let Some(i) = inputs.iter().position(String::is_empty) {
        return Err(invalid(if inputs.len() == 1 {
            "'input' must not be an empty string".to_owned()
        } else {
            format!("'input[{i}]' must not be an empty string")
        }));
    }
    Ok(inputs)
}

fn array_input(items: &[Value]) -> Result<Vec<String>, BackendError> {
    if items.is_empty() {
        return Err(invalid("'input' must not be an empty array"));
    }
    if items.len() > MAX_INPUTS {
        return Err(invalid(format!(
            "'input' has {} items; at most {MAX_INPUTS} are allowed",
            items.len()
        )));
    }
    // Token arrays (`[1, 2]`, `[[1, 2], [3]]`) only make sense for the tokenizer they were made
    // with, which a client cannot know here; refusing beats embedding someone else's ids.
    if items.iter().any(|item| item.is_number() || item.is_array()) {
        return Err(invalid(
            "'input' as token ids is not supported by this model: send strings",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("'input[{i}]' must be a string")))
        })
        .collect()
}

fn parse_encoding(format: Option<&Value>) -> Result<EncodingFormat, BackendError> {
    match format {
        None | Some(Value::Null) => Ok(EncodingFormat::Float),
        Some(Value::String(s)) if s == "float" => Ok(EncodingFormat::Float),
        Some(Value::String(s)) if s == "base64" => Ok(EncodingFormat::Base64),
        Some(other) => Err(invalid(format!(
            "'encoding_format' must be \"float\" or \"base64\", not {other}"
        ))),
    }
}

/// The model's vectors have a fixed size; `dimensions` may only restate it.
fn check_dimensions(fields: &Map<String, Value>, dimensions: usize) -> Result<(), BackendError> {
    match fields.get("dimensions") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_u64() == Some(dimensions as u64) => Ok(()),
        Some(other) => Err(invalid(format!(
            "'dimensions' must be {dimensions} for this model (it cannot shorten its vectors), not {other}"
        ))),
    }
}

/// The whole OpenAI embeddings response, `data` in input order.
pub fn response_body(
    model: &str,
    vectors: &[Vec<f32>],
    encoding: EncodingFormat,
    prompt_tokens: u64,
) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            json!({
                "object": "embedding",
                "index": index,
                "embedding": encode_vector(vector, encoding),
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })
}

fn encode_vector(vector: &[f32], encoding: EncodingFormat) -> Value {
    match encoding {
        EncodingFormat::Float => Value::Array(vector.iter().map(|&x| float_value(x)).collect()),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// An `f32` as the shortest decimal that reads back as the same `f32` (`0.0123`, not the
/// `0.012299999594688416` of its exact `f64` value): half the bytes on the wire, and a client that
/// parses it as a double and narrows to `f32` gets the model's exact bits back.
fn float_value(x: f32) -> Value {
    // Display of a finite f32 is its shortest round-trip decimal; as f64 it prints the same way.
    let shortest: f64 = x.to_string().parse().unwrap_or(f64::from(x));
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<EmbeddingRequest, BackendError> {
        EmbeddingRequest::parse(&body, 384)
    }

    fn refusal(body: Value) -> String {
        match parse(body) {
            Err(BackendError::InvalidRequest(message)) => message,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_string_an_array_and_the_encoding() {
        let one = parse(json!({"model": "m", "input": "hello"})).unwrap();
        assert_eq!(one.inputs, ["hello"]);
        assert_eq!(one.encoding, EncodingFormat::Float);
        let many =
            parse(json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 384})).unwrap();
        assert_eq!(many.inputs, ["a", "b"]);
        assert_eq!(many.encoding, EncodingFormat::Base64);
    }

    #[test]
    fn refuses_what_it_cannot_serve_and_says_why() {
        assert_eq!(refusal(json!({"model": "m"})), "'input' is required");
        assert_eq!(
            refusal(json!({"input": []})),
            "'input' must not be an empty array"
        );
        assert_eq!(
            refusal(json!({"input": ""})),
            "'input' must not be an empty string"
        );
        assert_eq!(
            refusal(json!({"input": ["a", ""]})),
            "'input[1]' must not be an empty string"
        );
        let tokens = "'input' as token ids is not supported by this model: send strings";
        assert_eq!(refusal(json!({"input": [1, 2, 3]})), tokens);
        assert_eq!(refusal(json!({"input": [[1, 2], [3]]})), tokens);
        assert_eq!(refusal(json!({"input": ["a", 7.5]})), tokens);
        assert_eq!(
            refusal(json!({"input": ["a", {}]})),
            "'input[1]' must be a string"
        );
        assert_eq!(
            refusal(json!({"input": "a", "dimensions": 10})),
            "'dimensions' must be 384 for this model (it cannot shorten its vectors), not 10"
        );
        assert_eq!(
            refusal(json!({"input": "a", "encoding_format": "int8"})),
            "'encoding_format' must be \"float\" or \"base64\", not \"int8\""
        );
        let too_many = vec!["x"; MAX_INPUTS + 1];
        assert!(refusal(json!({"input": too_many})).contains("at most 2048"));
    }

    #[test]
    fn floats_are_written_short_and_read_back_exactly() {
        for x in [0.1f32, -0.012_345_679, 1.0, 3.402_823_5e38, 1e-30] {
            let text = float_value(x).to_string();
            assert!(text.len() <= 16, "{text}");
            assert_eq!(text.parse::<f64>().unwrap() as f32, x);
        }
    }

    #[test]
    fn the_response_has_the_openai_shape() {
        let body = response_body("m", &[vec![1.0, 0.5]], EncodingFormat::Base64, 7);
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], "m");
        assert_eq!(body["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
        assert_eq!(body["data"][0]["object"], "embedding");
        assert_eq!(body["data"][0]["index"], 0);
        // 1.0f32 and 0.5f32, little-endian.
        assert_eq!(body["data"][0]["embedding"], "AACAPwAAAD8=");
        let floats = response_body("m", &[vec![1.0, 0.5]], EncodingFormat::Float, 7);
        assert_eq!(floats["data"][0]["embedding"], json!([1.0, 0.5]));
    }
}
