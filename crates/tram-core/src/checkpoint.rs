//! Checkpoints: everything needed to resume a run exactly, in one folder: `state.safetensors` (model
//! parameters and buffers, base-optimizer state, target copies) and `manifest.json` (step, counters, the
//! configuration, the variable names). Written to a temporary folder and renamed into place, so an
//! interrupted save never leaves a half-written checkpoint behind.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{checkpoint_err, Result};
use crate::model::{copy_into, Model};
use crate::step::{DriverState, DriverStateMut, OptimizerConfig, Progress, StepDriver};

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    tram_core: String,
    step: u64,
    consecutive_skips: u32,
    skipped_total: u64,
    base_steps: Vec<u64>,
    config: OptimizerConfig,
    param_names: Vec<String>,
    buffer_names: Vec<String>,
}

impl StepDriver {
    /// Saves the model's variables and the driver's state into the folder `dir` (replaced atomically).
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let DriverState { vars, base, target, progress } = self.state();
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (n, t) in vars.param_names.iter().zip(&vars.params) {
            named.push((format!("param.{n}"), t.detach()));
        }
        for (n, t) in vars.buffer_names.iter().zip(&vars.buffers) {
            named.push((format!("buffer.{n}"), t.detach()));
        }
        let (base_named, base_steps) = base.export();
        named.extend(base_named);
        if let Some(target) = target {
            for (n, t) in vars.param_names.iter().zip(target) {
                named.push((format!("target.{n}"), t.shallow_clone()));
            }
        }
        let manifest = Manifest {
            format: FORMAT,
            tram_core: env!("CARGO_PKG_VERSION").to_string(),
            step: progress.step,
            consecutive_skips: progress.consecutive_skips,
            skipped_total: progress.skipped_total,
            base_steps,
            config: self.config().clone(),
            param_names: vars.param_names.clone(),
            buffer_names: vars.buffer_names.clone(),
        };
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let name =
            dir.file_name().ok_or_else(|| checkpoint_err(dir, "not a folder name"))?.to_string_lossy().to_string();
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Tensor::write_safetensors(&named, tmp.join("state.safetensors"))?;
        let json = serde_json::to_string_pretty(&manifest).map_err(|e| checkpoint_err(dir, e.to_string()))?;
        std::fs::write(tmp.join("manifest.json"), json)?;
        if dir.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(dir, &old)?;
            std::fs::rename(&tmp, dir)?;
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&tmp, dir)?;
        }
        Ok(())
    }

    /// Builds a driver for `model` from a checkpoint folder and loads the model's variables from it.
    /// The checkpoint's configuration is used; it must match the model's variables.
    pub fn resume<M: Model>(model: &M, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let manifest: Manifest = {
            let text = std::fs::read_to_string(dir.join("manifest.json"))
                .map_err(|e| checkpoint_err(dir, format!("cannot read manifest.json: {e}")))?;
            serde_json::from_str(&text).map_err(|e| checkpoint_err(dir, format!("bad manifest.json: {e}")))?
        };
        if manifest.format != FORMAT {
            return Err(checkpoint_err(
                dir,
                format!("format {} is not supported (expected {FORMAT})", manifest.format),
            ));
        }
        let mut driver = StepDriver::new(model, manifest.config.clone())?;
        let mut tensors: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("state.safetensors"))
            .map_err(|e| checkpoint_err(dir, format!("cannot read state.safetensors: {e}")))?
            .into_iter()
            .collect();
        let DriverStateMut { vars, base, target, progress } = driver.state_mut();
        if vars.param_names != manifest.param_names || vars.buffer_names != manifest.buffer_names {
            return Err(checkpoint_err(
                dir,
                "the model's variables differ from the checkpoint's (names or trainability)",
            ));
        }
        let mut take =
            |key: String| tensors.remove(&key).ok_or_else(|| checkpoint_err(dir, format!("missing tensor `{key}`")));
        let check_shape = |key: &str, dst: &Tensor, src: &Tensor| {
            if dst.size() != src.size() {
                Err(checkpoint_err(
                    dir,
                    format!("tensor `{key}` has shape {:?}, the model has {:?}", src.size(), dst.size()),
                ))
            } else {
                Ok(())
            }
        };
        let mut load = |prefix: &str, names: &[String], dst: &mut [Tensor]| -> Result<()> {
            let mut src = Vec::with_capacity(names.len());
            for (n, d) in names.iter().zip(dst.iter()) {
                let key = format!("{prefix}.{n}");
                let t = take(key.clone())?;
                check_shape(&key, d, &t)?;
                src.push(t.to_device(d.device()).to_kind(d.kind()));
            }
            copy_into(dst, &src);
            Ok(())
        };
        let names = manifest.param_names.clone();
        load("param", &names, &mut vars.params)?;
        load("buffer", &manifest.buffer_names, &mut vars.buffers)?;
        if let Some(target) = target {
            load("target", &names, target)?;
        }
        let device = vars.params[0].device();
        base.import(manifest.base_steps.clone(), |k| tensors.remove(k).map(|t| t.to_device(device)), dir)?;
        *progress = Progress {
            step: manifest.step,
            consecutive_skips: manifest.consecutive_skips,
            skipped_total: manifest.skipped_total,
        };
        Ok(driver)
    }
}
