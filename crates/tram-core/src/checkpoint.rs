//! Checkpoints: everything needed to resume a run exactly, in one folder: `state.safetensors` (model
//! parameters and buffers, base-optimizer state, target copies), `manifest.json` (step, counters, the
//! configuration, the variable names) and, when the caller gives some, `extra.json` (its own metadata, e.g. the
//! epoch and the position in the data, so that it cannot disagree with the state).
//!
//! A save writes a temporary folder, flushes every file and the folder to disk, then renames it into place and
//! flushes the parent folder: an interrupted save leaves the previous checkpoint or the new one, never a mix.
//! (A crash between the two renames of a replacement leaves the previous one at `.<name>.old-<pid>`.)

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::OptimizerConfig;
use crate::error::{checkpoint_err, Result};
use crate::model::{copy_into, Model};
use crate::precision::LossScale;
use crate::step::{DriverState, DriverStateMut, Progress, StepDriver};

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    tram_core: String,
    step: u64,
    consecutive_skips: u32,
    skipped_total: u64,
    /// fp16's loss scale and its steps since the last overflow (absent in the other precisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_scale: Option<(f64, u32)>,
    base_steps: Vec<u64>,
    config: OptimizerConfig,
    param_names: Vec<String>,
    buffer_names: Vec<String>,
}

const STATE: &str = "state.safetensors";
const MANIFEST: &str = "manifest.json";
const EXTRA: &str = "extra.json";

impl StepDriver {
    /// Saves the model's variables and the driver's state into the folder `dir` (replaced atomically).
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.write_checkpoint(dir.as_ref(), None)
    }

    /// [`StepDriver::save_checkpoint`] plus the caller's metadata, a JSON text stored verbatim in the same
    /// folder (so replaced in the same rename); [`StepDriver::resume_with`] returns it.
    pub fn save_checkpoint_with(&self, dir: impl AsRef<Path>, extra_json: &str) -> Result<()> {
        let dir = dir.as_ref();
        serde_json::from_str::<serde::de::IgnoredAny>(extra_json)
            .map_err(|e| checkpoint_err(dir, format!("the caller's metadata is not JSON: {e}")))?;
        self.write_checkpoint(dir, Some(extra_json))
    }

    fn write_checkpoint(&self, dir: &Path, extra_json: Option<&str>) -> Result<()> {
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
            loss_scale: progress.loss_scale.map(|s| (s.scale, s.good_steps)),
            base_steps,
            config: self.config().clone(),
            param_names: vars.param_names.clone(),
            buffer_names: vars.buffer_names.clone(),
        };
        let manifest = serde_json::to_string_pretty(&manifest).map_err(|e| checkpoint_err(dir, e.to_string()))?;
        let (parent, name) = split_folder(dir)?;
        std::fs::create_dir_all(&parent)?;
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> Result<()> {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp)?;
            }
            std::fs::create_dir(&tmp)?;
            Tensor::write_safetensors(&named, tmp.join(STATE))?;
            File::open(tmp.join(STATE))?.sync_all()?;
            write_synced(&tmp.join(MANIFEST), &manifest)?;
            if let Some(extra) = extra_json {
                write_synced(&tmp.join(EXTRA), extra)?;
            }
            sync_folder(&tmp)?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        replace_folder(&tmp, dir, &parent.join(format!(".{name}.old-{}", std::process::id())), &parent)
    }

    /// Builds a driver for `model` from a checkpoint folder and loads the model's variables from it.
    /// The checkpoint's configuration is used; it must match the model's variables.
    pub fn resume<M: Model>(model: &M, dir: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::resume_with(model, dir)?.0)
    }

    /// [`StepDriver::resume`], also returning the caller's metadata saved by
    /// [`StepDriver::save_checkpoint_with`] (`None` for a checkpoint saved without).
    pub fn resume_with<M: Model>(model: &M, dir: impl AsRef<Path>) -> Result<(Self, Option<String>)> {
        let dir = dir.as_ref();
        let manifest: Manifest = {
            let text = std::fs::read_to_string(dir.join(MANIFEST))
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
        let mut tensors: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join(STATE))
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
            loss_scale: match manifest.loss_scale {
                Some((scale, good_steps)) => Some(LossScale { scale, good_steps }),
                None => progress.loss_scale,
            },
        };
        let extra = match std::fs::read_to_string(dir.join(EXTRA)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(checkpoint_err(dir, format!("cannot read {EXTRA}: {e}"))),
        };
        Ok((driver, extra))
    }
}

/// The parent folder (`.` for a bare name) and the name of the folder `dir`.
fn split_folder(dir: &Path) -> Result<(PathBuf, String)> {
    let name = dir.file_name().ok_or_else(|| checkpoint_err(dir, "not a folder name"))?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((parent.to_path_buf(), name.to_string_lossy().to_string()))
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Flushes a folder's entries (new files, renames) to disk.
fn sync_folder(path: &Path) -> std::io::Result<()> {
    // Windows cannot open a folder as a file; its renames are flushed with the file system's journal.
    if cfg!(unix) {
        File::open(path)?.sync_all()?;
    }
    Ok(())
}

/// Moves `new` to `dir` and flushes `parent`, the folder of both; a folder already at `dir` goes to `old` first
/// and is deleted once the new one is in place on disk. On failure `dir` holds what it held before and `new` is
/// deleted.
fn replace_folder(new: &Path, dir: &Path, old: &Path, parent: &Path) -> Result<()> {
    let undo = |e: std::io::Error| {
        let _ = std::fs::remove_dir_all(new);
        e
    };
    if !dir.exists() {
        std::fs::rename(new, dir).map_err(undo)?;
        return Ok(sync_folder(parent)?);
    }
    if old.exists() {
        std::fs::remove_dir_all(old).map_err(undo)?;
    }
    std::fs::rename(dir, old).map_err(undo)?;
    if let Err(e) = std::fs::rename(new, dir) {
        let _ = std::fs::rename(old, dir);
        return Err(undo(e).into());
    }
    sync_folder(parent)?;
    std::fs::remove_dir_all(old)?;
    Ok(())
}
