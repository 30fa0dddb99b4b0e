//! What the hand-written models (`gpt2.rs`, `llama.rs`, `encoder.rs`) share: a Hugging Face snapshot folder's
//! `config.json` and `model.safetensors`, the linear layer, and weights addressed by Hugging Face name. The
//! activation a `config.json` names is [`tram_task::kit::activation::Activation`], shared with tram-vision.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{io_err, Error, Result};

/// `nn.Linear`: y = x · Wᵀ + b with W stored `[out, in]`.
#[derive(Debug)]
pub(crate) struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }

    pub fn share(&self) -> Self {
        Self { weight: self.weight.shallow_clone(), bias: self.bias.as_ref().map(Tensor::shallow_clone) }
    }

    pub fn push_slots<'a>(&'a mut self, prefix: &str, v: &mut Vec<(String, &'a mut Tensor)>) {
        v.push((format!("{prefix}.weight"), &mut self.weight));
        if let Some(b) = self.bias.as_mut() {
            v.push((format!("{prefix}.bias"), b));
        }
    }
}

/// A model's weights by Hugging Face name: one list drives loading, forking and saving.
pub trait Weights {
    /// Every weight tensor with its name, in a fixed order (a tied head appears once, as the embedding).
    fn slots(&mut self) -> Vec<(String, &mut Tensor)>;

    /// Draws every slot afresh from torch's generator as Hugging Face initialises a new model: matrices and
    /// embeddings N(0, 0.02), norm weights 1, biases 0 (GPT-2's residual projections are not scaled down: these
    /// weights are for measuring shapes, not for learning).
    fn randomize(&mut self) {
        tch::no_grad(|| {
            for (name, slot) in self.slots() {
                if name.ends_with("bias") {
                    let _ = slot.zero_();
                } else if slot.dim() == 1 {
                    let _ = slot.fill_(1.0);
                } else {
                    let _ = slot.normal_(0.0, 0.02);
                }
            }
        });
    }

    /// Fills every slot from `tensors` (same name, same shape; converted to float32 on the slot's device).
    /// Keys left over are an error unless `ignore` accepts them. `origin` names the file in errors.
    fn fill(
        &mut self,
        mut tensors: HashMap<String, Tensor>,
        origin: &Path,
        ignore: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let err = |message: String| Error::Model { path: origin.to_path_buf(), message };
        let mut missing = vec![];
        for (name, slot) in self.slots() {
            let Some(t) = tensors.remove(&name) else {
                missing.push(name);
                continue;
            };
            if t.size() != slot.size() {
                return Err(err(format!(
                    "key `{name}` has shape {:?} in the file but the config gives {:?}",
                    t.size(),
                    slot.size()
                )));
            }
            *slot = t.to_kind(Kind::Float).to_device(slot.device());
        }
        if !missing.is_empty() {
            return Err(err(format!(
                "{} weights are missing, e.g. {:?} (is this the model the config.json describes?)",
                missing.len(),
                &missing[..missing.len().min(5)]
            )));
        }
        let mut extra: Vec<String> = tensors.into_keys().filter(|k| !ignore(k)).collect();
        if !extra.is_empty() {
            extra.sort();
            return Err(err(format!(
                "{} keys in the file are not weights of this model, e.g. {:?}",
                extra.len(),
                &extra[..extra.len().min(5)]
            )));
        }
        Ok(())
    }
}

/// `dir/config.json` as JSON (each model reads its own keys from it).
pub(crate) fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::ModelConfig { path, message: e.to_string() })
}

/// `dir/model.safetensors`, or an error that says what the folder must hold. Read it with
/// [`tram_task::kit::weights::read_safetensors`].
pub fn snapshot_weights_file(dir: &Path) -> Result<PathBuf> {
    let file = dir.join("model.safetensors");
    if file.exists() {
        Ok(file)
    } else {
        Err(Error::Model {
            path: file,
            message: "missing: a Hugging Face snapshot folder must hold model.safetensors (convert a \
                      pytorch_model.bin with transformers' save_pretrained(..., safe_serialization=True))"
                .into(),
        })
    }
}
