//! Loading a safetensors file into a var store by key name, with every mismatch reported by key.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Tensor};

use crate::error::{Error, Result};

/// What to do with keys that are not in both the file and the model.
pub(crate) struct LoadRules<'a> {
    /// Model variables under these prefixes are not loaded (a new classification head).
    pub skip_prefixes: &'a [&'a str],
    /// File keys that the model does not have and that may be ignored (e.g. `num_batches_tracked`).
    pub ignore_extra: &'a dyn Fn(&str) -> bool,
}

/// Copies the tensors of `file` into the variables of `vs` with the same names. Every model variable not
/// skipped must be in the file with the same shape, and every file key must be used or ignorable.
pub(crate) fn load_safetensors(vs: &nn::VarStore, file: &Path, rules: &LoadRules) -> Result<()> {
    let err = |message: String| Error::Weights { path: file.to_path_buf(), message };
    let tensors: HashMap<String, Tensor> =
        Tensor::read_safetensors(file).map_err(|e| err(e.to_string()))?.into_iter().collect();
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
