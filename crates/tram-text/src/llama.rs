//! Llama-architecture decoders (Llama, SmolLM2, ...): RMSNorm, rotary position embeddings, grouped-query
//! attention, SwiGLU, tied or untied LM head. Loads a Hugging Face snapshot folder (`config.json`,
//! `model.safetensors`) or a GGUF file (through [`crate::gguf`]); weights keep their Hugging Face names.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tram_core::InputNoise;
use tram_task::kit::activation::Activation;

use crate::error::{Error, Result};
use crate::layers::{read_config, snapshot_weights_file, Linear, Weights};

/// `config.json` of a `LlamaForCausalLM` (the keys this model reads; others are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    /// Grouped-query attention: key/value heads (default: one per query head).
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Default: hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// The Hub's spelling of the RoPE base (transformers 4).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 5's spelling: `{ rope_theta, rope_type }`.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Older scaled-RoPE spelling; only absent/null or `rope_type = "default"` is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    /// The LM head reuses `model.embed_tokens.weight` (transformers' default for Llama is false).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// Dropout on the attention probabilities in training (0 for every released Llama).
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

/// transformers 5's `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: f64,
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> i64 {
    2048
}
fn default_act() -> Activation {
    Activation::Silu
}
fn default_rope_type() -> String {
    "default".into()
}

impl LlamaConfig {
    pub fn from_json(value: serde_json::Value, origin: &Path) -> Result<Self> {
        let config: Self = serde_json::from_value(value)
            .map_err(|e| Error::ModelConfig { path: origin.to_path_buf(), message: e.to_string() })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let err = |message: String| Error::ModelConfig { path: origin.to_path_buf(), message };
        let scaled = |t: &str| t != "default";
        if let Some(p) = &self.rope_parameters {
            if scaled(&p.rope_type) {
                return Err(err(format!("rope_type `{}` is not supported (only `default` RoPE)", p.rope_type)));
            }
        }
        if let Some(s) = self.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            let t = s.get("rope_type").or_else(|| s.get("type")).and_then(|t| t.as_str()).unwrap_or("?");
            if scaled(t) {
                return Err(err(format!("rope_scaling `{t}` is not supported (only `default` RoPE)")));
            }
        }
        let kv = self.kv_heads();
        if self.num_attention_heads <= 0 || kv <= 0 || self.num_attention_heads % kv != 0 {
            return Err(err(format!(
                "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({kv})",
                self.num_attention_heads
            )));
        }
        if self.head_dim() % 2 != 0 {
            return Err(err(format!("head_dim {} must be even for rotary embeddings", self.head_dim())));
        }
        Ok(())
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn rope_base(&self) -> f64 {
        self.rope_parameters.as_ref().map(|p| p.rope_theta).or(self.rope_theta).unwrap_or(10_000.0)
    }
}

/// One decoder layer: pre-norm attention and pre-norm SwiGLU MLP, each with a residual.
#[derive(Debug)]
struct Layer {
    input_layernorm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_attention_layernorm: Tensor,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// A Llama-architecture decoder with its LM head.
#[derive(Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// `None` when tied to `embed_tokens`.
    lm_head: Option<Tensor>,
}

impl Llama {
    /// The model with uninitialised weights of the right shapes (to be filled by [`Weights::fill`]).
    fn empty(config: LlamaConfig, device: Device) -> Self {
        let (h, i, hd) = (config.hidden_size, config.intermediate_size, config.head_dim());
        let (nh, nkv) = (config.num_attention_heads, config.kv_heads());
        let e = |shape: &[i64]| Tensor::empty(shape, (Kind::Float, device));
        let lin = |out: i64, inp: i64, bias: bool| Linear { weight: e(&[out, inp]), bias: bias.then(|| e(&[out])) };
        let layers = (0..config.num_hidden_layers)
            .map(|_| Layer {
                input_layernorm: e(&[h]),
                q_proj: lin(nh * hd, h, config.attention_bias),
                k_proj: lin(nkv * hd, h, config.attention_bias),
                v_proj: lin(nkv * hd, h, config.attention_bias),
                o_proj: lin(h, nh * hd, config.attention_bias),
                post_attention_layernorm: e(&[h]),
                gate_proj: lin(i, h, config.mlp_bias),
                up_proj: lin(i, h, config.mlp_bias),
                down_proj: lin(h, i, config.mlp_bias),
            })
            .collect();
        Self {
            embed_tokens: e(&[config.vocab_size, h]),
            layers,
            norm: e(&[h]),
            lm_head: (!config.tie_word_embeddings).then(|| e(&[config.vocab_size, h])),
            config,
        }
    }

    /// Builds the model from named tensors (Hugging Face names, with or without `lm_head.weight` when tied).
    pub fn from_tensors(
        config: LlamaConfig,
        tensors: HashMap<String, Tensor>,
        origin: &Path,
        device: Device,
    ) -> Result<Self> {
        let mut model = Self::empty(config, device);
        let tied = model.config.tie_word_embeddings;
        // A tied checkpoint may still carry a copy of the head; it is the embedding and is not needed.
        model.fill(tensors, origin, &|k| tied && k == "lm_head.weight")?;
        Ok(model)
    }

    /// The model of `config` with weights drawn from torch's generator ([`Weights::randomize`]).
    pub fn random(config: LlamaConfig, device: Device) -> Self {
        let mut model = Self::empty(config, device);
        model.randomize();
        model
    }

    /// A snapshot folder: `config.json` and `model.safetensors`.
    pub fn from_snapshot(dir: &Path, device: Device) -> Result<Self> {
        let config = LlamaConfig::from_json(read_config(dir)?, &dir.join("config.json"))?;
        let file = snapshot_weights_file(dir)?;
        let tensors = tram_task::kit::weights::read_safetensors(&file)?;
        Self::from_tensors(config, tensors, &file, device)
    }

    /// A GGUF file, dequantized to float32.
    pub fn from_gguf(file: &crate::gguf::GgufFile, device: Device) -> Result<Self> {
        let config = LlamaConfig::from_json(file.llama_config_json()?, &file.path)?;
        Self::from_tensors(config, file.llama_tensors()?, &file.path, device)
    }

    /// A model whose weights are the same tensors as this one's (no copy).
    pub fn share(&self) -> Self {
        let other = self;
        let lin = |l: &Linear| l.share();
        Self {
            config: other.config.clone(),
            embed_tokens: other.embed_tokens.shallow_clone(),
            layers: other
                .layers
                .iter()
                .map(|l| Layer {
                    input_layernorm: l.input_layernorm.shallow_clone(),
                    q_proj: lin(&l.q_proj),
                    k_proj: lin(&l.k_proj),
                    v_proj: lin(&l.v_proj),
                    o_proj: lin(&l.o_proj),
                    post_attention_layernorm: l.post_attention_layernorm.shallow_clone(),
                    gate_proj: lin(&l.gate_proj),
                    up_proj: lin(&l.up_proj),
                    down_proj: lin(&l.down_proj),
                })
                .collect(),
            norm: other.norm.shallow_clone(),
            lm_head: other.lm_head.as_ref().map(Tensor::shallow_clone),
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The token-embedding table `embed_tokens` `[vocab, H]`, where the input noise goes.
    pub fn token_embeddings(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// Token embeddings, with the input noise of TRAM-x / R3F / TRAM-Fisher added to them (the released code's
    /// choice for text: noise on the word embeddings).
    pub fn embed(&self, ids: &Tensor, noise: Option<&InputNoise>) -> Tensor {
        let x = Tensor::embedding(&self.embed_tokens, ids, -1, false, false);
        match noise {
            Some(z) => z.apply(&x),
            None => x,
        }
    }

    /// Decoder layer `i` on hidden states `[N, T, H]` (positions 0..T, causal).
    pub fn layer(&self, i: usize, h: &Tensor, train: bool) -> Tensor {
        let c = &self.config;
        let l = &self.layers[i];
        let (n, t) = (h.size()[0], h.size()[1]);
        let (nh, nkv, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let x = rms_norm(h, &l.input_layernorm, c.rms_norm_eps);
        let heads = |y: Tensor, k: i64| y.view([n, t, k, hd]).transpose(1, 2);
        let q = heads(l.q_proj.forward(&x), nh);
        let k = heads(l.k_proj.forward(&x), nkv);
        let v = heads(l.v_proj.forward(&x), nkv);
        let (cos, sin) = rope(t, hd, c.rope_base(), h.device());
        let q = &q * &cos + rotate_half(&q) * &sin;
        let k = &k * &cos + rotate_half(&k) * &sin;
        // Grouped-query attention: query head j reads key/value head j / (nh / nkv), as transformers' repeat_kv.
        let rep = nh / nkv;
        let (k, v) = if rep > 1 {
            (k.repeat_interleave_self_int(rep, 1, None), v.repeat_interleave_self_int(rep, 1, None))
        } else {
            (k, v)
        };
        let p = if train { c.attention_dropout } else { 0.0 };
        let a = Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, p, true, None, false);
        let h = h + l.o_proj.forward(&a.transpose(1, 2).reshape([n, t, nh * hd]));
        let x = rms_norm(&h, &l.post_attention_layernorm, c.rms_norm_eps);
        let gate = c.hidden_act.apply(&l.gate_proj.forward(&x));
        &h + l.down_proj.forward(&(gate * l.up_proj.forward(&x)))
    }

    /// Final norm and LM head: logits `[N, T, V]`.
    pub fn head(&self, h: &Tensor) -> Tensor {
        let x = rms_norm(h, &self.norm, self.config.rms_norm_eps);
        x.linear::<Tensor>(self.lm_head.as_ref().unwrap_or(&self.embed_tokens), None)
    }
}

impl Weights for Llama {
    fn slots(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> = vec![("model.embed_tokens.weight".into(), &mut self.embed_tokens)];
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            v.push((format!("{p}.input_layernorm.weight"), &mut l.input_layernorm));
            v.push((format!("{p}.post_attention_layernorm.weight"), &mut l.post_attention_layernorm));
            for (name, lin) in [
                ("self_attn.q_proj", &mut l.q_proj),
                ("self_attn.k_proj", &mut l.k_proj),
                ("self_attn.v_proj", &mut l.v_proj),
                ("self_attn.o_proj", &mut l.o_proj),
                ("mlp.gate_proj", &mut l.gate_proj),
                ("mlp.up_proj", &mut l.up_proj),
                ("mlp.down_proj", &mut l.down_proj),
            ] {
                lin.push_slots(&format!("{p}.{name}"), &mut v);
            }
        }
        v.push(("model.norm.weight".into(), &mut self.norm));
        if let Some(h) = self.lm_head.as_mut() {
            v.push(("lm_head.weight".into(), h));
        }
        v
    }
}

/// transformers' LlamaRMSNorm: x / sqrt(mean(x²) + eps), then the weight.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let var = x.square().mean_dim(-1, true, Kind::Float);
    weight * (x * (var + eps).rsqrt())
}

/// cos and sin `[T, head_dim]` of rotary embeddings at positions 0..T (the frequencies repeated twice, as
/// transformers lays them out for `rotate_half`).
fn rope(t: i64, head_dim: i64, base: f64, device: Device) -> (Tensor, Tensor) {
    let opts = (Kind::Float, device);
    let exponent =
        Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / head_dim as f64;
    let inv_freq = Tensor::from(base).to_kind(Kind::Float).to_device(device).pow(&exponent).reciprocal();
    let pos = Tensor::arange(t, opts);
    let freqs = pos.unsqueeze(1).matmul(&inv_freq.unsqueeze(0));
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos(), emb.sin())
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[x.dim() - 1] / 2;
    Tensor::cat(&[&(-x.narrow(-1, half, half)), &x.narrow(-1, 0, half)], -1)
}
