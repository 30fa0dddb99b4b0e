//! Experiment files: one TOML per paper table, with profiles (`embedded`, `quick`, `paper`). Unknown keys are
//! rejected with their name; `--set key=value` overrides any key of the chosen profile (e.g. paths to one's own
//! downloads at paper scale).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tram_core::{BaseConfig, LrSchedule, MethodConfig, OptimizerConfig};
use tram_vision::data::emoji::EmojiConfig;
use tram_vision::data::parquet::ParquetColumns;
use tram_vision::data::{Augment, OnCorrupt};
use tram_vision::task::{DeviceChoice, FinetuneConfig, ModelSpec};

/// Which paper table an experiment produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    Table2,
    Table3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    pub name: String,
    pub table: TableKind,
    pub description: String,
    pub default_profile: String,
    pub profiles: BTreeMap<String, toml::Value>,
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataSpec {
    /// The embedded default: emoji in four vendor styles (fetched by `just assets`).
    Emoji(EmojiConfig),
    /// A Hugging Face image data set folder as the Hub stores it (parquet shards of `train` and `test`, image bytes
    /// plus a label column): CIFAR-100 (`columns = { image = "img", label = "fine_label" }`), Stanford Cars,
    /// Oxford Flowers. Fine-tune on `train_split`, test on `test_split`; no out-of-domain sets.
    Parquet {
        dir: PathBuf,
        #[serde(default)]
        columns: ParquetColumns,
        #[serde(default = "train_split")]
        train_split: String,
        #[serde(default = "test_split")]
        test_split: String,
    },
    /// ImageFolder layouts (`<root>/<class>/<image>`): a training folder, an in-domain test folder, and any number
    /// of named out-of-domain test folders with the same class names.
    ImageFolder {
        train: PathBuf,
        test: PathBuf,
        #[serde(default)]
        ood: BTreeMap<String, PathBuf>,
    },
}

/// One profile of an experiment: the methods and seeds to run and the fine-tune each run does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub methods: Vec<MethodConfig>,
    pub seeds: Vec<u64>,
    pub data: DataSpec,
    pub model: ModelSpec,
    pub base: BaseConfig,
    /// `total_steps = 0` means "the run's length".
    pub schedule: LrSchedule,
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    pub image_size: u32,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    #[serde(default)]
    pub max_train_batches: Option<usize>,
    #[serde(default)]
    pub augment: Option<Augment>,
    #[serde(default = "one")]
    pub workers: usize,
    #[serde(default)]
    pub on_corrupt: OnCorrupt,
    /// Table 2: rounds of the interleaved step-time measurement (every method once per round).
    #[serde(default)]
    pub timing_rounds: Option<usize>,
}

fn one() -> usize {
    1
}

fn train_split() -> String {
    "train".into()
}

fn test_split() -> String {
    "test".into()
}

pub struct Experiment {
    pub file: ExperimentFile,
    pub path: PathBuf,
}

impl Experiment {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading experiment file {}", path.display()))?;
        let file: ExperimentFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if !file.profiles.contains_key(&file.default_profile) {
            bail!("{}: default_profile `{}` is not among its profiles", path.display(), file.default_profile);
        }
        Ok(Self { file, path: path.to_path_buf() })
    }

    pub fn profile_names(&self) -> Vec<&str> {
        self.file.profiles.keys().map(String::as_str).collect()
    }

    /// The named profile with `--set` overrides applied, checked.
    pub fn profile(&self, name: &str, overrides: &[String]) -> Result<Profile> {
        let mut value = self.file.profiles.get(name).cloned().ok_or_else(|| {
            anyhow!("{}: no profile `{name}` (it has: {})", self.path.display(), self.profile_names().join(", "))
        })?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let profile: Profile = value
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("{} [profiles.{name}]: {e}", self.path.display()))?;
        if profile.methods.is_empty() || profile.seeds.is_empty() {
            bail!("{} [profiles.{name}]: needs at least one method and one seed", self.path.display());
        }
        for m in &profile.methods {
            m.build().with_context(|| format!("{} [profiles.{name}]", self.path.display()))?;
        }
        Ok(profile)
    }
}

/// `a.b.c=value`: value parsed as TOML (number, bool, string, array), or taken as a plain string.
fn apply_override(root: &mut toml::Value, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| anyhow!("--set expects key=value, got `{spec}`"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| anyhow!("--set {key}: `{}` is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
    }
    unreachable!()
}

impl Profile {
    /// The fine-tune configuration of one run.
    pub fn finetune(&self, method: &MethodConfig, seed: u64, device: DeviceChoice) -> FinetuneConfig {
        let mut optimizer = OptimizerConfig::new(method.clone(), self.base.clone(), self.schedule.clone());
        optimizer.clip_grad_norm = self.clip_grad_norm;
        FinetuneConfig {
            model: self.model.clone(),
            optimizer,
            image_size: self.image_size,
            epochs: self.epochs,
            batch_size: self.batch_size,
            eval_batch_size: self.eval_batch_size,
            max_train_batches: self.max_train_batches,
            augment: self.augment,
            seed,
            device,
            workers: self.workers,
            on_corrupt: self.on_corrupt,
            eval_before_training: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_experiments_parse_in_every_profile() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let exp = Experiment::load(&path).unwrap();
                for p in exp.profile_names() {
                    exp.profile(p, &[]).unwrap_or_else(|e| panic!("{} {p}: {e:#}", path.display()));
                }
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_overrides_are_named() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/table3.toml");
        let exp = Experiment::load(&path).unwrap();
        let err = format!("{:#}", exp.profile("quick", &["epochs_typo=3".into()]).unwrap_err());
        assert!(err.contains("unknown field `epochs_typo`"), "{err}");
        let err = format!("{:#}", exp.profile("quick", &["methods=[{name = \"sam\", rho = -1.0}]".into()]).unwrap_err());
        assert!(err.contains("rho must be finite and >= 0"), "{err}");
        let p = exp.profile("quick", &["epochs=7".into(), "data.train_style=\"apple\"".into()]).unwrap();
        assert_eq!(p.epochs, 7);
        assert!(exp.profile("nope", &[]).unwrap_err().to_string().contains("no profile `nope`"));
        let p = exp.profile("paper", &["data.columns.image=img".into(), "data.columns.label=fine_label".into()]).unwrap();
        match p.data {
            DataSpec::Parquet { columns, train_split, .. } => {
                assert_eq!((columns.image.as_str(), columns.label.as_str(), train_split.as_str()), ("img", "fine_label", "train"))
            }
            other => panic!("{other:?}"),
        }
        let p = exp.profile("paper", &["data={kind=\"image-folder\", train=\"/a\", test=\"/b\"}".into()]).unwrap();
        assert!(matches!(p.data, DataSpec::ImageFolder { .. }));
    }
}
