//! The OpenAI embeddings request as this backend reads it, and the response it writes.
//!
//! Parsing happens on the async side, before a task takes a place in the worker's queue, so a bad
//! request costs no inference time and gets a message that names the field at fault.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::backend::BackendError;

use stacknet_api::request::embeddings::{self, EmbeddingInput};
pub use stacknet_api::request::embeddings::{EncodingFormat, MAX_INPUTS};

/// A checked embeddings request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingRequest {
    /// The texts, in the order their vectors are returned; at least one, none empty.
    pub inputs: Vec<String>,
    pub encoding: EncodingFormat,
}

impl EmbeddingRequest {
    /// Reads an OpenAI embeddings body for a model of `dimensions` dimensions with the shared
    /// validator (`stacknet_api`, the hub's own), then what this model adds: texts only, and a
    /// `dimensions` that may only restate the model's.
    pub fn parse(body: &Value, dimensions: usize) -> Result<Self, BackendError> {
        let (_, checked) = embeddings::validate(body.clone()).map_err(|e| invalid(e.to_string()))?;
        if let Some(asked) = checked.dimensions {
            if asked != dimensions as u64 {
                return Err(invalid(format!(
                    "'dimensions' must be {dimensions} for this model (it cannot shorten its vectors), not {asked}"
                )));
            }
        }
        let inputs = match checked.input {
            EmbeddingInput::Texts(texts) => texts,
            // Token ids only make sense for the tokenizer they were made with, which a client
            // cannot know here; refusing beats embedding someone else's ids.
            EmbeddingInput::Tokens(_) => {
                return Err(invalid(
                    "'input' as token ids is not supported by this model: send strings",
                ))
            }
        };
        Ok(Self {
            inputs,
            encoding: checked.encoding,
        })
    }
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest(message.into())
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

    /// The hub always forwards the model; the tests name it once here.
    fn parse(mut body: Value) -> Result<EmbeddingRequest, BackendError> {
        body["model"] = json!("m");
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
        let one = parse(json!({"input": "hello"})).unwrap();
        assert_eq!(one.inputs, ["hello"]);
        assert_eq!(one.encoding, EncodingFormat::Float);
        let many =
            parse(json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 384})).unwrap();
        assert_eq!(many.inputs, ["a", "b"]);
        assert_eq!(many.encoding, EncodingFormat::Base64);
    }

    /// The shared validator's messages (the hub gives the same ones), then this model's own rules.
    #[test]
    fn refuses_what_it_cannot_serve_and_says_why() {
        assert_eq!(refusal(json!({})), "you must provide an input parameter");
        assert_eq!(refusal(json!({"input": []})), "input must not be empty");
        assert_eq!(refusal(json!({"input": ""})), "input must not be an empty string");
        assert_eq!(
            refusal(json!({"input": ["a", ""]})),
            "input[1] must not be an empty string"
        );
        let tokens = "'input' as token ids is not supported by this model: send strings";
        assert_eq!(refusal(json!({"input": [1, 2, 3]})), tokens);
        assert_eq!(refusal(json!({"input": [[1, 2], [3]]})), tokens);
        assert_eq!(refusal(json!({"input": ["a", 7.5]})), "input[1] must be a string");
        assert_eq!(refusal(json!({"input": ["a", {}]})), "input[1] must be a string");
        assert_eq!(
            refusal(json!({"input": "a", "dimensions": 10})),
            "'dimensions' must be 384 for this model (it cannot shorten its vectors), not 10"
        );
        assert_eq!(
            refusal(json!({"input": "a", "encoding_format": "int8"})),
            "encoding_format must be one of float, base64"
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
