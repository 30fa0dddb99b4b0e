//! Experiment files: one TOML per paper table, with profiles (`embedded`, `quick`, `paper`). A profile holds the
//! keys every task shares (methods, seeds, optimizer, schedule, epochs, batch size) and one `task` table that the
//! task crate owns and checks; `extends = "embedded"` makes a profile a list of overrides, `unset = ["task.x"]`
//! removes an inherited key. Unknown keys are rejected with their name; `--set key=value` overrides any key of
//! the chosen profile (e.g. paths to one's own downloads at paper scale).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tram_core::{BaseConfig, LrSchedule, MethodConfig, OptimizerConfig, Precision};
use tram_task::{DeviceChoice, RunSettings, Selection, Task};

/// The table an experiment produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    /// Table 2: each method's passes, step time and memory as measured, beside its outcome.
    Variants,
    /// Tables 3, 4 and 5: each method's metric in-domain and on every zero-shot set, mean over seeds.
    Transfer,
    /// Table 6: measurements of another experiment's finished runs (no training of its own).
    Analysis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    pub name: String,
    pub table: TableKind,
    pub description: String,
    pub default_profile: String,
    /// The paper's own tables to show beside ours (files in `results/paper/`).
    #[serde(default)]
    pub paper: Vec<String>,
    pub profiles: BTreeMap<String, toml::Value>,
}

/// The task of a profile: the one place that names the task kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskSpec {
    /// Cross-dataset image classification (Tables 2 and 3).
    ImageTransfer(tram_vision::transfer::TransferConfig),
    /// Cross-domain language modelling (Table 4 and its appendix tables 9–11).
    CausalLm(tram_text::lm::CausalLmConfig),
    /// Zero-shot cross-lingual transfer (Table 5; Table 6 analyses its runs).
    CrossLingual(tram_text::xlingual::CrossLingualConfig),
}

impl TaskSpec {
    /// Loads the task's data and files once for the whole sweep.
    pub fn build(&self) -> Result<Box<dyn Task>> {
        Ok(match self {
            TaskSpec::ImageTransfer(c) => Box::new(c.build()?),
            TaskSpec::CausalLm(c) => Box::new(c.build()?),
            TaskSpec::CrossLingual(c) => Box::new(c.build()?),
        })
    }

    /// The spec with what cannot change a result set to a fixed value, for a run's identity: which keys those are
    /// is each task's knowledge.
    pub fn identity(&self) -> TaskSpec {
        match self {
            TaskSpec::ImageTransfer(c) => TaskSpec::ImageTransfer(c.identity()),
            TaskSpec::CausalLm(c) => TaskSpec::CausalLm(c.identity()),
            TaskSpec::CrossLingual(c) => TaskSpec::CrossLingual(c.identity()),
        }
    }
}

/// What the runner needs of a profile's `task` table, whatever task it names: [`TaskSpec`] for this
/// repository's tasks; a test (or another crate using the runner as a library) may bring its own.
pub trait TaskConfig: Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned {
    /// Loads the task's data and files once for the whole sweep.
    fn build(&self) -> Result<Box<dyn Task>>;

    /// The config with what cannot change a result set to a fixed value: the task's part of a run's identity.
    fn identity(&self) -> Self;

    /// The task's model from its configuration alone, for `tram plan` (a task that does not describe its model
    /// cannot be planned).
    fn shape(&self) -> Result<tram_task::ModelShape> {
        bail!("this task does not describe its model's shape, so `tram plan` cannot size it")
    }
}

impl TaskConfig for TaskSpec {
    fn build(&self) -> Result<Box<dyn Task>> {
        TaskSpec::build(self)
    }

    fn identity(&self) -> Self {
        TaskSpec::identity(self)
    }

    fn shape(&self) -> Result<tram_task::ModelShape> {
        Ok(match self {
            TaskSpec::ImageTransfer(c) => c.shape()?,
            TaskSpec::CausalLm(c) => c.shape()?,
            TaskSpec::CrossLingual(c) => c.shape()?,
        })
    }
}

/// One profile of an experiment: the runs (methods × seeds) and the settings they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile<T = TaskSpec> {
    pub methods: Vec<MethodConfig>,
    pub seeds: Vec<u64>,
    /// The base optimizer of every method (SGD for vision, Adam for language in the paper).
    pub optimizer: BaseConfig,
    /// Without `total_steps`, the schedule spans the run.
    pub schedule: LrSchedule,
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    #[serde(default)]
    pub m_sharpness: bool,
    #[serde(default = "max_consecutive_skips")]
    pub max_consecutive_skips: u32,
    /// The arithmetic of the passes: `fp32` (default), `tf32` (CUDA), `bf16` or `fp16` (mixed precision with
    /// float32 master weights; tram_core::precision).
    #[serde(default)]
    pub precision: Precision,
    pub epochs: usize,
    pub batch_size: usize,
    #[serde(default = "one")]
    pub accumulate: usize,
    #[serde(default)]
    pub max_train_batches: Option<usize>,
    /// Which epoch's model a run reports: `last` (vision, App. B.3) or `best-validation` (language, App. B.1).
    #[serde(default)]
    pub selection: Selection,
    /// Evaluate after every epoch (default) or, `false`, after the last only: with `selection = "last"` the
    /// intermediate evaluations only draw the epoch curve, and on large test sets they cost as much as training.
    #[serde(default = "yes")]
    pub eval_every_epoch: bool,
    /// Variants table: rounds of the interleaved step-time measurement (every method once per round).
    #[serde(default)]
    pub timing_rounds: Option<usize>,
    /// Keep each run's trained parameters as `model.safetensors` in its folder (for the analyses of Table 6).
    #[serde(default)]
    pub keep_weights: bool,
    /// Checkpoint each run every this many optimizer steps (0: only at the end of each epoch, which is always
    /// checkpointed), so that a killed run resumes there. Not part of a run's identity.
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: u64,
    pub task: T,
}

fn one() -> usize {
    1
}

fn max_consecutive_skips() -> u32 {
    tram_core::step::DEFAULT_MAX_CONSECUTIVE_SKIPS
}

fn yes() -> bool {
    true
}

/// A checkpoint holds the parameters two to four times over (the model, the base optimizer's state, a TRAM
/// target): every 500 steps keeps the writing rare next to the training, and a kill loses at most 500 steps.
fn checkpoint_every() -> u64 {
    500
}

pub struct Experiment {
    pub file: ExperimentFile,
    pub path: PathBuf,
}

impl Experiment {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading experiment file {}", path.display()))?;
        let file: ExperimentFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if !file.profiles.contains_key(&file.default_profile) {
            bail!("{}: default_profile `{}` is not among its profiles", path.display(), file.default_profile);
        }
        check_name("name", &file.name).with_context(|| path.display().to_string())?;
        for profile in file.profiles.keys() {
            check_name("profile", profile).with_context(|| path.display().to_string())?;
        }
        Ok(Self { file, path: path.to_path_buf() })
    }

    pub fn profile_names(&self) -> Vec<&str> {
        self.file.profiles.keys().map(String::as_str).collect()
    }

    fn where_(&self, name: &str) -> String {
        format!("{} [profiles.{name}]", self.path.display())
    }

    /// The profile's table with `extends` resolved (the base first, this profile's keys merged over it, then
    /// `unset` applied).
    fn resolved(&self, name: &str, seen: &mut Vec<String>) -> Result<toml::Table> {
        let value = self.file.profiles.get(name).ok_or_else(|| {
            anyhow!("{}: no profile `{name}` (it has: {})", self.path.display(), self.profile_names().join(", "))
        })?;
        if seen.iter().any(|s| s == name) {
            bail!("{}: profiles extend each other in a circle: {} -> {name}", self.path.display(), seen.join(" -> "));
        }
        seen.push(name.to_string());
        let mut own = value.as_table().cloned().ok_or_else(|| anyhow!("{}: not a table", self.where_(name)))?;
        let mut table = match own.remove("extends") {
            None => toml::Table::new(),
            Some(toml::Value::String(base)) => self.resolved(&base, seen)?,
            Some(other) => bail!("{}: `extends` must name a profile, got {other}", self.where_(name)),
        };
        let unset = match own.remove("unset") {
            None => vec![],
            Some(toml::Value::Array(keys)) => keys
                .into_iter()
                .map(|k| k.as_str().map(str::to_string).ok_or_else(|| anyhow!("`unset` holds key names")))
                .collect::<Result<Vec<_>>>()
                .with_context(|| self.where_(name))?,
            Some(other) => bail!("{}: `unset` must be a list of keys, got {other}", self.where_(name)),
        };
        merge(&mut table, own);
        for key in unset {
            remove_key(&mut table, &key).with_context(|| format!("{}: unset", self.where_(name)))?;
        }
        Ok(table)
    }

    /// The named profile with `--set` overrides applied, checked: every key known, every method valid, every run
    /// id unique.
    pub fn profile<T: TaskConfig>(&self, name: &str, overrides: &[String]) -> Result<Profile<T>> {
        if self.file.table == TableKind::Analysis {
            bail!(
                "{}: an analysis experiment has no sweep of its own (it measures another's runs)",
                self.path.display()
            );
        }
        let profile: Profile<T> = self.profile_as(name, overrides)?;
        profile.validate().with_context(|| self.where_(name))?;
        Ok(profile)
    }

    /// The named profile with `--set` overrides applied, read as `T` (unknown keys are errors where `T` says so).
    pub fn profile_as<T: serde::de::DeserializeOwned>(&self, name: &str, overrides: &[String]) -> Result<T> {
        let mut table = self.resolved(name, &mut vec![])?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        if let Some(task) = table.get("task") {
            no_repeated_names("task", task).with_context(|| self.where_(name))?;
        }
        toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| anyhow!("{}: {e}", self.where_(name)))
    }
}

/// A name that becomes a folder or file name under `--results` (an experiment's `name`, a profile's): letters,
/// digits, `.`, `_` and `-`, not starting with `.`, so that no name reaches outside the results folder.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty() || name.starts_with('.') || !name.chars().all(plain) {
        bail!(
            "{what} `{name}`: names of experiments and profiles become folder names under the results folder, so \
             they are letters, digits, `.`, `_` and `-`, and do not start with `.`"
        );
    }
    Ok(())
}

/// Refuses a list of names given twice anywhere in a task table (`zero_shot_domains`, `languages`, ...): each
/// name becomes a table column and a set of the statistics, so a repeat would fail only after training.
fn no_repeated_names(key: &str, value: &toml::Value) -> Result<()> {
    match value {
        toml::Value::Table(t) => t.iter().try_for_each(|(k, v)| no_repeated_names(&format!("{key}.{k}"), v)),
        toml::Value::Array(items) => {
            let mut seen = BTreeSet::new();
            for name in items.iter().filter_map(toml::Value::as_str) {
                if !seen.insert(name) {
                    bail!("{key} lists `{name}` twice: each entry is a set of its own (a column of the table)");
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `over` merged into `base`: tables key by key, every other value replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn key_parts(key: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = key.split('.').collect();
    if key.is_empty() || parts.iter().any(|p| p.trim().is_empty()) {
        bail!("`{key}` is not a key path (expected e.g. `epochs` or `task.data.dir`)");
    }
    Ok(parts)
}

fn remove_key(table: &mut toml::Table, key: &str) -> Result<()> {
    let parts = key_parts(key)?;
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        node = node.get_mut(*part).and_then(toml::Value::as_table_mut).ok_or_else(|| anyhow!("no key `{key}`"))?;
    }
    node.remove(parts[parts.len() - 1]).map(|_| ()).ok_or_else(|| anyhow!("no key `{key}`"))
}

/// `a.b.c=value`: value parsed as TOML (number, bool, string, array, inline table), or taken as a plain string.
fn apply_override(root: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| anyhow!("--set expects key=value, got `{spec}`"))?;
    let parts = key_parts(key.trim()).with_context(|| format!("--set {spec}"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            node.insert(part.to_string(), value);
            return Ok(());
        }
        node = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {spec}: `{}` is not a table", parts[..=i].join(".")))?;
    }
    unreachable!("a key path has at least one part")
}

impl<T> Profile<T> {
    fn validate(&self) -> Result<()> {
        if self.methods.is_empty() || self.seeds.is_empty() {
            bail!("needs at least one method and one seed");
        }
        let mut seeds = BTreeSet::new();
        if let Some(s) = self.seeds.iter().find(|s| !seeds.insert(**s)) {
            bail!("seed {s} is listed twice: a seed makes one run per method");
        }
        let mut built: Vec<(String, tram_core::Method)> = vec![];
        for m in &self.methods {
            let method = m.build()?;
            // Two entries that resolve to one setting (`{name = "sam"}` and `{name = "sam", rho = 0.05}`, the
            // default) would train the same thing twice under two names.
            if let Some((other, _)) = built.iter().find(|(_, b)| *b == method) {
                bail!(
                    "methods `{other}` and `{}` resolve to the same setting (a key set to its default): the runs \
                     would train the same thing twice; keep one",
                    method_id(m)
                );
            }
            built.push((method_id(m), method));
        }
        if self.timing_rounds == Some(0) {
            bail!("timing_rounds = 0 measures no step time; leave it out (10) or give at least 1");
        }
        self.run_settings(&self.methods[0], self.seeds[0], DeviceChoice::Cpu).validate()?;
        // The schedule's length is the run's unless given; the sweep checks it again once that is known.
        let warmup = self.schedule.warmup_steps;
        self.schedule.clone().with_total_steps_if_unset(warmup + 1).validate()?;
        Ok(())
    }

    /// The settings of one run.
    pub fn run_settings(&self, method: &MethodConfig, seed: u64, device: DeviceChoice) -> RunSettings {
        let mut optimizer = OptimizerConfig::new(method.clone(), self.optimizer.clone(), self.schedule.clone());
        optimizer.clip_grad_norm = self.clip_grad_norm;
        optimizer.m_sharpness = self.m_sharpness;
        optimizer.max_consecutive_skips = self.max_consecutive_skips;
        optimizer.precision = self.precision;
        optimizer.seed = seed;
        RunSettings {
            optimizer,
            device,
            epochs: self.epochs,
            batch_size: self.batch_size,
            accumulate: self.accumulate,
            max_train_batches: self.max_train_batches,
            eval_before_training: false,
            selection: self.selection,
            eval_every_epoch: self.eval_every_epoch,
        }
    }

    /// Every run of the profile, method by method.
    pub fn runs(&self) -> Vec<(MethodConfig, u64)> {
        self.methods.iter().flat_map(|m| self.seeds.iter().map(move |&s| (m.clone(), s))).collect()
    }
}

/// A method entry's readable identity: its name, then each hyperparameter it sets (`sam`, `sam-rho0.1`).
pub fn method_id(method: &MethodConfig) -> String {
    let value = toml::Value::try_from(method).expect("a method config serialises");
    let mut id = method.name.as_str().to_string();
    if let Some(table) = value.as_table() {
        for (k, v) in table.iter().filter(|(k, _)| k.as_str() != "name") {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            id.push_str(&format!("-{k}{v}"));
        }
    }
    id
}

/// The run folder's name: the method's identity and the seed (`tram-prev-s0`, `sam-rho0.1-s2`).
pub fn run_id(method: &MethodConfig, seed: u64) -> String {
    format!("{}-s{seed}", method_id(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiments() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
    }

    #[test]
    fn shipped_experiments_parse_in_every_profile() {
        for entry in std::fs::read_dir(experiments()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let exp = Experiment::load(&path).unwrap();
                for p in exp.profile_names() {
                    if exp.file.table == TableKind::Analysis {
                        let a: crate::analysis_table::AnalysisProfile =
                            exp.profile_as(p, &[]).unwrap_or_else(|e| panic!("{} {p}: {e:#}", path.display()));
                        let source = Experiment::load(&experiments().join(format!("{}.toml", a.runs.experiment)));
                        source.unwrap().profile::<TaskSpec>(&a.runs.profile, &a.runs.set).unwrap();
                    } else {
                        exp.profile::<TaskSpec>(p, &[]).unwrap_or_else(|e| panic!("{} {p}: {e:#}", path.display()));
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_overrides_are_named() {
        let exp = Experiment::load(&experiments().join("table3.toml")).unwrap();
        let err = |o: &str| format!("{:#}", exp.profile::<TaskSpec>("quick", &[o.to_string()]).unwrap_err());
        assert!(err("epochs_typo=3").contains("unknown field `epochs_typo`"));
        assert!(err("methods=[{name = \"sam\", rho = -1.0}]").contains("rho must be finite and >= 0"));
        assert!(err("task.image_sise=3").contains("unknown field `image_sise`"));
        assert!(err("=3").contains("is not a key path"));
        assert!(err("task..x=1").contains("is not a key path"));
        assert!(err("epochs").contains("--set expects key=value"));
        assert!(err("epochs.x=1").contains("`epochs` is not a table"));
        assert!(err("seeds=[0, 0]").contains("seed 0 is listed twice"));
        assert!(err("methods=[{name = \"sam\"}, {name = \"sam\"}]").contains("resolve to the same setting"));
        let same = err("methods=[{name = \"sam\"}, {name = \"sam\", rho = 0.05}]");
        assert!(same.contains("methods `sam` and `sam-rho0.05` resolve to the same setting"), "{same}");
        assert!(err("timing_rounds=0").contains("timing_rounds = 0"));
        assert!(err("max_train_batches=0").contains("max_train_batches = 0"));
        let p: Profile = exp.profile("quick", &["epochs=7".into(), "task.data.train_style=\"apple\"".into()]).unwrap();
        assert_eq!(p.epochs, 7);
        assert!(exp.profile::<TaskSpec>("nope", &[]).unwrap_err().to_string().contains("no profile `nope`"));
    }

    #[test]
    fn extends_merges_tables_and_unset_removes_keys() {
        use tram_vision::data::emoji::EmojiConfig;
        use tram_vision::transfer::DataSpec;
        let exp = Experiment::load(&experiments().join("table3.toml")).unwrap();
        let (embedded, quick): (Profile, Profile) =
            (exp.profile("embedded", &[]).unwrap(), exp.profile("quick", &[]).unwrap());
        assert_eq!(embedded.optimizer, quick.optimizer, "inherited");
        let (TaskSpec::ImageTransfer(e), TaskSpec::ImageTransfer(q)) = (&embedded.task, &quick.task) else {
            panic!("table3 is an image-transfer experiment")
        };
        assert_eq!((e.image_size, q.image_size), (64, 32), "overridden inside the task table");
        let (DataSpec::Emoji(ed), DataSpec::Emoji(qd)) = (&e.data, &q.data) else { panic!("the embedded emoji") };
        assert_eq!((ed.test_fraction, qd.test_fraction), (0.5, 0.2), "overridden two tables deep");
        assert_eq!(EmojiConfig { test_fraction: 0.5, ..qd.clone() }, *ed, "the rest of the data table is inherited");
        assert_eq!(e.model, q.model, "the rest of the task table is inherited");
        assert!(e.augment.is_some() && q.augment.is_none(), "unset removes an inherited key");
    }

    #[test]
    fn names_that_would_leave_the_results_folder_or_repeat_a_set_are_refused() {
        let dir = std::env::temp_dir().join(format!("tram-experiment-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(experiments().join("table3.toml")).unwrap();
        for (find, replace, what) in [
            ("name = \"table3\"", "name = \"../escape\"", "name `../escape`"),
            ("[profiles.quick]", "[profiles.\"../../q\"]", "profile `../../q`"),
        ] {
            let path = dir.join("bad.toml");
            std::fs::write(&path, text.replacen(find, replace, 1)).unwrap();
            let err = format!("{:#}", Experiment::load(&path).err().expect("refused"));
            assert!(err.contains(what) && err.contains("folder names under the results folder"), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
        let exp = Experiment::load(&experiments().join("table4.toml")).unwrap();
        let twice = ["task.zero_shot_domains=[\"news\", \"fiction\", \"news\"]".to_string()];
        let err = format!("{:#}", exp.profile::<TaskSpec>("quick", &twice).unwrap_err());
        assert!(err.contains("task.zero_shot_domains lists `news` twice"), "{err}");
    }

    #[test]
    fn two_entries_of_a_method_get_distinct_readable_ids() {
        let sam: MethodConfig = toml::from_str("name = \"sam\"").unwrap();
        let sam01: MethodConfig = toml::from_str("name = \"sam\"\nrho = 0.1").unwrap();
        let tram: MethodConfig = toml::from_str("name = \"tram-x\"\nsigma = 0.02\nnoise = \"uniform\"").unwrap();
        assert_eq!(run_id(&sam, 0), "sam-s0");
        assert_eq!(run_id(&sam01, 3), "sam-rho0.1-s3");
        assert_eq!(run_id(&tram, 1), "tram-x-noiseuniform-sigma0.02-s1", "keys in name order");
    }
}
