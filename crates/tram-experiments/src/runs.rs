//! Run folders: `results/runs/<experiment>/<profile>/<method>-s<seed>/` hold the resolved config, `meta.json`,
//! `steps.csv`, `evals.csv` and, written last, `summary.json`, which marks the run as finished. Every file is
//! written atomically. A sweep started again skips finished runs whose config is unchanged, redoes unfinished
//! ones, and refuses (with the way out) to overwrite a finished run whose config changed.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tram_vision::task::{FinetuneConfig, RunResult};

use crate::atomic;

/// What `summary.json` holds: the run's outcome in a few numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    pub method: String,
    pub seed: u64,
    pub config_hash: String,
    pub device: String,
    pub steps: u64,
    pub skipped_steps: u64,
    /// Mean pass-1 loss of the last epoch.
    pub final_train_loss: f64,
    /// Pass-1 loss of the first and of the last step: with the epoch mean, a fingerprint of the loss curve.
    pub first_step_loss: f64,
    pub last_step_loss: f64,
    pub in_domain: String,
    pub in_domain_acc: f64,
    /// (set name, top-1 accuracy) of every out-of-domain set, final epoch.
    pub ood_acc: Vec<(String, f64)>,
    pub ood_mean_acc: f64,
    pub forward_passes_per_step: f64,
    pub backward_passes_per_step: f64,
    pub param_bytes: usize,
    pub extra_memory_bytes: usize,
    pub train_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Meta<'a> {
    experiment: &'a str,
    profile: &'a str,
    run_id: &'a str,
    git_commit: String,
    tch_version: &'static str,
    libtorch_version: &'static str,
    device: String,
    cuda_available: bool,
    seed: u64,
    start_unix_s: u64,
    end_unix_s: u64,
    host_threads: i32,
}

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// FNV-1a of the resolved config's TOML: identifies a configuration across restarts.
pub fn config_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

pub struct RunDir {
    pub dir: PathBuf,
    pub run_id: String,
}

pub enum RunState {
    /// Finished with this exact config.
    Done(Summary),
    /// Not started, or interrupted: (re)run it.
    Todo,
}

impl RunDir {
    pub fn new(root: &Path, experiment: &str, profile: &str, run_id: &str) -> Self {
        Self { dir: root.join("runs").join(experiment).join(profile).join(run_id), run_id: run_id.to_string() }
    }

    pub fn state(&self, hash: &str, fresh: bool) -> Result<RunState> {
        let summary_path = self.dir.join("summary.json");
        if !summary_path.exists() {
            return Ok(RunState::Todo);
        }
        let summary: Summary = serde_json::from_str(&std::fs::read_to_string(&summary_path)?)
            .with_context(|| format!("reading {}", summary_path.display()))?;
        if summary.config_hash == hash {
            return Ok(RunState::Done(summary));
        }
        if !fresh {
            bail!(
                "{} holds a finished run with a different configuration (hash {} vs {hash}); \
                 pass --fresh to move it aside (it is kept as {}.old-<time>) and run again",
                self.dir.display(),
                summary.config_hash,
                self.run_id
            );
        }
        let aside = self.dir.with_file_name(format!("{}.old-{}", self.run_id, now_s()));
        std::fs::rename(&self.dir, &aside)?;
        tracing::warn!("moved the finished run with another configuration to {}", aside.display());
        Ok(RunState::Todo)
    }

    /// Writes everything about a finished run; `summary.json` last.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        experiment: &str,
        profile: &str,
        config_text: &str,
        config: &FinetuneConfig,
        result: &RunResult,
        start_s: u64,
        method: &str,
    ) -> Result<Summary> {
        std::fs::create_dir_all(&self.dir)?;
        atomic::write_bytes(&self.dir.join("config.resolved.toml"), config_text.as_bytes())?;
        let meta = Meta {
            experiment,
            profile,
            run_id: &self.run_id,
            git_commit: git_commit(),
            tch_version: crate::TCH_VERSION,
            libtorch_version: crate::LIBTORCH_VERSION,
            device: result.device.clone(),
            cuda_available: tch::Cuda::is_available(),
            seed: config.seed,
            start_unix_s: start_s,
            end_unix_s: now_s(),
            host_threads: tch::get_num_threads(),
        };
        atomic::write_json(&self.dir.join("meta.json"), &meta)?;
        let mut steps = steps_frame(result)?;
        atomic::write_csv(&self.dir.join("steps.csv"), &mut steps)?;
        let mut evals = evals_frame(result)?;
        atomic::write_csv(&self.dir.join("evals.csv"), &mut evals)?;

        let last = result.epochs.last().context("the run evaluated no epoch")?;
        let done: Vec<_> = result.steps.iter().filter(|s| !s.skipped).collect();
        let per = |f: &dyn Fn(&tram_core::StepReport) -> f64| {
            if done.is_empty() {
                f64::NAN
            } else {
                done.iter().map(|s| f(s)).sum::<f64>() / done.len() as f64
            }
        };
        let summary = Summary {
            run_id: self.run_id.clone(),
            method: method.to_string(),
            seed: config.seed,
            config_hash: config_hash(config_text),
            device: result.device.clone(),
            steps: result.steps.len() as u64,
            skipped_steps: (result.steps.len() - done.len()) as u64,
            final_train_loss: last.train_loss,
            first_step_loss: result.steps.first().map_or(f64::NAN, |s| s.loss),
            last_step_loss: result.steps.last().map_or(f64::NAN, |s| s.loss),
            in_domain: last.in_domain.set.clone(),
            in_domain_acc: last.in_domain.accuracy.top1(),
            ood_acc: last.ood.iter().map(|s| (s.set.clone(), s.accuracy.top1())).collect(),
            ood_mean_acc: last.ood_mean(),
            forward_passes_per_step: per(&|s| s.forward_passes as f64 / s.micro_batches as f64),
            backward_passes_per_step: per(&|s| s.backward_passes as f64 / s.micro_batches as f64),
            param_bytes: result.param_bytes,
            extra_memory_bytes: result.extra_memory_bytes,
            train_seconds: result.epochs.iter().map(|e| e.train_seconds).sum(),
        };
        atomic::write_json(&self.dir.join("summary.json"), &summary)?;
        Ok(summary)
    }
}

/// One row per step.
pub fn steps_frame(result: &RunResult) -> Result<DataFrame> {
    let s = &result.steps;
    let col_f = |name: &str, f: &dyn Fn(&tram_core::StepReport) -> Option<f64>| {
        Column::new(name.into(), s.iter().map(f).collect::<Vec<Option<f64>>>())
    };
    let col_u = |name: &str, f: &dyn Fn(&tram_core::StepReport) -> u64| Column::new(name.into(), s.iter().map(f).collect::<Vec<u64>>());
    Ok(DataFrame::new(vec![
        col_u("step", &|r| r.step),
        col_f("lr", &|r| Some(r.lr)),
        col_f("loss", &|r| Some(r.loss)),
        col_f("perturbed_loss", &|r| r.perturbed_loss),
        col_f("divergence", &|r| r.divergence),
        col_f("radius", &|r| r.radius),
        col_f("eps_norm", &|r| r.eps_norm),
        col_f("grad_norm", &|r| Some(r.grad_norm)),
        col_f("descent_grad_norm", &|r| Some(r.descent_grad_norm)),
        col_u("forward_passes", &|r| r.forward_passes as u64),
        col_u("backward_passes", &|r| r.backward_passes as u64),
        Column::new("skipped".into(), s.iter().map(|r| r.skipped).collect::<Vec<bool>>()),
    ])?)
}

/// One row per (epoch, evaluation set): the tidy per-evaluation metrics.
pub fn evals_frame(result: &RunResult) -> Result<DataFrame> {
    let (mut epoch, mut steps, mut set, mut domain, mut acc, mut loss, mut n) = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for e in &result.epochs {
        let sets = std::iter::once(("in-domain", &e.in_domain)).chain(e.ood.iter().map(|s| ("ood", s)));
        for (d, s) in sets {
            epoch.push(e.epoch as u64);
            steps.push(e.steps);
            set.push(s.set.clone());
            domain.push(d.to_string());
            acc.push(s.accuracy.top1());
            loss.push(s.accuracy.mean_loss());
            n.push(s.accuracy.total as u64);
        }
    }
    Ok(DataFrame::new(vec![
        Column::new("epoch".into(), epoch),
        Column::new("steps".into(), steps),
        Column::new("set".into(), set),
        Column::new("domain".into(), domain),
        Column::new("accuracy".into(), acc),
        Column::new("loss".into(), loss),
        Column::new("examples".into(), n),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(hash: &str) -> Summary {
        Summary {
            run_id: "sam-s0".into(),
            method: "sam".into(),
            seed: 0,
            config_hash: hash.into(),
            device: "Cpu".into(),
            steps: 1,
            skipped_steps: 0,
            final_train_loss: 1.0,
            first_step_loss: 1.0,
            last_step_loss: 1.0,
            in_domain: "test".into(),
            in_domain_acc: 0.5,
            ood_acc: vec![],
            ood_mean_acc: 0.5,
            forward_passes_per_step: 2.0,
            backward_passes_per_step: 2.0,
            param_bytes: 4,
            extra_memory_bytes: 4,
            train_seconds: 1.0,
        }
    }

    #[test]
    fn finished_runs_are_skipped_and_never_silently_replaced() {
        let root = std::env::temp_dir().join(format!("tram-runs-{}", std::process::id()));
        let dir = RunDir::new(&root, "table3", "quick", "sam-s0");
        assert!(matches!(dir.state("aaaa", false).unwrap(), RunState::Todo), "no folder: to do");
        std::fs::create_dir_all(&dir.dir).unwrap();
        std::fs::write(dir.dir.join("steps.csv"), "step\n0\n").unwrap();
        assert!(matches!(dir.state("aaaa", false).unwrap(), RunState::Todo), "no summary: interrupted, redo");
        atomic::write_json(&dir.dir.join("summary.json"), &summary("aaaa")).unwrap();
        assert!(matches!(dir.state("aaaa", false).unwrap(), RunState::Done(_)), "same config: skip");
        let err = dir.state("bbbb", false).err().expect("a changed config must not be overwritten").to_string();
        assert!(err.contains("--fresh"), "{err}");
        assert!(dir.dir.join("summary.json").exists(), "the finished run is untouched");
        assert!(matches!(dir.state("bbbb", true).unwrap(), RunState::Todo));
        let kept: Vec<_> = std::fs::read_dir(dir.dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(kept.iter().any(|n| n.starts_with("sam-s0.old-")), "moved aside, not deleted: {kept:?}");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn config_hash_tells_configs_apart() {
        assert_eq!(config_hash("a = 1"), config_hash("a = 1"));
        assert_ne!(config_hash("a = 1"), config_hash("a = 2"));
    }
}
