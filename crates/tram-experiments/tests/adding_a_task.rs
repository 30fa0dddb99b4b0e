//! Adding a task, kept honest: `docs/adding-a-task.md` walks through this file, and the last test checks that
//! every code block of that page is quoted from here. A task the runner's `TaskSpec` enum does not name — two
//! domains of 2-D points and a linear classifier — runs through the runner's sweep (`commands::run`, what `tram
//! run` calls) to a written table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use tram_core::{InputNoise, Model, OptimizerConfig};
use tram_experiments::cli::SweepArgs;
use tram_experiments::commands;
use tram_experiments::experiment::TaskConfig;
use tram_task::{
    time_interleaved, Domain, EpochBatches, Evaluation, Metric, RunContext, RunResult, RunSettings, Split, Task,
    Timing, TrainData,
};

// ---- The task crate's side: a config, a model, data, and the Task. ----

/// The task's own keys: `task = { kind = "toy", ... }` in an experiment profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyConfig {
    /// Points per domain and split.
    pub points: usize,
    /// How far the zero-shot domain's points are shifted.
    pub shift: f64,
    /// Threads that prepare batches: they cannot change a result.
    #[serde(default = "one")]
    pub workers: usize,
}

fn one() -> usize {
    1
}

impl ToyConfig {
    /// The config with what cannot change a result set to a fixed value: a run's identity.
    pub fn identity(&self) -> Self {
        Self { workers: 1, ..self.clone() }
    }

    /// Loads (here: draws) the data once for the whole sweep; checks what a run cannot check.
    pub fn build(&self) -> tram_task::Result<ToyTask> {
        if self.points < 8 {
            return Err(tram_task::Error::Config(format!("task.points = {}: at least 8", self.points)));
        }
        let set = |salt: u64, shift: f64| points(self.points, salt, shift);
        Ok(ToyTask { train: set(1, 0.0), test: set(2, 0.0), zero_shot: set(3, self.shift) })
    }
}

/// `n` points in [-1, 1]², shifted along x by `shift`; the label is which side of x = y the unshifted point is on.
fn points(n: usize, salt: u64, shift: f64) -> (Vec<[f32; 2]>, Vec<i64>) {
    let mut rng = tram_task::SplitMix64(salt);
    let (mut x, mut y) = (vec![], vec![]);
    for _ in 0..n {
        let (a, b) = (2.0 * rng.uniform() - 1.0, 2.0 * rng.uniform() - 1.0);
        x.push([(a + shift) as f32, b as f32]);
        y.push(i64::from(a > b));
    }
    (x, y)
}

pub struct ToyTask {
    train: (Vec<[f32; 2]>, Vec<i64>),
    test: (Vec<[f32; 2]>, Vec<i64>),
    zero_shot: (Vec<[f32; 2]>, Vec<i64>),
}

/// A linear classifier: the smallest tch model the step driver can train.
pub struct Linear {
    vs: nn::VarStore,
    fc: nn::Linear,
}

pub struct Batch {
    x: Tensor,
    y: Tensor,
}

impl Model for Linear {
    type Batch = Batch;
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn forward(&self, b: &Batch, _train: bool, noise: Option<&InputNoise>) -> Tensor {
        self.fc.forward(&noise.map_or_else(|| b.x.shallow_clone(), |n| n.apply(&b.x)))
    }
    fn loss(&self, logits: &Tensor, b: &Batch) -> Tensor {
        logits.cross_entropy_for_logits(&b.y)
    }
    fn batch_size(&self, b: &Batch) -> usize {
        b.y.size()[0] as usize
    }
}

impl ToyTask {
    fn model(&self, seed: u64) -> Linear {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root() / "fc", 2, 2, Default::default());
        Linear { vs, fc }
    }
}

fn batch((x, y): &(Vec<[f32; 2]>, Vec<i64>), range: std::ops::Range<usize>) -> Batch {
    let flat: Vec<f32> = x[range.clone()].iter().flatten().copied().collect();
    Batch { x: Tensor::from_slice(&flat).view([-1, 2]), y: Tensor::from_slice(&y[range]) }
}

/// One run's view of the data: batches in a seeded order per epoch, and the evaluation sets.
struct RunData<'a> {
    task: &'a ToyTask,
    batch_size: usize,
    seed: u64,
}

impl TrainData<Linear> for RunData<'_> {
    fn epoch(&mut self, epoch: usize, start: usize) -> tram_task::Result<EpochBatches<'_, Batch>> {
        // The order depends on (seed, epoch) only, so that a resumed run sees the batches it would have seen.
        let mut order: Vec<usize> = (0..self.task.train.1.len()).collect();
        tram_task::SplitMix64(self.seed ^ ((epoch as u64) << 32)).shuffle(&mut order);
        let (train, size) = (&self.task.train, self.batch_size);
        let batches: Vec<_> = order
            .chunks_exact(size)
            .skip(start)
            .map(|idx| {
                let x: Vec<[f32; 2]> = idx.iter().map(|&i| train.0[i]).collect();
                let y: Vec<i64> = idx.iter().map(|&i| train.1[i]).collect();
                Ok(batch(&(x, y), 0..size))
            })
            .collect();
        Ok(Box::new(batches.into_iter()))
    }

    fn evaluate(&mut self, model: &Linear) -> tram_task::Result<Vec<Evaluation>> {
        let eval = |name: &str, domain: Domain, set: &(Vec<[f32; 2]>, Vec<i64>)| {
            let b = batch(set, 0..set.1.len());
            let logits = tch::no_grad(|| model.forward(&b, false, None));
            let loss_sum = f64::try_from(logits.cross_entropy_for_logits(&b.y))? * set.1.len() as f64;
            let correct = Vec::<f64>::try_from(logits.argmax(-1, false).eq_tensor(&b.y).to_kind(Kind::Double))?;
            Ok::<_, tram_task::Error>(Evaluation::accuracy(name, domain, Split::Test, correct, loss_sum))
        };
        Ok(vec![eval("a", Domain::InDomain, &self.task.test)?, eval("b", Domain::ZeroShot, &self.task.zero_shot)?])
    }
}

impl Task for ToyTask {
    fn describe(&self) -> String {
        format!("{} training points, in-domain test a, zero-shot b", self.train.1.len())
    }

    fn metric(&self) -> Metric {
        Metric::Accuracy
    }

    fn steps_per_epoch(&self, run: &RunSettings) -> tram_task::Result<usize> {
        run.steps_per_epoch(self.train.1.len())
    }

    fn run(&self, run: &RunSettings, ctx: &mut RunContext<'_>) -> tram_task::Result<RunResult> {
        let model = self.model(run.seed());
        let mut data = RunData { task: self, batch_size: run.batch_size, seed: run.seed() };
        tram_task::train(&model, run, self.steps_per_epoch(run)?, &mut data, ctx)
    }

    fn time_steps(
        &self,
        run: &RunSettings,
        methods: &[OptimizerConfig],
        rounds: usize,
    ) -> tram_task::Result<Vec<Timing>> {
        let model = self.model(0);
        time_interleaved(&model, &[batch(&self.train, 0..run.batch_size)], methods, 1, rounds, || {})
    }
}

// ---- The runner's side: the TaskSpec arm. ----

/// This repository's `TaskSpec` (crates/tram-experiments/src/experiment.rs) gains the arm `Toy(ToyConfig)`, with
/// one line in its `build` and one in its `identity`; here a one-arm copy stands in for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Spec {
    /// Two domains of 2-D points.
    Toy(ToyConfig),
}

impl TaskConfig for Spec {
    fn build(&self) -> anyhow::Result<Box<dyn Task>> {
        Ok(match self {
            Spec::Toy(c) => Box::new(c.build()?),
        })
    }

    fn identity(&self) -> Self {
        match self {
            Spec::Toy(c) => Spec::Toy(c.identity()),
        }
    }
}

// ---- The experiment file, and the runner driven with it. ----

const EXPERIMENT: &str = r#"
name = "toy"
table = "transfer"
description = "two domains of 2-D points: a linear classifier fine-tuned on one, tested on the other"
default_profile = "quick"

[profiles.quick]
methods = [{ name = "base" }, { name = "sam" }]
seeds = [0, 1]
optimizer = { name = "sgd", momentum = 0.9 }
schedule = { base_lr = 0.1 }
epochs = 2
batch_size = 8
task = { kind = "toy", points = 64, shift = 0.5 }
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tram-adding-a-task-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn args(dir: &Path, overrides: &[&str]) -> SweepArgs {
    let experiment = dir.join("toy.toml");
    std::fs::write(&experiment, EXPERIMENT).unwrap();
    SweepArgs {
        experiment,
        profile: Some("quick".into()),
        overrides: overrides.iter().map(|o| o.to_string()).collect(),
        results: dir.join("results"),
        paper: dir.join("paper"),
        device: "cpu".into(),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_task_the_enum_does_not_name_runs_through_the_sweep_to_a_table() {
    let _g = tram_core::testing::serial();
    let dir = scratch("sweep");
    commands::run::<Spec>(&args(&dir, &[]), false, None).unwrap();
    let table = read(&dir.join("results/toy-quick.csv"));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("method,seeds,a (in-domain),b,ZS avg ↑"), "{table}");
    assert!(lines[1].starts_with("SGD,2,") && lines[2].starts_with("SAM,2,"), "{table}");
    for companion in ["toy-quick-long.csv", "toy-quick-tests.csv", "toy-quick-std.csv"] {
        assert!(dir.join("results").join(companion).exists(), "{companion} missing");
    }
    let long = read(&dir.join("results/toy-quick-long.csv"));
    assert_eq!(long.lines().filter(|l| l.contains(",a,in-domain,accuracy,")).count(), 4, "2 methods × 2 seeds");
    // Started again, every run is finished; `workers` is not part of a run's identity.
    let runs = dir.join("results/runs/toy/quick");
    let summary = read(&runs.join("sam-s1/summary.json"));
    commands::run::<Spec>(&args(&dir, &["task.workers=4"]), false, None).unwrap();
    assert_eq!(read(&runs.join("sam-s1/summary.json")), summary, "not trained again");
    commands::tables::<Spec>(&args(&dir, &[])).unwrap();
    assert_eq!(read(&dir.join("results/toy-quick.csv")), table);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_task_table_is_checked_before_any_run() {
    let _g = tram_core::testing::serial();
    let dir = scratch("checked");
    let err = |o: &str| format!("{:#}", commands::run::<Spec>(&args(&dir, &[o]), false, None).unwrap_err());
    assert!(err("task.pionts=64").contains("unknown field `pionts`"), "deny_unknown_fields names the key");
    assert!(err("task.points=4").contains("task.points = 4: at least 8"));
    assert!(err("task.kind=\"image\"").contains("unknown variant `image`"));
    assert!(!dir.join("results/runs").exists(), "no run started");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every code block of docs/adding-a-task.md is quoted from this file (so neither can drift from the other).
#[test]
fn the_walk_through_quotes_this_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = read(&root.join("docs/adding-a-task.md"));
    let this = include_str!("adding_a_task.rs");
    let mut blocks = 0;
    for (i, part) in doc.split("```").enumerate().filter(|(i, _)| i % 2 == 1) {
        let Some(("rust" | "toml", code)) = part.split_once('\n') else { continue };
        blocks += 1;
        assert!(
            this.contains(code.trim_end()),
            "code block {} of docs/adding-a-task.md is not in this file:\n{code}",
            i / 2 + 1
        );
    }
    assert!(blocks >= 5, "the walk-through quotes the config, the Task, the TaskSpec arm and the profile");
}
