//! GGUF files (llama.cpp's model format), read with the standard library: header v2/v3, every metadata value
//! type, tensor infos and alignment, and dequantization to float32 of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and
//! Q5_1 tensors. For llama-architecture files, [`GgufFile::llama_tensors`] maps the tensors to Hugging Face names
//! (undoing llama.cpp's Q/K row permutation) and [`GgufFile::tokenizer_json`] builds a `tokenizer.json` from the
//! vocabulary and merges in the metadata, so that the `tokenizers` crate loads it.

mod quants;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::json;
use tch::Tensor;

use crate::error::{io_err, Error, Result};
use quants::type_name;

pub use quants::{dequantize, GgmlType};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, whatever its integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor is in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` varies fastest (the reverse of PyTorch's shape).
    pub dims: Vec<u64>,
    pub type_id: u32,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The PyTorch shape (`dims` reversed).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }

    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A GGUF file read into memory.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated: {n} bytes wanted at offset {} of {}", self.pos, self.bytes.len()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.u64()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("a string at offset {} is not UTF-8", self.pos - n))
    }

    fn value(&mut self, ty: u32) -> std::result::Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let inner = self.u32()?;
                let n = self.u64()? as usize;
                // Every element is at least one byte: a count beyond the file is corruption, not a huge array.
                if n > self.bytes.len() - self.pos {
                    return Err(format!("an array of {n} elements cannot fit at offset {}", self.pos));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(inner)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            t => return Err(format!("unknown metadata value type {t} at offset {}", self.pos - 4)),
        })
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        Self::from_bytes(path, bytes)
    }

    /// Parses `bytes` (the whole file); `path` names it in errors.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        let err = |message: String| Error::Model { path: path.clone(), message };
        let mut c = Cursor { bytes: &bytes, pos: 0 };
        if c.take(4).map_err(&err)? != MAGIC {
            return Err(err("not a GGUF file (the first 4 bytes are not `GGUF`)".into()));
        }
        let version = c.u32().map_err(&err)?;
        if !(2..=3).contains(&version) {
            return Err(err(format!("GGUF version {version} is not supported (2 and 3 are)")));
        }
        let n_tensors = c.u64().map_err(&err)?;
        let n_kv = c.u64().map_err(&err)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string().map_err(&err)?;
            let ty = c.u32().map_err(&err)?;
            let value = c.value(ty).map_err(|m| err(format!("metadata `{key}`: {m}")))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors.min(1 << 20) as usize);
        for _ in 0..n_tensors {
            let name = c.string().map_err(&err)?;
            let n_dims = c.u32().map_err(&err)?;
            if n_dims > 8 {
                return Err(err(format!("tensor `{name}` claims {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| c.u64()).collect::<std::result::Result<Vec<_>, _>>().map_err(&err)?;
            let type_id = c.u32().map_err(&err)?;
            let offset = c.u64().map_err(&err)?;
            tensors.push(TensorInfo { name, dims, type_id, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            Some(v) => v.as_u64().filter(|a| *a > 0).ok_or_else(|| err(format!("bad general.alignment {v:?}")))?,
            None => DEFAULT_ALIGNMENT,
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file = Self { path: path.clone(), version, metadata, tensors, data_start: data_start as usize, bytes };
        for t in &file.tensors {
            file.raw(t)?;
        }
        Ok(file)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn err(&self, message: String) -> Error {
        Error::Model { path: self.path.clone(), message }
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.err(format!("metadata key `{key}` is missing")))
    }

    fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| self.err(format!("metadata `{key}` is {v:?}, not an integer")))
    }

    fn require_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.err(format!("metadata `{key}` is {v:?}, not a number")))
    }

    /// `general.architecture` (`llama`, `gpt2`, ...).
    pub fn architecture(&self) -> Result<&str> {
        let v = self.require("general.architecture")?;
        v.as_str().ok_or_else(|| self.err("general.architecture is not a string".into()))
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor, checked against the file's length.
    fn raw(&self, t: &TensorInfo) -> Result<&[u8]> {
        let Some(ty) = GgmlType::from_id(t.type_id) else {
            return Err(self.err(format!(
                "tensor `{}` is {}, which this reader does not dequantize (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, \
                 Q8_0 are supported)",
                t.name,
                type_name(t.type_id)
            )));
        };
        let (per_block, block_bytes) = ty.block();
        let n = t.elements() as usize;
        if !n.is_multiple_of(per_block) {
            return Err(self.err(format!("tensor `{}` has {n} elements, not a multiple of {per_block}", t.name)));
        }
        let len = n / per_block * block_bytes;
        let start = self.data_start + t.offset as usize;
        self.bytes.get(start..start + len).ok_or_else(|| {
            self.err(format!("tensor `{}` ({len} bytes at {start}) runs past the end of the file", t.name))
        })
    }

    /// The tensor dequantized to float32, in PyTorch's shape.
    pub fn dequantize(&self, name: &str) -> Result<Tensor> {
        let t = self.tensor_info(name).ok_or_else(|| self.err(format!("no tensor `{name}`")))?;
        let values = dequantize(GgmlType::from_id(t.type_id).expect("checked at open"), self.raw(t)?);
        Ok(Tensor::from_slice(&values).reshape(t.shape()))
    }

    /// Every tensor of a llama-architecture file under its Hugging Face `LlamaForCausalLM` name, dequantized,
    /// with llama.cpp's row permutation of `attn_q` / `attn_k` undone (its converter permutes them for its
    /// rotary-embedding layout; transformers' GGUF loader undoes it the same way).
    pub fn llama_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let arch = self.architecture()?;
        if arch != "llama" {
            return Err(
                self.err(format!("general.architecture is `{arch}`; only `llama` files map to LlamaForCausalLM"))
            );
        }
        let n_head = self.require_u64("llama.attention.head_count")? as i64;
        let n_kv = match self.get("llama.attention.head_count_kv") {
            Some(v) => v.as_u64().ok_or_else(|| self.err("llama.attention.head_count_kv is not an integer".into()))?,
            None => n_head as u64,
        } as i64;
        let mut out = HashMap::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let name = llama_name(&t.name)
                .ok_or_else(|| self.err(format!("tensor `{}` has no Hugging Face Llama name", t.name)))?;
            let mut w = self.dequantize(&t.name)?;
            if t.name.ends_with("attn_q.weight") {
                w = unpermute(&w, n_head);
            } else if t.name.ends_with("attn_k.weight") {
                w = unpermute(&w, n_kv);
            }
            out.insert(name, w);
        }
        Ok(out)
    }

    /// The Hugging Face `config.json` of a llama-architecture file (as `LlamaConfig` reads it).
    pub fn llama_config_json(&self) -> Result<serde_json::Value> {
        let hidden = self.require_u64("llama.embedding_length")?;
        let heads = self.require_u64("llama.attention.head_count")?;
        let kv = self.get("llama.attention.head_count_kv").and_then(Value::as_u64).unwrap_or(heads);
        let vocab = match self.get("llama.vocab_size").and_then(Value::as_u64) {
            Some(v) => v,
            None => self.tensor_info("token_embd.weight").map(|t| t.dims[1]).ok_or_else(|| {
                self.err("neither llama.vocab_size nor token_embd.weight gives the vocabulary size".into())
            })?,
        };
        let head_dim = self.get("llama.rope.dimension_count").and_then(Value::as_u64).unwrap_or(hidden / heads);
        let token = |key: &str| self.get(key).and_then(Value::as_u64);
        Ok(json!({
            "model_type": "llama",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": self.require_u64("llama.feed_forward_length")?,
            "num_hidden_layers": self.require_u64("llama.block_count")?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": head_dim,
            "rms_norm_eps": self.require_f64("llama.attention.layer_norm_rms_epsilon")?,
            "rope_theta": self.get("llama.rope.freq_base").and_then(Value::as_f64).unwrap_or(10_000.0),
            "max_position_embeddings": self.get("llama.context_length").and_then(Value::as_u64).unwrap_or(2048),
            "tie_word_embeddings": self.tensor_info("output.weight").is_none(),
            "hidden_act": "silu",
            "bos_token_id": token("tokenizer.ggml.bos_token_id"),
            "eos_token_id": token("tokenizer.ggml.eos_token_id"),
        }))
    }

    /// A Hugging Face `tokenizer.json` (as a string) from the GGUF's byte-level BPE vocabulary
    /// (`tokenizer.ggml.model = gpt2`): BPE over the tokens and merges, the pre-tokenizer llama.cpp uses for
    /// `tokenizer.ggml.pre` (`smollm`: single digits, then the GPT-2 byte-level split), byte-level decoder and
    /// post-processor, and the control tokens as special tokens. Deterministic: the same file gives the same text.
    pub fn tokenizer_json(&self) -> Result<String> {
        let model = self.require("tokenizer.ggml.model")?.as_str().unwrap_or_default();
        if model != "gpt2" {
            return Err(self.err(format!(
                "tokenizer.ggml.model is `{model}`; only byte-level BPE (`gpt2`) vocabularies are supported"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = self.require(key)?.as_array().ok_or_else(|| self.err(format!("`{key}` is not an array")))?;
            arr.iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.err(format!("`{key}` holds a non-string"))))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match self.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let pre = self.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
        let byte_level =
            json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true });
        let pre_tokenizer = match pre {
            // llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM: split off every digit, then the GPT-2 regex.
            "smollm" => json!({ "type": "Sequence", "pretokenizers": [
                { "type": "Digits", "individual_digits": true }, byte_level ] }),
            "gpt-2" | "gpt2" | "default" => byte_level,
            other => {
                return Err(self.err(format!(
                    "tokenizer.ggml.pre `{other}` is not supported (smollm, gpt-2 and default are); its pre-tokenizer \
                     regex would have to be added here"
                )))
            }
        };
        let vocab: serde_json::Map<String, serde_json::Value> =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
        if vocab.len() != tokens.len() {
            return Err(self.err("tokenizer.ggml.tokens holds duplicate tokens".into()));
        }
        // Token types 3 (control) and 4 (user-defined) are added tokens, matched before the BPE; control
        // tokens are special (skipped when decoding with skip_special_tokens).
        let added: Vec<serde_json::Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, &ty))| ty == 3 || ty == 4)
            .map(|(id, (content, &ty))| {
                json!({ "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                        "normalized": ty == 4, "special": ty == 3 })
            })
            .collect();
        let unk = self.get("tokenizer.ggml.unknown_token_id").and_then(Value::as_u64);
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true },
            "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
            "model": {
                "type": "BPE", "dropout": null,
                "unk_token": unk.and_then(|u| tokens.get(u as usize)),
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        });
        Ok(tokenizer.to_string())
    }
}

/// HF Llama name of a GGUF llama tensor name (llama.cpp's `convert_hf_to_gguf.py` map, reversed).
fn llama_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let (module, kind) = part.rsplit_once('.')?;
            let hf = match module {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf}.{kind}")
        }
    })
}

/// Inverse of llama.cpp's `permute(w, n_head)`: rows `[n_head, 2, d/2]` were reordered to `[n_head, d/2, 2]`.
fn unpermute(w: &Tensor, n_head: i64) -> Tensor {
    let shape = w.size();
    let mut split = vec![n_head, shape[0] / n_head / 2, 2];
    split.extend_from_slice(&shape[1..]);
    w.reshape(split.as_slice()).transpose(1, 2).contiguous().reshape(shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face_llama() {
        assert_eq!(llama_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert_eq!(llama_name("blk.12.attn_k.weight").unwrap(), "model.layers.12.self_attn.k_proj.weight");
        assert_eq!(llama_name("blk.0.ffn_norm.weight").unwrap(), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(llama_name("blk.3.attn_q.bias").unwrap(), "model.layers.3.self_attn.q_proj.bias");
        assert!(llama_name("blk.x.attn_q.weight").is_none() && llama_name("rope_freqs.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // convert_hf_to_gguf.permute: reshape(n_head, 2, d/2, in).swapaxes(1, 2).reshape(out, in).
        let w = Tensor::arange(48, (tch::Kind::Float, tch::Device::Cpu)).reshape([12, 4]);
        let permuted = w.reshape([3, 2, 2, 4]).transpose(1, 2).contiguous().reshape([12, 4]);
        assert_ne!(permuted, w);
        assert_eq!(unpermute(&permuted, 3), w);
    }

    #[test]
    fn truncated_and_foreign_files_are_named() {
        let err = GgufFile::from_bytes("x.gguf".into(), b"GGML0000".to_vec()).unwrap_err().to_string();
        assert!(err.contains("x.gguf") && err.contains("not a GGUF file"), "{err}");
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        let err = GgufFile::from_bytes("y.gguf".into(), b).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
