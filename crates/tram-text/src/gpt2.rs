//! GPT-2 (base, medium, large, XL: one code path) from a Hugging Face snapshot folder as downloaded:
//! `config.json`, `model.safetensors` with or without the `transformer.` prefix (the Hub's files have none and
//! carry `h.N.attn.bias` mask buffers; transformers 5 saves with the prefix and without them), Conv1D weights
//! stored `[in, out]`, LM head tied to the token embedding. Weights keep their Hugging Face names (no prefix).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tram_core::InputNoise;
use tram_task::kit::activation::Activation;

use crate::error::{Error, Result};
use crate::layers::{read_config, snapshot_weights_file, Weights};

/// `config.json` of a `GPT2LMHeadModel` (the keys this model reads; others are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: i64,
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: usize,
    pub n_head: i64,
    /// MLP width; null means 4 · n_embd.
    #[serde(default)]
    pub n_inner: Option<i64>,
    #[serde(default = "default_act")]
    pub activation_function: Activation,
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_act() -> Activation {
    Activation::GeluTanh
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl Gpt2Config {
    pub fn from_json(value: serde_json::Value, origin: &Path) -> Result<Self> {
        let c: Self = serde_json::from_value(value)
            .map_err(|e| Error::ModelConfig { path: origin.to_path_buf(), message: e.to_string() })?;
        if c.n_head <= 0 || c.n_embd % c.n_head != 0 {
            return Err(Error::ModelConfig {
                path: origin.to_path_buf(),
                message: format!("n_embd ({}) must be a multiple of n_head ({})", c.n_embd, c.n_head),
            });
        }
        Ok(c)
    }

    pub fn inner(&self) -> i64 {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

/// A Conv1D of transformers' GPT-2: y = x · W + b with W stored `[in, out]`.
#[derive(Debug)]
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight) + &self.bias
    }

    fn share(&self) -> Self {
        Self { weight: self.weight.shallow_clone(), bias: self.bias.shallow_clone() }
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor, eps: f64) -> Tensor {
        x.layer_norm(self.weight.size(), Some(&self.weight), Some(&self.bias), eps, true)
    }

    fn share(&self) -> Self {
        Self { weight: self.weight.shallow_clone(), bias: self.bias.shallow_clone() }
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    attn_c_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_c_proj: Conv1D,
}

/// GPT-2 with its tied LM head.
#[derive(Debug)]
pub struct Gpt2 {
    pub config: Gpt2Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// Only for configs with `tie_word_embeddings = false`.
    lm_head: Option<Tensor>,
}

impl Gpt2 {
    fn empty(config: Gpt2Config, device: Device) -> Self {
        let (d, inner) = (config.n_embd, config.inner());
        let e = |shape: &[i64]| Tensor::empty(shape, (Kind::Float, device));
        let conv = |i: i64, o: i64| Conv1D { weight: e(&[i, o]), bias: e(&[o]) };
        let ln = || LayerNorm { weight: e(&[d]), bias: e(&[d]) };
        let blocks = (0..config.n_layer)
            .map(|_| Block {
                ln_1: ln(),
                c_attn: conv(d, 3 * d),
                attn_c_proj: conv(d, d),
                ln_2: ln(),
                c_fc: conv(d, inner),
                mlp_c_proj: conv(inner, d),
            })
            .collect();
        Self {
            wte: e(&[config.vocab_size, d]),
            wpe: e(&[config.n_positions, d]),
            blocks,
            ln_f: ln(),
            lm_head: (!config.tie_word_embeddings).then(|| e(&[config.vocab_size, d])),
            config,
        }
    }

    /// Builds the model from named tensors: the `transformer.` prefix is dropped, the attention-mask buffers
    /// (`h.N.attn.bias`, `h.N.attn.masked_bias`) and a tied `lm_head.weight` are ignored.
    pub fn from_tensors(
        config: Gpt2Config,
        tensors: HashMap<String, Tensor>,
        origin: &Path,
        device: Device,
    ) -> Result<Self> {
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("transformer.").map(str::to_string).unwrap_or(k), v))
            .collect();
        let tied = config.tie_word_embeddings;
        let mut model = Self::empty(config, device);
        let buffers = |k: &str| {
            (k.starts_with("h.") && (k.ends_with(".attn.bias") || k.ends_with(".attn.masked_bias")))
                || (tied && k == "lm_head.weight")
        };
        model.fill(tensors, origin, &buffers)?;
        Ok(model)
    }

    /// The model of `config` with weights drawn from torch's generator ([`Weights::randomize`]).
    pub fn random(config: Gpt2Config, device: Device) -> Self {
        let mut model = Self::empty(config, device);
        model.randomize();
        model
    }

    /// A snapshot folder: `config.json` and `model.safetensors`.
    pub fn from_snapshot(dir: &Path, device: Device) -> Result<Self> {
        let config = Gpt2Config::from_json(read_config(dir)?, &dir.join("config.json"))?;
        let file = snapshot_weights_file(dir)?;
        let tensors = tram_task::kit::weights::read_safetensors(&file)?;
        Self::from_tensors(config, tensors, &file, device)
    }

    /// A model whose weights are the same tensors as this one's (no copy).
    pub fn share(&self) -> Self {
        Self {
            config: self.config.clone(),
            wte: self.wte.shallow_clone(),
            wpe: self.wpe.shallow_clone(),
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    ln_1: b.ln_1.share(),
                    c_attn: b.c_attn.share(),
                    attn_c_proj: b.attn_c_proj.share(),
                    ln_2: b.ln_2.share(),
                    c_fc: b.c_fc.share(),
                    mlp_c_proj: b.mlp_c_proj.share(),
                })
                .collect(),
            ln_f: self.ln_f.share(),
            lm_head: self.lm_head.as_ref().map(Tensor::shallow_clone),
        }
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The token-embedding table `wte` `[vocab, H]`, where the input noise goes.
    pub fn token_embeddings(&self) -> &Tensor {
        &self.wte
    }

    /// Token embeddings (+ the input noise of TRAM-x / R3F / TRAM-Fisher on them, where the released code puts
    /// it: the output of `transformer.wte`), plus position embeddings, then embedding dropout.
    pub fn embed(&self, ids: &Tensor, noise: Option<&InputNoise>, train: bool) -> Tensor {
        let t = ids.size()[1];
        let x = Tensor::embedding(&self.wte, ids, -1, false, false);
        let x = match noise {
            Some(z) => z.apply(&x),
            None => x,
        };
        let pos = Tensor::arange(t, (Kind::Int64, ids.device()));
        (x + Tensor::embedding(&self.wpe, &pos, -1, false, false)).dropout(self.config.embd_pdrop, train)
    }

    /// Block `i` on hidden states `[N, T, D]` (causal attention).
    pub fn layer(&self, i: usize, h: &Tensor, train: bool) -> Tensor {
        let c = &self.config;
        let b = &self.blocks[i];
        let (n, t, d) = (h.size()[0], h.size()[1], c.n_embd);
        let hd = d / c.n_head;
        let x = b.ln_1.forward(h, c.layer_norm_epsilon);
        let qkv = b.c_attn.forward(&x).split(d, -1);
        let heads = |y: &Tensor| y.view([n, t, c.n_head, hd]).transpose(1, 2);
        let mut scale = if c.scale_attn_weights { 1.0 / (hd as f64).sqrt() } else { 1.0 };
        if c.scale_attn_by_inverse_layer_idx {
            scale /= (i + 1) as f64;
        }
        let p = if train { c.attn_pdrop } else { 0.0 };
        let a = Tensor::scaled_dot_product_attention::<Tensor>(
            &heads(&qkv[0]),
            &heads(&qkv[1]),
            &heads(&qkv[2]),
            None,
            p,
            true,
            scale,
            false,
        );
        let a = b.attn_c_proj.forward(&a.transpose(1, 2).reshape([n, t, d]));
        let h = h + a.dropout(c.resid_pdrop, train);
        let x = b.ln_2.forward(&h, c.layer_norm_epsilon);
        let m = b.mlp_c_proj.forward(&c.activation_function.apply(&b.c_fc.forward(&x)));
        &h + m.dropout(c.resid_pdrop, train)
    }

    /// Final layer norm and LM head: logits `[N, T, V]`.
    pub fn head(&self, h: &Tensor) -> Tensor {
        let x = self.ln_f.forward(h, self.config.layer_norm_epsilon);
        x.linear::<Tensor>(self.lm_head.as_ref().unwrap_or(&self.wte), None)
    }
}

impl Weights for Gpt2 {
    fn slots(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> =
            vec![("wte.weight".into(), &mut self.wte), ("wpe.weight".into(), &mut self.wpe)];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (name, w, bias) in [
                ("ln_1", &mut b.ln_1.weight, &mut b.ln_1.bias),
                ("attn.c_attn", &mut b.c_attn.weight, &mut b.c_attn.bias),
                ("attn.c_proj", &mut b.attn_c_proj.weight, &mut b.attn_c_proj.bias),
                ("ln_2", &mut b.ln_2.weight, &mut b.ln_2.bias),
                ("mlp.c_fc", &mut b.c_fc.weight, &mut b.c_fc.bias),
                ("mlp.c_proj", &mut b.mlp_c_proj.weight, &mut b.mlp_c_proj.bias),
            ] {
                v.push((format!("h.{i}.{name}.weight"), w));
                v.push((format!("h.{i}.{name}.bias"), bias));
            }
        }
        v.push(("ln_f.weight".into(), &mut self.ln_f.weight));
        v.push(("ln_f.bias".into(), &mut self.ln_f.bias));
        if let Some(h) = self.lm_head.as_mut() {
            v.push(("lm_head.weight".into(), h));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config.json` of `openai-community/gpt2` as the Hub has it (`n_ctx`, `summary_*` and generation keys are
    /// ignored; `n_inner` is absent, so the MLP is 4 · n_embd wide).
    const HUB_GPT2: &str = r#"{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024,
        "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1,
        "summary_activation": null, "summary_first_dropout": 0.1, "summary_proj_to_labels": true,
        "summary_type": "cls_index", "summary_use_proj": true,
        "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}}, "vocab_size": 50257}"#;

    #[test]
    fn hub_configs_of_every_size_read() {
        let origin = Path::new("config.json");
        let base = Gpt2Config::from_json(serde_json::from_str(HUB_GPT2).unwrap(), origin).unwrap();
        assert_eq!((base.n_embd, base.inner(), base.n_layer), (768, 3072, 12));
        assert_eq!(
            (base.activation_function, base.resid_pdrop, base.tie_word_embeddings),
            (Activation::GeluTanh, 0.1, true)
        );
        // medium, large, XL: only the sizes change (XL: 48 layers of 1600 with 25 heads of 64).
        for (d, h, l) in [(1024, 16, 24), (1280, 20, 36), (1600, 25, 48)] {
            let mut v: serde_json::Value = serde_json::from_str(HUB_GPT2).unwrap();
            v["n_embd"] = d.into();
            v["n_head"] = h.into();
            v["n_layer"] = l.into();
            v["n_inner"] = serde_json::Value::Null;
            let c = Gpt2Config::from_json(v, origin).unwrap();
            assert_eq!((c.inner(), c.n_layer, c.n_embd / c.n_head), (4 * d, l as usize, 64));
        }
        let mut v: serde_json::Value = serde_json::from_str(HUB_GPT2).unwrap();
        v["n_head"] = 7.into();
        assert!(Gpt2Config::from_json(v, origin).unwrap_err().to_string().contains("multiple of n_head"));
        let mut v: serde_json::Value = serde_json::from_str(HUB_GPT2).unwrap();
        v["activation_function"] = "quick_gelu".into();
        assert!(Gpt2Config::from_json(v, origin).unwrap_err().to_string().contains("quick_gelu"));
    }
}
