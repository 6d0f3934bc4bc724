//! `POST /v1/embeddings`: texts (or token ids) in, one vector per input out.

use serde_json::Value;
use stacknet_protocol::contract::Workload;

use super::fields::{self, object};
use super::{ApiRequest, RequestError};

/// The most inputs one request may carry (OpenAI's own limit for `/v1/embeddings`).
pub const MAX_INPUTS: usize = 2048;

/// What is to be embedded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbeddingInput {
    /// Texts, none empty.
    Texts(Vec<String>),
    /// Token ids, as OpenAI accepts them: only meaningful for the tokenizer they were made with.
    Tokens(Vec<Vec<u64>>),
}

impl EmbeddingInput {
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Texts(t) => t.len(),
            EmbeddingInput::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the vectors are written in the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// The little-endian `f32` bytes of the vector, base64 (standard alphabet, padded), as OpenAI
    /// sends it.
    Base64,
}

/// What an embeddings backend needs from a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embeddings {
    pub input: EmbeddingInput,
    pub encoding: EncodingFormat,
    /// `dimensions`, when the client asked for a size.
    pub dimensions: Option<u64>,
}

pub fn validate(body: Value) -> Result<(ApiRequest, Embeddings), RequestError> {
    let obj = object(&body)?;
    let model = fields::model(obj)?;
    let input = parse_input(obj.get("input"))?;
    let encoding = match fields::one_of(obj, "encoding_format", &["float", "base64"])?.as_deref() {
        Some("base64") => EncodingFormat::Base64,
        _ => EncodingFormat::Float,
    };
    let dimensions = fields::integer(obj, "dimensions", 1, 65_536)?;
    let user = fields::user(obj)?;
    let request = ApiRequest::whole(Workload::Embedding, model, user, 1, body);
    Ok((
        request,
        Embeddings {
            input,
            encoding,
            dimensions,
        },
    ))
}

fn parse_input(input: Option<&Value>) -> Result<EmbeddingInput, RequestError> {
    let bad = |message: String| RequestError::invalid("input", message);
    let items = match input {
        None | Some(Value::Null) => return Err(bad("you must provide an input parameter".into())),
        Some(Value::String(text)) if text.is_empty() => {
            return Err(bad("input must not be an empty string".into()))
        }
        Some(Value::String(text)) => return Ok(EmbeddingInput::Texts(vec![text.clone()])),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("input must be a string or an array".into())),
    };
    if items.is_empty() {
        return Err(bad("input must not be empty".into()));
    }
    if items.len() > MAX_INPUTS {
        return Err(bad(format!(
            "input has {} items; at most {MAX_INPUTS} are allowed",
            items.len()
        )));
    }
    if items.iter().all(Value::is_u64) {
        return Ok(EmbeddingInput::Tokens(vec![items
            .iter()
            .filter_map(Value::as_u64)
            .collect()]));
    }
    if items.iter().all(Value::is_array) {
        let mut token_lists = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let ids: Vec<u64> = item
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            if ids.is_empty() || Some(ids.len()) != item.as_array().map(Vec::len) {
                return Err(bad(format!("input[{i}] must be a non-empty array of token ids")));
            }
            token_lists.push(ids);
        }
        return Ok(EmbeddingInput::Tokens(token_lists));
    }
    let mut texts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some("") => return Err(bad(format!("input[{i}] must not be an empty string"))),
            Some(s) => texts.push(s.to_owned()),
            None => return Err(bad(format!("input[{i}] must be a string"))),
        }
    }
    Ok(EmbeddingInput::Texts(texts))
}
