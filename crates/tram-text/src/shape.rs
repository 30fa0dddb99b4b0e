//! The language tasks' models described without loading them ([`ModelShape`], what `tram plan` sizes a run by):
//! parameters from the configuration (GPT-2, Llama, BERT/XLM-R), one example's FLOPs and activations at the
//! profile's sequence length. A paper profile's placeholder folder (`/path/to/gpt2-xl`) reads the built-in copy of
//! the Hugging Face configuration it names.

use std::path::Path;

use tram_task::shape::{config_json, Stack};
use tram_task::shape::{Attention, ExampleCosts};
use tram_task::ModelShape;

use crate::causal_lm::{smollm2_gguf, ModelSource};
use crate::encoder::EncoderConfig;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::gpt2::Gpt2Config;
use crate::llama::LlamaConfig;
use crate::lm::CausalLmConfig;
use crate::trainable::Trainable;
use crate::xlingual::{CrossLingualConfig, EncoderSpec, XlData};

/// `config.json` of openai-community/gpt2 on the Hub (124 M).
const GPT2: &str = r#"{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
  "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12,
  "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": null, "summary_first_dropout": 0.1,
  "summary_proj_to_labels": true, "summary_type": "cls_index", "summary_use_proj": true,
  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}}, "vocab_size": 50257}"#;

/// `config.json` of openai-community/gpt2-xl on the Hub (1.56 B).
const GPT2_XL: &str = r#"{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
  "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 1600, "n_head": 25, "n_layer": 48,
  "n_positions": 1024, "output_past": true, "resid_pdrop": 0.1, "summary_activation": null,
  "summary_first_dropout": 0.1, "summary_proj_to_labels": true, "summary_type": "cls_index", "summary_use_proj": true,
  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}}, "vocab_size": 50257}"#;

/// `config.json` of FacebookAI/xlm-roberta-base on the Hub (278 M with a 3-class head).
const XLMR_BASE: &str = r#"{"architectures": ["XLMRobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1,
  "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
  "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 514,
  "model_type": "xlm-roberta", "num_attention_heads": 12, "num_hidden_layers": 12, "output_past": true,
  "pad_token_id": 1, "position_embedding_type": "absolute", "type_vocab_size": 1, "use_cache": true,
  "vocab_size": 250002}"#;

/// The Hugging Face configurations the paper profiles name, by folder name.
pub const BUILTIN_CONFIGS: [(&str, &str); 3] = [("gpt2", GPT2), ("gpt2-xl", GPT2_XL), ("xlm-roberta-base", XLMR_BASE)];

fn config(dir: &Path) -> Result<(serde_json::Value, String)> {
    Ok(config_json(dir, &BUILTIN_CONFIGS)?)
}

/// Layers that train of `layers` (all, or the top k).
fn trained_layers(trainable: Trainable, layers: usize) -> Result<u64> {
    Ok((layers - trainable.first_trained_layer(layers)?) as u64)
}

impl Gpt2Config {
    /// Parameters of the model as [`crate::gpt2::Gpt2`] holds them (a tied head counted once).
    pub fn parameters(&self) -> u64 {
        let d = self.n_embd as u64;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size as u64 * d };
        (self.vocab_size + self.n_positions) as u64 * d
            + self.n_layer as u64 * self.stack(0, 0).layer_params()
            + 2 * d
            + head
    }

    fn stack(&self, trained: u64, tokens: u64) -> Stack {
        let (hidden, inner, heads) = (self.n_embd as u64, self.inner() as u64, self.n_head as u64);
        Stack { layers: self.n_layer as u64, trained, hidden, inner, heads, tokens }
    }
}

impl LlamaConfig {
    /// Parameters of one decoder layer: q, k, v, o (grouped-query k and v), the gated MLP, two RMSNorms.
    fn layer_params(&self) -> u64 {
        let (h, i, hd) = (self.hidden_size as u64, self.intermediate_size as u64, self.head_dim() as u64);
        let (q, kv) = (self.num_attention_heads as u64 * hd, self.kv_heads() as u64 * hd);
        let attn_bias = if self.attention_bias { q + 2 * kv + h } else { 0 };
        let mlp_bias = if self.mlp_bias { 2 * i + h } else { 0 };
        h * (q + 2 * kv) + q * h + attn_bias + 3 * h * i + mlp_bias + 2 * h
    }

    /// Parameters of the model as [`crate::llama::Llama`] holds them (a tied head counted once).
    pub fn parameters(&self) -> u64 {
        let (v, h) = (self.vocab_size as u64, self.hidden_size as u64);
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * self.layer_params() + h + head
    }
}

impl EncoderConfig {
    /// Parameters of the encoder (embeddings with `word_rows` rows, layers; no pooler) under a classification
    /// head of `labels` classes, as [`crate::classifier::SequenceClassifier`] and its frozen prefix hold them.
    pub fn parameters(&self, word_rows: i64, labels: i64) -> u64 {
        let d = self.hidden_size as u64;
        let embeddings = (word_rows + self.max_position_embeddings + self.type_vocab_size) as u64 * d + 2 * d;
        embeddings + self.num_hidden_layers as u64 * self.stack(0, 0).layer_params() + head_params(d, labels as u64)
    }

    fn stack(&self, trained: u64, tokens: u64) -> Stack {
        let (hidden, inner) = (self.hidden_size as u64, self.intermediate_size as u64);
        let heads = self.num_attention_heads as u64;
        Stack { layers: self.num_hidden_layers as u64, trained, hidden, inner, heads, tokens }
    }
}

/// What a plan of a task that caches its frozen lower layers' output leaves out: those states, one hidden vector per
/// token of every example the task reads (held as tensors for the whole run; their size depends on the data).
fn cache_caveat(cached: bool) -> Option<String> {
    cached.then(|| {
        "no memory for the frozen layers' cached output (a hidden vector per token of every example read; it \
         depends on the data)"
            .to_string()
    })
}

/// Hugging Face's sequence-classification head: dense d × d, then d × labels, with biases.
fn head_params(d: u64, labels: u64) -> u64 {
    d * d + d + d * labels + labels
}

impl CausalLmConfig {
    /// The model a run of this task trains, at `block_len` tokens per example.
    pub fn shape(&self) -> Result<ModelShape> {
        let t = self.block_len as u64;
        match &self.model {
            ModelSource::Snapshot(dir) => {
                let (json, source) = config(dir)?;
                match json.get("model_type").and_then(|m| m.as_str()) {
                    Some("llama") => self.llama_shape(&LlamaConfig::from_json(json, &dir.join("config.json"))?, source),
                    _ => {
                        let c = Gpt2Config::from_json(json, &dir.join("config.json"))?;
                        let trained = trained_layers(self.trainable, c.n_layer)?;
                        let s = c.stack(trained, t);
                        let (d, v) = (c.n_embd as u64, c.vocab_size as u64);
                        let cached = trained < s.layers;
                        let trained_params = if cached { trained * s.layer_params() + 2 * d } else { c.parameters() };
                        let head = 2.0 * (t * d * v) as f64;
                        Ok(ModelShape {
                            description: format!(
                                "GPT-2, {} layers × {}, vocabulary {v}; {source}",
                                c.n_layer, c.n_embd
                            ),
                            total_params: c.parameters(),
                            trained_params,
                            largest_trained: if cached { d * s.inner } else { (d * s.inner).max(v * d) },
                            caveat: cache_caveat(cached),
                            costs: Some(ExampleCosts {
                                forward_flops: s.forward_flops(cached) + head,
                                backward_flops: s.backward_flops() + 2.0 * head,
                                activation_elements: s.activation_elements() + (t * d) as f64 * 2.0,
                                mask_elements: if c.resid_pdrop > 0.0 { s.mask_elements() } else { 0.0 },
                                attention_elements: s.attention_elements(),
                                attention: Attention::Sdpa { dropout: c.attn_pdrop > 0.0 },
                                output_elements: (t * v) as f64,
                            }),
                        })
                    }
                }
            }
            ModelSource::Smollm2 | ModelSource::Gguf(_) => {
                let path = match &self.model {
                    ModelSource::Gguf(p) => p.clone(),
                    _ => smollm2_gguf()?,
                };
                let file = GgufFile::open(&path)?;
                let c = LlamaConfig::from_json(file.llama_config_json()?, &path)?;
                self.llama_shape(&c, format!("GGUF metadata of {}", path.display()))
            }
        }
    }

    fn llama_shape(&self, c: &LlamaConfig, source: String) -> Result<ModelShape> {
        let t = self.block_len as u64;
        let trained = trained_layers(self.trainable, c.num_hidden_layers)?;
        let cached = trained < c.num_hidden_layers as u64;
        let (h, i, v) = (c.hidden_size as u64, c.intermediate_size as u64, c.vocab_size as u64);
        let (hd, heads) = (c.head_dim() as u64, c.num_attention_heads as u64);
        let q_kv = (heads + 2 * c.kv_heads() as u64) * hd;
        let per_layer =
            2.0 * t as f64 * (h * q_kv + heads * hd * h + 3 * h * i) as f64 + 4.0 * (t * t * heads * hd) as f64;
        let run = if cached { trained } else { c.num_hidden_layers as u64 };
        let head = 2.0 * (t * h * v) as f64;
        Ok(ModelShape {
            description: format!("Llama, {} layers × {h}, vocabulary {v}; {source}", c.num_hidden_layers),
            total_params: c.parameters(),
            trained_params: if cached { trained * c.layer_params() + h } else { c.parameters() },
            largest_trained: if cached { h * i } else { (h * i).max(v * h) },
            caveat: cache_caveat(cached),
            costs: Some(ExampleCosts {
                forward_flops: run as f64 * per_layer + head,
                backward_flops: 2.0 * (trained as f64 * per_layer + head),
                // Per token: each RMSNorm's input, its products and output, q, k, v and the rotated q and k, the
                // attention's output, the MLP's gate, activation, up and product (an I-wide four).
                activation_elements: (trained * t) as f64 * (6.0 * h as f64 + 2.0 * q_kv as f64 + 4.0 * i as f64),
                mask_elements: 0.0,
                attention_elements: (trained * heads * t * t) as f64,
                attention: Attention::Sdpa { dropout: c.attention_dropout > 0.0 },
                output_elements: (t * v) as f64,
            }),
        })
    }
}

impl CrossLingualConfig {
    /// The classifier a run of this task trains, at `max_seq_len` tokens per example.
    pub fn shape(&self) -> Result<ModelShape> {
        let (c, source) = match &self.model {
            EncoderSpec::HuggingFace { dir } => {
                let (json, source) = config(dir)?;
                let c: EncoderConfig = serde_json::from_value(json)
                    .map_err(|e| Error::ModelConfig { path: dir.join("config.json"), message: e.to_string() })?;
                (c, source)
            }
            EncoderSpec::E5Small { file, .. } => {
                let path = match file {
                    Some(p) => p.clone(),
                    None => crate::e5s1::default_model_path()?,
                };
                (crate::e5s1::E5s1::open(&path)?.config(), format!("E5S1 header of {}", path.display()))
            }
        };
        let labels = match &self.data {
            XlData::InstallGuide { .. } => crate::data::install_guide::CLASSES.len(),
            XlData::Xnli { .. } => crate::data::nli::NLI_CLASSES.len(),
        } as u64;
        let t = self.max_seq_len as u64;
        let trained = trained_layers(self.trainable, c.num_hidden_layers)?;
        let s = c.stack(trained, t);
        let d = c.hidden_size as u64;
        let cached = trained < s.layers;
        let total = c.parameters(c.vocab_size, labels as i64);
        let trained_params = if cached { trained * s.layer_params() + head_params(d, labels) } else { total };
        let vocabulary = self.prune_vocab.then(|| {
            format!(
                "the full vocabulary of {}; prune_vocab keeps only the rows of the tokens the data uses (fewer {})",
                c.vocab_size,
                if cached { "frozen parameters" } else { "parameters, trained ones included" }
            )
        });
        let caveat = match (vocabulary, cache_caveat(cached)) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        Ok(ModelShape {
            description: format!(
                "{} encoder, {} layers × {d}, {labels} classes; {source}",
                c.model_type, c.num_hidden_layers
            ),
            total_params: total,
            trained_params,
            largest_trained: if cached { d * s.inner } else { (d * s.inner).max(c.vocab_size as u64 * d) },
            caveat,
            costs: Some(ExampleCosts {
                forward_flops: s.forward_flops(cached) + 2.0 * head_params(d, labels) as f64,
                backward_flops: s.backward_flops() + 4.0 * head_params(d, labels) as f64,
                activation_elements: s.activation_elements(),
                mask_elements: if c.hidden_dropout_prob > 0.0 { s.mask_elements() } else { 0.0 },
                attention_elements: s.attention_elements(),
                attention: Attention::Unfused { dropout: c.attention_probs_dropout_prob > 0.0 },
                output_elements: labels as f64,
            }),
        })
    }
}
