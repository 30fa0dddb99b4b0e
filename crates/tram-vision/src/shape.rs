//! The image task's model described without loading weights or images ([`ModelShape`], what `tram plan` sizes a
//! run by): ViT from its configuration (a paper profile's placeholder folder reads the built-in copy of
//! google/vit-base-patch16-224's), EfficientNet-Lite0 counted on a model built without its weights.

use std::path::Path;

use tch::nn;
use tram_task::shape::{config_json, Attention, ExampleCosts, Stack};
use tram_task::ModelShape;

use crate::classifier::ModelSpec;
use crate::efficientnet_lite::{EfficientNetLite, EfficientNetLiteConfig};
use crate::error::{Error, Result};
use crate::transfer::{DataSpec, TransferConfig};
use crate::vit::VitConfig;

/// `config.json` of google/vit-base-patch16-224 on the Hub (86.6 M with its 1000-class head; `id2label` and
/// `label2id` left out: they name the head's classes, which a fine-tuning run replaces).
const VIT_BASE: &str = r#"{"architectures": ["ViTForImageClassification"], "attention_probs_dropout_prob": 0.0,
  "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 768, "image_size": 224,
  "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-12, "model_type": "vit",
  "num_attention_heads": 12, "num_channels": 3, "num_hidden_layers": 12, "patch_size": 16, "qkv_bias": true}"#;

/// The Hugging Face configuration the paper profile names, by folder name.
pub const BUILTIN_CONFIGS: [(&str, &str); 1] = [("vit-base-patch16-224", VIT_BASE)];

/// Classes of the Hub's image sets the paper uses, by folder name (App. B.3).
const KNOWN_SETS: [(&str, u64); 3] = [("cifar100", 100), ("stanford-cars", 196), ("oxford-flowers", 102)];

impl VitConfig {
    /// Parameters of the model as [`crate::vit::Vit`] holds them with a head of `classes`: the patch projection,
    /// class token and positions, the layers, the final LayerNorm, the head.
    pub fn parameters(&self, classes: u64) -> u64 {
        let d = self.hidden_size as u64;
        let patches = ((self.image_size / self.patch_size) as u64).pow(2);
        let patch = self.num_channels as u64 * (self.patch_size as u64).pow(2) * d + d;
        patch
            + d
            + (patches + 1) * d
            + self.num_hidden_layers as u64 * self.stack(0).layer_params()
            + 2 * d
            + d * classes
            + classes
    }

    fn stack(&self, tokens: u64) -> Stack {
        let layers = self.num_hidden_layers as u64;
        let (hidden, inner, heads) =
            (self.hidden_size as u64, self.intermediate_size as u64, self.num_attention_heads as u64);
        Stack { layers, trained: layers, hidden, inner, heads, tokens }
    }
}

/// The number of classes, and how it is known: from the data where it is on disk or its name is a known set's.
fn classes(data: &DataSpec) -> Result<Option<(u64, String)>> {
    Ok(match data {
        DataSpec::Emoji(cfg) => {
            let root = match &cfg.root {
                Some(r) => r.clone(),
                None => crate::data::emoji::default_dir()?,
            };
            let entries = crate::data::emoji::read_entries(&root.join(cfg.train_style.as_str()))?;
            Some((crate::data::emoji::categories(&entries).len() as u64, "the emoji categories".into()))
        }
        DataSpec::Parquet { dir, .. } | DataSpec::ImageFolder { train: dir, .. } => {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some((set, n)) = KNOWN_SETS.iter().find(|(s, _)| *s == name) {
                Some((*n, format!("{set}'s classes")))
            } else if dir.exists() {
                Some((data.load()?.classes.len() as u64, format!("the classes of {}", dir.display())))
            } else {
                None
            }
        }
    })
}

impl TransferConfig {
    /// The classifier a run of this task trains (every parameter: the paper fine-tunes ViT in full).
    pub fn shape(&self) -> Result<ModelShape> {
        let classes = classes(&self.data)?;
        match &self.model {
            ModelSpec::Vit { dir, .. } => self.vit_shape(dir, classes),
            ModelSpec::EfficientNetLite0 { .. } => {
                let (n, known) = classes.ok_or_else(|| Error::Config("the data's classes are unknown".into()))?;
                let vs = nn::VarStore::new(tch::Device::Cpu);
                let _net = EfficientNetLite::new(&vs.root(), EfficientNetLiteConfig::lite0(n as i64));
                let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
                let largest = vs.trainable_variables().iter().map(|t| t.numel() as u64).max().unwrap_or(0);
                Ok(ModelShape {
                    description: format!("EfficientNet-Lite0, {n} classes ({known}), counted on the model built"),
                    total_params: params as u64,
                    trained_params: params as u64,
                    largest_trained: largest,
                    caveat: None,
                    costs: None,
                })
            }
        }
    }

    fn vit_shape(&self, dir: &Path, classes: Option<(u64, String)>) -> Result<ModelShape> {
        let (json, source) = config_json(dir, &BUILTIN_CONFIGS)?;
        let c: VitConfig = serde_json::from_value(json)
            .map_err(|e| Error::ModelConfig { path: dir.join("config.json"), message: e.to_string() })?;
        let (n, known, caveat) = match classes {
            Some((n, known)) => (n, known, None),
            None => {
                let n = c.checkpoint_classes().unwrap_or(1000) as u64;
                (n, "unknown".into(), Some(format!("the data's classes are unknown here: a {n}-class head assumed")))
            }
        };
        let t = ((self.image_size as i64 / c.patch_size).pow(2) + 1) as u64;
        let s = c.stack(t);
        let d = c.hidden_size as u64;
        let patch = 2.0 * ((t - 1) * c.num_channels as u64 * (c.patch_size as u64).pow(2) * d) as f64;
        let total = c.parameters(n);
        Ok(ModelShape {
            description: format!(
                "ViT, {} layers × {d}, {} px, {n} classes ({known}); {source}",
                c.num_hidden_layers, self.image_size
            ),
            total_params: total,
            trained_params: total,
            largest_trained: (d * s.inner).max(n * d),
            caveat,
            costs: Some(ExampleCosts {
                forward_flops: s.forward_flops(false) + patch,
                backward_flops: s.backward_flops() + patch,
                activation_elements: s.activation_elements() + (t * d) as f64,
                mask_elements: if c.hidden_dropout_prob > 0.0 { s.mask_elements() } else { 0.0 },
                attention_elements: s.attention_elements(),
                attention: Attention::Unfused { dropout: c.attention_probs_dropout_prob > 0.0 },
                output_elements: n as f64,
            }),
        })
    }
}
