//! CTranslate2's model format (`model.bin`, binary version 6), read into the tensors candle's
//! Whisper expects, under Hugging Face's names.
//!
//! The file is a header (version, spec name, spec revision), then each variable: its name, rank,
//! dimensions, data type and bytes, then aliases (a name for another variable's data: the output
//! projection is the token embedding). Every integer is little-endian; a string is a `u16` length
//! (with the terminating NUL) and its bytes.
//!
//! CTranslate2 fuses attention projections: a self-attention's `linear_0` is Q, K and V stacked
//! (`[3 d, d]`), a cross-attention's `linear_1` is K and V (`[2 d, d]`); they are split here. Key
//! projections have no bias in Whisper (CTranslate2 stores zeros): candle's model has none.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::backend::BackendError;

/// The format versions this reader knows.
const VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;
/// Far above any real model's variable count; a larger count is a damaged file.
const MAX_VARIABLES: u32 = 100_000;

fn bad(why: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(format!("model.bin is not a CTranslate2 Whisper model: {why}"))
}

/// A variable as stored.
struct Variable {
    dims: Vec<usize>,
    dtype: u8,
    offset: usize,
    len: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackendError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| bad("it ends early"))?;
        let piece = &self.bytes[self.at..end];
        self.at = end;
        Ok(piece)
    }

    fn u8(&mut self) -> Result<u8, BackendError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, BackendError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BackendError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, BackendError> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| bad("a name is not UTF-8"))
    }
}

/// The variables of a CTranslate2 `model.bin`, with its spec name.
pub struct Ct2Model<'a> {
    bytes: &'a [u8],
    pub spec: String,
    variables: HashMap<String, Variable>,
}

impl<'a> Ct2Model<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BackendError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u32()?;
        if !VERSIONS.contains(&version) {
            return Err(bad(format!("format version {version}")));
        }
        let spec = r.string()?;
        let _revision = r.u32()?;
        let count = r.u32()?;
        if count > MAX_VARIABLES {
            return Err(bad(format!("{count} variables")));
        }
        let mut variables = HashMap::new();
        for _ in 0..count {
            let name = r.string()?;
            let rank = usize::from(r.u8()?);
            let dims = (0..rank)
                .map(|_| r.u32().map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let dtype = r.u8()?;
            let len = r.u32()? as usize;
            let offset = r.at;
            r.take(len)?;
            variables.insert(
                name,
                Variable {
                    dims,
                    dtype,
                    offset,
                    len,
                },
            );
        }
        let aliases = r.u32()?;
        for _ in 0..aliases.min(MAX_VARIABLES) {
            let alias = r.string()?;
            let target = r.string()?;
            let v = variables
                .get(&target)
                .ok_or_else(|| bad(format!("alias {alias} of no variable {target}")))?;
            let copy = Variable {
                dims: v.dims.clone(),
                dtype: v.dtype,
                offset: v.offset,
                len: v.len,
            };
            variables.insert(alias, copy);
        }
        Ok(Self {
            bytes,
            spec,
            variables,
        })
    }

    /// A scalar integer variable (`encoder/num_heads`).
    pub fn integer(&self, name: &str) -> Result<i64, BackendError> {
        let v = self
            .variables
            .get(name)
            .ok_or_else(|| bad(format!("no {name}")))?;
        let b = &self.bytes[v.offset..v.offset + v.len];
        Ok(match (v.dtype, b) {
            (1, [x]) => i64::from(*x as i8),
            (2, [a, b]) => i64::from(i16::from_le_bytes([*a, *b])),
            (3, [a, b, c, d]) => i64::from(i32::from_le_bytes([*a, *b, *c, *d])),
            _ => return Err(bad(format!("{name} is not a scalar integer"))),
        })
    }

    /// A variable as an f32 tensor.
    pub fn tensor(&self, name: &str) -> Result<Tensor, BackendError> {
        let v = self
            .variables
            .get(name)
            .ok_or_else(|| bad(format!("no {name}")))?;
        let data = &self.bytes[v.offset..v.offset + v.len];
        let elements: usize = v.dims.iter().product();
        // The file is little-endian, as is every machine candle runs on here.
        let dtype = match v.dtype {
            0 => DType::F32,
            4 => DType::F16,
            5 => DType::BF16,
            t => return Err(bad(format!("{name} has data type {t}"))),
        };
        if data.len() != elements * dtype.size_in_bytes() {
            return Err(bad(format!(
                "{name} has {} bytes for {elements} values",
                data.len()
            )));
        }
        Tensor::from_raw_buffer(data, dtype, v.dims.as_slice(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| bad(format!("{name}: {e}")))
    }

    /// Every tensor candle's Whisper loads, under Hugging Face's names, for a model of `encoder_layers`
    /// and `decoder_layers`.
    pub fn whisper_tensors(
        &self,
        encoder_layers: usize,
        decoder_layers: usize,
    ) -> Result<HashMap<String, Tensor>, BackendError> {
        let mut out = HashMap::new();
        let mut put = |hf: String, t: Tensor| {
            out.insert(hf, t);
        };
        let split = |t: &Tensor, parts: usize| -> Result<Vec<Tensor>, BackendError> {
            t.chunk(parts, 0)
                .map_err(|e| bad(format!("cannot split a fused projection: {e}")))
        };
        for (ct2, hf) in [
            ("encoder/conv1", "model.encoder.conv1"),
            ("encoder/conv2", "model.encoder.conv2"),
        ] {
            put(format!("{hf}.weight"), self.tensor(&format!("{ct2}/weight"))?);
            put(format!("{hf}.bias"), self.tensor(&format!("{ct2}/bias"))?);
        }
        put(
            "model.decoder.embed_tokens.weight".into(),
            self.tensor("decoder/embeddings/weight")?,
        );
        put(
            "model.decoder.embed_positions.weight".into(),
            self.tensor("decoder/position_encodings/encodings")?,
        );
        for side in ["encoder", "decoder"] {
            put(
                format!("model.{side}.layer_norm.weight"),
                self.tensor(&format!("{side}/layer_norm/gamma"))?,
            );
            put(
                format!("model.{side}.layer_norm.bias"),
                self.tensor(&format!("{side}/layer_norm/beta"))?,
            );
            let layers = if side == "encoder" {
                encoder_layers
            } else {
                decoder_layers
            };
            for i in 0..layers {
                let c = format!("{side}/layer_{i}");
                let h = format!("model.{side}.layers.{i}");
                let norm =
                    |put: &mut dyn FnMut(String, Tensor), from: &str, to: &str| -> Result<(), BackendError> {
                        put(
                            format!("{h}.{to}.weight"),
                            self.tensor(&format!("{c}/{from}/gamma"))?,
                        );
                        put(
                            format!("{h}.{to}.bias"),
                            self.tensor(&format!("{c}/{from}/beta"))?,
                        );
                        Ok(())
                    };
                norm(&mut put, "self_attention/layer_norm", "self_attn_layer_norm")?;
                norm(&mut put, "ffn/layer_norm", "final_layer_norm")?;
                let qkv_w = split(&self.tensor(&format!("{c}/self_attention/linear_0/weight"))?, 3)?;
                let qkv_b = split(&self.tensor(&format!("{c}/self_attention/linear_0/bias"))?, 3)?;
                put(format!("{h}.self_attn.q_proj.weight"), qkv_w[0].clone());
                put(format!("{h}.self_attn.q_proj.bias"), qkv_b[0].clone());
                put(format!("{h}.self_attn.k_proj.weight"), qkv_w[1].clone());
                put(format!("{h}.self_attn.v_proj.weight"), qkv_w[2].clone());
                put(format!("{h}.self_attn.v_proj.bias"), qkv_b[2].clone());
                put(
                    format!("{h}.self_attn.out_proj.weight"),
                    self.tensor(&format!("{c}/self_attention/linear_1/weight"))?,
                );
                put(
                    format!("{h}.self_attn.out_proj.bias"),
                    self.tensor(&format!("{c}/self_attention/linear_1/bias"))?,
                );
                for (from, to) in [("ffn/linear_0", "fc1"), ("ffn/linear_1", "fc2")] {
                    put(
                        format!("{h}.{to}.weight"),
                        self.tensor(&format!("{c}/{from}/weight"))?,
                    );
                    put(
                        format!("{h}.{to}.bias"),
                        self.tensor(&format!("{c}/{from}/bias"))?,
                    );
                }
                if side == "decoder" {
                    norm(&mut put, "attention/layer_norm", "encoder_attn_layer_norm")?;
                    let a = format!("{c}/attention");
                    let e = format!("{h}.encoder_attn");
                    put(
                        format!("{e}.q_proj.weight"),
                        self.tensor(&format!("{a}/linear_0/weight"))?,
                    );
                    put(
                        format!("{e}.q_proj.bias"),
                        self.tensor(&format!("{a}/linear_0/bias"))?,
                    );
                    let kv_w = split(&self.tensor(&format!("{a}/linear_1/weight"))?, 2)?;
                    let kv_b = split(&self.tensor(&format!("{a}/linear_1/bias"))?, 2)?;
                    put(format!("{e}.k_proj.weight"), kv_w[0].clone());
                    put(format!("{e}.v_proj.weight"), kv_w[1].clone());
                    put(format!("{e}.v_proj.bias"), kv_b[1].clone());
                    put(
                        format!("{e}.out_proj.weight"),
                        self.tensor(&format!("{a}/linear_2/weight"))?,
                    );
                    put(
                        format!("{e}.out_proj.bias"),
                        self.tensor(&format!("{a}/linear_2/bias"))?,
                    );
                }
            }
        }
        // Every tensor contiguous in f32, as candle's kernels expect.
        out.into_iter()
            .map(|(k, t)| {
                let t = t.contiguous().and_then(|t| t.to_dtype(DType::F32));
                t.map(|t| (k, t)).map_err(bad)
            })
            .collect()
    }

    /// How many `prefix/layer_N` layers the model has.
    pub fn layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.variables
                    .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }

    /// A variable's dimensions.
    pub fn dims(&self, name: &str) -> Result<&[usize], BackendError> {
        self.variables
            .get(name)
            .map(|v| v.dims.as_slice())
            .ok_or_else(|| bad(format!("no {name}")))
    }
}
