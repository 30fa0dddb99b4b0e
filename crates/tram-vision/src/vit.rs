//! ViT (Dosovitskiy et al. 2021) as Hugging Face's `ViTForImageClassification`, loaded from a snapshot folder as
//! the user has it (`config.json` + `model.safetensors`, e.g. google/vit-base-patch16-224), by the Hugging Face
//! key names: `vit.embeddings.{cls_token,position_embeddings,patch_embeddings.projection}`,
//! `vit.encoder.layer.N.{layernorm_before,attention.attention.{query,key,value},attention.output.dense,
//! layernorm_after,intermediate.dense,output.dense}`, `vit.layernorm`, `classifier`.

use std::path::Path;

use serde::Deserialize;
use tch::{nn, Kind, Tensor};
use tram_task::kit::activation::Activation;
use tram_task::kit::weights::{load_safetensors, LoadRules};

use crate::data::Normalization;
use crate::error::{io_err, Error, Result};

/// The fields of a Hugging Face ViT `config.json` that the forward pass uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VitConfig {
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "gelu")]
    pub hidden_act: Activation,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "ln_eps")]
    pub layer_norm_eps: f64,
    pub image_size: i64,
    pub patch_size: i64,
    #[serde(default = "three")]
    pub num_channels: i64,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    /// Class names of the checkpoint's head (its size is the head's size).
    #[serde(default)]
    pub id2label: std::collections::BTreeMap<String, String>,
}

fn gelu() -> Activation {
    Activation::Gelu
}
fn ln_eps() -> f64 {
    1e-12
}
fn three() -> i64 {
    3
}
fn yes() -> bool {
    true
}

impl VitConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let cfg: VitConfig = serde_json::from_str(&text)
            .map_err(|e| Error::ModelConfig { path: path.clone(), message: e.to_string() })?;
        let bad = |m: String| Err(Error::ModelConfig { path: path.clone(), message: m });
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            ));
        }
        if cfg.image_size % cfg.patch_size != 0 {
            return bad(format!("image_size {} is not a multiple of patch_size {}", cfg.image_size, cfg.patch_size));
        }
        Ok(cfg)
    }

    /// The checkpoint's number of classes (`id2label`), if it states one.
    pub fn checkpoint_classes(&self) -> Option<i64> {
        (!self.id2label.is_empty()).then_some(self.id2label.len() as i64)
    }
}

/// The input normalisation from `dir/preprocessor_config.json` (`image_mean`, `image_std`); [-1, 1], the
/// google/vit-* value, when the file is absent.
pub fn normalization(dir: &Path) -> Result<Normalization> {
    let path = dir.join("preprocessor_config.json");
    if !path.exists() {
        return Ok(Normalization::MINUS_ONE_ONE);
    }
    #[derive(Deserialize)]
    struct Pre {
        image_mean: [f64; 3],
        image_std: [f64; 3],
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let pre: Pre = serde_json::from_str(&text).map_err(|e| Error::ModelConfig { path, message: e.to_string() })?;
    Ok(Normalization { mean: pre.image_mean, std: pre.image_std })
}

#[derive(Debug)]
struct Layer {
    ln_before: nn::LayerNorm,
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    ln_after: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
}

/// A ViT image classifier.
#[derive(Debug)]
pub struct Vit {
    config: VitConfig,
    num_classes: i64,
    cls_token: Tensor,
    position_embeddings: Tensor,
    patch: nn::Conv2D,
    layers: Vec<Layer>,
    layernorm: nn::LayerNorm,
    classifier: nn::Linear,
}

impl Vit {
    /// The network with fresh weights under `p` and a head of `num_classes` outputs.
    pub fn new(p: &nn::Path, config: VitConfig, num_classes: i64) -> Self {
        let h = config.hidden_size;
        let ln = |p: nn::Path| {
            nn::layer_norm(p, vec![h], nn::LayerNormConfig { eps: config.layer_norm_eps, ..Default::default() })
        };
        let lin = |p: nn::Path, i, o, bias| nn::linear(p, i, o, nn::LinearConfig { bias, ..Default::default() });
        let emb = p / "vit" / "embeddings";
        let n_patches = (config.image_size / config.patch_size).pow(2);
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let cls_token = emb.var("cls_token", &[1, 1, h], init);
        let position_embeddings = emb.var("position_embeddings", &[1, n_patches + 1, h], init);
        let patch = nn::conv2d(
            &emb / "patch_embeddings" / "projection",
            config.num_channels,
            h,
            config.patch_size,
            nn::ConvConfig { stride: config.patch_size, ..Default::default() },
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = p / "vit" / "encoder" / "layer" / i;
                let att = &l / "attention";
                Layer {
                    ln_before: ln(&l / "layernorm_before"),
                    query: lin(&att / "attention" / "query", h, h, config.qkv_bias),
                    key: lin(&att / "attention" / "key", h, h, config.qkv_bias),
                    value: lin(&att / "attention" / "value", h, h, config.qkv_bias),
                    attn_out: lin(&att / "output" / "dense", h, h, true),
                    ln_after: ln(&l / "layernorm_after"),
                    intermediate: lin(&l / "intermediate" / "dense", h, config.intermediate_size, true),
                    output: lin(&l / "output" / "dense", config.intermediate_size, h, true),
                }
            })
            .collect();
        let layernorm = ln(p / "vit" / "layernorm");
        let classifier = lin(p / "classifier", h, num_classes, true);
        Self { config, num_classes, cls_token, position_embeddings, patch, layers, layernorm, classifier }
    }

    /// Loads `dir/model.safetensors` into `vs` (whose root holds this network). The checkpoint's head is loaded
    /// only when it has `num_classes` outputs; otherwise the new head keeps its initialisation.
    pub fn load_pretrained(&self, vs: &nn::VarStore, dir: &Path) -> Result<()> {
        let file = dir.join("model.safetensors");
        if !file.exists() {
            return Err(tram_task::Error::Weights {
                origin: file.display().to_string(),
                message: "not found; a Hugging Face snapshot folder holds config.json and model.safetensors".into(),
            }
            .into());
        }
        let same_head = self.config.checkpoint_classes() == Some(self.num_classes);
        let skip: &[&str] = if same_head { &[] } else { &["classifier."] };
        // The pooler is not part of the classifier; a checkpoint saved from ViTModel has one.
        let ignore = |k: &str| k.starts_with("vit.pooler.") || (!same_head && k.starts_with("classifier."));
        Ok(load_safetensors(vs, &file, &LoadRules { skip_prefixes: skip, ignore_extra: &ignore })?)
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Position embeddings for an input of `h × w` pixels: as stored, or bicubically interpolated over the
    /// patch grid (Hugging Face's `interpolate_pos_encoding`).
    fn positions(&self, h: i64, w: i64) -> Tensor {
        let n = self.position_embeddings.size()[1] - 1;
        let (gh, gw) = (h / self.config.patch_size, w / self.config.patch_size);
        if gh * gw == n && h == w {
            return self.position_embeddings.shallow_clone();
        }
        let side = (n as f64).sqrt().round() as i64;
        let d = self.config.hidden_size;
        let cls = self.position_embeddings.narrow(1, 0, 1);
        let grid = self.position_embeddings.narrow(1, 1, n).reshape([1, side, side, d]).permute([0, 3, 1, 2]);
        let grid = grid.upsample_bicubic2d([gh, gw], false, None, None).permute([0, 2, 3, 1]).reshape([1, gh * gw, d]);
        Tensor::cat(&[cls, grid], 1)
    }

    /// Logits `[N, num_classes]` of images `[N, C, H, W]` normalised as the snapshot's preprocessor says.
    // `h += x` on a tch tensor is an in-place add, which would overwrite a tensor autograd saved.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let cfg = &self.config;
        let size = x.size();
        let n = size[0];
        let (heads, d) = (cfg.num_attention_heads, cfg.hidden_size);
        let hd = d / heads;
        let patches = x.apply(&self.patch).flatten(2, -1).transpose(1, 2); // [N, P, D]
        let cls = self.cls_token.expand([n, 1, d], false);
        let mut h = Tensor::cat(&[cls, patches], 1) + self.positions(size[2], size[3]);
        h = h.dropout(cfg.hidden_dropout_prob, train);
        let t = h.size()[1];
        for l in &self.layers {
            let y = h.apply(&l.ln_before);
            let split = |z: Tensor| z.view([n, t, heads, hd]).transpose(1, 2);
            let (q, k, v) = (split(y.apply(&l.query)), split(y.apply(&l.key)), split(y.apply(&l.value)));
            let att = (q.matmul(&k.transpose(-1, -2)) / (hd as f64).sqrt()).softmax(-1, Kind::Float);
            let att = att.dropout(cfg.attention_probs_dropout_prob, train);
            let ctx = att.matmul(&v).transpose(1, 2).reshape([n, t, d]);
            h = h + ctx.apply(&l.attn_out).dropout(cfg.hidden_dropout_prob, train);
            let y = self.config.hidden_act.apply(&h.apply(&l.ln_after).apply(&l.intermediate));
            h = h + y.apply(&l.output).dropout(cfg.hidden_dropout_prob, train);
        }
        h.apply(&self.layernorm).select(1, 0).apply(&self.classifier)
    }
}
