//! Loading named tensors (a safetensors file, or tensors a loader built, e.g. from GGUF) into a var store by
//! variable name, with every mismatch reported by key.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Tensor};

use crate::error::{Error, Result};

/// Where a model's weights come from (a task's `weights` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// The snapshot's own (`model.safetensors`).
    #[default]
    Pretrained,
    /// Drawn afresh from a fixed seed in the snapshot's architecture (its `model.safetensors` need not exist):
    /// for planning, rehearsals at the paper's shapes and `just gpu-check`, where nothing trained means anything.
    Random,
}

impl Init {
    pub fn is_pretrained(&self) -> bool {
        *self == Init::Pretrained
    }
}

/// What to do with keys that are not in both the source and the model.
pub struct LoadRules<'a> {
    /// Model variables under these prefixes are not loaded (a new head, say).
    pub skip_prefixes: &'a [&'a str],
    /// Source keys that the model does not have and that may be ignored (e.g. `num_batches_tracked`).
    pub ignore_extra: &'a dyn Fn(&str) -> bool,
}

impl LoadRules<'_> {
    /// Every variable loaded, every source key used.
    pub const STRICT: LoadRules<'static> = LoadRules { skip_prefixes: &[], ignore_extra: &|_| false };
}

/// The tensors of a safetensors file, by name.
pub fn read_safetensors(file: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(file)
        .map_err(|e| Error::Weights { origin: file.display().to_string(), message: e.to_string() })?
        .into_iter()
        .collect())
}

/// Copies `tensors` into the variables of `vs` with the same names (converted to each variable's kind and
/// device). Every variable not skipped must be there with the same shape, and every key must be used or
/// ignorable. `origin` names the source in errors (a path).
pub fn load_tensors(
    vs: &nn::VarStore,
    origin: &str,
    tensors: &HashMap<String, Tensor>,
    rules: &LoadRules,
) -> Result<()> {
    let err = |message: String| Error::Weights { origin: origin.to_string(), message };
    let vars = vs.variables();
    let skipped = |name: &str| rules.skip_prefixes.iter().any(|p| name.starts_with(p));
    let mut missing = vec![];
    for (name, var) in &vars {
        if skipped(name) {
            continue;
        }
        let Some(src) = tensors.get(name) else {
            missing.push(name.clone());
            continue;
        };
        if src.size() != var.size() {
            return Err(err(format!(
                "key `{name}` has shape {:?} in the file but the model expects {:?}",
                src.size(),
                var.size()
            )));
        }
        let mut dst = var.shallow_clone();
        tch::no_grad(|| dst.copy_(&src.to_kind(var.kind()).to_device(var.device())));
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(err(format!(
            "{} model keys are missing from the file, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        )));
    }
    let mut extra: Vec<&String> =
        tensors.keys().filter(|k| !vars.contains_key(*k) && !skipped(k) && !(rules.ignore_extra)(k)).collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(err(format!(
            "{} keys in the file are not in the model, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        )));
    }
    Ok(())
}

/// [`load_tensors`] from a safetensors file.
pub fn load_safetensors(vs: &nn::VarStore, file: &Path, rules: &LoadRules) -> Result<()> {
    load_tensors(vs, &file.display().to_string(), &read_safetensors(file)?, rules)
}
